//! `clinauth-loadgen`: drives begin + finish against a clinauth-server over
//! mutual TLS from many simulated workstations. See docs/BENCHMARKS.md.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::{Args, Parser, Subcommand, ValueEnum};
use clinauth_loadgen::driver::{Arrivals, LoadOptions, Mode};
use clinauth_loadgen::report::{self, RunOptions, Target};
use clinauth_loadgen::setup::{self, SetupOptions};
use clinauth_loadgen::{parse_duration, Factor};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// mimalloc, as in `clinauth-server`: glibc's allocator spent ~8 % of the
/// server's CPU per login (fastbin consolidation under many threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for clinauth-server: simulated workstations log simulated
/// users in (POST /v1/auth/begin, then /v1/auth/finish with a card
/// signature or a badge and PIN) over mutual TLS 1.3 on 127.0.0.1, and the
/// tool reports throughput, latency percentiles, errors by kind, the
/// server's CPU time per login and its peak memory.
#[derive(Parser, Debug)]
#[command(name = "clinauth-loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a load: against a fresh in-process server (default), or against
    /// a running one (--target with --fixture from `provision`).
    Run(RunArgs),
    /// Create users (with cards from a new card CA, or badges and PINs) and
    /// workstations (certificates from the server's local PKI) in an
    /// existing server's database, and write the fixture `run --target`
    /// reads. Run it as the server's user, on the server host.
    Provision(ProvisionArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FactorArg {
    /// Smartcard signature over the challenge (ECDSA P-256), PIN-protected key.
    Card,
    /// Badge UID plus a server PIN (Argon2id): a PIN storm.
    Pin,
}

impl From<FactorArg> for Factor {
    fn from(f: FactorArg) -> Factor {
        match f {
            FactorArg::Card => Factor::Card,
            FactorArg::Pin => Factor::Pin,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ArrivalsArg {
    /// Evenly spaced, the workstations interleaved.
    Even,
    /// Exponential gaps (independent people), the same mean.
    Poisson,
}

#[derive(Args, Debug)]
struct Population {
    /// Users to create (each gets a card, or a badge and a PIN).
    #[arg(long, default_value_t = 256)]
    users: usize,
    /// Workstations to create; each is one concurrent connection of the load.
    #[arg(long, default_value_t = 32)]
    workstations: usize,
    /// What the users present.
    #[arg(long, value_enum, default_value = "card")]
    factor: FactorArg,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    population: Population,

    /// Fresh server on PostgreSQL: a URL of a database this tool may
    /// CREATE DATABASE from, e.g. postgres://postgres@127.0.0.1:5432/postgres.
    /// A database is created for the run and dropped after it. Without it:
    /// SQLite in a temporary directory.
    #[arg(long, value_name = "URL", conflicts_with = "target")]
    postgres: Option<String>,
    /// Fresh server: PostgreSQL pool size ([database] max_connections).
    #[arg(long, default_value_t = 16)]
    db_pool: u32,
    /// Fresh server: Argon2id hashes at once ([auth] max_concurrent_hashes).
    #[arg(long, default_value_t = 4)]
    max_concurrent_hashes: usize,
    /// Fresh server: worker threads of its tokio runtime (default: CPUs).
    #[arg(long)]
    server_threads: Option<usize>,

    /// Drive a running server at this address instead (127.0.0.1:8443).
    #[arg(long, value_name = "ADDR", requires = "fixture")]
    target: Option<SocketAddr>,
    /// With --target: the fixture.json (or its directory) from `provision`.
    #[arg(long, value_name = "PATH", requires = "target")]
    fixture: Option<PathBuf>,
    /// With --target: the server's PID, to report its CPU time per login
    /// and its peak memory (VmHWM).
    #[arg(long, value_name = "PID", requires = "target")]
    server_pid: Option<u32>,
    /// With --target and --server-pid: add the CPU time of the local
    /// `postgres` processes to the server's.
    #[arg(long, requires = "server_pid")]
    postgres_cpu: bool,

    /// Open loop: start logins at this aggregate rate (per second) whatever
    /// the server's speed; latency counts from each scheduled start. Without
    /// it: closed loop, each workstation logs in again as soon as it can
    /// (maximum throughput).
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Open loop: how each workstation's logins are spaced: evenly, or at
    /// random (Poisson arrivals, bursts included, the same mean rate).
    #[arg(long, value_enum, default_value = "even", requires = "rate")]
    arrivals: ArrivalsArg,
    /// How long to measure, after the warm-up (500ms, 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Logins in this first period are not counted.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Stop after this many measured logins (if before --duration ends).
    #[arg(long)]
    count: Option<u64>,
    /// Open a new TLS connection for every request (full handshake each
    /// time) instead of keeping one per workstation.
    #[arg(long)]
    no_keepalive: bool,
    /// A login taking longer than this counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Worker threads of the load generator's runtime. One carries ~10,000
    /// logins/s (TLS client, card signatures); more only contend with the
    /// server for the cores of a small machine and lengthen its tail.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Measure ring's ECDSA P-256 verify rate for this long before the load,
    /// for the ratio to the login rate (0 to skip).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    ecdsa_reference: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ProvisionArgs {
    #[command(flatten)]
    population: Population,
    /// The server's configuration file (database URL, key directory).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The local PKI directory (default: the directory of [tls] workstation_ca).
    #[arg(long, value_name = "DIR")]
    pki: Option<PathBuf>,
    /// Where to write fixture.json, workstation certificates and the card CA.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The name in the server's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn population(p: &Population) -> SetupOptions {
    SetupOptions {
        users: p.users,
        workstations: p.workstations,
        factor: p.factor.into(),
        ..SetupOptions::default()
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    if args.population.users == 0 || args.population.workstations == 0 {
        return Err("--users and --workstations must be at least 1".into());
    }
    let mode = match args.rate {
        Some(r) if r.is_finite() && r > 0.0 => Mode::Open { rate: r },
        Some(_) => return Err("--rate must be a positive number".into()),
        None => Mode::Closed,
    };
    let target = match (args.target, args.fixture) {
        (Some(addr), Some(fixture)) => Target::Existing {
            addr,
            fixture,
            pid: args.server_pid,
            postgres: args.postgres_cpu,
        },
        _ => Target::Fresh(SetupOptions {
            postgres: args.postgres,
            db_pool: args.db_pool,
            max_concurrent_hashes: args.max_concurrent_hashes,
            ..population(&args.population)
        }),
    };
    let opts = RunOptions {
        target,
        load: LoadOptions {
            mode,
            arrivals: match args.arrivals {
                ArrivalsArg::Even => Arrivals::Even,
                ArrivalsArg::Poisson => Arrivals::Poisson,
            },
            duration: args.duration,
            warmup: args.warmup,
            count: args.count,
            keepalive: !args.no_keepalive,
            timeout: args.timeout,
        },
        server_threads: args.server_threads.unwrap_or_else(cpus),
        client_threads: args.client_threads,
        ecdsa_reference: Some(args.ecdsa_reference),
    };
    let report = report::run(&opts).map_err(|e| e.to_string())?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn provision(args: ProvisionArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let opts = population(&args.population);
    let path = rt
        .block_on(setup::provision(
            &args.config,
            args.pki.as_deref(),
            &args.out,
            &args.server_name,
            &opts,
        ))
        .map_err(|e| e.to_string())?;
    println!(
        "wrote {}\n\nAdd the card CA to the server's configuration and restart it:\n\n[smartcard]\ntrust_anchors = [..., {:?}]\ncrls = [..., {:?}]\n\nthen: clinauth-loadgen run --target ADDR --fixture {}",
        path.display(),
        args.out.join("card-ca.pem").display().to_string(),
        args.out.join("card-ca.crl").display().to_string(),
        args.out.display()
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run(a),
        Command::Provision(a) => provision(a),
    };
    if let Err(e) = result {
        eprintln!("clinauth-loadgen: {e}");
        std::process::exit(1);
    }
}
