//! Claiming and completing runs in the SQLite store at 1,000 and at 1,000,000 queued runs: the
//! claim must cost the same however long the queue is (it reads a share of the batch from each
//! fleet with ready runs, never a backlog). Runs are claimed and finished in batches of [`BATCH`], as a node's
//! dispatcher and finisher do.
//!
//! Then the cost of fair claims: the same claims and finishes with the fair order and with the
//! plain oldest-first one, on equal queues of 10,000 runs in one fleet and spread over 20 fleets
//! (their calls queued in turns, as they would arrive).
//!
//! `cargo bench --bench store` (filling the large queue takes a minute or two);
//! `cargo bench --bench store -- fairness` for the fairness comparison alone.

#[path = "measure.rs"]
#[allow(dead_code)]
mod measure;

use std::collections::BTreeMap;
use std::time::Instant;

use wharf::fleet::Concurrency;
use wharf::fleet::FleetDoc;
use wharf::store::sqlite::SqliteStore;
use wharf::store::{Catalog, ClaimOrder, Code, Finish, Ingest, Queue, RequestRecord, RunStatus};

const CLAIMS: usize = 2_000;
/// Runs per claim and per finish call.
const BATCH: usize = 16;

async fn fill(store: &SqliteStore, fleet_id: uuid::Uuid, n: usize) {
    fill_from(store, &[fleet_id], n).await;
}

/// Queues `n` runs, the fleets taking turns call by call, as calls to several fleets arrive.
async fn fill_from(store: &SqliteStore, fleets: &[uuid::Uuid], n: usize) {
    let mut left = n;
    let mut next = 0;
    while left > 0 {
        let k = left.min(1_000);
        let batch: Vec<Ingest> = (0..k)
            .map(|_| Ingest {
                request: RequestRecord {
                    id: uuid::Uuid::now_v7(),
                    fleet_id: {
                        next += 1;
                        fleets[next % fleets.len()]
                    },
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
                max_queued: None,
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

/// A new fleet in a new org of its own.
async fn new_fleet(store: &SqliteStore) -> uuid::Uuid {
    let org = store.create_org("bench").await.unwrap();
    let project = store.create_project(org.id, "bench").await.unwrap();
    let doc: FleetDoc = serde_json::from_value(
        serde_json::json!({"name": "f", "vessels": [{"name": "v", "kind": "rhai", "source": "1"}]}),
    )
    .unwrap();
    let parsed = doc.parse().unwrap();
    store.put_code(&parsed.code).await.unwrap();
    store
        .create_fleet(project.id, &parsed.spec)
        .await
        .unwrap()
        .id
}

async fn open(order: ClaimOrder) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("wharf.db"))
        .await
        .unwrap()
        .with_claim_order(order);
    (dir, store)
}

/// A store claiming in `order`, with `fleets` fleets of `per_fleet` queued runs each (plus
/// what the first round will claim).
async fn spread(
    order: ClaimOrder,
    fleets: usize,
    per_fleet: usize,
) -> (tempfile::TempDir, SqliteStore, Vec<uuid::Uuid>) {
    let (dir, store) = open(order).await;
    let mut ids = Vec::new();
    for _ in 0..fleets {
        ids.push(new_fleet(&store).await);
    }
    top_up(&store, &ids, per_fleet * fleets + CLAIMS).await;
    (dir, store, ids)
}

/// Adds `n` queued runs, spread evenly over the fleets.
async fn top_up(store: &SqliteStore, fleets: &[uuid::Uuid], n: usize) {
    fill_from(store, fleets, n).await;
}

/// Claim + finish throughput with fair claims against oldest-first ones, same queues, rounds
/// alternating so that both see the same machine conditions.
async fn fairness() {
    for fleets in [1, 20] {
        let per_fleet = 10_000 / fleets;
        let (_fd, fair, fair_fleets) = spread(ClaimOrder::Fair, fleets, per_fleet).await;
        let (_od, oldest, oldest_fleets) = spread(ClaimOrder::OldestFirst, fleets, per_fleet).await;
        let (mut f, mut o) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            f.push(claim_rate(&fair).await);
            o.push(claim_rate(&oldest).await);
            top_up(&fair, &fair_fleets, CLAIMS).await;
            top_up(&oldest, &oldest_fleets, CLAIMS).await;
        }
        let (f, o) = (measure::median(f), measure::median(o));
        println!(
            "10,000 queued in {fleets:>2} fleet(s): fair {f:>8.0} runs/s | oldest-first {o:>8.0} runs/s"
        );
        measure::report(
            &format!("fair vs oldest-first claims, {fleets} fleet(s) (per run)"),
            1e9 / f,
            "oldest-first",
            1e9 / o,
            1.5,
        );
    }
}

async fn store_with(queued: usize) -> (tempfile::TempDir, SqliteStore, uuid::Uuid) {
    let (dir, store) = open(ClaimOrder::Fair).await;
    let fleet_id = new_fleet(&store).await;
    let started = Instant::now();
    fill(&store, fleet_id, queued + CLAIMS).await;
    println!(
        "queued {} runs in {:.1} s",
        queued + CLAIMS,
        started.elapsed().as_secs_f64()
    );
    (dir, store, fleet_id)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "fairness") {
        fairness().await;
        return;
    }
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
    fairness().await;
}
