//! Claiming and completing runs in the SQLite store at 1,000 and at 1,000,000 queued runs: the
//! claim must cost the same however long the queue is (it walks the `runs_ready` index). Runs
//! are claimed and finished in batches of [`BATCH`], as a node's dispatcher and finisher do.
//!
//! `cargo bench --bench store` (filling the large queue takes a minute or two).

#[path = "measure.rs"]
#[allow(dead_code)]
mod measure;

use std::collections::BTreeMap;
use std::time::Instant;

use wharf::fleet::Concurrency;
use wharf::fleet::FleetDoc;
use wharf::store::sqlite::SqliteStore;
use wharf::store::{Catalog, Finish, Ingest, Queue, RequestRecord, RunStatus};

const CLAIMS: usize = 2_000;
/// Runs per claim and per finish call.
const BATCH: usize = 16;

async fn fill(store: &SqliteStore, fleet_id: uuid::Uuid, n: usize) {
    let mut left = n;
    while left > 0 {
        let k = left.min(1_000);
        let batch: Vec<Ingest> = (0..k)
            .map(|_| Ingest {
                request: RequestRecord {
                    id: uuid::Uuid::now_v7(),
                    fleet_id,
                    method: "POST".into(),
                    content_type: "application/json".into(),
                    headers: BTreeMap::new(),
                    query: BTreeMap::new(),
                    body: br#"{"ref":"refs/heads/main","repository":{"full_name":"acme/tools"}}"#
                        .to_vec(),
                    body_size: 64,
                    received_at: wharf::util::now_ms(),
                },
                run_id: uuid::Uuid::now_v7(),
                policy: Concurrency::default(),
                concurrency_key: None,
                call_key: None,
                rate_limit: None,
            })
            .collect();
        store.enqueue(batch).await.unwrap();
        left -= k;
    }
}

/// Claims and finishes `CLAIMS` runs, `BATCH` at a time; returns runs per second.
async fn claim_rate(store: &SqliteStore) -> f64 {
    let finish = Finish {
        status: RunStatus::Succeeded,
        variables: BTreeMap::new(),
        vessels: Vec::new(),
        error: None,
        reason: None,
        deliveries: Vec::new(),
    };
    let started = Instant::now();
    for _ in 0..CLAIMS / BATCH {
        let claimed = store.claim("bench", BATCH, i64::MAX).await.unwrap();
        assert_eq!(claimed.len(), BATCH, "queued runs to claim");
        let done = claimed.iter().map(|c| (c.lease, finish.clone())).collect();
        let held = store.finish(done).await.unwrap();
        assert!(held.iter().all(|h| *h));
    }
    CLAIMS as f64 / started.elapsed().as_secs_f64()
}

async fn store_with(queued: usize) -> (tempfile::TempDir, SqliteStore, uuid::Uuid) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("wharf.db"))
        .await
        .unwrap();
    let org = store.create_org("bench").await.unwrap();
    let project = store.create_project(org.id, "bench").await.unwrap();
    let doc: FleetDoc = serde_json::from_value(
        serde_json::json!({"name": "f", "vessels": [{"name": "v", "kind": "rhai", "source": "1"}]}),
    )
    .unwrap();
    let parsed = doc.parse().unwrap();
    store.put_code(&parsed.code).await.unwrap();
    let fleet = store.create_fleet(project.id, &parsed.spec).await.unwrap();
    let started = Instant::now();
    fill(&store, fleet.id, queued + CLAIMS).await;
    println!(
        "queued {} runs in {:.1} s",
        queued + CLAIMS,
        started.elapsed().as_secs_f64()
    );
    (dir, store, fleet.id)
}

#[tokio::main]
async fn main() {
    let (_small_dir, small, small_fleet) = store_with(1_000).await;
    let (_large_dir, large, large_fleet) = store_with(1_000_000).await;
    // Alternate rounds so that both sizes see the same machine conditions.
    let (mut s, mut l) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        s.push(claim_rate(&small).await);
        l.push(claim_rate(&large).await);
        // Top both queues up again so every round starts at the same length.
        fill(&small, small_fleet, CLAIMS).await;
        fill(&large, large_fleet, CLAIMS).await;
    }
    let (s, l) = (measure::median(s), measure::median(l));
    println!("claim + finish at 1,000 queued:      {s:>8.0} runs/s");
    println!("claim + finish at 1,000,000 queued:  {l:>8.0} runs/s");
    measure::report(
        "claim + finish in batches of 16, 1M vs 1k queued (per run)",
        1e9 / l,
        "at 1k",
        1e9 / s,
        1.5,
    );
}
