//! The `sessiond` command, built inside the test crate so that integration
//! tests can run whole host processes (`CARGO_BIN_EXE_sessiond-host`) and
//! kill them.

fn main() -> std::process::ExitCode {
    sessiond::cli::main()
}
