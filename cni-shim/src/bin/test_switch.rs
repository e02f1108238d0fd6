//! The switch the plugin's tests run: exactly the `podswitch` binary's entry point.

fn main() -> std::process::ExitCode {
    vswitch::cli::main()
}
