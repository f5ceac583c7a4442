//! A tenant's plugins as an ordered chain. A deny stops the chain; changes
//! compose in order, each plugin seeing the session as the plugins before it
//! left it. The chain never writes: its outcome tells the service what to
//! store, and whether a plugin asked to end the session or to keep a state
//! change despite its deny.

use std::sync::Arc;

use serde_json::Value;

use super::convert::{PluginSession, data_json};
use super::error::{FailureKind, PluginFailure};
use super::plugin::{Call, LoadedPlugin, OnError};
use super::types::{
    ChangeSet, Changes, Denial, EndInfo, Hook, UpdateVerdict, Verdict, parse_object,
};
use crate::session::{EndReason, Millis, SessionRecord, SessionSummary};

/// The outcome of a chain that can veto.
#[derive(Debug)]
pub enum Decision {
    /// Every plugin allowed; the session with all their changes applied.
    Allow(Box<SessionRecord>),
    /// Every plugin allowed, and `plugin` (the first to ask) asked to end
    /// the session with `reason` (`logout` or `revoked`): store `record`,
    /// then end it.
    End {
        record: Box<SessionRecord>,
        plugin: String,
        reason: EndReason,
    },
    /// A plugin denied (or failed under a fail-closed policy).
    Deny {
        plugin: String,
        message: String,
        /// Set when the deny comes from a failure, not a verdict.
        failure: Option<Box<PluginFailure>>,
        /// The denying plugin's new private state (an object), to store
        /// although the request is refused; none for a failure, in
        /// `on-session-start`, or when the plugin sent no valid one.
        state: Option<Value>,
    },
}

impl Decision {
    fn allowed(record: SessionRecord, end: Option<(String, EndReason)>) -> Decision {
        match end {
            None => Decision::Allow(Box::new(record)),
            Some((plugin, reason)) => Decision::End {
                record: Box::new(record),
                plugin,
                reason,
            },
        }
    }
}

/// The outcome of the `on-message` chain.
#[derive(Debug)]
pub enum MessageOutcome {
    /// A plugin answered; the session with its changes applied, and the
    /// reason to end it with when the plugin asked to.
    Reply {
        plugin: String,
        reply: Value,
        record: Box<SessionRecord>,
        end: Option<EndReason>,
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
    /// Some plugin's circuit breaker was open, so its hook did not run:
    /// the end should be run again later rather than go without it.
    pub deferred: bool,
}

impl EndOutcome {
    /// Whether the end should run again later (after the reclaim time)
    /// instead of being finished now.
    pub fn run_again(&self) -> bool {
        self.store_unavailable || self.deferred
    }
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

    /// Runs `on-session-start` over a session about to be created. A
    /// plugin cannot end it (that is an invalid result) and a denial's
    /// state is dropped: there is no session to hold it.
    #[tracing::instrument(
        level = "debug",
        name = "chain",
        skip_all,
        fields(hook = "on-session-start")
    )]
    pub async fn session_start(&self, mut record: SessionRecord, now: Millis) -> Decision {
        let mut data = data_json(&record);
        for p in self.with(Hook::SessionStart) {
            let session = PluginSession::with_data(&record, &p.name, data.clone());
            let call = p.on_session_start(&session).await;
            match self.verdict(p, Hook::SessionStart, call, &mut record, now, false) {
                Ok(step) if step.patched => data = data_json(&record),
                Ok(_) => {}
                Err(Decision::Deny {
                    plugin,
                    message,
                    failure,
                    ..
                }) => {
                    return Decision::Deny {
                        plugin,
                        message,
                        failure,
                        state: None,
                    };
                }
                Err(other) => return other,
            }
        }
        Decision::Allow(Box::new(record))
    }

    /// Runs `on-event` for the event `name`.
    #[tracing::instrument(level = "debug", name = "chain", skip_all, fields(hook = "on-event"))]
    pub async fn event(
        &self,
        mut record: SessionRecord,
        name: &str,
        payload: &Value,
        now: Millis,
    ) -> Decision {
        let payload = payload.to_string();
        let mut data = data_json(&record);
        let mut end = None;
        for p in self.with(Hook::Event) {
            let session = PluginSession::with_data(&record, &p.name, data.clone());
            let call = p.on_event(&session, name, &payload).await;
            let step = match self.verdict(p, Hook::Event, call, &mut record, now, true) {
                Ok(step) => step,
                Err(deny) => return deny,
            };
            if step.patched {
                data = data_json(&record);
            }
            if end.is_none() {
                end = step.end.map(|reason| (p.name.clone(), reason));
            }
        }
        Decision::allowed(record, end)
    }

    /// Applies one plugin's verdict; `Err` is the deny that stops the chain.
    /// `may_end` says whether the hook may ask to end the session.
    fn verdict(
        &self,
        p: &LoadedPlugin,
        hook: Hook,
        call: Call<Verdict>,
        record: &mut SessionRecord,
        now: Millis,
        may_end: bool,
    ) -> Result<Applied, Decision> {
        match call.result {
            Ok(Verdict::Allow(changes)) => {
                match self.apply(p, hook, record, &changes, now, may_end) {
                    Ok(applied) => Ok(applied),
                    Err(failure) => self
                        .on_failure(p, hook, failure)
                        .map(|()| Applied::default()),
                }
            }
            Ok(Verdict::Deny(denial)) => Err(self.deny(p, hook, denial)),
            Err(failure) => self
                .on_failure(p, hook, failure)
                .map(|()| Applied::default()),
        }
    }

    /// The decision of `p`'s refusal. A state that is not a JSON object is
    /// dropped (and logged): the refusal stands either way.
    fn deny(&self, p: &LoadedPlugin, hook: Hook, denial: Denial) -> Decision {
        let state = denial
            .state
            .and_then(|text| match parse_object(&text, "state") {
                Ok(m) => Some(Value::Object(m)),
                Err(e) => {
                    p.warn(hook, None, &format!("ignoring the state of a denial: {e}"));
                    None
                }
            });
        Decision::Deny {
            plugin: p.name.clone(),
            message: denial.message,
            failure: None,
            state,
        }
    }

    /// What `p`'s failure means under its `on_error` policy; either way the
    /// failure writes one (rate-limited) line.
    fn on_failure(
        &self,
        p: &LoadedPlugin,
        hook: Hook,
        failure: PluginFailure,
    ) -> Result<(), Decision> {
        match p.on_error {
            OnError::Deny => {
                p.log_failure(hook, &failure, "plugin failed, refusing (on_error = deny)");
                Err(Decision::Deny {
                    plugin: p.name.clone(),
                    message: format!("plugin {} failed: {}", p.name, failure.message),
                    failure: Some(Box::new(failure)),
                    state: None,
                })
            }
            OnError::Allow => {
                p.log_failure(hook, &failure, "plugin failed, going on (on_error = allow)");
                Ok(())
            }
        }
    }

    /// Runs `on-session-update` over a requested change (`data_patch` and
    /// `roles`), then applies the change as the chain left it.
    #[tracing::instrument(
        level = "debug",
        name = "chain",
        skip_all,
        fields(hook = "on-session-update")
    )]
    pub async fn session_update(
        &self,
        mut record: SessionRecord,
        data_patch: Option<&Value>,
        roles: Option<Vec<String>>,
        now: Millis,
    ) -> Decision {
        let mut proposed = Changes::proposal(data_patch, roles.as_deref());
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
                Ok(UpdateVerdict::Reject(denial)) => {
                    return self.deny(p, Hook::SessionUpdate, denial);
                }
                Err(failure) => {
                    if let Err(deny) = self.on_failure(p, Hook::SessionUpdate, failure) {
                        return deny;
                    }
                }
            }
        }
        let result = match author {
            Some(p) => self
                .apply(p, Hook::SessionUpdate, &mut record, &proposed, now, true)
                .map(|applied| applied.end.map(|reason| (p.name.clone(), reason))),
            None => proposed
                .parse()
                .and_then(|mut set| {
                    // The REST consumer's own change: data and roles only.
                    set.state = None;
                    set.end = None;
                    apply_changes(&mut record, "", set, now, self.max_lifetime_ms)
                })
                .map(|()| None)
                .map_err(|message| PluginFailure {
                    plugin: String::new(),
                    kind: FailureKind::InvalidOutput,
                    message,
                    backtrace: None,
                    output: None,
                    store_unavailable: false,
                }),
        };
        match result {
            Ok(end) => Decision::allowed(record, end),
            Err(failure) => Decision::Deny {
                plugin: failure.plugin.clone(),
                message: failure.message.clone(),
                failure: Some(Box::new(failure)),
                state: None,
            },
        }
    }

    /// Runs `on-session-end` on every plugin that implements it, each once.
    #[tracing::instrument(
        level = "debug",
        name = "chain",
        skip_all,
        fields(hook = "on-session-end")
    )]
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
            if let Err(f) = &call.result
                && f.kind == FailureKind::CircuitOpen
            {
                // Not run at all: the job waits for the breaker rather than
                // finish without this hook.
                outcome.deferred = true;
                continue;
            }
            if let Err(f) = call.result {
                let what = format!("on-session-end of session {} failed", record.public_id);
                p.log_failure(Hook::SessionEnd, &f, &what);
                outcome.failures.push(f);
            }
        }
        outcome
    }

    /// Counts the failures of an `on-session-end` run in the stats of the
    /// plugins that failed, once the run is known to be the one that
    /// finished its end job (see [`LoadedPlugin::count_failure`]).
    pub fn count_end_failures(&self, failures: &[(String, FailureKind)]) {
        for (plugin, kind) in failures {
            if let Some(p) = self.plugins.iter().find(|p| &p.name == plugin) {
                p.count_failure(*kind);
            }
        }
    }

    /// Sends a message to the handler `handler`. Plugins that implement
    /// `on-message` are asked in order; the first that answers wins.
    #[tracing::instrument(level = "debug", name = "chain", skip_all, fields(hook = "on-message"))]
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
            let hook = Hook::Message;
            let answered = call.result.and_then(|r| {
                let reply = check_reply(&r.reply).map_err(|m| p.invalid_output(hook, m))?;
                let applied = self.apply(p, hook, &mut record, &r.changes, now, true)?;
                Ok((reply, applied.end))
            });
            match answered {
                Ok((reply, end)) => {
                    return MessageOutcome::Reply {
                        plugin: p.name.clone(),
                        reply,
                        record: Box::new(record),
                        end,
                    };
                }
                Err(f) => {
                    p.log_failure(hook, &f, "on-message failed, asking the next plugin");
                    last_failure = Some(f);
                }
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
    #[tracing::instrument(
        level = "debug",
        name = "chain",
        skip_all,
        fields(hook = "on-list-active")
    )]
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
                .and_then(|listed| {
                    listed
                        .into_checked()
                        .map_err(|m| p.invalid_output(Hook::ListActive, m))
                });
            match result {
                Ok(checked) => list = checked,
                Err(f) if p.on_error == OnError::Deny => {
                    p.log_failure(Hook::ListActive, &f, "on-list-active failed, refusing");
                    return Err(f);
                }
                Err(f) => p.log_failure(Hook::ListActive, &f, "on-list-active failed, going on"),
            }
        }
        Ok(list)
    }

    /// Checks and applies one plugin's changes; nothing is applied if any
    /// part is invalid, or if they ask to end the session where `may_end`
    /// is false.
    fn apply(
        &self,
        p: &LoadedPlugin,
        hook: Hook,
        record: &mut SessionRecord,
        changes: &Changes,
        now: Millis,
        may_end: bool,
    ) -> Result<Applied, PluginFailure> {
        let set = check_changes(changes, may_end).map_err(|m| p.invalid_output(hook, m))?;
        let applied = Applied {
            patched: set.data_patch.is_some(),
            end: set.end,
        };
        apply_changes(record, &p.name, set, now, self.max_lifetime_ms)
            .map_err(|m| p.invalid_output(hook, m))?;
        Ok(applied)
    }
}

/// Checks a plugin's changes exactly as the chain does before applying
/// them (`may_end`: the hook may ask to end the session); the parsed
/// changes, or what is wrong with them (an `invalid-output` failure).
pub(crate) fn check_changes(changes: &Changes, may_end: bool) -> Result<ChangeSet, String> {
    let set = changes.parse()?;
    if set.end.is_some() && !may_end {
        return Err("on-session-start cannot end the session it is creating".into());
    }
    // Depth is checked before anything changes: a merge patch leaves the
    // data no deeper than the deeper of the two. (The size of the whole
    // session is checked by the service before it is stored.)
    for (what, object) in [("data_patch", &set.data_patch), ("state", &set.state)] {
        if let Some(object) = object {
            crate::json::check_object(what, object).map_err(|e| e.to_string())?;
        }
    }
    Ok(set)
}

/// Checks an `on-message` reply exactly as the chain does: the JSON it
/// holds, or what is wrong with it.
pub(crate) fn check_reply(reply: &str) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(reply).map_err(|e| format!("the reply is not valid JSON: {e}"))?;
    crate::json::check("reply", &value).map_err(|e| e.to_string())?;
    Ok(value)
}

/// What applying one plugin's changes did.
#[derive(Debug, Default)]
struct Applied {
    /// The shared data changed (plugins after it need it serialized again).
    patched: bool,
    /// The plugin asked to end the session with this reason.
    end: Option<EndReason>,
}

/// Applies one plugin's checked changes to a session: merge-patches the
/// shared data, replaces roles and the plugin's own state, and resets the
/// lifetime (capped at `max_lifetime_ms` from creation). The end request is
/// the caller's to act on.
pub(crate) fn apply_changes(
    record: &mut SessionRecord,
    plugin: &str,
    changes: ChangeSet,
    now: Millis,
    max_lifetime_ms: Millis,
) -> Result<(), String> {
    if let Some(patch) = changes.data_patch {
        let mut data = Value::Object(std::mem::take(&mut record.data));
        json_patch::merge(&mut data, &Value::Object(patch));
        if let Value::Object(m) = data {
            record.data = m;
        }
    }
    if let Some(roles) = changes.roles {
        record.roles = roles;
    }
    if let Some(state) = changes.state {
        record
            .plugin_state
            .insert(plugin.to_string(), Value::Object(state));
    }
    if let Some(ttl) = changes.ttl_seconds {
        let cap = record.created_at.saturating_add(max_lifetime_ms);
        record.absolute_expires_at = now.saturating_add(u64::from(ttl) * 1000).min(cap);
    }
    Ok(())
}
