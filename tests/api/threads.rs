//! Background threads end with their owner: SQLite stores (writer and checkpointer) and vessel
//! pools opened and dropped many times leave the process with the threads it had before.
//!
//! Threads are counted for the whole process (`/proc/self/task`), so the test re-runs itself in
//! a process of its own, where no other test starts or ends threads meanwhile.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wharf::scheduler::{PoolSize, VesselPool};
use wharf::store::sqlite::SqliteStore;

/// Set in the child process, which does the counting.
const CHILD: &str = "WHARF_THREADS_TEST_CHILD";
const TEST: &str = "threads::stores_and_vessel_pools_leave_no_threads_once_dropped";
const ROUNDS: usize = 20;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Waits for the thread count to come back to `baseline`: threads end a moment after their
/// owner is dropped (the checkpointer at its next tick, a pool thread once woken).
fn settles_to(baseline: usize, what: &str) {
    let started = Instant::now();
    while threads() != baseline {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: {} threads, {baseline} before",
            threads()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn open_and_drop_stores(dir: &Path, baseline: usize) {
    for round in 0..ROUNDS {
        let store = SqliteStore::open(&dir.join(format!("{round}.db")))
            .await
            .expect("store opens");
        use wharf::store::Catalog as _;
        store.create_org("o").await.expect("a write commits");
        // The writer and the checkpointer run while the store lives.
        assert!(threads() >= baseline + 2, "round {round}: no store threads");
        drop(store);
    }
}

fn start_and_drop_pools(baseline: usize) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..ROUNDS {
        let pool = VesselPool::new(PoolSize {
            nice: 0,
            core: 2,
            max_slow: 1,
            slow_after: Duration::from_secs(1),
        })
        .expect("pool starts");
        let handle = pool.clone();
        let answer = runtime.block_on(handle.run(|| 7)).expect("job runs");
        assert_eq!(answer, 7);
        assert!(threads() > baseline, "round {round}: no pool threads");
        drop((pool, handle));
    }
    runtime
}

#[test]
fn stores_and_vessel_pools_leave_no_threads_once_dropped() {
    if std::env::var_os(CHILD).is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("the test binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let baseline = threads();

    // The runtime's blocking pool, where a store opens its files, ends when the runtime is
    // dropped; what is counted after that is what the stores left.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(open_and_drop_stores(dir.path(), baseline));
    drop(runtime);
    settles_to(baseline, "after dropping every store");

    let runtime = start_and_drop_pools(baseline);
    drop(runtime);
    settles_to(baseline, "after dropping every vessel pool");
}
