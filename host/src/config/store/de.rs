//! The `Deserialize` of `[store]`, written by hand so that every error keeps
//! its place in the file: serde's internally tagged enums buffer the table
//! before they see the tag, and the buffered keys lose their toml spans. Here
//! the keys are read one by one as the parser hands them over (sorted by
//! name, so `backend` comes before every key of one backend; in file order
//! with toml's `preserve_order` feature). An unknown key, or a key of another
//! backend once `backend` has been read, fails on that key's own line; a key
//! of another backend read before `backend` fails on the `backend` line, and
//! one in a table without `backend` on the `[store]` line. Each message names
//! the key and the backend it belongs to.

use std::convert::Infallible;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::{EmbeddedStoreConfig, MemoryStoreConfig, RedisStoreConfig, StoreConfig};
use crate::config::defaults;

/// The value of `backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Backend {
    Memory,
    Embedded,
    Redis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Embedded => "embedded",
            Backend::Redis => "redis",
        }
    }
}

/// Every key of `[store]`; any other is an unknown field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    Backend,
    AuditMaxLen,
    Path,
    Durability,
    Urls,
    Cluster,
    Prefix,
    GraceSeconds,
    ResponseTimeoutMs,
    ConnectionTimeoutMs,
    OperationTimeoutMs,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Backend => "backend",
            Key::AuditMaxLen => "audit_max_len",
            Key::Path => "path",
            Key::Durability => "durability",
            Key::Urls => "urls",
            Key::Cluster => "cluster",
            Key::Prefix => "prefix",
            Key::GraceSeconds => "grace_seconds",
            Key::ResponseTimeoutMs => "response_timeout_ms",
            Key::ConnectionTimeoutMs => "connection_timeout_ms",
            Key::OperationTimeoutMs => "operation_timeout_ms",
        }
    }

    /// The one backend that reads this key; none for the keys of every
    /// backend.
    fn owner(self) -> Option<Backend> {
        match self {
            Key::Backend | Key::AuditMaxLen => None,
            Key::Path | Key::Durability => Some(Backend::Embedded),
            Key::Urls
            | Key::Cluster
            | Key::Prefix
            | Key::GraceSeconds
            | Key::ResponseTimeoutMs
            | Key::ConnectionTimeoutMs
            | Key::OperationTimeoutMs => Some(Backend::Redis),
        }
    }
}

/// The error for a key of one backend in the table of another.
fn misplaced<E: de::Error>(key: Key) -> E {
    E::custom(misplaced_message(key))
}

fn misplaced_message(key: Key) -> String {
    let owner = key.owner().map_or("?", Backend::name);
    format!(
        "store.{} is only used with backend = \"{owner}\"",
        key.name()
    )
}

/// Fails on the value of a key of another backend than the one already read,
/// so that the error points at that value.
struct Misplaced(Key);

impl<'de> DeserializeSeed<'de> for Misplaced {
    type Value = Infallible;

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<Infallible, D::Error> {
        Err(misplaced(self.0))
    }
}

/// Reads `backend`; fails when a key of another backend came before it.
struct BackendAfter<'a>(&'a [Key]);

impl<'de> DeserializeSeed<'de> for BackendAfter<'_> {
    type Value = Backend;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Backend, D::Error> {
        let backend = Backend::deserialize(deserializer)?;
        match self.0.iter().find(|key| key.owner() != Some(backend)) {
            Some(&key) => Err(misplaced(key)),
            None => Ok(backend),
        }
    }
}

struct StoreVisitor;

impl<'de> Visitor<'de> for StoreVisitor {
    type Value = StoreConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a [store] table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StoreConfig, A::Error> {
        let mut backend: Option<Backend> = None;
        // The keys of one backend read while the backend was still unknown.
        let mut early: Vec<Key> = Vec::new();
        let mut audit_max_len = defaults::AUDIT_MAX_LEN;
        let mut embedded = EmbeddedStoreConfig::default();
        let mut redis = RedisStoreConfig::default();
        while let Some(key) = map.next_key::<Key>()? {
            let owner = key.owner();
            if key == Key::Backend {
                backend = Some(map.next_value_seed(BackendAfter(&early))?);
                continue;
            }
            match (backend, owner) {
                (Some(b), Some(o)) if b != o => match map.next_value_seed(Misplaced(key))? {},
                (None, Some(_)) => early.push(key),
                _ => {}
            }
            match key {
                Key::AuditMaxLen => audit_max_len = map.next_value()?,
                Key::Path => embedded.path = map.next_value()?,
                Key::Durability => embedded.durability = map.next_value()?,
                Key::Urls => redis.urls = map.next_value()?,
                Key::Cluster => redis.cluster = map.next_value()?,
                Key::Prefix => redis.prefix = map.next_value()?,
                Key::GraceSeconds => redis.grace_seconds = map.next_value()?,
                Key::ResponseTimeoutMs => redis.response_timeout_ms = map.next_value()?,
                Key::ConnectionTimeoutMs => redis.connection_timeout_ms = map.next_value()?,
                Key::OperationTimeoutMs => redis.operation_timeout_ms = map.next_value()?,
                Key::Backend => unreachable!("read above"),
            }
        }
        match backend {
            Some(Backend::Redis) => Ok(StoreConfig::Redis(RedisStoreConfig {
                audit_max_len,
                ..redis
            })),
            Some(Backend::Embedded) => Ok(StoreConfig::Embedded(EmbeddedStoreConfig {
                audit_max_len,
                ..embedded
            })),
            // With `backend = "memory"`, every other key has failed already.
            Some(Backend::Memory) => Ok(StoreConfig::Memory(MemoryStoreConfig { audit_max_len })),
            None => match early.first() {
                // No `backend` key at all: the error can only point at the table.
                Some(&key) => Err(de::Error::custom(format!(
                    "{} (without `backend`, the store is \"memory\")",
                    misplaced_message(key)
                ))),
                None => Ok(StoreConfig::Memory(MemoryStoreConfig { audit_max_len })),
            },
        }
    }
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StoreVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{minimal, parse};
    use crate::store::embedded::Durability;

    fn store(text: &str) -> Result<StoreConfig, String> {
        parse(&format!("{text}{}", minimal()))
            .map(|c| c.store)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn memory_is_the_default() {
        assert_eq!(store("").unwrap(), StoreConfig::default());
        assert_eq!(
            store("[store]\naudit_max_len = 5\n").unwrap(),
            StoreConfig::Memory(MemoryStoreConfig { audit_max_len: 5 })
        );
        assert_eq!(
            store("[store]\nbackend = \"memory\"\n").unwrap(),
            StoreConfig::Memory(MemoryStoreConfig::default())
        );
    }

    #[test]
    fn redis_keys_in_any_order() {
        let expected = StoreConfig::Redis(RedisStoreConfig {
            urls: vec!["redis://a:1".into()],
            prefix: "p".into(),
            audit_max_len: 7,
            ..RedisStoreConfig::default()
        });
        for text in [
            "[store]\nbackend = \"redis\"\nurls = [\"redis://a:1\"]\nprefix = \"p\"\naudit_max_len = 7\n",
            "[store]\naudit_max_len = 7\nurls = [\"redis://a:1\"]\nprefix = \"p\"\nbackend = \"redis\"\n",
        ] {
            assert_eq!(store(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn embedded_keys_and_durabilities() {
        let dir = |path: &str| std::path::Path::new("/etc/sessiond").join(path);
        assert_eq!(
            store("[store]\nbackend = \"embedded\"\n").unwrap(),
            StoreConfig::Embedded(EmbeddedStoreConfig {
                path: dir("data"),
                ..EmbeddedStoreConfig::default()
            })
        );
        for (name, durability) in [
            ("full", Durability::Full),
            ("normal", Durability::Normal),
            ("batched", Durability::Normal),
            ("off", Durability::Off),
        ] {
            let text = format!(
                "[store]\naudit_max_len = 5\nbackend = \"embedded\"\n\
                 path = \"/var/lib/sessiond\"\ndurability = \"{name}\"\n"
            );
            assert_eq!(
                store(&text).unwrap(),
                StoreConfig::Embedded(EmbeddedStoreConfig {
                    path: "/var/lib/sessiond".into(),
                    durability,
                    audit_max_len: 5,
                }),
                "{name}"
            );
        }
        let relative = store("[store]\nbackend = \"embedded\"\npath = \"state/db\"\n").unwrap();
        assert_eq!(relative.audit_max_len(), defaults::AUDIT_MAX_LEN);
        let StoreConfig::Embedded(relative) = relative else {
            panic!("{relative:?}");
        };
        assert_eq!(relative.path, dir("state/db"));
        assert_eq!(relative.embedded_config().dir, dir("state/db"));
    }

    #[test]
    fn errors_keep_their_line() {
        let cases: [(&str, &[&str], &str); 13] = [
            // A typo, under either backend.
            (
                "[store]\nbackend = \"redis\"\nurl = [\"redis://a:1\"]\n",
                &["line 3"],
                "`url`",
            ),
            ("[store]\nprefx = \"p\"\n", &["line 2"], "`prefx`"),
            // A Redis-only key under memory: its own line, or the backend's
            // when the parser hands the keys over in file order.
            (
                "[store]\nbackend = \"memory\"\nurls = [\"redis://a:1\"]\n",
                &["line 3"],
                "store.urls",
            ),
            (
                "[store]\ncluster = true\nbackend = \"memory\"\n",
                &["line 2", "line 3"],
                "store.cluster",
            ),
            // No backend at all: the table's line.
            (
                "\n[store]\nurls = [\"redis://a:1\"]\n",
                &["line 2"],
                "store.urls",
            ),
            ("[store]\nbackend = \"disk\"\n", &["line 2"], "`disk`"),
            (
                "[store]\nbackend = \"redis\"\ngrace_seconds = \"1h\"\n",
                &["line 3"],
                "expected u64",
            ),
            // The keys of one backend under another, each naming its own.
            (
                "[store]\nbackend = \"embedded\"\nurls = [\"redis://a:1\"]\n",
                &["line 3"],
                "store.urls is only used with backend = \"redis\"",
            ),
            (
                "[store]\nbackend = \"redis\"\nurls = [\"redis://a:1\"]\npath = \"d\"\n",
                &["line 4"],
                "store.path is only used with backend = \"embedded\"",
            ),
            (
                "[store]\nbackend = \"memory\"\ndurability = \"off\"\n",
                &["line 3"],
                "store.durability",
            ),
            (
                "[store]\npath = \"d\"\nbackend = \"redis\"\n",
                &["line 2", "line 3"],
                "store.path",
            ),
            (
                "\n[store]\ndurability = \"off\"\n",
                &["line 2"],
                "store.durability is only used with backend = \"embedded\"",
            ),
            (
                "[store]\nbackend = \"embedded\"\ndurability = \"fast\"\n",
                &["line 3"],
                "`fast`",
            ),
        ];
        for (text, lines, needle) in cases {
            let err = store(text).unwrap_err();
            assert!(err.starts_with("test.toml: "), "{err}");
            assert!(lines.iter().any(|l| err.contains(l)), "{lines:?}: {err}");
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
