//! The `wharf` command: `serve` runs the service; `run` and `bundle` serve guest authors; the
//! client commands (`apply`, `fleets`, `webhook`, `runs`, `trigger`) drive a server's admin API.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use wharf::config::Config;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Turns webhooks into sandboxed runs of Wasm and Rhai vessels"
)]
struct Cli {
    /// Log lines as text, or as JSON objects (one per line, with span fields such as
    /// `request_id` and `run_id`) for a log pipeline.
    #[arg(long, env = "WHARF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: webhook ingress, admin API and workers.
    Serve(Box<Config>),
    /// Run one vessel (.wasm, .rhai) or a fleet file (.json) locally on a payload, through the
    /// same sandbox as the server. Exits with the vessel's exit status.
    Run(Box<wharf::local::RunArgs>),
    /// Print a fleet file with its `source_file` / `wasm_file` code inlined: a document ready
    /// for `POST /api/v1/projects/{project}/fleets`.
    Bundle {
        /// The fleet file.
        fleet_file: std::path::PathBuf,
    },
    #[command(flatten)]
    Client(wharf::cli::ClientCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The local commands print their own report; only warnings belong on stderr there.
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // Span fields (the request's `request_id`, the run's `run_id`) go on every line, flat,
        // so a log pipeline can group by them without walking a span list.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(config) => runtime.block_on(serve(*config)),
        Command::Run(args) => {
            let run = runtime.block_on(wharf::local::run(&args))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&run.report)?);
            } else {
                print!("{}", wharf::local::render(&run));
            }
            drop(runtime);
            std::process::exit(run.exit_code);
        }
        Command::Bundle { fleet_file } => {
            println!("{}", wharf::local::bundle(&fleet_file)?);
            Ok(())
        }
        Command::Client(command) => {
            let code = runtime.block_on(wharf::cli::run(&command));
            drop(runtime);
            std::process::exit(code);
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let worker = config.role == wharf::config::Role::Worker;
    let listener = if worker {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?,
        )
    };
    // The address actually bound: with port 0 the system picked it, and whoever started the
    // process (a supervisor, a test) learns it from this line rather than guessing a free port.
    let bound = match &listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let prepared = wharf::server::prepare(config, listener).await?;
    let base = prepared.public_url.clone();
    match bound {
        None => println!("wharf worker running (no listener)"),
        Some(addr) if base == format!("http://{addr}") => println!("wharf listening on {base}"),
        Some(addr) => println!("wharf listening on http://{addr} (public URL {base})"),
    }
    if bound.is_some() {
        println!("Dashboard: {base}/ui/ (sign in with the admin token)");
    }
    let token_hint = match &prepared.generated_admin_token {
        Some(token) => {
            println!("\nAdmin token (shown once; only its hash is kept): {token}");
            token.clone()
        }
        None => "$WHARF_ADMIN_TOKEN".to_string(),
    };
    if let Some(demo) = &prepared.demo {
        println!("\nDemo fleet {} is ready. Trigger it:\n", demo.fleet_id);
        println!(
            "  curl -sS -X POST {} -H 'content-type: application/json' -d '{}'\n",
            demo.url,
            wharf::server::DEMO_PAYLOAD
        );
        println!(
            "Then watch it on the dashboard, or read the run (use the fleet_run_id from the answer):\n"
        );
        println!(
            "  curl -sS -H 'authorization: Bearer {token_hint}' {base}/api/v1/runs/<fleet_run_id>\n"
        );
    }
    // Stdout may be a pipe the parent reads line by line: every line is out before serving.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new requests, running vessels get the grace period");
        signal.cancel();
    });
    prepared.run(shutdown).await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
