//! The switch under test: exactly the `podswitch` binary's entry point.

fn main() -> std::process::ExitCode {
    vswitch::cli::main()
}
