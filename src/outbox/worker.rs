//! The delivery worker: one per node. It claims due deliveries in batches (as many as it has
//! free slots, at most a few per destination), sends each with the one shared HTTP client, and
//! records the attempt with what follows it: delivered, failed, or another attempt after a
//! backoff drawn with full jitter (or the receiver's `Retry-After`).
//!
//! A delivery is sent at least once: a node that dies between a send and its record leaves the
//! claim to lapse, and the delivery is sent again. A recorded `delivered` is never sent again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::egress::{EgressPolicy, PolicyResolver};
use crate::auth::secrets::{SealContext, SecretBox};
use crate::store::{AttemptRecord, Delivery, DeliveryAttempt, Outbox, Verdict};
use crate::util::now_ms;
use wharf_core::rules::delivery;

/// Most bytes of an answer's body kept with its attempt.
const RESPONSE_KEEP: usize = 4096;
/// How long a claim holds: the longest per-attempt timeout and a margin for the record.
const LEASE_MS: i64 = 330_000;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// Settings of the delivery worker.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Most deliveries in flight on this node (`--max-deliveries`); 0 sends nothing.
    pub max_deliveries: usize,
    /// Most deliveries of one destination in flight at once, across nodes.
    pub per_destination: usize,
    /// This node's name in claims.
    pub node_id: String,
    /// How often an idle worker looks for due deliveries without being woken.
    pub poll: Duration,
    /// Where deliveries may connect.
    pub egress: EgressPolicy,
    /// The proxy every delivery goes through (`--egress-proxy`); `None`: none, whatever the
    /// environment's `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` say.
    pub proxy: Option<String>,
}

impl OutboxConfig {
    /// Defaults: 64 in flight, an eighth of them per destination.
    pub fn new(max_deliveries: usize, egress: EgressPolicy) -> Self {
        OutboxConfig {
            max_deliveries,
            per_destination: (max_deliveries / 8).max(1),
            node_id: format!("node-{}", uuid::Uuid::new_v4()),
            poll: Duration::from_secs(1),
            egress,
            proxy: None,
        }
    }
}

/// What the scheduler needs to create deliveries at a run's end: the key sealing their secret
/// headers, and the bell that tells this node's worker there is something to send.
#[derive(Debug, Clone)]
pub struct OutboxHook {
    /// Seals and opens destination secrets.
    pub secrets: SecretBox,
    /// Rung when deliveries were created or re-opened.
    pub wake: Arc<Notify>,
}

/// The node's delivery worker; cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    inner: Arc<Inner>,
}

struct Inner {
    /// The outbox only: the worker neither reads nor writes runs.
    store: Arc<dyn Outbox>,
    /// Whether other nodes send from the same store (then no claim is anyone's leftover).
    shared: bool,
    secrets: SecretBox,
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    config: OutboxConfig,
    wake: Arc<Notify>,
}

impl Deliverer {
    /// Builds the worker and its HTTP client (see [`client`]); `shared` when other nodes send
    /// from the same store.
    pub fn new(
        store: Arc<dyn Outbox>,
        shared: bool,
        secrets: SecretBox,
        config: OutboxConfig,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let policy = Arc::new(config.egress.clone());
        let client = client(policy.clone(), config.proxy.as_deref())?;
        Ok(Deliverer {
            inner: Arc::new(Inner {
                store,
                shared,
                secrets,
                client,
                policy,
                config,
                wake,
            }),
        })
    }

    /// Claims and sends until `shutdown`; then gives sends in flight a few seconds to end.
    /// Those still running are dropped: their claims lapse and they are sent again.
    pub async fn run(&self, shutdown: CancellationToken) {
        let inner = &self.inner;
        if inner.config.max_deliveries == 0 {
            return;
        }
        if !inner.shared {
            // This node alone sends from this store: any claim is a previous process's.
            if let Err(e) = inner.store.release_deliveries().await {
                tracing::error!(error = %e, "releasing the last run's delivery claims failed");
            }
        }
        let slots = Arc::new(Semaphore::new(inner.config.max_deliveries));
        let mut sending = tokio::task::JoinSet::new();
        loop {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => p,
                _ = shutdown.cancelled() => break,
            };
            let Ok(first) = first else { break };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let now = now_ms();
            let claimed = match inner
                .store
                .claim_deliveries(
                    &inner.config.node_id,
                    permits.len(),
                    inner.config.per_destination,
                    now,
                    now + LEASE_MS,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "claiming deliveries failed");
                    Vec::new()
                }
            };
            let idle = claimed.len() < permits.len();
            for delivery in claimed {
                let Some(permit) = permits.pop() else { break };
                let me = self.clone();
                let span = tracing::info_span!("delivery", delivery_id = %delivery.id,
                    run_id = %delivery.run_id, destination = %delivery.destination);
                sending.spawn(tracing::Instrument::instrument(
                    async move {
                        me.deliver(delivery).await;
                        drop(permit);
                    },
                    span,
                ));
            }
            drop(permits);
            while sending.try_join_next().is_some() {}
            if idle {
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep(inner.config.poll) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
        let drain = async { while sending.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            sending.abort_all();
        }
    }

    /// One attempt of one claimed delivery, recorded.
    async fn deliver(&self, delivery: Delivery) {
        let (attempt, verdict) = self.attempt(&delivery).await;
        match (&attempt.status_code, &attempt.error) {
            (Some(200..=299), _) => {
                tracing::info!(
                    attempt = attempt.attempt,
                    status = attempt.status_code,
                    "delivered"
                )
            }
            _ => tracing::warn!(
                attempt = attempt.attempt,
                status = attempt.status_code,
                error = attempt.error.as_deref().unwrap_or(""),
                retry_in_ms = attempt.retry_in_ms,
                "delivery attempt failed"
            ),
        }
        if let Verdict::RetryAt(at) = verdict {
            // Ring this node's worker when the retry is due, rather than waiting for a poll.
            let wake = self.inner.wake.clone();
            let pause = Duration::from_millis((at - now_ms()).max(0) as u64);
            tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                wake.notify_one();
            });
        }
        let record = AttemptRecord {
            id: delivery.id,
            token: delivery.token,
            attempt,
            verdict,
        };
        for pause in [0u64, 100, 1000] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            match self.inner.store.record_attempts(vec![record.clone()]).await {
                Ok(held) => {
                    if held.first() != Some(&true) {
                        tracing::warn!("delivery claim lost before its attempt was recorded");
                    }
                    break;
                }
                Err(e) => tracing::error!(error = %e, "recording a delivery attempt failed"),
            }
        }
        // A slot is free, and the destination's share may have been what held others back.
        self.inner.wake.notify_one();
    }

    /// Sends once; what happened, and what follows.
    async fn attempt(&self, d: &Delivery) -> (DeliveryAttempt, Verdict) {
        let number = d.attempts.len() as u32 + 1;
        let at = now_ms();
        let started = Instant::now();
        let mut record = DeliveryAttempt {
            attempt: number,
            at,
            status_code: None,
            latency_ms: 0,
            response: None,
            error: None,
            backoff_ms: None,
            retry_in_ms: None,
        };
        let outcome = self.send(d).await;
        record.latency_ms = started.elapsed().as_millis() as u64;
        let exchange = match outcome {
            Sent::Answer {
                status,
                body,
                retry_after,
            } => {
                record.status_code = Some(status);
                record.response = Some(body);
                delivery::Exchange::Answered {
                    status,
                    retry_after_ms: retry_after,
                }
            }
            Sent::Retryable(e) => {
                record.error = Some(e);
                delivery::Exchange::Unanswered
            }
            Sent::Permanent(e) => {
                record.error = Some(e);
                delivery::Exchange::Refused
            }
        };
        match delivery::judge(exchange, number, &d.request) {
            delivery::Next::Delivered => (record, Verdict::Delivered),
            delivery::Next::Failed(why) => {
                if let Some(why) = why {
                    record.error = Some(why.error(record.error.take()));
                }
                (record, Verdict::Failed)
            }
            delivery::Next::Retry {
                retry_after_ms,
                ceiling_ms,
            } => {
                let pause =
                    retry_after_ms.unwrap_or_else(|| rand::rng().random_range(0..=ceiling_ms));
                record.backoff_ms = Some(ceiling_ms);
                record.retry_in_ms = Some(pause);
                (record, Verdict::RetryAt(now_ms() + pause as i64))
            }
        }
    }

    /// The HTTP exchange.
    async fn send(&self, d: &Delivery) -> Sent {
        let inner = &self.inner;
        if let Some(why) = &d.request.refused {
            return Sent::Permanent(why.clone());
        }
        let url = match reqwest::Url::parse(&d.request.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => {
                return Sent::Permanent(
                    "the URL with variables filled in is not a valid http(s) URL".into(),
                );
            }
        };
        // An address in the URL is not resolved, so the resolver never sees it: check it here.
        let literal = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<std::net::IpAddr>().ok());
        if let Some(ip) = literal
            && !inner.policy.allows(ip)
        {
            return Sent::Permanent(format!("egress policy refused {ip}: the address is denied"));
        }
        let method = match reqwest::Method::from_bytes(d.request.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Sent::Permanent(format!("unknown method {:?}", d.request.method)),
        };
        let body = d.body.clone().unwrap_or_default();
        let mut headers = reqwest::header::HeaderMap::new();
        let mut add = |name: &str, value: &str| -> Result<(), String> {
            let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name {name:?} is not valid"))?;
            let mut v = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header {name} is not a valid header value"))?;
            v.set_sensitive(true);
            headers.insert(n, v);
            Ok(())
        };
        for (k, v) in &d.request.headers {
            if let Err(e) = add(k, v) {
                return Sent::Permanent(e);
            }
        }
        for (k, sealed) in &d.request.sealed_headers {
            let place = SealContext::delivery_header(d.id, k);
            let Ok(clear) = inner.secrets.open_string(&place, sealed) else {
                return Sent::Permanent(format!(
                    "the stored {k} cannot be opened with this server's secret key"
                ));
            };
            if let Err(e) = add(k, clear.expose()) {
                return Sent::Permanent(e);
            }
        }
        if let Some(sealed) = &d.request.signing_secret {
            // Copied from the destination as it was sealed there, so it opens for that place.
            let place = SealContext::destination(d.fleet_id, &d.destination, "signing_secret");
            let Ok(secret) = inner.secrets.open_string(&place, sealed) else {
                return Sent::Permanent(
                    "the stored signing secret cannot be opened with this server's secret key"
                        .into(),
                );
            };
            let id = d.id.to_string();
            let ts = now_ms() / 1000;
            let Some(sig) = super::sign::sign(secret.expose(), &id, ts, body.as_bytes()) else {
                return Sent::Permanent("the stored signing secret is not whsec_ + base64".into());
            };
            for (k, v) in [
                ("webhook-id", id),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", sig),
            ] {
                if let Err(e) = add(k, &v) {
                    return Sent::Permanent(e);
                }
            }
        }
        let sent = inner
            .client
            .request(method, url)
            .headers(headers)
            .body(body)
            .timeout(Duration::from_millis(d.request.timeout_ms))
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return classify(e, d.request.timeout_ms),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut kept = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = RESPONSE_KEEP - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if kept.len() >= RESPONSE_KEEP {
                        break;
                    }
                }
                Ok(None) => break,
                // The status is what counts; a body cut short is kept as far as it came.
                Err(_) => break,
            }
        }
        Sent::Answer {
            status,
            body: String::from_utf8_lossy(&kept).into_owned(),
            retry_after,
        }
    }
}

/// The delivery client: one connection pool for every delivery, redirects not followed, every
/// resolved address checked against the egress policy. Proxy variables of the environment are
/// ignored — a proxy resolves names itself, past the policy's resolver — so only an explicit
/// `proxy` is used.
pub fn client(policy: Arc<EgressPolicy>, proxy: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PolicyResolver(policy)))
        .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .no_proxy();
    let builder = match proxy {
        Some(url) => builder.proxy(
            reqwest::Proxy::all(url)
                .map_err(|e| anyhow::anyhow!("--egress-proxy is not a proxy URL: {e}"))?,
        ),
        None => builder,
    };
    Ok(builder.build()?)
}

/// How an exchange ended.
enum Sent {
    /// An answer, with the start of its body and its `Retry-After` in ms.
    Answer {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// No answer, worth another attempt (timeout, connection error).
    Retryable(String),
    /// No answer and none to expect (egress refused, unusable request).
    Permanent(String),
}

/// A failed send, without the URL (it may carry values of variables). The resolver's refusal
/// may reach here wrapped in errors that hide it from `source()` (an `io::Error` shows its inner
/// error's message but skips it as a source), so it is recognised by its message.
fn classify(e: reqwest::Error, timeout_ms: u64) -> Sent {
    if e.is_timeout() {
        return Sent::Retryable(format!("no answer within timeout_ms ({timeout_ms})"));
    }
    let e = e.without_url();
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    const REFUSED: &str = "egress policy refused";
    match chain.find(REFUSED) {
        Some(at) => Sent::Permanent(chain[at..].to_owned()),
        None => Sent::Retryable(chain),
    }
}

/// `Retry-After` in ms: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    let ms = match v.parse::<u64>() {
        Ok(secs) => secs.saturating_mul(1000),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (at.timestamp_millis() - now_ms()).max(0) as u64
        }
    };
    Some(ms.min(MAX_RETRY_AFTER_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("1"), Some(1000));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_ceiling_doubles_to_the_cap() {
        use crate::outbox::destination::DeliveryBackoff;
        let c: Vec<u64> = (1..=5)
            .map(|n| DeliveryBackoff::ceiling(100, 500, n))
            .collect();
        assert_eq!(c, [100, 200, 400, 500, 500]);
    }
}
