//! The HTTP edge in the fast tier: the real router over the memory store,
//! with no plugins and no socket (`sessiond_tests::edge`). Extractors,
//! problems, authentication, `If-Match`, routes and bad input; the plugin
//! flows and the stores are tested over real HTTP in the other `api_*`
//! files.

use std::collections::BTreeSet;

use axum::http::Method;
use serde_json::{Value, json};
use sessiond_tests::edge::Edge;
use sessiond_tests::fixtures::Tenant;

const KEY: &str = "test-key-edge";

async fn edge() -> Edge {
    let toml = format!(
        "[server]\nmax_body_bytes = 2048\n{}",
        Tenant::new("acme").key(KEY).toml()
    );
    Edge::start(&toml).await.with_key(KEY)
}

async fn session(api: &Edge) -> String {
    api.create(&json!({}))
        .await
        .get("id")
        .and_then(Value::as_str)
        .expect("an id")
        .to_string()
}

#[tokio::test]
async fn bodies_that_do_not_parse_are_problems_naming_the_field() {
    let api = edge().await;
    let json = "application/json";
    let p = api
        .raw(Method::POST, "/v1/sessions", json, "{\"user\": ")
        .await
        .problem(400, "malformed-json");
    assert!(
        p["detail"].as_str().unwrap().contains("not valid JSON"),
        "{p}"
    );
    let p = api
        .raw(
            Method::POST,
            "/v1/sessions",
            json,
            "{\"user\": \"a\", \"colour\": 1}",
        )
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "colour");
    assert!(
        p["detail"].as_str().unwrap().contains("unknown field"),
        "{p}"
    );
    for (body, field) in [
        ("{\"roles\": \"admin\"}", "roles"),
        ("{\"data\": [1, 2]}", "data"),
        ("{\"ttl_seconds\": 0}", "ttl_seconds"),
        ("{\"user\": \"\"}", "user"),
        ("{\"user\": \"a\\u0007b\"}", "user"),
        ("{\"roles\": [\"ok\", \"  \"]}", "roles[1]"),
    ] {
        let p = api
            .raw(Method::POST, "/v1/sessions", json, body)
            .await
            .problem(422, "invalid-body");
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    let long = json!({"user": "u".repeat(257)}).to_string();
    api.raw(Method::POST, "/v1/sessions", json, &long)
        .await
        .problem(422, "invalid-body");
    // Too large: 413, whatever the content.
    let big = json!({"data": {"blob": "x".repeat(4096)}}).to_string();
    let p = api
        .raw(Method::POST, "/v1/sessions", json, &big)
        .await
        .problem(413, "body-too-large");
    assert_eq!(p["limit"], 2048);
    api.raw(
        Method::POST,
        "/v1/sessions",
        "application/x-www-form-urlencoded",
        "user=alice",
    )
    .await
    .problem(415, "unsupported-media-type");

    let path = format!("/v1/sessions/{}", session(&api).await);
    api.raw(
        Method::PATCH,
        &path,
        "application/merge-patch+json",
        "[1, 2]",
    )
    .await
    .problem(422, "invalid-body");
    api.raw(Method::PATCH, &path, json, "{")
        .await
        .problem(400, "malformed-json");
    api.raw(Method::PATCH, &path, json, "")
        .await
        .problem(400, "malformed-json");
    let p = api
        .post(&format!("{path}/events"), &json!({"name": 5}))
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "name");
    api.post(&format!("{path}/events"), &json!({"payload": 1}))
        .await
        .problem(422, "invalid-body");
    api.post(&format!("{path}/events"), &json!({"name": "authenticated"}))
        .await
        .problem(422, "invalid-body");
    api.post(&format!("{path}/authenticate"), &json!({"roles": []}))
        .await
        .problem(422, "invalid-body");
    api.post(
        &format!("{path}/authenticate"),
        &json!({"user": "x", "admin": true}),
    )
    .await
    .problem(422, "invalid-body");
    // None of that changed the session.
    let got = api.get(&path).await.expect(200);
    assert_eq!(got.body["version"], 1);
    assert_eq!(got.body["data"], json!({}));
}

#[tokio::test]
async fn session_ids_are_checked_before_the_store() {
    let api = edge().await;
    let id = session(&api).await;
    for bad in ["nope", "too-short-id", &format!("{}!", &id[..42])] {
        let p = api
            .get(&format!("/v1/sessions/{bad}"))
            .await
            .problem(400, "bad-session-id");
        assert_eq!(p["detail"], "session id must be 43 base64url characters");
    }
    api.raw(
        Method::PATCH,
        &format!("/v1/sessions/{}", "A".repeat(43)),
        "application/json",
        "{\"a\": 1}",
    )
    .await
    .problem(404, "session-not-found");
}

#[tokio::test]
async fn if_match_is_parsed_and_compared_strongly() {
    let api = edge().await;
    let path = format!("/v1/sessions/{}", session(&api).await);
    let with = |tag: &str| {
        api.request(Method::POST, &format!("{path}/touch"))
            .header("if-match", tag)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    api.send(with("3")).await.problem(400, "bad-if-match");
    let p = api
        .send(with("\"7\""))
        .await
        .problem(412, "precondition-failed");
    assert_eq!(p["current_version"], 1);
    // A weak tag, or one that is not a version, never matches.
    api.send(with("W/\"1\""))
        .await
        .problem(412, "precondition-failed");
    api.send(with("\"01\""))
        .await
        .problem(412, "precondition-failed");
    let touched = api.send(with("\"5\", \"1\"")).await.expect(200);
    assert_eq!(touched.header("etag"), "\"2\"");
    api.send(with("*")).await.expect(200);
}

#[tokio::test]
async fn routes_and_methods() {
    let api = edge().await;
    let path = format!("/v1/sessions/{}", session(&api).await);
    api.get("/v1/nothing-here").await.problem(404, "");
    api.get("/nothing").await.problem(404, "");
    let wrong = api.empty(Method::PUT, &path).await;
    let allow = wrong.header("allow").to_string();
    let p = wrong.problem(405, "");
    assert!(allow.contains("GET") && allow.contains("PATCH"), "{allow}");
    assert!(p["detail"].as_str().unwrap().contains("Allow"), "{p}");
    api.get("/v1/sessions").await.problem(405, "");
}

#[tokio::test]
async fn audit_queries_are_checked() {
    let api = edge().await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "after=yesterday",
        // Numbers past 64 bits: once a 500 from the store.
        "after=99999999999999999999-0",
        "after=1-99999999999999999999",
    ] {
        api.get(&format!("/v1/audit?{query}"))
            .await
            .problem(400, "bad-query");
    }
    let page = api.get("/v1/audit?limit=1000").await.expect(200).body;
    assert_eq!(page["records"], json!([]));
    assert!(page["next"].is_null());
}

#[tokio::test]
async fn authentication_comes_first_and_fails_as_problems() {
    let api = edge().await;
    let path = format!("/v1/sessions/{}", session(&api).await);
    let anon = api.anonymous();
    let unauth = anon.get(&path).await;
    assert!(
        unauth.header("www-authenticate").starts_with("Bearer"),
        "{:?}",
        unauth.headers
    );
    unauth.problem(401, "unauthorized");
    let wrong_key = api.with_key("not-the-key").get(&path).await;
    assert!(
        wrong_key
            .header("www-authenticate")
            .contains("invalid_token")
    );
    wrong_key.problem(401, "unauthorized");
    let p = anon
        .send(
            anon.request(Method::POST, "/v1/sessions")
                .header("authorization", "Basic dXNlcjpwdw==")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .problem(401, "unauthorized");
    assert!(p["detail"].as_str().unwrap().contains("Bearer"), "{p}");
    for path in [
        "/v1/audit",
        "/v1/plugins",
        "/v1/ends",
        "/v1/users/alice/sessions",
    ] {
        anon.get(path).await.problem(401, "unauthorized");
    }
    // Two credentials, one good: refused, whichever comes first.
    for keys in [[KEY, "wrong"], ["wrong", KEY], [KEY, KEY]] {
        let mut request = anon.request(Method::GET, &path);
        for key in keys {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let p = anon
            .send(request.body(axum::body::Body::empty()).unwrap())
            .await
            .problem(400, "ambiguous-credentials");
        assert!(
            p["detail"].as_str().unwrap().contains("more than one"),
            "{p}"
        );
    }
    // sessman is not enabled for this tenant, and no tenant takes keyless
    // sessman calls.
    api.post("/sessman/new?user=a", &json!({}))
        .await
        .problem(403, "sessman-disabled");
    anon.post("/sessman/new?user=a", &json!({}))
        .await
        .problem(401, "unauthorized");
}

#[tokio::test]
async fn health_and_openapi_need_no_key() {
    let anon = edge().await.anonymous();
    assert_eq!(anon.get("/healthz").await.expect(200).body["status"], "ok");
    assert_eq!(
        anon.get("/readyz").await.expect(200).body["status"],
        "ready"
    );
    let doc = anon.get("/openapi.json").await.expect(200).body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/touch",
        "/v1/sessions/{id}/authenticate",
        "/v1/sessions/{id}/events",
        "/v1/sessions/{id}/messages/{handler}",
        "/v1/users/{user}/sessions",
        "/v1/audit",
        "/v1/plugins",
        "/healthz",
        "/readyz",
        "/sessman/new",
        "/sessman/update",
        "/sessman/get",
    ] {
        assert!(paths.contains(p), "{p} missing from {paths:?}");
    }
    let ops: Vec<&Value> = doc["paths"]["/v1/sessions/{id}"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(ops.len(), 3, "GET, PATCH and DELETE");
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn object_bodies_must_be_objects() {
    let api = edge().await;
    // serde would read the struct from an array of its fields.
    for body in [json!([]), json!(["alice"]), json!("x"), json!(3)] {
        let p = api.post("/v1/sessions", &body).await.expect(422).body;
        assert_eq!(p["type"], "urn:sessiond:problem:invalid-body", "{body}");
    }
    // null, like an empty body, asks for an anonymous session.
    let created = api
        .post("/v1/sessions", &Value::Null)
        .await
        .expect(201)
        .body;
    assert_eq!(created["user"], Value::Null);
    let id = created["id"].as_str().unwrap();
    let events = format!("/v1/sessions/{id}/events");
    api.post(&events, &json!(["page-view"])).await.expect(422);
    // A payload may be any JSON value.
    api.post(
        &events,
        &json!({"name": "page-view", "payload": "a string"}),
    )
    .await
    .expect(200);
}

/// Facts of the OpenAPI document that schemathesis once found missing, so
/// that they cannot silently go again.
#[tokio::test]
async fn the_openapi_document_states_what_the_server_checks() {
    let doc = edge()
        .await
        .anonymous()
        .get("/openapi.json")
        .await
        .expect(200)
        .body;
    let problem = |op: &Value, status: &str| -> bool {
        op["responses"][status]["content"]["application/problem+json"].is_object()
    };
    let mut v1_operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let name = format!("{method} {path}");
            if path.starts_with("/v1/") {
                v1_operations += 1;
                assert!(problem(op, "401"), "401 missing from {name}");
                assert!(problem(op, "400"), "400 missing from {name}");
            }
            if path.contains("{id}") {
                assert!(problem(op, "404"), "404 missing from {name}");
            }
            if op["requestBody"].is_object() && path.starts_with("/v1/") {
                for status in ["400", "408", "413", "415", "422"] {
                    assert!(problem(op, status), "{status} missing from {name}");
                }
            }
            let if_match = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "If-Match");
            if if_match {
                assert!(problem(op, "412"), "412 missing from {name}");
            }
        }
    }
    assert_eq!(v1_operations, 15, "every /v1 operation was checked");
    assert!(
        !problem(&doc["paths"]["/v1/plugins"]["get"], "503"),
        "listing plugins never reads the store"
    );

    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["SessionId"]["pattern"], "^[A-Za-z0-9_-]{43}$");
    let get = &doc["paths"]["/v1/sessions/{id}"]["get"];
    assert_eq!(
        get["parameters"][0]["schema"]["$ref"],
        "#/components/schemas/SessionId"
    );
    let create = &doc["paths"]["/v1/sessions"]["post"];
    assert_ne!(
        create["requestBody"]["required"], true,
        "an empty body creates"
    );
    assert!(schemas["Name"]["pattern"].is_string());
    assert!(schemas["EntityTags"]["pattern"].is_string());
    assert_eq!(
        schemas["Event"]["properties"]["name"]["$ref"],
        "#/components/schemas/Name"
    );
    // Any JSON value: no type.
    assert!(
        schemas["Event"]["properties"]["payload"]
            .get("type")
            .is_none()
    );
    let limit = doc["paths"]["/v1/audit"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 1000);
}

#[tokio::test]
async fn a_message_without_a_handler_and_an_empty_listing() {
    let api = edge().await;
    let path = format!("/v1/sessions/{}", session(&api).await);
    api.post(&format!("{path}/messages/refresh"), &json!({}))
        .await
        .problem(404, "no-message-handler");
    let listed = api.get("/v1/users/nobody/sessions").await.expect(200).body;
    assert_eq!(listed["sessions"], json!([]));
    let plugins = api.get("/v1/plugins").await.expect(200).body;
    assert_eq!(plugins["plugins"], json!([]));
}
