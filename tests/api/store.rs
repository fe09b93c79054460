//! The store conformance suite: the queue's guarantees — fenced leases, attempts, batched
//! claims, `queue` order, the `reject` race — asserted on the `Store` traits, each test stamped
//! once per backend (`store::sqlite::<test>`, `store::postgres::<test>`) so a failure names its
//! backend and `cargo test --test api store::sqlite` selects one. SQLite runs on a real file
//! always; PostgreSQL runs whenever `WHARF_TEST_DATABASE_URL` is set (each test in a schema of
//! its own, so tests run in parallel), and without it is skipped aloud, or fails under CI
//! ([`crate::helpers::postgres_url`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use wharf::fleet::{Concurrency, FleetDoc, Policy};
use wharf::store::sqlite::SqliteStore;
use wharf::store::{
    Admission, Finish, Ingest, Lease, Page, QueueStats, RequestRecord, RunFilter, RunStatus, Store,
    StoreError, StoreResult,
};

const NODE: &str = "node-a";
const FAR: i64 = i64::MAX / 2;

/// A SQLite store on a fresh file; the folder lives as long as the store is used.
async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("wharf.db"))
        .await
        .unwrap();
    (dir, Arc::new(sqlite))
}

/// A new, empty schema in `WHARF_TEST_DATABASE_URL`'s database: its name and the database URL.
/// `None` when no database is named and that is allowed ([`crate::helpers::postgres_url`]).
pub async fn fresh_schema(prefix: &str) -> Option<(String, String)> {
    use sqlx::Connection;
    let url = crate::helpers::postgres_url()?;
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

/// A PostgreSQL store in a fresh schema, when a database is named.
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

/// Stamps each named test once per backend, as `sqlite::<name>` and `postgres::<name>`.
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, store) = super::sqlite().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(store) = super::postgres().await else {
                        return;
                    };
                    super::$name(store).await;
                }
            )*
        }
    };
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

fn call(fleet_id: Uuid, policy: Policy) -> Ingest {
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
        policy: Concurrency::of(policy),
        concurrency_key: None,
        call_key: None,
        rate_limit: None,
        max_queued: None,
    }
}

/// Enqueues `n` calls one transaction each; returns their run ids in arrival order.
async fn enqueue(store: &Arc<dyn Store>, fleet_id: Uuid, policy: Policy, n: usize) -> Vec<Uuid> {
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
        deliveries: Vec::new(),
    }
}

async fn finish_one(store: &Arc<dyn Store>, lease: Lease) -> StoreResult<bool> {
    Ok(store
        .finish(vec![(lease, done(RunStatus::Succeeded))])
        .await?[0])
}

async fn a_claim_takes_many_runs_oldest_first_with_their_requests_and_fleet(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    let ids = enqueue(&store, f, Policy::Parallel, 10).await;
    let claimed = store.claim(NODE, 4, FAR).await.unwrap();
    let got: Vec<Uuid> = claimed.iter().map(|c| c.run.id).collect();
    assert_eq!(got, ids[..4].to_vec());
    for c in &claimed {
        assert_eq!(c.run.status, RunStatus::Running);
        assert_eq!(c.run.attempt, 1);
        assert_eq!(c.request.body, b"{}");
        assert_eq!(c.fleet.as_ref().map(|f| f.id), Some(f));
    }
    let tokens: std::collections::HashSet<i64> = claimed.iter().map(|c| c.lease.token).collect();
    assert_eq!(tokens.len(), 4, "every claim has its own token");
    let rest = store.claim(NODE, 100, FAR).await.unwrap();
    assert_eq!(rest.len(), 6);
    assert!(store.claim(NODE, 100, FAR).await.unwrap().is_empty());
}

async fn a_stale_holder_cannot_renew_progress_or_finish(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    let [id] = enqueue(&store, f, Policy::Parallel, 1).await[..] else {
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

async fn renewal_keeps_leases_from_expiring(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    enqueue(&store, f, Policy::Parallel, 3).await;
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

async fn a_run_whose_worker_keeps_dying_fails_after_max_attempts(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    let [id] = enqueue(&store, f, Policy::Parallel, 1).await[..] else {
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
    assert_eq!(run.reason.map(|r| r.as_str()), Some("max_attempts"));
    assert_eq!(run.lost_attempts.len(), 3);
    assert!(run.finished_at.is_some());
}

async fn release_hands_runs_back_without_counting_an_attempt(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    enqueue(&store, f, Policy::Parallel, 2).await;
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

async fn queue_fleets_run_one_at_a_time_in_arrival_order_under_batched_claims(
    store: Arc<dyn Store>,
) {
    let serial = fleet(&store, "queue").await;
    let parallel = fleet(&store, "parallel").await;
    let order = enqueue(&store, serial, Policy::Queue, 5).await;
    let others = enqueue(&store, parallel, Policy::Parallel, 3).await;
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

async fn queue_order_survives_a_lost_worker(store: Arc<dyn Store>) {
    let serial = fleet(&store, "queue").await;
    let order = enqueue(&store, serial, Policy::Queue, 3).await;
    let c = store.claim(NODE, 10, 1_000).await.unwrap();
    assert_eq!(c.len(), 1);
    store.requeue_expired(2_000, false, 3).await.unwrap();
    let c = store.claim(NODE, 10, FAR).await.unwrap();
    assert_eq!(
        c.iter().map(|c| c.run.id).collect::<Vec<_>>(),
        vec![order[0]]
    );
}

async fn reject_is_decided_inside_the_committing_transaction(store: Arc<dyn Store>) {
    let f = fleet(&store, "reject").await;
    // Two calls committed together: the second sees the first.
    let got = store
        .enqueue(vec![call(f, Policy::Reject), call(f, Policy::Reject)])
        .await
        .unwrap();
    assert_eq!(got, vec![Admission::Queued, Admission::Busy]);
    let c = store.claim(NODE, 10, FAR).await.unwrap();
    assert_eq!(c.len(), 1, "the refused call stored nothing");
    assert_eq!(
        store.enqueue(vec![call(f, Policy::Reject)]).await.unwrap(),
        vec![Admission::Busy],
        "still busy while running"
    );
    assert!(finish_one(&store, c[0].lease).await.unwrap());
    assert_eq!(
        store.enqueue(vec![call(f, Policy::Reject)]).await.unwrap(),
        vec![Admission::Queued]
    );
}

async fn a_claimed_run_of_a_deleted_fleet_comes_without_its_fleet(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    enqueue(&store, f, Policy::Parallel, 1).await;
    store.delete_fleet(f).await.unwrap();
    let c = store.claim(NODE, 1, FAR).await.unwrap();
    assert_eq!(c.len(), 1);
    assert!(c[0].fleet.is_none());
}

/// A call with a key, a rate limit or a concurrency key set by `tweak`.
fn call_with(fleet_id: Uuid, policy: Policy, tweak: impl FnOnce(&mut Ingest)) -> Ingest {
    let mut c = call(fleet_id, policy);
    tweak(&mut c);
    c
}

async fn enqueue_one(store: &Arc<dyn Store>, c: Ingest) -> Admission {
    store.enqueue(vec![c]).await.unwrap().remove(0)
}

async fn a_repeated_key_gets_the_first_calls_ids_and_stores_nothing(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    let other = fleet(&store, "parallel").await;
    let keyed = |f, k: &str| {
        let k = k.to_owned();
        call_with(f, Policy::Parallel, move |c| c.call_key = Some(k))
    };
    let first = keyed(f, "idempotency-key:a");
    let (request_id, run_id) = (first.request.id, first.run_id);
    assert_eq!(enqueue_one(&store, first).await, Admission::Queued);
    let dup = Admission::Duplicate { request_id, run_id };
    // Alone, and twice in one batch with a new key: one run per key.
    assert_eq!(
        enqueue_one(&store, keyed(f, "idempotency-key:a")).await,
        dup
    );
    let b1 = keyed(f, "idempotency-key:b");
    let b_ids = (b1.request.id, b1.run_id);
    let got = store
        .enqueue(vec![
            b1,
            keyed(f, "idempotency-key:b"),
            keyed(other, "idempotency-key:a"),
        ])
        .await
        .unwrap();
    assert_eq!(got[0], Admission::Queued);
    assert_eq!(
        got[1],
        Admission::Duplicate {
            request_id: b_ids.0,
            run_id: b_ids.1
        }
    );
    assert_eq!(got[2], Admission::Queued, "keys are scoped to their fleet");
    assert_eq!(store.claim(NODE, 100, FAR).await.unwrap().len(), 3);
    // Keys past 24 h are pruned; the key then names a new call.
    let later = wharf::util::now_ms() + 25 * 3600 * 1000;
    let pruned = store.prune(None, later, 500).await.unwrap();
    assert_eq!(pruned.keys, 3);
    assert_eq!(pruned.runs, 0, "history is kept when no age is given");
    assert_eq!(
        enqueue_one(&store, keyed(f, "idempotency-key:a")).await,
        Admission::Queued
    );
}

async fn the_rate_limit_counts_only_queued_calls_and_its_state_is_pruned_once_spent(
    store: Arc<dyn Store>,
) {
    use wharf::admission::RateLimit;
    let f = fleet(&store, "reject").await;
    let limited = |key: Option<&str>| {
        let key = key.map(str::to_owned);
        call_with(f, Policy::Reject, move |c| {
            c.rate_limit = Some(RateLimit {
                requests: 2,
                per_seconds: 3600,
            });
            c.call_key = key;
        })
    };
    let first = limited(Some("idempotency-key:x"));
    let first_ids = (first.request.id, first.run_id);
    assert_eq!(enqueue_one(&store, first).await, Admission::Queued);
    // Refused by the policy, and a repeat: neither uses the limit.
    assert_eq!(enqueue_one(&store, limited(None)).await, Admission::Busy);
    assert!(matches!(
        enqueue_one(&store, limited(Some("idempotency-key:x"))).await,
        Admission::Duplicate { request_id, run_id } if (request_id, run_id) == first_ids
    ));
    let c = store.claim(NODE, 10, FAR).await.unwrap();
    assert!(finish_one(&store, c[0].lease).await.unwrap());
    assert_eq!(enqueue_one(&store, limited(None)).await, Admission::Queued);
    let c = store.claim(NODE, 10, FAR).await.unwrap();
    assert!(finish_one(&store, c[0].lease).await.unwrap());
    // Two admitted in the hour: the third waits for a refill, half the window away.
    match enqueue_one(&store, limited(None)).await {
        Admission::RateLimited { retry_after_ms } => assert!(
            (1_790_000..=1_800_000).contains(&retry_after_ms),
            "{retry_after_ms}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let now = wharf::util::now_ms();
    assert_eq!(
        store.prune(None, now, 500).await.unwrap().rate_states,
        0,
        "still counting"
    );
    let spent = store.prune(None, now + 3_601_000, 500).await.unwrap();
    assert_eq!(spent.rate_states, 1);
    assert_eq!(enqueue_one(&store, limited(None)).await, Admission::Queued);
}

async fn keyed_policies_apply_per_key_value(store: Arc<dyn Store>) {
    let serial = fleet(&store, "queue").await;
    let on = |f, policy, key: &str| {
        let key = key.to_owned();
        call_with(f, policy, move |c| c.concurrency_key = Some(key))
    };
    let a1 = on(serial, Policy::Queue, "a");
    let a2 = on(serial, Policy::Queue, "a");
    let b1 = on(serial, Policy::Queue, "b");
    let ids = [a1.run_id, a2.run_id, b1.run_id];
    let got = store.enqueue(vec![a1, a2, b1]).await.unwrap();
    assert!(got.iter().all(|a| *a == Admission::Queued));
    let first: Vec<_> = store.claim(NODE, 100, FAR).await.unwrap();
    let claimed: Vec<Uuid> = first.iter().map(|c| c.run.id).collect();
    assert_eq!(claimed, vec![ids[0], ids[2]], "one run per key at a time");
    assert!(store.claim(NODE, 100, FAR).await.unwrap().is_empty());
    // Ending b's run releases nothing of a; ending a's releases a's next.
    assert!(finish_one(&store, first[1].lease).await.unwrap());
    assert!(store.claim(NODE, 100, FAR).await.unwrap().is_empty());
    assert!(finish_one(&store, first[0].lease).await.unwrap());
    let next = store.claim(NODE, 100, FAR).await.unwrap();
    assert_eq!(
        next.iter().map(|c| c.run.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );

    let reject = fleet(&store, "reject").await;
    assert_eq!(
        enqueue_one(&store, on(reject, Policy::Reject, "a")).await,
        Admission::Queued
    );
    assert_eq!(
        enqueue_one(&store, on(reject, Policy::Reject, "a")).await,
        Admission::Busy
    );
    assert_eq!(
        enqueue_one(&store, on(reject, Policy::Reject, "b")).await,
        Admission::Queued
    );
    assert_eq!(
        enqueue_one(&store, call(reject, Policy::Reject)).await,
        Admission::Queued,
        "runs without a key are their own group"
    );
}

async fn pruning_deletes_old_finished_runs_and_their_requests_only(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    let ids = enqueue(&store, f, Policy::Parallel, 4).await;
    // Two finish, one runs, one stays queued.
    let claimed = store.claim(NODE, 3, FAR).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let done: Vec<_> = claimed[..2]
        .iter()
        .map(|c| (c.lease, done(RunStatus::Failed)))
        .collect();
    assert_eq!(store.finish(done).await.unwrap(), vec![true, true]);
    let now = wharf::util::now_ms();
    let none = store.prune(Some(now - 60_000), now, 500).await.unwrap();
    assert_eq!(
        (none.runs, none.requests),
        (0, 0),
        "nothing is old enough yet"
    );
    // In batches of one: every call deletes at most one row of each kind.
    let first = store.prune(Some(now + 60_000), now, 1).await.unwrap();
    assert_eq!((first.runs, first.requests), (1, 1));
    let second = store.prune(Some(now + 60_000), now, 1).await.unwrap();
    assert_eq!((second.runs, second.requests), (1, 1));
    let third = store.prune(Some(now + 60_000), now, 1).await.unwrap();
    assert_eq!((third.runs, third.requests), (0, 0));
    for id in &ids[..2] {
        assert!(matches!(
            store.run(*id).await,
            Err(wharf::store::StoreError::NotFound(_))
        ));
    }
    for id in &ids[2..] {
        let (run, request) = store.run(*id).await.unwrap();
        assert!(matches!(run.status, RunStatus::Running | RunStatus::Queued));
        assert_eq!(request.id, run.request_id);
    }
}

async fn webhook_settings_are_stored_changed_and_resolved_fresh(store: Arc<dyn Store>) {
    use wharf::admission::{Deduplicate, RateLimit};
    use wharf::store::{WebhookAuth, WebhookChange, WebhookSettings};
    let f = fleet(&store, "parallel").await;
    let limit = RateLimit {
        requests: 1,
        per_seconds: 3600,
    };
    let settings = WebhookSettings {
        rate_limit: Some(limit),
        deduplicate: Some(Deduplicate::GitHub),
    };
    let id = wharf::api::new_webhook_id();
    let hook = store
        .create_webhook(f, &id, &WebhookAuth::None, &settings)
        .await
        .unwrap();
    assert_eq!(hook.settings, settings);
    let target = store.resolve_webhook(&id).await.unwrap().unwrap();
    assert_eq!(target.webhook.settings, settings);
    // Use up the limit, then change it: the new limit starts afresh.
    let limited = || call_with(f, Policy::Parallel, |c| c.rate_limit = Some(limit));
    assert_eq!(enqueue_one(&store, limited()).await, Admission::Queued);
    assert!(matches!(
        enqueue_one(&store, limited()).await,
        Admission::RateLimited { .. }
    ));
    let change = WebhookChange {
        rate_limit: Some(Some(RateLimit {
            requests: 5,
            per_seconds: 60,
        })),
        deduplicate: Some(None),
        auth: None,
    };
    let hook = store.update_webhook(f, &change).await.unwrap();
    assert_eq!(hook.settings.rate_limit.unwrap().requests, 5);
    assert_eq!(hook.settings.deduplicate, None);
    let target = store.resolve_webhook(&id).await.unwrap().unwrap();
    assert_eq!(
        target.webhook.settings, hook.settings,
        "the cache was dropped"
    );
    assert_eq!(enqueue_one(&store, limited()).await, Admission::Queued);
    let only_dedupe = WebhookChange {
        deduplicate: Some(Some(Deduplicate::Header("x-delivery".into()))),
        ..WebhookChange::default()
    };
    let hook = store.update_webhook(f, &only_dedupe).await.unwrap();
    assert_eq!(
        hook.settings.rate_limit.unwrap().requests,
        5,
        "left as it was"
    );
    let missing = store.update_webhook(Uuid::new_v4(), &only_dedupe).await;
    assert!(matches!(
        missing,
        Err(wharf::store::StoreError::NotFound(_))
    ));
}

async fn concurrent_pruners_split_the_work_and_delete_each_row_once(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    enqueue(&store, f, Policy::Parallel, 9).await;
    let done: Vec<_> = store
        .claim(NODE, 9, FAR)
        .await
        .unwrap()
        .iter()
        .map(|c| (c.lease, done(RunStatus::Succeeded)))
        .collect();
    store.finish(done).await.unwrap();
    let cutoff = wharf::util::now_ms() + 60_000;
    let (mut runs, mut requests) = (0, 0);
    loop {
        let passes = (0..3).map(|_| store.prune(Some(cutoff), cutoff, 2));
        let pruned = futures::future::try_join_all(passes).await.unwrap();
        let (r, q): (u64, u64) = pruned
            .iter()
            .fold((0, 0), |(r, q), p| (r + p.runs, q + p.requests));
        if r + q == 0 {
            break;
        }
        (runs, requests) = (runs + r, requests + q);
    }
    assert_eq!((runs, requests), (9, 9));
}

fn vessel_run(name: &str, status: wharf::sandbox::VesselStatus) -> wharf::store::VesselRun {
    wharf::store::VesselRun::not_run(
        name,
        wharf::sandbox::VesselOutcome::not_run(status, None, None),
    )
}

async fn cancel_ends_queued_runs_flags_running_ones_and_refuses_ended_ones(store: Arc<dyn Store>) {
    use wharf::sandbox::VesselStatus;
    use wharf::store::CancelOutcome;
    let f = fleet(&store, "queue").await;
    let ids = enqueue(&store, f, Policy::Queue, 3).await;
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
    assert_eq!(run.reason.map(|r| r.as_str()), Some("cancelled"));
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
    finish.reason = Some(wharf::store::RunReason::Cancelled);
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

async fn a_cancelled_active_run_of_a_queue_fleet_releases_the_next(store: Arc<dyn Store>) {
    let f = fleet(&store, "queue").await;
    let ids = enqueue(&store, f, Policy::Queue, 2).await;
    // The first is queued and claimable (not held); cancelling it lets the second go.
    store.cancel(ids[0], &[]).await.unwrap();
    let next = store.claim(NODE, 10, FAR).await.unwrap();
    assert_eq!(
        next.iter().map(|c| c.run.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
}

async fn replay_queues_a_new_run_of_the_same_request_under_the_policy(store: Arc<dyn Store>) {
    use wharf::sandbox::VesselStatus;
    use wharf::store::Replay;
    let f = fleet(&store, "reject").await;
    let [source] = enqueue(&store, f, Policy::Reject, 1).await[..] else {
        panic!()
    };
    let replay = |run_id| Replay {
        source,
        run_id,
        resumed_from: Some("v".into()),
        carried: vec![vessel_run("w", VesselStatus::Succeeded)],
        policy: Policy::Reject,
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

fn replay_missing() -> wharf::store::Replay {
    wharf::store::Replay {
        source: Uuid::now_v7(),
        run_id: Uuid::now_v7(),
        resumed_from: None,
        carried: Vec::new(),
        policy: Policy::Parallel,
    }
}

async fn progress_of_a_lost_attempt_reaches_the_next_claim(store: Arc<dyn Store>) {
    use wharf::sandbox::VesselStatus;
    let f = fleet(&store, "parallel").await;
    let [id] = enqueue(&store, f, Policy::Parallel, 1).await[..] else {
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

/// Walks a list page by page (`limit` each) through `next`, which lists one page after a cursor;
/// asserts that the pages join into `whole` with nothing repeated or left out.
async fn walk<T: Clone + PartialEq + std::fmt::Debug, F, Fut>(
    whole: &[T],
    limit: usize,
    id: impl Fn(&T) -> Uuid,
    next: F,
) where
    F: Fn(Option<Uuid>) -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = next(before).await;
        assert!(page.len() <= limit);
        seen.extend(page.iter().cloned());
        if page.len() < limit {
            break;
        }
        before = page.last().map(&id);
    }
    assert_eq!(seen, whole, "pages join into the whole list, in order");
}

fn page(limit: u32, before: Option<Uuid>, name: Option<&str>) -> Page {
    Page {
        limit,
        before,
        name: name.map(str::to_owned),
    }
}

async fn orgs_and_projects_page_newest_first_and_filter_on_names(store: Arc<dyn Store>) {
    for i in 0..7 {
        let name = if i % 3 == 0 { "same" } else { "other" };
        store.create_org(name).await.unwrap();
    }
    let all = store.orgs(&page(500, None, None)).await.unwrap();
    assert_eq!(all.len(), 7);
    assert!(
        all.windows(2)
            .all(|w| (w[0].created_at, w[0].id) > (w[1].created_at, w[1].id)),
        "newest first: {all:?}"
    );
    walk(
        &all,
        2,
        |o| o.id,
        |b| {
            let s = store.clone();
            async move { s.orgs(&page(2, b, None)).await.unwrap() }
        },
    )
    .await;
    let same = store.orgs(&page(500, None, Some("same"))).await.unwrap();
    assert_eq!(same.len(), 3);
    assert!(same.iter().all(|o| o.name == "same"));
    walk(
        &same,
        1,
        |o| o.id,
        |b| {
            let s = store.clone();
            async move { s.orgs(&page(1, b, Some("same"))).await.unwrap() }
        },
    )
    .await;
    assert_eq!(store.org(all[3].id).await.unwrap(), all[3]);
    assert!(matches!(
        store.org(Uuid::new_v4()).await,
        Err(StoreError::NotFound("org"))
    ));
    assert!(
        store
            .orgs(&page(10, Some(Uuid::new_v4()), None))
            .await
            .unwrap()
            .is_empty(),
        "an unknown cursor gives an empty page"
    );

    let (org, other) = (all[0].id, all[1].id);
    for name in ["a", "b", "a", "c", "d"] {
        store.create_project(org, name).await.unwrap();
    }
    store.create_project(other, "a").await.unwrap();
    let projects = store.projects(org, &page(500, None, None)).await.unwrap();
    assert_eq!(projects.len(), 5);
    assert!(projects.iter().all(|p| p.org_id == org));
    walk(
        &projects,
        2,
        |p| p.id,
        |b| {
            let s = store.clone();
            async move { s.projects(org, &page(2, b, None)).await.unwrap() }
        },
    )
    .await;
    let named = store
        .projects(org, &page(500, None, Some("a")))
        .await
        .unwrap();
    assert_eq!(named.len(), 2, "only this org's projects named a");
    assert_eq!(store.project(named[0].id).await.unwrap(), named[0]);
    assert!(matches!(
        store.project(Uuid::new_v4()).await,
        Err(StoreError::NotFound("project"))
    ));
}

async fn fleets_list_with_webhook_vessels_and_last_run_status(store: Arc<dyn Store>) {
    let org = store.create_org("o").await.unwrap();
    let (p1, p2) = (
        store.create_project(org.id, "p1").await.unwrap().id,
        store.create_project(org.id, "p2").await.unwrap().id,
    );
    let mut ids = Vec::new();
    for (i, project) in [p1, p1, p2, p1, p2].into_iter().enumerate() {
        let doc: FleetDoc = serde_json::from_value(json!({
            "name": if i < 2 { "twin".to_string() } else { format!("f{i}") },
            "vessels": [
                {"name": "first", "kind": "rhai", "source": "1"},
                {"name": "second", "kind": "rhai", "source": "2", "needs": ["first"]}
            ]
        }))
        .unwrap();
        let parsed = doc.parse().unwrap();
        store.put_code(&parsed.code).await.unwrap();
        ids.push(store.create_fleet(project, &parsed.spec).await.unwrap().id);
    }
    store
        .create_webhook(
            ids[0],
            &wharf::api::new_webhook_id(),
            &Default::default(),
            &Default::default(),
        )
        .await
        .unwrap();
    let [run] = enqueue(&store, ids[0], Policy::Parallel, 1).await[..] else {
        panic!()
    };
    let lease = store.claim(NODE, 1, FAR).await.unwrap().remove(0).lease;
    assert_eq!(lease.run_id, run);
    finish_one(&store, lease).await.unwrap();
    enqueue(&store, ids[1], Policy::Parallel, 1).await;

    let all = store.fleets(None, &page(500, None, None)).await.unwrap();
    assert_eq!(all.len(), 5);
    walk(
        &all,
        2,
        |f| f.id,
        |b| {
            let s = store.clone();
            async move { s.fleets(None, &page(2, b, None)).await.unwrap() }
        },
    )
    .await;
    let first = all.iter().find(|f| f.id == ids[0]).unwrap();
    assert_eq!(first.vessels, ["first", "second"]);
    assert_eq!(first.name, "twin");
    assert_eq!((first.project_id, first.org_id), (p1, org.id));
    assert!(
        first
            .webhook_id
            .as_deref()
            .is_some_and(|w| w.starts_with("wh_"))
    );
    assert_eq!(first.last_run_status, Some(RunStatus::Succeeded));
    let second = all.iter().find(|f| f.id == ids[1]).unwrap();
    assert_eq!(
        (second.webhook_id.as_deref(), second.last_run_status),
        (None, Some(RunStatus::Queued))
    );
    assert_eq!(
        all.iter().find(|f| f.id == ids[2]).unwrap().last_run_status,
        None
    );

    let in_p1 = store
        .fleets(Some(p1), &page(500, None, None))
        .await
        .unwrap();
    assert_eq!(in_p1.len(), 3);
    walk(
        &in_p1,
        1,
        |f| f.id,
        |b| {
            let s = store.clone();
            async move { s.fleets(Some(p1), &page(1, b, None)).await.unwrap() }
        },
    )
    .await;
    let twins = store
        .fleets(None, &page(500, None, Some("twin")))
        .await
        .unwrap();
    assert_eq!(twins.len(), 2);
    let f4 = store
        .fleets(Some(p2), &page(500, None, Some("f4")))
        .await
        .unwrap();
    assert_eq!(f4.iter().map(|f| f.id).collect::<Vec<_>>(), [ids[4]]);
    assert!(
        store
            .fleets(Some(p1), &page(500, None, Some("f4")))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn recent_runs_span_fleets_and_queue_stats_count_the_queue(store: Arc<dyn Store>) {
    assert_eq!(store.queue_stats().await.unwrap(), QueueStats::default());
    let (a, b) = (
        fleet(&store, "parallel").await,
        fleet(&store, "parallel").await,
    );
    let mut ids = enqueue(&store, a, Policy::Parallel, 3).await;
    ids.extend(enqueue(&store, b, Policy::Parallel, 3).await);
    ids.reverse();
    let stats = store.queue_stats().await.unwrap();
    assert_eq!(stats.queued, 6);
    let (oldest, _) = store.run(*ids.last().unwrap()).await.unwrap();
    assert_eq!(stats.oldest_queued_at, Some(oldest.created_at));

    let lease = store.claim(NODE, 1, FAR).await.unwrap().remove(0).lease;
    store
        .finish(vec![(lease, done(RunStatus::Failed))])
        .await
        .unwrap();
    assert_eq!(store.queue_stats().await.unwrap().queued, 5);

    let filter = |limit, before, status| RunFilter {
        status,
        limit,
        before,
    };
    let all = store.recent_runs(&filter(500, None, None)).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    walk(
        &all.iter().map(|r| r.id).collect::<Vec<_>>(),
        4,
        |id| *id,
        |b| {
            let s = store.clone();
            async move {
                s.recent_runs(&filter(4, b, None))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id)
                    .collect()
            }
        },
    )
    .await;
    let failed = store
        .recent_runs(&filter(500, None, Some(RunStatus::Failed)))
        .await
        .unwrap();
    assert_eq!(
        failed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [lease.run_id]
    );
}

async fn api_keys_are_found_by_hash_listed_touched_and_revoked(store: Arc<dyn Store>) {
    let org = store.create_org("keys").await.unwrap();
    let id = store
        .create_api_key(org.id, "hash-one", "wharf_key_abcdef")
        .await
        .unwrap();
    let found = store.api_key("hash-one").await.unwrap().unwrap();
    assert_eq!((found.id, found.org_id), (id, org.id));
    assert!(store.api_key("hash-two").await.unwrap().is_none());
    store.touch_api_keys(&[(id, 5_000)]).await.unwrap();
    // An older time never moves it back.
    store.touch_api_keys(&[(id, 4_000)]).await.unwrap();
    let listed = store.api_keys(org.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].prefix.as_deref(), Some("wharf_key_abcdef"));
    assert_eq!(listed[0].last_used_at, Some(5_000));
    assert!(listed[0].revoked_at.is_none());
    store.revoke_api_key(id).await.unwrap();
    assert!(
        store.api_key("hash-one").await.unwrap().is_none(),
        "the cached key was dropped"
    );
    assert!(
        store.api_keys(org.id).await.unwrap()[0]
            .revoked_at
            .is_some()
    );
    assert!(matches!(
        store.api_keys(Uuid::new_v4()).await,
        Err(wharf::store::StoreError::NotFound(_))
    ));
}

async fn a_rotation_with_grace_keeps_the_old_id_resolving_and_a_later_one_drops_it(
    store: Arc<dyn Store>,
) {
    use wharf::store::{WebhookAuth, WebhookSettings};
    let f = fleet(&store, "parallel").await;
    let first = wharf::api::new_webhook_id();
    store
        .create_webhook(f, &first, &WebhookAuth::Bearer, &WebhookSettings::default())
        .await
        .unwrap();
    let second = wharf::api::new_webhook_id();
    let hook = store
        .rotate_webhook_keeping(f, &second, Some(123_456))
        .await
        .unwrap();
    assert_eq!(hook.id, second);
    assert_eq!(hook.previous_id.as_deref(), Some(first.as_str()));
    assert_eq!(hook.previous_until, Some(123_456));
    assert_eq!(hook.auth, WebhookAuth::Bearer);
    let old = store.resolve_webhook(&first).await.unwrap().unwrap();
    assert_eq!(old.webhook.id, second, "the old id resolves to the webhook");
    let third = wharf::api::new_webhook_id();
    let hook = store.rotate_webhook(f, &third).await.unwrap();
    assert_eq!(hook.previous_id, None);
    assert!(store.resolve_webhook(&first).await.unwrap().is_none());
    assert!(store.resolve_webhook(&second).await.unwrap().is_none());
    assert!(store.resolve_webhook(&third).await.unwrap().is_some());
}

// ---- the outbox ----------------------------------------------------------------------------

fn new_delivery(fleet_id: Uuid, destination: &str, batch: u32) -> wharf::store::NewDelivery {
    wharf::store::NewDelivery {
        id: Uuid::now_v7(),
        fleet_id,
        destination: destination.into(),
        batch,
        batches: 3,
        rows: 2,
        request: wharf::store::DeliveryRequest {
            method: "POST".into(),
            url: "http://127.0.0.1:9/hook".into(),
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            sealed_headers: BTreeMap::new(),
            signing_secret: None,
            timeout_ms: 1000,
            max_attempts: 3,
            base_ms: 10,
            max_ms: 100,
            refused: None,
        },
        body: format!("{{\"batch\":{batch}}}"),
    }
}

fn attempt(n: u32, code: Option<u16>) -> wharf::store::DeliveryAttempt {
    wharf::store::DeliveryAttempt {
        attempt: n,
        at: wharf::util::now_ms(),
        status_code: code,
        latency_ms: 5,
        response: Some("r".into()),
        error: None,
        backoff_ms: None,
        retry_in_ms: None,
    }
}

/// Runs a run to its end with `deliveries`; returns the run id.
async fn finish_with(
    store: &Arc<dyn Store>,
    fleet_id: Uuid,
    deliveries: Vec<wharf::store::NewDelivery>,
) -> Uuid {
    let run = enqueue(store, fleet_id, Policy::Parallel, 1).await[0];
    let claimed = store.claim(NODE, 1, FAR).await.unwrap();
    let lease = claimed.iter().find(|c| c.run.id == run).unwrap().lease;
    let mut finish = done(RunStatus::Succeeded);
    finish.deliveries = deliveries;
    assert_eq!(store.finish(vec![(lease, finish)]).await.unwrap(), [true]);
    run
}

async fn deliveries_are_created_with_the_finish_and_only_for_a_held_lease(store: Arc<dyn Store>) {
    use wharf::store::DeliveryStatus;
    let f = fleet(&store, "parallel").await;
    let run = finish_with(
        &store,
        f,
        vec![new_delivery(f, "crm", 1), new_delivery(f, "crm", 2)],
    )
    .await;
    let list = store.run_deliveries(run).await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|d| d.status == DeliveryStatus::Pending && d.body.is_none())
    );
    assert_eq!(list[0].batch, 1);
    assert_eq!(list[0].request.url, "http://127.0.0.1:9/hook");
    assert!(list[0].next_attempt_at.is_some());
    // A finish whose lease is gone writes no deliveries.
    let lost = enqueue(&store, f, Policy::Parallel, 1).await[0];
    let claimed = store.claim(NODE, 1, FAR).await.unwrap();
    let mut stale = claimed[0].lease;
    stale.token += 1;
    let mut finish = done(RunStatus::Succeeded);
    finish.deliveries = vec![new_delivery(f, "crm", 1)];
    assert_eq!(store.finish(vec![(stale, finish)]).await.unwrap(), [false]);
    assert!(store.run_deliveries(lost).await.unwrap().is_empty());
}

async fn delivery_claims_are_fenced_due_only_and_fair_per_destination(store: Arc<dyn Store>) {
    use wharf::store::{AttemptRecord, DeliveryStatus, Verdict};
    let f = fleet(&store, "parallel").await;
    let mut all = Vec::new();
    for b in 1..=3 {
        all.push(new_delivery(f, "slow", b));
    }
    all.push(new_delivery(f, "fast", 1));
    let run = finish_with(&store, f, all).await;
    let now = wharf::util::now_ms();
    // Two per destination at most: both of "slow"'s first two, and "fast"'s one.
    let first = store
        .claim_deliveries(NODE, 10, 2, now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(first.len(), 3, "{first:?}");
    assert_eq!(first.iter().filter(|d| d.destination == "slow").count(), 2);
    assert!(first.iter().all(|d| d.body.is_some() && d.token != 0));
    // Leased ones count: "slow" has two in flight, so nothing more is claimed for it.
    let none = store
        .claim_deliveries("node-b", 10, 2, now, now + 60_000)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    // A retry later: not due yet, so not claimed; fenced: a wrong token writes nothing.
    let d = &first[0];
    let stale = AttemptRecord {
        id: d.id,
        token: d.token + 1,
        attempt: attempt(1, Some(500)),
        verdict: Verdict::Failed,
    };
    assert_eq!(store.record_attempts(vec![stale]).await.unwrap(), [false]);
    let retry = AttemptRecord {
        id: d.id,
        token: d.token,
        attempt: attempt(1, Some(500)),
        verdict: Verdict::RetryAt(now + 3_600_000),
    };
    assert_eq!(store.record_attempts(vec![retry]).await.unwrap(), [true]);
    let again = store
        .claim_deliveries(NODE, 10, 2, now + 1, now + 60_000)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "the third slow batch takes the freed share");
    assert_ne!(again[0].id, d.id);
    // Delivered and failed ones leave the queue with their attempts recorded.
    for (x, verdict) in [
        (&first[1], Verdict::Delivered),
        (&again[0], Verdict::Failed),
    ] {
        let r = AttemptRecord {
            id: x.id,
            token: x.token,
            attempt: attempt(1, Some(200)),
            verdict,
        };
        assert_eq!(store.record_attempts(vec![r]).await.unwrap(), [true]);
    }
    let list = store.run_deliveries(run).await.unwrap();
    let by_id = |id| list.iter().find(|x| x.id == id).unwrap();
    assert_eq!(by_id(first[1].id).status, DeliveryStatus::Delivered);
    assert_eq!(by_id(first[1].id).next_attempt_at, None);
    assert!(by_id(first[1].id).finished_at.is_some());
    assert_eq!(by_id(d.id).attempts.len(), 1);
    assert_eq!(by_id(d.id).attempts[0].status_code, Some(500));
    assert_eq!(by_id(d.id).next_attempt_at, Some(now + 3_600_000));
    // A restart of a single-node store drops every lease: the claimed "fast" one is due again.
    assert_eq!(store.release_deliveries().await.unwrap(), 1);
    let after = store
        .claim_deliveries(NODE, 10, 2, now + 2, now + 60_000)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].destination, "fast");
}

async fn only_a_failed_delivery_can_be_retried_by_hand(store: Arc<dyn Store>) {
    use wharf::store::{AttemptRecord, DeliveryStatus, Verdict};
    let f = fleet(&store, "parallel").await;
    finish_with(&store, f, vec![new_delivery(f, "crm", 1)]).await;
    let now = wharf::util::now_ms();
    let d = store
        .claim_deliveries(NODE, 1, 1, now, now + 60_000)
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(
        store.retry_delivery(d.id, now).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.retry_delivery(Uuid::now_v7(), now).await,
        Err(StoreError::NotFound(_))
    ));
    let r = AttemptRecord {
        id: d.id,
        token: d.token,
        attempt: attempt(1, Some(400)),
        verdict: Verdict::Failed,
    };
    store.record_attempts(vec![r]).await.unwrap();
    let back = store.retry_delivery(d.id, now + 5).await.unwrap();
    assert_eq!(back.status, DeliveryStatus::Pending);
    assert_eq!(back.next_attempt_at, Some(now + 5));
    assert_eq!(back.attempts.len(), 1);
    let claimed = store
        .claim_deliveries(NODE, 1, 1, now + 5, now + 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempts.len(), 1);
}

async fn retention_prunes_the_deliveries_of_pruned_runs(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    let run = finish_with(&store, f, vec![new_delivery(f, "crm", 1)]).await;
    let kept = finish_with(&store, f, vec![new_delivery(f, "crm", 1)]).await;
    let cutoff = wharf::util::now_ms() + 1;
    // Only the first run is old enough: move the second's end past the cutoff by pruning
    // with a limit of one run, oldest first.
    let pruned = store.prune(Some(cutoff), cutoff, 1).await.unwrap();
    assert_eq!(pruned.runs, 1);
    assert_eq!(pruned.deliveries, 1);
    let gone = store.run_deliveries(run).await.unwrap().len()
        + store.run_deliveries(kept).await.unwrap().len();
    assert_eq!(gone, 1, "one run's delivery is left");
}

async fn run_counts_read_the_window_only_and_body_previews_cut_the_body(store: Arc<dyn Store>) {
    let (a, b) = (
        fleet(&store, "parallel").await,
        fleet(&store, "parallel").await,
    );
    let t0 = wharf::util::now_ms();
    enqueue(&store, a, Policy::Parallel, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let t1 = wharf::util::now_ms();
    let later = enqueue(&store, a, Policy::Parallel, 3).await;
    enqueue(&store, b, Policy::Parallel, 1).await;
    let lease = store.claim(NODE, 1, FAR).await.unwrap().remove(0).lease;
    store
        .finish(vec![(lease, done(RunStatus::Failed))])
        .await
        .unwrap();

    let total = |counts: &[wharf::store::RunCount], fleet: Uuid, status: RunStatus| -> u64 {
        counts
            .iter()
            .filter(|c| c.fleet_id == fleet && c.status == status)
            .map(|c| c.count)
            .sum()
    };
    let all = store.run_counts(t0, 3_600_000, None).await.unwrap();
    assert_eq!(total(&all, a, RunStatus::Queued), 4);
    assert_eq!(total(&all, a, RunStatus::Failed), 1, "the oldest, claimed");
    assert_eq!(total(&all, b, RunStatus::Queued), 1);
    assert!(all.iter().all(|c| c.bucket == 0), "{all:?}");
    // From t1 on: only the later runs, in buckets counted from t1.
    let window = store.run_counts(t1, 10, None).await.unwrap();
    assert_eq!(total(&window, a, RunStatus::Queued), 3);
    assert_eq!(total(&window, a, RunStatus::Failed), 0);
    assert!(window.iter().all(|c| c.bucket >= 0), "{window:?}");
    let only_b = store.run_counts(t1, 10, Some(b)).await.unwrap();
    assert_eq!(only_b.iter().map(|c| c.count).sum::<u64>(), 1);
    assert!(only_b.iter().all(|c| c.fleet_id == b));
    let future = store
        .run_counts(wharf::util::now_ms() + 60_000, 1000, None)
        .await
        .unwrap();
    assert!(future.is_empty());

    let preview = store.body_preview(later[0], 1).await.unwrap();
    assert_eq!(preview.bytes, b"{");
    assert_eq!(preview.body_size, 2);
    assert_eq!(
        store.body_preview(later[0], 100).await.unwrap().bytes,
        b"{}"
    );
    assert!(matches!(
        store.body_preview(Uuid::now_v7(), 10).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn session_sign_outs_are_kept_until_they_expire_then_pruned(store: Arc<dyn Store>) {
    let now = wharf::util::now_ms();
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    assert!(!store.session_revoked(&a).await.unwrap());
    store.revoke_session(&a, now + 60_000).await.unwrap();
    store.revoke_session(&a, now + 60_000).await.unwrap(); // twice is no error
    store.revoke_session(&b, now - 1).await.unwrap(); // already expired
    assert!(store.session_revoked(&a).await.unwrap());
    assert!(
        !store.session_revoked(&b).await.unwrap(),
        "an expired mark holds nothing"
    );
    let pruned = store.prune(None, now, 100).await.unwrap();
    assert_eq!(pruned.sessions, 1);
    assert!(store.session_revoked(&a).await.unwrap());
    let pruned = store.prune(None, now + 60_001, 100).await.unwrap();
    assert_eq!(pruned.sessions, 1);
    assert!(!store.session_revoked(&a).await.unwrap());
}

/// A `parallel` fleet in an existing project (so in that project's org).
async fn fleet_in(store: &Arc<dyn Store>, project: Uuid) -> Uuid {
    let doc: FleetDoc = serde_json::from_value(json!({
        "name": "f", "vessels": [{"name": "v", "kind": "rhai", "source": "1"}]
    }))
    .unwrap();
    let parsed = doc.parse().unwrap();
    store.put_code(&parsed.code).await.unwrap();
    store.create_fleet(project, &parsed.spec).await.unwrap().id
}

/// How many of the claimed runs belong to `fleet`.
fn of(claimed: &[wharf::store::Claimed], fleet: Uuid) -> usize {
    claimed.iter().filter(|c| c.run.fleet_id == fleet).count()
}

async fn claims_share_slots_across_fleets_whatever_one_fleets_backlog(store: Arc<dyn Store>) {
    let flooded = fleet(&store, "parallel").await;
    let quiet = fleet(&store, "parallel").await;
    let backlog = enqueue(&store, flooded, Policy::Parallel, 300).await;
    // The flooded fleet holds every slot: one claim at a time, as a busy node claims.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.extend(store.claim(NODE, 1, FAR).await.unwrap());
    }
    assert_eq!(of(&held, flooded), 4);
    let [late] = enqueue(&store, quiet, Policy::Parallel, 1).await[..] else {
        panic!()
    };
    // The next free slot goes to the fleet with nothing running, not to the oldest run.
    let next = store.claim(NODE, 1, FAR).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].run.id,
        late,
        "behind a backlog of {}",
        backlog.len()
    );
    // A lone fleet still fills a whole batch, in arrival order.
    let batch = store.claim(NODE, 8, FAR).await.unwrap();
    let ids: Vec<Uuid> = batch.iter().map(|c| c.run.id).collect();
    assert_eq!(ids, backlog[4..12].to_vec());
}

async fn claims_are_shared_per_org_first_then_per_fleet(store: Arc<dyn Store>) {
    // Org X has two flooded fleets; org Y has one.
    let org = store.create_org("x").await.unwrap();
    let project = store.create_project(org.id, "p").await.unwrap();
    let (x1, x2) = (
        fleet_in(&store, project.id).await,
        fleet_in(&store, project.id).await,
    );
    let y = fleet(&store, "parallel").await;
    enqueue(&store, x1, Policy::Parallel, 20).await;
    enqueue(&store, x2, Policy::Parallel, 20).await;
    enqueue(&store, y, Policy::Parallel, 20).await;
    // One batch: half the slots to each org, X's half shared by its fleets.
    let batch = store.claim(NODE, 8, FAR).await.unwrap();
    assert_eq!(of(&batch, y), 4, "org Y gets as many as org X");
    assert_eq!((of(&batch, x1), of(&batch, x2)), (2, 2));
    // Claims one at a time keep the shares even, counting what is running.
    let mut more = Vec::new();
    for _ in 0..8 {
        more.extend(store.claim(NODE, 1, FAR).await.unwrap());
    }
    assert_eq!(of(&more, y), 4);
    assert_eq!((of(&more, x1), of(&more, x2)), (2, 2));
    // An ended run frees its fleet's share: the next slot goes back to it.
    let y_run = batch.iter().find(|c| c.run.fleet_id == y).unwrap();
    assert!(finish_one(&store, y_run.lease).await.unwrap());
    let next = store.claim(NODE, 1, FAR).await.unwrap();
    assert_eq!(next[0].run.fleet_id, y);
}

async fn a_fleets_backlog_is_capped_inside_the_committing_transaction(store: Arc<dyn Store>) {
    let f = fleet(&store, "parallel").await;
    let other = fleet(&store, "parallel").await;
    let capped = |f, n| call_with(f, Policy::Parallel, |c| c.max_queued = Some(n));
    // One batch: the cap holds within it too.
    let got = store
        .enqueue((0..5).map(|_| capped(f, 3)).collect())
        .await
        .unwrap();
    let full = Admission::Backlogged { max_queued: 3 };
    assert_eq!(got, [vec![Admission::Queued; 3], vec![full; 2]].concat());
    assert_eq!(enqueue_one(&store, capped(f, 3)).await, full);
    assert_eq!(
        enqueue_one(&store, capped(other, 3)).await,
        Admission::Queued,
        "other fleets are unaffected"
    );
    // Only queued runs count: one claimed makes room for one more.
    let c = store.claim(NODE, 1, FAR).await.unwrap();
    assert_eq!(c[0].run.fleet_id, f);
    assert_eq!(enqueue_one(&store, capped(f, 3)).await, Admission::Queued);
    assert_eq!(enqueue_one(&store, capped(f, 3)).await, full);
    // Held runs of a `queue` fleet are queued runs too.
    let serial = fleet(&store, "queue").await;
    let held = |f| call_with(f, Policy::Queue, |c| c.max_queued = Some(2));
    assert_eq!(enqueue_one(&store, held(serial)).await, Admission::Queued);
    assert_eq!(enqueue_one(&store, held(serial)).await, Admission::Queued);
    assert_eq!(
        enqueue_one(&store, held(serial)).await,
        Admission::Backlogged { max_queued: 2 }
    );
    let queued = store.queue_stats().await.unwrap().queued;
    assert_eq!(queued, 3 + 1 + 2, "refused calls stored nothing");
}

// ---- values sealed by earlier versions -------------------------------------------------------

async fn rows_holding_values_sealed_by_an_earlier_version_are_found_and_rewritten(
    store: Arc<dyn Store>,
) {
    use wharf::store::{HmacAuth, SealedSecret, WebhookAuth, WebhookChange};
    let plain = fleet(&store, "parallel").await;
    let in_spec = fleet(&store, "parallel").await;
    let in_hook = fleet(&store, "parallel").await;
    assert!(store.fleets_with_legacy_seals().await.unwrap().is_empty());
    // A destination credential in the document, as an earlier version sealed it.
    let mut doc = store.fleet(in_spec).await.unwrap().spec;
    doc.destinations = serde_json::from_value(json!([
        {"name": "crm", "url": "https://crm.example.com/", "method": "POST",
         "authorization": "v1:AAAA", "sync_mode": "insert", "batch_size": 500,
         "timeout_ms": 10000, "max_attempts": 8, "backoff": {"base_ms": 1000, "max_ms": 300000},
         "on": "success"}
    ]))
    .unwrap();
    store.replace_fleet(in_spec, &doc).await.unwrap();
    // A webhook's HMAC secret, likewise.
    store
        .create_webhook(
            in_hook,
            "wh_legacy",
            &WebhookAuth::None,
            &Default::default(),
        )
        .await
        .unwrap();
    let auth = |sealed: &str| {
        WebhookAuth::Hmac(HmacAuth {
            scheme: wharf::auth::hmac::HmacScheme::Github,
            secrets: vec![SealedSecret {
                sealed: sealed.into(),
                created_at: 1,
                expires_at: None,
            }],
        })
    };
    let change = |sealed: &str| WebhookChange {
        auth: Some(auth(sealed)),
        ..Default::default()
    };
    store
        .update_webhook(in_hook, &change("v1:BBBB"))
        .await
        .unwrap();
    let mut found = store.fleets_with_legacy_seals().await.unwrap();
    found.sort();
    let mut want = vec![in_spec, in_hook];
    want.sort();
    assert_eq!(found, want, "not {plain}");
    store
        .update_webhook(in_hook, &change("v2:CCCC"))
        .await
        .unwrap();
    assert_eq!(store.fleets_with_legacy_seals().await.unwrap(), [in_spec]);

    // A pending delivery's sealed header; a delivered one is left alone.
    let mut legacy = new_delivery(plain, "crm", 1);
    legacy
        .request
        .sealed_headers
        .insert("authorization".into(), "v1:DDDD".into());
    let id = legacy.id;
    finish_with(&store, plain, vec![legacy, new_delivery(plain, "crm", 2)]).await;
    let pending = store.deliveries_with_legacy_seals().await.unwrap();
    assert_eq!(pending.iter().map(|d| d.id).collect::<Vec<_>>(), [id]);
    let mut request = pending[0].request.clone();
    request
        .sealed_headers
        .insert("authorization".into(), "v2:EEEE".into());
    store.set_delivery_request(id, &request).await.unwrap();
    assert!(
        store
            .deliveries_with_legacy_seals()
            .await
            .unwrap()
            .is_empty()
    );
    let run = store.run_deliveries(pending[0].run_id).await.unwrap();
    let stored = run.iter().find(|d| d.id == id).unwrap();
    assert_eq!(stored.request.sealed_headers["authorization"], "v2:EEEE");
}

per_backend!(
    a_claim_takes_many_runs_oldest_first_with_their_requests_and_fleet,
    a_stale_holder_cannot_renew_progress_or_finish,
    renewal_keeps_leases_from_expiring,
    a_run_whose_worker_keeps_dying_fails_after_max_attempts,
    release_hands_runs_back_without_counting_an_attempt,
    queue_fleets_run_one_at_a_time_in_arrival_order_under_batched_claims,
    queue_order_survives_a_lost_worker,
    reject_is_decided_inside_the_committing_transaction,
    a_claimed_run_of_a_deleted_fleet_comes_without_its_fleet,
    a_repeated_key_gets_the_first_calls_ids_and_stores_nothing,
    the_rate_limit_counts_only_queued_calls_and_its_state_is_pruned_once_spent,
    keyed_policies_apply_per_key_value,
    pruning_deletes_old_finished_runs_and_their_requests_only,
    webhook_settings_are_stored_changed_and_resolved_fresh,
    concurrent_pruners_split_the_work_and_delete_each_row_once,
    cancel_ends_queued_runs_flags_running_ones_and_refuses_ended_ones,
    a_cancelled_active_run_of_a_queue_fleet_releases_the_next,
    replay_queues_a_new_run_of_the_same_request_under_the_policy,
    progress_of_a_lost_attempt_reaches_the_next_claim,
    orgs_and_projects_page_newest_first_and_filter_on_names,
    fleets_list_with_webhook_vessels_and_last_run_status,
    recent_runs_span_fleets_and_queue_stats_count_the_queue,
    api_keys_are_found_by_hash_listed_touched_and_revoked,
    a_rotation_with_grace_keeps_the_old_id_resolving_and_a_later_one_drops_it,
    deliveries_are_created_with_the_finish_and_only_for_a_held_lease,
    delivery_claims_are_fenced_due_only_and_fair_per_destination,
    only_a_failed_delivery_can_be_retried_by_hand,
    retention_prunes_the_deliveries_of_pruned_runs,
    run_counts_read_the_window_only_and_body_previews_cut_the_body,
    session_sign_outs_are_kept_until_they_expire_then_pruned,
    claims_share_slots_across_fleets_whatever_one_fleets_backlog,
    claims_are_shared_per_org_first_then_per_fleet,
    a_fleets_backlog_is_capped_inside_the_committing_transaction,
    rows_holding_values_sealed_by_an_earlier_version_are_found_and_rewritten,
);
