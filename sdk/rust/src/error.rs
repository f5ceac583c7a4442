//! The SDK's error type.

use std::fmt;

/// A plugin error: a human-readable message for the host.
///
/// Every hook returns [`Result`](crate::Result). When a hook returns `Err`,
/// the host receives the message (see [`Error::message`]) as the plugin's
/// error and applies the plugin's `on_error` policy: hooks that can veto deny
/// by default.
///
/// `?` converts the errors that plugins meet most often: the SDK's own
/// capability errors, [`serde_json::Error`], `String` and `&str`. Anything
/// else that implements [`Display`](fmt::Display) converts with
/// [`Error::msg`], e.g. `.map_err(Error::msg)?`.
///
/// ```
/// use sessiond_sdk::{Error, Result};
///
/// fn parse_limit(text: &str) -> Result<u32> {
///     let limit: u32 = text.parse().map_err(Error::msg)?;
///     if limit == 0 {
///         return Err("the limit must be at least 1".into());
///     }
///     Ok(limit)
/// }
///
/// assert_eq!(parse_limit("3").unwrap(), 3);
/// assert_eq!(parse_limit("0").unwrap_err().message(), "the limit must be at least 1");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// An error whose message is `error`'s [`Display`](fmt::Display) text.
    /// Handy with `map_err`: `text.parse::<u32>().map_err(Error::msg)?`.
    pub fn msg(error: impl fmt::Display) -> Self {
        Error::new(error.to_string())
    }

    /// The message, as the host will receive it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with `context` and `": "`, to say what was being
    /// done when the error happened.
    ///
    /// ```
    /// # use sessiond_sdk::Error;
    /// let error = Error::new("timed out").context("reading the kv store");
    /// assert_eq!(error.message(), "reading the kv store: timed out");
    /// ```
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error::new(format!("{context}: {}", self.message))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?})", self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::new(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::new(message)
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::msg(error)
    }
}

impl From<Error> for String {
    fn from(error: Error) -> Self {
        error.message
    }
}

/// `Result<T, sessiond_sdk::Error>`: what hooks and capabilities return.
pub type Result<T, E = Error> = std::result::Result<T, E>;
