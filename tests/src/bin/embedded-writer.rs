//! The child process of the embedded store's crash test
//! (`tests/tests/store_embedded.rs`): opens an `EmbeddedStore` in the
//! directory given as its argument and, from several concurrent writers,
//! creates sessions and updates each a few times, printing
//! `ack <token hash> <version>` once each write is acknowledged. It never
//! stops by itself: the test kills it with SIGKILL mid-run.

use std::sync::Arc;

use serde_json::json;
use sessiond::session::{SessionRecord, now_ms};
use sessiond::store::embedded::{EmbeddedConfig, EmbeddedStore};
use sessiond::store::{CreateLimit, CreateOutcome, SessionStore, WriteOutcome};
use sessiond_tests::fixtures;

/// The tenant every session of the test belongs to.
const TENANT: &str = "crash";
const WRITERS: u64 = 8;
/// Versions each session goes through before the writer starts the next.
const VERSIONS: u64 = 5;

fn record(writer: u64, n: u64, now: u64) -> SessionRecord {
    fixtures::session(TENANT)
        .token_hash(format!("{writer:02x}{n:062x}"))
        .public_id(format!("pub-{writer}-{n}"))
        .user(format!("user-{writer}").as_str())
        .roles(&["member"])
        .at(now)
        .lifetime(24 * 3600 * 1000)
        .idle_timeout(3600 * 1000)
        .data(json!({"step": 1}))
        .build()
}

async fn write_forever(store: Arc<EmbeddedStore>, writer: u64) {
    for n in 0.. {
        let now = now_ms();
        let mut current = record(writer, n, now);
        match store.create(&current, CreateLimit::NONE, false, now).await {
            Ok(CreateOutcome::Created { .. }) => {}
            other => panic!("create answered {other:?}"),
        }
        println!("ack {} 1", current.token_hash);
        for version in 2..=VERSIONS {
            let mut next = current.clone();
            next.version = version;
            next.data.insert("step".into(), json!(version));
            match store
                .update(&current.token_hash, &next, version - 1, now)
                .await
            {
                Ok(WriteOutcome::Written(_)) => {}
                other => panic!("update answered {other:?}"),
            }
            println!("ack {} {version}", next.token_hash);
            current = next;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: embedded-writer <data dir>");
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir)).expect("opening the store"));
    println!("ready {}", std::process::id());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write_forever(store.clone(), w)))
        .collect();
    for w in writers {
        w.await.expect("a writer failed");
    }
}
