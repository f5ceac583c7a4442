//! The rules every operation's input must meet before anything runs, and
//! the bounds every session meets before it is stored.

use serde_json::{Map, Value};

use super::{Error, Result};
use crate::json;
use crate::session::SessionRecord;

/// Longest user, role, device, event or handler name, in bytes.
pub const MAX_NAME: usize = 256;
/// Most roles per session.
pub const MAX_ROLES: usize = 64;

/// A name (user, role, device, event, handler): not blank, at most
/// [`MAX_NAME`] bytes, no control characters.
pub fn check_name(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, format!("{field}: must not be empty")));
    }
    if value.len() > MAX_NAME {
        return Err(Error::invalid(
            field,
            format!("{field}: longer than {MAX_NAME} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("{field}: must not contain control characters"),
        ));
    }
    Ok(())
}

/// At most [`MAX_ROLES`] roles, each a valid name.
pub fn check_roles(roles: &[String]) -> Result<()> {
    if roles.len() > MAX_ROLES {
        return Err(Error::invalid(
            "roles",
            format!("roles: at most {MAX_ROLES} roles"),
        ));
    }
    for (i, role) in roles.iter().enumerate() {
        check_name(&format!("roles[{i}]"), role)?;
    }
    Ok(())
}

/// A JSON value of the input (a payload): nested at most
/// [`json::MAX_DEPTH`] levels.
pub fn check_json(field: &str, value: &Value) -> Result<()> {
    Ok(json::check(field, value)?)
}

/// A JSON object of the input (data, a merge patch of the data): nested at
/// most [`json::MAX_DEPTH`] levels, the object itself being the first.
pub fn check_json_object(field: &str, members: &Map<String, Value>) -> Result<()> {
    Ok(json::check_object(field, members)?)
}

/// A session about to be stored, as the chain left it: within the bounds of
/// [`json::check_session`].
pub fn check_session(record: &SessionRecord) -> Result<()> {
    Ok(json::check_session(record)?)
}

/// Puts back on `next` what no write may change: the session's tenant,
/// public id, creation time and idle timeout.
pub(super) fn keep_fixed(next: &mut SessionRecord, current: &SessionRecord) {
    next.tenant = current.tenant.clone();
    next.public_id = current.public_id.clone();
    next.created_at = current.created_at;
    next.idle_timeout_ms = current.idle_timeout_ms;
}
