//! Per-tenant admission over real HTTP: a tenant over its request rate, or
//! with all its in-flight slots taken and its queue full, gets 429
//! problem+json with `Retry-After`, while another tenant on the same host is
//! served. Admission happens before the store, so one backend is enough.

use std::time::Duration;

use serde_json::json;
use sessiond_tests::Backend;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::{TestServer, eventually, scrape};

const LIMITED: &str = "key-limited";
const FREE: &str = "key-free";

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_and_another_is_served() {
    let toml = Tenant::new("limited")
        .key(LIMITED)
        .setting("quota", "{ requests_per_second = 1, burst = 2 }")
        .toml()
        + &Tenant::new("free").key(FREE).toml();
    let server = TestServer::start(Backend::Memory, &toml);
    let limited = server.api(LIMITED);
    let free = server.api(FREE);
    limited.post("/v1/sessions", &json!({})).await.expect(201);
    limited.post("/v1/sessions", &json!({})).await.expect(201);
    let reply = limited.post("/v1/sessions", &json!({})).await;
    let retry_after: u64 = reply.header("retry-after").parse().expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let p = reply.problem(429, "rate-limited");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("requests_per_second"),
        "{p}"
    );
    // Counted by tenant and reason.
    let metrics = scrape(&server.base_url()).await;
    let series = "sessiond_tenant_refusals_total{tenant=\"limited\",reason=\"rate-limited\"} 1";
    assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    // The other tenant's bucket is its own.
    for _ in 0..5 {
        free.post("/v1/sessions", &json!({})).await.expect(201);
    }
    // A token comes back after a second.
    let served = eventually(Duration::from_secs(5), || async {
        (limited.post("/v1/sessions", &json!({})).await.status == 201).then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "the limited tenant was never served again"
    );
}

#[tokio::test]
async fn a_tenant_with_every_slot_taken_gets_429_and_another_is_served() {
    // One request in flight at a time, none queued: while the slow create
    // runs (its plugin sleeps to its deadline), the next one is refused.
    let toml = Tenant::new("limited")
        .key(LIMITED)
        .setting("quota", "{ max_in_flight = 1, max_queued = 0 }")
        .plugin(
            Plugin::new("slow", "hostile")
                .config("mode", "sleep")
                .limit("deadline_ms", 2_000)
                .on_error("allow"),
        )
        .toml()
        + &Tenant::new("free").key(FREE).toml();
    let server = TestServer::start(Backend::Memory, &toml);
    let limited = server.api(LIMITED);
    let free = server.api(FREE);
    // The probe and the slow create race for the one slot; when the probe
    // wins, the create is the one refused, and the round is tried again.
    let mut rounds = 0;
    let (slow, refused) = loop {
        rounds += 1;
        assert!(rounds <= 20, "the slow create never held the slot");
        let slow = tokio::spawn({
            let limited = limited.clone();
            async move { limited.post("/v1/sessions", &json!({})).await.status }
        });
        let refused = eventually(Duration::from_secs(10), || async {
            if slow.is_finished() {
                return Some(None);
            }
            let reply = limited.get("/v1/plugins").await;
            (reply.status == 429).then_some(Some(reply))
        })
        .await
        .expect("the slow create neither ended nor held the slot");
        match refused {
            Some(reply) => break (slow, reply),
            None => assert_eq!(slow.await.unwrap(), 429, "the create lost the race"),
        }
    };
    assert_eq!(refused.header("retry-after"), "1");
    let p = refused.problem(429, "tenant-busy");
    assert!(
        p["detail"].as_str().unwrap().contains("max_in_flight"),
        "{p}"
    );
    // The other tenant is served while the slow request still holds the
    // limited tenant's slot.
    free.post("/v1/sessions", &json!({})).await.expect(201);
    // The metrics show the held slot and the refusal.
    let metrics = scrape(&server.base_url()).await;
    for series in [
        "sessiond_tenant_load{tenant=\"limited\",what=\"requests_in_flight\"} 1",
        "sessiond_tenant_load{tenant=\"free\",what=\"requests_in_flight\"} 0",
        "sessiond_tenant_refusals_total{tenant=\"limited\",reason=\"busy\"}",
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
    assert!(
        !slow.is_finished(),
        "the slow request ended too soon to tell"
    );
    // The slow create is let through by its fail-open plugin.
    assert_eq!(slow.await.unwrap(), 201);
    limited.get("/v1/plugins").await.expect(200);
}

#[tokio::test]
async fn a_quota_below_a_plugins_memory_is_refused_at_start_naming_the_key() {
    let toml = Tenant::new("limited")
        .key(LIMITED)
        .setting("quota", "{ memory_mib = 8 }")
        .plugin(Plugin::new("h", "hostile").config("mode", "ok"))
        .toml();
    let Err(err) = TestServer::try_start(Backend::Memory, &toml) else {
        panic!("the server started with a quota below its plugin's memory");
    };
    let err = format!("{err:#}");
    assert!(err.contains("tenants.limited.quota.memory_mib"), "{err}");
}
