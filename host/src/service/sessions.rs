//! One session's operations: create, get, update, touch, authenticate,
//! event, message and logout.

use crate::config::WebhookEvent;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::decided::{After, decide, settle};
use super::end::Ending;
use super::error::allowed;
use super::input::{check_json, check_json_object, check_name, check_roles, check_session};
use super::once::{IdempotencyKey, request_digest};
use super::write::{write_session, write_unless_unchanged};
use super::{Error, Precondition, Result, SessionKey};
use crate::app::App;
use crate::ids;
use crate::runtime::{Hook, MessageOutcome};
use crate::session::{ClientInfo, EndReason, Millis, SessionRecord, now_ms};
use crate::store::{CreateOutcome, LimitPolicy, MergeOutcome, Once, OnceKey, Remembered};
use crate::tenant::Tenant;

/// The event that authentication sends through `on-event`.
pub const AUTHENTICATED_EVENT: &str = "authenticated";

/// What a new session starts with.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// None for an anonymous session.
    pub user: Option<String>,
    pub roles: Vec<String>,
    /// The initial shared data.
    pub data: Map<String, Value>,
    /// The absolute lifetime asked for (capped at the tenant's maximum);
    /// none: the tenant's default.
    pub ttl_seconds: Option<u64>,
    /// Where the session comes from (address, user agent, device).
    pub client: ClientInfo,
}

/// A session with its secret token: the answer of create and authenticate,
/// the only two that hand out a token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub record: SessionRecord,
    pub token: String,
    /// Whether this is the answer of an earlier request with the same
    /// idempotency key, given again (nothing ran now).
    pub replayed: bool,
}

/// Who a session now belongs to (authenticate).
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    /// The roles from now on; none: unchanged.
    pub roles: Option<Vec<String>>,
}

/// A change of a session's shared data.
#[derive(Debug, Clone)]
pub enum DataChange {
    /// An RFC 7386 merge patch (a JSON object).
    Patch(Map<String, Value>),
    /// New data as a whole (sessman's update); none keeps the data and only
    /// slides the idle deadline. The change the chain sees is the merge
    /// patch from the stored data to these.
    Replace(Option<Map<String, Value>>),
}

/// A plugin's answer to a message, with the session after it.
#[derive(Debug, Clone)]
pub struct Replied {
    pub record: SessionRecord,
    /// The plugin that answered.
    pub plugin: String,
    pub reply: Value,
}

/// Creates a session: runs the tenant's `on-session-start` chain (a plugin
/// may veto or change the session) and applies the per-user limit (policy
/// `deny` refuses; `evict-lru` ends the least recently used sessions with
/// reason `evicted`).
///
/// With an idempotency key (see [`super::once`]): a key the tenant used
/// for a create that stored its session answers with that session and
/// token again and runs nothing; a key used for another request fails with
/// [`Error::IdempotencyKeyReused`].
pub async fn create(
    app: &App,
    tenant: &Tenant,
    new: NewSession,
    key: Option<&IdempotencyKey>,
) -> Result<Issued> {
    if let Some(user) = &new.user {
        check_name("user", user)?;
    }
    check_roles(&new.roles)?;
    if let Some(device) = &new.client.device {
        check_name("device", device)?;
    }
    if new.ttl_seconds == Some(0) {
        return Err(Error::invalid(
            "ttl_seconds",
            "ttl_seconds: must be at least 1",
        ));
    }
    check_json_object("data", &new.data)?;
    let mut once = key.map(|k| k.in_store(&tenant.name, create_digest(&new), ttl_ms(app)));
    let _in_flight = match &once {
        Some(once) => Some(
            app.keys_in_flight
                .enter(&once.id)
                .ok_or(Error::IdempotencyKeyInUse)?,
        ),
        None => None,
    };
    if let (Some(key), Some(once)) = (key, &once)
        && let Some(known) = app.sessions.remembered(&tenant.name, &once.id).await?
    {
        return replay_create(key, once, known);
    }
    let limit = tenant.user_limit();
    let now = now_ms();
    // With policy deny, refuse before running any plugin; the store checks
    // again atomically when it creates the session.
    if let (Some(user), Some(limit)) = (&new.user, limit)
        && limit.policy == LimitPolicy::Deny
    {
        let active = app.sessions.list_user(&tenant.name, user, now).await?.len();
        let active = u32::try_from(active).unwrap_or(u32::MAX);
        if active >= limit.max {
            return Err(Error::LimitReached {
                user: user.clone(),
                active,
                max: limit.max,
            });
        }
    }
    let token = ids::new_token();
    let record = SessionRecord {
        token_hash: ids::token_hash(&token),
        public_id: ids::new_public_id(),
        tenant: tenant.name.clone(),
        user: new.user,
        roles: new.roles,
        created_at: now,
        last_seen_at: now,
        absolute_expires_at: now.saturating_add(tenant.lifetime_ms(new.ttl_seconds)),
        idle_timeout_ms: tenant.idle_timeout_ms(),
        version: 1,
        client: new.client,
        data: new.data,
        plugin_state: Default::default(),
        idle_warned_at: None,
    };
    let mut record = allowed(tenant.chain.session_start(record, now).await)?;
    // Plugins change data, roles, their state and the lifetime; nothing else.
    record.version = 1;
    check_session(&record)?;
    let ending = Ending::of(app, tenant);
    let outcome = match (key, once.as_mut()) {
        (Some(key), Some(once)) => {
            once.sealed = Some(key.seal(&token).ok_or_else(|| {
                Error::Store(crate::store::StoreError::Backend(
                    "the new token cannot be sealed".into(),
                ))
            })?);
            match ending
                .create_once(&record, tenant.create_limit(), once, now)
                .await?
            {
                Once::Ran(outcome) => outcome,
                Once::Known(known) => return replay_create(key, once, *known),
            }
        }
        _ => ending.create(&record, tenant.create_limit(), now).await?,
    };
    match outcome {
        CreateOutcome::Created { .. } => {
            tracing::debug!(tenant = %tenant.name, session = %record.public_id,
                token = %ids::log_prefix(&token), user = ?record.user, "session created");
            if tenant.wants_webhook(WebhookEvent::SessionCreated)
                && let Err(e) = app.webhooks.created(tenant, &record).await
            {
                // The session is stored; the answer says so. Only the event
                // is lost (see crate::webhooks).
                tracing::warn!(tenant = %tenant.name, session = %record.public_id,
                    "cannot queue the session.created webhooks: {e}");
            }
            Ok(Issued {
                record,
                token,
                replayed: false,
            })
        }
        CreateOutcome::LimitReached { active } => Err(Error::LimitReached {
            user: record.user.unwrap_or_default(),
            active,
            max: limit.map(|l| l.max).unwrap_or_default(),
        }),
        CreateOutcome::QuotaReached { stored } => Err(Error::SessionQuota {
            stored,
            max: tenant.config.quota.max_sessions.unwrap_or_default(),
        }),
    }
}

/// How long the store keeps an idempotency key.
fn ttl_ms(app: &App) -> u64 {
    app.server.idempotency_ttl_seconds.saturating_mul(1000)
}

/// The digest of what a create asks for: the body's members, not where
/// the request came from (a retry may come over another connection).
fn create_digest(new: &NewSession) -> String {
    let asked = json!({
        "user": new.user,
        "roles": new.roles,
        "data": new.data,
        "ttl_seconds": new.ttl_seconds,
        "device": new.client.device,
    });
    request_digest("create", asked.to_string().as_bytes())
}

/// The answer of the create that recorded `known`, if it asked for what
/// `once` asks for.
fn replay_create(key: &IdempotencyKey, once: &OnceKey, known: Remembered) -> Result<Issued> {
    if known.request != once.request {
        return Err(Error::IdempotencyKeyReused);
    }
    let Some((record, sealed)) = known.created else {
        return Err(Error::IdempotencyKeyReused);
    };
    let token = key.unseal(&sealed).ok_or_else(|| {
        Error::Store(crate::store::StoreError::Corrupt(
            "the sealed token of an idempotency key cannot be read".into(),
        ))
    })?;
    tracing::debug!(tenant = %record.tenant, session = %record.public_id,
        token = %ids::log_prefix(&token), "create answered again for its idempotency key");
    Ok(Issued {
        record,
        token,
        replayed: true,
    })
}

/// The live session under `key`. Reading does not count as use: it does
/// not slide the idle deadline.
pub async fn get(app: &App, tenant: &Tenant, key: &SessionKey) -> Result<SessionRecord> {
    app.sessions
        .get(&tenant.name, key.as_str(), now_ms())
        .await?
        .ok_or(Error::NotFound)
}

/// Changes the shared data through `on-session-update` (a plugin may
/// reject or rewrite the change) and slides the idle deadline. Ends and
/// refusals that keep a state change are handled as in [`event`].
///
/// A merge patch without a precondition, for a tenant none of whose
/// plugins implements `on-session-update`, is applied by the store in one
/// atomic step ([`crate::store::SessionStore::merge`]): no read, no
/// compare-and-set, nothing to retry. Every other change goes through the
/// chain inside the compare-and-set write.
pub async fn update(
    app: &App,
    tenant: &Tenant,
    key: &SessionKey,
    precondition: &Precondition,
    change: DataChange,
) -> Result<SessionRecord> {
    match &change {
        DataChange::Patch(data) | DataChange::Replace(Some(data)) => {
            check_json_object("data", data)?
        }
        DataChange::Replace(None) => {}
    }
    if let DataChange::Patch(patch) = &change
        && !precondition.is_given()
        && !tenant.chain.has(Hook::SessionUpdate)
    {
        return match app
            .sessions
            .merge(&tenant.name, key.as_str(), patch, now_ms())
            .await?
        {
            MergeOutcome::Merged(record) => reset_if_warned(app, tenant, key, *record).await,
            MergeOutcome::NotFound => Err(Error::NotFound),
            MergeOutcome::OverLimit(over) => Err(Error::OverLimit(over)),
        };
    }
    let change = Arc::new(change);
    let (record, after) = write_session(app, tenant, key, precondition, |current, now| {
        let change = change.clone();
        async move {
            let patch = match change.as_ref() {
                DataChange::Patch(patch) => patch.clone(),
                DataChange::Replace(Some(new)) => merge_diff(&current.data, new),
                DataChange::Replace(None) => Map::new(),
            };
            let patch = Value::Object(patch);
            let decision = tenant
                .chain
                .session_update(current.clone(), Some(&patch), None, now)
                .await;
            decide(&current, decision)
        }
    })
    .await?;
    settle(app, tenant, record, after).await
}

/// Slides the idle deadline (`last_seen_at` = now) and bumps the version.
/// A session warned of its idle timeout gets `idle-reset` through
/// `on-event` (a second write).
pub async fn touch(
    app: &App,
    tenant: &Tenant,
    key: &SessionKey,
    precondition: &Precondition,
) -> Result<SessionRecord> {
    if precondition.is_given() {
        let (record, ()) = write_session(app, tenant, key, precondition, |current, _| async move {
            Ok((current, ()))
        })
        .await?;
        return Ok(record);
    }
    let touched = app
        .sessions
        .touch(&tenant.name, key.as_str(), now_ms())
        .await?
        .ok_or(Error::NotFound)?;
    reset_if_warned(app, tenant, key, touched).await
}

/// `record`, just used by a write that the store made in one step (touch,
/// merge); if it had been warned of its idle timeout, one more write clears
/// the mark and sends `idle-reset` through the chain (see [`super::idle`]).
async fn reset_if_warned(
    app: &App,
    tenant: &Tenant,
    key: &SessionKey,
    record: SessionRecord,
) -> Result<SessionRecord> {
    if record.idle_warned_at.is_none() {
        return Ok(record);
    }
    let (record, ()) = write_session(
        app,
        tenant,
        key,
        &Precondition::Any,
        |current, _| async move { Ok((current, ())) },
    )
    .await?;
    Ok(record)
}

/// Authenticates the session as `login.user`: sends the event
/// `authenticated` with `{"user", "roles"}` through `on-event` before
/// anything is written (a veto changes nothing), then rotates the token.
/// Moving the session to a user at the tenant's limit follows the limit
/// policy; unlike create, this check is not atomic (it reads the user's
/// sessions, then writes).
pub async fn authenticate(
    app: &App,
    tenant: &Tenant,
    key: &SessionKey,
    precondition: &Precondition,
    login: Login,
) -> Result<Issued> {
    check_name("user", &login.user)?;
    if let Some(roles) = &login.roles {
        check_roles(roles)?;
    }
    let token = ids::new_token();
    let new_hash = ids::token_hash(&token);
    let login = Arc::new(login);
    let (record, after) = write_session(app, tenant, key, precondition, |current, now| {
        let (new_hash, login) = (new_hash.clone(), login.clone());
        async move {
            let victims = limit_victims(app, tenant, &current, &login.user, now).await?;
            let mut next = current.clone();
            next.user = Some(login.user.clone());
            if let Some(roles) = &login.roles {
                next.roles = roles.clone();
            }
            let payload = json!({"user": login.user, "roles": next.roles});
            let decision = tenant
                .chain
                .event(next, AUTHENTICATED_EVENT, &payload, now)
                .await;
            // A refusal that keeps a state change stores it on the session
            // as it was: no new user, no new token, nobody evicted.
            let (mut next, after) = decide(&current, decision)?;
            if let After::Refuse(_) = after {
                return Ok((next, after));
            }
            let ending = Ending::of(app, tenant);
            for victim in victims {
                ending
                    .one(&victim.token_hash, EndReason::Evicted, now)
                    .await?;
            }
            next.token_hash = new_hash;
            Ok((next, after))
        }
    })
    .await?;
    let record = settle(app, tenant, record, after).await?;
    tracing::debug!(tenant = %tenant.name, session = %record.public_id,
        token = %ids::log_prefix(&token), user = ?record.user, "session authenticated; token rotated");
    Ok(Issued {
        record,
        token,
        replayed: false,
    })
}

/// The sessions to evict so that `current` may become one of `user`'s, or
/// [`Error::LimitReached`] when the policy is `deny`. Check-then-act: see
/// [`authenticate`].
async fn limit_victims(
    app: &App,
    tenant: &Tenant,
    current: &SessionRecord,
    user: &str,
    now: Millis,
) -> Result<Vec<SessionRecord>> {
    let Some(limit) = tenant.user_limit() else {
        return Ok(Vec::new());
    };
    if current.user.as_deref() == Some(user) {
        return Ok(Vec::new());
    }
    let mut active = app.sessions.list_user(&tenant.name, user, now).await?;
    active.retain(|r| r.token_hash != current.token_hash);
    let max = usize::try_from(limit.max).unwrap_or(usize::MAX);
    if active.len() < max {
        return Ok(Vec::new());
    }
    match limit.policy {
        LimitPolicy::Deny => Err(Error::LimitReached {
            user: user.to_string(),
            active: u32::try_from(active.len()).unwrap_or(u32::MAX),
            max: limit.max,
        }),
        LimitPolicy::EvictLru => {
            active.sort_by(|a, b| {
                (a.last_seen_at, &a.token_hash).cmp(&(b.last_seen_at, &b.token_hash))
            });
            let excess = active.len() + 1 - max;
            active.truncate(excess);
            Ok(active)
        }
    }
}

/// Sends the event `name` through `on-event` (a plugin may veto); stores
/// the plugins' changes and slides the idle deadline. When the chain
/// changes nothing and the tenant does not count such calls as activity
/// (`unchanged_events_are_activity = false`), nothing is written. A plugin may ask to
/// end the session: it is ended after the write, with the plugin's reason.
/// A refusal that carries the refusing plugin's state stores that state
/// (one write) and still fails with [`Error::Denied`].
pub async fn event(
    app: &App,
    tenant: &Tenant,
    key: &SessionKey,
    precondition: &Precondition,
    name: &str,
    payload: &Value,
) -> Result<SessionRecord> {
    check_name("name", name)?;
    if name == AUTHENTICATED_EVENT {
        return Err(Error::invalid(
            "name",
            "name: the event `authenticated` is sent by POST /v1/sessions/{id}/authenticate",
        ));
    }
    check_json("payload", payload)?;
    let keep = !tenant.config.unchanged_events_are_activity;
    let (record, after) = write_unless_unchanged(
        app,
        tenant,
        key,
        precondition,
        keep,
        |current, now| async move {
            let decision = tenant
                .chain
                .event(current.clone(), name, payload, now)
                .await;
            decide(&current, decision)
        },
    )
    .await?;
    settle(app, tenant, record, after).await
}

/// Sends a message to `handler`: the first plugin whose `on-message`
/// answers wins, and its changes are stored (then the session is ended, if
/// they ask to end it). Like [`event`], a message that changes nothing
/// writes nothing when the tenant does not count it as activity.
pub async fn message(
    app: &App,
    tenant: &Tenant,
    key: &SessionKey,
    precondition: &Precondition,
    handler: &str,
    payload: &Value,
) -> Result<Replied> {
    check_name("handler", handler)?;
    check_json("payload", payload)?;
    let keep = !tenant.config.unchanged_events_are_activity;
    let (record, (plugin, reply, end)) = write_unless_unchanged(
        app,
        tenant,
        key,
        precondition,
        keep,
        |current, now| async move {
            match tenant.chain.message(current, handler, payload, now).await {
                MessageOutcome::Reply {
                    plugin,
                    reply,
                    record,
                    end,
                } => Ok((*record, (plugin, reply, end))),
                MessageOutcome::NoHandler => Err(Error::NoMessageHandler),
                MessageOutcome::Failed(failure) => Err(Error::plugin(failure)),
            }
        },
    )
    .await?;
    let after = end.map_or(After::Done, After::End);
    let record = settle(app, tenant, record, after).await?;
    Ok(Replied {
        record,
        plugin,
        reply,
    })
}

/// Ends the session (reason `logout`); its `on-session-end` hooks then run
/// once, on the end worker of some host.
///
/// With an idempotency key (see [`super::once`]): a key the tenant used to
/// end this session answers again that it ended, and ends nothing; a key
/// used for another request fails with [`Error::IdempotencyKeyReused`].
/// Returns whether the answer is such an earlier one, given again.
pub async fn logout(
    app: &App,
    tenant: &Tenant,
    key: &SessionKey,
    precondition: &Precondition,
    idempotency: Option<&IdempotencyKey>,
) -> Result<bool> {
    let once = idempotency.map(|k| {
        k.in_store(
            &tenant.name,
            request_digest("logout", key.as_str().as_bytes()),
            ttl_ms(app),
        )
    });
    let _in_flight = match &once {
        Some(once) => Some(
            app.keys_in_flight
                .enter(&once.id)
                .ok_or(Error::IdempotencyKeyInUse)?,
        ),
        None => None,
    };
    if let Some(once) = &once
        && let Some(known) = app.sessions.remembered(&tenant.name, &once.id).await?
    {
        return replay_logout(once, &known);
    }
    let now = now_ms();
    if precondition.is_given() {
        // Check-then-act: the store has no conditional remove.
        let current = get(app, tenant, key).await?;
        precondition.check(current.version)?;
    }
    let ending = Ending::of(app, tenant);
    let ended = match &once {
        Some(once) => match ending
            .one_once(key.as_str(), EndReason::Logout, once, now)
            .await?
        {
            Once::Ran(ended) => ended,
            Once::Known(known) => return replay_logout(once, &known),
        },
        None => ending.one(key.as_str(), EndReason::Logout, now).await?,
    };
    ended.map(|_| false).ok_or(Error::NotFound)
}

/// The answer of the logout that recorded `known`, if it ended the session
/// `once` asks to end.
fn replay_logout(once: &OnceKey, known: &Remembered) -> Result<bool> {
    if known.request == once.request {
        Ok(true)
    } else {
        Err(Error::IdempotencyKeyReused)
    }
}

/// The RFC 7386 merge patch that turns `old` into `new`. Merge patches
/// cannot set a member to null, so null members of `new` end up absent.
pub fn merge_diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, value) in new {
        match (old.get(key), value) {
            (Some(Value::Object(before)), Value::Object(after)) => {
                let inner = merge_diff(before, after);
                if !inner.is_empty() {
                    patch.insert(key.clone(), Value::Object(inner));
                }
            }
            (Some(before), after) if before == after => {}
            (_, after) => {
                patch.insert(key.clone(), after.clone());
            }
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn merge_diff_turns_old_into_new() {
        let cases = [
            (json!({}), json!({"a": 1})),
            (json!({"a": 1, "b": 2}), json!({"b": 3})),
            (
                json!({"a": {"x": 1, "y": [1, 2]}, "c": "s"}),
                json!({"a": {"y": [2], "z": {"q": true}}, "c": "s"}),
            ),
            (json!({"a": {"x": 1}}), json!({"a": 5})),
            (json!({"a": 5}), json!({"a": {"x": 1}})),
            (json!({"a": 1}), json!({})),
            (json!({"a": [null, 1]}), json!({"a": [null, 2]})),
        ];
        for (old, new) in cases {
            let patch = Value::Object(merge_diff(&object(old.clone()), &object(new.clone())));
            let mut merged = old.clone();
            json_patch::merge(&mut merged, &patch);
            assert_eq!(merged, new, "{old} -> {new} via {patch}");
        }
        let same = object(json!({"a": {"b": 1}, "c": [1]}));
        assert!(merge_diff(&same, &same).is_empty());
    }

    #[test]
    fn null_members_cannot_be_stored_by_a_merge_patch() {
        let old = object(json!({"a": 1}));
        let new = object(json!({"a": null, "b": {"c": null, "d": 1}}));
        let mut merged = Value::Object(old.clone());
        json_patch::merge(&mut merged, &Value::Object(merge_diff(&old, &new)));
        assert_eq!(merged, json!({"b": {"d": 1}}));
    }
}
