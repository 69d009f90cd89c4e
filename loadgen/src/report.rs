//! The run's report (text or JSON), the ECDSA P-256 reference measured in
//! the same run, and the function that runs everything.

use crate::driver::{self, Arrivals, LoadOptions, Mode, Outcome};
use crate::fixture::{Fixture, FixtureFile};
use crate::procstat::{self, ServerCpu, TICKS_PER_SECOND};
use crate::setup::{FreshServer, SetupOptions};
use crate::{Error, Factor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A server started in this process for the run.
    Fresh(SetupOptions),
    /// A running server and the fixture `provision` wrote for it.
    Existing {
        /// The workstation API's address.
        addr: SocketAddr,
        /// `fixture.json` or its directory.
        fixture: PathBuf,
        /// The server's PID, to report its CPU time and peak memory.
        pid: Option<u32>,
        /// Add the local `postgres` processes' CPU time to the server's.
        postgres: bool,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where.
    pub target: Target,
    /// How.
    pub load: LoadOptions,
    /// Worker threads of the in-process server's runtime.
    pub server_threads: usize,
    /// Worker threads of the load generator's runtime.
    pub client_threads: usize,
    /// Measure ring's ECDSA P-256 verify rate for this long first.
    pub ecdsa_reference: Option<Duration>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(mut us: Vec<u32>) -> Percentiles {
        if us.is_empty() {
            return Percentiles::default();
        }
        us.sort_unstable();
        let at = |q: f64| {
            let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
            f64::from(us[i]) / 1000.0
        };
        let sum: f64 = us.iter().map(|v| f64::from(*v)).sum();
        Percentiles {
            n: us.len(),
            mean: sum / us.len() as f64 / 1000.0,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

/// The login p99 of each whole second of the window: whether the run's tail
/// is steady or made by a few bad seconds (a stall of the machine's disk or
/// CPU takes the p99 of a 10 s run on its own).
#[derive(Debug, Clone, Serialize, Default)]
pub struct PerSecond {
    /// Seconds with at least 100 logins.
    pub seconds: usize,
    /// The median of their p99s, ms.
    pub p99_median_ms: f64,
    /// The worst, ms.
    pub p99_worst_ms: f64,
    /// Each second's p99, ms, in order (`null` below 100 logins).
    pub p99_ms: Vec<Option<f64>>,
}

impl PerSecond {
    /// The fewest logins in a second for its p99 to count.
    const MIN: usize = 100;

    fn of(us: &[u32], second: &[u32]) -> PerSecond {
        let mut buckets: Vec<Vec<u32>> = Vec::new();
        for (v, s) in us.iter().zip(second) {
            let s = usize::try_from(*s).unwrap_or(usize::MAX).min(100_000);
            if buckets.len() <= s {
                buckets.resize_with(s + 1, Vec::new);
            }
            if let Some(b) = buckets.get_mut(s) {
                b.push(*v);
            }
        }
        let p99_ms: Vec<Option<f64>> = buckets
            .into_iter()
            .map(|b| (b.len() >= Self::MIN).then(|| Percentiles::of(b).p99))
            .collect();
        let mut counted: Vec<f64> = p99_ms.iter().flatten().copied().collect();
        counted.sort_by(f64::total_cmp);
        PerSecond {
            seconds: counted.len(),
            p99_median_ms: counted.get(counted.len() / 2).copied().unwrap_or(0.0),
            p99_worst_ms: counted.last().copied().unwrap_or(0.0),
            p99_ms,
        }
    }
}

/// Latencies.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    /// A whole login (begin + card signature + finish): from its scheduled
    /// start when it queued behind the workstation's previous login, else
    /// from when it started (the timer's lateness is in `late_ms`).
    pub login_ms: Percentiles,
    /// The begin round trip.
    pub begin_ms: Percentiles,
    /// The finish round trip (after the card signature).
    pub finish_ms: Percentiles,
    /// How late logins started after their schedule (part of `login_ms`):
    /// the workstation's previous login overran its interval, or the load
    /// generator's own threads were not scheduled in time.
    pub late_ms: Percentiles,
    /// `login_ms`'s p99 second by second.
    pub login_per_second: PerSecond,
}

/// CPU time spent during the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    /// The server's CPU seconds (in-process: every thread but the load generator's).
    pub server_s: f64,
    /// The local PostgreSQL processes' CPU seconds (0 on SQLite).
    pub postgres_s: f64,
    /// The load generator's CPU seconds (TLS client, JSON, card signatures).
    pub client_s: f64,
    /// Server + PostgreSQL CPU seconds per second of the window.
    pub server_cores_busy: f64,
    /// Server + PostgreSQL CPU microseconds per successful login.
    pub server_us_per_login: f64,
    /// Successful logins per second per core of server (+ PostgreSQL) CPU.
    pub logins_per_core_s: f64,
}

/// A reference operation's rate measured in the same run, against which
/// logins per core are read whatever the machine: ring's ECDSA P-256 verify
/// (card logins; the target ratio is ≤ 6), the server's Argon2id PIN check
/// (PIN logins; 1.0 would be a login costing nothing but its hash).
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// Verifications per CPU second of one thread.
    pub verifies_per_core_s: f64,
    /// `verifies_per_core_s / logins_per_core_s`.
    pub ratio_to_logins: Option<f64>,
}

impl Reference {
    fn of(rate: f64, cpu: Option<&Cpu>) -> Reference {
        Reference {
            verifies_per_core_s: rate,
            ratio_to_logins: cpu
                .filter(|c| c.logins_per_core_s > 0.0)
                .map(|c| rate / c.logins_per_core_s),
        }
    }
}

/// Memory.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Resident set at the end (VmRSS), KiB.
    pub rss_kib: u64,
    /// Whose: "this process (server and load generator)" or "server pid N".
    pub scope: String,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `in-process` or the address.
    pub server: String,
    /// `sqlite`, `postgres` or `unknown`.
    pub database: String,
    /// What the users presented.
    pub factor: Factor,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// The open loop's target rate.
    pub target_rate: Option<f64>,
    /// The open loop's spacing of logins.
    pub arrivals: Option<Arrivals>,
    /// Simulated workstations (= concurrent connections).
    pub workstations: usize,
    /// Users.
    pub users: usize,
    /// Connections kept alive between requests.
    pub keepalive: bool,
    /// Seconds spent setting the server up (fresh only).
    pub setup_s: f64,
    /// Seconds measured (after the warm-up).
    pub window_s: f64,
    /// Successful logins in the window.
    pub logins_ok: u64,
    /// Logins per second in the window.
    pub throughput: f64,
    /// Failed logins.
    pub errors_total: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// One message per kind.
    pub error_examples: BTreeMap<String, String>,
    /// TLS connections opened in the window.
    pub connections: u64,
    /// Latencies.
    pub latency: Latency,
    /// CPU time, if the server's is known.
    pub cpu: Option<Cpu>,
    /// The ECDSA reference.
    pub ecdsa: Option<Reference>,
    /// The Argon2id reference (PIN logins).
    pub argon2: Option<Reference>,
    /// Peak memory, if known.
    pub memory: Option<Memory>,
}

impl Report {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "clinauth-loadgen: {} server, {}, {} logins, {} loop{}, {} workstations, {} users, keep-alive {}",
            self.server,
            self.database,
            self.factor,
            self.mode,
            self.target_rate
                .map(|r| format!(
                    " at {r:.0}/s{}",
                    match self.arrivals {
                        Some(Arrivals::Poisson) => " (Poisson arrivals)",
                        _ => "",
                    }
                ))
                .unwrap_or_default(),
            self.workstations,
            self.users,
            if self.keepalive { "on" } else { "off" }
        );
        if self.setup_s > 0.0 {
            let _ = writeln!(o, "setup:        {:.1} s", self.setup_s);
        }
        let _ = writeln!(
            o,
            "measured:     {:.2} s, {} ok, {} failed, {} TLS connections",
            self.window_s, self.logins_ok, self.errors_total, self.connections
        );
        let _ = writeln!(o, "throughput:   {:.0} logins/s", self.throughput);
        for (name, p) in [
            ("login", &self.latency.login_ms),
            ("  begin", &self.latency.begin_ms),
            ("  finish", &self.latency.finish_ms),
            ("  late start", &self.latency.late_ms),
        ] {
            let _ = writeln!(
                o,
                "{:<13} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (mean {:.2})",
                format!("{name}:"),
                p.p50,
                p.p90,
                p.p99,
                p.p999,
                p.max,
                p.mean
            );
        }
        let ps = &self.latency.login_per_second;
        if ps.seconds > 0 {
            let _ = writeln!(
                o,
                "login p99 of each second: median {:.2} ms, worst {:.2} ms ({} seconds)",
                ps.p99_median_ms, ps.p99_worst_ms, ps.seconds
            );
        }
        if let Some(c) = &self.cpu {
            let _ = writeln!(
                o,
                "server CPU:   {:.2} s{} ({:.2} cores busy), {:.0} µs per login => {:.0} logins/s per core; load generator {:.2} s",
                c.server_s,
                if c.postgres_s > 0.0 {
                    format!(" + postgres {:.2} s", c.postgres_s)
                } else {
                    String::new()
                },
                c.server_cores_busy,
                c.server_us_per_login,
                c.logins_per_core_s,
                c.client_s
            );
        }
        if let Some(e) = &self.ecdsa {
            let _ = writeln!(
                o,
                "ECDSA P-256:  {:.0} verifies/s per core (ring){}",
                e.verifies_per_core_s,
                e.ratio_to_logins
                    .map(|r| format!("; ratio to logins per core: {r:.2}x (target <= 6x)"))
                    .unwrap_or_default()
            );
        }
        if let Some(a) = &self.argon2 {
            let _ = writeln!(
                o,
                "Argon2id PIN: {:.1} verifies/s per core{}",
                a.verifies_per_core_s,
                a.ratio_to_logins
                    .map(|r| format!("; ratio to PIN logins per core: {r:.2}x"))
                    .unwrap_or_default()
            );
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                o,
                "memory:       peak RSS {:.1} MiB, now {:.1} MiB ({})",
                m.peak_rss_kib as f64 / 1024.0,
                m.rss_kib as f64 / 1024.0,
                m.scope
            );
        }
        for (kind, n) in &self.errors {
            let example = self
                .error_examples
                .get(kind)
                .map(String::as_str)
                .unwrap_or("");
            let _ = writeln!(o, "error:        {n} x {kind}  e.g. {example}");
        }
        o
    }
}

/// ring's ECDSA P-256 (ASN.1, SHA-256) verifications per CPU second of
/// this thread, over a message the size of a card challenge.
pub fn ecdsa_verify_rate(duration: Duration) -> Result<f64, Error> {
    use ring::signature::{self, EcdsaKeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| Error("ECDSA key".into()))?;
    let key = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .map_err(|_| Error("ECDSA key".into()))?;
    let message = [0x5au8; 96];
    let sig = key
        .sign(&rng, &message)
        .map_err(|_| Error("ECDSA sign".into()))?;
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        key.public_key().as_ref().to_vec(),
    );
    per_cpu_second(duration, || {
        for _ in 0..100 {
            public
                .verify(&message, sig.as_ref())
                .map_err(|_| Error("ECDSA verify".into()))?;
        }
        Ok(100)
    })
}

/// Runs `op` (which returns how many operations it did) on this thread for
/// `duration` of wall time; returns operations per CPU second.
fn per_cpu_second(
    duration: Duration,
    mut op: impl FnMut() -> Result<u64, Error>,
) -> Result<f64, Error> {
    let thread = procstat::this_thread_ticks;
    let cpu0 = thread();
    let t0 = Instant::now();
    let mut n: u64 = 0;
    while t0.elapsed() < duration {
        n += op()?;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / TICKS_PER_SECOND,
        _ => wall,
    };
    Ok(n as f64 / cpu.max(1e-9))
}

/// The server's PIN check (`clinauth_factors::pin::verify_pin`, Argon2id
/// at the OWASP cost the server uses) per CPU second of this thread.
pub fn pin_verify_rate(duration: Duration) -> Result<f64, Error> {
    use clinauth_factors::pin::{hash_pin, verify_pin, SecretPin};
    let rng = ring::rand::SystemRandom::new();
    let pin = SecretPin::from_text("739154").map_err(|e| Error(e.to_string()))?;
    let phc = hash_pin(&pin, &rng).map_err(|e| Error(e.to_string()))?;
    per_cpu_second(duration, || {
        verify_pin(&pin, &phc).map_err(|e| Error(e.to_string()))?;
        Ok(1)
    })
}

fn runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(Error::ctx("tokio runtime"))
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    server: String,
    database: String,
    fixture: &Fixture,
    opts: &RunOptions,
    setup_s: f64,
    outcome: Outcome,
    cpu_known: bool,
    ecdsa: Option<f64>,
    argon2: Option<f64>,
    memory: Option<Memory>,
) -> Report {
    let s = outcome.samples;
    let window_s = outcome.window.as_secs_f64();
    let ok = s.ok;
    let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS_PER_SECOND;
    let cpu = cpu_known.then(|| {
        let server_s = secs(outcome.cpu_start.server, outcome.cpu_end.server);
        let postgres_s = secs(outcome.cpu_start.postgres, outcome.cpu_end.postgres);
        let total = server_s + postgres_s;
        Cpu {
            server_s,
            postgres_s,
            client_s: secs(outcome.cpu_start.client, outcome.cpu_end.client),
            server_cores_busy: if window_s > 0.0 {
                total / window_s
            } else {
                0.0
            },
            server_us_per_login: if ok > 0 { total * 1e6 / ok as f64 } else { 0.0 },
            logins_per_core_s: if total > 0.0 { ok as f64 / total } else { 0.0 },
        }
    });
    let ecdsa = ecdsa.map(|rate| Reference::of(rate, cpu.as_ref()));
    let argon2 = argon2.map(|rate| Reference::of(rate, cpu.as_ref()));
    let errors_total = s.errors.values().sum();
    Report {
        server,
        database,
        factor: fixture.factor,
        mode: match opts.load.mode {
            Mode::Closed => "closed",
            Mode::Open { .. } => "open",
        },
        target_rate: match opts.load.mode {
            Mode::Closed => None,
            Mode::Open { rate } => Some(rate),
        },
        arrivals: match opts.load.mode {
            Mode::Closed => None,
            Mode::Open { .. } => Some(opts.load.arrivals),
        },
        workstations: fixture.workstations.len(),
        users: fixture.users.len(),
        keepalive: opts.load.keepalive,
        setup_s,
        window_s,
        logins_ok: ok,
        throughput: if window_s > 0.0 {
            ok as f64 / window_s
        } else {
            0.0
        },
        errors_total,
        errors: s.errors,
        error_examples: s.examples,
        connections: s.connections,
        latency: Latency {
            login_per_second: PerSecond::of(&s.login_us, &s.login_second),
            login_ms: Percentiles::of(s.login_us),
            begin_ms: Percentiles::of(s.begin_us),
            finish_ms: Percentiles::of(s.finish_us),
            late_ms: Percentiles::of(s.late_us),
        },
        cpu,
        ecdsa,
        argon2,
        memory,
    }
}

fn memory_of(pid: &str, scope: String) -> Option<Memory> {
    Some(Memory {
        peak_rss_kib: procstat::status_kib(pid, "VmHWM")?,
        rss_kib: procstat::status_kib(pid, "VmRSS").unwrap_or(0),
        scope,
    })
}

/// Runs the whole thing: the ECDSA reference, the server (when fresh), the
/// load; returns the report. Stops by itself after the warm-up plus the
/// duration (or the count).
pub fn run(opts: &RunOptions) -> Result<Report, Error> {
    let ecdsa = match opts.ecdsa_reference {
        Some(d) if !d.is_zero() => Some(ecdsa_verify_rate(d)?),
        _ => None,
    };
    let factor = match &opts.target {
        Target::Fresh(setup) => Some(setup.factor),
        Target::Existing { .. } => None,
    };
    let argon2 = match opts.ecdsa_reference {
        // At least a second: one verify takes tens of milliseconds.
        Some(d) if !d.is_zero() && factor == Some(Factor::Pin) => {
            Some(pin_verify_rate(d.max(Duration::from_secs(1)))?)
        }
        _ => None,
    };
    let client = runtime(procstat::CLIENT_THREAD, opts.client_threads)?;
    match &opts.target {
        Target::Existing {
            addr,
            fixture,
            pid,
            postgres,
        } => {
            let fixture = Arc::new(Fixture::load(&FixtureFile::read(fixture)?)?);
            let cpu = match pid {
                Some(pid) => ServerCpu::Pid {
                    pid: pid.to_string(),
                    postgres: *postgres,
                },
                None => ServerCpu::None,
            };
            let outcome = client.block_on(driver::drive(fixture.clone(), *addr, &opts.load, &cpu));
            let memory = pid.and_then(|p| memory_of(&p.to_string(), format!("server pid {p}")));
            Ok(build_report(
                addr.to_string(),
                if *postgres { "postgres" } else { "unknown" }.into(),
                &fixture,
                opts,
                0.0,
                outcome,
                cpu.known(),
                ecdsa,
                argon2,
                memory,
            ))
        }
        Target::Fresh(setup) => {
            let server = runtime("lg-server", opts.server_threads)?;
            let t0 = Instant::now();
            let (fresh, fixture) = server.block_on(FreshServer::start(setup))?;
            let setup_s = t0.elapsed().as_secs_f64();
            let fixture = Arc::new(fixture);
            let cpu = ServerCpu::InProcess {
                postgres: setup.postgres.is_some(),
            };
            let addr = fresh.running.workstation_addr;
            let database = fresh.database.to_owned();
            let outcome = client.block_on(driver::drive(fixture.clone(), addr, &opts.load, &cpu));
            let memory = memory_of(
                "self",
                "this process: server and load generator together".into(),
            );
            server.block_on(fresh.stop())?;
            drop(client);
            server.shutdown_timeout(Duration::from_secs(5));
            Ok(build_report(
                "in-process".into(),
                database,
                &fixture,
                opts,
                setup_s,
                outcome,
                cpu.known(),
                ecdsa,
                argon2,
                memory,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_seconds_p99_and_seconds_too_thin_to_count() {
        // Second 0: 200 logins of 1 ms and 2 of 50 ms (p99: the 200th of
        // 202, 1 ms); second 1: 150 of 2 ms and 10 of 30 ms; second 2: 5.
        let mut us = Vec::new();
        let mut second = Vec::new();
        for (s, v, n) in [
            (0, 1_000, 200),
            (0, 50_000, 2),
            (1, 2_000, 150),
            (1, 30_000, 10),
            (2, 9_000, 5),
        ] {
            us.extend(std::iter::repeat_n(v, n));
            second.extend(std::iter::repeat_n(s, n));
        }
        let p = PerSecond::of(&us, &second);
        assert_eq!(p.seconds, 2);
        assert_eq!(p.p99_ms, vec![Some(1.0), Some(30.0), None]);
        assert_eq!(p.p99_worst_ms, 30.0);
        assert_eq!(p.p99_median_ms, 30.0);
    }
}
