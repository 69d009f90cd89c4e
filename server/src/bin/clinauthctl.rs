//! `clinauthctl`: the ClinAuth officer and operator command line.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = String::new();
    let outcome = match cli.command {
        Command::Policy(PolicyCommand::Check { file }) => ctl::policy::check(&file, &mut out),
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
