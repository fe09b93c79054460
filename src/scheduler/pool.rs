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
//!
//! A job that overruns the time its caller gave it (a vessel stuck past its deadline in some
//! call that nothing interrupts) is abandoned: the caller stops waiting, the thread is no longer
//! counted, a replacement starts so the pool keeps its size, and the stuck thread ends as soon
//! as its job returns, its late result discarded. At most [`VesselPool::max_abandoned`] threads
//! may be abandoned at once; past that a caller still stops waiting, but no replacement starts
//! (the overrunning thread keeps its place), so stuck guests cannot make the process grow
//! threads without bound.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Where a job is in its life, and the slot of the thread running it; read and written under
/// the pool's lock.
struct Task(AtomicU8, AtomicUsize);

impl Default for Task {
    fn default() -> Self {
        Task(AtomicU8::new(QUEUED), AtomicUsize::new(0))
    }
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const FINISHED: u8 = 2;
const ABANDONED: u8 = 3;

impl Task {
    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Relaxed);
    }
}

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

/// Handle to the pool; cheap to clone. Once the last handle is dropped the threads end, each
/// after the queued jobs and its own are done.
#[derive(Clone)]
pub struct VesselPool {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

/// Shared by every handle, so its drop is the last handle's: it tells the threads to end.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.work.notify_all();
    }
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    size: PoolSize,
    /// Threads abandoned since start.
    abandoned_total: AtomicU64,
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    /// No thread.
    Free,
    /// A live thread waiting for work.
    Waiting,
    /// A thread running a job since then.
    Busy(Instant),
    /// A thread whose job overran and that ends when the job returns; not counted.
    Abandoned,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<(Job, Arc<Task>)>,
    /// Live threads, not counting abandoned ones.
    threads: usize,
    /// Abandoned threads still running their job.
    abandoned: usize,
    idle: usize,
    /// What each thread slot is doing; slots of ended threads are reused.
    slots: Vec<Slot>,
    next_name: usize,
    /// Every handle is gone: idle threads end rather than wait.
    closed: bool,
}

/// The job panicked; the thread survived.
#[derive(Debug, thiserror::Error)]
#[error("the vessel thread panicked: {0}")]
pub struct Panicked(pub String);

/// Why [`VesselPool::run_within`] has no result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job panicked.
    #[error(transparent)]
    Panicked(#[from] Panicked),
    /// The job ran longer than it was given; the caller stopped waiting for it.
    #[error("the job ran past {limit:?}; the pool stopped waiting for it")]
    Overran {
        /// What it was given.
        limit: Duration,
        /// Whether its thread was replaced (false when the most abandoned threads already
        /// exist: the overrunning thread then keeps its place).
        replaced: bool,
    },
}

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
            abandoned_total: AtomicU64::new(0),
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
        Ok(VesselPool {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        })
    }

    /// Core threads.
    pub fn size(&self) -> usize {
        self.shared.size.core
    }

    /// The most threads the pool may have at once.
    pub fn max_threads(&self) -> usize {
        self.shared.size.core + self.shared.size.max_slow
    }

    /// The most threads that may be abandoned at once: as many as the pool may have.
    pub fn max_abandoned(&self) -> usize {
        self.max_threads()
    }

    /// Threads abandoned since start, and those of them still running their job.
    pub fn abandoned(&self) -> (u64, usize) {
        let now = self.shared.lock().abandoned;
        (self.shared.abandoned_total.load(Ordering::Relaxed), now)
    }

    /// Runs `f` on a pool thread and waits for its result without blocking the reactor.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        let (done, _task, _started) = self.submit(f);
        done.await
            .map_err(|_| Panicked("the vessel thread was lost".into()))?
    }

    /// Runs `f` on a pool thread, waiting at most `limit` from the moment a thread takes it up
    /// (time queued does not count). Past that the job is abandoned (see the module's notes)
    /// and its result, whenever it comes, discarded.
    pub async fn run_within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
        limit: Duration,
    ) -> Result<T, RunError> {
        let (mut done, task, started) = self.submit(f);
        let lost = || RunError::Panicked(Panicked("the vessel thread was lost".into()));
        let since = tokio::select! {
            result = &mut done => return result.map_err(|_| lost())?.map_err(RunError::from),
            since = started => since,
        };
        let Ok(since) = since else {
            // The job was dropped unrun, or ran and replied before its start was seen.
            return done.await.map_err(|_| lost())?.map_err(RunError::from);
        };
        tokio::select! {
            result = &mut done => return result.map_err(|_| lost())?.map_err(RunError::from),
            _ = tokio::time::sleep_until((since + limit).into()) => {}
        }
        match self.shared.abandon(&task) {
            // It finished as the limit passed: its result is there.
            None => done.await.map_err(|_| lost())?.map_err(RunError::from),
            Some(replaced) => Err(RunError::Overran { limit, replaced }),
        }
    }

    /// Queues `f`; gives the receiver of its result, its task, and a receiver told when a
    /// thread takes it up.
    #[allow(clippy::type_complexity)]
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> (
        oneshot::Receiver<Result<T, Panicked>>,
        Arc<Task>,
        oneshot::Receiver<Instant>,
    ) {
        let (reply, done) = oneshot::channel();
        let (start_tx, started) = oneshot::channel();
        let task = Arc::new(Task::default());
        let job: Job = Box::new(move || {
            let _ = start_tx.send(Instant::now());
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
            state.jobs.push_back((job, task.clone()));
            if state.idle > 0 {
                self.shared.work.notify_one();
            } else {
                self.shared.grow_if_starved(&mut state);
            }
        }
        (done, task, started)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A job never runs under the lock, so a poisoned lock only means a panic in this file's
        // own bookkeeping; its state is still consistent enough to go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Abandons a running task's thread: `None` if the task is no longer running, else whether
    /// a replacement could take its place.
    fn abandon(self: &Arc<Self>, task: &Task) -> Option<bool> {
        let mut state = self.lock();
        if task.get() != RUNNING {
            return None;
        }
        if state.abandoned >= self.size.core + self.size.max_slow {
            tracing::error!(
                abandoned = state.abandoned,
                "a vessel overran its deadline; the most abandoned threads already exist, so its thread is not replaced"
            );
            return Some(false);
        }
        task.set(ABANDONED);
        state.slots[task.1.load(Ordering::Relaxed)] = Slot::Abandoned;
        state.abandoned += 1;
        state.threads -= 1;
        self.abandoned_total.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            abandoned = state.abandoned,
            "a vessel overran its deadline; its thread is abandoned and replaced"
        );
        if state.threads < self.size.core
            && let Err(e) = spawn(self, &mut state)
        {
            tracing::warn!(error = %e, "could not replace an abandoned vessel thread");
        }
        // Jobs may be waiting with no thread left to take them.
        self.grow_if_starved(&mut state);
        Some(true)
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
        let Some((job, task)) = state.jobs.pop_front() else {
            if state.closed {
                state.threads -= 1;
                state.slots[slot] = Slot::Free;
                return;
            }
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
        task.set(RUNNING);
        task.1.store(slot, Ordering::Relaxed);
        drop(state);
        job();
        state = shared.lock();
        if task.get() == ABANDONED {
            // Already replaced and no longer counted: this thread just ends.
            let _ = crate::sandbox::memory::take_retire();
            state.abandoned -= 1;
            state.slots[slot] = Slot::Free;
            return;
        }
        task.set(FINISHED);
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

    fn one_thread() -> VesselPool {
        VesselPool::new(PoolSize {
            nice: 0,
            core: 1,
            max_slow: 0,
            slow_after: Duration::from_secs(60),
        })
        .unwrap()
    }

    /// A job that blocks until told, like a guest stuck where nothing interrupts it.
    fn stuck() -> (
        std::sync::mpsc::Sender<()>,
        impl FnOnce() -> u32 + Send + 'static,
    ) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        (release, move || {
            let _ = wait.recv();
            0
        })
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_job_past_its_limit_is_abandoned_and_its_thread_replaced() {
        let pool = one_thread();
        let (release, job) = stuck();
        let overran = pool.run_within(job, Duration::from_millis(100)).await;
        assert!(
            matches!(overran, Err(RunError::Overran { replaced: true, .. })),
            "{overran:?}"
        );
        // The one thread is stuck, yet the pool still runs work: a replacement took its place.
        assert_eq!(
            pool.run_within(|| 7, Duration::from_secs(5)).await.unwrap(),
            7
        );
        assert_eq!(pool.abandoned(), (1, 1));
        assert_eq!(pool.shared.lock().threads, 1);
        // When the stuck job returns at last, its thread ends and its result goes nowhere.
        release.send(()).unwrap();
        until("the abandoned thread ends", || pool.abandoned().1 == 0).await;
        assert_eq!(pool.shared.lock().threads, 1);
        assert_eq!(pool.run(|| 8).await.unwrap(), 8);
    }

    #[tokio::test]
    async fn a_job_within_its_limit_is_waited_for() {
        let pool = one_thread();
        let got = pool
            .run_within(
                || {
                    std::thread::sleep(Duration::from_millis(50));
                    5
                },
                Duration::from_secs(5),
            )
            .await;
        assert_eq!(got.unwrap(), 5);
        assert_eq!(pool.abandoned(), (0, 0));
    }

    #[tokio::test]
    async fn abandoned_threads_are_capped() {
        let pool = one_thread();
        assert_eq!(pool.max_abandoned(), 1);
        let (first, job) = stuck();
        let overran = pool.run_within(job, Duration::from_millis(50)).await;
        assert!(matches!(
            overran,
            Err(RunError::Overran { replaced: true, .. })
        ));
        // At the cap: the caller stops waiting, but no more threads start.
        let (second, job) = stuck();
        let overran = pool.run_within(job, Duration::from_millis(50)).await;
        assert!(
            matches!(
                overran,
                Err(RunError::Overran {
                    replaced: false,
                    ..
                })
            ),
            "{overran:?}"
        );
        assert_eq!(pool.abandoned(), (1, 1));
        {
            let state = pool.shared.lock();
            assert_eq!(state.threads + state.abandoned, 2, "no third thread");
        }
        // The thread that kept its place comes back to the pool when its job returns.
        second.send(()).unwrap();
        assert_eq!(
            pool.run_within(|| 9, Duration::from_secs(5)).await.unwrap(),
            9
        );
        first.send(()).unwrap();
        until("the abandoned thread ends", || pool.abandoned().1 == 0).await;
        assert_eq!(pool.shared.lock().threads, 1);
    }
}
