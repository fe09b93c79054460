//! The one writer: a thread that owns the only writing SQLite connection and commits, in one
//! transaction, every write that gathered while the previous transaction ran.
//!
//! SQLite admits one writer at a time, and what costs is not the rows but the transactions
//! (an fsync each when durable) and the hand-offs between threads. So every write — ingest
//! batches, claims, lease renewals, progress, finishes, admin changes — is a job sent to this
//! thread. The thread blocks for the first job, drains whatever else is waiting (up to
//! [`MAX_JOBS`]), runs them back to back inside `BEGIN IMMEDIATE … COMMIT`, and only then answers
//! each caller: an answer always means "committed". Under load batches grow by themselves; idle,
//! a job commits alone with no added wait.
//!
//! Each job runs inside its own savepoint, so a job that fails leaves nothing behind and does not
//! spoil the jobs it shares the transaction with. A panicking job is caught and rolled back.
//!
//! Durability is chosen per transaction: if any job in it is durable (an ingest commit, whose
//! `201` promises the call survives a crash), the transaction commits with
//! `synchronous = FULL`, which fsyncs the WAL; otherwise `NORMAL`, which survives a crash of the
//! process and loses at most the latest non-durable commits on power loss — until the next
//! durable commit, whose fsync covers the whole WAL.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::backend;
use crate::{StoreError, StoreResult};

/// The most jobs committed in one transaction; bounds how long one transaction holds callers.
const MAX_JOBS: usize = 1024;

/// Called after the transaction ended, with its outcome.
type Done = Box<dyn FnOnce(StoreResult<()>) + Send>;
/// A unit of work on the writing connection; says whether it succeeded (else it is rolled back).
type Job = Box<dyn FnOnce(&Connection) -> (bool, Done) + Send>;

struct Request {
    job: Job,
    durable: bool,
}

/// Handle to the writer thread; cheap to clone. The thread ends when every handle is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Request>,
}

impl Writer {
    /// Starts the writer thread on an open connection.
    pub(super) fn start(conn: Connection) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok(Writer { tx })
    }

    /// Runs `f` on the writing connection inside the next transaction and returns its result
    /// once that transaction is committed. `durable`: the commit is fsynced before returning.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let done: Done = Box::new(move |committed| {
                let _ = reply.send(committed.and(result));
            });
            (ok, done)
        });
        // A reply dropped unsent means the job never ran or panicked: nothing was written.
        let stopped = || StoreError::Backend("the database write did not complete".into());
        self.tx
            .send(Request { job, durable })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<Request>) {
    let mut full = false;
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_JOBS);
    let mut dones: Vec<Done> = Vec::with_capacity(MAX_JOBS);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|r| r.durable);
        let outcome = transaction(&conn, &mut full, durable, &mut batch, &mut dones);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, jobs = dones.len(), "a write transaction failed");
        }
        for done in dones.drain(..) {
            done(outcome.clone());
        }
    }
}

/// One transaction over the gathered jobs. On error the whole transaction is rolled back and
/// every job's caller hears of it.
fn transaction(
    conn: &Connection,
    full: &mut bool,
    durable: bool,
    batch: &mut Vec<Request>,
    dones: &mut Vec<Done>,
) -> StoreResult<()> {
    if durable != *full {
        let mode = if durable { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", mode)
            .map_err(backend)?;
        *full = durable;
    }
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        // Dropping the jobs drops their reply channels: each caller hears its write failed.
        batch.clear();
        return Err(backend(e));
    }
    for request in batch.drain(..) {
        dones.push(run_job(conn, request.job));
    }
    match exec(conn, "COMMIT") {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = exec(conn, "ROLLBACK");
            Err(backend(e))
        }
    }
}

fn run_job(conn: &Connection, job: Job) -> Done {
    if let Err(e) = exec(conn, "SAVEPOINT job") {
        tracing::error!(error = %e, "opening a savepoint failed");
    }
    let undo = || {
        let _ = exec(conn, "ROLLBACK TO job");
        let _ = exec(conn, "RELEASE job");
    };
    match std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))) {
        Ok((true, done)) => {
            let _ = exec(conn, "RELEASE job");
            done
        }
        Ok((false, done)) => {
            undo();
            done
        }
        Err(_) => {
            tracing::error!("a database job panicked; its writes were rolled back");
            undo();
            Box::new(|_| {})
        }
    }
}

/// Runs a statement through the statement cache: even `BEGIN` and `SAVEPOINT` cost a parse
/// otherwise, several times per transaction.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
