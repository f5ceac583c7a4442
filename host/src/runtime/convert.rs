//! The boundary between the host's types and the WIT types generated in
//! `bindings`: the only module besides `bindings` that names the latter.
//!
//! It holds the conversions both ways, the `Host` impls of the imported
//! interfaces (each hands over to a host-typed capability of [`HostState`]),
//! and one wrapper per export that takes and returns host types. The one
//! WIT value kept beyond a call's arguments is [`PluginSession`], built
//! once per plugin and call so that a hook borrows it as is.

use wasmtime::Store;

use super::bindings::Plugin;
use super::bindings::sessiond::plugin::{audit, clock, kv, log, sessions, types as wit};
use super::host::HostState;
use super::types::{
    Changes, Description, EndInfo, Hook, Listed, ListedSessions, LogLevel, MessageReply,
    UpdateVerdict, Verdict, client_size,
};
use crate::session::{ClientInfo, EndReason, SessionRecord, SessionSummary};

/// A session as one plugin sees it: the shared data, and that plugin's own
/// state only. It never holds the session's secret token.
#[derive(Debug, Clone)]
pub struct PluginSession {
    wit: wit::Session,
    /// Bytes the session carries across the boundary.
    size: u64,
}

impl PluginSession {
    /// `record` as plugin `plugin` sees it.
    pub fn new(record: &SessionRecord, plugin: &str) -> PluginSession {
        PluginSession::with_data(record, plugin, data_json(record))
    }

    /// [`PluginSession::new`] with the data already serialized by
    /// [`data_json`]: a chain serializes it once, and again only after a
    /// plugin changed it.
    pub(crate) fn with_data(record: &SessionRecord, plugin: &str, data: String) -> PluginSession {
        let wit = wit::Session {
            id: record.public_id.clone(),
            tenant: record.tenant.clone(),
            user: record.user.clone(),
            roles: record.roles.clone(),
            created_at: record.created_at,
            last_seen_at: record.last_seen_at,
            expires_at: record.expires_at(),
            version: record.version,
            client: to_wit_client(&record.client),
            data,
            state: record
                .plugin_state
                .get(plugin)
                .map(serde_json::Value::to_string)
                .unwrap_or_else(|| "{}".into()),
        };
        let size = (wit.id.len()
            + wit.tenant.len()
            + wit.user.as_ref().map_or(0, String::len)
            + wit.roles.iter().map(String::len).sum::<usize>()
            + client_size(&record.client)
            + wit.data.len()
            + wit.state.len()
            + 40) as u64;
        PluginSession { wit, size }
    }

    /// The session's public id.
    pub(crate) fn id(&self) -> &str {
        &self.wit.id
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

/// The shared data as the JSON text plugins receive.
pub(crate) fn data_json(record: &SessionRecord) -> String {
    serde_json::to_string(&record.data).unwrap_or_else(|_| "{}".into())
}

// Host types to WIT types.

fn to_wit_client(c: &ClientInfo) -> wit::ClientInfo {
    wit::ClientInfo {
        remote_addr: c.remote_addr.clone(),
        user_agent: c.user_agent.clone(),
        device: c.device.clone(),
    }
}

fn to_wit_summary(s: &SessionSummary) -> wit::SessionSummary {
    wit::SessionSummary {
        id: s.id.clone(),
        roles: s.roles.clone(),
        created_at: s.created_at,
        last_seen_at: s.last_seen_at,
        expires_at: s.expires_at,
        client: to_wit_client(&s.client),
        annotations: serde_json::Value::Object(s.annotations.clone()).to_string(),
    }
}

fn to_wit_changes(c: &Changes) -> wit::Changes {
    wit::Changes {
        data_patch: c.data_patch.clone(),
        roles: c.roles.clone(),
        state: c.state.clone(),
        ttl_seconds: c.ttl_seconds,
    }
}

fn to_wit_end(end: &EndInfo) -> wit::EndInfo {
    wit::EndInfo {
        reason: match end.reason {
            EndReason::Logout => wit::EndReason::Logout,
            EndReason::Expired => wit::EndReason::Expired,
            EndReason::IdleTimeout => wit::EndReason::IdleTimeout,
            EndReason::Revoked => wit::EndReason::Revoked,
            EndReason::Evicted => wit::EndReason::Evicted,
        },
        end_id: end.end_id.clone(),
        ended_at: end.ended_at,
    }
}

// WIT types to host types: all moves, nothing is checked here.

fn from_wit_client(c: wit::ClientInfo) -> ClientInfo {
    ClientInfo {
        remote_addr: c.remote_addr,
        user_agent: c.user_agent,
        device: c.device,
    }
}

fn from_wit_changes(c: wit::Changes) -> Changes {
    Changes {
        data_patch: c.data_patch,
        roles: c.roles,
        state: c.state,
        ttl_seconds: c.ttl_seconds,
    }
}

fn from_wit_verdict(v: wit::Verdict) -> Verdict {
    match v {
        wit::Verdict::Allow(c) => Verdict::Allow(from_wit_changes(c)),
        wit::Verdict::Deny(m) => Verdict::Deny(m),
    }
}

fn from_wit_update(v: wit::UpdateVerdict) -> UpdateVerdict {
    match v {
        wit::UpdateVerdict::Accept => UpdateVerdict::Accept,
        wit::UpdateVerdict::Rewrite(c) => UpdateVerdict::Rewrite(from_wit_changes(c)),
        wit::UpdateVerdict::Reject(m) => UpdateVerdict::Reject(m),
    }
}

fn from_wit_reply(r: wit::MessageReply) -> MessageReply {
    MessageReply {
        reply: r.reply,
        changes: from_wit_changes(r.changes),
    }
}

fn from_wit_listed(list: Vec<wit::SessionSummary>) -> ListedSessions {
    ListedSessions {
        list: list
            .into_iter()
            .map(|s| Listed {
                id: s.id,
                roles: s.roles,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                expires_at: s.expires_at,
                client: from_wit_client(s.client),
                annotations: s.annotations,
            })
            .collect(),
    }
}

fn from_wit_hook(h: wit::Hook) -> Hook {
    match h {
        wit::Hook::SessionStart => Hook::SessionStart,
        wit::Hook::SessionUpdate => Hook::SessionUpdate,
        wit::Hook::SessionEnd => Hook::SessionEnd,
        wit::Hook::Event => Hook::Event,
        wit::Hook::Message => Hook::Message,
        wit::Hook::ListActive => Hook::ListActive,
    }
}

fn from_wit_level(level: log::Level) -> LogLevel {
    match level {
        log::Level::Trace => LogLevel::Trace,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Info => LogLevel::Info,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Error => LogLevel::Error,
    }
}

// The imported interfaces, each handed over to the host-typed capability.

impl wit::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.write_log(from_wit_level(level), message)
    }
}

impl clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        self.clock_now()
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, String>> {
        self.kv_get(key).await
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), String>> {
        self.kv_set(key, value, ttl_seconds).await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, String>> {
        self.kv_delete(key).await
    }
}

impl sessions::Host for HostState {
    async fn list_active(
        &mut self,
        user: String,
    ) -> wasmtime::Result<Result<Vec<wit::SessionSummary>, String>> {
        let listed = self.list_sessions(user).await?;
        Ok(listed.map(|list| list.iter().map(to_wit_summary).collect()))
    }
}

impl audit::Host for HostState {
    async fn append(&mut self, entry: String) -> wasmtime::Result<Result<(), String>> {
        self.audit_append(entry).await
    }
}

// The exports. Each returns `Err` for a trap and `Ok(Err(message))` for the
// plugin's own error.

type Outcome<T> = wasmtime::Result<Result<T, String>>;

pub(crate) async fn call_describe(
    plugin: &Plugin,
    store: &mut Store<HostState>,
) -> wasmtime::Result<Description> {
    let info = plugin.sessiond_plugin_hooks().call_describe(store).await?;
    let hooks = info.hooks.into_iter().map(from_wit_hook).collect();
    Ok(Description::new(info.name, info.version, hooks))
}

pub(crate) async fn call_init(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    config: &[(String, String)],
) -> Outcome<()> {
    plugin
        .sessiond_plugin_hooks()
        .call_init(store, config)
        .await
}

pub(crate) async fn call_on_session_start(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    session: &PluginSession,
    client: &ClientInfo,
) -> Outcome<Verdict> {
    let client = to_wit_client(client);
    let out = plugin
        .sessiond_plugin_hooks()
        .call_on_session_start(store, &session.wit, &client)
        .await?;
    Ok(out.map(from_wit_verdict))
}

pub(crate) async fn call_on_session_update(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    session: &PluginSession,
    proposed: &Changes,
) -> Outcome<UpdateVerdict> {
    let proposed = to_wit_changes(proposed);
    let out = plugin
        .sessiond_plugin_hooks()
        .call_on_session_update(store, &session.wit, &proposed)
        .await?;
    Ok(out.map(from_wit_update))
}

pub(crate) async fn call_on_session_end(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    session: &PluginSession,
    end: &EndInfo,
) -> Outcome<()> {
    let end = to_wit_end(end);
    plugin
        .sessiond_plugin_hooks()
        .call_on_session_end(store, &session.wit, &end)
        .await
}

pub(crate) async fn call_on_event(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    session: &PluginSession,
    name: &str,
    payload: &str,
) -> Outcome<Verdict> {
    // A `json` argument is passed as a `&String`.
    let payload = payload.to_string();
    let out = plugin
        .sessiond_plugin_hooks()
        .call_on_event(store, &session.wit, name, &payload)
        .await?;
    Ok(out.map(from_wit_verdict))
}

pub(crate) async fn call_on_message(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    session: &PluginSession,
    handler: &str,
    payload: &str,
) -> Outcome<MessageReply> {
    // A `json` argument is passed as a `&String`.
    let payload = payload.to_string();
    let out = plugin
        .sessiond_plugin_hooks()
        .call_on_message(store, &session.wit, handler, &payload)
        .await?;
    Ok(out.map(from_wit_reply))
}

pub(crate) async fn call_on_list_active(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    user: &str,
    sessions: &[SessionSummary],
) -> Outcome<ListedSessions> {
    let sessions: Vec<wit::SessionSummary> = sessions.iter().map(to_wit_summary).collect();
    let out = plugin
        .sessiond_plugin_hooks()
        .call_on_list_active(store, user, &sessions)
        .await?;
    Ok(out.map(from_wit_listed))
}
