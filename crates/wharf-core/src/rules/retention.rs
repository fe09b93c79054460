//! What is old enough to delete, decided once for both stores: the bounds each prune pass
//! deletes below.

use super::admission::keys_live_after;

/// The bounds of one prune pass; a row is deleted when its time is at or before its bound
/// (strictly before, for history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Finished runs that finished before it, requests received before it with no run left, and
    /// deliveries created before it whose run is gone; `None`: history is kept forever. Queued
    /// and running runs are never deleted, whatever their age.
    pub history: Option<i64>,
    /// Call keys created at or before it (ms) no longer answer repeats.
    pub keys: i64,
    /// Rate-limit states whose time (µs) is at or before it are spent: the bucket is full again.
    pub rate_us: i64,
    /// Sign-out marks held until at or before it (ms) are no longer needed.
    pub sessions: i64,
}

/// The bounds at `now` (ms), for history kept until `finished_before`.
pub fn cutoffs(finished_before: Option<i64>, now: i64) -> Cutoffs {
    Cutoffs {
        history: finished_before,
        keys: keys_live_after(now),
        rate_us: now.saturating_mul(1000),
        sessions: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::RateLimit;

    #[test]
    fn a_key_is_pruned_exactly_when_it_stops_answering_repeats() {
        let now = 1_000_000_000;
        let c = cutoffs(None, now);
        // Live keys are those created after `keys_live_after`; the rest are pruned.
        assert_eq!(c.keys, keys_live_after(now));
        assert_eq!(c.history, None);
        assert_eq!(cutoffs(Some(5), now).history, Some(5));
    }

    #[test]
    fn a_rate_state_is_pruned_exactly_when_it_is_spent() {
        let now = 2_000;
        let c = cutoffs(None, now);
        assert!(RateLimit::is_spent(c.rate_us, now));
        assert!(!RateLimit::is_spent(c.rate_us + 1, now));
        assert_eq!(c.sessions, now);
        // Far-off times saturate rather than wrap.
        assert_eq!(cutoffs(None, i64::MAX).rate_us, i64::MAX);
    }
}
