//! The `sessiond` command line: `serve`, `plugin check` and `plugin run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod plugin;

/// sessiond: a session runtime extended by sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "sessiond", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Try a plugin locally, without a server.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd),
    }
}
