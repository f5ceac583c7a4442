//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, error, model, sessions, sessman, users};

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
        admin::audit,
        admin::plugins,
        admin::ends,
        admin::healthz,
        admin::readyz,
        sessman::new_session,
        sessman::update_session,
        sessman::get_session,
    ),
    components(schemas(
        error::Problem,
        sessman::Reply,
        model::SessionView,
        model::SummaryView,
        model::SessionList,
        model::Ended,
        model::MessageReply,
        model::AuditView,
        model::AuditPageView,
        model::PluginView,
        model::DescribeView,
        model::PluginList,
        model::EndQueueView,
        model::DeadLetterView,
        model::Health,
        sessions::CreateSession,
        sessions::Authenticate,
        sessions::Event,
    )),
    modifiers(&BearerKey),
    tags(
        (name = "sessions", description = "Sessions by token"),
        (name = "users", description = "A user's sessions"),
        (name = "admin", description = "The tenant's audit stream and plugins"),
        (name = "health", description = "Liveness and readiness (no API key)"),
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
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
