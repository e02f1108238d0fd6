//! The `podswitch` binary: everything is in the library, see `cli.rs`.

fn main() -> std::process::ExitCode {
    vswitch::cli::main()
}
