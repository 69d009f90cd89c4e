//! `clinauth-agent`: the workstation daemon.
//!
//! `clinauth-agent --config /etc/clinauth/agent.toml` (or `CLINAUTH_AGENT_CONFIG`).
//! `clinauth-agent --config … --check` checks the file and exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use clinauth_agent::config::{Config, LogFormat};
use clinauth_agent::daemon::Daemon;
use clinauth_agent::readers::Readers;
use clinauth_agent::socket;

#[derive(Parser)]
#[command(version, about = "ClinAuth workstation agent")]
struct Args {
    /// The configuration file.
    #[arg(
        long,
        env = "CLINAUTH_AGENT_CONFIG",
        default_value = "/etc/clinauth/agent.toml"
    )]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clinauth-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: OK", args.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging(config.agent.log_format);
    let hardened = clinauth_agent::hardening::harden();
    if !hardened.memory_locked || !hardened.not_dumpable {
        tracing::warn!(
            memory_locked = hardened.memory_locked,
            not_dumpable = hardened.not_dumpable,
            "process hardening incomplete (run the agent as root): secrets could reach swap or a core dump"
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clinauth-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "clinauth-agent stopped");
            eprintln!("clinauth-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let readers = if config.card.enabled {
        Readers::start(config.card.readers.clone())
    } else {
        Readers::new()
    };
    let socket_path = config.agent.socket.clone();
    let max_connections = config.agent.max_connections;
    let daemon = Arc::new(Daemon::new(config, readers.clone())?);
    let listener =
        socket::bind(&socket_path).map_err(|e| format!("{}: {e}", socket_path.display()))?;
    tracing::info!(socket = %socket_path.display(), "clinauth-agent ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = socket::serve(listener, daemon, max_connections) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    readers.stop();
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!("clinauth-agent stopped");
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLINAUTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
