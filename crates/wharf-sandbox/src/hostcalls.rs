//! WASI preview-1 calls wharf implements itself, because wasmtime-wasi's versions can block a
//! vessel thread past the vessel's deadline or allocate on the host what the guest asks for.
//!
//! - `poll_oneoff`: wasmtime-wasi sleeps for the whole subscription (`u64::MAX` ns is allowed),
//!   and the epoch deadline is only checked while guest code runs. Here a clock subscription
//!   sleeps in slices of at most [`SLICE`], checking the run's cancel flag and deadline between
//!   slices; past the deadline the call traps and the run ends `timeout`, on a cancel it ends
//!   `cancelled`. A vessel's stdin, stdout and stderr are in-memory pipes, so a subscription on
//!   them is always ready at once.
//! - `random_get`: wasmtime-wasi first collects the requested bytes into a host `Vec` (up to
//!   64 MiB per call, outside the guest's memory limit); here the bytes are written straight
//!   into the guest's own memory.
//!
//! Every pointer and length comes from the guest and is checked against its memory; a bad one
//! is an errno (`EFAULT`) or a trap of the guest, never of the host.

use std::time::{Duration, Instant, SystemTime};

use rand::RngCore as _;
use wasmtime::{Caller, Linker};

use super::wasm::{Cancelled, HostState, TimedOut, guest_memory};

/// Longest single sleep inside `poll_oneoff`: a cancel is seen within this.
pub(super) const SLICE: Duration = Duration::from_millis(10);
/// Most subscriptions one `poll_oneoff` call may pass: a vessel has three descriptors, so more
/// is a guest asking the host to hold a large list for it.
pub(super) const MAX_SUBSCRIPTIONS: u32 = 1_024;
/// Bytes of one `subscription` and one `event` in the preview-1 ABI.
const SUBSCRIPTION: usize = 48;
const EVENT: usize = 32;
/// Preview-1 errno values used here.
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: i32 = 58;
/// Event types (and subscription tags).
const CLOCK: u8 = 0;
const FD_READ: u8 = 1;
const FD_WRITE: u8 = 2;
/// Clock ids.
const REALTIME: u32 = 0;
const MONOTONIC: u32 = 1;
/// `subclockflags::subscription_clock_abstime`.
const ABSTIME: u16 = 1;

/// One subscription as read from the guest.
#[derive(Clone, Copy)]
struct Subscription {
    userdata: u64,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    /// Fires at this instant (`None`: never, a timeout too far to represent).
    Clock(Option<Instant>),
    /// A read or write subscription on a descriptor that is ready now.
    Ready(u8),
}

/// The monotonic clock a vessel sees: nanoseconds since its run began. wharf owns it, rather
/// than wasmtime-wasi, so that an absolute `poll_oneoff` deadline converts to an [`Instant`].
pub(super) struct RunClock {
    pub(super) origin: Instant,
}

impl wasmtime_wasi::HostMonotonicClock for RunClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Replaces wasmtime-wasi's `poll_oneoff` and `random_get` in a linker that already has WASI.
pub(super) fn shadow_blocking_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)?;
    linker.func_wrap("wasi_snapshot_preview1", "random_get", random_get)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn poll_oneoff(
    mut caller: Caller<'_, HostState>,
    subs_ptr: i32,
    events_ptr: i32,
    count: i32,
    nevents_ptr: i32,
) -> wasmtime::Result<i32> {
    let count = count as u32;
    if count == 0 || count > MAX_SUBSCRIPTIONS {
        return Ok(ERRNO_INVAL);
    }
    let memory = guest_memory(&mut caller)?;
    let subs = {
        let mem = memory.data(&caller);
        let Some(raw) = slice(mem, subs_ptr, count as usize * SUBSCRIPTION) else {
            return Ok(ERRNO_FAULT);
        };
        let origin = caller.data().clock_origin;
        let mut subs = Vec::with_capacity(count as usize);
        for raw in raw.chunks_exact(SUBSCRIPTION) {
            match parse(raw, origin) {
                Ok(sub) => subs.push(sub),
                Err(errno) => return Ok(errno),
            }
        }
        subs
    };
    // Descriptors are ready now; only a poll of clocks alone waits.
    if !subs.iter().any(|s| matches!(s.kind, Kind::Ready(_))) {
        let fires = subs
            .iter()
            .filter_map(|s| match s.kind {
                Kind::Clock(at) => at,
                Kind::Ready(_) => None,
            })
            .min();
        sleep_until(&caller, fires)?;
    }
    let now = Instant::now();
    let mut events = Vec::with_capacity(subs.len());
    for sub in &subs {
        let (kind, fired) = match sub.kind {
            Kind::Clock(at) => (CLOCK, at.is_some_and(|at| at <= now)),
            Kind::Ready(kind) => (kind, true),
        };
        if fired {
            events.push(event(sub.userdata, kind));
        }
    }
    let (mem, _) = memory.data_and_store_mut(&mut caller);
    let Some(out) = slice_mut(mem, events_ptr, events.len() * EVENT) else {
        return Ok(ERRNO_FAULT);
    };
    for (dest, event) in out.chunks_exact_mut(EVENT).zip(&events) {
        dest.copy_from_slice(event);
    }
    let Some(n) = slice_mut(mem, nevents_ptr, 4) else {
        return Ok(ERRNO_FAULT);
    };
    n.copy_from_slice(&(events.len() as u32).to_le_bytes());
    Ok(0)
}

/// Sleeps until `until` (`None`: for ever), in slices, ending the guest when the run is
/// cancelled or its deadline passes first.
fn sleep_until(caller: &Caller<'_, HostState>, until: Option<Instant>) -> wasmtime::Result<()> {
    let state = caller.data();
    loop {
        if state.cancel.is_cancelled() {
            return Err(wasmtime::Error::new(Cancelled));
        }
        let now = Instant::now();
        if until.is_some_and(|at| at <= now) {
            return Ok(());
        }
        if now >= state.deadline {
            return Err(wasmtime::Error::new(TimedOut));
        }
        let wake = until.map_or(state.deadline, |at| at.min(state.deadline));
        std::thread::sleep((wake - now).min(SLICE));
    }
}

fn parse(raw: &[u8], origin: Instant) -> Result<Subscription, i32> {
    let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap_or_default());
    let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap_or_default());
    let userdata = u64_at(0);
    let kind = match raw[8] {
        CLOCK => {
            let (id, timeout) = (u32_at(16), u64_at(24));
            let flags = u16::from_le_bytes([raw[40], raw[41]]);
            let now = Instant::now();
            let wait = Duration::from_nanos(timeout);
            let at = match (id, flags & ABSTIME != 0) {
                (MONOTONIC | REALTIME, false) => now.checked_add(wait),
                (MONOTONIC, true) => origin.checked_add(wait),
                (REALTIME, true) => {
                    let since_epoch = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    now.checked_add(wait.saturating_sub(since_epoch))
                }
                _ => return Err(ERRNO_INVAL),
            };
            Kind::Clock(at)
        }
        FD_READ | FD_WRITE => {
            let (tag, fd) = (raw[8], u32_at(16));
            match (tag, fd) {
                (FD_READ, 0) | (FD_WRITE, 1 | 2) => Kind::Ready(tag),
                _ => return Err(ERRNO_BADF),
            }
        }
        _ => return Err(ERRNO_NOTSUP),
    };
    Ok(Subscription { userdata, kind })
}

/// An `event`: userdata, errno 0, its type, and for descriptors one byte ready.
fn event(userdata: u64, kind: u8) -> [u8; EVENT] {
    let mut e = [0u8; EVENT];
    e[0..8].copy_from_slice(&userdata.to_le_bytes());
    e[10] = kind;
    if kind != CLOCK {
        e[16..24].copy_from_slice(&1u64.to_le_bytes());
    }
    e
}

fn random_get(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<i32> {
    let memory = guest_memory(&mut caller)?;
    let mem = memory.data_mut(&mut caller);
    let Some(buf) = slice_mut(mem, ptr, len as u32 as usize) else {
        return Ok(ERRNO_FAULT);
    };
    rand::rng().fill_bytes(buf);
    Ok(0)
}

fn slice(mem: &[u8], ptr: i32, len: usize) -> Option<&[u8]> {
    let start = ptr as u32 as usize;
    mem.get(start..start.checked_add(len)?)
}

fn slice_mut(mem: &mut [u8], ptr: i32, len: usize) -> Option<&mut [u8]> {
    let start = ptr as u32 as usize;
    mem.get_mut(start..start.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{
        CancelFlag, FailureReason, Limits, SandboxConfig, VesselInput, VesselOutcome,
        wasm::WasmRunner,
    };
    use super::*;

    fn run(wat_src: &str, limits: Limits, cancel: CancelFlag) -> VesselOutcome {
        let runner = WasmRunner::new(&SandboxConfig {
            cache_dir: None,
            cache_key: None,
            max_concurrent: 1,
        })
        .unwrap();
        let code = wat::parse_str(wat_src).unwrap();
        let program = runner.compile("test", &code).unwrap();
        let input = VesselInput {
            body: bytes::Bytes::from_static(b"{}"),
            request: Arc::default(),
            ids: Default::default(),
            variables: Default::default(),
            limits,
            cancel,
            logs: None,
        };
        runner.run(&program, &input)
    }

    /// Subscribes to a clock that never fires (`u64::MAX` ns) and, with `$extra`, to a read of
    /// descriptor `$fd`; exits with the errno if there is one, else 100 + events × 10 + the first
    /// event's type.
    fn poll(extra: bool, fd: u32) -> String {
        format!(
            r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $errno i32)
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const -1))
    (i32.store8 (i32.const 56) (i32.const 1))
    (i32.store (i32.const 64) (i32.const {fd}))
    (local.set $errno (call $poll (i32.const 0) (i32.const 200) (i32.const {n}) (i32.const 300)))
    (if (local.get $errno) (then (call $exit (local.get $errno))))
    (call $exit (i32.add (i32.add (i32.const 100)
      (i32.mul (i32.load (i32.const 300)) (i32.const 10)))
      (i32.load8_u (i32.const 210))))))"#,
            n = if extra { 2 } else { 1 },
        )
    }

    #[test]
    fn a_poll_on_stdin_answers_at_once() {
        // Had the poll waited on the clock beside the read, the deadline would have ended the run.
        let out = run(&poll(true, 0), Limits::default(), CancelFlag::default());
        assert_eq!(out.exit_code, Some(111), "{out:?}");
        let out = run(&poll(true, 9), Limits::default(), CancelFlag::default());
        assert_eq!(out.exit_code, Some(ERRNO_BADF), "{out:?}");
    }

    #[test]
    fn a_sleep_ends_by_the_deadline_as_a_timeout() {
        let limits = Limits {
            timeout_ms: 100,
            ..Limits::default()
        };
        let started = Instant::now();
        let out = run(&poll(false, 0), limits, CancelFlag::default());
        assert_eq!(out.reason, Some(FailureReason::Timeout), "{out:?}");
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn a_sleep_ends_on_a_cancel() {
        let cancel = CancelFlag::default();
        let canceller = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                cancel.cancel();
            })
        };
        let out = run(&poll(false, 0), Limits::default(), cancel);
        canceller.join().unwrap();
        // Cancelled, not timed out: the cancel, not the deadline, ended the sleep.
        assert_eq!(out.reason, Some(FailureReason::Cancelled), "{out:?}");
    }

    #[test]
    fn random_get_fills_guest_memory_and_refuses_bad_buffers() {
        // 32 MiB of random bytes into a 64 MiB memory, then a buffer past its end.
        let wat_src = r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1024)
  (func (export "_start")
    (if (call $random (i32.const 1024) (i32.const 33554432)) (then (call $exit (i32.const 1))))
    (if (i64.eqz (i64.load (i32.const 33554432))) (then (call $exit (i32.const 2))))
    (call $exit (call $random (i32.const 67108860) (i32.const 8)))))"#;
        let limits = Limits {
            memory_bytes: 64 << 20,
            ..Limits::default()
        };
        let out = run(wat_src, limits, CancelFlag::default());
        assert_eq!(out.exit_code, Some(ERRNO_FAULT), "{out:?}");
    }
}
