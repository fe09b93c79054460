//! A fixed pool of OS threads for vessel runs.
//!
//! Vessels are CPU-bound and synchronous, so they never run on the async reactor: a spinning
//! guest would stall ingress. Dedicated threads (rather than tokio's blocking pool) give a hard
//! bound on concurrent vessels that is independent of the core count, a stack big enough for
//! deep Rhai recursion to hit its own limit first, and fairness from the OS scheduler: eight
//! spinning guests on two cores still leave a ninth run its time slices.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Stack of each vessel thread.
const STACK_BYTES: usize = 16 << 20;

/// Handle to the pool; dropping every handle lets the threads end.
#[derive(Clone)]
pub struct VesselPool {
    tx: mpsc::Sender<Job>,
    size: usize,
}

/// The job panicked; the thread survived.
#[derive(Debug, thiserror::Error)]
#[error("the vessel thread panicked: {0}")]
pub struct Panicked(pub String);

impl VesselPool {
    /// Starts `size` threads.
    pub fn new(size: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..size.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("vessel-{i}"))
                .stack_size(STACK_BYTES)
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(VesselPool {
            tx,
            size: size.max(1),
        })
    }

    /// Number of threads.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `f` on a pool thread and waits for its result without blocking the reactor.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        let (reply, done) = oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Panicked(msg)
            });
            let _ = reply.send(result);
        });
        self.tx
            .send(job)
            .map_err(|_| Panicked("the vessel pool has stopped".into()))?;
        done.await
            .map_err(|_| Panicked("the vessel thread was lost".into()))?
    }
}
