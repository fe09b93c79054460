//! Deliveries: what follows an attempt (delivered, given up, or retried after a backoff), what
//! its verdict makes of the stored delivery, and which deliveries a retry by hand re-opens;
//! decided once, for the outbox worker and both stores.

use uuid::Uuid;

use crate::records::{DeliveryRequest, DeliveryStatus, Verdict};

/// How one send ended, without its texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The destination answered with `status`, asking for a pause of `retry_after_ms` if it
    /// sent `Retry-After`.
    Answered {
        /// HTTP status.
        status: u16,
        /// Its `Retry-After`, in ms.
        retry_after_ms: Option<u64>,
    },
    /// No answer, worth another attempt (timeout, connection error).
    Unanswered,
    /// No answer and none to expect (egress refused, unusable request).
    Refused,
}

/// Why a delivery is given up, for the attempt's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// An answer that is not retried: a 4xx other than 429, or any other non-2xx, non-5xx.
    NotRetried(u16),
    /// The attempt would have been retried, but it was the last of `max_attempts`.
    UsedUp(u32),
}

impl GiveUp {
    /// The attempt's error, given what the send itself reported (`None`: nothing).
    pub fn error(self, sent: Option<String>) -> String {
        match self {
            GiveUp::NotRetried(status) => format!("answered {status}; not retried"),
            GiveUp::UsedUp(max) => {
                let e = sent.unwrap_or_default();
                let sep = if e.is_empty() { "" } else { "; " };
                format!("{e}{sep}max_attempts ({max}) used up")
            }
        }
    }
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A 2xx answer.
    Delivered,
    /// Given up; with a reason to state in the error, unless the send's own error says it.
    Failed(Option<GiveUp>),
    /// Tried again after the destination's `Retry-After` when it sent one, else after a pause
    /// drawn between 0 and `ceiling_ms` (full jitter).
    Retry {
        /// The destination's own pause, in ms.
        retry_after_ms: Option<u64>,
        /// The backoff ceiling after this attempt.
        ceiling_ms: u64,
    },
}

/// The ceiling of the pause after attempt `attempt` (1 for the first): `base_ms` doubled per
/// attempt, at most `max_ms`.
pub fn backoff_ceiling(base_ms: u64, max_ms: u64, attempt: u32) -> u64 {
    base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(40))
        .min(max_ms)
}

/// Judges attempt `attempt` (1 for the first) of a delivery sent as `request`: 2xx delivers;
/// 429, 5xx and a missing answer are retried (429 after its `Retry-After`) until
/// `max_attempts` are used up; every other answer, and a refused send, gives up at once.
pub fn judge(exchange: Exchange, attempt: u32, request: &DeliveryRequest) -> Next {
    let retry_after_ms = match exchange {
        Exchange::Answered {
            status: 200..=299, ..
        } => return Next::Delivered,
        Exchange::Answered {
            status: 429,
            retry_after_ms,
        } => retry_after_ms,
        Exchange::Answered {
            status: 500..=599, ..
        }
        | Exchange::Unanswered => None,
        Exchange::Answered { status, .. } => return Next::Failed(Some(GiveUp::NotRetried(status))),
        Exchange::Refused => return Next::Failed(None),
    };
    if attempt >= request.max_attempts {
        return Next::Failed(Some(GiveUp::UsedUp(request.max_attempts)));
    }
    Next::Retry {
        retry_after_ms,
        ceiling_ms: backoff_ceiling(request.base_ms, request.max_ms, attempt),
    }
}

/// A delivery's state after an attempt (the attempt itself is appended to its log, and its
/// lease dropped, by the backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterAttempt {
    /// New status.
    pub status: DeliveryStatus,
    /// When the next attempt is due (ms): only while pending.
    pub next_at: Option<i64>,
    /// When it ended (ms): once delivered or failed.
    pub finished_at: Option<i64>,
}

/// What an attempt recorded at `now` (ms) with `verdict` leaves behind.
pub fn after_attempt(verdict: Verdict, now: i64) -> AfterAttempt {
    match verdict {
        Verdict::Delivered => AfterAttempt {
            status: DeliveryStatus::Delivered,
            next_at: None,
            finished_at: Some(now),
        },
        Verdict::Failed => AfterAttempt {
            status: DeliveryStatus::Failed,
            next_at: None,
            finished_at: Some(now),
        },
        Verdict::RetryAt(at) => AfterAttempt {
            status: DeliveryStatus::Pending,
            next_at: Some(at),
            finished_at: None,
        },
    }
}

/// A retry by hand refused: only a failed delivery can be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRetryable {
    /// The delivery.
    pub id: Uuid,
    /// Where it is.
    pub status: DeliveryStatus,
}

impl std::fmt::Display for NotRetryable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delivery {} is {}; only a failed delivery can be retried",
            self.id,
            self.status.as_str()
        )
    }
}

impl std::error::Error for NotRetryable {}

/// A retry by hand of delivery `id` in `status`, at `now` (ms): pending again, due at once,
/// no longer finished.
pub fn retry(id: Uuid, status: DeliveryStatus, now: i64) -> Result<AfterAttempt, NotRetryable> {
    match status {
        DeliveryStatus::Failed => Ok(AfterAttempt {
            status: DeliveryStatus::Pending,
            next_at: Some(now),
            finished_at: None,
        }),
        status => Err(NotRetryable { id, status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max_attempts: u32) -> DeliveryRequest {
        DeliveryRequest {
            method: "POST".into(),
            url: "https://example.com/hook".into(),
            headers: Default::default(),
            sealed_headers: Default::default(),
            signing_secret: None,
            timeout_ms: 1_000,
            max_attempts,
            base_ms: 1_000,
            max_ms: 5_000,
            refused: None,
        }
    }

    fn answered(status: u16) -> Exchange {
        Exchange::Answered {
            status,
            retry_after_ms: None,
        }
    }

    #[test]
    fn a_2xx_delivers_even_on_the_last_attempt() {
        for status in [200, 204, 299] {
            assert_eq!(judge(answered(status), 3, &request(3)), Next::Delivered);
        }
    }

    #[test]
    fn server_errors_and_silence_are_retried_with_a_doubling_ceiling() {
        assert_eq!(
            judge(answered(503), 1, &request(5)),
            Next::Retry {
                retry_after_ms: None,
                ceiling_ms: 1_000
            }
        );
        assert_eq!(
            judge(Exchange::Unanswered, 3, &request(5)),
            Next::Retry {
                retry_after_ms: None,
                ceiling_ms: 4_000
            }
        );
        // The ceiling stops at max_ms, and huge attempt numbers do not overflow.
        assert_eq!(backoff_ceiling(1_000, 5_000, 4), 5_000);
        assert_eq!(backoff_ceiling(u64::MAX, u64::MAX, u32::MAX), u64::MAX);
    }

    #[test]
    fn a_429_waits_for_its_retry_after() {
        let limited = Exchange::Answered {
            status: 429,
            retry_after_ms: Some(7_000),
        };
        assert_eq!(
            judge(limited, 2, &request(5)),
            Next::Retry {
                retry_after_ms: Some(7_000),
                ceiling_ms: 2_000
            }
        );
    }

    #[test]
    fn other_answers_and_refused_sends_give_up_at_once() {
        for status in [400, 404, 410, 301, 100] {
            let next = judge(answered(status), 1, &request(5));
            assert_eq!(next, Next::Failed(Some(GiveUp::NotRetried(status))));
        }
        assert_eq!(
            GiveUp::NotRetried(404).error(None),
            "answered 404; not retried"
        );
        assert_eq!(judge(Exchange::Refused, 1, &request(5)), Next::Failed(None));
    }

    #[test]
    fn the_last_retryable_attempt_gives_up_and_says_so() {
        let next = judge(Exchange::Unanswered, 3, &request(3));
        assert_eq!(next, Next::Failed(Some(GiveUp::UsedUp(3))));
        assert_eq!(
            GiveUp::UsedUp(3).error(Some("no answer within timeout_ms (1000)".into())),
            "no answer within timeout_ms (1000); max_attempts (3) used up"
        );
        assert_eq!(GiveUp::UsedUp(1).error(None), "max_attempts (1) used up");
    }

    #[test]
    fn delivered_and_failed_end_the_delivery_a_retry_keeps_it_pending() {
        assert_eq!(
            after_attempt(Verdict::Delivered, 7),
            AfterAttempt {
                status: DeliveryStatus::Delivered,
                next_at: None,
                finished_at: Some(7)
            }
        );
        assert_eq!(
            after_attempt(Verdict::Failed, 7),
            AfterAttempt {
                status: DeliveryStatus::Failed,
                next_at: None,
                finished_at: Some(7)
            }
        );
        assert_eq!(
            after_attempt(Verdict::RetryAt(90), 7),
            AfterAttempt {
                status: DeliveryStatus::Pending,
                next_at: Some(90),
                finished_at: None
            }
        );
    }

    #[test]
    fn only_a_failed_delivery_can_be_retried() {
        let id = Uuid::nil();
        assert_eq!(
            retry(id, DeliveryStatus::Failed, 5),
            Ok(AfterAttempt {
                status: DeliveryStatus::Pending,
                next_at: Some(5),
                finished_at: None
            })
        );
        for status in [DeliveryStatus::Pending, DeliveryStatus::Delivered] {
            let refused = retry(id, status, 5).unwrap_err();
            assert_eq!(refused.status, status);
            assert_eq!(
                refused.to_string(),
                format!(
                    "delivery {id} is {}; only a failed delivery can be retried",
                    status.as_str()
                )
            );
        }
    }
}
