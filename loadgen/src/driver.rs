//! Driving the load: one task per simulated workstation, each with its own
//! TLS connection (kept alive unless told otherwise), logging its users in
//! with begin + finish, either as fast as the server answers (closed loop)
//! or at a fixed aggregate rate (open loop, latency measured from the
//! scheduled start so that a slow server cannot hide its queueing).

use crate::client::{ClientError, Connection, Response};
use crate::fixture::{Fixture, User, Workstation};
use crate::procstat::{CpuSample, ServerCpu};
use crate::Factor;
use clinauth_policy::Purpose;
use clinauth_proto::workstation::{
    BeginResponse, ErrorBody, EvidenceItem, FinishRequest, FinishResponse, B64,
};
use ring::rand::SystemRandom;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How arrivals are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each workstation starts its next login as soon as the last one ends.
    Closed,
    /// Logins start at this aggregate rate (per second), spread evenly over
    /// the workstations, whatever the server's speed.
    Open {
        /// Logins per second, all workstations together.
        rate: f64,
    },
}

/// How an open loop spaces each workstation's logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly, the workstations' schedules interleaved: the aggregate rate
    /// with no bursts.
    #[default]
    Even,
    /// At random (exponential gaps, the same mean): independent people
    /// arriving, bursts included, as on real wards.
    Poisson,
}

/// How long and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Pacing.
    pub mode: Mode,
    /// Spacing of the open loop's logins.
    pub arrivals: Arrivals,
    /// The measured time (after the warm-up).
    pub duration: Duration,
    /// Logins during this first period are not counted.
    pub warmup: Duration,
    /// Stop after this many measured logins, if sooner.
    pub count: Option<u64>,
    /// Keep connections open between requests.
    pub keepalive: bool,
    /// A login (begin + finish) taking longer counts as a timeout.
    pub timeout: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            mode: Mode::Closed,
            arrivals: Arrivals::Even,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            count: None,
            keepalive: true,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the workers measured.
#[derive(Debug, Default)]
pub struct Samples {
    /// Successful logins.
    pub ok: u64,
    /// Login latency (begin + finish), µs: from the scheduled start when the
    /// login queued behind the previous one, else from its start.
    pub login_us: Vec<u32>,
    /// begin round trips, µs.
    pub begin_us: Vec<u32>,
    /// finish round trips (including the card signature), µs.
    pub finish_us: Vec<u32>,
    /// How late each login started after its schedule (open loop: the
    /// workstation's previous login overran, or the generator was busy), µs.
    pub late_us: Vec<u32>,
    /// For each login in `login_us`: the second of the measured window it
    /// started in (for the tail of each second, see `report`).
    pub login_second: Vec<u32>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// One example message per kind.
    pub examples: BTreeMap<String, String>,
    /// TLS connections opened.
    pub connections: u64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.ok += other.ok;
        self.login_us.extend(other.login_us);
        self.login_second.extend(other.login_second);
        self.begin_us.extend(other.begin_us);
        self.finish_us.extend(other.finish_us);
        self.late_us.extend(other.late_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.examples {
            self.examples.entry(k).or_insert(v);
        }
        self.connections += other.connections;
    }

    fn error(&mut self, kind: String, example: String) {
        *self.errors.entry(kind.clone()).or_default() += 1;
        self.examples.entry(kind).or_insert(example);
    }
}

/// The result of [`drive`].
#[derive(Debug)]
pub struct Outcome {
    /// Everything measured.
    pub samples: Samples,
    /// From the end of the warm-up to the last measured login's end.
    pub window: Duration,
    /// CPU counters at the start of the window.
    pub cpu_start: CpuSample,
    /// CPU counters at its end.
    pub cpu_end: CpuSample,
}

struct Shared {
    started: AtomicU64,
    last_end_us: AtomicU64,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Runs the load against `addr` and returns what was measured.
pub async fn drive(
    fixture: Arc<Fixture>,
    addr: SocketAddr,
    opts: &LoadOptions,
    cpu: &ServerCpu,
) -> Outcome {
    let t0 = Instant::now() + Duration::from_millis(20);
    let measure_from = t0 + opts.warmup;
    let shared = Arc::new(Shared {
        started: AtomicU64::new(0),
        last_end_us: AtomicU64::new(0),
    });
    let sampler = {
        let cpu = cpu.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            cpu.sample()
        })
    };
    let w = fixture.workstations.len();
    let mut tasks = Vec::with_capacity(w);
    for i in 0..w {
        let fixture = fixture.clone();
        let shared = shared.clone();
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            worker(i, &fixture, addr, &opts, &shared, t0).await
        }));
    }
    let mut samples = Samples::default();
    for t in tasks {
        match t.await {
            Ok(s) => samples.merge(s),
            Err(e) => samples.error("internal".into(), e.to_string()),
        }
    }
    let cpu_end = cpu.sample();
    let cpu_start = sampler.await.unwrap_or(cpu_end);
    let last = Duration::from_micros(shared.last_end_us.load(Ordering::SeqCst));
    let window = last.saturating_sub(opts.warmup);
    Outcome {
        samples,
        window,
        cpu_start,
        cpu_end,
    }
}

async fn worker(
    i: usize,
    fixture: &Fixture,
    addr: SocketAddr,
    opts: &LoadOptions,
    shared: &Shared,
    t0: Instant,
) -> Samples {
    let mut s = Samples::default();
    let w = fixture.workstations.len();
    let n = fixture.users.len();
    let Some(ws) = fixture.workstations.get(i) else {
        return s;
    };
    // This workstation's users: i, i + W, i + 2W...; never shared between
    // workstations when there are at least as many users as workstations.
    let mine: Vec<usize> = if n >= w {
        (i..n).step_by(w).collect()
    } else {
        vec![i % n]
    };
    let measure_from = t0 + opts.warmup;
    let end = measure_from + opts.duration;
    let (interval, phase) = match opts.mode {
        Mode::Closed => (Duration::ZERO, Duration::ZERO),
        Mode::Open { rate } => {
            let rate = rate.max(0.001);
            (
                Duration::from_secs_f64(w as f64 / rate),
                Duration::from_secs_f64(i as f64 / rate),
            )
        }
    };
    let rng = SystemRandom::new();
    let mut conn: Option<Connection> = None;
    let mut k: u64 = 0;
    let mut previous_done: Option<Instant> = None;
    let mut next_random = t0 + exponential(&rng, interval);
    loop {
        let scheduled = match (opts.mode, opts.arrivals) {
            (Mode::Closed, _) => Instant::now().max(t0),
            (Mode::Open { .. }, Arrivals::Even) => t0 + phase + interval.saturating_mul(k as u32),
            (Mode::Open { .. }, Arrivals::Poisson) => {
                let at = next_random;
                next_random = at + exponential(&rng, interval);
                at
            }
        };
        if scheduled >= end {
            break;
        }
        let measured = scheduled >= measure_from;
        if measured {
            if let Some(count) = opts.count {
                if shared.started.fetch_add(1, Ordering::SeqCst) >= count {
                    break;
                }
            }
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let Some(user) = mine
            .get(k as usize % mine.len())
            .and_then(|u| fixture.users.get(*u))
        else {
            break;
        };
        k += 1;
        let started = Instant::now();
        // Open loop: a login that waited for this workstation's previous one
        // counts from its schedule (queueing is the server's). One that
        // found the workstation idle counts from when it started: tokio's
        // timer fires up to 1 ms late, which is the generator's, not the
        // server's (`late_ms` shows both).
        let from = match previous_done {
            Some(p) if p > scheduled => scheduled,
            _ => started,
        };
        let mut times = (Duration::ZERO, Duration::ZERO);
        let result = tokio::time::timeout(
            opts.timeout,
            login(
                &mut conn,
                addr,
                fixture,
                ws,
                user,
                opts.keepalive,
                &rng,
                &mut times,
                &mut s,
            ),
        )
        .await;
        let done = Instant::now();
        previous_done = Some(done);
        if !measured {
            continue;
        }
        shared
            .last_end_us
            .fetch_max(micros(done.duration_since(t0)).into(), Ordering::SeqCst);
        match result {
            Ok(Ok(())) => {
                s.ok += 1;
                s.login_us.push(micros(done.duration_since(from)));
                s.login_second.push(
                    u32::try_from(from.saturating_duration_since(measure_from).as_secs())
                        .unwrap_or(u32::MAX),
                );
                s.begin_us.push(micros(times.0));
                s.finish_us.push(micros(times.1));
                s.late_us
                    .push(micros(started.saturating_duration_since(scheduled)));
            }
            Ok(Err((kind, example))) => s.error(kind, example),
            Err(_) => {
                conn = None;
                s.error(
                    "timeout".into(),
                    format!("no answer within {:?}", opts.timeout),
                );
            }
        }
    }
    s
}

/// A random gap with an exponential distribution of this mean (Poisson
/// arrivals), at most 20 means.
fn exponential(rng: &SystemRandom, mean: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    if ring::rand::SecureRandom::fill(rng, &mut bytes).is_err() {
        return mean;
    }
    // 53 random bits: uniform in (0, 1].
    let u = ((u64::from_be_bytes(bytes) >> 11) + 1) as f64 / (1u64 << 53) as f64;
    mean.mul_f64((-u.ln()).min(20.0))
}

#[allow(clippy::too_many_arguments)]
async fn request(
    conn: &mut Option<Connection>,
    addr: SocketAddr,
    fixture: &Fixture,
    ws: &Workstation,
    path: &str,
    body: &[u8],
    keepalive: bool,
    s: &mut Samples,
) -> Result<Response, ClientError> {
    let c = match conn {
        Some(c) => c,
        None => {
            let c = Connection::open(addr, ws.tls.clone(), fixture.server_name.clone()).await?;
            s.connections += 1;
            conn.insert(c)
        }
    };
    match c.post(path, body, !keepalive).await {
        Ok(r) => {
            if r.close || !keepalive {
                *conn = None;
            }
            Ok(r)
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

type Failure = (String, String);

fn http_failure(step: &str, r: &Response) -> Failure {
    let code = serde_json::from_slice::<ErrorBody>(&r.body)
        .map(|b| b.error)
        .unwrap_or_else(|_| "?".into());
    (
        format!("{step}: HTTP {} {code}", r.status),
        String::from_utf8_lossy(&r.body).chars().take(300).collect(),
    )
}

#[allow(clippy::too_many_arguments)]
async fn login(
    conn: &mut Option<Connection>,
    addr: SocketAddr,
    fixture: &Fixture,
    ws: &Workstation,
    user: &User,
    keepalive: bool,
    rng: &SystemRandom,
    times: &mut (Duration, Duration),
    s: &mut Samples,
) -> Result<(), Failure> {
    let client = |step: &str| {
        let step = step.to_owned();
        move |e: ClientError| (format!("{step}: {}", e.kind()), e.to_string())
    };
    let started = Instant::now();
    let begin = serde_json::json!({ "user": user.id, "purpose": "login" }).to_string();
    let r = request(
        conn,
        addr,
        fixture,
        ws,
        "/v1/auth/begin",
        begin.as_bytes(),
        keepalive,
        s,
    )
    .await
    .map_err(client("begin"))?;
    if r.status != 200 {
        return Err(http_failure("begin", &r));
    }
    let begun: BeginResponse = serde_json::from_slice(&r.body)
        .map_err(|e| ("begin: bad response".to_owned(), e.to_string()))?;
    let mid = Instant::now();
    times.0 = mid - started;
    let evidence = match fixture.factor {
        Factor::Card => {
            let card = user
                .card
                .as_ref()
                .ok_or_else(|| ("fixture".to_owned(), "no card".to_owned()))?;
            let signature = card
                .sign(rng, &begun.nonce.0, &user.id, &ws.name, Purpose::Login)
                .map_err(|e| ("card".to_owned(), e.to_string()))?;
            vec![EvidenceItem::Card {
                certificate: B64(card.cert.clone()),
                chain: vec![],
                signature: B64(signature),
                pin_protected_key: true,
            }]
        }
        Factor::Pin => {
            let (Some(badge), Some(pin)) = (&user.badge, &user.pin) else {
                return Err(("fixture".to_owned(), "no badge or PIN".to_owned()));
            };
            vec![
                EvidenceItem::Badge {
                    uid: B64(badge.clone()),
                },
                EvidenceItem::ServerPin {
                    value: clinauth_proto::SecretString::new(pin.clone())
                        .map_err(|e| ("fixture".to_owned(), e.to_string()))?,
                },
            ]
        }
    };
    let finish = serde_json::to_vec(&FinishRequest {
        challenge_id: begun.challenge_id,
        evidence,
    })
    .map_err(|e| ("finish: encode".to_owned(), e.to_string()))?;
    let r = request(
        conn,
        addr,
        fixture,
        ws,
        "/v1/auth/finish",
        &finish,
        keepalive,
        s,
    )
    .await
    .map_err(client("finish"))?;
    times.1 = mid.elapsed();
    if r.status != 200 {
        return Err(http_failure("finish", &r));
    }
    match serde_json::from_slice::<FinishResponse>(&r.body) {
        Ok(FinishResponse::Allow { .. }) => Ok(()),
        Ok(FinishResponse::Deny { reason, .. }) => {
            let short: String = reason
                .split(';')
                .next()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect();
            Err((format!("finish: deny: {short}"), reason))
        }
        Err(e) => Err(("finish: bad response".to_owned(), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_gaps_have_the_mean_asked_for() {
        let rng = SystemRandom::new();
        let mean = Duration::from_millis(10);
        let n = 20_000;
        let gaps: Vec<Duration> = (0..n).map(|_| exponential(&rng, mean)).collect();
        let average = gaps.iter().sum::<Duration>() / n;
        assert!(
            (9_600..=10_400).contains(&average.as_micros()),
            "{average:?}"
        );
        assert!(gaps.iter().all(|g| *g <= mean * 20));
        // Exponential, not even: about 63 % below the mean.
        let below = gaps.iter().filter(|g| **g < mean).count() as f64 / f64::from(n);
        assert!((0.60..0.66).contains(&below), "{below}");
    }
}
