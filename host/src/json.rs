//! The bounds on JSON, defined once: how deeply the values the service takes
//! in may nest and how large a stored session may grow, the checks that
//! apply them, and the reading of stored JSON that tolerates anything a
//! store accepted.
//!
//! - Every JSON value that comes in nests at most [`MAX_DEPTH`] levels:
//!   session data, merge patches, event and message payloads, and what
//!   plugins return (data patches, state, replies, annotations). The
//!   service checks its input with [`check`] and [`check_object`];
//!   [`check_text`] checks a plugin's output as it comes back, before it is
//!   parsed, for the chain to fail that plugin with `invalid-output`.
//! - A session as stored (its whole JSON record, plugin state included) is
//!   at most [`MAX_SESSION_BYTES`] ([`check_session`]); the request body
//!   limit bounds each request, this bounds what requests add up to.
//! - The stores refuse a record nested deeper than [`MAX_STORED_DEPTH`]
//!   ([`check_stored`]) and read back every record up to that depth
//!   ([`from_stored`]), so records written before the edge bound existed
//!   stay readable.
//!
//! Depth counts containers: `1` and `"a"` have depth 0, `{}` and `[]` depth
//! 1, `{"a": [1]}` depth 2. Every walk here is iterative, so no value is too
//! deep to measure.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::session::SessionRecord;

/// The deepest any JSON value taken in may nest (see the module doc).
pub const MAX_DEPTH: usize = 32;

/// The largest a stored session may be: its JSON record, in bytes.
pub const MAX_SESSION_BYTES: usize = 1 << 20;

/// The deepest record a store accepts, and reads back. Well above what the
/// edge lets through ([`MAX_DEPTH`] plus the record's own two levels), and
/// above serde_json's default limit of 128 that older hosts wrote under.
pub const MAX_STORED_DEPTH: usize = 512;

/// Which bound a value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`MAX_DEPTH`].
    Depth,
    /// [`MAX_SESSION_BYTES`].
    SessionBytes,
}

impl Limit {
    /// The bound's name, as problems and the README give it.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Depth => "max_json_depth",
            Limit::SessionBytes => "max_session_bytes",
        }
    }

    /// The bound's value.
    pub fn max(self) -> usize {
        match self {
            Limit::Depth => MAX_DEPTH,
            Limit::SessionBytes => MAX_SESSION_BYTES,
        }
    }
}

/// A value over one of the bounds: which value (`field`, such as `data`,
/// `payload` or `data-patch`; empty for a whole session) and which bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct OverLimit {
    pub field: String,
    pub limit: Limit,
    /// What was found: the depth, or the bytes.
    pub found: usize,
}

impl OverLimit {
    fn message(&self) -> String {
        let what = match self.limit {
            Limit::Depth => format!(
                "nested {} levels deep, deeper than the limit of {MAX_DEPTH}",
                self.found
            ),
            Limit::SessionBytes => format!(
                "the session would be {} bytes, over the limit of {MAX_SESSION_BYTES} bytes",
                self.found
            ),
        };
        if self.field.is_empty() {
            what
        } else {
            format!("{}: {what}", self.field)
        }
    }
}

/// How deeply `value` nests.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut todo = vec![(value, 0usize)];
    while let Some((v, above)) = todo.pop() {
        let here = above + 1;
        match v {
            Value::Array(items) => {
                deepest = deepest.max(here);
                todo.extend(items.iter().map(|item| (item, here)));
            }
            Value::Object(members) => {
                deepest = deepest.max(here);
                todo.extend(members.values().map(|member| (member, here)));
            }
            _ => {}
        }
    }
    deepest
}

/// How deeply the JSON text `text` nests, counted without parsing it. For
/// text that is not JSON the number means nothing (parsing it fails anyway).
pub fn text_depth(text: &[u8]) -> usize {
    let (mut level, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                level += 1;
                deepest = deepest.max(level);
            }
            b']' | b'}' => level = level.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn over_depth(field: &str, found: usize) -> Result<(), OverLimit> {
    if found > MAX_DEPTH {
        return Err(OverLimit {
            field: field.to_string(),
            limit: Limit::Depth,
            found,
        });
    }
    Ok(())
}

/// Checks a value taken in (request input, or a plugin's output) against
/// [`MAX_DEPTH`]; `field` names it in the error.
pub fn check(field: &str, value: &Value) -> Result<(), OverLimit> {
    over_depth(field, depth(value))
}

/// [`check`] for an object held as its members (session data, a merge
/// patch).
pub fn check_object(field: &str, members: &Map<String, Value>) -> Result<(), OverLimit> {
    over_depth(field, depth_of_members(members.values()))
}

/// [`check`] for JSON text not parsed yet (a plugin's data patch, state,
/// reply or annotations): refuses text nested too deeply before anything
/// parses it.
pub fn check_text(field: &str, text: &str) -> Result<(), OverLimit> {
    over_depth(field, text_depth(text.as_bytes()))
}

/// Checks a session about to be stored: its data and each plugin's state
/// against [`MAX_DEPTH`], and its whole record against
/// [`MAX_SESSION_BYTES`].
pub fn check_session(record: &SessionRecord) -> Result<(), OverLimit> {
    check_object("data", &record.data)?;
    for (plugin, state) in &record.plugin_state {
        over_depth(&format!("plugin_state.{plugin}"), depth(state))?;
    }
    let bytes = record_bytes(record);
    if bytes > MAX_SESSION_BYTES {
        return Err(OverLimit {
            field: String::new(),
            limit: Limit::SessionBytes,
            found: bytes,
        });
    }
    Ok(())
}

/// Checks a session whose data a merge patch just changed (see
/// [`crate::store::SessionStore::merge`]): its data against [`MAX_DEPTH`]
/// and its whole record against [`MAX_SESSION_BYTES`]. Unlike
/// [`check_session`] it leaves the plugins' state alone: a merge does not
/// change it.
pub fn check_merged(record: &SessionRecord) -> Result<(), OverLimit> {
    check_object("data", &record.data)?;
    let bytes = record_bytes(record);
    if bytes > MAX_SESSION_BYTES {
        return Err(OverLimit {
            field: String::new(),
            limit: Limit::SessionBytes,
            found: bytes,
        });
    }
    Ok(())
}

/// Applies the RFC 7396 merge patch `patch` to the object `target`: a null
/// member removes the target's, an object member is merged into the
/// target's (which becomes an object first if it is none), any other
/// member replaces the target's.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let member = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !member.is_object() {
                    *member = Value::Object(Map::new());
                }
                if let Value::Object(members) = member {
                    merge_patch(members, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// The depth of an object with these members.
fn depth_of_members<'a>(members: impl Iterator<Item = &'a Value>) -> usize {
    1 + members.map(depth).max().unwrap_or(0)
}

/// How deeply a record's JSON nests: the record object, then its members
/// (`data` one level down, each plugin's state two).
pub fn record_depth(record: &SessionRecord) -> usize {
    let data = 1 + depth_of_members(record.data.values());
    let state = record.plugin_state.values().map(depth).max().unwrap_or(0);
    // `roles`, `client` and an empty `plugin_state` are one level down.
    data.max(2 + state).max(2)
}

/// Refuses, for a store, a record deeper than it could read back.
pub fn check_stored(record: &SessionRecord) -> Result<(), String> {
    let found = record_depth(record);
    if found > MAX_STORED_DEPTH {
        return Err(format!(
            "session {}: its record nests {found} levels, deeper than the {MAX_STORED_DEPTH} a \
             store keeps",
            record.public_id
        ));
    }
    Ok(())
}

/// The bytes of a record's JSON, counted without keeping them.
fn record_bytes(record: &SessionRecord) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing a record into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, record);
    count.0
}

/// Reads JSON a store holds (a session record, an end job's record, an
/// audit record) without serde_json's default limit of 128 levels: any text
/// up to [`MAX_STORED_DEPTH`] levels reads back, deeper text is refused
/// before it is parsed.
pub fn from_stored<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let found = text_depth(text.as_bytes());
    if found > MAX_STORED_DEPTH {
        return Err(format!(
            "nested {found} levels, deeper than the {MAX_STORED_DEPTH} a store keeps"
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    // The depth was bounded above, so the parse's recursion is too.
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `levels` nested objects: `{"a":{"a":...{}}}`.
    fn nested(levels: usize) -> Value {
        let mut v = json!({});
        for _ in 1..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!("{[")), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1]})), 2);
        assert_eq!(depth(&json!([[], [[{}]], 3])), 4);
        for text in [
            r#"{"a": "}}{{[", "b": [{"c": "\"{"}]}"#,
            "[]",
            "7",
            "[[1],[[2]]]",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(text_depth(text.as_bytes()), depth(&value), "{text}");
        }
        assert_eq!(depth(&nested(2 * MAX_STORED_DEPTH)), 2 * MAX_STORED_DEPTH);
    }

    #[test]
    fn check_names_the_field_and_the_limit() {
        assert!(check("data", &nested(MAX_DEPTH)).is_ok());
        let e = check("payload", &nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.limit, e.found),
            ("payload", Limit::Depth, 33)
        );
        assert!(e.to_string().starts_with("payload: "), "{e}");
        assert!(e.to_string().contains("32"), "{e}");
        let text = nested(40).to_string();
        assert_eq!(check_text("state", &text).unwrap_err().found, 40);
        assert!(check_text("state", &nested(3).to_string()).is_ok());
    }

    fn record() -> SessionRecord {
        serde_json::from_value(json!({
            "token_hash": "h", "public_id": "p", "tenant": "t", "created_at": 1,
            "last_seen_at": 1, "absolute_expires_at": 2, "idle_timeout_ms": 1, "version": 1
        }))
        .unwrap()
    }

    #[test]
    fn sessions_are_bounded_in_depth_and_bytes() {
        let mut r = record();
        assert!(check_session(&r).is_ok());
        r.data.insert("a".into(), nested(MAX_DEPTH - 1));
        assert!(check_session(&r).is_ok(), "data itself is the first level");
        r.data.insert("a".into(), nested(MAX_DEPTH));
        assert_eq!(check_session(&r).unwrap_err().field, "data");
        r.data.clear();
        r.plugin_state.insert("p".into(), nested(MAX_DEPTH + 1));
        assert_eq!(check_session(&r).unwrap_err().field, "plugin_state.p");
        r.plugin_state.clear();
        r.data
            .insert("big".into(), Value::String("x".repeat(MAX_SESSION_BYTES)));
        let e = check_session(&r).unwrap_err();
        assert_eq!((e.field.as_str(), e.limit), ("", Limit::SessionBytes));
        assert!(e.found > MAX_SESSION_BYTES);
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": [1]}),
                json!({"a": {"b": null, "c": 1}}),
                json!({"a": {"c": 1}}),
            ),
            (
                json!({"a": {"b": 1, "c": 2}}),
                json!({"a": {"b": null}}),
                json!({"a": {"c": 2}}),
            ),
            (
                json!({"a": []}),
                json!({"b": {}}),
                json!({"a": [], "b": {}}),
            ),
            (
                json!({"a": {"b": 1}}),
                json!({"a": [null]}),
                json!({"a": [null]}),
            ),
        ];
        for (target, patch, expected) in cases {
            let (Value::Object(mut t), Value::Object(p)) = (target.clone(), patch.clone()) else {
                unreachable!()
            };
            merge_patch(&mut t, &p);
            assert_eq!(Value::Object(t.clone()), expected, "{target} + {patch}");
            let mut reference = target.clone();
            json_patch::merge(&mut reference, &patch);
            assert_eq!(Value::Object(t), reference, "{target} + {patch}");
        }
    }

    #[test]
    fn record_depth_is_the_depth_of_its_json() {
        let mut r = record();
        let measure = |r: &SessionRecord| text_depth(serde_json::to_string(r).unwrap().as_bytes());
        assert_eq!(record_depth(&r), measure(&r));
        r.data.insert("a".into(), nested(7));
        assert_eq!(record_depth(&r), measure(&r));
        r.plugin_state.insert("p".into(), nested(9));
        assert_eq!(record_depth(&r), measure(&r));
        r.data.insert("a".into(), nested(MAX_STORED_DEPTH));
        assert!(check_stored(&r).is_err());
    }

    #[test]
    fn stored_json_reads_back_to_the_stored_bound() {
        let mut r = record();
        r.data.insert("a".into(), nested(MAX_STORED_DEPTH - 2));
        assert_eq!(record_depth(&r), MAX_STORED_DEPTH);
        assert!(check_stored(&r).is_ok());
        let text = serde_json::to_string(&r).unwrap();
        assert!(serde_json::from_str::<SessionRecord>(&text).is_err());
        // On a thread with half the stack of a tokio worker's.
        let back = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let back: SessionRecord = from_stored(&text).unwrap();
                let copy = back.clone();
                assert_eq!(copy, back);
                assert_eq!(serde_json::to_string(&copy).unwrap(), text);
                back
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(back, r);
        let deeper = format!(
            "{}{}",
            "[".repeat(MAX_STORED_DEPTH + 1),
            "]".repeat(MAX_STORED_DEPTH + 1)
        );
        assert!(from_stored::<Value>(&deeper).is_err());
        assert!(from_stored::<Value>("{} x").is_err());
    }
}
