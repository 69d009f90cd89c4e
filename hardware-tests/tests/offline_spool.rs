//! The agent's event spool against the real server (R-LOG-1, R-OFF-1):
//! events recorded while the server is stopped reach its audit log after it
//! comes back, in order and exactly once, also across agent restarts (each
//! agent "process" is a runtime of its own, dropped to kill it).

use std::time::{Duration, Instant};

use clinauth_agent::daemon::Daemon;
use clinauth_agent::readers::Readers;
use clinauth_agent::socket::peer::Peer;
use clinauth_hardware_tests::stack::Site;
use clinauth_server::audit;

fn root() -> Peer {
    Peer {
        uid: 0,
        gid: 0,
        pid: Some(1),
        name: Some("root".into()),
    }
}

/// An agent "process": its own runtime, dropped to kill it mid-flight.
struct AgentProcess {
    daemon: Option<Daemon>,
    rt: Option<tokio::runtime::Runtime>,
}

impl AgentProcess {
    fn start(config: clinauth_agent::config::Config) -> AgentProcess {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // In the runtime, as the agent's main does: the uploader starts at once.
        let daemon = {
            let _guard = rt.enter();
            Daemon::new(config, Readers::new()).unwrap()
        };
        // The runtime runs while the test waits in `note` and `run_for`.
        AgentProcess {
            daemon: Some(daemon),
            rt: Some(rt),
        }
    }

    /// Records an event through the daemon (a refused frame) and lets the
    /// runtime run a little.
    fn note(&self, what: &str) {
        let (Some(daemon), Some(rt)) = (&self.daemon, &self.rt) else {
            return;
        };
        {
            let _guard = rt.enter();
            daemon.note_refused(&root(), what);
        }
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
    }

    /// Runs the agent's runtime for `d` (its uploader works meanwhile).
    fn run_for(&self, d: Duration) {
        if let Some(rt) = &self.rt {
            rt.block_on(async { tokio::time::sleep(d).await });
        }
    }

    /// Kills it: every task stops where it is.
    fn kill(mut self) {
        drop(self.daemon.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The agent events the server holds: (stream, seq, detail), in log order.
fn stored(site: &Site) -> Vec<(String, u64, String)> {
    let Some(server) = site.server() else {
        return Vec::new();
    };
    site.rt
        .block_on(audit::page(&server.auth.store, 0, 100_000))
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.action == "agent.bad_request" && e.workstation.as_deref() == Some("ward3-ws08")
        })
        .map(|e| {
            let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            (
                d["stream"].as_str().unwrap().to_owned(),
                d["seq"].as_u64().unwrap(),
                d["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn wait_stored(site: &Site, agent: &AgentProcess, n: usize) -> Vec<(String, u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = stored(site);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        agent.run_for(Duration::from_millis(100));
    }
}

fn spool_file(site: &Site) -> std::path::PathBuf {
    site.dir().join("agent-ward3-ws08/state/spool/events.log")
}

#[test]
fn r_off_1_spooled_events_reach_the_server_in_order_exactly_once() {
    let mut site = Site::start("offline-spool").unwrap();
    let ws = site.add_workstation("ward3-ws08", "ward").unwrap();
    let config = site
        .agent_config(&ws, "[offline]\nupload_max_backoff = \"1s\"\n")
        .unwrap();

    // Server up: uploaded straight away.
    let a = AgentProcess::start(config.clone());
    for i in 1..=3 {
        a.note(&format!("e{i}"));
    }
    assert_eq!(wait_stored(&site, &a, 3).len(), 3);

    // Server down: kept; then the agent dies.
    site.stop_server();
    for i in 4..=6 {
        a.note(&format!("e{i}"));
    }
    a.run_for(Duration::from_millis(1500));
    a.kill();
    assert!(std::fs::metadata(spool_file(&site)).unwrap().len() > 0);

    // A new agent process, server still down: more events, still kept.
    let b = AgentProcess::start(config.clone());
    for i in 7..=8 {
        b.note(&format!("e{i}"));
    }
    b.run_for(Duration::from_millis(1500));

    // The server comes back: everything arrives, in order, once.
    site.start_server().unwrap();
    let got = wait_stored(&site, &b, 8);
    assert_eq!(got.len(), 8, "{got:?}");
    // Idle a while more: nothing is sent twice.
    b.run_for(Duration::from_secs(2));
    b.kill();

    // A third start: numbering continues, nothing old is sent again.
    let c = AgentProcess::start(config);
    c.note("e9");
    let got = wait_stored(&site, &c, 9);
    c.run_for(Duration::from_secs(1));
    let got_again = stored(&site);
    c.kill();
    assert_eq!(got, got_again, "an event was stored twice");
    let stream = got[0].0.clone();
    let want: Vec<(String, u64, String)> = (1..=9)
        .map(|i| (stream.clone(), i, format!("e{i}")))
        .collect();
    assert_eq!(got, want);
    assert_eq!(std::fs::metadata(spool_file(&site)).unwrap().len(), 0);

    // Part of the server's hash chain.
    let server = site.server().unwrap();
    let report = site
        .rt
        .block_on(audit::verify(
            &server.auth.store,
            server.auth.keys.audit.public_key(),
        ))
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
}
