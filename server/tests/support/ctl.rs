//! `clinauthctl` against a test database: a server config naming it, and a
//! runner that returns the exit status and everything printed.

use std::path::{Path, PathBuf};

/// Writes `server.toml` in `dir` for the database at `url` (keys and PKI
/// under `dir`, the hospital example policy) and returns its path.
pub fn config(dir: &Path, url: &str) -> PathBuf {
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"clinauth.test\"\n[database]\nurl = \"{url}\"\n[keys]\ndir = \"{d}/keys\"\n[policy]\ninitial = \"{policy}\"\n[tls]\ncert = \"{d}/pki/server.pem\"\nkey = \"{d}/pki/server-key.pem\"\nworkstation_ca = \"{d}/pki/ca.pem\"\n",
            d = dir.display(),
            policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy/hospital.toml"),
        ),
    )
    .unwrap();
    config
}

/// Runs `clinauthctl --config CONFIG ARGS…`: exit status and output.
pub fn run(config: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clinauthctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap_or(-1), text)
}
