//! `clinauthctl`: the ClinAuth officer and operator command line.
//!
//! `policy check` and `policy simulate` need only a policy file. The other
//! commands run on the server host with the server's configuration
//! (`--config`, default `/etc/clinauth/server.toml`): they use the database
//! and the audit key directly, for first set-up, bootstrap of the first
//! officer, and recovery. Every change they make is audited.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::{Parser, Subcommand};
use clinauth_policy::{Purpose, Seconds};
use clinauth_server::ctl::{self, host, Outcome};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "clinauthctl",
    version,
    about = "ClinAuth officer and operator commands"
)]
struct Cli {
    /// The server configuration (for commands that use the database).
    #[arg(
        long,
        global = true,
        env = "CLINAUTH_CONFIG",
        default_value = "/etc/clinauth/server.toml"
    )]
    config: PathBuf,
    /// Record changes in the audit log as made by this officer (default root@<host>).
    #[arg(long = "as", global = true)]
    actor: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create missing keys, create and migrate the database, import the initial policy.
    Init,
    /// Factor policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Workstations.
    #[command(subcommand)]
    Workstation(WorkstationCommand),
    /// Smartcards (PIV authentication certificates).
    #[command(subcommand)]
    Card(CardCommand),
    /// Biometric readers (R-BIO-2).
    #[command(subcommand)]
    Reader(ReaderCommand),
    /// Fingerprint templates.
    #[command(subcommand)]
    Finger(FingerCommand),
    /// Contactless badges.
    #[command(subcommand)]
    Badge(BadgeCommand),
    /// The break-glass review queue (R-EMERG-1).
    #[command(subcommand)]
    Review(ReviewCommand),
    /// Records entered by proxy and their confirmation (R-REC-1).
    #[command(subcommand)]
    Record(RecordCommand),
    /// Devices: readers, badges and FIDO2 keys (R-DEV-1).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The local PKI for the workstation API's mutual TLS (a real site may use its own CA).
    #[command(subcommand)]
    Pki(PkiCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file against the guideline's requirements.
    ///
    /// Exit status: 0 accepted, 1 refused (every violation is listed), 2 the
    /// file could not be read or parsed.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Show what a policy would decide, without any server.
    ///
    /// Exit status: 0 allow, 1 deny, 2 error.
    Simulate {
        /// The policy file (TOML).
        file: PathBuf,
        /// The user's roles, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// The workstation group.
        #[arg(long)]
        group: String,
        /// The purpose: login, unlock, step_up, confirm, sign or break_glass.
        #[arg(long, default_value = "login")]
        purpose: Purpose,
        /// The verified evidence, comma-separated: card, card_no_pin, server_pin,
        /// fido2_uv, fido2, totp, badge, finger_on_reader, finger_sealed, finger_host.
        #[arg(long, value_delimiter = ',')]
        evidence: Vec<String>,
        /// The HPKI qualification on the card certificate.
        #[arg(long)]
        qualification: Option<String>,
        /// Decide offline, with the user's cached bundle this old (e.g. 2h).
        #[arg(long)]
        offline_bundle_age: Option<Seconds>,
        /// How long ago the evidence was verified (e.g. 10s).
        #[arg(long, default_value = "1s")]
        evidence_age: Seconds,
    },
    /// Validate, store and activate a policy (exit 1 if refused).
    Activate {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// List stored policy versions, the active one marked.
    History,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user.
    Add {
        /// Login name.
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Roles, comma-separated.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// List users.
    List,
    /// Set a user's state: active, suspended or disabled.
    State {
        /// Login name.
        id: String,
        /// The new state.
        state: String,
    },
    /// Set a user's server PIN, read from standard input (one line).
    Pin {
        /// Login name.
        id: String,
    },
    /// Lift a lockout after too many failures.
    Unlock {
        /// Login name.
        id: String,
    },
}

#[derive(Subcommand)]
enum WorkstationCommand {
    /// Register a workstation by its client certificate's SHA-256 fingerprint.
    Add {
        /// Its name.
        id: String,
        /// SHA-256 of its certificate (hex), as `pki issue-workstation` prints it.
        #[arg(long)]
        fingerprint: String,
        /// The policy's workstation group.
        #[arg(long)]
        group: String,
        /// Where it stands.
        #[arg(long, default_value = "")]
        location: String,
    },
    /// Set a workstation's state: active, suspended or decommissioned.
    State {
        /// Its name.
        id: String,
        /// The new state.
        state: String,
    },
}

#[derive(Subcommand)]
enum CardCommand {
    /// Enroll a card's authentication certificate (PEM or DER) for a user;
    /// it must chain to a `[smartcard]` trust anchor.
    Enroll {
        /// The user.
        user: String,
        /// The certificate file (slot 9A).
        certificate: std::path::PathBuf,
        /// The card's key does not need the PIN (then the card alone is
        /// one factor, not two).
        #[arg(long)]
        no_pin: bool,
    },
}

#[derive(Subcommand)]
enum ReaderCommand {
    /// Register a reader with its signing key.
    Add {
        /// The reader's ID (as the reader reports it).
        id: String,
        /// Its Ed25519 public key, hex.
        #[arg(long)]
        public_key: String,
        /// sealed_template or match_on_reader (host-matching readers are
        /// refused, R-BIO-1).
        #[arg(long)]
        protection: String,
        /// The reader detects presentation attacks (fake fingers).
        #[arg(long)]
        pad: bool,
        /// Where it is.
        #[arg(long, default_value = "")]
        description: String,
    },
}

#[derive(Subcommand)]
enum FingerCommand {
    /// Enroll a fingerprint template (an enrollment station's file) for a
    /// user; stored encrypted at rest.
    Enroll {
        /// The user.
        user: String,
        /// The template file.
        template: std::path::PathBuf,
        /// Which finger slot (1 to 10).
        #[arg(long, default_value_t = 1)]
        slot: u8,
    },
}

#[derive(Subcommand)]
enum BadgeCommand {
    /// Register a badge UID (hex) to a user.
    Add {
        /// The user.
        user: String,
        /// The UID in hex (4, 7 or 10 bytes).
        uid: String,
    },
}

#[derive(Subcommand)]
enum ReviewCommand {
    /// List review items, oldest first.
    List {
        /// pending, closed or all.
        #[arg(long, default_value = "pending")]
        state: String,
    },
    /// Close a pending item with an outcome and a note (audited; nobody
    /// reviews their own break-glass access: give --as).
    Close {
        /// The item's ID, as `review list` shows it.
        id: String,
        /// justified or unjustified.
        #[arg(long)]
        outcome: String,
        /// What was found (at most 2,000 bytes).
        #[arg(long)]
        note: String,
    },
}

#[derive(Subcommand)]
enum RecordCommand {
    /// List records, oldest first. Pending records wait for their
    /// confirmer however long it takes: nothing confirms them by itself.
    List {
        /// pending, confirmed, rejected or all.
        #[arg(long, default_value = "pending")]
        state: String,
        /// Only the pending records waiting for this confirmer.
        #[arg(long)]
        confirmer: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// List devices with their state and last contact.
    List,
    /// Set a device's state: active, suspended or decommissioned (a FIDO2
    /// key suspended after a sign-counter regression is re-enabled with `active`).
    State {
        /// The device ID as `device list` shows it (e.g. fido2:<hex>, badge-<hex>).
        id: String,
        /// The new state.
        state: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and signatures; exit 1 with every break listed.
    Verify,
    /// Write entries as JSON Lines to standard output.
    Export {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a local CA, the server certificate and an empty CRL in DIR.
    ///
    /// Exit status: 0 created, 1 files exist (give --force), 2 error.
    Init {
        /// The PKI directory (created mode 0700).
        #[arg(long)]
        dir: PathBuf,
        /// The site, for the CA's name "ClinAuth Local CA <site>" (default: the first server name).
        #[arg(long)]
        site: Option<String>,
        /// A DNS name or IP address of the server (repeatable; default localhost and 127.0.0.1).
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        /// Replace existing files (every certificate issued so far stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a workstation client certificate and print its SHA-256 fingerprint.
    IssueWorkstation {
        /// The PKI directory.
        #[arg(long)]
        dir: PathBuf,
        /// The workstation's name (the certificate's CN), e.g. ws-ward3-01.
        #[arg(long)]
        name: String,
        /// Where to write NAME.pem and NAME-key.pem (default DIR/workstations).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Add workstation certificates to the CA's CRL (no target: re-sign it).
    ///
    /// Exit status: 0 done, 1 unknown serial or name, 2 error.
    Revoke {
        /// The PKI directory.
        #[arg(long)]
        dir: PathBuf,
        /// A serial number (hex) as `pki issue-workstation` printed it (repeatable).
        #[arg(long = "serial")]
        serials: Vec<String>,
        /// Every certificate issued to this workstation name (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

fn pki(command: PkiCommand, out: &mut String) -> Outcome {
    let now_ms = clinauth_server::clock::now_ms();
    if now_ms <= 0 {
        out.push_str("error: the system clock is before 1970\n");
        return Outcome::Error;
    }
    match command {
        PkiCommand::Init {
            dir,
            site,
            server_names,
            force,
        } => ctl::pki::init(&dir, site.as_deref(), &server_names, force, now_ms, out),
        PkiCommand::IssueWorkstation {
            dir,
            name,
            out: out_dir,
            force,
        } => ctl::pki::issue_workstation(&dir, &name, out_dir.as_deref(), force, now_ms, out),
        PkiCommand::Revoke {
            dir,
            serials,
            names,
        } => ctl::pki::revoke(&dir, &serials, &names, now_ms, out),
    }
}

/// One line from standard input, at most 1 KiB, kept in wiped memory.
fn read_secret_line() -> Result<clinauth_factors::pin::SecretPin, String> {
    use std::io::Read;
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(128));
    std::io::stdin()
        .lock()
        .take(1025)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read the PIN: {e}"))?;
    if buf.len() > 1024 {
        return Err("the PIN is longer than 1 KiB".into());
    }
    let end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    let line = buf.get(..end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    clinauth_factors::pin::SecretPin::new(zeroize::Zeroizing::new(line.to_vec()))
        .map_err(|e| e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Runs a command that needs the server host's database and keys.
fn on_host<F>(
    cli_config: &std::path::Path,
    actor: Option<String>,
    out: &mut String,
    f: F,
) -> Outcome
where
    F: for<'a> FnOnce(
        &'a host::Host,
        &'a mut String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Outcome, host::HostError>> + 'a>,
    >,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            out.push_str(&format!("error: {e}\n"));
            return Outcome::Error;
        }
    };
    rt.block_on(async {
        let host = match host::Host::open(cli_config, actor).await {
            Ok(h) => h,
            Err(e) => {
                out.push_str(&format!("error: {e}\n"));
                return Outcome::Error;
            }
        };
        let outcome = match f(&host, out).await {
            Ok(o) => o,
            Err(e) => {
                out.push_str(&format!("error: {e}\n"));
                Outcome::Error
            }
        };
        host.store.close().await;
        outcome
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = String::new();
    let config = cli.config.clone();
    let actor = cli.actor.clone();
    let outcome = match cli.command {
        Command::Init => match runtime() {
            Ok(rt) => match rt.block_on(host::init(&config, &mut out)) {
                Ok(o) => o,
                Err(e) => {
                    out.push_str(&format!("error: {e}\n"));
                    Outcome::Error
                }
            },
            Err(e) => {
                out.push_str(&format!("error: {e}\n"));
                Outcome::Error
            }
        },
        Command::Policy(PolicyCommand::Check { file }) => ctl::policy::check(&file, &mut out),
        Command::Policy(PolicyCommand::Simulate {
            file,
            roles,
            group,
            purpose,
            evidence,
            qualification,
            offline_bundle_age,
            evidence_age,
        }) => {
            let sim = ctl::policy::Simulation {
                roles,
                group,
                purpose,
                evidence,
                qualification,
                offline_bundle_age,
                evidence_age,
            };
            match ctl::now() {
                Some(now) => ctl::policy::simulate(&file, &sim, now, &mut out),
                None => {
                    out.push_str("error: the system clock is before 1970\n");
                    Outcome::Error
                }
            }
        }
        Command::Policy(PolicyCommand::Activate { file }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::policy_activate(h, &file, o).await })
            })
        }
        Command::Policy(PolicyCommand::History) => on_host(&config, actor, &mut out, |h, o| {
            Box::pin(host::policy_history(h, o))
        }),
        Command::User(UserCommand::Add { id, name, roles }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::user_add(h, &id, &name, &roles, o).await })
            })
        }
        Command::User(UserCommand::List) => on_host(&config, actor, &mut out, |h, o| {
            Box::pin(host::user_list(h, o))
        }),
        Command::User(UserCommand::State { id, state }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::user_state(h, &id, &state, o).await })
            })
        }
        Command::User(UserCommand::Pin { id }) => match read_secret_line() {
            Ok(pin) => on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::user_pin(h, &id, &pin, o).await })
            }),
            Err(e) => {
                out.push_str(&format!("error: {e}\n"));
                Outcome::Error
            }
        },
        Command::User(UserCommand::Unlock { id }) => on_host(&config, actor, &mut out, |h, o| {
            Box::pin(async move { host::user_unlock(h, &id, o).await })
        }),
        Command::Workstation(WorkstationCommand::Add {
            id,
            fingerprint,
            group,
            location,
        }) => on_host(&config, actor, &mut out, |h, o| {
            Box::pin(async move {
                host::workstation_add(h, &id, &fingerprint, &group, &location, o).await
            })
        }),
        Command::Workstation(WorkstationCommand::State { id, state }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::workstation_state(h, &id, &state, o).await })
            })
        }
        Command::Card(CardCommand::Enroll {
            user,
            certificate,
            no_pin,
        }) => on_host(&config, actor, &mut out, |h, o| {
            Box::pin(async move {
                clinauth_server::ctl::card::enroll(h, &user, &certificate, !no_pin, o).await
            })
        }),
        Command::Reader(ReaderCommand::Add {
            id,
            public_key,
            protection,
            pad,
            description,
        }) => on_host(&config, actor, &mut out, |h, o| {
            Box::pin(async move {
                clinauth_server::ctl::bio::reader_add(
                    h,
                    &id,
                    &public_key,
                    &protection,
                    pad,
                    &description,
                    o,
                )
                .await
            })
        }),
        Command::Finger(FingerCommand::Enroll {
            user,
            template,
            slot,
        }) => on_host(&config, actor, &mut out, |h, o| {
            Box::pin(async move {
                clinauth_server::ctl::bio::finger_enroll(h, &user, &template, slot, o).await
            })
        }),
        Command::Badge(BadgeCommand::Add { user, uid }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::badge_add(h, &user, &uid, o).await })
            })
        }
        Command::Review(ReviewCommand::List { state }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::review_list(h, &state, o).await })
            })
        }
        Command::Record(RecordCommand::List { state, confirmer }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::record_list(h, &state, confirmer.as_deref(), o).await })
            })
        }
        Command::Review(ReviewCommand::Close { id, outcome, note }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::review_close(h, &id, &outcome, &note, o).await })
            })
        }
        Command::Device(DeviceCommand::List) => on_host(&config, actor, &mut out, |h, o| {
            Box::pin(host::device_list(h, o))
        }),
        Command::Device(DeviceCommand::State { id, state }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move { host::device_state(h, &id, &state, o).await })
            })
        }
        Command::Pki(command) => pki(command, &mut out),
        Command::Audit(AuditCommand::Verify) => on_host(&config, actor, &mut out, |h, o| {
            Box::pin(host::audit_verify(h, o))
        }),
        Command::Audit(AuditCommand::Export { after }) => {
            on_host(&config, actor, &mut out, |h, o| {
                Box::pin(async move {
                    let mut stdout = std::io::stdout().lock();
                    let n = host::audit_export(h, after, &mut stdout).await?;
                    let _ = n;
                    let _ = o;
                    Ok(Outcome::Ok)
                })
            })
        }
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(Outcome::Error as u8);
    }
    ExitCode::from(outcome as u8)
}
