//! Generated request bodies through the real router and through the stores,
//! on every store backend: what the API accepts comes back unchanged, what
//! it refuses it refuses as a 4xx problem, never a 5xx.
//!
//! - Create bodies (`user`, `roles`, `device`, `ttl_seconds`, `data`) whose
//!   names are sometimes blank or hold control characters and whose data is
//!   sometimes nested past `max_json_depth`: a body is accepted exactly when
//!   it keeps the rules, and then `GET` and the store return its data,
//!   user, roles and device as sent.
//! - Merge patches (RFC 7386) of that data: the new data is the patch
//!   applied as the RFC says, and both `GET` and the store return it.
//! - Records written to the store directly, with generated data: the store
//!   returns each as it was written.
//!
//! Each property runs 64 generated cases per backend, through the edge tier
//! (the router without a socket) over a store of that backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::Method;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use sessiond::ids::token_hash;
use sessiond::json::MAX_DEPTH;
use sessiond::session::now_ms;
use sessiond::store::{CreateLimit, CreateOutcome};
use sessiond_tests::edge::Edge;
use sessiond_tests::fixtures::{self, Tenant};
use sessiond_tests::redis_server::{RedisCluster, RedisServer};
use sessiond_tests::server::Reply;
use sessiond_tests::{Backend, every_backend};

const KEY: &str = "test-key-roundtrip";
const TENANT: &str = "fuzz";
const CASES: u32 = 64;

every_backend!(stores: api_round_trips, store_round_trips);

/// The router over a store of `backend`; `_dir` holds the embedded store's
/// data directory.
struct Target {
    api: Edge,
    _dir: Option<tempfile::TempDir>,
}

async fn target(backend: Backend) -> Target {
    static PREFIX: AtomicU64 = AtomicU64::new(1);
    let prefix = format!("roundtrip-{}", PREFIX.fetch_add(1, Ordering::Relaxed));
    let quoted = |urls: Vec<String>| {
        urls.iter()
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut dir = None;
    let store = match backend {
        Backend::Memory => "[store]\nbackend = \"memory\"\n".to_string(),
        Backend::Embedded => {
            let d = tempfile::tempdir().expect("a temporary directory");
            let text = format!("[store]\nbackend = \"embedded\"\npath = {:?}\n", d.path());
            dir = Some(d);
            text
        }
        Backend::Redis => {
            let url = tokio::task::spawn_blocking(|| RedisServer::shared().url())
                .await
                .unwrap();
            format!(
                "[store]\nbackend = \"redis\"\nurls = [{}]\nprefix = {prefix:?}\n",
                quoted(vec![url])
            )
        }
        Backend::Cluster => {
            let urls = tokio::task::spawn_blocking(|| RedisCluster::shared().urls())
                .await
                .unwrap();
            format!(
                "[store]\nbackend = \"redis\"\ncluster = true\nurls = [{}]\nprefix = {prefix:?}\n",
                quoted(urls)
            )
        }
    };
    let toml = format!("{store}{}", Tenant::new(TENANT).key(KEY).toml());
    Target {
        api: Edge::start(&toml).await.with_key(KEY),
        _dir: dir,
    }
}

/// Runs `check` on `CASES` values of `strategy`, on this (multi-threaded)
/// runtime.
fn run<S, F, Fut>(strategy: S, check: F)
where
    S: Strategy,
    S::Value: Clone + std::fmt::Debug,
    F: Fn(S::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), TestCaseError>>,
{
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |value| handle.block_on(check(value)))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ------------------------------------------------------------- generators

/// Any JSON value of modest size: every kind of number, strings with any
/// character (control characters and non-BMP ones included).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object, sometimes with one member nested deep enough to reach
/// or cross `max_json_depth`.
fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::collection::btree_map(".{0,8}", json_value(), 0..6),
        prop_oneof![3 => Just(0usize), 1 => (MAX_DEPTH - 8)..(MAX_DEPTH + 4)],
    )
        .prop_map(|(members, wraps)| {
            let mut data: Map<String, Value> = members.into_iter().collect();
            if wraps > 0 {
                let mut deep = json!("bottom");
                for _ in 0..wraps {
                    deep = json!([deep]);
                }
                data.insert("deep".into(), deep);
            }
            data
        })
}

/// A name: usually valid, sometimes blank or with a control character.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[^\\p{Cc}]{1,16}",
        1 => Just(String::new()),
        1 => " {1,3}",
        1 => "[a-z]{1,4}[\\x00-\\x1f\\x7f][a-z]{0,4}",
    ]
}

/// A create body, and the data a merge patch of it will bring.
#[derive(Debug, Clone)]
struct Case {
    user: Option<String>,
    roles: Vec<String>,
    device: Option<String>,
    ttl_seconds: Option<u64>,
    data: Map<String, Value>,
    patch: Map<String, Value>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::option::of(name()),
        prop::collection::vec(name(), 0..4),
        prop::option::of(name()),
        prop::option::of(prop_oneof![Just(0u64), 1u64..100_000, Just(u64::MAX)]),
        json_object(),
        json_object(),
    )
        .prop_map(|(user, roles, device, ttl_seconds, data, patch)| Case {
            user,
            roles,
            device,
            ttl_seconds,
            data,
            patch,
        })
}

// ------------------------------------------------------------- the rules

/// How deeply a value nests (`{}` is one level, a scalar none).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn object_depth(members: &Map<String, Value>) -> usize {
    depth(&Value::Object(members.clone()))
}

fn valid_name(name: &str) -> bool {
    !name.trim().is_empty() && name.len() <= 256 && !name.chars().any(char::is_control)
}

impl Case {
    fn body(&self) -> Value {
        let mut body = json!({"data": self.data, "roles": self.roles});
        if let Some(user) = &self.user {
            body["user"] = json!(user);
        }
        if let Some(device) = &self.device {
            body["device"] = json!(device);
        }
        if let Some(ttl) = self.ttl_seconds {
            body["ttl_seconds"] = json!(ttl);
        }
        body
    }

    fn create_is_valid(&self) -> bool {
        self.user.as_deref().is_none_or(valid_name)
            && self.roles.iter().all(|r| valid_name(r))
            && self.device.as_deref().is_none_or(valid_name)
            && self.ttl_seconds != Some(0)
            && object_depth(&self.data) <= MAX_DEPTH
    }
}

/// RFC 7386: `patch` applied to `target`.
fn merge(target: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    let mut out = target.clone();
    for (key, value) in patch {
        match value {
            Value::Null => {
                out.remove(key);
            }
            Value::Object(inner) => {
                let base = match out.get(key) {
                    Some(Value::Object(existing)) => existing.clone(),
                    _ => Map::new(),
                };
                out.insert(key.clone(), Value::Object(merge(&base, inner)));
            }
            other => {
                out.insert(key.clone(), other.clone());
            }
        }
    }
    out
}

/// A refusal is a 4xx problem.
fn refused_as_problem(reply: &Reply, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        (400..500).contains(&reply.status),
        "{what}: {} {}",
        reply.status,
        reply.text
    );
    prop_assert_eq!(reply.content_type(), "application/problem+json", "{}", what);
    prop_assert_eq!(reply.body["status"].as_u64(), Some(u64::from(reply.status)));
    Ok(())
}

// ------------------------------------------------------------- properties

async fn api_round_trips(backend: Backend) {
    let target = target(backend).await;
    let api = &target.api;
    run(case(), |case| async move {
        let created = api.post("/v1/sessions", &case.body()).await;
        if !case.create_is_valid() {
            return refused_as_problem(&created, "an invalid create");
        }
        prop_assert_eq!(created.status, 201, "{}", created.text);
        let id = created.body["id"].as_str().expect("an id").to_string();
        let path = format!("/v1/sessions/{id}");
        let got = api.get(&path).await;
        prop_assert_eq!(got.status, 200, "{}", got.text);
        prop_assert_eq!(&got.body["data"], &Value::Object(case.data.clone()));
        prop_assert_eq!(&got.body["user"], &json!(case.user));
        prop_assert_eq!(&got.body["roles"], &json!(case.roles));
        prop_assert_eq!(&got.body["device"], &json!(case.device));
        let stored = api
            .app()
            .sessions
            .get(TENANT, &token_hash(&id), now_ms())
            .await
            .expect("the store answers")
            .expect("the store has the session");
        prop_assert_eq!(&stored.data, &case.data);
        prop_assert_eq!(&stored.user, &case.user);
        prop_assert_eq!(&stored.roles, &case.roles);

        let patched = api
            .raw(
                Method::PATCH,
                &path,
                "application/merge-patch+json",
                &Value::Object(case.patch.clone()).to_string(),
            )
            .await;
        if object_depth(&case.patch) > MAX_DEPTH {
            refused_as_problem(&patched, "a patch too deep")?;
            let after = api.get(&path).await.expect(200);
            prop_assert_eq!(&after.body["data"], &Value::Object(case.data.clone()));
            return Ok(());
        }
        let expected = merge(&case.data, &case.patch);
        prop_assert_eq!(patched.status, 200, "{}", patched.text);
        prop_assert_eq!(&patched.body["data"], &Value::Object(expected.clone()));
        let got = api.get(&path).await.expect(200);
        prop_assert_eq!(&got.body["data"], &Value::Object(expected.clone()));
        let stored = api
            .app()
            .sessions
            .get(TENANT, &token_hash(&id), now_ms())
            .await
            .expect("the store answers")
            .expect("the store has the session");
        prop_assert_eq!(&stored.data, &expected);
        Ok(())
    });
}

async fn store_round_trips(backend: Backend) {
    let target = target(backend).await;
    let sessions: Arc<dyn sessiond::store::SessionStore> = target.api.app().sessions.clone();
    let strategy = (json_object(), prop::option::of("[^\\p{Cc}]{1,16}"));
    run(strategy, |(data, user)| {
        let sessions = sessions.clone();
        async move {
            let now = now_ms();
            let record = fixtures::session(TENANT)
                .user(user.as_deref())
                .at(now)
                .data(Value::Object(data))
                .build();
            let outcome = sessions
                .create(&record, CreateLimit::NONE, false, now)
                .await
                .expect("the store answers");
            let created = matches!(outcome, CreateOutcome::Created { .. });
            prop_assert!(created, "the store refused a new session: {:?}", outcome);
            let got = sessions
                .get(TENANT, &record.token_hash, now)
                .await
                .expect("the store answers");
            prop_assert_eq!(got.as_ref(), Some(&record));
            Ok(())
        }
    });
}
