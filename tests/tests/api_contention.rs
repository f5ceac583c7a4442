//! Many writers patching one session at once, on every backend: none is
//! answered 409 and none of their changes is lost, whether the store
//! merges the patches atomically (a tenant without `on-session-update`
//! plugins) or they go through the plugin chain and the compare-and-set
//! write (a tenant with the `updater` fixture). `If-Match` keeps its
//! meaning on both paths.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::{Api, TestServer};
use sessiond_tests::{Backend, every_backend};

/// The key of the tenant whose patches the store merges.
const PLAIN: &str = "key-plain";
/// The key of the tenant with an `on-session-update` plugin.
const HOOKED: &str = "key-hooked";
const WRITERS: usize = 20;

every_backend!(
    servers:
    contended_merges_all_succeed,
    contended_chain_writes_all_succeed,
    if_match_keeps_its_meaning,
    patched_values_come_back_exact,
);

fn start(backend: Backend) -> TestServer {
    let plain = Tenant::new("plain").key(PLAIN).plugin(Plugin::audit_log());
    let hooked = Tenant::new("hooked")
        .key(HOOKED)
        .plugin(Plugin::new("updater", "updater"));
    TestServer::start(backend, &format!("{}{}", plain.toml(), hooked.toml()))
}

/// The ETag's version.
fn etag_version(reply: &sessiond_tests::server::Reply) -> u64 {
    reply
        .header("etag")
        .trim_matches('"')
        .parse()
        .expect("ETag")
}

/// `WRITERS` writers each PATCH the session `each` times, without
/// `If-Match`, writer `w` setting `{"w<w>": i}`. Asserts every answer is
/// 200, that every answer has a version of its own, and that the session
/// then holds every writer's last value at version 1 + every PATCH.
async fn contend(api: &Api, each: usize) {
    let id = api.create(&json!({"data": {"list": []}})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/sessions/{id}");
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (api, path) = (api.clone(), path.clone());
            tokio::spawn(async move {
                let mut versions = Vec::with_capacity(each);
                for i in 0..each {
                    let reply = api.patch(&path, &json!({ format!("w{w}"): i })).await;
                    assert_eq!(reply.status, 200, "writer {w}, PATCH {i}: {}", reply.body);
                    let version = reply.body["version"].as_u64().unwrap();
                    assert_eq!(etag_version(&reply), version);
                    assert_eq!(reply.body["data"][format!("w{w}")], json!(i));
                    versions.push(version);
                }
                versions
            })
        })
        .collect();
    let mut versions = BTreeSet::new();
    for w in writers {
        for v in w.await.unwrap() {
            assert!(versions.insert(v), "two PATCHes answered version {v}");
        }
    }
    let total = (WRITERS * each) as u64;
    assert_eq!(versions, (2..=total + 1).collect::<BTreeSet<u64>>());
    let got = api.get(&path).await.expect(200);
    assert_eq!(got.body["version"], json!(total + 1), "nothing lost");
    let data = got.body["data"].as_object().unwrap();
    for w in 0..WRITERS {
        assert_eq!(data[&format!("w{w}")], json!(each - 1), "writer {w}");
    }
    assert_eq!(data["list"], json!([]));
    assert_eq!(data.len(), WRITERS + 1);
}

async fn contended_merges_all_succeed(backend: Backend) {
    let server = start(backend);
    contend(&server.api(PLAIN), 50).await;
}

async fn contended_chain_writes_all_succeed(backend: Backend) {
    let server = start(backend);
    let each = 15;
    contend(&server.api(HOOKED), each).await;
    // The chain ran for every PATCH (once more for each lost race).
    let list = server.api(HOOKED).get("/v1/plugins").await.expect(200).body;
    let updater = &list["plugins"][0];
    assert_eq!(updater["name"], "updater", "{list}");
    assert!(
        updater["calls"].as_u64().unwrap() >= (WRITERS * each) as u64,
        "{list}"
    );
}

async fn if_match_keeps_its_meaning(backend: Backend) {
    let server = start(backend);
    for key in [PLAIN, HOOKED] {
        let api = server.api(key);
        let id = api.create(&json!({})).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/v1/sessions/{id}");
        let patch = |version: &str, body: Value| {
            api.request(Method::PATCH, &path)
                .header("content-type", "application/merge-patch+json")
                .header("if-match", format!("\"{version}\""))
                .body(body.to_string())
        };
        let ok = api.send(patch("1", json!({"a": 1}))).await.expect(200);
        assert_eq!(etag_version(&ok), 2, "{key}");
        let p = api
            .send(patch("1", json!({"a": 2})))
            .await
            .problem(412, "precondition-failed");
        assert_eq!(p["current_version"], 2, "{key}: {p}");
        // Without If-Match it applies to whatever version is stored.
        let ok = api.patch(&path, &json!({"b": 1})).await.expect(200);
        assert_eq!(ok.body["version"], 3, "{key}");
        assert_eq!(ok.body["data"], json!({"a": 1, "b": 1}), "{key}");
        api.delete(&path).await.expect(204);
        api.patch(&path, &json!({"c": 1}))
            .await
            .problem(404, "session-not-found");
    }
}

async fn patched_values_come_back_exact(backend: Backend) {
    let server = start(backend);
    for key in [PLAIN, HOOKED] {
        let api = server.api(key);
        let id = api
            .create(&json!({"data": {"keep": {"empty": [], "obj": {}}, "drop": 1}}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/v1/sessions/{id}");
        // As text, so that nothing on the way here reformats the numbers.
        let body = r#"{"drop": null, "list": [], "obj": {}, "big": 18446744073709551615,
            "neg": -9223372036854775808, "float": 0.1, "sum": 0.30000000000000004,
            "tiny": 5e-324, "text": "ü \ud83d\ude00 \"q\"", "keep": {"obj": {"x": null}}}"#;
        let reply = api
            .send(
                api.request(Method::PATCH, &path)
                    .header("content-type", "application/merge-patch+json")
                    .body(body),
            )
            .await
            .expect(200);
        let expected = json!({
            "keep": {"empty": [], "obj": {}},
            "list": [], "obj": {},
            "big": 18446744073709551615u64, "neg": i64::MIN,
            "float": 0.1, "sum": 0.30000000000000004, "tiny": 5e-324,
            "text": "ü \u{1F600} \"q\"",
        });
        assert_eq!(reply.body["data"], expected, "{key}");
        let got = api.get(&path).await.expect(200);
        assert_eq!(got.body["data"], expected, "{key}");
        assert_eq!(got.body["data"]["sum"].as_f64(), Some(0.30000000000000004));
    }
}
