//! A whole server as it runs, on 127.0.0.1 with ephemeral ports: a local
//! PKI in `dir/pki`, keys, SQLite, the hospital policy.

use clinauth_server::config::Config;
use clinauth_server::keys::Keys;
use clinauth_server::{clock, pki, run};
use std::path::{Path, PathBuf};

/// Starts the server; returns it and the PKI directory (issue workstation
/// certificates there with `pki::issue_workstation`).
pub async fn start_local(dir: &Path) -> (run::Running, PathBuf) {
    let pki_dir = dir.join("pki");
    let options = pki::InitOptions {
        site: "Test Hospital".into(),
        server_names: vec![],
        force: false,
    };
    pki::init(&pki_dir, &options, clock::now_ms()).unwrap();
    Keys::create_missing(&dir.join("keys")).unwrap();
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    );
    let config_text = format!(
        r#"
[server]
name = "clinauth.test"
workstation_listen = "127.0.0.1:0"
officer_listen = "127.0.0.1:0"
[database]
url = "sqlite://{d}/clinauth.db"
[keys]
dir = "{d}/keys"
[policy]
initial = "{policy}"
[smartcard]
require_crl = false
[tls]
cert = "{p}/server.pem"
key = "{p}/server-key.pem"
workstation_ca = "{p}/ca.pem"
crl = "{p}/crl.pem"
"#,
        d = dir.display(),
        p = pki_dir.display()
    );
    let config = Config::from_toml(&config_text, Path::new("test-server.toml")).unwrap();
    (run::start(config).await.unwrap(), pki_dir)
}
