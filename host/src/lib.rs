//! sessiond: a session service extended by sandboxed WebAssembly plugins.
//!
//! The map of the crate, from the edges inwards (a module imports only
//! modules further down this list):
//!
//! - [`cli`]: the `sessiond` command line (`serve`, `plugin check|run`,
//!   `store export|import`).
//! - [`server`]: the composition root. Builds the store, the runtime, the
//!   tenants and the [`app::App`] from a [`config::Config`], then runs the
//!   API, the [`sweeper`], the end worker ([`ends`]) and the webhook sender
//!   ([`webhooks`]) until shutdown.
//! - [`http`]: the HTTP/1.1 connection layer under the API: accept loop,
//!   connection caps, header read timeout, the shutdown deadline of open
//!   connections.
//! - [`api`]: the HTTP edge (axum). Handlers extract and validate a request,
//!   call one [`service`] operation and render its result; `api/error.rs`
//!   maps every [`service::Error`] to an RFC 9457 problem; `api/trace.rs`
//!   runs every request in its traced span; `api/console.rs` serves the web
//!   console.
//! - [`sweeper`]: ends the sessions that ran out, and sends the idle
//!   warnings that are due, through the service.
//! - [`service`]: one function per session operation (create, get, update,
//!   touch, authenticate, event, message, logout, list and revoke a user's
//!   sessions), and the one place where sessions end ([`service::end`]).
//! - [`ends`]: the end worker, which runs `on-session-end` hooks from the
//!   durable end queue.
//! - [`app`]: the handles a running server shares (store handles, runtime,
//!   tenant registry, end worker, webhooks).
//! - [`webhooks`]: the tenants' session events, signed and sent from the
//!   store's durable outbox by every host.
//! - [`tenant`]: a tenant's settings and plugin chain, and the registry of
//!   tenants that can be swapped while requests run.
//! - [`config`]: the TOML configuration.
//! - [`runtime`]: the wasmtime plugin runtime: components, limits, chains.
//! - [`store`]: session storage by concern (sessions, end queue, plugin kv,
//!   audit, webhook outbox) with memory, embedded (SQLite) and Redis
//!   backends.
//! - [`json`]: the bounds on JSON (depth, session size) and the reading of
//!   stored JSON.
//! - [`metrics`]: the Prometheus metrics of a running server, each with a
//!   registry of its own.
//! - [`ids`]: session tokens and public ids.
//! - [`session`]: the session model every layer shares.

pub mod admission;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod cpu;
pub mod ends;
pub mod http;
pub mod ids;
pub mod json;
pub mod metrics;
pub mod refresher;
pub mod runtime;
pub mod server;
pub mod service;
pub mod session;
pub mod store;
pub mod sweeper;
pub mod tenant;
pub mod trace;
pub mod webhooks;
