//! The `clinauth-agent` binary as a process: it starts from a config file,
//! serves its socket, locks its memory (secrets never reach swap), and
//! stops cleanly on SIGTERM, removing its socket.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clinauth_proto::agent::{Reply, Request};
use clinauth_proto::AgentClient;

struct Dir(PathBuf);

/// Kills the agent if the test fails before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory per test (tests run in parallel threads).
fn temp_dir(test: &str) -> Dir {
    let dir = std::env::temp_dir().join(format!(
        "clinauth-agent-process-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    Dir(dir)
}

fn write_pki(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let ws_key = rcgen::KeyPair::generate().unwrap();
    let ws = rcgen::CertificateParams::new(vec!["ws-test".to_owned()])
        .unwrap()
        .signed_by(&ws_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("ws.pem"), ws.pem()).unwrap();
    std::fs::write(dir.join("ws-key.pem"), ws_key.serialize_pem()).unwrap();
}

fn field_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn agent_process_serves_locks_memory_and_stops_cleanly() {
    let dir = temp_dir("serves");
    write_pki(&dir.0);
    let socket = dir.0.join("run/agent.sock");
    let config = format!(
        "[agent]\nworkstation = \"ws-test\"\nsocket = \"{s}\"\nstate_dir = \"{d}/state\"\nlog_format = \"text\"\n\
         [server]\naddress = \"127.0.0.1:9\"\nserver_name = \"localhost\"\nca = \"{d}/ca.pem\"\n\
         certificate = \"{d}/ws.pem\"\nkey = \"{d}/ws-key.pem\"\nconnect_timeout = \"1s\"\nretries = 0\n\
         [card]\nenabled = false\n",
        s = socket.display(),
        d = dir.0.display()
    );
    let config_path = dir.0.join("agent.toml");
    std::fs::write(&config_path, config).unwrap();

    let check = Command::new(env!("CARGO_BIN_EXE_clinauth-agent"))
        .arg("--config")
        .arg(&config_path)
        .arg("--check")
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_clinauth-agent"))
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = AgentClient::connect(&socket, Duration::from_secs(5)).unwrap();
    let status = client.call(&Request::Status {}).unwrap();
    assert!(
        matches!(
            status,
            Reply::StatusResult {
                server_reachable: false,
                card_present: false,
                ..
            }
        ),
        "{status:?}"
    );
    // Root locks all its memory (the tests run as root here, as the agent does).
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if is_root {
        // MCL_ONFAULT: the mappings are locked (VmLck counts them whole);
        // pages come in, and stay, only when touched.
        let locked = field_kib(child.0.id(), "VmLck:").unwrap_or(0);
        assert!(locked > 0, "VmLck {locked} kB");
    }
    drop(client);
    // SIGTERM: the agent stops and removes its socket.
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket was left behind");
}

#[test]
fn a_broken_config_is_refused_with_its_line() {
    let dir = temp_dir("broken");
    let path = dir.0.join("agent.toml");
    std::fs::write(&path, "[agent]\nworkstation = \"x\"\nsokcet = \"/x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clinauth-agent"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sokcet"), "{err}");
}
