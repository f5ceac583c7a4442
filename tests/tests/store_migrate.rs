//! Moving a store to another backend and back: `store::dump` (the JSON
//! lines of `sessiond store export` and `import`) between the embedded,
//! memory and Redis stores (one throwaway redis-server, and a throwaway
//! Redis Cluster), then `sessiond store export` and `import` end to end.
//!
//! Every copy is checked twice: its dump equals the source's line for line,
//! and it behaves as the source did (sessions read back by token hash, user
//! listings, end jobs with their end ids, kv values, audit pages, audit
//! idempotency keys, and the session past its deadline ended by a sweep).
//! The Redis stores of a test keep their keys under a prefix of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use sessiond::session::{ClientInfo, EndReason, Millis, SessionRecord, now_ms};
use sessiond::store::dump::lines::{self, ImportError, ImportReport};
use sessiond::store::dump::{Kind, PAGE_SIZE, StoreDump};
use sessiond::store::embedded::{EmbeddedConfig, EmbeddedStore};
use sessiond::store::memory::MemoryStore;
use sessiond::store::redis::{RedisConfig, RedisStore};
use sessiond::store::{
    CreateLimit, Delivery, EndQueueStats, SessionStore, StoreBackend, WriteOutcome,
};
use sessiond_tests::redis_server::{RedisCluster, RedisServer};

const SEC: Millis = 1000;
const MIN: Millis = 60 * SEC;
const HOUR: Millis = 60 * MIN;
const BIN: &str = env!("CARGO_BIN_EXE_sessiond-host");

static SERVER: OnceLock<RedisServer> = OnceLock::new();
static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();

async fn server() -> &'static RedisServer {
    tokio::task::spawn_blocking(|| SERVER.get_or_init(RedisServer::start))
        .await
        .unwrap()
}

/// A store on the shared redis-server, its keys under `prefix`.
async fn redis(prefix: &str) -> RedisStore {
    let mut config = RedisConfig::new([server().await.url()]);
    config.prefix = prefix.into();
    RedisStore::connect_with(config).await.unwrap()
}

/// A store on the shared three-master Redis Cluster, its keys under `prefix`.
async fn cluster(prefix: &str) -> RedisStore {
    let urls = tokio::task::spawn_blocking(|| CLUSTER.get_or_init(RedisCluster::start).urls())
        .await
        .unwrap();
    let mut config = RedisConfig::new(urls);
    config.cluster = true;
    config.prefix = prefix.into();
    RedisStore::connect_with(config).await.unwrap()
}

fn embedded() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    (dir, store)
}

/// The items of a store's dump, each as its JSON line, sorted.
async fn dump(store: &dyn StoreBackend) -> Vec<String> {
    let mut out = Vec::new();
    lines::export(store, &mut out, now_ms()).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (header, items) = text.split_once('\n').unwrap();
    let header: Value = serde_json::from_str(header).unwrap();
    assert_eq!(header["format"], "sessiond-store");
    assert_eq!(header["version"], 1);
    let mut items: Vec<String> = items.lines().map(str::to_string).collect();
    items.sort();
    items
}

/// Exports `from` and imports the dump into `to`.
async fn copy(
    from: &dyn StoreBackend,
    to: &dyn StoreBackend,
    merge: bool,
    now: Millis,
) -> Result<ImportReport, ImportError> {
    let mut out = Vec::new();
    lines::export(from, &mut out, now).await.unwrap();
    lines::check(&mut out.as_slice()).unwrap();
    lines::import(to, &mut out.as_slice(), merge, now).await
}

fn record(tenant: &str, name: &str, user: Option<&str>, now: Millis) -> SessionRecord {
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    SessionRecord {
        token_hash: format!("{:0>64}", name.replace(|c: char| !c.is_alphanumeric(), "")),
        public_id: format!("pub-{name}"),
        tenant: tenant.to_string(),
        user: user.map(str::to_string),
        roles: vec!["Operator".into()],
        created_at: now - 10 * MIN,
        last_seen_at: now - MIN,
        absolute_expires_at: now + HOUR,
        idle_timeout_ms: 30 * MIN,
        version: 1,
        client: ClientInfo {
            remote_addr: Some("10.0.0.7".into()),
            user_agent: Some("test".into()),
            device: None,
        },
        data,
        plugin_state: BTreeMap::from([("audit-log".to_string(), json!({"seen": [name]}))]),
        idle_warned_at: None,
    }
}

const ACME: &str = "acme";
const EU: &str = "eu:west{1}%";
const SOLO: &str = "solo";

/// What a seeded store holds, to check a copy against.
struct Fixture {
    now: Millis,
    /// The live sessions as last written.
    live: Vec<SessionRecord>,
    /// A session past its deadline that no sweeper took.
    late: SessionRecord,
    /// Each user's listing.
    users: Vec<(String, String, Vec<SessionRecord>)>,
    /// The end ids of every queued job, the claimed one included.
    end_ids: BTreeSet<String>,
    claimed_end_id: String,
    kv: Vec<(String, String, String, String)>,
    audit_ids: BTreeMap<String, Vec<String>>,
    /// Tenant, idempotency key and the audit id it wrote.
    once: Vec<(String, String, String)>,
    /// acme's webhook deliveries waiting in the outbox, by id.
    outbox: Vec<Delivery>,
}

/// Fills `store` with three tenants: sessions (anonymous and of users, of
/// several versions, one past its deadline), end jobs (one claimed), kv
/// (with and without a TTL), audit records and idempotency keys.
async fn seed(store: &dyn StoreBackend) -> Fixture {
    let now = now_ms();
    let mut live = Vec::new();
    for (tenant, name, user) in [
        (ACME, "anon", None),
        (ACME, "alice1", Some("alice")),
        (ACME, "alice2", Some("alice")),
        (ACME, "bob", Some("bob")),
        (EU, "eve", Some("eve:1")),
    ] {
        let r = record(tenant, name, user, now);
        store
            .create(&r, CreateLimit::NONE, false, now)
            .await
            .unwrap();
        live.push(r);
    }
    // Versions 3 and 2.
    store.touch(ACME, &live[1].token_hash, now).await.unwrap();
    live[1] = store
        .touch(ACME, &live[1].token_hash, now)
        .await
        .unwrap()
        .unwrap();
    let mut changed = live[2].clone();
    changed.version = 2;
    changed.data.insert("theme".into(), json!("dark"));
    let WriteOutcome::Written(changed) = store
        .update(&changed.token_hash.clone(), &changed, 1, now)
        .await
        .unwrap()
    else {
        panic!("update failed");
    };
    live[2] = changed;

    let mut late = record(ACME, "late", Some("alice"), now);
    late.created_at = now - 2 * HOUR;
    late.absolute_expires_at = now - MIN;
    store
        .create(&late, CreateLimit::NONE, false, now)
        .await
        .unwrap();

    for (name, reason) in [
        ("ended1", EndReason::Logout),
        ("ended2", EndReason::Revoked),
    ] {
        let r = record(ACME, name, Some("carol"), now);
        store
            .create(&r, CreateLimit::NONE, false, now)
            .await
            .unwrap();
        store
            .remove(ACME, &r.token_hash, reason, true, now)
            .await
            .unwrap()
            .unwrap();
    }
    let claimed = store
        .claim_ends(ACME, "host-a", 1, 30 * SEC, now)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    let kv = [
        (ACME, "perspective", "theme", "dark", None),
        (ACME, "perspective", "recent", "[1,2]", Some(3600)),
        (EU, "p:lug%in", "k:1", "v", Some(600)),
        (SOLO, "perspective", "only", "kv", None),
    ];
    for (tenant, plugin, key, value, ttl) in kv {
        store.kv_set(tenant, plugin, key, value, ttl).await.unwrap();
    }

    let mut once = Vec::new();
    for (tenant, n, key) in [
        (ACME, 0, None),
        (ACME, 1, Some("pub-ended1.x:audit-log:0")),
        (ACME, 2, None),
        (EU, 0, Some("pub-eve.y:audit-log:0")),
    ] {
        let id = store
            .audit_append(
                tenant,
                "audit-log",
                Some("pub-anon"),
                &json!({"n": n}),
                key,
                now,
            )
            .await
            .unwrap();
        if let Some(key) = key {
            once.push((tenant.to_string(), key.to_string(), id));
        }
    }

    // Webhook deliveries: one not tried yet, one failed twice.
    let outbox = vec![
        Delivery {
            id: "msg-1.hook-a".into(),
            message_id: "msg-1".into(),
            url: "https://hooks.example/a".into(),
            body: r#"{"type":"session.ended","data":{"reason":"logout"}}"#.into(),
            created_at: now - MIN,
            due_at: now,
            attempts: 0,
            last_error: None,
        },
        Delivery {
            id: "msg-2.hook-a".into(),
            message_id: "msg-2".into(),
            url: "https://hooks.example/a".into(),
            body: r#"{"type":"session.created"}"#.into(),
            created_at: now - HOUR,
            due_at: now + MIN,
            attempts: 2,
            last_error: Some("the endpoint answered 503 Service Unavailable".into()),
        },
    ];
    assert_eq!(store.outbox_push(ACME, &outbox).await.unwrap(), 2);

    let mut users = Vec::new();
    for (tenant, user) in [
        (ACME, "alice"),
        (ACME, "bob"),
        (ACME, "carol"),
        (EU, "eve:1"),
    ] {
        let listed = store.list_user(tenant, user, now).await.unwrap();
        users.push((tenant.to_string(), user.to_string(), listed));
    }
    let mut audit_ids = BTreeMap::new();
    for tenant in [ACME, EU] {
        audit_ids.insert(tenant.to_string(), audit_page_ids(store, tenant).await);
    }
    let end_ids = dump(store)
        .await
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|item| item["kind"] == "end-job")
        .map(|item| item["end_id"].as_str().unwrap().to_string())
        .collect();
    Fixture {
        now,
        live,
        late,
        users,
        end_ids,
        claimed_end_id: claimed[0].end_id.clone(),
        kv: kv
            .iter()
            .map(|(t, p, k, v, _)| (t.to_string(), p.to_string(), k.to_string(), v.to_string()))
            .collect(),
        audit_ids,
        once,
        outbox,
    }
}

/// Every audit id of a tenant, read two at a time.
async fn audit_page_ids(store: &dyn StoreBackend, tenant: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.audit_page(tenant, after.as_deref(), 2).await.unwrap();
        ids.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

/// Checks that `copy` holds and does what the seeded source did. Claims,
/// appends and sweeps: check a copy only once it has been copied on.
async fn check_copy(copy: &dyn StoreBackend, f: &Fixture) {
    let now = f.now;
    // The outbox, with each delivery's id, webhook-id, attempts and error.
    let (mut held, next) = copy.outbox_page(ACME, None, 100).await.unwrap();
    held.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!((held, next), (f.outbox.clone(), None));
    assert_eq!(copy.outbox_stats(ACME, now).await.unwrap().due, 1);
    for r in &f.live {
        let got = copy.get(&r.tenant, &r.token_hash, now).await.unwrap();
        assert_eq!(got.as_ref(), Some(r), "session {}", r.public_id);
    }
    assert_eq!(copy.get(ACME, &f.late.token_hash, now).await.unwrap(), None);
    for (tenant, user, listed) in &f.users {
        assert_eq!(
            &copy.list_user(tenant, user, now).await.unwrap(),
            listed,
            "{user}"
        );
    }
    for (tenant, plugin, key, value) in &f.kv {
        assert_eq!(
            copy.kv_get(tenant, plugin, key).await.unwrap().as_deref(),
            Some(value.as_str()),
            "{tenant} {plugin} {key}"
        );
    }
    for (tenant, ids) in &f.audit_ids {
        assert_eq!(&audit_page_ids(copy, tenant).await, ids, "{tenant}");
    }
    // An end hook that runs again writes nothing new.
    for (tenant, key, id) in &f.once {
        let again = copy
            .audit_append(
                tenant,
                "audit-log",
                None,
                &json!({"again": 1}),
                Some(key),
                now,
            )
            .await
            .unwrap();
        assert_eq!(&again, id);
        assert_eq!(&audit_page_ids(copy, tenant).await, &f.audit_ids[tenant]);
    }
    // The claimed job waits again, with the same end id as every other.
    assert_eq!(
        copy.end_queue(ACME).await.unwrap(),
        EndQueueStats {
            waiting: f.end_ids.len() as u64,
            claimed: 0
        }
    );
    let jobs = copy
        .claim_ends(ACME, "host-b", 100, 30 * SEC, now)
        .await
        .unwrap();
    let end_ids: BTreeSet<String> = jobs.iter().map(|j| j.end_id.clone()).collect();
    assert_eq!(end_ids, f.end_ids);
    assert!(end_ids.contains(&f.claimed_end_id));
    assert!(jobs.iter().all(|j| !j.reclaimed));
    // The session past its deadline is the sweeper's.
    let expired = copy.take_expired(ACME, now, 100, true).await.unwrap();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].record, f.late);
    assert_eq!(expired[0].reason, EndReason::Expired);
    assert_eq!(copy.end_queue(ACME).await.unwrap().waiting, 1);
}

fn written(report: &ImportReport, kind: Kind) -> u64 {
    report.tally.get(kind).written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_to_redis_and_back() {
    let (_a, source) = embedded();
    let fixture = seed(&source).await;
    let expected = dump(&source).await;
    assert_eq!(
        source.dump_tenants().await.unwrap(),
        [ACME, EU, SOLO].map(String::from)
    );

    let middle = redis("migrate-round-trip").await;
    let report = copy(&source, &middle, false, fixture.now).await.unwrap();
    assert_eq!(written(&report, Kind::Session), 6);
    assert_eq!(written(&report, Kind::EndJob), 2);
    assert_eq!(written(&report, Kind::Kv), 4);
    assert_eq!(written(&report, Kind::Audit), 4);
    assert_eq!(written(&report, Kind::AuditOnce), 2);
    assert_eq!(written(&report, Kind::Outbox), 2);
    assert!(report.misplaced.is_empty());
    assert_eq!(dump(&middle).await, expected);
    assert_eq!(
        middle.dump_tenants().await.unwrap(),
        [ACME, EU, SOLO].map(String::from)
    );

    let (_b, back) = embedded();
    copy(&middle, &back, false, fixture.now).await.unwrap();
    assert_eq!(dump(&back).await, expected);

    check_copy(&middle, &fixture).await;
    check_copy(&back, &fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_to_redis() {
    let source = MemoryStore::new();
    let fixture = seed(&source).await;
    let target = redis("migrate-from-memory").await;
    copy(&source, &target, false, fixture.now).await.unwrap();
    assert_eq!(dump(&target).await, dump(&source).await);
    check_copy(&target, &fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_to_memory() {
    let source = redis("migrate-to-memory").await;
    let fixture = seed(&source).await;
    let target = MemoryStore::new();
    copy(&source, &target, false, fixture.now).await.unwrap();
    assert_eq!(dump(&target).await, dump(&source).await);
    check_copy(&target, &fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_to_redis_cluster() {
    let (_a, source) = embedded();
    let fixture = seed(&source).await;
    let target = cluster("migrate-cluster").await;
    copy(&source, &target, false, fixture.now).await.unwrap();
    assert_eq!(dump(&target).await, dump(&source).await);
    assert_eq!(
        target.dump_tenants().await.unwrap(),
        [ACME, EU, SOLO].map(String::from)
    );
    check_copy(&target, &fixture).await;
}

/// Refuses a target that holds anything; merging keeps what the target
/// holds, writes the rest, and counts audit records behind the target's
/// stream as out of order.
async fn refuses_then_merges(target: &dyn StoreBackend) {
    let source = MemoryStore::new();
    let fixture = seed(&source).await;
    let now = fixture.now;
    let mut mine = fixture.live[0].clone();
    mine.data.insert("kept".into(), json!(true));
    target
        .create(&mine, CreateLimit::NONE, false, now)
        .await
        .unwrap();
    // Later than every exported audit id.
    target
        .audit_append(
            ACME,
            "audit-log",
            None,
            &json!({"mine": 1}),
            None,
            now + HOUR,
        )
        .await
        .unwrap();
    let before = dump(target).await;

    let err = copy(&source, target, false, now).await.unwrap_err();
    assert!(
        matches!(&err, ImportError::NotEmpty(t) if t == &[ACME.to_string()]),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"acme\""), "{err}");
    assert_eq!(
        dump(target).await,
        before,
        "a refused import writes nothing"
    );

    let report = copy(&source, target, true, now).await.unwrap();
    let sessions = report.tally.get(Kind::Session);
    assert_eq!((sessions.written, sessions.exists), (5, 1));
    let audit = report.tally.get(Kind::Audit);
    assert_eq!((audit.written, audit.out_of_order), (1, 3), "{report:?}");
    assert_eq!(report.misplaced.len(), 3);
    assert!(
        report
            .misplaced
            .iter()
            .all(|m| m.tenant == ACME && m.line > 1)
    );
    assert_eq!(written(&report, Kind::EndJob), 2);
    assert_eq!(written(&report, Kind::Kv), 4);
    assert_eq!(
        target.get(ACME, &mine.token_hash, now).await.unwrap(),
        Some(mine.clone()),
        "the target's own session is kept"
    );

    // Again: everything is there already.
    let again = copy(&source, target, true, now).await.unwrap();
    for kind in Kind::ALL {
        assert_eq!(written(&again, kind), 0, "{kind:?}: {again:?}");
    }
    assert_eq!(again.tally.get(Kind::Session).exists, 6);
    assert_eq!(again.tally.get(Kind::EndJob).exists, 2);
    assert_eq!(again.tally.get(Kind::AuditOnce).exists, 2);
    assert_eq!(again.tally.get(Kind::Outbox).exists, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_then_merges_memory() {
    refuses_then_merges(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_then_merges_embedded() {
    let (_dir, store) = embedded();
    refuses_then_merges(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_then_merges_redis() {
    refuses_then_merges(&redis("migrate-merge").await).await;
}

/// A session exported live and imported after its deadline is ended by the
/// target's sweep, with its end job queued.
async fn ended_by_sweep_after_import(target: &dyn StoreBackend) -> SessionRecord {
    let source = MemoryStore::new();
    let now = now_ms();
    let mut r = record("late-import", "short", Some("dana"), now);
    r.absolute_expires_at = now + 2 * SEC;
    source
        .create(&r, CreateLimit::NONE, false, now)
        .await
        .unwrap();
    let later = now + MIN;
    copy(&source, target, false, later).await.unwrap();
    assert_eq!(
        target.get(&r.tenant, &r.token_hash, now).await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        target.get(&r.tenant, &r.token_hash, later).await.unwrap(),
        None
    );
    let expired = target
        .take_expired(&r.tenant, later, 10, true)
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (&expired[0].record, expired[0].reason),
        (&r, EndReason::Expired)
    );
    let jobs = target
        .claim_ends(&r.tenant, "host", 10, 30 * SEC, later)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!((&jobs[0].record, jobs[0].reason), (&r, EndReason::Expired));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_by_sweep_after_import_memory() {
    ended_by_sweep_after_import(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_by_sweep_after_import_embedded() {
    let (_dir, store) = embedded();
    ended_by_sweep_after_import(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_by_sweep_after_import_redis() {
    // Before the sweep: the key of a session imported past its deadline
    // lives a grace period from the import.
    let source = MemoryStore::new();
    let now = now_ms();
    let mut r = record("grace", "past", None, now);
    r.absolute_expires_at = now - MIN;
    source
        .create(&r, CreateLimit::NONE, false, now)
        .await
        .unwrap();
    let target = redis("migrate-grace").await;
    copy(&source, &target, false, now).await.unwrap();
    let key = format!("migrate-grace:{{grace}}:s:{}", r.token_hash);
    let expiry: Millis = server()
        .await
        .command(&["PEXPIRETIME", &key])
        .unwrap()
        .parse()
        .unwrap();
    assert!(expiry >= now + HOUR, "{expiry} < {}", now + HOUR);

    ended_by_sweep_after_import(&redis("migrate-sweep").await).await;
}

// ---------------------------------------------------------------- the CLI

/// Runs the `sessiond` command with `stdin`, away from the environment's
/// overrides.
fn sessiond(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("SESSIOND_CONFIG")
        .env_remove("SESSIOND_REDIS_URL")
        .env_remove("SESSIOND_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config file in `dir` with `store` as its `[store]` table.
fn config(dir: &Path, name: &str, store: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let key = format!("sha256:{}", "0".repeat(64));
    std::fs::write(
        &path,
        format!("[store]\n{store}\n[tenants.acme]\napi_keys = [\"{key}\"]\n"),
    )
    .unwrap();
    path
}

async fn redis_config(dir: &Path, prefix: &str) -> String {
    let url = server().await.url();
    let store = format!("backend = \"redis\"\nurls = [\"{url}\"]\nprefix = \"{prefix}\"\n");
    config(dir, prefix, &store).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_export_then_import_refuse_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let source = redis("cli-a").await;
    seed(&source).await;
    let (a, b) = (
        redis_config(dir.path(), "cli-a").await,
        redis_config(dir.path(), "cli-b").await,
    );
    let file = dir.path().join("dump.jsonl");
    let file = file.to_str().unwrap();

    let out = sessiond(&["store", "export", "--config", &a, "--out", file], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("session: 6 exported"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.starts_with("{\"format\":\"sessiond-store\",\"version\":1,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1 + 6 + 2 + 4 + 4 + 2 + 2);

    let out = sessiond(&["store", "import", "--config", &b, "--in", file], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("audit-once: 2 written")
            && stderr(&out).contains("outbox: 2 written"),
        "{}",
        stderr(&out)
    );
    let target = redis("cli-b").await;
    assert_eq!(dump(&target).await, dump(&source).await);

    let out = sessiond(&["store", "import", "--config", &b, "--in", file], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("already holds data for tenants \"acme\", \"eu:west{1}%\", \"solo\"")
            && err.contains("--merge"),
        "{err}"
    );

    let out = sessiond(
        &["store", "import", "--merge", "--config", &b, "--in", file],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("session: 0 written, 6 skipped (already there)"),
        "{err}"
    );
    assert_eq!(dump(&target).await, dump(&source).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pipes_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let source = redis("cli-pipe-a").await;
    seed(&source).await;
    let a = redis_config(dir.path(), "cli-pipe-a").await;
    let b = redis_config(dir.path(), "cli-pipe-b").await;
    let c = redis_config(dir.path(), "cli-pipe-c").await;

    let exported = sessiond(&["store", "export", "--config", &a], b"");
    assert_eq!(exported.status.code(), Some(0), "{}", stderr(&exported));
    let out = sessiond(&["store", "import", "--config", &b], &exported.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(dump(&redis("cli-pipe-b").await).await, dump(&source).await);

    // A bad line anywhere: nothing is written, and the line is named.
    let text = String::from_utf8(exported.stdout).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.len();
    lines[last - 1] = r#"{"kind":"session","tenant":"acme"}"#;
    let bad = lines.join("\n");
    let out = sessiond(&["store", "import", "--config", &c], bad.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("line {last}: ")),
        "{}",
        stderr(&out)
    );
    assert!(
        redis("cli-pipe-c")
            .await
            .dump_tenants()
            .await
            .unwrap()
            .is_empty()
    );

    for (input, line) in [
        (
            "{\"format\":\"sessiond-store\",\"version\":2}\n",
            "line 1: format version 2",
        ),
        ("not json\n", "line 1: not the first line of a dump"),
        ("", "line 1: the input is empty"),
    ] {
        let out = sessiond(&["store", "import", "--config", &c], input.as_bytes());
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(line), "{}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_memory_store_and_store_failure() {
    let dir = tempfile::tempdir().unwrap();
    let memory = config(dir.path(), "memory", "backend = \"memory\"");
    let memory = memory.to_str().unwrap();
    let out = sessiond(&["store", "export", "--config", memory], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout.clone())
            .unwrap()
            .lines()
            .count(),
        1
    );
    let out = sessiond(&["store", "import", "--config", memory], &out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Nothing listens on port 1.
    let down = config(
        dir.path(),
        "down",
        "backend = \"redis\"\nurls = [\"redis://127.0.0.1:1\"]\noperation_timeout_ms = 500",
    );
    let down = down.to_str().unwrap();
    let out = sessiond(
        &["store", "export", "--config", down, "--out", "x.jsonl"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("opening the store"),
        "{}",
        stderr(&out)
    );
    assert!(
        !Path::new("x.jsonl").exists(),
        "a failed export leaves no file"
    );
    let header = b"{\"format\":\"sessiond-store\",\"version\":1}\n";
    let out = sessiond(&["store", "import", "--config", down], header);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let out = sessiond(&["store", "export", "--config", "/nonexistent.toml"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// Fills `store` with more of each kind than one page holds, over several
/// tenants (so that on a cluster they sit on several nodes).
async fn seed_many(store: &dyn StoreBackend, now: Millis) {
    for t in 0..5 {
        let tenant = format!("many-{t}");
        for n in 0..500 {
            let name = format!("t{t}n{n}");
            let user = format!("user-{}", n % 7);
            let r = record(&tenant, &name, (n % 3 != 0).then_some(user.as_str()), now);
            store
                .create(&r, CreateLimit::NONE, false, now)
                .await
                .unwrap();
            if n % 2 == 0 {
                store
                    .remove(&tenant, &r.token_hash, EndReason::Logout, true, now)
                    .await
                    .unwrap();
            }
            let ttl = (n % 2 == 0).then_some(600);
            store
                .kv_set(&tenant, "p", &format!("k{n}"), "v", ttl)
                .await
                .unwrap();
            let once = format!("end-{name}:audit-log:0");
            let once = (n % 2 == 0).then_some(once.as_str());
            store
                .audit_append(&tenant, "audit-log", None, &json!({"n": n}), once, now)
                .await
                .unwrap();
        }
    }
    // More webhook deliveries than one page holds.
    let deliveries: Vec<Delivery> = (0..PAGE_SIZE + 50)
        .map(|n| Delivery {
            id: format!("msg-{n}.hook"),
            message_id: format!("msg-{n}"),
            url: "https://hooks.example/many".into(),
            body: format!("{{\"n\":{n}}}"),
            created_at: now,
            due_at: now + n as Millis,
            attempts: 0,
            last_error: None,
        })
        .collect();
    store.outbox_push("many-0", &deliveries).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_through_large_stores() {
    let now = now_ms();
    let source = MemoryStore::new();
    seed_many(&source, now).await;
    let expected = dump(&source).await;
    // 5 tenants of 250 sessions, 250 end jobs, 500 kv entries, 500 audit
    // records and 250 idempotency keys, and one tenant's outbox of more
    // deliveries than a page holds.
    const { assert!(PAGE_SIZE < 250) };
    assert_eq!(
        expected.len(),
        5 * (250 + 250 + 500 + 500 + 250) + PAGE_SIZE + 50
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.durability = sessiond::store::embedded::Durability::Off;
    let embedded = EmbeddedStore::open(config).unwrap();
    copy(&source, &embedded, false, now).await.unwrap();
    assert_eq!(dump(&embedded).await, expected);

    let single = redis("migrate-many").await;
    copy(&embedded, &single, false, now).await.unwrap();
    assert_eq!(dump(&single).await, expected);

    let cluster = cluster("migrate-many").await;
    copy(&single, &cluster, false, now).await.unwrap();
    assert_eq!(dump(&cluster).await, expected);
    assert_eq!(cluster.dump_tenants().await.unwrap().len(), 5);

    let back = MemoryStore::new();
    copy(&cluster, &back, false, now).await.unwrap();
    assert_eq!(dump(&back).await, expected);
}
