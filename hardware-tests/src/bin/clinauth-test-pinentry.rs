//! `clinauth-test-pinentry`: a scripted pinentry for end-to-end tests of the
//! agent's pinentry client (`[pinentry] program`).
//!
//! ```text
//! clinauth-test-pinentry --answers FILE [--log FILE]
//! ```
//!
//! It speaks Assuan on stdin and stdout as GnuPG's pinentry does: the
//! greeting `OK Pleased to meet you`, `OK` to `OPTION`, `SET*`, `RESET` and
//! `NOP`, `D <pin>` then `OK` to `GETPIN`, `OK` or an `ERR` to `CONFIRM`,
//! `OK closing connection` to `BYE`.
//!
//! # Answers (`--answers FILE`)
//!
//! One answer a line, used one per `GETPIN` or `CONFIRM`, in order and
//! across runs: how many are used is kept in `FILE.used` (a number), so
//! several pinentry runs get successive answers (runs one at a time: the
//! counter is not locked). A trailing CR is dropped. An answer is:
//!
//! - `CANCEL`: `ERR 83886179 Operation cancelled` (the user cancelled);
//! - `HANG`: no answer at all, until the program is killed or its input
//!   closes (the agent's timeout);
//! - `ERR <code>`: `ERR <code> Scripted error`;
//! - for `CONFIRM`: `OK` (confirmed) or `NO` (`ERR 83886194 Not confirmed`);
//!   anything else is refused with `ERR 83886135 Invalid value`;
//! - for `GETPIN`: anything else is the PIN, sent as is (percent-escaped);
//!   an empty line is an empty PIN.
//!
//! With no answer left, `GETPIN` and `CONFIRM` get `ERR 83886138 No data`.
//!
//! # Log (`--log FILE`)
//!
//! One line appended a request, never the PIN:
//!
//! ```text
//! GETPIN uid=1000 title="ClinAuth" desc="Sign the letter" prompt="PIN:" error="Wrong PIN" answer=pin
//! CONFIRM uid=1000 title="ClinAuth" desc="Confirm the record" answer=no
//! ```
//!
//! The command, the uid the program runs as (from `/proc/self/status`), the
//! texts set (`title`, `desc`, `prompt`, `error`, `ok`, `cancel`; unset ones
//! left out; percent-decoded, then quoted as Rust strings), and the answer
//! given: `pin`, `ok`, `no`, `cancel`, `hang`, `err:<code>`, `invalid` or
//! `none-left`. The files must be writable by the user the program runs
//! as (the desktop user, when the agent is root).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The longest line read (Assuan: 1000 bytes).
const MAX_LINE: usize = 1000;

const ERR_CANCELED: &str = "ERR 83886179 Operation cancelled <Pinentry>";
const ERR_NOT_CONFIRMED: &str = "ERR 83886194 Not confirmed <Pinentry>";
const ERR_INV_VALUE: &str = "ERR 83886135 Invalid value <Pinentry>";
const ERR_NO_DATA: &str = "ERR 83886138 No data <Pinentry>";
const ERR_UNKNOWN_CMD: &str = "ERR 536871187 Unknown IPC command <User defined source 1>";
const ERR_LINE_TOO_LONG: &str = "ERR 536871175 Line too long <User defined source 1>";
const ERR_SYNTAX: &str = "ERR 536871170 Invalid value <User defined source 1>";

type Error = Box<dyn std::error::Error>;

struct Args {
    answers: PathBuf,
    log: Option<PathBuf>,
}

fn usage() -> String {
    "usage: clinauth-test-pinentry --answers FILE [--log FILE]".into()
}

fn parse_args() -> Result<Args, String> {
    let mut answers = None;
    let mut log = None;
    let mut it = std::env::args_os().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(usage)?;
        match flag.to_str() {
            Some("--answers") => answers = Some(PathBuf::from(value)),
            Some("--log") => log = Some(PathBuf::from(value)),
            _ => return Err(usage()),
        }
    }
    Ok(Args {
        answers: answers.ok_or_else(usage)?,
        log,
    })
}

/// The texts set so far.
#[derive(Default)]
struct Texts {
    title: Option<String>,
    desc: Option<String>,
    prompt: Option<String>,
    error: Option<String>,
    ok: Option<String>,
    cancel: Option<String>,
}

/// What one answer line says.
enum Answer {
    Cancel,
    Hang,
    Err(u32),
    Text(String),
    NoneLeft,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Takes the next answer and counts it as used.
fn next_answer(file: &Path) -> Result<Answer, Error> {
    let used_file = with_suffix(file, ".used");
    let used: usize = match std::fs::read_to_string(&used_file) {
        Ok(text) => text.trim().parse()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e.into()),
    };
    let text = std::fs::read_to_string(file)?;
    let Some(line) = text.lines().nth(used) else {
        return Ok(Answer::NoneLeft);
    };
    let tmp = with_suffix(file, ".used.tmp");
    std::fs::write(&tmp, format!("{}\n", used + 1))?;
    std::fs::rename(&tmp, &used_file)?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(match line {
        "CANCEL" => Answer::Cancel,
        "HANG" => Answer::Hang,
        _ => match line.strip_prefix("ERR ") {
            Some(code) => Answer::Err(code.trim().parse()?),
            None => Answer::Text(line.to_owned()),
        },
    })
}

/// Assuan percent-decoding of a command's argument.
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Assuan percent-escaping of a data line.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' | '\r' | '\n' => {
                let _ = write!(out, "%{:02X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// The uid this process runs as (the real uid in `/proc/self/status`).
fn uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1).map(str::to_owned)
}

fn log_request(
    log: Option<&Path>,
    command: &str,
    texts: &Texts,
    answer: &str,
) -> Result<(), Error> {
    let Some(log) = log else {
        return Ok(());
    };
    let mut line = command.to_owned();
    if let Some(uid) = uid() {
        let _ = write!(line, " uid={uid}");
    }
    for (name, text) in [
        ("title", &texts.title),
        ("desc", &texts.desc),
        ("prompt", &texts.prompt),
        ("error", &texts.error),
        ("ok", &texts.ok),
        ("cancel", &texts.cancel),
    ] {
        if let Some(text) = text {
            let _ = write!(line, " {name}={text:?}");
        }
    }
    let _ = writeln!(line, " answer={answer}");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    file.write_all(line.as_bytes())?;
    Ok(())
}

/// Reads one line of at most [`MAX_LINE`] bytes; `Ok(None)` at the end of
/// input, `Ok(Some(Err(())))` for a longer line (skipped up to its end).
fn read_line(input: &mut impl BufRead) -> std::io::Result<Option<Result<String, ()>>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                None
            } else if too_long {
                Some(Err(()))
            } else {
                Some(String::from_utf8(buf).map_err(|_| ()))
            });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            buf.extend_from_slice(chunk.get(..take).unwrap_or_default());
            if buf.len() > MAX_LINE {
                too_long = true;
                buf.clear();
            }
        }
        input.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(if too_long {
                Err(())
            } else {
                String::from_utf8(buf).map_err(|_| ())
            }));
        }
    }
}

fn run(args: &Args) -> Result<(), Error> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut say = |line: &str| -> std::io::Result<()> {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    };
    say("OK Pleased to meet you")?;
    let mut texts = Texts::default();
    let log = args.log.as_deref();
    while let Some(line) = read_line(&mut input)? {
        let Ok(line) = line else {
            say(ERR_LINE_TOO_LONG)?;
            continue;
        };
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let command = command.to_ascii_uppercase();
        let slot = match command.as_str() {
            "SETTITLE" => Some(&mut texts.title),
            "SETDESC" => Some(&mut texts.desc),
            "SETPROMPT" => Some(&mut texts.prompt),
            "SETERROR" => Some(&mut texts.error),
            "SETOK" => Some(&mut texts.ok),
            "SETCANCEL" => Some(&mut texts.cancel),
            _ => None,
        };
        if let Some(slot) = slot {
            match unescape(rest) {
                Some(text) => {
                    *slot = Some(text);
                    say("OK")?;
                }
                None => say(ERR_SYNTAX)?,
            }
            continue;
        }
        match command.as_str() {
            "GETPIN" | "CONFIRM" => {
                let confirm = command == "CONFIRM";
                let (reply, logged): (Vec<String>, String) = match next_answer(&args.answers)? {
                    Answer::NoneLeft => (vec![ERR_NO_DATA.into()], "none-left".into()),
                    Answer::Cancel => (vec![ERR_CANCELED.into()], "cancel".into()),
                    Answer::Hang => (Vec::new(), "hang".into()),
                    Answer::Err(code) => (
                        vec![format!("ERR {code} Scripted error")],
                        format!("err:{code}"),
                    ),
                    Answer::Text(text) if confirm => match text.as_str() {
                        "OK" => (vec!["OK".into()], "ok".into()),
                        "NO" => (vec![ERR_NOT_CONFIRMED.into()], "no".into()),
                        _ => (vec![ERR_INV_VALUE.into()], "invalid".into()),
                    },
                    Answer::Text(pin) => {
                        let mut reply = Vec::new();
                        if !pin.is_empty() {
                            reply.push(format!("D {}", escape(&pin)));
                        }
                        reply.push("OK".into());
                        (reply, "pin".into())
                    }
                };
                log_request(log, &command, &texts, &logged)?;
                if reply.is_empty() {
                    // HANG: say nothing until the input closes (or a kill).
                    while read_line(&mut input)?.is_some() {}
                    return Ok(());
                }
                for line in reply {
                    say(&line)?;
                }
                // A new request starts with a fresh error text, as in
                // pinentry.
                texts.error = None;
            }
            "BYE" => {
                say("OK closing connection")?;
                return Ok(());
            }
            "RESET" => {
                texts = Texts::default();
                say("OK")?;
            }
            "GETINFO" => {
                match rest {
                    "version" => say("D 1.2.1")?,
                    "flavor" => say("D clinauth-test")?,
                    "pid" => say(&format!("D {}", std::process::id()))?,
                    _ => {}
                }
                say("OK")?;
            }
            "OPTION" | "NOP" => say("OK")?,
            _ if command.starts_with("SET") => say("OK")?,
            _ => say(ERR_UNKNOWN_CMD)?,
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clinauth-test-pinentry: {e}");
            ExitCode::FAILURE
        }
    }
}
