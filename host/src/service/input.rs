//! The rules every operation's input must meet before anything runs.

use super::{Error, Result};

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
