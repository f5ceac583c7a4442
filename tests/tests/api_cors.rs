//! CORS over real HTTP: preflights, and which tenant's origins may read
//! which answers (`tenants.<name>.cors_origins`).

use reqwest::Method;
use serde_json::json;
use sessiond_tests::Backend;
use sessiond_tests::fixtures::Tenant;
use sessiond_tests::server::{Api, Reply, TestServer};

const SHOP: &str = "test-key-cors-shop";
const BANK: &str = "test-key-cors-bank";
const SHOP_ORIGIN: &str = "https://shop.example";
const BANK_ORIGIN: &str = "http://localhost:3000";

fn server() -> TestServer {
    let toml = [
        Tenant::new("shop")
            .key(SHOP)
            .setting("cors_origins", &format!("[\"{SHOP_ORIGIN}\"]"))
            .toml(),
        Tenant::new("bank")
            .key(BANK)
            .setting("cors_origins", &format!("[\"{BANK_ORIGIN}\"]"))
            .toml(),
        Tenant::new("closed").key("test-key-cors-closed").toml(),
    ]
    .concat();
    TestServer::start(Backend::Memory, &toml)
}

async fn preflight(api: &Api, origin: &str, method: &str) -> Reply {
    api.send(
        api.request(Method::OPTIONS, "/v1/sessions")
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            ),
    )
    .await
}

#[tokio::test]
async fn preflights_answer_listed_origins_only() {
    let server = server();
    let api = server.anonymous();
    for origin in [SHOP_ORIGIN, BANK_ORIGIN] {
        let reply = preflight(&api, origin, "POST").await.expect(204);
        assert_eq!(reply.header("access-control-allow-origin"), origin);
        let methods = reply.header("access-control-allow-methods");
        for m in ["GET", "POST", "PATCH", "DELETE"] {
            assert!(methods.contains(m), "{methods}");
        }
        let headers = reply.header("access-control-allow-headers");
        for h in [
            "authorization",
            "content-type",
            "if-match",
            "idempotency-key",
        ] {
            assert!(headers.contains(h), "{headers}");
        }
        assert_eq!(reply.header("access-control-max-age"), "600");
        assert!(reply.header("vary").contains("origin"));
    }
    let reply = preflight(&api, "https://evil.example", "POST").await;
    assert_eq!(reply.header("access-control-allow-origin"), "");
    reply.problem(403, "cors-origin-not-allowed");
    // An OPTIONS that is not a preflight is routed as usual.
    api.send(
        api.request(Method::OPTIONS, "/v1/sessions")
            .header("origin", SHOP_ORIGIN),
    )
    .await
    .problem(405, "");
}

#[tokio::test]
async fn only_the_callers_tenant_decides_who_reads_the_answer() {
    let server = server();
    let shop = server.api(SHOP);
    let created = shop
        .send(
            shop.request(Method::POST, "/v1/sessions")
                .header("origin", SHOP_ORIGIN)
                .json(&json!({"user": "ada"})),
        )
        .await
        .expect(201);
    assert_eq!(created.header("access-control-allow-origin"), SHOP_ORIGIN);
    let exposed = created.header("access-control-expose-headers");
    for h in ["etag", "location", "retry-after"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    assert!(created.header("vary").contains("origin"));
    let id = created.body["id"].as_str().unwrap().to_string();

    // bank's origin with shop's key: the answer comes, but a browser on
    // bank's page may not read it.
    let read = shop
        .send(
            shop.request(Method::GET, &format!("/v1/sessions/{id}"))
                .header("origin", BANK_ORIGIN),
        )
        .await
        .expect(200);
    assert_eq!(read.header("access-control-allow-origin"), "");
    assert!(read.header("vary").contains("origin"));

    // An error answer is readable too, so a page can show the problem.
    let missing = shop
        .send(
            shop.request(Method::GET, "/v1/sessions/nope")
                .header("origin", SHOP_ORIGIN),
        )
        .await;
    assert_eq!(missing.header("access-control-allow-origin"), SHOP_ORIGIN);
    assert_eq!(missing.status, 400, "{}", missing.text);

    // A wrong key: any listed origin may read the 401; others may not.
    let stranger = Api::new(&server.base_url(), Some("not-a-key"));
    let denied = stranger
        .send(
            stranger
                .request(Method::GET, "/v1/sessions/nope")
                .header("origin", BANK_ORIGIN),
        )
        .await;
    assert_eq!(denied.header("access-control-allow-origin"), BANK_ORIGIN);
    denied.problem(401, "unauthorized");
    let denied = stranger
        .send(
            stranger
                .request(Method::GET, "/v1/sessions/nope")
                .header("origin", "https://evil.example"),
        )
        .await;
    assert_eq!(denied.header("access-control-allow-origin"), "");

    // Without an Origin header nothing CORS is added.
    let plain = shop.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(plain.header("access-control-allow-origin"), "");
    assert_eq!(plain.header("access-control-expose-headers"), "");
}

#[tokio::test]
async fn a_bad_origin_in_the_config_names_its_field() {
    let toml = Tenant::new("shop")
        .key(SHOP)
        .setting("cors_origins", "[\"https://shop.example/app\"]")
        .toml();
    let err = match TestServer::try_start(Backend::Memory, &toml) {
        Ok(_) => panic!("the server started with a bad origin"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("tenants.shop.cors_origins[0]"), "{err}");
    assert!(err.contains("scheme, host and port only"), "{err}");
}
