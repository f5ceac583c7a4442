//! sessiond: a session runtime extended by sandboxed WebAssembly plugins.

pub mod api;
pub mod cli;
pub mod config;
pub mod ends;
pub mod runtime;
pub mod server;
pub mod session;
pub mod store;
pub mod sweeper;
