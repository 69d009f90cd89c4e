//! The agent's benchmarks (docs/BENCHMARKS.md, "Agent"): the real
//! `clinauth-agent` process against a real server on loopback.
//!
//! - socket round trip of `status` (target p99 ≤ 1 ms);
//! - resident memory after the run (target ≤ 30 MiB);
//! - wake-ups while idle: context switches of all the agent's threads over
//!   an idle period (target none).
//!
//! ```sh
//! cargo build --release -p clinauth-agent
//! cargo run --release -p clinauth-hardware-tests --example agent_bench [-- ROUNDS IDLE_SECONDS]
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clinauth_hardware_tests::stack::Site;
use clinauth_proto::agent::{Reply, Request};
use clinauth_proto::AgentClient;

fn agent_binary() -> PathBuf {
    // target/<profile>/examples/agent_bench → target/<profile>/clinauth-agent
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("clinauth-agent"))
        .unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Context switches of every thread of `pid` (each wake-up is one).
fn switches(pid: u32) -> (u64, usize) {
    let mut total = 0;
    let mut threads = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            threads += 1;
            let text = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in text.lines() {
                if line.starts_with("voluntary_ctxt_switches")
                    || line.starts_with("nonvoluntary_ctxt_switches")
                {
                    total += line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    (total, threads)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let idle: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let binary = agent_binary();
    if !binary.is_file() {
        return Err(format!(
            "{} not found: cargo build --release -p clinauth-agent",
            binary.display()
        )
        .into());
    }
    let site = Site::start("agent-bench")?;
    let ws = site.add_workstation("bench-ws", "ward")?;
    let dir = site.dir().join("agent-bench-ws");
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("agent.toml");
    let text = format!(
        "[agent]\nworkstation = \"bench-ws\"\nsocket = \"{d}/agent.sock\"\nstate_dir = \"{d}/state\"\nlog_format = \"text\"\n\
         [server]\naddress = \"{addr}\"\nserver_name = \"localhost\"\nca = \"{p}/ca.pem\"\ncertificate = \"{c}\"\nkey = \"{k}\"\n\
         [card]\nenabled = false\n",
        d = dir.display(),
        addr = site.addr,
        p = site.pki_dir.display(),
        c = ws.cert.display(),
        k = ws.key.display(),
    );
    std::fs::write(&config_path, text)?;
    let mut child = Command::new(&binary)
        .arg("--config")
        .arg(&config_path)
        .env("CLINAUTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    let socket = dir.join("agent.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let start_rss = status_kib(pid, "VmRSS:");

    let mut client = AgentClient::connect(&socket, Duration::from_secs(5))?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let reply = client.call(&Request::Status {})?;
        samples.push(t.elapsed());
        if !matches!(reply, Reply::StatusResult { .. }) {
            return Err(format!("unexpected {reply:?}").into());
        }
    }
    samples.sort();
    // New connections too (a PAM module connects once per call).
    let mut connects = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        let mut c = AgentClient::connect(&socket, Duration::from_secs(5))?;
        c.call(&Request::Status {})?;
        connects.push(t.elapsed());
    }
    connects.sort();
    drop(client);
    let rss = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");

    std::thread::sleep(Duration::from_secs(1));
    let (before, threads) = switches(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let (after, _) = switches(pid);

    let _ = child.kill();
    let _ = child.wait();

    let mut out = std::io::stdout().lock();
    writeln!(out, "agent: {}", binary.display())?;
    writeln!(
        out,
        "status round trip, one connection, {rounds} calls: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    )?;
    writeln!(
        out,
        "connect + status, 2000 connections: p50 {:?}, p99 {:?}",
        percentile(&connects, 0.5),
        percentile(&connects, 0.99)
    )?;
    writeln!(
        out,
        "resident memory: {start_rss} KiB at start, {rss} KiB after, peak {hwm} KiB"
    )?;
    writeln!(
        out,
        "idle {idle} s: {} context switches over {threads} threads",
        after.saturating_sub(before)
    )?;
    Ok(())
}
