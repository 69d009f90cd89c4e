//! `clinauthctl`: the ClinAuth officer and operator command line.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::{Parser, Subcommand};
use clinauth_policy::{Purpose, Seconds};
use clinauth_server::ctl::{self, Outcome};
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Factor policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = String::new();
    let outcome = match cli.command {
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
