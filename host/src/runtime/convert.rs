//! The boundary between the host's types and the WIT types generated in
//! `bindings`: the only module besides `bindings` that names the latter.
//!
//! It holds the conversions both ways, the `Host` impls of the imported
//! interfaces (each hands over to a host-typed capability of [`HostState`]),
//! and one wrapper per export that takes and returns host types. The one
//! WIT value kept beyond a call's arguments is [`PluginSession`], the
//! session in the WIT `session` layout (one byte list), built once per
//! plugin and call so that a hook borrows it as is.

use wasmtime::Store;

use super::bindings::Plugin;
use super::bindings::sessiond::plugin::{audit, clock, kv, log, sessions, types as wit};
use super::host::HostState;
use super::types::{
    Changes, Denial, Description, EndInfo, Hook, Listed, ListedSessions, LogLevel, MessageReply,
    UpdateVerdict, Verdict,
};
use crate::session::{ClientInfo, EndReason, SessionRecord, SessionSummary};

/// A session as one plugin sees it: the shared data, and that plugin's own
/// state only. It never holds the session's secret token. Built once per
/// plugin and call, in the layout of the WIT `session` (fields separated by
/// NUL bytes), so that a hook borrows it as is.
#[derive(Debug, Clone)]
pub struct PluginSession {
    bytes: Vec<u8>,
    id: String,
}

/// Separates the fields of a session.
const FIELD: u8 = 0x00;
/// Separates the roles within their field.
const ITEM: u8 = 0x1f;

/// Appends `text` as one field, with any separator byte replaced by U+FFFD
/// so that it cannot shift the fields after it.
fn push_text(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|b| b == FIELD || b == ITEM) {
        out.extend_from_slice(text.replace(['\0', '\u{1f}'], "\u{fffd}").as_bytes());
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Appends `n` in decimal (without the formatting machinery: this runs
/// five times per hook call).
fn push_number(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
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
        let state = record.plugin_state.get(plugin);
        let mut out = Vec::with_capacity(160 + data.len());
        let none = String::new();
        push_text(&mut out, &record.public_id);
        out.push(FIELD);
        push_text(&mut out, &record.tenant);
        out.push(FIELD);
        push_text(&mut out, record.user.as_ref().unwrap_or(&none));
        out.push(FIELD);
        for (i, role) in record.roles.iter().enumerate() {
            if i > 0 {
                out.push(ITEM);
            }
            push_text(&mut out, role);
        }
        for n in [
            record.created_at,
            record.last_seen_at,
            record.idle_expires_at(),
            record.absolute_expires_at,
            record.version,
        ] {
            out.push(FIELD);
            push_number(&mut out, n);
        }
        let c = &record.client;
        for field in [&c.remote_addr, &c.user_agent, &c.device] {
            out.push(FIELD);
            push_text(&mut out, field.as_ref().unwrap_or(&none));
        }
        out.push(FIELD);
        out.extend_from_slice(data.as_bytes());
        out.push(FIELD);
        match state {
            // Serializing a JSON value to a Vec cannot fail.
            Some(v) => {
                let _ = serde_json::to_writer(&mut out, v);
            }
            None => out.extend_from_slice(b"{}"),
        }
        PluginSession {
            bytes: out,
            id: record.public_id.clone(),
        }
    }

    /// The session's public id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The session as it crosses the boundary.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes the session carries across the boundary.
    pub(crate) fn size(&self) -> u64 {
        self.bytes.len() as u64
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
    Changes { doc: c }
}

fn from_wit_denial(d: wit::Denial) -> Denial {
    Denial {
        message: d.message,
        state: d.state,
    }
}

fn from_wit_verdict(v: wit::Verdict) -> Verdict {
    match v {
        wit::Verdict::AllowUnchanged => Verdict::Allow(Changes::none()),
        wit::Verdict::Allow(c) => Verdict::Allow(from_wit_changes(c)),
        wit::Verdict::Deny(d) => Verdict::Deny(from_wit_denial(d)),
    }
}

fn from_wit_update(v: wit::UpdateVerdict) -> UpdateVerdict {
    match v {
        wit::UpdateVerdict::Accept => UpdateVerdict::Accept,
        wit::UpdateVerdict::Rewrite(c) => UpdateVerdict::Rewrite(from_wit_changes(c)),
        wit::UpdateVerdict::Reject(d) => UpdateVerdict::Reject(from_wit_denial(d)),
    }
}

fn from_wit_reply(r: wit::MessageReply) -> MessageReply {
    MessageReply {
        reply: r.reply,
        changes: r.changes.map(from_wit_changes).unwrap_or_default(),
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
) -> Outcome<Verdict> {
    let out = plugin
        .sessiond_plugin_hooks()
        .call_on_session_start(store, &session.bytes)
        .await?;
    Ok(out.map(from_wit_verdict))
}

pub(crate) async fn call_on_session_update(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    session: &PluginSession,
    proposed: &Changes,
) -> Outcome<UpdateVerdict> {
    let out = plugin
        .sessiond_plugin_hooks()
        .call_on_session_update(store, &session.bytes, &proposed.doc)
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
        .call_on_session_end(store, &session.bytes, &end)
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
        .call_on_event(store, &session.bytes, name, &payload)
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
        .call_on_message(store, &session.bytes, handler, &payload)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_crosses_as_nul_separated_fields() {
        let record = SessionRecord {
            token_hash: "h".into(),
            public_id: "p-1".into(),
            tenant: "t".into(),
            user: Some("al\u{0}ice".into()),
            roles: vec!["a".into(), "b".into()],
            created_at: 0,
            last_seen_at: 10,
            absolute_expires_at: 1_000,
            idle_timeout_ms: 90,
            version: 18_446_744_073_709_551_615,
            client: ClientInfo {
                device: Some("mobile".into()),
                ..ClientInfo::default()
            },
            data: serde_json::from_str(r#"{"k":[1]}"#).unwrap(),
            plugin_state: [("me".to_string(), serde_json::json!({"n": 1}))].into(),
            idle_warned_at: None,
        };
        let mine = PluginSession::new(&record, "me");
        let fields: Vec<&[u8]> = mine.as_bytes().split(|b| *b == 0).collect();
        let text: Vec<String> = fields
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        assert_eq!(
            text,
            [
                "p-1",
                "t",
                "al\u{fffd}ice",
                "a\u{1f}b",
                "0",
                "10",
                "100",
                "1000",
                "18446744073709551615",
                "",
                "",
                "mobile",
                r#"{"k":[1]}"#,
                r#"{"n":1}"#
            ]
        );
        assert_eq!(mine.size(), mine.as_bytes().len() as u64);
        let other = PluginSession::new(&record, "other");
        assert!(other.as_bytes().ends_with(b"\0{}"));
    }
}
