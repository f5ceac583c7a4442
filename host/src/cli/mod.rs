//! The `sessiond` command line: `serve`, `plugin check`, `plugin run`,
//! `store export` and `store import`; and, as a client of a server's
//! operator API, `tenant ...`, `plugin push` and `chain ...`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod operator;
mod plugin;
mod serve;
mod store;

/// sessiond: a session runtime extended by sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "sessiond", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the REST API with the plugins of every tenant in the config.
    Serve(serve::ServeArgs),
    /// Try a plugin locally, without a server.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Move a store's whole content to another store, as JSON lines.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Create, list, show and change tenants and their keys, through a
    /// server's operator API.
    #[command(subcommand)]
    Tenant(operator::TenantCommand),
    /// Show, set and roll back a tenant's plugin chain, through a server's
    /// operator API.
    #[command(subcommand)]
    Chain(operator::ChainCommand),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Store(cmd) => store::run(cmd),
        Command::Tenant(cmd) => operator::tenant(cmd),
        Command::Chain(cmd) => operator::chain(cmd),
    }
}
