//! Settings of `wharf serve`: defaults, overridden by environment variables, overridden by flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Webhook ingress, admin API and workers.
    #[default]
    All,
    /// Webhook ingress and admin API only: runs are queued for other nodes.
    Ingress,
    /// Claims and runs only, with no listener at all (needs a shared store).
    Worker,
}

/// Everything `wharf serve` can be told. Secrets are redacted in `Debug`.
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "WHARF_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder for the SQLite database, compiled modules and the generated admin token hash.
    #[arg(long, env = "WHARF_DATA_DIR", default_value = "./wharf-data")]
    pub data_dir: PathBuf,
    /// What this node does: `all`, `ingress` (HTTP only, runs nothing) or `worker` (runs queued
    /// work, no listener; needs `--database postgres://…`).
    #[arg(long, env = "WHARF_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// The store: `postgres://…` for several nodes sharing one PostgreSQL database;
    /// `sqlite://PATH` for a SQLite file elsewhere; unset: `wharf.db` in the data folder.
    #[arg(long, env = "WHARF_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Base URL under which callers reach this server (for printed webhook URLs);
    /// defaults to http://<listen>.
    #[arg(long, env = "WHARF_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest accepted webhook body, in bytes.
    #[arg(long, env = "WHARF_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most headers a request may carry; more is answered `431`.
    #[arg(long, env = "WHARF_MAX_HEADER_COUNT", default_value_t = 100)]
    pub max_header_count: usize,
    /// Largest request head (request line and headers together), in bytes; more is answered
    /// `431`. At least 8192.
    #[arg(long, env = "WHARF_MAX_HEADER_BYTES", default_value_t = 64 << 10,
        value_parser = clap::value_parser!(u64).range(8192..))]
    pub max_header_bytes: u64,
    /// Longest request target (path and query string), in bytes; longer is answered `414`.
    #[arg(long, env = "WHARF_MAX_URL_BYTES", default_value_t = 8 << 10)]
    pub max_url_bytes: usize,
    /// Seconds a client has to send a request's headers; a slower one is disconnected.
    #[arg(long, env = "WHARF_HEADER_TIMEOUT_SECONDS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_seconds: u64,
    /// Seconds a client has to send a request body (any route) once its headers are in; a slower
    /// one is answered `408`.
    #[arg(long, env = "WHARF_BODY_TIMEOUT_SECONDS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_seconds: u64,
    /// Most client connections served at once; further connections wait in the listen backlog
    /// until one closes.
    #[arg(long, env = "WHARF_MAX_CONNECTIONS", default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    // Limits on what one client can hold or try; the body limits of the other routes are
    // constants (`api::MAX_SIGN_IN_BODY`, `api::MAX_ADMIN_BODY`).
    /// Most connections one client address holds at once (an IPv6 client counts by its /64);
    /// further ones are closed at once. 0: no cap. Behind a reverse proxy every caller shares
    /// the proxy's address: raise the cap or set 0 there.
    #[arg(long, env = "WHARF_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    pub max_connections_per_client: u64,
    /// Largest fleet document (`POST /api/v1/projects/{id}/fleets`, `PUT /api/v1/fleets/{id}`),
    /// in bytes; larger is answered `413`. Inline Wasm modules (up to 16 MiB each) travel in it
    /// as base64.
    #[arg(long, env = "WHARF_MAX_DOCUMENT_BYTES", default_value_t = 64 << 20)]
    pub max_document_bytes: usize,
    /// Wrong admin tokens (at sign-in or as a bearer token) one client address may send per
    /// minute; past them it is answered `429` with `Retry-After` until the minute is over.
    /// 0: no limit (failures are still logged).
    #[arg(long, env = "WHARF_MAX_FAILED_SIGN_INS", default_value_t = 10)]
    pub max_failed_sign_ins: u32,
    /// Vessel threads for quick vessels; defaults to the number of cores (more only adds
    /// contention). 0 makes an ingress-only node: it accepts and queues, and runs nothing.
    #[arg(long, env = "WHARF_WORKERS", default_value_t = crate::scheduler::default_workers())]
    pub workers: usize,
    /// Runs claimed beyond the free vessel threads. Claims and finishes are batched, so a
    /// deeper prefetch spreads each transaction over more runs (measured: 9k runs/s drained
    /// with 2, 18k with 16, 21k with 64 on 2 cores); it also holds that many runs' leases.
    #[arg(long, env = "WHARF_PREFETCH", default_value_t = 32)]
    pub prefetch: usize,
    /// Extra vessel threads for vessels running longer than 100 ms, so that slow guests do not
    /// starve quick ones.
    #[arg(long, env = "WHARF_MAX_SLOW_VESSELS", default_value_t = 32)]
    pub max_slow_vessels: usize,
    /// Attempts after which a run whose worker keeps being lost (e.g. it crashes the node each
    /// time) is failed with reason `max_attempts`.
    #[arg(long, env = "WHARF_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Niceness of the vessel threads, 0 to 19. Above 0, when webhook calls and vessels both want
    /// the CPU, calls are answered first and runs drain later (measured at 10 on one core: +16 %
    /// accepted calls/s, −19 % completed runs/s). 0, the default, favours completed runs.
    #[arg(long, env = "WHARF_VESSEL_NICE", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub vessel_nice: u8,
    /// Most runs this node executes at once (claimed and not yet ended), whatever their lane;
    /// 0: no cap beyond `--workers`, `--prefetch` and `--max-slow-vessels`.
    #[arg(long, env = "WHARF_MAX_RUNNING", default_value_t = 0)]
    pub max_running: usize,
    /// Most runs one fleet may have queued, held ones included; a call past it is answered
    /// `429` with `Retry-After`, and other fleets are unaffected. 0: no cap.
    #[arg(long, env = "WHARF_MAX_QUEUED_PER_FLEET", default_value_t = 10_000)]
    pub max_queued_per_fleet: u64,
    /// Free space the data folder's volume must keep: below it, webhook calls are answered `503`
    /// with `Retry-After` instead of filling the disk. Bytes or a size such as `256MiB`, `1GB`;
    /// 0 turns the check off.
    #[arg(long, env = "WHARF_MIN_FREE_DISK", default_value = "256MiB", value_parser = parse_size)]
    pub min_free_disk: u64,
    /// Seconds running vessels get to finish after a shutdown signal.
    #[arg(long, env = "WHARF_GRACE_SECONDS", default_value_t = 10)]
    pub grace_seconds: u64,
    /// Seconds a claimed run is held before another worker may take it over.
    #[arg(long, env = "WHARF_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,
    /// The admin token; when unset, one is generated at first start and only its hash is kept.
    #[arg(
        long = "admin-token",
        env = "WHARF_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Key sealing stored secrets (HMAC secrets, destination credentials): base64 of 32 bytes.
    /// Default: a key generated into the data folder (`secret.key`, mode 0600). Nodes sharing a
    /// PostgreSQL database must all be given the same key.
    #[arg(long = "secret-key", env = "WHARF_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Do not create the demo org, project and fleet on first start.
    #[arg(long)]
    pub no_demo: bool,
    /// Days finished runs (and requests left without a run) are kept; 0 keeps them forever.
    #[arg(long, env = "WHARF_RETAIN_DAYS", default_value_t = 30)]
    pub retain_days: u32,
    /// A finer age than `retain_days`, which it overrides (for tests; not a flag).
    #[arg(skip)]
    pub retain: Option<Duration>,
    /// Time between two retention passes (tests shorten it; not a flag).
    #[arg(skip = Duration::from_secs(60))]
    pub retain_every: Duration,
    /// Most deliveries to destinations this node sends at once; one destination gets at most
    /// an eighth of them (at least 1), so a slow or failing one cannot hold up the others.
    /// 0 sends nothing from this node.
    #[arg(long, env = "WHARF_MAX_DELIVERIES", default_value_t = 64)]
    pub max_deliveries: usize,
    /// CIDR ranges deliveries may not connect to, comma-separated, on top of the internal
    /// networks denied by default (loopback, private, CGNAT, ULA, link-local, multicast,
    /// reserved, cloud metadata addresses, and their IPv4-in-IPv6 forms). Checked on the
    /// resolved address.
    #[arg(long, env = "WHARF_EGRESS_DENY", value_delimiter = ',', value_parser = parse_net)]
    pub egress_deny: Vec<ipnet::IpNet>,
    /// CIDR ranges deliveries may connect to even inside a denied range, comma-separated: the
    /// most specific range decides (on a tie `--egress-deny` wins, and an allow beats a default
    /// denial), so `--egress-allow 127.0.0.1` lets deliveries reach a receiver on this host.
    #[arg(long, env = "WHARF_EGRESS_ALLOW", value_delimiter = ',', value_parser = parse_net)]
    pub egress_allow: Vec<ipnet::IpNet>,
    /// An `http://` or `https://` proxy every delivery goes through. Without it, deliveries
    /// connect directly whatever `HTTP_PROXY`, `HTTPS_PROXY` or `ALL_PROXY` say.
    #[arg(long, env = "WHARF_EGRESS_PROXY", value_parser = parse_proxy)]
    pub egress_proxy: Option<String>,
    /// Also serve `GET /metrics` on this address, without the admin token (for a scraper on a
    /// private network); `/metrics` on the main address keeps needing the token.
    #[arg(long, env = "WHARF_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Origins (e.g. `https://admin.example.com`) whose browser pages may call the API; repeat
    /// or separate with commas. Default: none, so no CORS headers are sent and browsers keep
    /// other sites' pages from reading answers.
    #[arg(long = "cors-origin", env = "WHARF_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
}

/// A CIDR range, or an address as a range of one.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    crate::outbox::EgressPolicy::parse_list(s)?
        .pop()
        .ok_or_else(|| "an empty range".to_owned())
}

/// A proxy URL: `http://` or `https://` with a host.
fn parse_proxy(s: &str) -> Result<String, String> {
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(s.to_owned())
        }
        // The URL may carry the proxy's credentials: not repeated.
        _ => Err("not a proxy URL (http://host:port or https://host:port)".to_owned()),
    }
}

impl Config {
    /// Defaults with a given data folder (for tests and embedding).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            data_dir: data_dir.into(),
            role: Role::All,
            database: None,
            public_url: None,
            max_body_bytes: 1 << 20,
            max_header_count: 100,
            max_header_bytes: 64 << 10,
            max_url_bytes: 8 << 10,
            header_timeout_seconds: 10,
            body_timeout_seconds: 30,
            max_connections: 1024,
            max_connections_per_client: 256,
            max_document_bytes: 64 << 20,
            max_failed_sign_ins: 10,
            workers: crate::scheduler::default_workers(),
            prefetch: 32,
            max_slow_vessels: 32,
            max_attempts: 3,
            vessel_nice: 0,
            max_running: 0,
            max_queued_per_fleet: 10_000,
            min_free_disk: 256 << 20,
            grace_seconds: 10,
            lease_seconds: 30,
            admin_token: None,
            secret_key: None,
            no_demo: false,
            retain_days: 30,
            retain: None,
            retain_every: Duration::from_secs(60),
            metrics_listen: None,
            cors_origins: Vec::new(),
            max_deliveries: 64,
            egress_deny: Vec::new(),
            egress_allow: Vec::new(),
            egress_proxy: None,
        }
    }

    /// How long finished runs are kept; `None`: forever.
    pub fn retention(&self) -> Option<Duration> {
        self.retain.or_else(|| {
            (self.retain_days > 0)
                .then(|| Duration::from_secs(u64::from(self.retain_days) * 86_400))
        })
    }

    /// Grace period of a shutdown.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_seconds)
    }
}

/// A size in bytes: a plain number, or one with a unit (`256MiB`, `1 GB`, `512k`).
fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("not a size ({e}); write bytes or e.g. 256MiB, 1GB"))
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("role", &self.role)
            .field("database", &self.database.as_ref().map(|_| "<set>"))
            .field("public_url", &self.public_url)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_header_count", &self.max_header_count)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_url_bytes", &self.max_url_bytes)
            .field("header_timeout_seconds", &self.header_timeout_seconds)
            .field("body_timeout_seconds", &self.body_timeout_seconds)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .field("max_document_bytes", &self.max_document_bytes)
            .field("max_failed_sign_ins", &self.max_failed_sign_ins)
            .field("workers", &self.workers)
            .field("prefetch", &self.prefetch)
            .field("max_slow_vessels", &self.max_slow_vessels)
            .field("max_attempts", &self.max_attempts)
            .field("vessel_nice", &self.vessel_nice)
            .field("max_running", &self.max_running)
            .field("max_queued_per_fleet", &self.max_queued_per_fleet)
            .field("min_free_disk", &self.min_free_disk)
            .field("grace_seconds", &self.grace_seconds)
            .field("lease_seconds", &self.lease_seconds)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("no_demo", &self.no_demo)
            .field("retain_days", &self.retain_days)
            .field("retain", &self.retain)
            .field("retain_every", &self.retain_every)
            .field("metrics_listen", &self.metrics_listen)
            .field("cors_origins", &self.cors_origins)
            .field("max_deliveries", &self.max_deliveries)
            .field("egress_deny", &self.egress_deny)
            .field("egress_allow", &self.egress_allow)
            .field("egress_proxy", &self.egress_proxy.as_ref().map(|_| "<set>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Config {
        Serve::parse_from(std::iter::once("wharf").chain(args.iter().copied())).config
    }

    #[test]
    fn retention_defaults_to_30_days_and_0_keeps_forever() {
        let day = Duration::from_secs(86_400);
        assert_eq!(parse(&[]).retention(), Some(30 * day));
        assert_eq!(parse(&["--retain-days", "7"]).retention(), Some(7 * day));
        assert_eq!(parse(&["--retain-days", "0"]).retention(), None);
        assert_eq!(parse(&[]).retain_every, Duration::from_secs(60));
        assert_eq!(Config::with_data_dir("x").retention(), Some(30 * day));
    }

    #[test]
    fn backlog_and_free_disk_limits_have_defaults_and_take_sizes() {
        let c = parse(&[]);
        assert_eq!(c.max_queued_per_fleet, 10_000);
        assert_eq!(c.min_free_disk, 256 << 20);
        assert_eq!(
            Config::with_data_dir("x").min_free_disk,
            c.min_free_disk,
            "the library default is the flag's"
        );
        let c = parse(&["--min-free-disk", "1GiB", "--max-queued-per-fleet", "0"]);
        assert_eq!(c.min_free_disk, 1 << 30);
        assert_eq!(c.max_queued_per_fleet, 0);
        assert_eq!(parse(&["--min-free-disk", "4096"]).min_free_disk, 4096);
        assert!(Serve::try_parse_from(["wharf", "--min-free-disk", "lots"]).is_err());
    }

    #[test]
    fn egress_lists_parse_comma_separated() {
        let c = parse(&[
            "--egress-deny",
            "127.0.0.0/8,10.0.0.1",
            "--max-deliveries",
            "3",
        ]);
        assert_eq!(c.egress_deny.len(), 2);
        assert_eq!(c.egress_deny[1].to_string(), "10.0.0.1/32");
        assert_eq!(c.max_deliveries, 3);
        assert!(Serve::try_parse_from(["wharf", "--egress-allow", "nope"]).is_err());
        assert!(Serve::try_parse_from(["wharf", "--egress-proxy", "socks5://h:1"]).is_err());
        let c = parse(&["--egress-proxy", "http://proxy.internal:3128"]);
        assert_eq!(
            c.egress_proxy.as_deref(),
            Some("http://proxy.internal:3128")
        );
    }
}
