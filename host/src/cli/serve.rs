//! `sessiond serve`: runs the API until SIGINT or SIGTERM, then shuts down
//! gracefully (in-flight requests and end hooks finish first).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{Config, LogConfig, LogFormat, defaults};

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// The config file.
    #[arg(long, short, default_value = defaults::CONFIG_PATH, env = "SESSIOND_CONFIG")]
    config: PathBuf,
}

pub(super) fn run(args: ServeArgs) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr as `[log]` says (`RUST_LOG`, when set, chooses the
/// levels): text with ANSI colours only when stderr is a terminal (a log
/// file or a journal gets plain text), or JSON lines with the fields of
/// every span the event happened in. With `[log.otlp]`, spans are also
/// exported (at that section's own levels); the exporter is returned, to be
/// flushed at exit.
fn init_logging(
    config: &LogConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<crate::trace::otlp::Export>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.level));
    let spans = if config.spans {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_span_events(spans);
    let log = match config.format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![log];
    let mut export = None;
    if let Some(otlp) = &config.otlp {
        let (layer, started) = crate::trace::otlp::Export::start(otlp, runtime.handle().clone())?;
        layers.push(
            layer
                .with_filter(tracing_subscriber::EnvFilter::new(&otlp.level))
                .boxed(),
        );
        export = Some(started);
    }
    // Fails only when a subscriber is already set (a test harness's).
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(export)
}

fn serve(args: ServeArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let export = init_logging(&config.log, &runtime)?;
    let served = runtime.block_on(async move {
        let addr = config.listen_addr()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        crate::server::serve(listener, config, shutdown_signal()).await
    });
    if let Some(export) = export {
        export.shutdown();
    }
    served
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
