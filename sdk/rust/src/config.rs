//! The plugin's configuration attributes.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The configuration attributes the host passes to [`Plugin::init`]: the
/// plugin's string key/value pairs from the host config.
///
/// Values are always text; [`Config::parse`] and [`Config::parse_or`] turn
/// them into numbers, booleans or any other [`FromStr`] type, with an error
/// that names the attribute. If a key appears more than once, the last value
/// wins.
///
/// ```
/// use sessiond_sdk::Config;
///
/// let config = Config::new([("max_sessions", "2"), ("mode", "strict")]);
/// assert_eq!(config.get("mode"), Some("strict"));
/// assert_eq!(config.parse_or("max_sessions", 1u32).unwrap(), 2);
/// assert_eq!(config.parse_or("missing", 1u32).unwrap(), 1);
///
/// let bad = Config::new([("max_sessions", "many")]);
/// assert_eq!(
///     bad.parse_or("max_sessions", 1u32).unwrap_err().message(),
///     "config attribute `max_sessions`: invalid value \"many\": invalid digit found in string",
/// );
/// ```
///
/// [`Plugin::init`]: crate::Plugin::init
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// A configuration made of these key/value pairs (mostly for tests; the
    /// SDK builds the real one from what the host passes to `init`).
    pub fn new<K, V>(entries: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Config {
            entries: entries
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        }
    }

    /// The value of `key`, if it is set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error saying that this required attribute
    /// is missing.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| Error::new(format!("config attribute `{key}` is required")))
    }

    /// The value of `key` parsed as a `T`: `Ok(None)` if it is not set, an
    /// error naming the attribute and the bad value if it does not parse.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(text) => text.trim().parse().map(Some).map_err(|error| {
                Error::new(format!(
                    "config attribute `{key}`: invalid value {text:?}: {error}"
                ))
            }),
        }
    }

    /// Like [`Config::parse`], with `default` when the key is not set.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// Every key/value pair, in the order the host passed them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no pairs at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl From<Vec<(String, String)>> for Config {
    fn from(entries: Vec<(String, String)>) -> Self {
        Config { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_value_wins() {
        let config = Config::new([("a", "1"), ("a", "2")]);
        assert_eq!(config.get("a"), Some("2"));
        assert_eq!(config.len(), 2);
        assert_eq!(config.iter().next(), Some(("a", "1")));
    }

    #[test]
    fn parse_trims_and_reports() {
        let config = Config::new([("n", " 7 "), ("flag", "yes")]);
        assert_eq!(config.parse::<u8>("n").unwrap(), Some(7));
        assert_eq!(config.parse::<u8>("none").unwrap(), None);
        let error = config.parse::<bool>("flag").unwrap_err();
        assert!(
            error
                .message()
                .starts_with("config attribute `flag`: invalid value \"yes\"")
        );
        assert_eq!(
            config.require("absent").unwrap_err().message(),
            "config attribute `absent` is required"
        );
        assert!(Config::default().is_empty());
    }
}
