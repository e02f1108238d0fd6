//! `podswitch-cni`: the CNI plugin binary; everything is in the library ([`cni_shim::main`]).

fn main() -> std::process::ExitCode {
    cni_shim::main()
}
