//! A tenant's plugins as an ordered chain. A deny stops the chain; changes
//! compose in order, each plugin seeing the session as the plugins before it
//! left it.

use std::sync::Arc;

use serde_json::Value;

use super::convert::{PluginSession, data_json};
use super::error::{FailureKind, PluginFailure};
use super::plugin::{Call, LoadedPlugin, OnError};
use super::types::{Changes, EndInfo, Hook, UpdateVerdict, Verdict, parse_object};
use crate::session::{EndReason, Millis, SessionRecord, SessionSummary};

/// The outcome of a chain that can veto.
#[derive(Debug)]
pub enum Decision {
    /// Every plugin allowed; the session with all their changes applied.
    Allow(Box<SessionRecord>),
    /// A plugin denied (or failed under a fail-closed policy).
    Deny {
        plugin: String,
        message: String,
        /// Set when the deny comes from a failure, not a verdict.
        failure: Option<Box<PluginFailure>>,
    },
}

/// The outcome of the `on-message` chain.
#[derive(Debug)]
pub enum MessageOutcome {
    /// A plugin answered; the session with its changes applied.
    Reply {
        plugin: String,
        reply: Value,
        record: Box<SessionRecord>,
    },
    /// No plugin implements `on-message`.
    NoHandler,
    /// Every plugin that implements it failed; the last failure.
    Failed(PluginFailure),
}

/// The outcome of the `on-session-end` chain: every plugin ran once.
#[derive(Debug, Default)]
pub struct EndOutcome {
    pub failures: Vec<PluginFailure>,
    /// Some plugin's host call could not reach the store: what the hooks
    /// meant to write may be missing, so the end should be run again.
    pub store_unavailable: bool,
}

/// The plugins of one tenant, in order.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    plugins: Vec<Arc<LoadedPlugin>>,
    max_lifetime_ms: Millis,
}

impl Chain {
    /// A chain over `plugins`; `max_lifetime_ms` caps the TTL plugins set.
    pub fn new(plugins: Vec<Arc<LoadedPlugin>>, max_lifetime_ms: Millis) -> Chain {
        Chain {
            plugins,
            max_lifetime_ms,
        }
    }

    /// The plugins, in order.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }

    /// Whether any plugin implements `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        self.plugins.iter().any(|p| p.description.implements(hook))
    }

    /// The longest a run of `hook` over the chain can take: the sum of the
    /// deadlines of the plugins that implement it (a fresh instance's
    /// instantiation counts against the same deadline).
    pub fn worst_case_ms(&self, hook: Hook) -> u64 {
        self.with(hook).map(|p| p.limits.deadline_ms).sum()
    }

    fn with(&self, hook: Hook) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins
            .iter()
            .filter(move |p| p.description.implements(hook))
    }

    /// Runs `on-session-start` over a session about to be created.
    pub async fn session_start(&self, mut record: SessionRecord, now: Millis) -> Decision {
        let mut data = data_json(&record);
        for p in self.with(Hook::SessionStart) {
            let session = PluginSession::with_data(&record, &p.name, data.clone());
            let call = p.on_session_start(&session, &record.client).await;
            match self.verdict(p, call, &mut record, now) {
                Ok(false) => {}
                Ok(true) => data = data_json(&record),
                Err(deny) => return deny,
            }
        }
        Decision::Allow(Box::new(record))
    }

    /// Runs `on-event` for the event `name`.
    pub async fn event(
        &self,
        mut record: SessionRecord,
        name: &str,
        payload: &Value,
        now: Millis,
    ) -> Decision {
        let payload = payload.to_string();
        let mut data = data_json(&record);
        for p in self.with(Hook::Event) {
            let session = PluginSession::with_data(&record, &p.name, data.clone());
            let call = p.on_event(&session, name, &payload).await;
            match self.verdict(p, call, &mut record, now) {
                Ok(false) => {}
                Ok(true) => data = data_json(&record),
                Err(deny) => return deny,
            }
        }
        Decision::Allow(Box::new(record))
    }

    fn verdict(
        &self,
        p: &LoadedPlugin,
        call: Call<Verdict>,
        record: &mut SessionRecord,
        now: Millis,
    ) -> Result<bool, Decision> {
        match call.result {
            Ok(Verdict::Allow(changes)) => {
                let patched = changes.data_patch.is_some();
                match self.apply(p, record, changes, now) {
                    Ok(()) => Ok(patched),
                    Err(failure) => self.on_failure(p, failure).map(|()| false),
                }
            }
            Ok(Verdict::Deny(message)) => Err(Decision::Deny {
                plugin: p.name.clone(),
                message,
                failure: None,
            }),
            Err(failure) => self.on_failure(p, failure).map(|()| false),
        }
    }

    fn on_failure(&self, p: &LoadedPlugin, failure: PluginFailure) -> Result<(), Decision> {
        match p.on_error {
            OnError::Deny => Err(Decision::Deny {
                plugin: p.name.clone(),
                message: format!("plugin {} failed: {}", p.name, failure.message),
                failure: Some(Box::new(failure)),
            }),
            OnError::Allow => {
                tracing::warn!(tenant = %p.tenant, plugin = %p.name, kind = failure.kind.as_str(),
                    "plugin failed, going on (on_error = allow): {}", failure.message);
                Ok(())
            }
        }
    }

    /// Runs `on-session-update` over a requested change (`data_patch` and
    /// `roles`), then applies the change as the chain left it.
    pub async fn session_update(
        &self,
        mut record: SessionRecord,
        data_patch: Option<&Value>,
        roles: Option<Vec<String>>,
        now: Millis,
    ) -> Decision {
        let mut proposed = Changes {
            data_patch: data_patch.map(Value::to_string),
            roles,
            state: None,
            ttl_seconds: None,
        };
        // The plugin that last rewrote the change, whose state it may set.
        let mut author: Option<&Arc<LoadedPlugin>> = None;
        // The record only changes after the loop: serialize its data once.
        let data = data_json(&record);
        for p in self.with(Hook::SessionUpdate) {
            let session = PluginSession::with_data(&record, &p.name, data.clone());
            let call = p.on_session_update(&session, &proposed).await;
            match call.result {
                Ok(UpdateVerdict::Accept) => {}
                Ok(UpdateVerdict::Rewrite(changes)) => {
                    proposed = changes;
                    author = Some(p);
                }
                Ok(UpdateVerdict::Reject(message)) => {
                    return Decision::Deny {
                        plugin: p.name.clone(),
                        message,
                        failure: None,
                    };
                }
                Err(failure) => {
                    if let Err(deny) = self.on_failure(p, failure) {
                        return deny;
                    }
                }
            }
        }
        let result = match author {
            Some(p) => self.apply(p, &mut record, proposed, now),
            None => {
                proposed.state = None;
                apply_changes(&mut record, "", proposed, now, self.max_lifetime_ms).map_err(
                    |message| PluginFailure {
                        plugin: String::new(),
                        kind: FailureKind::InvalidOutput,
                        message,
                        backtrace: None,
                        output: None,
                        store_unavailable: false,
                    },
                )
            }
        };
        match result {
            Ok(()) => Decision::Allow(Box::new(record)),
            Err(failure) => Decision::Deny {
                plugin: failure.plugin.clone(),
                message: failure.message.clone(),
                failure: Some(Box::new(failure)),
            },
        }
    }

    /// Runs `on-session-end` on every plugin that implements it, each once.
    pub async fn session_end(
        &self,
        record: &SessionRecord,
        reason: EndReason,
        end_id: &str,
        ended_at: Millis,
    ) -> EndOutcome {
        let end = EndInfo {
            reason,
            end_id: end_id.to_string(),
            ended_at,
        };
        let mut outcome = EndOutcome::default();
        let data = data_json(record);
        for p in self.with(Hook::SessionEnd) {
            let session = PluginSession::with_data(record, &p.name, data.clone());
            let call = p.on_session_end(&session, &end).await;
            outcome.store_unavailable |= call.report.store_unavailable;
            if let Err(f) = call.result {
                tracing::warn!(tenant = %p.tenant, plugin = %p.name, kind = f.kind.as_str(),
                    session = %record.public_id, "on-session-end failed: {}", f.message);
                outcome.failures.push(f);
            }
        }
        outcome
    }

    /// Sends a message to the handler `handler`. Plugins that implement
    /// `on-message` are asked in order; the first that answers wins.
    pub async fn message(
        &self,
        mut record: SessionRecord,
        handler: &str,
        payload: &Value,
        now: Millis,
    ) -> MessageOutcome {
        let payload = payload.to_string();
        let mut last_failure = None;
        // Only the answering plugin's changes are applied, after which the
        // loop ends: the data is serialized once.
        let data = data_json(&record);
        for p in self.with(Hook::Message) {
            let session = PluginSession::with_data(&record, &p.name, data.clone());
            let call = p.on_message(&session, handler, &payload).await;
            let answered = call.result.and_then(|r| {
                let reply: Value = serde_json::from_str(&r.reply)
                    .map_err(|e| invalid(p, format!("the reply is not valid JSON: {e}")))?;
                self.apply(p, &mut record, r.changes, now)?;
                Ok(reply)
            });
            match answered {
                Ok(reply) => {
                    return MessageOutcome::Reply {
                        plugin: p.name.clone(),
                        reply,
                        record: Box::new(record),
                    };
                }
                Err(f) => last_failure = Some(f),
            }
        }
        match last_failure {
            Some(f) => MessageOutcome::Failed(f),
            None => MessageOutcome::NoHandler,
        }
    }

    /// Runs `on-list-active` over a user's session summaries. A failing
    /// plugin with `on_error = deny` fails the listing; with `allow` the
    /// listing goes on without it.
    pub async fn list_active(
        &self,
        user: &str,
        summaries: Vec<SessionSummary>,
    ) -> Result<Vec<SessionSummary>, PluginFailure> {
        let mut list = summaries;
        for p in self.with(Hook::ListActive) {
            let result = p
                .on_list_active(user, &list)
                .await
                .result
                .and_then(|listed| listed.into_checked().map_err(|m| invalid(p, m)));
            match result {
                Ok(checked) => list = checked,
                Err(f) if p.on_error == OnError::Deny => return Err(f),
                Err(f) => {
                    tracing::warn!(tenant = %p.tenant, plugin = %p.name, "on-list-active failed, going on: {}", f.message);
                }
            }
        }
        Ok(list)
    }

    fn apply(
        &self,
        p: &LoadedPlugin,
        record: &mut SessionRecord,
        changes: Changes,
        now: Millis,
    ) -> Result<(), PluginFailure> {
        apply_changes(record, &p.name, changes, now, self.max_lifetime_ms)
            .map_err(|m| invalid(p, m))
    }
}

fn invalid(p: &LoadedPlugin, message: String) -> PluginFailure {
    PluginFailure {
        plugin: p.name.clone(),
        kind: FailureKind::InvalidOutput,
        message,
        backtrace: None,
        output: None,
        store_unavailable: false,
    }
}

/// Applies one plugin's changes to a session: merge-patches the shared data,
/// replaces roles and the plugin's own state, and resets the lifetime (capped
/// at `max_lifetime_ms` from creation). Nothing is applied if any part is
/// invalid.
pub(crate) fn apply_changes(
    record: &mut SessionRecord,
    plugin: &str,
    changes: Changes,
    now: Millis,
    max_lifetime_ms: Millis,
) -> Result<(), String> {
    let patch = match &changes.data_patch {
        Some(text) => Some(Value::Object(parse_object(text, "data-patch")?)),
        None => None,
    };
    let state = match &changes.state {
        Some(text) => Some(Value::Object(parse_object(text, "state")?)),
        None => None,
    };
    if let Some(patch) = patch {
        let mut data = Value::Object(std::mem::take(&mut record.data));
        json_patch::merge(&mut data, &patch);
        if let Value::Object(m) = data {
            record.data = m;
        }
    }
    if let Some(roles) = changes.roles {
        record.roles = roles;
    }
    if let Some(state) = state {
        record.plugin_state.insert(plugin.to_string(), state);
    }
    if let Some(ttl) = changes.ttl_seconds {
        let cap = record.created_at.saturating_add(max_lifetime_ms);
        record.absolute_expires_at = now.saturating_add(u64::from(ttl) * 1000).min(cap);
    }
    Ok(())
}
