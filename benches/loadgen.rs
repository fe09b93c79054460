//! The fixed-rate HTTP load client of `benches/load.sh`: POSTs one body at a steady rate over
//! kept-alive connections and reports latency without coordinated omission.
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080/webhooks/ID \
//!     --body payload.json --rate 500 --duration 15 --connections 64 [--out run-ids.txt]
//! ```
//!
//! Open loop (`--rate R`): request `i` is due at `start + i / R`, whatever happened before it, and
//! its latency is taken from that due time, not from when it was actually written. A server that
//! stalls therefore shows its stall in every request that queued up behind it, as a user would
//! see it, instead of silently lowering the send rate (wrk's coordinated omission). Due requests
//! are dealt round-robin to the connections; each connection has one request in flight (HTTP/1.1
//! without pipelining), so a connection that is behind sends its next due request at once.
//! Timers tick in milliseconds, so a request may leave up to 1 ms after its due time; that delay
//! is counted in its latency.
//!
//! Closed loop (`--rate 0`): every connection sends its next request as soon as the previous
//! answer is in, like wrk, to find the maximum rate; latency is then taken from the actual send.
//!
//! Prints one line: `RESULT sent ok non2xx errors achieved_rate p50_ms p99_ms max_ms`, where
//! `errors` are connection failures and time-outs, and `achieved_rate` is answers per second from
//! the start to the last answer. With `--out FILE`, writes the `data.fleet_run_id` of every `201`
//! answer, one a line, so the runs can be looked up afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// An answer slower than this counts as an error, so a hung server cannot hang the client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(about = "POSTs a body at a fixed rate (open loop) or as fast as possible (--rate 0)")]
struct Args {
    /// `http://host:port/path` to POST to.
    #[arg(long)]
    url: hyper::Uri,
    /// File whose bytes are the request body.
    #[arg(long)]
    body: PathBuf,
    /// Requests per second over all connections; 0 for closed loop, as fast as answers come.
    #[arg(long)]
    rate: f64,
    /// Seconds of load.
    #[arg(long)]
    duration: f64,
    /// Kept-alive TCP connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// Where to write the fleet run id of every 201 answer.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What every connection task shares.
struct Plan {
    addr: String,
    host: String,
    path: String,
    content_type: String,
    body: Bytes,
    rate: f64,
    connections: usize,
    /// Number of due requests in open loop.
    total: u64,
    start: Instant,
    /// End of sending in closed loop.
    end: Instant,
    keep_ids: bool,
}

/// One connection's counts, merged at the end.
#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    non2xx: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    run_ids: Vec<String>,
    last_answer: Option<Instant>,
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One POST on the connection (opened again first if it was lost); returns status and body.
async fn post(sender: &mut Option<Sender>, plan: &Plan) -> anyhow::Result<(u16, Bytes)> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(&plan.addr).await?);
    }
    let s = sender.as_mut().expect("connected above");
    s.ready().await?;
    let req = hyper::Request::post(plan.path.as_str())
        .header(hyper::header::HOST, plan.host.as_str())
        .header(hyper::header::CONTENT_TYPE, plan.content_type.as_str())
        .body(Full::new(plan.body.clone()))?;
    let res = s.send_request(req).await?;
    let status = res.status().as_u16();
    // The whole body is read so that the connection can carry the next request.
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Connection `k` sends due requests `k, k + C, k + 2C, …` (open loop) or back to back until the
/// end (closed loop).
async fn connection(k: usize, mut sender: Option<Sender>, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    let mut i = k as u64;
    loop {
        let due = if plan.rate > 0.0 {
            if i >= plan.total {
                break;
            }
            let due = plan.start + Duration::from_secs_f64(i as f64 / plan.rate);
            i += plan.connections as u64;
            tokio::time::sleep_until(due.into()).await;
            due
        } else {
            let now = Instant::now();
            if now >= plan.end {
                break;
            }
            now
        };
        tally.sent += 1;
        match tokio::time::timeout(REQUEST_TIMEOUT, post(&mut sender, &plan)).await {
            Ok(Ok((status, body))) => {
                let now = Instant::now();
                tally.last_answer = Some(now);
                tally.latencies_us.push((now - due).as_micros() as u64);
                if (200..300).contains(&status) {
                    tally.ok += 1;
                } else {
                    tally.non2xx += 1;
                }
                if status == 201 && plan.keep_ids {
                    let answer: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    if let Some(id) = answer["data"]["fleet_run_id"].as_str() {
                        tally.run_ids.push(id.to_owned());
                    }
                }
            }
            Ok(Err(_)) | Err(_) => {
                tally.errors += 1;
                // A broken or timed-out connection is not reused; the next request opens one.
                sender = None;
            }
        }
    }
    tally
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

// One thread: the client is pinned to one core next to the server, and a single-threaded
// runtime is the cheapest way to drive many connections from it.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.url.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported");
    }
    let authority = args.url.authority().context("the URL has no host")?;
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let path = args
        .url
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    if args.connections == 0 || args.rate < 0.0 || args.duration <= 0.0 {
        bail!("--connections and --duration must be positive, --rate 0 or more");
    }
    let body =
        std::fs::read(&args.body).with_context(|| format!("reading {}", args.body.display()))?;

    // Connections are opened before the clock starts, so connecting is not counted as latency.
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(
            connect(&addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    let start = Instant::now();
    let plan = Arc::new(Plan {
        addr,
        host: authority.as_str().to_owned(),
        path,
        content_type: args.content_type,
        body: Bytes::from(body),
        rate: args.rate,
        connections: args.connections,
        total: (args.rate * args.duration).round() as u64,
        start,
        end: start + Duration::from_secs_f64(args.duration),
        keep_ids: args.out.is_some(),
    });
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(k, s)| tokio::spawn(connection(k, Some(s), plan.clone())))
        .collect();

    let mut all = Tally::default();
    for task in tasks {
        let t = task.await?;
        all.sent += t.sent;
        all.ok += t.ok;
        all.non2xx += t.non2xx;
        all.errors += t.errors;
        all.latencies_us.extend(t.latencies_us);
        all.run_ids.extend(t.run_ids);
        all.last_answer = all.last_answer.max(t.last_answer);
    }
    all.latencies_us.sort_unstable();
    let answered = all.ok + all.non2xx;
    let elapsed = all.last_answer.map_or(0.0, |t| (t - start).as_secs_f64());
    let achieved = answered as f64 / elapsed.max(f64::EPSILON);
    if let Some(out) = &args.out {
        let text: String = all.run_ids.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    println!(
        "RESULT {} {} {} {} {:.1} {:.2} {:.2} {:.2}",
        all.sent,
        all.ok,
        all.non2xx,
        all.errors,
        achieved,
        percentile_ms(&all.latencies_us, 50.0),
        percentile_ms(&all.latencies_us, 99.0),
        percentile_ms(&all.latencies_us, 100.0),
    );
    Ok(())
}
