//! Request extractors whose every rejection is a problem: JSON bodies (with
//! the offending field named), path and query parameters, session ids,
//! `If-Match` and `Idempotency-Key`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, IF_MATCH};
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use std::sync::Arc;

use super::error::Problem;
use crate::app::App;
use crate::service::{IdempotencyKey, Precondition, SessionKey};

/// A JSON object request body. Accepts `application/json` and any
/// `application/*+json` (such as `application/merge-patch+json`), or no
/// content type at all. Any other JSON value is refused, although serde
/// would read a struct from an array of its fields in order.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// A JSON object body that may be left out: an empty body, or `null`,
/// reads as `T::default()`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

/// A body of any JSON value, which may be left out (an empty body is
/// `null`).
#[derive(Debug)]
pub struct OptionalJsonValue(pub Value);

impl<T: DeserializeOwned> FromRequest<Arc<App>> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &Arc<App>) -> Result<Self, Problem> {
        let bytes = read_json_bytes(req, state).await?;
        if is_blank(&bytes) {
            return Err(Problem::bad_request(
                "malformed-json",
                "the request body is empty; send a JSON value",
            ));
        }
        parse_json_object(&bytes).map(JsonBody)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<Arc<App>> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &Arc<App>) -> Result<Self, Problem> {
        let bytes = read_json_bytes(req, state).await?;
        if is_blank(&bytes) || bytes.trim_ascii() == b"null" {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse_json_object(&bytes).map(OptionalJsonBody)
    }
}

impl FromRequest<Arc<App>> for OptionalJsonValue {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &Arc<App>) -> Result<Self, Problem> {
        let bytes = read_json_bytes(req, state).await?;
        if is_blank(&bytes) {
            return Ok(OptionalJsonValue(Value::Null));
        }
        parse_json(&bytes).map(OptionalJsonValue)
    }
}

/// [`parse_json`] of a body that must be a JSON object.
fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        // What is not JSON at all is answered as such.
        parse_json::<Value>(bytes)?;
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            "the body must be a JSON object",
        ));
    }
    parse_json(bytes)
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// Whether a `Content-Type` value is JSON.
pub fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn read_json_bytes(req: Request, state: &Arc<App>) -> Result<Bytes, Problem> {
    if let Some(value) = req.headers().get(CONTENT_TYPE) {
        let ok = value.to_str().map(is_json_media_type).unwrap_or(false);
        if !ok {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as application/json (or application/merge-patch+json for PATCH)",
            ));
        }
    }
    Bytes::from_request(req, state)
        .await
        .map_err(|e| bytes_rejection(e, state.server.max_body_bytes))
}

fn bytes_rejection(e: BytesRejection, limit: usize) -> Problem {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::payload_too_large(limit)
    } else {
        Problem::bad_request("unreadable-body", format!("cannot read the body: {e}"))
    }
}

/// Parses JSON, naming the field a type error is in. A body nested deeper
/// than the parser goes (128 levels) is over [`crate::json::MAX_DEPTH`]
/// too, and answered as such.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_problem(bytes, &path, &inner)
    })?;
    de.end().map_err(|e| json_problem(bytes, ".", &e))?;
    Ok(value)
}

fn json_problem(bytes: &[u8], path: &str, e: &serde_json::Error) -> Problem {
    use serde_json::error::Category;
    if e.to_string().starts_with("recursion limit exceeded") {
        return Problem::over_limit(&crate::json::OverLimit {
            field: String::new(),
            limit: crate::json::Limit::Depth,
            found: crate::json::text_depth(bytes),
        });
    }
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            Problem::bad_request("malformed-json", format!("the body is not valid JSON: {e}"))
        }
        Category::Data => {
            let message = e.to_string();
            // "unknown field `x`, ..." and "missing field `x`" name the field.
            let named = ["unknown field `", "missing field `"]
                .iter()
                .find_map(|prefix| message.strip_prefix(prefix))
                .and_then(|rest| rest.split('`').next());
            let field = match (named, path) {
                (Some(name), "." | "") => name.to_string(),
                // Unknown fields are already in the path; missing ones are not.
                (Some(name), p) if p == name || p.ends_with(&format!(".{name}")) => p.to_string(),
                (Some(name), parent) => format!("{parent}.{name}"),
                (None, ".") => String::new(),
                (None, p) => p.to_string(),
            };
            if field.is_empty() {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "Invalid request body",
                    message,
                )
            } else {
                let detail = format!("{field}: {message}");
                Problem::invalid_field(&field, detail)
            }
        }
    }
}

/// Reads an optional whole number that the JSON may write as `3600` or as
/// `3600.0`: JSON Schema's `integer`, which the OpenAPI document promises,
/// admits both.
pub fn optional_whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(whole) = n.as_u64() {
        return Ok(Some(whole));
    }
    // 2^64: every float below it that has no fraction fits in a u64.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..LIMIT).contains(&f) => Ok(Some(f as u64)),
        _ => Err(D::Error::custom(format!(
            "expected a whole number from 0 to {}, got {n}",
            u64::MAX
        ))),
    }
}

/// A path parameter whose rejection is a problem.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| Problem::bad_request("bad-path", e.body_text()))
    }
}

/// A query string whose rejection is a problem.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| Problem::bad_request("bad-query", e.body_text()))
    }
}

/// The store key of a session id, or 400 when it is not shaped like one.
pub fn session_key(id: &str) -> Result<SessionKey, Problem> {
    SessionKey::of_token(id).ok_or_else(Problem::bad_session_id)
}

/// The `If-Match` precondition of a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IfMatch {
    /// No header (or `*`, which any existing session matches).
    #[default]
    Any,
    /// The entity tags listed; strong comparison, so weak tags never match.
    Tags(Vec<String>),
}

impl IfMatch {
    /// The version precondition the tags name. Comparison is strong: a weak
    /// tag (`W/"3"`) or one that is not a version (`"abc"`) matches none.
    pub fn precondition(&self) -> Precondition {
        match self {
            IfMatch::Any => Precondition::Any,
            IfMatch::Tags(tags) => Precondition::OneOf(
                tags.iter()
                    .filter_map(|tag| {
                        let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
                        let version: u64 = inner.parse().ok()?;
                        (version.to_string() == inner).then_some(version)
                    })
                    .collect(),
            ),
        }
    }

    /// Parses every `If-Match` header.
    pub fn parse<'a>(values: impl Iterator<Item = &'a str>) -> Result<IfMatch, Problem> {
        let mut tags = Vec::new();
        let mut any = false;
        let mut seen = false;
        for value in values {
            for item in value.split(',') {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                seen = true;
                if item == "*" {
                    any = true;
                } else if item.len() >= 2
                    && (item.starts_with('"') || item.starts_with("W/\""))
                    && item.ends_with('"')
                {
                    tags.push(item.to_string());
                } else {
                    return Err(Problem::bad_request(
                        "bad-if-match",
                        format!("If-Match must list entity tags such as \"3\"; got {item:?}"),
                    ));
                }
            }
        }
        Ok(if any || !seen {
            IfMatch::Any
        } else {
            IfMatch::Tags(tags)
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let mut values = Vec::new();
        for v in parts.headers.get_all(IF_MATCH) {
            values.push(v.to_str().map_err(|_| {
                Problem::bad_request("bad-if-match", "If-Match is not visible ASCII")
            })?);
        }
        IfMatch::parse(values.into_iter())
    }
}

/// The request header that makes a create or a logout safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII
/// characters, once. Anything else is 400 naming the header.
#[derive(Debug)]
pub struct Idempotency(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let bad = |detail: &str| {
            Problem::bad_request("bad-idempotency-key", format!("Idempotency-Key {detail}"))
                .with("header", "Idempotency-Key")
        };
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Ok(Idempotency(None));
        };
        if values.next().is_some() {
            return Err(bad("is sent more than once; send it once"));
        }
        value
            .to_str()
            .ok()
            .and_then(IdempotencyKey::parse)
            .map(|k| Idempotency(Some(k)))
            .ok_or_else(|| bad("must be 1 to 255 visible ASCII characters (no spaces)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn json_errors_name_the_field() {
        let p = parse_json::<Body>(b"{\"name\": 5}").unwrap_err();
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.extra["field"], "name");
        let p = parse_json::<Body>(b"{\"name\": \"x\", \"extra\": 1}").unwrap_err();
        assert_eq!(p.extra["field"], "extra");
        let p = parse_json::<Body>(b"{\"name\": \"x\", \"inner\": {\"n\": -1}}").unwrap_err();
        assert_eq!(p.extra["field"], "inner.n");
        let p = parse_json::<Body>(b"{}").unwrap_err();
        assert_eq!(p.extra["field"], "name");
        let p = parse_json::<Body>(b"{\"name\": \"x\", \"inner\": {}}").unwrap_err();
        assert_eq!(p.extra["field"], "inner.n");
        let p =
            parse_json::<Body>(b"{\"name\": \"x\", \"inner\": {\"n\": 1, \"m\": 2}}").unwrap_err();
        assert_eq!(p.extra["field"], "inner.m");
        let p = parse_json::<Body>(b"[]").unwrap_err();
        assert!(!p.extra.contains_key("field"));
        let p = parse_json::<Body>(b"{\"name\": ").unwrap_err();
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        assert_eq!(p.slug(), "malformed-json");
        let p = parse_json::<Body>(b"{\"name\": \"x\"} trailing").unwrap_err();
        assert_eq!(p.slug(), "malformed-json");
    }

    #[test]
    fn object_bodies_are_objects() {
        // serde alone would read a struct from an array of its fields.
        let p = parse_json_object::<Body>(b" [\"x\", null]").unwrap_err();
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.slug(), "invalid-body");
        let p = parse_json_object::<Body>(b"[").unwrap_err();
        assert_eq!(p.slug(), "malformed-json");
        assert_eq!(
            parse_json_object::<Body>(b" {\"name\": \"x\"}")
                .unwrap()
                .name,
            "x"
        );
    }

    #[test]
    fn bodies_deeper_than_the_parser_goes_are_over_the_depth_limit() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let p = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.slug(), "over-limit");
        assert_eq!(p.extra["limit"], "max_json_depth");
        assert_eq!(p.extra["max"], crate::json::MAX_DEPTH);
        assert_eq!(p.extra["field"], "");
        assert!(p.detail.contains("200 levels"), "{}", p.detail);
    }

    #[test]
    fn if_match() {
        let m = IfMatch::parse(["\"3\", \"4\""].into_iter()).unwrap();
        assert!(m.precondition().check(4).is_ok());
        let refused = Problem::from(m.precondition().check(5).unwrap_err());
        assert_eq!(refused.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(IfMatch::parse(["*"].into_iter()).unwrap(), IfMatch::Any);
        assert!(
            IfMatch::parse(["W/\"3\""].into_iter())
                .unwrap()
                .precondition()
                .check(3)
                .is_err()
        );
        assert!(IfMatch::parse(["3"].into_iter()).is_err());
        assert_eq!(IfMatch::parse(std::iter::empty()).unwrap(), IfMatch::Any);
    }

    #[test]
    fn media_types() {
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/merge-patch+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
    }
}
