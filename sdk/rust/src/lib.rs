//! Write sessiond plugins in Rust.
//!
//! A sessiond plugin is a WebAssembly component that the session runtime
//! calls at points of a session's life: when a session is about to start
//! (and may be vetoed), when a REST consumer updates it, when a named event
//! happens, when it ends, when a message is sent to it and when a user's
//! active sessions are listed. The contract is the WIT package
//! `sessiond:plugin@0.2.0`; this crate hides it behind:
//!
//! - the [`Plugin`] trait, with a no-op default for every hook: implement
//!   the hooks you need and list them in [`Plugin::HOOKS`];
//! - the [`export_plugin!`] macro, which exports your type;
//! - typed values: [`Session`], [`ClientInfo`], [`Changes`], [`Verdict`],
//!   [`Denial`], [`UpdateVerdict`], [`EndInfo`], [`SessionSummary`],
//!   [`MessageReply`], with serde access to the JSON they carry (the
//!   contract passes the session and the changes as byte lists in a fixed
//!   layout: you never see it);
//! - two abilities beyond changing the session: [`Changes::end`] ends it
//!   with a reason ([`EndRequest::Logout`] or [`EndRequest::Revoked`]) once
//!   the chain allowed, and [`Verdict::deny_with_state`] refuses a request
//!   while still storing this plugin's state (to count refused attempts);
//! - the session's two deadlines, [`Session::idle_expires_at`] and
//!   [`Session::absolute_expires_at`] (and [`Session::expires_at`], the
//!   earlier of both);
//! - the host's capabilities as functions: [`log`], [`clock`], [`kv`],
//!   [`sessions`] and [`audit`]. The host config grants them per plugin; a
//!   plugin that uses one it was not granted does not load.
//!
//! # Example
//!
//! A plugin that only lets known device classes start a session, counts each
//! user's logins in its key-value store and audits every login:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use sessiond_sdk::serde_json::{Value, json};
//! use sessiond_sdk::{
//!     ClientInfo, Changes, Config, Hook, Plugin, Result, Session, Verdict, audit, clock, kv, log,
//! };
//!
//! /// The plugin's configuration, read once by `init`.
//! struct DeviceGuard {
//!     allowed: Vec<String>,
//! }
//!
//! impl Default for DeviceGuard {
//!     fn default() -> Self {
//!         DeviceGuard { allowed: vec!["desktop".into(), "mobile".into()] }
//!     }
//! }
//!
//! /// What the plugin remembers about each session (its private state).
//! #[derive(Default, Serialize, Deserialize)]
//! struct State {
//!     device: String,
//!     authenticated_at: Option<u64>,
//! }
//!
//! impl Plugin for DeviceGuard {
//!     const NAME: &'static str = "device-guard";
//!     const VERSION: &'static str = "1.0.0";
//!     const HOOKS: &'static [Hook] = &[Hook::SessionStart, Hook::Event];
//!
//!     /// `devices = "desktop,mobile,kiosk"` in the host config.
//!     fn init(&mut self, config: &Config) -> Result<()> {
//!         if let Some(devices) = config.get("devices") {
//!             self.allowed = devices.split(',').map(|d| d.trim().to_owned()).collect();
//!         }
//!         if self.allowed.is_empty() {
//!             return Err("config attribute `devices` lists no device".into());
//!         }
//!         Ok(())
//!     }
//!
//!     fn on_session_start(&mut self, _session: Session, client: ClientInfo) -> Result<Verdict> {
//!         let device = client.device.unwrap_or_else(|| "unknown".to_owned());
//!         if !self.allowed.contains(&device) {
//!             log::warn!("refusing a session from a {device} device");
//!             return Ok(Verdict::deny(format!("sessions from {device} devices are not allowed")));
//!         }
//!         let state = State { device: device.clone(), authenticated_at: None };
//!         Ok(Verdict::allow(Changes::new().data_set("device", &device).state(&state)))
//!     }
//!
//!     fn on_event(&mut self, session: Session, name: String, _payload: Value) -> Result<Verdict> {
//!         let Some(user) = session.user.as_deref().filter(|_| name == "authenticated") else {
//!             return Ok(Verdict::allow_unchanged());
//!         };
//!         let key = format!("logins/{user}");
//!         let logins = kv::get_json::<u64>(&key)?.unwrap_or(0) + 1;
//!         kv::set_json(&key, &logins, None)?;
//!
//!         let mut state: State = session.state_or_default()?;
//!         state.authenticated_at = Some(clock::now());
//!         audit::append(&json!({"event": "login", "user": user, "device": state.device, "logins": logins}))?;
//!         Ok(Verdict::allow(Changes::new().data_set("logins", &logins).state(&state)))
//!     }
//! }
//!
//! sessiond_sdk::export_plugin!(DeviceGuard);
//! #
//! # // Natively, the capabilities use the fakes of `sessiond_sdk::testing`:
//! # use sessiond_sdk::testing;
//! # let mut plugin = DeviceGuard::default();
//! # plugin.init(&Config::new([("devices", "desktop")])).unwrap();
//! # let kiosk = ClientInfo { device: Some("kiosk".into()), ..ClientInfo::default() };
//! # let verdict = plugin.on_session_start(Session::new("s-1", "acme"), kiosk).unwrap();
//! # assert_eq!(verdict, Verdict::deny("sessions from kiosk devices are not allowed"));
//! # let session = Session::new("s-1", "acme").with_user("alice");
//! # plugin.on_event(session.clone(), "authenticated".into(), Value::Null).unwrap();
//! # let verdict = plugin.on_event(session, "authenticated".into(), Value::Null).unwrap();
//! # let Verdict::Allow(changes) = verdict else { panic!() };
//! # assert_eq!(changes.data_patch, Some(json!({"logins": 2})));
//! # assert_eq!(testing::take_audit().len(), 2);
//! ```
//!
//! # Building
//!
//! A plugin is a `cdylib` crate compiled for `wasm32-wasip2`, which produces
//! the component directly:
//!
//! ```toml
//! [package]
//! name = "device-guard"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! sessiond-sdk = "0.2"
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `cargo build --release --target wasm32-wasip2` then writes
//! `target/wasm32-wasip2/release/device_guard.wasm`.
//!
//! # Instances, state and errors
//!
//! The host may run several instances of a component and may drop one at
//! any time; each starts with `Default::default()` and [`Plugin::init`].
//! Keep what a session needs in its private state ([`Session::state`],
//! [`Changes::state`]) or in [`kv`], not in the plugin's fields.
//!
//! A hook that returns `Err` is a plugin error: the host applies the
//! plugin's `on_error` policy (hooks that can veto deny by default). A panic
//! aborts: the component traps, which the host treats as a failed hook too.
//!
//! # Testing
//!
//! Natively, [`export_plugin!`] exports nothing and the capabilities use the
//! in-memory fakes of [`testing`], so `cargo test` can call your hooks
//! directly, as the hidden lines of the example above do.

#![warn(missing_docs)]

mod changes;
mod config;
mod error;
mod export;
mod host;
mod session;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

/// The bindings that `wit-bindgen` generates for the `plugin` world. Not a
/// stable API: use the rest of the crate.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_hooks",
        default_bindings_module: "::sessiond_sdk::wit",
    });
}

/// Implementation details of [`export_plugin!`]. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::{Adapter, assert_plugin};
}

pub use changes::{Changes, Denial, EndRequest, UpdateVerdict, Verdict};
pub use config::Config;
pub use error::{Error, Result};
pub use host::{audit, clock, kv, log, sessions};
pub use session::Session;
pub use types::{ClientInfo, EndInfo, EndReason, Hook, MessageReply, SessionSummary, Timestamp};

/// The serde crate the SDK uses, re-exported.
pub use serde;
/// The serde_json crate the SDK uses, re-exported; its [`Value`] is how the
/// SDK hands over JSON that has no fixed shape (event and message payloads).
pub use serde_json;
pub use serde_json::Value;

/// A sessiond plugin.
///
/// Implement it on a type that has a [`Default`] value, give the plugin's
/// [`NAME`](Plugin::NAME), [`VERSION`](Plugin::VERSION) and
/// [`HOOKS`](Plugin::HOOKS), override the hooks you need, and export the
/// type with [`export_plugin!`].
///
/// The host calls only the hooks listed in `HOOKS`, so a hook you implement
/// but do not list never runs: `HOOKS` has no default so that you decide it
/// when you write the impl. The default implementation of every hook does
/// what an absent plugin would.
///
/// Every hook returns [`Result`]: an `Err` is a plugin error, whose message
/// reaches the host (see the [crate documentation](crate)).
pub trait Plugin: Default + 'static {
    /// A short name, such as `"single-session"`.
    const NAME: &'static str;

    /// The plugin's own version, such as `"1.2.0"`. `env!("CARGO_PKG_VERSION")`
    /// gives your crate's.
    const VERSION: &'static str;

    /// The hooks this plugin implements. The host never calls any other.
    const HOOKS: &'static [Hook];

    /// Called once per instance before any hook, with the plugin's
    /// configuration attributes from the host config. An `Err` stops the
    /// plugin from loading, with this message.
    ///
    /// Default: accepts any configuration.
    fn init(&mut self, config: &Config) -> Result<()> {
        let _ = config;
        Ok(())
    }

    /// A session is about to be created ([`Hook::SessionStart`]). `session`
    /// is what would be stored, and `client` its [`Session::client`]:
    /// [`Verdict::deny`] vetoes the creation, [`Verdict::allow`] may change
    /// it first (but cannot [end](Changes::end) it; and a denial's state is
    /// dropped, as there is no session to hold it).
    ///
    /// Default: allows, changing nothing.
    fn on_session_start(&mut self, session: Session, client: ClientInfo) -> Result<Verdict> {
        let _ = (session, client);
        Ok(Verdict::allow_unchanged())
    }

    /// A REST consumer asks to change the session
    /// ([`Hook::SessionUpdate`]). `proposed` carries the requested data patch
    /// and roles.
    ///
    /// Default: accepts the proposed change.
    fn on_session_update(&mut self, session: Session, proposed: Changes) -> Result<UpdateVerdict> {
        let _ = (session, proposed);
        Ok(UpdateVerdict::Accept)
    }

    /// The session has ended ([`Hook::SessionEnd`]). The host calls this
    /// once per session, whatever ended it; see [`EndInfo::end_id`] for
    /// making side effects idempotent.
    ///
    /// Default: does nothing.
    fn on_session_end(&mut self, session: Session, end: EndInfo) -> Result<()> {
        let _ = (session, end);
        Ok(())
    }

    /// A named event happened in the session ([`Hook::Event`]). The
    /// built-in name is `"authenticated"` (an anonymous session was given a
    /// user); REST consumers may post any other name, with any JSON
    /// `payload`. The verdict may [end](Changes::end) the session, or
    /// [refuse and keep a state change](Verdict::deny_with_state).
    ///
    /// Default: allows, changing nothing.
    fn on_event(&mut self, session: Session, name: String, payload: Value) -> Result<Verdict> {
        let _ = (session, name, payload);
        Ok(Verdict::allow_unchanged())
    }

    /// A REST consumer sent `payload` to the message handler `handler`
    /// ([`Hook::Message`]).
    ///
    /// Default: fails with `no handler named "<handler>"`.
    fn on_message(
        &mut self,
        session: Session,
        handler: String,
        payload: Value,
    ) -> Result<MessageReply> {
        let _ = (session, payload);
        Err(Error::new(format!("no handler named {handler:?}")))
    }

    /// Someone lists `user`'s active sessions ([`Hook::ListActive`]). Return
    /// the summaries to show, filtered, reordered or annotated.
    ///
    /// Default: returns `sessions` unchanged.
    fn on_list_active(
        &mut self,
        user: String,
        sessions: Vec<SessionSummary>,
    ) -> Result<Vec<SessionSummary>> {
        let _ = user;
        Ok(sessions)
    }
}
