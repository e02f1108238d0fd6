//! The CNI plugin under test: exactly the `podswitch-cni` binary's entry point.

fn main() -> std::process::ExitCode {
    cni_shim::main()
}
