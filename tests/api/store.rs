//! The store conformance suite: the queue's guarantees — fenced leases, attempts, batched
//! claims, `queue` order, the `reject` race — asserted on the `Store` traits against a real
//! SQLite file always, and against PostgreSQL whenever `WHARF_TEST_DATABASE_URL` is set (each
//! test in a schema of its own, so tests run in parallel).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use wharf::fleet::{Concurrency, FleetDoc};
use wharf::store::sqlite::SqliteStore;
use wharf::store::{
    Admission, Finish, Ingest, Lease, RequestRecord, RunStatus, Store, StoreResult,
};

const NODE: &str = "node-a";
const FAR: i64 = i64::MAX / 2;

/// Every store under test, each on fresh storage.
async fn stores() -> Vec<(tempfile::TempDir, Arc<dyn Store>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("wharf.db"))
        .await
        .unwrap();
    let mut all = vec![(dir, Arc::new(sqlite) as Arc<dyn Store>)];
    if let Some(pg) = postgres().await {
        all.push((tempfile::tempdir().unwrap(), pg));
    }
    all
}

/// A new, empty schema in `WHARF_TEST_DATABASE_URL`'s database, if it is set: its name and the
/// database URL.
pub async fn fresh_schema(prefix: &str) -> Option<(String, String)> {
    use sqlx::Connection;
    let url = std::env::var("WHARF_TEST_DATABASE_URL").ok()?;
    let schema = format!("{prefix}_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("WHARF_TEST_DATABASE_URL accepts connections");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    Some((schema, url))
}

/// A PostgreSQL store in a fresh schema, if `WHARF_TEST_DATABASE_URL` is set.
async fn postgres() -> Option<Arc<dyn Store>> {
    let (schema, url) = fresh_schema("wharf_test").await?;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let store = wharf::store::postgres::PostgresStore::open_with(
        options.options([("search_path", schema.as_str())]),
    )
    .await
    .expect("PostgreSQL store opens");
    Some(Arc::new(store))
}

async fn fleet(store: &Arc<dyn Store>, concurrency: &str) -> Uuid {
    let org = store.create_org("o").await.unwrap();
    let project = store.create_project(org.id, "p").await.unwrap();
    let doc: FleetDoc = serde_json::from_value(json!({
        "name": "f", "concurrency": concurrency,
        "vessels": [{"name": "v", "kind": "rhai", "source": "1"}]
    }))
    .unwrap();
    let parsed = doc.parse().unwrap();
    store.put_code(&parsed.code).await.unwrap();
    store
        .create_fleet(project.id, &parsed.spec)
        .await
        .unwrap()
        .id
}

fn call(fleet_id: Uuid, policy: Concurrency) -> Ingest {
    Ingest {
        request: RequestRecord {
            id: Uuid::now_v7(),
            fleet_id,
            method: "POST".into(),
            content_type: "application/json".into(),
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
            body: b"{}".to_vec(),
            body_size: 2,
            received_at: wharf::util::now_ms(),
        },
        run_id: Uuid::now_v7(),
        policy,
    }
}

/// Enqueues `n` calls one transaction each; returns their run ids in arrival order.
async fn enqueue(
    store: &Arc<dyn Store>,
    fleet_id: Uuid,
    policy: Concurrency,
    n: usize,
) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let c = call(fleet_id, policy);
        ids.push(c.run_id);
        assert_eq!(
            store.enqueue(vec![c]).await.unwrap(),
            vec![Admission::Queued]
        );
    }
    ids
}

fn done(status: RunStatus) -> Finish {
    Finish {
        status,
        variables: BTreeMap::from([("k".to_string(), "v".to_string())]),
        vessels: Vec::new(),
        error: None,
        reason: None,
    }
}

async fn finish_one(store: &Arc<dyn Store>, lease: Lease) -> StoreResult<bool> {
    Ok(store
        .finish(vec![(lease, done(RunStatus::Succeeded))])
        .await?[0])
}

#[tokio::test]
async fn a_claim_takes_many_runs_oldest_first_with_their_requests_and_fleet() {
    for (_dir, store) in stores().await {
        let f = fleet(&store, "parallel").await;
        let ids = enqueue(&store, f, Concurrency::Parallel, 10).await;
        let claimed = store.claim(NODE, 4, FAR).await.unwrap();
        let got: Vec<Uuid> = claimed.iter().map(|c| c.run.id).collect();
        assert_eq!(got, ids[..4].to_vec());
        for c in &claimed {
            assert_eq!(c.run.status, RunStatus::Running);
            assert_eq!(c.run.attempt, 1);
            assert_eq!(c.request.body, b"{}");
            assert_eq!(c.fleet.as_ref().map(|f| f.id), Some(f));
        }
        let tokens: std::collections::HashSet<i64> =
            claimed.iter().map(|c| c.lease.token).collect();
        assert_eq!(tokens.len(), 4, "every claim has its own token");
        let rest = store.claim(NODE, 100, FAR).await.unwrap();
        assert_eq!(rest.len(), 6);
        assert!(store.claim(NODE, 100, FAR).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_stale_holder_cannot_renew_progress_or_finish() {
    for (_dir, store) in stores().await {
        let f = fleet(&store, "parallel").await;
        let [id] = enqueue(&store, f, Concurrency::Parallel, 1).await[..] else {
            panic!()
        };
        let first = store.claim(NODE, 1, 1_000).await.unwrap().remove(0).lease;
        // The lease ran out (its worker stalled); the reaper re-queues, another claim takes it.
        let r = store.requeue_expired(2_000, false, 3).await.unwrap();
        assert_eq!((r.requeued, r.failed), (1, 0));
        let second = store.claim("node-b", 1, FAR).await.unwrap().remove(0);
        assert_eq!(second.run.attempt, 2);
        assert_ne!(second.lease.token, first.token);

        assert!(
            !finish_one(&store, first).await.unwrap(),
            "stale finish refused"
        );
        assert!(!store.progress(first, &BTreeMap::new(), &[]).await.unwrap());
        let lost = store.renew(NODE, &[first], FAR).await.unwrap();
        assert_eq!(lost.lost, vec![first]);
        let (run, _) = store.run(id).await.unwrap();
        assert_eq!(
            run.status,
            RunStatus::Running,
            "the stale holder changed nothing"
        );

        assert!(
            store
                .renew("node-b", &[second.lease], FAR)
                .await
                .unwrap()
                .lost
                .is_empty()
        );
        assert!(
            store
                .progress(second.lease, &BTreeMap::new(), &[])
                .await
                .unwrap()
        );
        assert!(finish_one(&store, second.lease).await.unwrap());
        let (run, _) = store.run(id).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.attempt, 2);
        assert_eq!(run.variables["k"], "v");
        assert_eq!(run.lost_attempts.len(), 1, "{:?}", run.lost_attempts);
        assert_eq!(run.lost_attempts[0]["attempt"], 1);
        assert_eq!(run.lost_attempts[0]["reason"], "node_lost");
        assert_eq!(run.lost_attempts[0]["node"], NODE);
        // A finished run is nobody's to finish again.
        assert!(!finish_one(&store, second.lease).await.unwrap());
    }
}

#[tokio::test]
async fn renewal_keeps_leases_from_expiring() {
    for (_dir, store) in stores().await {
        let f = fleet(&store, "parallel").await;
        enqueue(&store, f, Concurrency::Parallel, 3).await;
        let leases: Vec<Lease> = store
            .claim(NODE, 3, 1_000)
            .await
            .unwrap()
            .iter()
            .map(|c| c.lease)
            .collect();
        assert!(
            store
                .renew(NODE, &leases, 10_000)
                .await
                .unwrap()
                .lost
                .is_empty()
        );
        let r = store.requeue_expired(5_000, false, 3).await.unwrap();
        assert_eq!(r.requeued, 0, "renewed leases are not expired");
        let r = store.requeue_expired(20_000, false, 3).await.unwrap();
        assert_eq!(r.requeued, 3);
    }
}

#[tokio::test]
async fn a_run_whose_worker_keeps_dying_fails_after_max_attempts() {
    for (_dir, store) in stores().await {
        let f = fleet(&store, "parallel").await;
        let [id] = enqueue(&store, f, Concurrency::Parallel, 1).await[..] else {
            panic!()
        };
        for attempt in 1..=3u32 {
            let c = store.claim(NODE, 1, FAR).await.unwrap();
            assert_eq!(c.len(), 1, "attempt {attempt} claimed");
            assert_eq!(c[0].run.attempt, attempt);
            // The node dies; at its next start everything running is dealt with.
            let r = store.requeue_expired(0, true, 3).await.unwrap();
            let expected = if attempt < 3 { (1, 0) } else { (0, 1) };
            assert_eq!((r.requeued, r.failed), expected);
        }
        assert!(store.claim(NODE, 1, FAR).await.unwrap().is_empty());
        let (run, _) = store.run(id).await.unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.reason.as_deref(), Some("max_attempts"));
        assert_eq!(run.lost_attempts.len(), 3);
        assert!(run.finished_at.is_some());
    }
}

#[tokio::test]
async fn release_hands_runs_back_without_counting_an_attempt() {
    for (_dir, store) in stores().await {
        let f = fleet(&store, "parallel").await;
        enqueue(&store, f, Concurrency::Parallel, 2).await;
        let leases: Vec<Lease> = store
            .claim(NODE, 2, FAR)
            .await
            .unwrap()
            .iter()
            .map(|c| c.lease)
            .collect();
        store.release(&leases).await.unwrap();
        let again = store.claim(NODE, 2, FAR).await.unwrap();
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|c| c.run.attempt == 1));
        assert!(
            !finish_one(&store, leases[0]).await.unwrap(),
            "the released claim is dead"
        );
    }
}

#[tokio::test]
async fn queue_fleets_run_one_at_a_time_in_arrival_order_under_batched_claims() {
    for (_dir, store) in stores().await {
        let serial = fleet(&store, "queue").await;
        let parallel = fleet(&store, "parallel").await;
        let order = enqueue(&store, serial, Concurrency::Queue, 5).await;
        let others = enqueue(&store, parallel, Concurrency::Parallel, 3).await;
        let mut seen = Vec::new();
        // Each round claims as much as it can: all the parallel runs at once, but never more
        // than one run of the `queue` fleet, and never the next before the previous ended.
        let first = store.claim(NODE, 100, FAR).await.unwrap();
        let ids: Vec<Uuid> = first.iter().map(|c| c.run.id).collect();
        assert_eq!(ids, [vec![order[0]], others.clone()].concat());
        let mut current = first
            .into_iter()
            .find(|c| c.run.fleet_id == serial)
            .unwrap();
        seen.push(current.run.id);
        loop {
            assert!(
                store.claim(NODE, 100, FAR).await.unwrap().is_empty(),
                "nothing while one runs"
            );
            assert!(finish_one(&store, current.lease).await.unwrap());
            let mut next = store.claim(NODE, 100, FAR).await.unwrap();
            if next.is_empty() {
                break;
            }
            assert_eq!(next.len(), 1);
            current = next.remove(0);
            seen.push(current.run.id);
        }
        assert_eq!(seen, order, "arrival order");
    }
}

#[tokio::test]
async fn queue_order_survives_a_lost_worker() {
    for (_dir, store) in stores().await {
        let serial = fleet(&store, "queue").await;
        let order = enqueue(&store, serial, Concurrency::Queue, 3).await;
        let c = store.claim(NODE, 10, 1_000).await.unwrap();
        assert_eq!(c.len(), 1);
        store.requeue_expired(2_000, false, 3).await.unwrap();
        let c = store.claim(NODE, 10, FAR).await.unwrap();
        assert_eq!(
            c.iter().map(|c| c.run.id).collect::<Vec<_>>(),
            vec![order[0]]
        );
    }
}

#[tokio::test]
async fn reject_is_decided_inside_the_committing_transaction() {
    for (_dir, store) in stores().await {
        let f = fleet(&store, "reject").await;
        // Two calls committed together: the second sees the first.
        let got = store
            .enqueue(vec![
                call(f, Concurrency::Reject),
                call(f, Concurrency::Reject),
            ])
            .await
            .unwrap();
        assert_eq!(got, vec![Admission::Queued, Admission::Busy]);
        let c = store.claim(NODE, 10, FAR).await.unwrap();
        assert_eq!(c.len(), 1, "the refused call stored nothing");
        assert_eq!(
            store
                .enqueue(vec![call(f, Concurrency::Reject)])
                .await
                .unwrap(),
            vec![Admission::Busy],
            "still busy while running"
        );
        assert!(finish_one(&store, c[0].lease).await.unwrap());
        assert_eq!(
            store
                .enqueue(vec![call(f, Concurrency::Reject)])
                .await
                .unwrap(),
            vec![Admission::Queued]
        );
    }
}

#[tokio::test]
async fn a_claimed_run_of_a_deleted_fleet_comes_without_its_fleet() {
    for (_dir, store) in stores().await {
        let f = fleet(&store, "parallel").await;
        enqueue(&store, f, Concurrency::Parallel, 1).await;
        store.delete_fleet(f).await.unwrap();
        let c = store.claim(NODE, 1, FAR).await.unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].fleet.is_none());
    }
}

fn vessel_run(name: &str, status: wharf::sandbox::VesselStatus) -> wharf::store::VesselRun {
    wharf::store::VesselRun::not_run(
        name,
        wharf::sandbox::VesselOutcome::not_run(status, None, None),
    )
}

#[tokio::test]
async fn cancel_ends_queued_runs_flags_running_ones_and_refuses_ended_ones() {
    use wharf::sandbox::VesselStatus;
    use wharf::store::CancelOutcome;
    for (_dir, store) in stores().await {
        let f = fleet(&store, "queue").await;
        let ids = enqueue(&store, f, Concurrency::Queue, 3).await;
        let running = store.claim(NODE, 10, FAR).await.unwrap();
        assert_eq!(running.len(), 1, "a queue fleet runs one at a time");
        // The held second run ends at once, with the vessel runs it is given.
        let cancelled = [vessel_run("v", VesselStatus::Cancelled)];
        assert_eq!(
            store.cancel(ids[1], &cancelled).await.unwrap(),
            CancelOutcome::Cancelled
        );
        let (run, _) = store.run(ids[1]).await.unwrap();
        assert_eq!(run.status, RunStatus::Cancelled);
        assert_eq!(run.reason.as_deref(), Some("cancelled"));
        assert_eq!(run.vessels[0].outcome.status, VesselStatus::Cancelled);
        assert!(run.finished_at.is_some());
        // The running one is flagged for its worker; renewal reports it.
        assert_eq!(
            store.cancel(ids[0], &[]).await.unwrap(),
            CancelOutcome::Requested
        );
        let (run, _) = store.run(ids[0]).await.unwrap();
        assert!(run.cancel_requested);
        let renewal = store.renew(NODE, &[running[0].lease], FAR).await.unwrap();
        assert_eq!(renewal.cancelled, vec![running[0].lease]);
        assert!(renewal.lost.is_empty());
        // Its end releases the third run, not the cancelled second.
        let mut finish = done(RunStatus::Cancelled);
        finish.reason = Some("cancelled".into());
        assert!(
            store
                .finish(vec![(running[0].lease, finish)])
                .await
                .unwrap()[0]
        );
        let next = store.claim(NODE, 10, FAR).await.unwrap();
        assert_eq!(
            next.iter().map(|c| c.run.id).collect::<Vec<_>>(),
            vec![ids[2]]
        );
        assert_eq!(
            store.cancel(ids[0], &[]).await.unwrap(),
            CancelOutcome::Finished(RunStatus::Cancelled)
        );
        assert!(matches!(
            store.cancel(Uuid::now_v7(), &[]).await,
            Err(wharf::store::StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn a_cancelled_active_run_of_a_queue_fleet_releases_the_next() {
    for (_dir, store) in stores().await {
        let f = fleet(&store, "queue").await;
        let ids = enqueue(&store, f, Concurrency::Queue, 2).await;
        // The first is queued and claimable (not held); cancelling it lets the second go.
        store.cancel(ids[0], &[]).await.unwrap();
        let next = store.claim(NODE, 10, FAR).await.unwrap();
        assert_eq!(
            next.iter().map(|c| c.run.id).collect::<Vec<_>>(),
            vec![ids[1]]
        );
    }
}

#[tokio::test]
async fn replay_queues_a_new_run_of_the_same_request_under_the_policy() {
    use wharf::sandbox::VesselStatus;
    use wharf::store::Replay;
    for (_dir, store) in stores().await {
        let f = fleet(&store, "reject").await;
        let [source] = enqueue(&store, f, Concurrency::Reject, 1).await[..] else {
            panic!()
        };
        let replay = |run_id| Replay {
            source,
            run_id,
            resumed_from: Some("v".into()),
            carried: vec![vessel_run("w", VesselStatus::Succeeded)],
            policy: Concurrency::Reject,
        };
        // The source is still queued: `reject` refuses a second active run.
        assert_eq!(
            store.replay(replay(Uuid::now_v7())).await.unwrap(),
            Admission::Busy
        );
        let lease = store.claim(NODE, 1, FAR).await.unwrap().remove(0).lease;
        assert!(finish_one(&store, lease).await.unwrap());
        let new = Uuid::now_v7();
        assert_eq!(store.replay(replay(new)).await.unwrap(), Admission::Queued);
        let (run, request) = store.run(new).await.unwrap();
        let (_, source_request) = store.run(source).await.unwrap();
        assert_eq!(request.id, source_request.id);
        assert_eq!(run.replay_of, Some(source));
        assert_eq!(run.resumed_from.as_deref(), Some("v"));
        assert_eq!(run.status, RunStatus::Queued);
        // The claim hands the carried vessel runs to the executor, and the request body.
        let claimed = store.claim(NODE, 1, FAR).await.unwrap().remove(0);
        assert_eq!(claimed.run.id, new);
        assert_eq!(claimed.run.vessels.len(), 1);
        assert_eq!(claimed.run.vessels[0].name, "w");
        assert_eq!(claimed.request.body, b"{}");
        assert!(matches!(
            store.replay(replay_missing()).await,
            Err(wharf::store::StoreError::NotFound(_))
        ));
    }
}

fn replay_missing() -> wharf::store::Replay {
    wharf::store::Replay {
        source: Uuid::now_v7(),
        run_id: Uuid::now_v7(),
        resumed_from: None,
        carried: Vec::new(),
        policy: Concurrency::Parallel,
    }
}

#[tokio::test]
async fn progress_of_a_lost_attempt_reaches_the_next_claim() {
    use wharf::sandbox::VesselStatus;
    for (_dir, store) in stores().await {
        let f = fleet(&store, "parallel").await;
        let [id] = enqueue(&store, f, Concurrency::Parallel, 1).await[..] else {
            panic!()
        };
        let first = store.claim(NODE, 1, 1_000).await.unwrap().remove(0);
        let recorded = [
            vessel_run("a", VesselStatus::Succeeded),
            vessel_run("b", VesselStatus::Running),
        ];
        assert!(
            store
                .progress(first.lease, &BTreeMap::new(), &recorded)
                .await
                .unwrap()
        );
        store.requeue_expired(2_000, false, 3).await.unwrap();
        let second = store.claim("node-b", 1, FAR).await.unwrap().remove(0);
        assert_eq!(second.run.id, id);
        let got: Vec<(&str, VesselStatus)> = second
            .run
            .vessels
            .iter()
            .map(|v| (v.name.as_str(), v.outcome.status))
            .collect();
        assert_eq!(
            got,
            [("a", VesselStatus::Succeeded), ("b", VesselStatus::Running)]
        );
    }
}
