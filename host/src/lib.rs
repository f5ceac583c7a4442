//! sessiond: a session runtime extended by sandboxed WebAssembly plugins.

pub mod cli;
pub mod runtime;
pub mod session;
pub mod store;
