//! The vessel threads: a core of threads sized to the CPUs, plus a slow lane.
//!
//! Vessels are CPU-bound and synchronous, so they never run on the async reactor: a spinning
//! guest would stall ingress. Dedicated threads (rather than tokio's blocking pool) give a hard
//! bound on concurrent vessels, a stack big enough for deep Rhai recursion to hit its own limit
//! first, and fairness from the OS scheduler.
//!
//! How many: as many *busy* threads as there are cores does the most work — more only adds
//! contention (16 threads on 2 cores did fewer runs per second than 2). But a vessel that
//! runs long (a guest spinning until its timeout) would then hold a core thread and starve the
//! quick vessels queued behind it. So a vessel running longer than `slow_after` stops counting:
//! the pool may start one more thread for each such vessel, up to `core + max_slow`, and the
//! extra threads end after a while idle.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Stack of each vessel thread: room for Rhai's recursive walks over the deepest values a
/// script may hold (see `sandbox::rhai::MAX_HELD_BLOCKS`). It is address space, not memory:
/// only the pages a run touches are backed.
const STACK_BYTES: usize = 256 << 20;
/// An extra thread idle this long ends.
const EXTRA_IDLE: Duration = Duration::from_secs(10);

/// Sizes and priority of the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Niceness of the vessel threads (0 to 19; 0 leaves them at the process's priority).
    pub nice: u8,
    /// Threads kept for quick vessels.
    pub core: usize,
    /// Extra threads allowed while that many vessels run longer than `slow_after`.
    pub max_slow: usize,
    /// When a running vessel counts as slow.
    pub slow_after: Duration,
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct VesselPool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    size: PoolSize,
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    /// No thread.
    Free,
    /// A live thread waiting for work.
    Waiting,
    /// A thread running a job since then.
    Busy(Instant),
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    /// What each thread slot is doing; slots of ended threads are reused.
    slots: Vec<Slot>,
    next_name: usize,
}

/// The job panicked; the thread survived.
#[derive(Debug, thiserror::Error)]
#[error("the vessel thread panicked: {0}")]
pub struct Panicked(pub String);

impl VesselPool {
    /// Starts the core threads and the watcher that opens the slow lane.
    pub fn new(size: PoolSize) -> std::io::Result<Self> {
        let size = PoolSize {
            core: size.core.max(1),
            ..size
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            size,
        });
        {
            let mut state = shared.lock();
            for _ in 0..size.core {
                spawn(&shared, &mut state)?;
            }
        }
        let weak = Arc::downgrade(&shared);
        let tick = (size.slow_after / 2).max(Duration::from_millis(5));
        std::thread::Builder::new()
            .name("vessel-watch".into())
            .spawn(move || {
                while let Some(shared) = weak.upgrade() {
                    {
                        let mut state = shared.lock();
                        shared.grow_if_starved(&mut state);
                    }
                    drop(shared);
                    std::thread::sleep(tick);
                }
            })?;
        Ok(VesselPool { shared })
    }

    /// Core threads.
    pub fn size(&self) -> usize {
        self.shared.size.core
    }

    /// The most threads the pool may have at once.
    pub fn max_threads(&self) -> usize {
        self.shared.size.core + self.shared.size.max_slow
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
        {
            let mut state = self.shared.lock();
            state.jobs.push_back(job);
            if state.idle > 0 {
                self.shared.work.notify_one();
            } else {
                self.shared.grow_if_starved(&mut state);
            }
        }
        done.await
            .map_err(|_| Panicked("the vessel thread was lost".into()))?
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A job never runs under the lock, so a poisoned lock only means a panic in this file's
        // own bookkeeping; its state is still consistent enough to go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a thread when jobs wait, none is idle, and slow vessels hold threads.
    fn grow_if_starved(self: &Arc<Self>, state: &mut State) {
        if state.jobs.is_empty() || state.idle > 0 {
            return;
        }
        let now = Instant::now();
        let slow = state
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Busy(since) if now.duration_since(*since) >= self.size.slow_after))
            .count();
        let allowed = self.size.core + slow.min(self.size.max_slow);
        if state.threads < allowed
            && let Err(e) = spawn(self, state)
        {
            tracing::warn!(error = %e, "could not start a vessel thread");
        }
    }
}

fn spawn(shared: &Arc<Shared>, state: &mut State) -> std::io::Result<()> {
    let slot = match state.slots.iter().position(|s| *s == Slot::Free) {
        Some(i) => i,
        None => {
            state.slots.push(Slot::Free);
            state.slots.len() - 1
        }
    };
    let name = format!("vessel-{}", state.next_name);
    state.next_name += 1;
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(name)
        .stack_size(STACK_BYTES)
        .spawn(move || work(shared, slot))?;
    state.slots[slot] = Slot::Waiting;
    state.threads += 1;
    Ok(())
}

fn work(shared: Arc<Shared>, slot: usize) {
    lower_priority(shared.size.nice);
    let mut state = shared.lock();
    loop {
        let Some(job) = state.jobs.pop_front() else {
            state.idle += 1;
            let (next, timeout) = shared
                .work
                .wait_timeout(state, EXTRA_IDLE)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() && state.threads > shared.size.core {
                state.threads -= 1;
                state.slots[slot] = Slot::Free;
                return;
            }
            continue;
        };
        state.slots[slot] = Slot::Busy(Instant::now());
        drop(state);
        job();
        state = shared.lock();
        if crate::sandbox::memory::take_retire() {
            // The job's stack pages go back to the OS with the thread; a fresh one takes its
            // place at once if the pool is below its core size.
            state.threads -= 1;
            state.slots[slot] = Slot::Free;
            if state.threads < shared.size.core
                && let Err(e) = spawn(&shared, &mut state)
            {
                tracing::warn!(error = %e, "could not replace a vessel thread");
            }
            return;
        }
        state.slots[slot] = Slot::Waiting;
    }
}

/// Gives this thread a higher niceness, so that when ingress, the store writer and the vessels
/// all want the CPU, ingress wins: callers get their `201` sooner during a burst and runs drain
/// later (an operator's choice, `--vessel-nice`; off by default because it costs completed runs
/// per second). Lowering one's own priority needs no privilege; if the OS refuses anyway, the
/// thread runs at normal priority.
fn lower_priority(nice: u8) {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    if nice == 0 {
        return;
    }
    let value = ThreadPriorityValue::try_from(crossplatform_for_nice(nice));
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
    let set = value.map_err(|e| format!("{e:?}")).and_then(|v| {
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Crossplatform(v), policy)
            .map_err(|e| format!("{e:?}"))
    });
    if let Err(e) = set {
        tracing::warn!(
            error = e,
            nice,
            "could not lower the priority of a vessel thread"
        );
    }
}

/// thread-priority maps its 0–99 scale linearly onto Linux niceness 19…-20
/// (`trunc(39 × (1 − p / 99)) − 20`) and has no way to name a niceness directly on Linux; this
/// is the scale value that gives `nice`.
fn crossplatform_for_nice(nice: u8) -> u8 {
    let niceness = |p: u8| (39.0 * (1.0 - f32::from(p) / 99.0)) as i32 - 20;
    (0..=99u8)
        .find(|p| niceness(*p) <= i32::from(nice.min(19)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's niceness, as the kernel reports it.
    fn current_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name (which may hold spaces) start with field 3, `state`;
        // `nice` is field 19.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn vessel_threads_get_the_niceness_asked_for() {
        for nice in [1u8, 5, 10, 19] {
            let got = std::thread::spawn(move || {
                lower_priority(nice);
                current_nice()
            })
            .join()
            .unwrap();
            assert_eq!(got, i32::from(nice));
        }
        let untouched = std::thread::spawn(|| {
            lower_priority(0);
            current_nice()
        })
        .join()
        .unwrap();
        assert_eq!(untouched, current_nice());
    }

    #[tokio::test]
    async fn a_thread_asked_to_retire_is_replaced_and_the_pool_goes_on() {
        let pool = VesselPool::new(PoolSize {
            nice: 0,
            core: 1,
            max_slow: 0,
            slow_after: Duration::from_secs(60),
        })
        .unwrap();
        let id = || std::thread::current().id();
        let first = pool.run(id).await.unwrap();
        assert_eq!(pool.run(id).await.unwrap(), first, "a thread is kept");
        let retired = pool
            .run(move || {
                crate::sandbox::memory::retire_thread();
                id()
            })
            .await
            .unwrap();
        assert_eq!(retired, first);
        let next = pool.run(id).await.unwrap();
        assert_ne!(next, first, "the retired thread ended");
        assert_eq!(pool.run(id).await.unwrap(), next);
        assert_eq!(pool.shared.lock().threads, 1);
    }
}
