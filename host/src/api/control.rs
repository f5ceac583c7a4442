//! The operator API's writes under `/admin/v1/tenants/`: tenants, their
//! API keys, their uploaded components and their plugin chain, kept in the
//! control store ([`crate::control`]) and in effect on every host.
//!
//! Every change is a compare-and-set of the tenant's record: with
//! `If-Match`, on the revision it names (412 when it moved); without, on
//! the revision just read, retried when another writer won. The answer
//! comes once this host serves the change; the others follow within
//! `operator.poll_ms`. Tenants of `sessiond.toml` can be read here, and
//! every change to them answers 409.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::Problem;
use super::extract::{ApiPath, IfMatch, JsonBody};
use super::model::with_etag;
use super::operator::Operator;
use super::schema::EntityTags;
use crate::app::App;
use crate::control::{
    ChainEntry, ChainRevision, ComponentRecord, KeyRecord, TenantRecord, TenantSettings,
    compile_off_thread, record, sha256_hex,
};
use crate::runtime::WIT_VERSION;
use crate::service::Precondition;
use crate::session::now_ms;
use crate::store::ControlRecord;

/// How many times a change without `If-Match` is tried against other
/// writers before it gives up (409).
const ATTEMPTS: usize = 8;

/// `POST /admin/v1/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// 1 to 64 of `a-z`, `0-9`, `-` and `_`, starting with a letter or a
    /// digit.
    pub name: String,
    /// Left out: the defaults.
    #[serde(default)]
    pub settings: TenantSettings,
}

/// `PATCH /admin/v1/tenants/{tenant}`: what to change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantChange {
    /// Settings to change (a merge: members left out keep their value).
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
    /// Disable (new requests get 403; sessions are kept and end hooks
    /// run) or enable again.
    pub disabled: Option<bool>,
}

/// A tenant as the operator API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub name: String,
    /// `config` (sessiond.toml: read only) or `api`.
    pub source: &'static str,
    /// The record's revision (its ETag); none for a config tenant.
    pub revision: Option<u64>,
    pub disabled: bool,
    /// Being deleted: its sessions are ending (reason `revoked`, end hooks
    /// run); the tenant goes once they have.
    pub deleting: bool,
    pub created_at: Option<u64>,
    pub settings: TenantSettings,
    /// Its keys (never the keys themselves); none for a config tenant.
    pub keys: Vec<KeyView>,
    /// The chain revision in effect (0: none yet).
    pub chain_revision: u64,
}

/// One API key of a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub created_at: u64,
}

/// A new key: the plain key is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewKeyView {
    pub id: String,
    /// The key, for `Authorization: Bearer <key>`. Only its SHA-256 is
    /// kept.
    pub key: String,
    pub created_at: u64,
}

/// A tenant's keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysView {
    pub keys: Vec<KeyView>,
}

/// A tenant's uploaded components.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComponentsView {
    pub components: Vec<ComponentRecord>,
    /// How many the tenant may keep.
    pub max_components: usize,
}

/// `PUT /admin/v1/tenants/{tenant}/chain`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChain {
    /// The plugins, in order; empty: none.
    pub plugins: Vec<ChainEntry>,
}

/// `POST /admin/v1/tenants/{tenant}/chain/rollback`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The kept revision to put back in effect (as a new revision).
    pub revision: u64,
}

/// The kept revisions of a tenant's chain, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainRevisionsView {
    pub revisions: Vec<ChainRevision>,
}

/// The path of one tenant.
#[derive(Debug, Deserialize)]
pub struct TenantPath {
    pub tenant: String,
}

/// The path of one key of a tenant.
#[derive(Debug, Deserialize)]
pub struct KeyPath {
    pub tenant: String,
    pub id: String,
}

/// The path of one component of a tenant.
#[derive(Debug, Deserialize)]
pub struct ComponentPath {
    pub tenant: String,
    pub sha256: String,
}

// ------------------------------------------------------------- problems

fn tenant_not_found(name: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "tenant-not-found",
        "No such tenant",
        format!("there is no tenant {name:?}"),
    )
}

fn config_tenant(name: &str) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "config-tenant",
        "Tenant defined in the config",
        format!(
            "tenant {name:?} is defined in sessiond.toml: its keys, plugins and settings are \
             there, and change only there (GET /admin/v1/tenants/{name} shows its settings)"
        ),
    )
}

fn record_moved(current: u64) -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
        "Precondition failed",
        format!("If-Match does not match the current revision (ETag \"{current}\")"),
    )
    .with("current_revision", current)
}

fn store_problem(e: crate::store::StoreError) -> Problem {
    Problem::from(crate::service::Error::from(e))
}

fn quota_exceeded(quota: &str, limit: usize) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "quota-exceeded",
        "Quota exceeded",
        format!("the tenant is at its {quota} ({limit}); delete one first"),
    )
    .with("quota", quota)
    .with("limit", limit)
}

fn invalid_component(detail: String) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-component",
        "Invalid component",
        detail,
    )
}

/// A tenant name the API takes: safe in store keys, logs and URLs.
fn check_name(name: &str) -> Result<(), Problem> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid_field(
            "name",
            "name must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or a digit",
        ))
    }
}

// --------------------------------------------------------------- access

/// The record of API tenant `name` (404 when none; 409 for a config
/// tenant, whose keys, components and chain are not records).
async fn read(app: &App, name: &str) -> Result<(u64, TenantRecord), Problem> {
    if app
        .tenants
        .current()
        .get(name)
        .is_some_and(|t| t.revision.is_none())
    {
        return Err(config_tenant(name));
    }
    let stored = app
        .control
        .store()
        .control_record(name)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| tenant_not_found(name))?;
    Ok((stored.revision, parse(&stored)?))
}

fn parse(stored: &ControlRecord) -> Result<TenantRecord, Problem> {
    serde_json::from_str(&stored.body)
        .map_err(|e| Problem::internal(format_args!("tenant {:?}'s record: {e}", stored.name)))
}

/// Applies `change` to tenant `name`'s record and writes it (see the
/// module doc), then applies it on this host. Returns the new revision,
/// the record and what `change` returned.
async fn change<T>(
    app: &App,
    name: &str,
    if_match: &IfMatch,
    mut change: impl FnMut(&mut TenantRecord) -> Result<T, Problem>,
) -> Result<(u64, TenantRecord, T), Problem> {
    let precondition = if_match.precondition();
    for _ in 0..ATTEMPTS {
        let (revision, mut record) = read(app, name).await?;
        if precondition.check(revision).is_err() {
            return Err(record_moved(revision));
        }
        if record.deleting {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "tenant-deleting",
                "Tenant being deleted",
                format!("tenant {name:?} is being deleted"),
            ));
        }
        let out = change(&mut record)?;
        let body = serde_json::to_string(&record).map_err(Problem::internal)?;
        match app
            .control
            .store()
            .control_put(name, &body, revision)
            .await
            .map_err(store_problem)?
        {
            Ok(new) => {
                applied(app).await;
                return Ok((new, record, out));
            }
            Err(actual) if precondition.is_given() || actual == 0 => {
                if actual == 0 {
                    return Err(tenant_not_found(name));
                }
                return Err(record_moved(actual));
            }
            Err(_) => continue,
        }
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        "write-conflict",
        "Too many concurrent changes",
        format!("tenant {name:?} changed under each of {ATTEMPTS} attempts; retry"),
    ))
}

/// Applies the latest control revision on this host before answering, so
/// that this host already serves what the answer says.
async fn applied(app: &App) {
    if let Err(e) = crate::service::control::refresh(app).await {
        tracing::warn!("the change is stored, but this host could not apply it yet: {e:#}");
        app.control.wake();
    }
}

fn view(name: &str, revision: u64, record: &TenantRecord) -> TenantView {
    TenantView {
        name: name.to_string(),
        source: "api",
        revision: Some(revision),
        disabled: record.disabled,
        deleting: record.deleting,
        created_at: Some(record.created_at),
        settings: record.settings.clone(),
        keys: keys(record),
        chain_revision: record.chain_revision(),
    }
}

fn keys(record: &TenantRecord) -> Vec<KeyView> {
    record
        .keys
        .iter()
        .map(|k| KeyView {
            id: k.id.clone(),
            created_at: k.created_at,
        })
        .collect()
}

fn check_settings(settings: &TenantSettings) -> Result<(), Problem> {
    settings
        .check()
        .map_err(|(field, why)| Problem::invalid_field(&field, format!("{field}: {why}")))
}

// ------------------------------------------------------------- tenants

/// Create a tenant.
///
/// It has no key and no plugins yet: add a key, upload components, then
/// set its chain. Operator keys only.
#[utoipa::path(post, path = "/admin/v1/tenants", tag = "operator",
    request_body = NewTenant,
    responses(
        (status = 201, description = "Created; ETag is its revision", body = TenantView),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A tenant of that name exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad name or setting (named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn create_tenant(
    State(app): State<Arc<App>>,
    _: Operator,
    JsonBody(new): JsonBody<NewTenant>,
) -> Result<Response, Problem> {
    check_name(&new.name)?;
    check_settings(&new.settings)?;
    let exists = || {
        Problem::new(
            StatusCode::CONFLICT,
            "tenant-exists",
            "Tenant exists",
            format!("there is already a tenant {:?}", new.name),
        )
    };
    if app.tenants.current().get(&new.name).is_some() {
        return Err(exists());
    }
    let record = TenantRecord::new(new.settings, now_ms());
    let body = serde_json::to_string(&record).map_err(Problem::internal)?;
    let revision = app
        .control
        .store()
        .control_put(&new.name, &body, 0)
        .await
        .map_err(store_problem)?
        .map_err(|_| exists())?;
    applied(&app).await;
    Ok(with_etag(
        StatusCode::CREATED,
        revision,
        &view(&new.name, revision, &record),
    ))
}

/// Read a tenant.
///
/// A tenant of the config shows its settings (`source` = `config`).
/// Operator keys only.
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant}", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The tenant; ETag is its revision", body = TenantView),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn get_tenant(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
) -> Result<Response, Problem> {
    if let Some(t) = app
        .tenants
        .current()
        .get(&path.tenant)
        .filter(|t| t.revision.is_none())
    {
        return Ok(Json(TenantView {
            name: t.name.clone(),
            source: "config",
            revision: None,
            disabled: t.disabled,
            deleting: false,
            created_at: None,
            settings: TenantSettings::of(&t.config),
            keys: Vec::new(),
            chain_revision: 0,
        })
        .into_response());
    }
    let (revision, record) = read(&app, &path.tenant).await?;
    Ok(with_etag(
        StatusCode::OK,
        revision,
        &view(&path.tenant, revision, &record),
    ))
}

/// Change a tenant's settings, or disable or enable it.
///
/// A disabled tenant's requests get 403; its sessions are kept and its end
/// hooks still run. Operator keys only.
#[utoipa::path(patch, path = "/admin/v1/tenants/{tenant}", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the tenant's revision is this")),
    request_body = TenantChange,
    responses(
        (status = 200, description = "Changed", body = TenantView),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad setting (named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn patch_tenant(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
    if_match: IfMatch,
    JsonBody(body): JsonBody<TenantChange>,
) -> Result<Response, Problem> {
    let (revision, record, ()) = change(&app, &path.tenant, &if_match, |record| {
        if let Some(patch) = &body.settings {
            let mut settings = serde_json::to_value(&record.settings).map_err(Problem::internal)?;
            if let Some(object) = settings.as_object_mut() {
                for (k, v) in patch {
                    object.insert(k.clone(), v.clone());
                }
            }
            let settings: TenantSettings = serde_json::from_value(settings)
                .map_err(|e| Problem::invalid_field("settings", format!("settings: {e}")))?;
            check_settings(&settings)?;
            record.settings = settings;
        }
        if let Some(disabled) = body.disabled {
            record.disabled = disabled;
        }
        Ok(())
    })
    .await?;
    Ok(with_etag(
        StatusCode::OK,
        revision,
        &view(&path.tenant, revision, &record),
    ))
}

/// Delete a tenant.
///
/// It serves nothing from now on (403). Its live sessions end with reason
/// `revoked` and their end hooks run; once none is left and its end queue
/// is empty, its record and components go and it is gone from every host
/// (404). Answers 202 at once; asking again while it runs changes nothing.
/// Operator keys only.
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant}", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the tenant's revision is this")),
    responses(
        (status = 202, description = "Being deleted", body = TenantView),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn delete_tenant(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
    if_match: IfMatch,
) -> Result<Response, Problem> {
    let (revision, record) = read(&app, &path.tenant).await?;
    let (revision, record) = if record.deleting {
        (revision, record)
    } else {
        let (revision, record, ()) = change(&app, &path.tenant, &if_match, |record| {
            record.deleting = true;
            Ok(())
        })
        .await?;
        (revision, record)
    };
    app.control.wake();
    Ok(with_etag(
        StatusCode::ACCEPTED,
        revision,
        &view(&path.tenant, revision, &record),
    ))
}

// ----------------------------------------------------------------- keys

/// Create an API key for a tenant.
///
/// The plain key is in this answer only. Keep the old key until clients
/// have the new one, then revoke it: both work meanwhile. Operator keys
/// only.
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant}/keys", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 201, description = "The new key, shown once", body = NewKeyView),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant holds its most keys", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn create_key(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
) -> Result<Response, Problem> {
    let key = format!("sk_{}", crate::ids::new_token());
    let id = format!("key_{}", crate::ids::short_nonce());
    let created_at = now_ms();
    let hash = sha256_hex(key.as_bytes());
    let (_, _, ()) = change(&app, &path.tenant, &IfMatch::Any, |record| {
        if record.keys.len() >= record::MAX_KEYS {
            return Err(quota_exceeded("keys", record::MAX_KEYS));
        }
        record.keys.push(KeyRecord {
            id: id.clone(),
            sha256: hash.clone(),
            created_at,
        });
        Ok(())
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewKeyView {
            id,
            key,
            created_at,
        }),
    )
        .into_response())
}

/// List a tenant's API keys (ids and dates; never the keys).
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant}/keys", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, description = "Its keys", body = KeysView),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant (its keys and plugins are in the config)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn list_keys(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
) -> Result<Json<KeysView>, Problem> {
    let (_, record) = read(&app, &path.tenant).await?;
    Ok(Json(KeysView {
        keys: keys(&record),
    }))
}

/// Revoke one of a tenant's API keys.
///
/// Requests with it get 401 on every host once the change is applied
/// there. Operator keys only.
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant}/keys/{id}", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant"),
        ("id" = String, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant or key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn revoke_key(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<KeyPath>,
) -> Result<StatusCode, Problem> {
    change(&app, &path.tenant, &IfMatch::Any, |record| {
        let before = record.keys.len();
        record.keys.retain(|k| k.id != path.id);
        if record.keys.len() == before {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "key-not-found",
                "No such key",
                format!("tenant {:?} has no key {:?}", path.tenant, path.id),
            ));
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----------------------------------------------------------- components

/// Upload a component for a tenant.
///
/// The body is the component (`application/wasm`), at most
/// `operator.max_component_bytes`. It is checked as `sessiond plugin
/// check` does (a component, the `sessiond:plugin` world of this contract
/// version, imports the host has) and kept under its SHA-256. Uploading
/// the same bytes again changes nothing (200). Operator keys only.
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant}/components", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant")),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 201, description = "Kept", body = ComponentRecord),
        (status = 200, description = "Already kept", body = ComponentRecord),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over operator.max_component_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/wasm", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a component this host can run (why is named)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant keeps its most components", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn upload_component(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if media.split(';').next().map(str::trim) != Some("application/wasm") {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the component as Content-Type: application/wasm",
        ));
    }
    let (_, record) = read(&app, &path.tenant).await?;
    let cap = record
        .settings
        .max_component_bytes
        .unwrap_or(app.control.settings.max_component_bytes);
    let bytes = read_capped(body, cap).await?;
    let sha256 = sha256_hex(&bytes);
    if let Some(known) = record.components.iter().find(|c| c.sha256 == sha256) {
        return Ok((StatusCode::OK, Json(known.clone())).into_response());
    }
    let max = record
        .settings
        .max_components
        .unwrap_or(app.control.settings.max_components_per_tenant);
    if record.components.len() >= max {
        return Err(quota_exceeded("max_components", max));
    }
    let wasm = compile_off_thread(&app.runtime, bytes.to_vec())
        .await
        .map_err(|e| invalid_component(format!("{e:#}")))?;
    let inspection = app
        .runtime
        .inspect_bytes(&wasm)
        .await
        .map_err(|e| invalid_component(e.to_string()))?;
    let component = ComponentRecord {
        sha256: sha256.clone(),
        size_bytes: wasm.len() as u64,
        name: inspection.name,
        version: inspection.version,
        hooks: inspection.hooks.iter().map(|h| h.to_string()).collect(),
        imports: inspection
            .capabilities
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        uploaded_at: now_ms(),
    };
    app.control
        .store()
        .component_put(&path.tenant, &sha256, &wasm)
        .await
        .map_err(store_problem)?;
    let added = component.clone();
    let (_, _, fresh) = change(&app, &path.tenant, &IfMatch::Any, |record| {
        if record.components.iter().any(|c| c.sha256 == added.sha256) {
            return Ok(false);
        }
        if record.components.len() >= max {
            return Err(quota_exceeded("max_components", max));
        }
        record.components.push(added.clone());
        Ok(true)
    })
    .await?;
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(component)).into_response())
}

/// How much of an oversized upload is read (and dropped) before the 413,
/// so that the client, still sending, gets the answer rather than a reset
/// connection.
const DRAIN_BYTES: usize = 64 << 20;

/// The whole body, or 413 when it is over `cap` bytes.
async fn read_capped(body: Body, cap: usize) -> Result<axum::body::Bytes, Problem> {
    let mut body = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        let chunk = chunk.map_err(|e| Problem::bad_request("bad-body", format!("{e}")))?;
        seen = seen.saturating_add(chunk.len());
        if seen <= cap {
            kept.extend_from_slice(&chunk);
        } else if seen > cap.saturating_add(DRAIN_BYTES) {
            break;
        }
    }
    if seen > cap {
        return Err(Problem::payload_too_large(cap));
    }
    Ok(kept.into())
}

/// List a tenant's uploaded components.
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant}/components", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, description = "Its components", body = ComponentsView),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant (its keys and plugins are in the config)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn list_components(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
) -> Result<Json<ComponentsView>, Problem> {
    let (_, record) = read(&app, &path.tenant).await?;
    Ok(Json(ComponentsView {
        max_components: record
            .settings
            .max_components
            .unwrap_or(app.control.settings.max_components_per_tenant),
        components: record.components,
    }))
}

/// Delete one of a tenant's components.
///
/// Only one that no kept chain revision uses (409 names the revision).
/// Operator keys only.
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant}/components/{sha256}", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant"),
        ("sha256" = String, Path, description = "The component's SHA-256")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant or component", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant, or a chain uses it", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn delete_component(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<ComponentPath>,
) -> Result<StatusCode, Problem> {
    change(&app, &path.tenant, &IfMatch::Any, |record| {
        if let Some(chain) = record
            .chains
            .iter()
            .rev()
            .find(|c| c.plugins.iter().any(|p| p.sha256 == path.sha256))
        {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "component-in-use",
                "Component in use",
                format!(
                    "chain revision {} of tenant {:?} uses component {}",
                    chain.revision, path.tenant, path.sha256
                ),
            )
            .with("chain_revision", chain.revision));
        }
        let before = record.components.len();
        record.components.retain(|c| c.sha256 != path.sha256);
        if record.components.len() == before {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "component-not-found",
                "No such component",
                format!("tenant {:?} has no component {}", path.tenant, path.sha256),
            ));
        }
        Ok(())
    })
    .await?;
    app.control
        .store()
        .component_remove(&path.tenant, &path.sha256)
        .await
        .map_err(store_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- chain

/// The chain in effect (ETag: its revision; 0 before the first).
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant}/chain", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The chain in effect", body = ChainRevision),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant (its keys and plugins are in the config)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn get_chain(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
) -> Result<Response, Problem> {
    let (_, record) = read(&app, &path.tenant).await?;
    let chain = record.chain().cloned().unwrap_or(ChainRevision {
        revision: 0,
        created_at: record.created_at,
        rollback_of: None,
        plugins: Vec::new(),
    });
    Ok(with_etag(StatusCode::OK, chain.revision, &chain))
}

/// Set a tenant's chain: the next revision.
///
/// Every entry names one of the tenant's components. The chain is loaded
/// on this host before it is stored (grants against imports, limits,
/// `init` with its config): one that does not load answers 422 and changes
/// nothing. Send `If-Match` with the revision you read, so that two
/// operators do not overwrite each other. Operator keys only.
#[utoipa::path(put, path = "/admin/v1/tenants/{tenant}/chain", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the chain's revision is this")),
    request_body = NewChain,
    responses(
        (status = 200, description = "In effect on this host; the others follow", body = ChainRevision),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An entry that does not load (named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn put_chain(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
    if_match: IfMatch,
    JsonBody(body): JsonBody<NewChain>,
) -> Result<Response, Problem> {
    set_chain(&app, &path.tenant, &if_match, body.plugins, None).await
}

/// The kept revisions of a tenant's chain, oldest first.
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant}/chain/revisions", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant")),
    responses(
        (status = 200, description = "Its chain revisions", body = ChainRevisionsView),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant (its keys and plugins are in the config)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn chain_revisions(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
) -> Result<Json<ChainRevisionsView>, Problem> {
    let (_, record) = read(&app, &path.tenant).await?;
    Ok(Json(ChainRevisionsView {
        revisions: record.chains,
    }))
}

/// Roll a tenant's chain back to a kept revision.
///
/// Its plugins become the next revision (`rollback_of` names the one put
/// back). Operator keys only.
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant}/chain/rollback", tag = "operator",
    params(("tenant" = String, Path, description = "The tenant"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the chain's revision is this")),
    request_body = Rollback,
    responses(
        (status = 200, description = "In effect on this host; the others follow", body = ChainRevision),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant or kept revision", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config tenant", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The revision no longer loads (named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn rollback_chain(
    State(app): State<Arc<App>>,
    _: Operator,
    ApiPath(path): ApiPath<TenantPath>,
    if_match: IfMatch,
    JsonBody(body): JsonBody<Rollback>,
) -> Result<Response, Problem> {
    let (_, record) = read(&app, &path.tenant).await?;
    let Some(old) = record.chains.iter().find(|c| c.revision == body.revision) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "chain-revision-not-found",
            "No such chain revision",
            format!(
                "tenant {:?} keeps no chain revision {} (it keeps the latest {})",
                path.tenant,
                body.revision,
                record::KEPT_CHAIN_REVISIONS
            ),
        ));
    };
    let plugins = old.plugins.clone();
    set_chain(&app, &path.tenant, &if_match, plugins, Some(body.revision)).await
}

/// Checks `plugins` against the tenant's components, loads each on this
/// host, then stores them as the next chain revision.
async fn set_chain(
    app: &App,
    tenant: &str,
    if_match: &IfMatch,
    plugins: Vec<ChainEntry>,
    rollback_of: Option<u64>,
) -> Result<Response, Problem> {
    let (_, record) = read(app, tenant).await?;
    let precondition = if_match.precondition();
    if precondition.check(record.chain_revision()).is_err() {
        return Err(record_moved(record.chain_revision()));
    }
    check_chain(app, tenant, &record, &plugins).await?;
    let now = now_ms();
    let (_, record, ()) = change(app, tenant, &IfMatch::Any, |record| {
        if let Precondition::OneOf(_) = precondition
            && precondition.check(record.chain_revision()).is_err()
        {
            return Err(record_moved(record.chain_revision()));
        }
        for entry in &plugins {
            if !record.components.iter().any(|c| c.sha256 == entry.sha256) {
                return Err(unknown_component(&entry.name, &entry.sha256));
            }
        }
        record.push_chain(plugins.clone(), rollback_of, now);
        Ok(())
    })
    .await?;
    let chain = record
        .chain()
        .cloned()
        .ok_or_else(|| Problem::internal("the chain just stored is not in the record"))?;
    Ok(with_etag(StatusCode::OK, chain.revision, &chain))
}

fn unknown_component(plugin: &str, sha256: &str) -> Problem {
    Problem::invalid_field(
        "plugins",
        format!("plugin {plugin:?}: component {sha256} is not one of the tenant's uploads"),
    )
}

/// Loads every entry of `plugins` on this host (the checks a host makes
/// when it applies the chain), so that a chain that would not load is
/// refused before any host sees it.
async fn check_chain(
    app: &App,
    tenant: &str,
    record: &TenantRecord,
    plugins: &[ChainEntry],
) -> Result<(), Problem> {
    let mut names = std::collections::BTreeSet::new();
    for (i, entry) in plugins.iter().enumerate() {
        let field = format!("plugins[{i}]");
        if entry.name.trim().is_empty() {
            return Err(Problem::invalid_field(
                &format!("{field}.name"),
                format!("{field}.name must not be empty"),
            ));
        }
        if !names.insert(entry.name.as_str()) {
            return Err(Problem::invalid_field(
                &format!("{field}.name"),
                format!("{field}.name: plugin name {:?} is used twice", entry.name),
            ));
        }
        if let Err((key, why)) = entry.circuit.check() {
            return Err(Problem::invalid_field(
                &format!("{field}.circuit.{key}"),
                format!("{field}.circuit.{key}: {why}"),
            ));
        }
        if !record.components.iter().any(|c| c.sha256 == entry.sha256) {
            return Err(unknown_component(&entry.name, &entry.sha256));
        }
        let wasm = app
            .control
            .component(&app.runtime, tenant, &entry.sha256)
            .await
            .map_err(|e| invalid_component(format!("{field}: {e:#}")))?;
        let spec = entry.spec();
        app.runtime
            .load_bytes(tenant, &spec, &wasm)
            .await
            .map_err(|e| {
                Problem::invalid_field(
                    &field,
                    format!("{field} ({:?}) does not load: {e}", entry.name),
                )
                .with("contract", WIT_VERSION)
            })?;
    }
    Ok(())
}
