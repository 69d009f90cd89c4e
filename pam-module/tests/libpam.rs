//! `pam_clinauth.so` through the real libpam: service files in a temporary
//! directory, `pam_wrapper` (`LD_PRELOAD=libpam_wrapper.so`) so that
//! `/etc/pam.d` is never touched, and `pamtester` as the application. A
//! scripted agent (a thread serving a Unix socket with the real framing)
//! stands in for the agent; tests against the real agent come with the
//! end-to-end demo.
//!
//! Needs the Debian packages `libpam-wrapper` and `pamtester`
//! (`scripts/install-deps.sh`). The module is the `libpam_clinauth.so` that
//! `cargo test` built next to this test's executable (in `deps/`).
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clinauth_policy::Purpose;
use clinauth_proto::frame::FrameReader;
use clinauth_proto::serve::{read_request, write_reply};
use clinauth_proto::{
    ErrorCode, Label, Outcome, PromptKind, PromptStyle, Reply, Request, Text, Ticket, UserName,
};

const PIN: &str = "493817";
const USER: &str = "nurse.tanaka";

// pam_strerror's texts, as pamtester prints them.
const AUTH_ERR: &str = "Authentication failure";
const AUTHINFO_UNAVAIL: &str = "Authentication service cannot retrieve authentication info";
const SERVICE_ERR: &str = "Error in service module";
const CONV_ERR: &str = "Conversation error";
const PERM_DENIED: &str = "Permission denied";

// ------------------------------------------------------------ temp dirs

/// A temporary directory (mode 0700), removed with everything in it when
/// the test ends, passed or failed.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "pam-clinauth-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// -------------------------------------------------------- scripted agent

/// One step of a scripted connection.
enum Step {
    /// Read one request.
    Read,
    /// Read one request and reply with what the function makes of it.
    Respond(Box<dyn FnOnce(&Request) -> Reply + Send>),
    /// Reply to the last request read.
    Send(Reply),
    /// Write raw bytes.
    Raw(Vec<u8>),
    /// Stay silent.
    Sleep(Duration),
}

type Script = Vec<Step>;

/// A scripted agent on a Unix socket: the n-th connection runs the n-th
/// script, then the agent reads whatever else comes until the module hangs
/// up. Every request is recorded. Connections beyond the scripts are
/// closed at once (and counted).
struct Agent {
    socket: PathBuf,
    seen: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    fn start(dir: &TempDir, scripts: Vec<Script>) -> Agent {
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, connections, stop) = (seen.clone(), connections.clone(), stop.clone());
            thread::spawn(move || {
                let mut scripts = scripts.into_iter();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections.fetch_add(1, Ordering::SeqCst);
                            if let Some(script) = scripts.next() {
                                serve(stream, script, &seen);
                            }
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Agent {
            socket,
            seen,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    /// A socket path in `dir` where no agent listens.
    fn absent(dir: &TempDir) -> Agent {
        Agent {
            socket: dir.path().join("agent.sock"),
            seen: Arc::default(),
            connections: Arc::default(),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: UnixStream, script: Script, seen: &Mutex<Vec<Request>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = FrameReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut last_id = 0;
    for step in script {
        match step {
            Step::Read => match read_request(&mut reader) {
                Ok(Some(req)) => {
                    last_id = req.id;
                    seen.lock().unwrap().push(req.body);
                }
                _ => return,
            },
            Step::Respond(f) => match read_request(&mut reader) {
                Ok(Some(req)) => {
                    last_id = req.id;
                    let reply = f(&req.body);
                    seen.lock().unwrap().push(req.body);
                    if write_reply(&mut writer, last_id, &reply).is_err() {
                        return;
                    }
                }
                _ => return,
            },
            Step::Send(reply) => {
                if write_reply(&mut writer, last_id, &reply).is_err() {
                    return;
                }
            }
            Step::Raw(bytes) => {
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
            Step::Sleep(d) => thread::sleep(d),
        }
    }
    while let Ok(Some(req)) = read_request(&mut reader) {
        seen.lock().unwrap().push(req.body);
    }
}

// ---------------------------------------------------------------- replies

fn text(s: &str) -> Text {
    Text::new(s).unwrap()
}

fn pin_prompt() -> Reply {
    Reply::Prompt {
        prompt_id: 1,
        style: PromptStyle::Secret,
        kind: PromptKind::CardPin,
        text: text("Card PIN: "),
        text_ja: Some(text("ICカードのPIN: ")),
    }
}

fn auth_result(outcome: Outcome, purpose: Purpose, reason: Option<&str>) -> Reply {
    Reply::AuthResult {
        outcome,
        user: UserName::new(USER).unwrap(),
        purpose,
        rule: (outcome == Outcome::Allow).then(|| Label::new("ward-card-pin").unwrap()),
        factors: vec![],
        reason: reason.map(text),
        ticket: (outcome == Outcome::Allow).then(|| Ticket::new("h.p.s").unwrap()),
    }
}

/// A card-PIN login: the agent prompts, then allows only the right PIN.
fn pin_login() -> Script {
    vec![
        Step::Read,
        Step::Send(Reply::Info {
            text: text("Card found"),
            text_ja: Some(text("カードを検出しました")),
        }),
        Step::Send(pin_prompt()),
        Step::Respond(Box::new(|req| match req {
            Request::Answer {
                prompt_id: 1,
                value,
            } if value.expose() == PIN => auth_result(Outcome::Allow, Purpose::Login, None),
            _ => auth_result(Outcome::Deny, Purpose::Login, Some("wrong card PIN")),
        })),
    ]
}

fn is_authenticate(req: &Request) -> bool {
    matches!(req, Request::Authenticate { .. })
}

// --------------------------------------------------------------- pamtester

/// The module built by this `cargo test`: rustc writes the cdylib into the
/// test executable's own directory (`target/<profile>/deps`); the copy in
/// `target/<profile>` is only refreshed by `cargo build`, so it may be
/// stale and is never used.
fn module() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let so = exe.with_file_name("libpam_clinauth.so");
    assert!(
        so.is_file(),
        "{} not found: `cargo test -p pam_clinauth` builds it next to the test executable",
        so.display()
    );
    so
}

/// A PAM service directory with one service file, its name unique to the
/// run (pam_wrapper copies service directories to `/tmp/pam.?`; with a
/// unique name a mix-up between processes fails loudly instead of using
/// another test's stack).
struct Service {
    dir: TempDir,
    name: String,
}

impl Service {
    /// `lines` may use `MODULE` for the module's absolute path.
    fn new(lines: &[String]) -> Service {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = TempDir::new("svc");
        let name = format!(
            "clinauth-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let module = module();
        let body: String = lines
            .iter()
            .map(|l| l.replace("MODULE", module.to_str().unwrap()) + "\n")
            .collect();
        std::fs::write(dir.path().join(&name), body).unwrap();
        Service { dir, name }
    }

    /// One `auth` line for the module, plus the same for account and
    /// session.
    fn module_only(agent: &Agent, extra: &str) -> Service {
        let args = format!("socket={} timeout=5 {extra}", agent.socket.display());
        Service::new(&[
            format!("auth required MODULE {args}"),
            format!("account required MODULE {args}"),
            format!("session required MODULE {args}"),
        ])
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "{}", self.output());
    }

    /// pamtester exited 1 (not a crash) and printed `why`.
    #[track_caller]
    fn assert_refused(&self, why: &str) {
        assert_eq!(self.code, Some(1), "{}", self.output());
        assert!(
            self.stderr.contains(&format!("pamtester: {why}")),
            "expected {why:?}:\n{}",
            self.output()
        );
    }
}

/// Runs pamtester for `user` with `ops`, `stdin` typed in, extra pamtester
/// arguments (`-I`, `-E`) and extra process environment.
fn pamtester(
    service: &Service,
    user: &str,
    ops: &[&str],
    stdin: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Run {
    // One pamtester at a time: pam_wrapper's per-process directories
    // (`/tmp/pam.?`, one letter) race when several start at once.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new("pamtester");
    cmd.arg("-v");
    cmd.args(args);
    cmd.arg(&service.name).arg(user).args(ops);
    cmd.env("LD_PRELOAD", "libpam_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", service.dir.path())
        // pam_wrapper prints the modules' pam_syslog lines at this level.
        .env("PAM_WRAPPER_DEBUGLEVEL", "2")
        .env_remove("LANG")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .expect("pamtester (Debian package pamtester) must be installed");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Never let a hung module hang the test suite.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: started.elapsed(),
    };
    assert!(
        !run.output().contains(PIN),
        "the PIN appeared in the output or the logs:\n{}",
        run.output()
    );
    run
}

// ------------------------------------------------------------------ tests

#[test]
fn pin_allowed_through_libpam() {
    let dir = TempDir::new("ok");
    let agent = Agent::start(&dir, vec![pin_login()]);
    let svc = Service::module_only(&agent, "");
    let run = pamtester(
        &svc,
        USER,
        &["authenticate"],
        &format!("{PIN}\n"),
        &["-I", "tty=/dev/tty3", "-I", "rhost=ward3-ws12"],
        &[],
    );
    run.assert_success();
    let seen = agent.requests();
    assert_eq!(
        seen[0],
        Request::Authenticate {
            user: UserName::new(USER).unwrap(),
            purpose: Purpose::Login,
            service: Label::new(svc.name.as_str()).unwrap(),
            tty: Some(Label::new("/dev/tty3").unwrap()),
            rhost: Some(Label::new("ward3-ws12").unwrap()),
        }
    );
    assert!(
        matches!(&seen[1], Request::Answer { prompt_id: 1, value } if value.expose() == PIN),
        "{seen:?}"
    );
    assert!(run.output().contains("Card PIN: "), "{}", run.output());
    assert!(run.stdout.contains("Card found"), "{}", run.output());
    // The module's syslog line, through pam_syslog.
    assert!(
        run.stderr
            .contains("authenticate: allowed nurse.tanaka for login by rule ward-card-pin"),
        "{}",
        run.stderr
    );
}

#[test]
fn wrong_pin_denied_through_libpam() {
    let dir = TempDir::new("wrong");
    let agent = Agent::start(&dir, vec![pin_login()]);
    let svc = Service::module_only(&agent, "");
    let run = pamtester(&svc, USER, &["authenticate"], "000000\n", &[], &[]);
    run.assert_refused(AUTH_ERR);
    assert!(
        run.stderr.contains("Access denied: wrong card PIN"),
        "{}",
        run.output()
    );
    assert!(
        matches!(&agent.requests()[1], Request::Answer { value, .. } if value.expose() == "000000")
    );
}

#[test]
fn locked_user_denied_with_reason_shown_through_libpam() {
    let dir = TempDir::new("locked");
    let reason = "account locked after 5 failures / 5回の失敗でロックされています";
    let agent = Agent::start(
        &dir,
        vec![vec![
            Step::Read,
            Step::Send(auth_result(Outcome::Deny, Purpose::Login, Some(reason))),
        ]],
    );
    let svc = Service::module_only(&agent, "");
    let run = pamtester(&svc, USER, &["authenticate"], "", &[], &[]);
    run.assert_refused(AUTH_ERR);
    assert!(
        run.stderr.contains(&format!("Access denied: {reason}")),
        "{}",
        run.output()
    );
}

#[test]
fn agent_down_fails_closed_through_libpam() {
    let dir = TempDir::new("down");
    let agent = Agent::absent(&dir);
    let svc = Service::module_only(&agent, "");
    let run = pamtester(&svc, USER, &["authenticate"], &format!("{PIN}\n"), &[], &[]);
    run.assert_refused(AUTHINFO_UNAVAIL);
    assert!(
        run.stderr.contains("ClinAuth is not available"),
        "{}",
        run.output()
    );
    assert!(!run.output().contains("Card PIN"));
}

#[test]
fn agent_hang_times_out_through_libpam() {
    let dir = TempDir::new("hang");
    let agent = Agent::start(
        &dir,
        vec![vec![Step::Read, Step::Sleep(Duration::from_secs(4))]],
    );
    let svc = Service::new(&[format!(
        "auth required MODULE socket={} timeout=1",
        agent.socket.display()
    )]);
    let run = pamtester(&svc, USER, &["authenticate"], "", &[], &[]);
    run.assert_refused(AUTHINFO_UNAVAIL);
    assert!(run.took >= Duration::from_millis(900), "{:?}", run.took);
    assert!(run.took < Duration::from_secs(4), "{:?}", run.took);
    assert!(
        run.stderr.contains("did not answer in time"),
        "{}",
        run.stderr
    );
}

#[test]
fn malformed_reply_fails_closed_through_libpam() {
    let dir = TempDir::new("malformed");
    let agent = Agent::start(
        &dir,
        vec![vec![
            Step::Read,
            Step::Raw(b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"allow\"}}\n".to_vec()),
        ]],
    );
    let svc = Service::module_only(&agent, "");
    let run = pamtester(&svc, USER, &["authenticate"], "", &[], &[]);
    run.assert_refused(AUTH_ERR);
}

#[test]
fn auth_result_for_another_user_fails_closed_through_libpam() {
    let dir = TempDir::new("otheruser");
    let agent = Agent::start(
        &dir,
        vec![vec![
            Step::Read,
            Step::Send(auth_result(Outcome::Allow, Purpose::Login, None)),
        ]],
    );
    let svc = Service::module_only(&agent, "");
    let run = pamtester(&svc, "dr.suzuki", &["authenticate"], "", &[], &[]);
    run.assert_refused(AUTH_ERR);
}

#[test]
fn session_open_close_seen_by_the_agent_through_libpam() {
    let dir = TempDir::new("session");
    let agent = Agent::start(
        &dir,
        vec![
            pin_login(),
            vec![
                Step::Read,
                Step::Send(Reply::AccountResult {
                    outcome: Outcome::Allow,
                    reason: None,
                }),
            ],
            vec![
                Step::Read,
                Step::Send(Reply::SessionOpened {
                    session_id: Label::new("c7").unwrap(),
                    card_bound: true,
                }),
            ],
            vec![Step::Read, Step::Send(Reply::SessionClosed {})],
        ],
    );
    let svc = Service::module_only(&agent, "");
    let run = pamtester(
        &svc,
        USER,
        &["authenticate", "acct_mgmt", "open_session", "close_session"],
        &format!("{PIN}\n"),
        &["-E", "XDG_SESSION_ID=c7", "-I", "tty=tty3"],
        &[],
    );
    run.assert_success();
    let seen = agent.requests();
    let service = Label::new(svc.name.as_str()).unwrap();
    let user = UserName::new(USER).unwrap();
    let c7 = Some(Label::new("c7").unwrap());
    assert_eq!(
        seen[2..],
        [
            Request::Account {
                user: user.clone(),
                service: service.clone(),
            },
            Request::OpenSession {
                user: user.clone(),
                service: service.clone(),
                session_id: c7.clone(),
                tty: Some(Label::new("tty3").unwrap()),
            },
            Request::CloseSession {
                user,
                service,
                session_id: c7,
            },
        ],
        "{seen:?}"
    );
    assert_eq!(agent.connections(), 4);
    assert!(
        run.stderr.contains("session c7 of nurse.tanaka opened"),
        "{}",
        run.stderr
    );
}

#[test]
fn session_refused_by_the_agent_fails_closed_through_libpam() {
    let dir = TempDir::new("nosession");
    let agent = Agent::start(
        &dir,
        vec![vec![
            Step::Read,
            Step::Send(Reply::Error {
                code: ErrorCode::Internal,
                message: text("sessions are not available yet"),
            }),
        ]],
    );
    let svc = Service::module_only(&agent, "");
    let run = pamtester(&svc, USER, &["open_session"], "", &[], &[]);
    run.assert_refused("Cannot make/remove an entry for the specified session");
}

#[test]
fn account_denied_through_libpam() {
    let dir = TempDir::new("acct");
    let agent = Agent::start(
        &dir,
        vec![vec![
            Step::Read,
            Step::Send(Reply::AccountResult {
                outcome: Outcome::Deny,
                reason: Some(text("outside the ward's hours")),
            }),
        ]],
    );
    let svc = Service::module_only(&agent, "");
    let run = pamtester(&svc, USER, &["acct_mgmt"], "", &[], &[]);
    run.assert_refused(PERM_DENIED);
    assert!(
        run.stderr.contains("outside the ward's hours"),
        "{}",
        run.output()
    );
}

#[test]
fn japanese_prompts_through_libpam() {
    let dir = TempDir::new("ja");
    let agent = Agent::start(&dir, vec![pin_login(), pin_login()]);
    let svc = Service::module_only(&agent, "");
    // The locale from the PAM environment …
    let run = pamtester(
        &svc,
        USER,
        &["authenticate"],
        &format!("{PIN}\n"),
        &["-E", "LANG=ja_JP.UTF-8"],
        &[],
    );
    run.assert_success();
    assert!(run.output().contains("ICカードのPIN: "), "{}", run.output());
    assert!(
        run.stdout.contains("カードを検出しました"),
        "{}",
        run.output()
    );
    // … or from the process environment.
    let run = pamtester(
        &svc,
        USER,
        &["authenticate"],
        &format!("{PIN}\n"),
        &[],
        &[("LANG", "ja_JP.UTF-8")],
    );
    run.assert_success();
    assert!(run.output().contains("ICカードのPIN: "), "{}", run.output());
}

#[test]
fn silent_flag_through_libpam() {
    let dir = TempDir::new("silent");
    let agent = Agent::start(&dir, vec![pin_login()]);
    let svc = Service::module_only(&agent, "");
    let run = pamtester(
        &svc,
        USER,
        &["authenticate(PAM_SILENT)"],
        "000000\n",
        &[],
        &[],
    );
    run.assert_refused(AUTH_ERR);
    assert!(!run.output().contains("Card found"), "{}", run.output());
    assert!(!run.output().contains("Access denied"), "{}", run.output());
}

#[test]
fn odd_users_fail_closed_without_contacting_the_agent_through_libpam() {
    let dir = TempDir::new("oddusers");
    let agent = Agent::start(&dir, vec![]);
    let svc = Service::module_only(&agent, "");
    let long = "u".repeat(300);
    for user in ["", "nurse\u{1b}[2J", "nurse\ttanaka", long.as_str()] {
        for op in ["authenticate", "acct_mgmt", "open_session"] {
            let run = pamtester(&svc, user, &[op], "", &[], &[]);
            assert_eq!(run.code, Some(1), "{user:?} {op}: {}", run.output());
        }
    }
    assert_eq!(agent.connections(), 0);
}

#[test]
fn unknown_option_fails_closed_through_libpam() {
    let dir = TempDir::new("opt");
    let agent = Agent::start(&dir, vec![]);
    for extra in ["nouserok", "timeout=0", "purpose=sign", "debug debug"] {
        let svc = Service::module_only(&agent, extra);
        let run = pamtester(&svc, USER, &["authenticate"], "", &[], &[]);
        run.assert_refused(SERVICE_ERR);
        assert!(
            run.stderr.contains("invalid module arguments"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(agent.connections(), 0);
}

#[test]
fn conversation_at_end_of_input_fails_closed_through_libpam() {
    // pamtester's conversation fails when stdin ends before the PIN.
    let dir = TempDir::new("eof");
    let agent = Agent::start(&dir, vec![pin_login()]);
    let svc = Service::module_only(&agent, "");
    let run = pamtester(&svc, USER, &["authenticate"], "", &[], &[]);
    run.assert_refused(CONV_ERR);
    let seen = agent.requests();
    assert!(
        !seen.iter().any(|r| matches!(r, Request::Answer { .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|r| matches!(r, Request::Cancel {})),
        "{seen:?}"
    );
}

#[test]
fn empty_pin_fails_closed_through_libpam() {
    let dir = TempDir::new("emptypin");
    let agent = Agent::start(&dir, vec![pin_login()]);
    let svc = Service::module_only(&agent, "");
    let run = pamtester(&svc, USER, &["authenticate"], "\n", &[], &[]);
    run.assert_refused(AUTH_ERR);
    assert!(!agent
        .requests()
        .iter()
        .any(|r| matches!(r, Request::Answer { .. })));
}

#[test]
fn unlock_purpose_through_libpam() {
    let dir = TempDir::new("unlock");
    let agent = Agent::start(
        &dir,
        vec![
            vec![
                Step::Read,
                Step::Send(pin_prompt()),
                Step::Read,
                Step::Send(auth_result(Outcome::Allow, Purpose::Unlock, None)),
            ],
            // Asked to unlock, answered about a login: refused.
            vec![
                Step::Read,
                Step::Send(pin_prompt()),
                Step::Read,
                Step::Send(auth_result(Outcome::Allow, Purpose::Login, None)),
            ],
        ],
    );
    let svc = Service::module_only(&agent, "purpose=unlock");
    let run = pamtester(&svc, USER, &["authenticate"], &format!("{PIN}\n"), &[], &[]);
    run.assert_success();
    assert!(matches!(
        &agent.requests()[0],
        Request::Authenticate {
            purpose: Purpose::Unlock,
            ..
        }
    ));
    let run = pamtester(&svc, USER, &["authenticate"], &format!("{PIN}\n"), &[], &[]);
    run.assert_refused(AUTH_ERR);
}

// ------------------------------------------------------------ stacking
//
// pam_unix cannot check a password here: the test users are not in
// /etc/passwd and nothing may be added to /etc/shadow. Real pam_unix is
// used where it fails (an unknown user, as a wrong password would);
// pam_permit.so stands in for "pam_unix accepted the password" and
// pam_deny.so for "pam_unix refused it". docs/PAM.md describes these
// stacks.

fn stack(agent: &Agent, first: &str) -> Service {
    Service::new(&[
        first.to_owned(),
        format!(
            "auth required MODULE socket={} timeout=5",
            agent.socket.display()
        ),
    ])
}

#[test]
fn stack_required_pam_unix_and_clinauth_needs_both() {
    // The password is wrong (unknown to pam_unix); ClinAuth says yes: the
    // login fails, and ClinAuth was still asked (required runs on).
    let dir = TempDir::new("stack1");
    let agent = Agent::start(&dir, vec![pin_login()]);
    let svc = stack(&agent, "auth required pam_unix.so");
    let run = pamtester(
        &svc,
        USER,
        &["authenticate"],
        &format!("not-the-password\n{PIN}\n"),
        &[],
        &[],
    );
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert!(agent.requests().iter().any(is_authenticate));
    assert!(
        run.stderr.contains("authenticate: allowed nurse.tanaka"),
        "{}",
        run.stderr
    );
}

#[test]
fn stack_password_accepted_then_clinauth_decides() {
    // pam_permit stands for "pam_unix accepted the password".
    let dir = TempDir::new("stack2");
    let agent = Agent::start(&dir, vec![pin_login(), pin_login()]);
    let svc = stack(&agent, "auth required pam_permit.so");
    pamtester(&svc, USER, &["authenticate"], &format!("{PIN}\n"), &[], &[]).assert_success();
    pamtester(&svc, USER, &["authenticate"], "000000\n", &[], &[]).assert_refused(AUTH_ERR);
}

#[test]
fn stack_password_accepted_but_agent_down_fails_closed() {
    // The pam-u2f CVE-2025-23013 stack: first factor fine, the second
    // factor's module in error. The error must not let the login through.
    let dir = TempDir::new("stack3");
    let agent = Agent::absent(&dir);
    let svc = stack(&agent, "auth required pam_permit.so");
    let run = pamtester(&svc, USER, &["authenticate"], "", &[], &[]);
    run.assert_refused(AUTHINFO_UNAVAIL);
}

#[test]
fn stack_sufficient_pam_unix_falls_through_to_clinauth() {
    // `sufficient pam_unix` then `required pam_clinauth`: when the password
    // fails, ClinAuth alone decides.
    let dir = TempDir::new("stack4");
    let agent = Agent::start(&dir, vec![pin_login(), pin_login()]);
    let svc = stack(&agent, "auth sufficient pam_unix.so");
    pamtester(
        &svc,
        USER,
        &["authenticate"],
        &format!("wrong\n{PIN}\n"),
        &[],
        &[],
    )
    .assert_success();
    pamtester(&svc, USER, &["authenticate"], "wrong\n000000\n", &[], &[]).assert_refused(AUTH_ERR);
}

#[test]
fn stack_sufficient_password_first_skips_clinauth() {
    // Why docs/PAM.md says never to put a password module as `sufficient`
    // before pam_clinauth: a good password alone lets the user in and the
    // agent is never asked (one factor).
    let dir = TempDir::new("stack5");
    let agent = Agent::start(&dir, vec![pin_login()]);
    let svc = stack(&agent, "auth sufficient pam_permit.so");
    pamtester(&svc, USER, &["authenticate"], "", &[], &[]).assert_success();
    assert_eq!(agent.connections(), 0);
}

/// The `clinauth-auth` file of docs/PAM.md, with `user = root` for the
/// recovery group and pam_permit standing in for the recovery account's
/// pam_unix password check.
fn documented_stack(agent: &Agent) -> Service {
    Service::new(&[
        "auth [success=1 default=ignore] pam_succeed_if.so quiet user = root".to_owned(),
        format!(
            "auth [success=2 default=die] MODULE socket={} timeout=5",
            agent.socket.display()
        ),
        "auth [success=1 default=die] pam_permit.so".to_owned(),
        "auth requisite pam_deny.so".to_owned(),
        "auth required pam_permit.so".to_owned(),
    ])
}

#[test]
fn documented_stack_lets_clinauth_decide() {
    let dir = TempDir::new("stack6");
    let agent = Agent::start(&dir, vec![pin_login(), pin_login()]);
    let svc = documented_stack(&agent);
    pamtester(&svc, USER, &["authenticate"], &format!("{PIN}\n"), &[], &[]).assert_success();
    pamtester(&svc, USER, &["authenticate"], "000000\n", &[], &[]).assert_refused(AUTH_ERR);
    assert_eq!(agent.connections(), 2);
}

#[test]
fn documented_stack_recovery_account_works_when_agent_is_down() {
    // The documented recovery: an officer-managed local account skips
    // pam_clinauth (pam_succeed_if before it) and uses its password;
    // everyone else still needs the agent, which is down.
    let dir = TempDir::new("stack7");
    let agent = Agent::absent(&dir);
    let svc = documented_stack(&agent);
    pamtester(&svc, "root", &["authenticate"], "", &[], &[]).assert_success();
    pamtester(&svc, USER, &["authenticate"], "", &[], &[]).assert_refused(AUTHINFO_UNAVAIL);
}
