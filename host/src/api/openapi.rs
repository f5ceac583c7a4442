//! The OpenAPI document, generated from the handlers' annotations.
//!
//! The annotations list what is particular to each operation. What every
//! operation of a kind can answer is added here, once, by [`CommonResponses`]:
//! every `/v1` operation can answer 400 (two `Authorization` headers), 401,
//! 429 (the tenant's quota) and, when it reads the store, 503; every
//! `/admin/v1` operation 400 and 401 (403 for a tenant's key is its own);
//! an operation
//! with a session id in its path can answer 400 (not a session id) and 404;
//! one with `If-Match` 400 (malformed) and 412; one with a JSON body 400 (malformed JSON), 408, 413,
//! 415 and 422. The constraints the extractors and the service check (the
//! session id's shape, names, entity tags, the lifetime) are schema types of
//! their own, in `schema`, built from the constants the checks use.

use std::collections::BTreeMap;

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::PROBLEM_JSON;
use super::schema::{EntityTags, IdempotencyKeyHeader, Name, Roles, SessionId, TtlSeconds};
use super::{admin, control, error, model, operator, sessions, sessman, users};

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "sessiond", description = "Sessions extended by sandboxed WebAssembly plugins. \
        Every error is an RFC 9457 problem (application/problem+json)."),
    paths(
        sessions::create_session,
        sessions::get_session,
        sessions::patch_session,
        sessions::delete_session,
        sessions::touch_session,
        sessions::authenticate_session,
        sessions::post_event,
        sessions::post_message,
        users::list_user_sessions,
        users::revoke_user_sessions,
        users::revoke_user_session,
        admin::audit,
        admin::plugins,
        admin::ends,
        admin::webhooks,
        operator::tenants,
        control::create_tenant,
        control::get_tenant,
        control::patch_tenant,
        control::delete_tenant,
        control::create_key,
        control::list_keys,
        control::revoke_key,
        control::upload_component,
        control::list_components,
        control::delete_component,
        control::get_chain,
        control::put_chain,
        control::chain_revisions,
        control::rollback_chain,
        admin::healthz,
        admin::readyz,
        sessman::new_session,
        sessman::update_session,
        sessman::get_session,
    ),
    components(schemas(
        error::Problem,
        sessman::Reply,
        sessman::Envelope,
        model::SessionView,
        model::SummaryView,
        model::SessionList,
        model::Ended,
        model::MessageReply,
        model::AuditView,
        model::AuditPageView,
        model::PluginView,
        model::CircuitView,
        model::RecentCostView,
        model::PercentilesView,
        model::EndpointStateView,
        model::LastFailureView,
        operator::TenantsView,
        operator::TenantSummaryView,
        control::NewTenant,
        control::TenantChange,
        control::TenantView,
        control::KeyView,
        control::NewKeyView,
        control::KeysView,
        control::ComponentsView,
        control::NewChain,
        control::Rollback,
        control::ChainRevisionsView,
        crate::control::TenantSettings,
        crate::control::ComponentRecord,
        crate::control::ChainEntry,
        crate::control::ChainRevision,
        model::DescribeView,
        model::PluginList,
        model::EndQueueView,
        model::DeadLetterView,
        model::WebhooksView,
        model::WebhookView,
        model::Health,
        model::DegradedTenant,
        sessions::CreateSession,
        sessions::Authenticate,
        sessions::Event,
        SessionId,
        Name,
        Roles,
        EntityTags,
        IdempotencyKeyHeader,
        TtlSeconds,
    )),
    modifiers(&BearerKey, &CommonResponses),
    tags(
        (name = "sessions", description = "Sessions by token"),
        (name = "users", description = "A user's sessions"),
        (name = "admin", description = "The tenant's audit stream and plugins"),
        (name = "operator", description = "The operator API: every tenant (operator keys only)"),
        (name = "health", description = "Liveness and readiness (no API key)"),
        (name = "sessman", description = "The sessman compatibility API"),
    )
)]
pub struct ApiDoc;

/// The `api_key` bearer scheme every `/v1` operation uses.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A tenant's API key"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "operator_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("One of the operator's keys ([operator] api_keys)"))
                    .build(),
            ),
        );
    }
}

// ------------------------------------------------------- common responses

/// Adds the responses every operation of a kind can answer (see the module
/// doc), unless its annotation lists them already, in which case the
/// reasons are added to its description.
struct CommonResponses;

/// The `/v1` operations that never read the store, so never answer 503.
const STORELESS: &[&str] = &["/v1/plugins"];

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                add_common(path, operation);
            }
        }
    }
}

fn add_common(path: &str, operation: &mut Operation) {
    let mut reasons: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    let mut add =
        |status: u16, reason: &'static str| reasons.entry(status).or_default().push(reason);
    let v1 = path.starts_with("/v1/");
    let sessman = path.starts_with("/sessman/");
    if path.starts_with("/admin/v1/") {
        add(400, "more than one Authorization header");
        add(401, "no operator key, or not a valid one");
    }
    if v1 || sessman {
        add(400, "more than one Authorization header");
        add(401, "no API key, or not a valid one");
        add(
            429,
            "the tenant is over its request rate, or has every in-flight slot taken \
             (its quota; see Retry-After)",
        );
        if !STORELESS.contains(&path) {
            add(503, "the session store does not answer");
        }
    }
    if sessman {
        add(403, "the API key's tenant does not enable the sessman API");
    }
    for parameter in operation.parameters.iter_mut().flatten() {
        // An optional parameter is left out, never sent as null.
        if let Some(RefOr::T(Schema::OneOf(one_of))) = &parameter.schema
            && let [RefOr::T(Schema::Object(null)), other] = one_of.items.as_slice()
            && null.schema_type == SchemaType::Type(Type::Null)
        {
            parameter.schema = Some(other.clone());
        }
        match (&parameter.parameter_in, parameter.name.as_str()) {
            (ParameterIn::Path, "id") => {
                add(400, "not a session id");
                add(404, "no such live session");
            }
            (ParameterIn::Query, "session_id" | "sessionid") => {
                add(400, "a malformed query, or not a session id");
                add(404, "no such live session");
            }
            (ParameterIn::Query, _) => add(400, "a malformed query"),
            (ParameterIn::Header, "If-Match") => {
                add(400, "a malformed If-Match");
                add(412, "If-Match does not match the session's ETag");
            }
            _ => {}
        }
    }
    if (v1 || sessman) && operation.request_body.is_some() {
        add(400, "a body that is not JSON");
        add(
            408,
            "the body did not arrive within server.body_read_timeout_ms",
        );
        add(413, "the body is over server.max_body_bytes");
        add(422, "the body breaks a rule of its schema or a JSON bound");
        // sessman reads JSON whatever the content type says.
        if v1 {
            add(415, "a Content-Type that is not JSON");
        }
    }
    for (status, reasons) in reasons {
        let key = status.to_string();
        let text = reasons.join("; ");
        match operation.responses.responses.get_mut(&key) {
            Some(RefOr::T(response)) => {
                response.description = format!("{}; {text}", response.description);
            }
            Some(RefOr::Ref(_)) => {}
            None => {
                let response = ResponseBuilder::new()
                    .description(capitalized(&text))
                    .content(
                        PROBLEM_JSON,
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build();
                operation
                    .responses
                    .responses
                    .insert(key, RefOr::T(response));
            }
        }
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
