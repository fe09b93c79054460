//! Admission of an ingress batch, decided once for both stores: a repeat is answered first (and
//! counts against nothing), then the fleet's backlog cap, then the rate limit, then the
//! concurrency policy. Only a call that is queued counts against the cap, the rate limit and the
//! policy of the calls after it in the same batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::Slot;
use crate::admission::{KEY_TTL_MS, Pace};
use crate::fleet::Policy;
use crate::records::{Admission, Ingest};

/// What a slot (fleet, key value) has queued or running, as far as a policy cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotState {
    /// Some run of the slot is queued or running.
    pub active: bool,
    /// Some `queue`-policy run of the slot is queued or running: a new `queue` run waits (held)
    /// until it ends.
    pub serial: bool,
}

/// Where a run a policy admits goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The run belongs to a `queue` policy: its end releases the next held run of its slot.
    pub serial: bool,
    /// The run waits for the slot's active `queue` run to end before it can be claimed.
    pub held: bool,
}

/// The concurrency policy's answer for one new run of a slot in `state`: `None` when the
/// policy refuses it (`reject` with a run queued or running).
pub fn place(policy: Policy, state: SlotState) -> Option<Placed> {
    let serial = policy == Policy::Queue;
    match policy {
        Policy::Parallel => Some(Placed {
            serial,
            held: false,
        }),
        Policy::Queue => Some(Placed {
            serial,
            held: state.serial,
        }),
        Policy::Reject if state.active => None,
        Policy::Reject => Some(Placed {
            serial,
            held: false,
        }),
    }
}

/// Call keys created after this time (ms) still answer repeats at `now`; older ones are spent.
pub fn keys_live_after(now: i64) -> i64 {
    now - KEY_TTL_MS
}

/// What a backend must read before [`decide`] can answer a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Fleets whose calls are decided on stored state; a store shared between nodes locks them
    /// (in this, ascending, order) so that decisions about one fleet are serial.
    pub guarded: BTreeSet<Uuid>,
    /// (fleet, call key) pairs to look up among keys live at `now` ([`keys_live_after`]).
    pub keys: BTreeSet<(Uuid, String)>,
    /// Capped fleets, with the largest cap a call of the batch has: queued runs (held ones
    /// included) need counting only up to it.
    pub backlogs: BTreeMap<Uuid, u64>,
    /// Fleets whose rate-limit state is needed.
    pub rate_limited: BTreeSet<Uuid>,
    /// Slots whose [`SlotState`] is needed (every slot of a `queue` or `reject` call).
    pub slots: BTreeSet<Slot>,
}

/// What [`decide`] needs to read for `batch`.
pub fn needs(batch: &[Ingest]) -> Needs {
    let mut needs = Needs::default();
    for item in batch {
        let fleet = item.request.fleet_id;
        if let Some(key) = &item.call_key {
            needs.keys.insert((fleet, key.clone()));
        }
        if let Some(cap) = item.max_queued {
            let e = needs.backlogs.entry(fleet).or_insert(cap);
            *e = (*e).max(cap);
        }
        if item.rate_limit.is_some() {
            needs.rate_limited.insert(fleet);
        }
        if item.policy.policy != Policy::Parallel {
            needs.slots.insert((fleet, item.concurrency_key.clone()));
        }
        if item.policy.policy != Policy::Parallel
            || item.call_key.is_some()
            || item.rate_limit.is_some()
            || item.max_queued.is_some()
        {
            needs.guarded.insert(fleet);
        }
    }
    needs
}

/// The stored state a batch is decided on, as read by the backend for its [`Needs`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Live call keys: the first call's (request, run) ids by (fleet, key).
    pub seen: HashMap<(Uuid, String), (Uuid, Uuid)>,
    /// Queued runs per capped fleet (a count up to the cap is enough; absent: none).
    pub queued: HashMap<Uuid, u64>,
    /// Rate-limit states (GCRA time, µs) of the fleets that have one.
    pub rate: HashMap<Uuid, i64>,
    /// States of the needed slots (absent: nothing queued or running).
    pub slots: HashMap<Slot, SlotState>,
}

/// One call of the batch to store, with its queued run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// Its position in the batch.
    pub index: usize,
    /// How its run is stored.
    pub placed: Placed,
}

/// The answers to a batch and the writes that make them true.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decided {
    /// One answer per call, in the batch's order.
    pub answers: Vec<Admission>,
    /// The calls to store (request, run, and call key if it has one), in the batch's order,
    /// which is the queue's order.
    pub admitted: Vec<Admit>,
    /// The new rate-limit state of each fleet that admitted a rate-limited call.
    pub rate_states: BTreeMap<Uuid, i64>,
}

/// Decides a batch at `now` (ms) on the state read for it. Earlier calls of the batch count for
/// later ones: a repeat of a call queued earlier in the batch gets its ids, a queued call takes
/// a place in the backlog, a rate-limit slot and its policy slot.
pub fn decide(batch: &[Ingest], snapshot: &Snapshot, now: i64) -> Decided {
    let mut seen = snapshot.seen.clone();
    let mut queued = snapshot.queued.clone();
    let mut tats = snapshot.rate.clone();
    let mut slots = snapshot.slots.clone();
    let mut out = Decided {
        answers: Vec::with_capacity(batch.len()),
        admitted: Vec::with_capacity(batch.len()),
        rate_states: BTreeMap::new(),
    };
    for (index, item) in batch.iter().enumerate() {
        let fleet = item.request.fleet_id;
        if let Some(key) = &item.call_key
            && let Some((request_id, run_id)) = seen.get(&(fleet, key.clone()))
        {
            out.answers.push(Admission::Duplicate {
                request_id: *request_id,
                run_id: *run_id,
            });
            continue;
        }
        if let Some(cap) = item.max_queued
            && queued.get(&fleet).copied().unwrap_or(0) >= cap
        {
            out.answers.push(Admission::Backlogged { max_queued: cap });
            continue;
        }
        let tat = match item.rate_limit {
            None => None,
            Some(limit) => match limit.pace(tats.get(&fleet).copied(), now) {
                Pace::Admit { tat_us } => Some(tat_us),
                Pace::Wait { ms } => {
                    out.answers
                        .push(Admission::RateLimited { retry_after_ms: ms });
                    continue;
                }
            },
        };
        let slot = (fleet, item.concurrency_key.clone());
        let state = slots.get(&slot).copied().unwrap_or_default();
        let Some(placed) = place(item.policy.policy, state) else {
            out.answers.push(Admission::Busy);
            continue;
        };
        slots.insert(
            slot,
            SlotState {
                active: true,
                serial: state.serial || placed.serial,
            },
        );
        if let Some(tat) = tat {
            tats.insert(fleet, tat);
            out.rate_states.insert(fleet, tat);
        }
        if let Some(key) = &item.call_key {
            seen.insert((fleet, key.clone()), (item.request.id, item.run_id));
        }
        *queued.entry(fleet).or_default() += 1;
        out.admitted.push(Admit { index, placed });
        out.answers.push(Admission::Queued);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::RateLimit;
    use crate::fleet::Concurrency;
    use crate::records::RequestRecord;

    fn call(fleet: Uuid, policy: Policy) -> Ingest {
        Ingest {
            request: RequestRecord {
                id: Uuid::now_v7(),
                fleet_id: fleet,
                method: "POST".into(),
                content_type: String::new(),
                headers: Default::default(),
                query: Default::default(),
                body: Vec::new(),
                body_size: 0,
                received_at: 0,
            },
            run_id: Uuid::now_v7(),
            policy: Concurrency::of(policy),
            concurrency_key: None,
            call_key: None,
            rate_limit: None,
            max_queued: None,
        }
    }

    fn keyed(mut c: Ingest, key: &str) -> Ingest {
        c.call_key = Some(key.into());
        c
    }

    const NOW: i64 = 1_000_000_000;

    #[test]
    fn parallel_calls_are_all_queued_and_never_held() {
        let f = Uuid::now_v7();
        let batch = vec![call(f, Policy::Parallel), call(f, Policy::Parallel)];
        let d = decide(&batch, &Snapshot::default(), NOW);
        assert_eq!(d.answers, [Admission::Queued, Admission::Queued]);
        assert!(
            d.admitted
                .iter()
                .all(|a| !a.placed.held && !a.placed.serial)
        );
        assert_eq!(needs(&batch), Needs::default());
    }

    #[test]
    fn reject_admits_one_per_slot_and_counts_the_batch() {
        let f = Uuid::now_v7();
        let mut other_key = call(f, Policy::Reject);
        other_key.concurrency_key = Some("b".into());
        let batch = vec![call(f, Policy::Reject), call(f, Policy::Reject), other_key];
        let d = decide(&batch, &Snapshot::default(), NOW);
        assert_eq!(
            d.answers,
            [Admission::Queued, Admission::Busy, Admission::Queued]
        );
        // A stored active run refuses the first call too.
        let mut snap = Snapshot::default();
        snap.slots.insert(
            (f, None),
            SlotState {
                active: true,
                serial: false,
            },
        );
        let d = decide(&batch[..1], &snap, NOW);
        assert_eq!(d.answers, [Admission::Busy]);
        assert!(d.admitted.is_empty());
    }

    #[test]
    fn a_parallel_run_of_the_batch_makes_a_later_reject_call_busy() {
        let f = Uuid::now_v7();
        let batch = vec![call(f, Policy::Parallel), call(f, Policy::Reject)];
        let d = decide(&batch, &Snapshot::default(), NOW);
        assert_eq!(d.answers, [Admission::Queued, Admission::Busy]);
    }

    #[test]
    fn queue_holds_every_run_after_the_active_one() {
        let f = Uuid::now_v7();
        let batch = vec![call(f, Policy::Queue), call(f, Policy::Queue)];
        let d = decide(&batch, &Snapshot::default(), NOW);
        assert_eq!(d.answers, [Admission::Queued, Admission::Queued]);
        let held: Vec<bool> = d.admitted.iter().map(|a| a.placed.held).collect();
        assert_eq!(held, [false, true]);
        assert!(d.admitted.iter().all(|a| a.placed.serial));
        // Only a `queue` run holds later ones: an active parallel run does not.
        let mut snap = Snapshot::default();
        snap.slots.insert(
            (f, None),
            SlotState {
                active: true,
                serial: false,
            },
        );
        let d = decide(&batch[..1], &snap, NOW);
        assert!(!d.admitted[0].placed.held);
        assert_eq!(needs(&batch).slots, BTreeSet::from([(f, None)]));
        assert_eq!(needs(&batch).guarded, BTreeSet::from([f]));
    }

    #[test]
    fn a_repeat_is_answered_first_and_counts_against_nothing() {
        let f = Uuid::now_v7();
        let (req, run) = (Uuid::now_v7(), Uuid::now_v7());
        let mut snap = Snapshot::default();
        snap.seen.insert((f, "k".into()), (req, run));
        // Backlog full, rate spent, policy busy: the repeat still gets the first call's ids.
        snap.queued.insert(f, 5);
        snap.rate.insert(f, (NOW + 3_600_000) * 1000);
        snap.slots.insert(
            (f, None),
            SlotState {
                active: true,
                serial: true,
            },
        );
        let mut c = keyed(call(f, Policy::Reject), "k");
        c.max_queued = Some(1);
        c.rate_limit = Some(RateLimit {
            requests: 1,
            per_seconds: 60,
        });
        let d = decide(&[c], &snap, NOW);
        assert_eq!(
            d.answers,
            [Admission::Duplicate {
                request_id: req,
                run_id: run
            }]
        );
        assert!(d.admitted.is_empty() && d.rate_states.is_empty());
    }

    #[test]
    fn a_repeat_within_the_batch_gets_the_first_calls_ids() {
        let f = Uuid::now_v7();
        let first = keyed(call(f, Policy::Parallel), "k");
        let (req, run) = (first.request.id, first.run_id);
        let batch = vec![first, keyed(call(f, Policy::Parallel), "k")];
        let d = decide(&batch, &Snapshot::default(), NOW);
        assert_eq!(
            d.answers,
            [
                Admission::Queued,
                Admission::Duplicate {
                    request_id: req,
                    run_id: run
                }
            ]
        );
        assert_eq!(d.admitted.len(), 1);
        assert_eq!(needs(&batch).keys, BTreeSet::from([(f, "k".to_string())]));
    }

    #[test]
    fn the_backlog_cap_counts_stored_and_batch_runs() {
        let f = Uuid::now_v7();
        let capped = |cap| {
            let mut c = call(f, Policy::Parallel);
            c.max_queued = Some(cap);
            c
        };
        let mut snap = Snapshot::default();
        snap.queued.insert(f, 1);
        let batch = vec![capped(2), capped(2), capped(3)];
        let d = decide(&batch, &snap, NOW);
        assert_eq!(
            d.answers,
            [
                Admission::Queued,
                Admission::Backlogged { max_queued: 2 },
                Admission::Queued
            ]
        );
        assert_eq!(needs(&batch).backlogs, BTreeMap::from([(f, 3)]));
    }

    #[test]
    fn the_cap_comes_before_the_rate_limit_and_the_rate_limit_before_the_policy() {
        let f = Uuid::now_v7();
        let limit = RateLimit {
            requests: 1,
            per_seconds: 10,
        };
        let mut snap = Snapshot::default();
        snap.queued.insert(f, 1);
        snap.rate.insert(f, (NOW + 5_000) * 1000);
        snap.slots.insert(
            (f, None),
            SlotState {
                active: true,
                serial: false,
            },
        );
        let mut c = call(f, Policy::Reject);
        c.max_queued = Some(1);
        c.rate_limit = Some(limit);
        assert_eq!(
            decide(std::slice::from_ref(&c), &snap, NOW).answers,
            [Admission::Backlogged { max_queued: 1 }]
        );
        c.max_queued = None;
        assert_eq!(
            decide(std::slice::from_ref(&c), &snap, NOW).answers,
            [Admission::RateLimited {
                retry_after_ms: 5_000
            }]
        );
        snap.rate.clear();
        assert_eq!(decide(&[c], &snap, NOW).answers, [Admission::Busy]);
    }

    #[test]
    fn only_a_queued_call_counts_against_the_rate_limit() {
        let f = Uuid::now_v7();
        let limited = |policy| {
            let mut c = call(f, policy);
            c.rate_limit = Some(RateLimit {
                requests: 2,
                per_seconds: 10,
            });
            c
        };
        let mut snap = Snapshot::default();
        snap.slots.insert(
            (f, None),
            SlotState {
                active: true,
                serial: false,
            },
        );
        // The busy call takes no slot of the limit: both parallel ones pass, the third waits.
        let batch = vec![
            limited(Policy::Reject),
            limited(Policy::Parallel),
            limited(Policy::Parallel),
            limited(Policy::Parallel),
        ];
        let d = decide(&batch, &snap, NOW);
        assert_eq!(
            d.answers[..3],
            [Admission::Busy, Admission::Queued, Admission::Queued]
        );
        assert!(matches!(d.answers[3], Admission::RateLimited { .. }));
        // The state to store is the last admitted call's.
        assert_eq!(
            d.rate_states,
            BTreeMap::from([(f, NOW * 1000 + 10_000_000)])
        );
    }

    #[test]
    fn keys_live_for_a_day() {
        assert_eq!(keys_live_after(NOW), NOW - 24 * 3600 * 1000);
    }
}
