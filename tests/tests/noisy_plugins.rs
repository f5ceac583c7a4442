//! A plugin that floods the log or keeps failing is bounded to its own
//! tenant: its log lines are cut to its log rate (and counted), each failed
//! call writes at most one rate-limited line, every failure kind is counted
//! in `GET /v1/plugins` and the metrics, and a plugin that fails most of its
//! calls is skipped by its circuit breaker. Real host processes, each
//! logging to its own file.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sessiond_tests::cache_dir;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::hosts::Host;
use sessiond_tests::server::{Api, eventually, scrape};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond-host");

fn start(dir: &Path, tenants: &str) -> Host {
    let toml = format!(
        r#"
[server]
listen = "{{listen}}"

[store]
backend = "memory"

[runtime]
cache_dir = "{cache}"
{tenants}"#,
        cache = cache_dir().display(),
    );
    Host::start(BIN, dir, "host", &toml, Duration::from_secs(300))
}

fn attacker(mode: &str) -> Plugin {
    Plugin::new("attacker", "attacker")
        .grants(&["kv"])
        .config("mode", mode)
}

/// The tenant's only plugin, as `GET /v1/plugins` lists it.
async fn listed(api: &Api) -> Value {
    let list = api.get("/v1/plugins").await.expect(200).body;
    list["plugins"][0].clone()
}

/// The host's log lines that name `plugin` of `tenant`.
fn lines_of(host: &Host, tenant: &str, plugin: &str) -> Vec<String> {
    let (tenant, plugin) = (format!("tenant={tenant}"), format!("plugin={plugin}"));
    host.log()
        .lines()
        .filter(|l| l.contains(&tenant) && l.contains(&plugin))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_cut_to_the_plugins_rate_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = Tenant::new("loud")
        .key("key-loud")
        .plugin(
            attacker("log-flood")
                .config("lines", "100")
                .config("line_bytes", "5000")
                .limit("log_burst", 30),
        )
        .toml()
        + &Tenant::new("quiet")
            .key("key-quiet")
            .plugin(attacker("harmless"))
            .toml();
    let host = tokio::task::block_in_place(|| start(dir.path(), &tenants));
    let loud = host.api("key-loud");
    for _ in 0..10 {
        loud.post("/v1/sessions", &json!({})).await.expect(201);
    }
    // The other tenant is not held back by the flood.
    host.api("key-quiet")
        .post("/v1/sessions", &json!({}))
        .await
        .expect(201);

    let written = lines_of(&host, "loud", "attacker");
    // The burst, and the few the rate (5 a second) refilled meanwhile.
    assert!(
        (30..=60).contains(&written.len()),
        "{} lines written of 1000",
        written.len()
    );
    for line in &written {
        assert!(line.len() < 1400, "a {} byte line", line.len());
        assert!(line.contains("more bytes not logged"), "{line}");
    }
    let plugin = listed(&loud).await;
    let dropped = plugin["log_lines_dropped"].as_u64().unwrap();
    assert_eq!(dropped as usize + written.len(), 1000, "{plugin}");
    assert_eq!(plugin["failures"], json!({}));

    let metrics = scrape(&host.base_url()).await;
    let series = format!(
        "sessiond_plugin_log_lines_dropped_total{{tenant=\"loud\",plugin=\"attacker\",line=\"plugin\"}} {dropped}"
    );
    assert!(metrics.contains(&series), "no {series} in:\n{metrics}");

    // After a pause the plugin logs again; each line written says how many
    // were dropped since the one before, so together they account for
    // every line dropped up to the last one written.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    loud.post("/v1/sessions", &json!({})).await.expect(201);
    let after = lines_of(&host, "loud", "attacker");
    assert!(
        after.len() > written.len(),
        "nothing logged after the pause"
    );
    let reported: u64 = after.iter().map(|l| dropped_field(l)).sum();
    assert_eq!(reported, dropped, "{:#?}", &after[written.len() - 1..]);
}

/// The `dropped=` field of a log line.
fn dropped_field(line: &str) -> u64 {
    let at = line.find("dropped=").expect("a dropped field") + "dropped=".len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_calls_are_counted_logged_within_a_rate_and_trip_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let breaker = |p: Plugin| {
        p.circuit("min_calls", 5)
            .circuit("failure_percent", 80)
            .circuit("window_ms", 60_000)
            .circuit("open_ms", 60_000)
            .circuit("max_open_ms", 60_000)
    };
    let tenants = Tenant::new("strict")
        .key("key-strict")
        .plugin(breaker(attacker("invalid-output")))
        .toml()
        + &Tenant::new("lenient")
            .key("key-lenient")
            .plugin(breaker(attacker("invalid-output")).on_error("allow"))
            .toml()
        + &Tenant::new("victim")
            .key("key-victim")
            .plugin(attacker("harmless"))
            .toml();
    let host = tokio::task::block_in_place(|| start(dir.path(), &tenants));

    // Fail-closed: each invalid result refuses the request.
    let strict = host.api("key-strict");
    for _ in 0..5 {
        let p = strict
            .post("/v1/sessions", &json!({}))
            .await
            .problem(403, "plugin-denied");
        assert_eq!(p["kind"], "invalid-output", "{p}");
    }
    let plugin = listed(&strict).await;
    assert_eq!(plugin["failures"], json!({"invalid-output": 5}), "{plugin}");
    assert_eq!(plugin["circuit"]["state"], "open", "{plugin}");
    assert_eq!(plugin["circuit"]["opened"], 1, "{plugin}");
    assert!(plugin["circuit"]["retry_in_ms"].as_u64().unwrap() > 50_000);

    // Open: the plugin is not called at all; on_error still decides.
    let p = strict
        .post("/v1/sessions", &json!({}))
        .await
        .problem(403, "plugin-denied");
    assert_eq!(p["kind"], "circuit-open", "{p}");
    let plugin = listed(&strict).await;
    assert_eq!(
        plugin["failures"],
        json!({"invalid-output": 5, "circuit-open": 1}),
        "{plugin}"
    );
    assert_eq!(plugin["calls"], 6, "{plugin}");

    // Fail-open: the same failures are counted, the requests succeed.
    let lenient = host.api("key-lenient");
    for _ in 0..8 {
        lenient.post("/v1/sessions", &json!({})).await.expect(201);
    }
    let plugin = listed(&lenient).await;
    assert_eq!(
        plugin["failures"],
        json!({"invalid-output": 5, "circuit-open": 3}),
        "{plugin}"
    );

    // Another tenant running the same component is untouched.
    let victim = host.api("key-victim");
    victim.post("/v1/sessions", &json!({})).await.expect(201);
    let plugin = listed(&victim).await;
    assert_eq!(plugin["circuit"]["state"], "closed", "{plugin}");
    assert_eq!(plugin["failures"], json!({}));

    // Each failed call wrote one line naming the plugin and the kind, and
    // the breaker's opening one more.
    let lines = lines_of(&host, "strict", "attacker");
    let failed = lines.iter().filter(|l| l.contains("refusing")).count();
    assert_eq!(failed, 6, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("kind=\"invalid-output\"") || l.contains("kind=invalid-output")),
        "{lines:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("its circuit breaker is open"))
            .count(),
        1,
        "{lines:#?}"
    );
    let metrics = scrape(&host.base_url()).await;
    let series = "sessiond_plugin_failures_total{tenant=\"strict\",plugin=\"attacker\",\
                  hook=\"on-session-start\",kind=\"invalid-output\"} 5";
    assert!(metrics.contains(series), "no {series} in:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_lines_past_their_rate_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // No breaker: every call fails and writes (or drops) its line.
    let tenants = Tenant::new("broken")
        .key("key-broken")
        .plugin(
            attacker("invalid-output")
                .on_error("allow")
                .circuit("min_calls", 0),
        )
        .toml();
    let host = tokio::task::block_in_place(|| start(dir.path(), &tenants));
    let api = host.api("key-broken");
    for _ in 0..60 {
        api.post("/v1/sessions", &json!({})).await.expect(201);
    }
    let plugin = listed(&api).await;
    assert_eq!(
        plugin["failures"],
        json!({"invalid-output": 60}),
        "{plugin}"
    );
    let written = lines_of(&host, "broken", "attacker")
        .into_iter()
        .filter(|l| l.contains("going on"))
        .count();
    let dropped = plugin["failure_lines_dropped"].as_u64().unwrap() as usize;
    // A burst of 20, one a second after it.
    assert!((20..=30).contains(&written), "{written} lines");
    assert_eq!(written + dropped, 60, "{plugin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_defers_end_hooks_instead_of_skipping_them() {
    let dir = tempfile::tempdir().unwrap();
    // The breaker opens once 3 of the plugin's 6 calls (3 starts, 3 ends)
    // failed, and stays open; the skipped start hooks are let through
    // (fail-open), and a job
    // whose hook it skipped is run again after the reclaim time, and after
    // its last delivery goes to the dead-letter list, where the operator
    // sees it, instead of finishing without the hook.
    let tenants = Tenant::new("ends")
        .key("key-ends")
        .plugin(
            attacker("end-panic")
                .on_error("allow")
                .circuit("min_calls", 6)
                .circuit("failure_percent", 50)
                .circuit("window_ms", 600_000)
                .circuit("open_ms", 600_000)
                .circuit("max_open_ms", 600_000),
        )
        .toml();
    let tenants = format!(
        "\n[ends]\npoll_interval_ms = 50\nreclaim_after_ms = 1000\nmax_deliveries = 2\n{tenants}"
    );
    let host = tokio::task::block_in_place(|| start(dir.path(), &tenants));
    let api = host.api("key-ends");
    let end = |n: usize| {
        let api = api.clone();
        async move {
            for _ in 0..n {
                let id = api.create(&json!({})).await["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                api.delete(&format!("/v1/sessions/{id}")).await.expect(204);
            }
        }
    };
    let queue = |api: Api| async move { api.get("/v1/ends").await.expect(200).body };
    // Three hooks run and panic: their jobs are finished (the failures
    // counted), and the breaker opens.
    end(3).await;
    let ran = eventually(Duration::from_secs(20), || async {
        let plugin = listed(&api).await;
        (plugin["failures"]["trap"] == 3).then_some(plugin)
    })
    .await
    .expect("the three end hooks never failed");
    assert_eq!(ran["circuit"]["state"], "open", "{ran}");
    // Two more sessions end while it is open: not skipped but kept, then
    // dead-lettered after their deliveries.
    end(2).await;
    let dead = eventually(Duration::from_secs(30), || async {
        let q = queue(api.clone()).await;
        (q["dead"] == 2).then_some(q)
    })
    .await
    .expect("the deferred end jobs never reached the dead-letter list");
    let why = dead["dead_letters"][0]["why"].as_str().unwrap();
    assert!(why.contains("circuit breaker"), "{dead}");
    assert_eq!(dead["waiting"], 0, "{dead}");
    assert_eq!(dead["claimed"], 0, "{dead}");
    let plugin = listed(&api).await;
    // The skipped start hooks count at once; the deferred end hooks are
    // not failures of a finished job.
    assert_eq!(
        plugin["failures"],
        json!({"trap": 3, "circuit-open": 2}),
        "{plugin}"
    );
}
