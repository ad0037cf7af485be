//! The `aigw-extproc` binary: flags, logging, and the listeners (gRPC for Envoy, HTTP for
//! admin); SIGTERM or Ctrl-C drains in-flight streams, then exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aigw_extproc::metrics::Metrics;
use aigw_extproc::reload::{self, ConfigStore};
use aigw_extproc::server::ExtProc;
use anyhow::Context;
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser)]
#[command(
    name = "aigw-extproc",
    version,
    about = "Envoy external processor for AI traffic, configured by `aigw build`"
)]
struct Args {
    /// The filter config written by `aigw build`. Without it only the rate-limit service is
    /// served (`--ratelimit-config`).
    #[arg(
        long,
        env = "AIGW_EXTPROC_CONFIG",
        required_unless_present = "ratelimit_config"
    )]
    config: Option<PathBuf>,
    /// gRPC listen address: `host:port`, or `unix:PATH` for a Unix socket.
    #[arg(long, env = "AIGW_EXTPROC_LISTEN", default_value = "0.0.0.0:1063")]
    listen: String,
    /// Admin listen address (`/metrics`, `/health`).
    #[arg(
        long,
        env = "AIGW_EXTPROC_ADMIN_LISTEN",
        default_value = "0.0.0.0:1064"
    )]
    admin_listen: String,
    /// Log format.
    #[arg(
        long,
        env = "AIGW_EXTPROC_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, env = "AIGW_EXTPROC_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Also serve `envoy.service.ratelimit.v3.RateLimitService` on the gRPC listener, in
    /// memory, from these envoyproxy/ratelimit configuration files (one domain each; the
    /// standalone target's `ratelimit/` folder). A folder stands for its `.yaml` files. Repeat
    /// the flag, or separate with commas, for several.
    #[arg(
        long = "ratelimit-config",
        env = "AIGW_RATELIMIT_CONFIG",
        value_delimiter = ','
    )]
    ratelimit_config: Vec<PathBuf>,
    /// Load the configuration (every part and credential file it names included), say what it
    /// holds and exit: 0 when it loads, 1 when it does not. Nothing is served.
    #[arg(long)]
    check: bool,
}

/// The `(name, text)` of the rate-limit configuration files: each path, or the `.yaml` files
/// of a folder in name order.
fn ratelimit_files(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for path in paths {
        let mut names = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path)
                .with_context(|| format!("cannot read folder {}", path.display()))?
            {
                let entry =
                    entry.with_context(|| format!("cannot read folder {}", path.display()))?;
                let name = entry.path();
                if name.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    names.push(name);
                }
            }
            names.sort();
        } else {
            names.push(path.clone());
        }
        for name in names {
            let text = std::fs::read_to_string(&name)
                .with_context(|| format!("cannot read {}", name.display()))?;
            files.push((name.display().to_string(), text));
        }
    }
    Ok(files)
}

/// `--check`: loads the configuration once, as a start would.
fn check(args: &Args) -> ExitCode {
    if !args.ratelimit_config.is_empty() {
        let loaded = ratelimit_files(&args.ratelimit_config).and_then(|files| {
            aigw_extproc::ratelimit::Config::load(&files)
                .map(|_| files.len())
                .map_err(anyhow::Error::from)
        });
        match loaded {
            Ok(n) => println!("rate limits: {n} files"),
            Err(err) => {
                eprintln!("aigw-extproc: {err:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let Some(path) = &args.config else {
        return ExitCode::SUCCESS;
    };
    match aigw_extproc::config::load(path) {
        Ok(config) => {
            let rules: usize = config.routes.iter().map(|r| r.rules.len()).sum();
            println!(
                "{}: {} routes, {rules} rules, {} files",
                path.display(),
                config.routes.len(),
                config.files.len()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("aigw-extproc: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal, never into a log file or a collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let store = match &args.config {
        Some(path) => {
            let store = Arc::new(ConfigStore::load_waiting(path, Duration::from_secs(60)).await?);
            // Fetched credentials (cloud tokens) get a moment before the first request; a
            // backend whose credential is still missing answers 503 until its refresh succeeds.
            let missing = store
                .current()
                .credentials_ready(Duration::from_secs(15))
                .await;
            if !missing.is_empty() {
                tracing::warn!(backends = ?missing, "serving before these backends' credentials are available");
            }
            Some(store)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let admin = tokio::net::TcpListener::bind(&args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", args.admin_listen))?;
    tokio::spawn(aigw_extproc::admin::serve(admin, metrics.clone()));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    let ext_proc = match store {
        Some(store) => {
            tokio::spawn(reload::watch(store.clone(), metrics.clone()));
            health_reporter
                .set_serving::<ExternalProcessorServer<ExtProc>>()
                .await;
            Some(
                ExternalProcessorServer::new(ExtProc::new(store, metrics.clone()))
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            )
        }
        None => None,
    };
    let rate_limits = if args.ratelimit_config.is_empty() {
        None
    } else {
        let files = ratelimit_files(&args.ratelimit_config)?;
        let config = aigw_extproc::ratelimit::Config::load(&files)?;
        health_reporter
            .set_serving::<RateLimitServiceServer<aigw_extproc::ratelimit::Service>>()
            .await;
        tracing::info!(files = files.len(), "serving rate limits");
        Some(RateLimitServiceServer::new(
            aigw_extproc::ratelimit::Service::new(config, metrics.clone()),
        ))
    };
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health)
        .add_optional_service(ext_proc)
        .add_optional_service(rate_limits);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stop_rx.await;
    };
    let served = if let Some(path) = args.listen.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on unix:{}", path.display()))?;
        tracing::info!(listen = %args.listen, admin = %args.admin_listen, "aigw-extproc ready");
        tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        ))
    } else {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(listen = %args.listen, admin = %args.admin_listen, "aigw-extproc ready");
        tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        ))
    };
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight streams");
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(30), served).await {
        Ok(Ok(Ok(()))) => tracing::info!("stopped"),
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "server error while stopping"),
        Ok(Err(err)) => tracing::warn!(error = %err, "server task failed"),
        Err(_) => tracing::warn!("streams still open after 30 s; exiting anyway"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return check(&args);
    }
    init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("aigw-extproc: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("aigw-extproc: {err:#}");
            ExitCode::FAILURE
        }
    }
}
