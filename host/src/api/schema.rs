//! Schema types for the OpenAPI document: the constraints that the
//! extractors and the service check (the session id's shape, names, entity
//! tags, lifetimes, idempotency keys), built from the constants the checks
//! use. A leaf module, so the handlers name these types in their annotations
//! without importing the document that lists the handlers.

use std::borrow::Cow;

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::ids::TOKEN_LEN;
use crate::service::once::MAX_KEY_LEN;
use crate::service::{MAX_NAME, MAX_ROLES};

/// A schema type with a component name and a hand-built schema.
macro_rules! schema_type {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                stringify!($name).into()
            }
        }
    };
}

/// A session token: 43 base64url characters ([`crate::ids::is_token`]).
pub const SESSION_ID_PATTERN: &str = "^[A-Za-z0-9_-]{43}$";

/// A name as [`crate::service`] takes it: at least one character that is
/// neither white space nor a control character, and no control character.
pub const NAME_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*\
    [^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// An `If-Match` value as [`super::extract::IfMatch`] reads it: a comma
/// separated list of `*` and entity tags (`"3"`, `W/"3"`) whose characters
/// are visible ASCII other than `"` and `,`; empty members and an empty
/// value are allowed (they ask for nothing).
pub const ENTITY_TAGS_PATTERN: &str = "^[ \\t]*(\\*|(W/)?\"[!#-+\\--~]*\")?[ \\t]*\
    (,[ \\t]*(\\*|(W/)?\"[!#-+\\--~]*\")?[ \\t]*)*$";

schema_type!(
    /// The schema of a session id.
    SessionId,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A session token: 43 base64url characters"))
        .min_length(Some(TOKEN_LEN))
        .max_length(Some(TOKEN_LEN))
        .pattern(Some(SESSION_ID_PATTERN))
);

schema_type!(
    /// The schema of a user, role, device, event or handler name.
    Name,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "Not blank, no control characters, at most {MAX_NAME} bytes of UTF-8"
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME))
        .pattern(Some(NAME_PATTERN))
);

schema_type!(
    /// The schema of a session's roles.
    Roles,
    ArrayBuilder::new()
        .items(Ref::from_schema_name("Name"))
        .max_items(Some(MAX_ROLES))
        .description(Some(format!("At most {MAX_ROLES} roles")))
);

schema_type!(
    /// The schema of an `If-Match` header.
    EntityTags,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Entity tags such as \"3\" (a session's ETag), or *; weak tags never match",
        ))
        .pattern(Some(ENTITY_TAGS_PATTERN))
);

schema_type!(
    /// The schema of an `Idempotency-Key` header.
    IdempotencyKeyHeader,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A client's key for one intended request: visible ASCII"))
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_LEN))
        .pattern(Some("^[!-~]+$"))
);

schema_type!(
    /// The schema of a requested lifetime.
    TtlSeconds,
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .description(Some(
            "The absolute lifetime in seconds; capped at the tenant's max_ttl_seconds",
        ))
        .minimum(Some(1u64))
        .maximum(Some(u64::MAX))
);
