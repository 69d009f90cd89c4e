//! The logic against a scripted PAM handle ([`FakePam`]) and a scripted
//! agent on a `UnixStream` pair ([`agent`]): one test per fail-closed path,
//! named after it, and the success paths they are measured against.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clinauth_policy::Purpose;
use clinauth_proto::frame::{FrameReader, MAX_FRAME_LEN};
use clinauth_proto::serve::{read_request, write_reply};
use clinauth_proto::{
    AgentClient, ClientError, ErrorCode, Label, Outcome, PromptKind, PromptStyle, Reply, Request,
    Text, Ticket, UserName,
};
use zeroize::Zeroizing;

use crate::codes::*;
use crate::logic::{guarded, run, BadString, ConvProblem, Failure, Op, MAX_MESSAGES};
use crate::ops::{Answer, Connect, Item, Level, PamOps, SocketConnect, Style};
use crate::options::OptionError;

const PIN: &str = "493817";
const USER: &str = "nurse.tanaka";

// ---------------------------------------------------------------- fake PAM

/// A scripted PAM handle: items, environment, the answers the "user" gives
/// to prompts, and everything the module showed and logged.
struct FakePam {
    user: Result<Option<Vec<u8>>, PamCode>,
    items: HashMap<Item, Result<Option<Vec<u8>>, PamCode>>,
    pam_env: HashMap<String, Vec<u8>>,
    process_env: HashMap<String, Vec<u8>>,
    /// Answers to prompts, in order; none left is a conversation error.
    answers: VecDeque<Result<Answer, PamCode>>,
    /// When set, showing an error or info message fails with this code.
    message_failure: Option<PamCode>,
    panic_in_converse: bool,
    shown: Vec<(Style, String)>,
    logs: RefCell<Vec<(Level, String)>>,
}

impl FakePam {
    fn new() -> Self {
        let mut items = HashMap::new();
        items.insert(Item::Service, Ok(Some(b"gdm-password".to_vec())));
        items.insert(Item::Tty, Ok(Some(b":0".to_vec())));
        items.insert(Item::Rhost, Ok(None));
        Self {
            user: Ok(Some(USER.as_bytes().to_vec())),
            items,
            pam_env: HashMap::new(),
            process_env: HashMap::new(),
            answers: VecDeque::new(),
            message_failure: None,
            panic_in_converse: false,
            shown: Vec::new(),
            logs: RefCell::new(Vec::new()),
        }
    }

    fn answering(mut self, answers: &[&str]) -> Self {
        for a in answers {
            self.answers
                .push_back(Ok(Answer::Text(Zeroizing::new(a.as_bytes().to_vec()))));
        }
        self
    }

    fn answer(mut self, answer: Result<Answer, PamCode>) -> Self {
        self.answers.push_back(answer);
        self
    }

    fn item(mut self, item: Item, value: Result<Option<&[u8]>, PamCode>) -> Self {
        self.items
            .insert(item, value.map(|v| v.map(<[u8]>::to_vec)));
        self
    }

    fn user(mut self, user: Result<Option<&[u8]>, PamCode>) -> Self {
        self.user = user.map(|u| u.map(<[u8]>::to_vec));
        self
    }

    fn pam_env(mut self, name: &str, value: &str) -> Self {
        self.pam_env.insert(name.into(), value.as_bytes().to_vec());
        self
    }

    fn process_env(mut self, name: &str, value: &str) -> Self {
        self.process_env
            .insert(name.into(), value.as_bytes().to_vec());
        self
    }

    fn prompts(&self) -> Vec<(Style, String)> {
        self.shown
            .iter()
            .filter(|(s, _)| s.is_prompt())
            .cloned()
            .collect()
    }

    fn messages(&self, style: Style) -> Vec<String> {
        self.shown
            .iter()
            .filter(|(s, _)| *s == style)
            .map(|(_, t)| t.clone())
            .collect()
    }

    fn all_logs(&self) -> String {
        self.logs
            .borrow()
            .iter()
            .map(|(l, m)| format!("{l:?} {m}\n"))
            .collect()
    }
}

impl PamOps for FakePam {
    fn user(&mut self) -> Result<Option<Vec<u8>>, PamCode> {
        self.user.clone()
    }

    fn item(&self, item: Item) -> Result<Option<Vec<u8>>, PamCode> {
        self.items.get(&item).cloned().unwrap_or(Ok(None))
    }

    fn pam_env(&self, name: &str) -> Option<Vec<u8>> {
        self.pam_env.get(name).cloned()
    }

    fn process_env(&self, name: &str) -> Option<Vec<u8>> {
        self.process_env.get(name).cloned()
    }

    fn converse(&mut self, style: Style, text: &str) -> Result<Answer, PamCode> {
        if self.panic_in_converse {
            panic!("scripted panic in the conversation");
        }
        self.shown.push((style, text.to_owned()));
        if style.is_prompt() {
            self.answers.pop_front().unwrap_or(Err(PAM_CONV_ERR))
        } else {
            match self.message_failure {
                Some(code) => Err(code),
                None => Ok(Answer::NoResponse),
            }
        }
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
}

// -------------------------------------------------------- scripted agent

/// One step of the scripted agent.
enum Step {
    /// Read one request.
    Read,
    /// Read one request and reply with what the function makes of it.
    Respond(Box<dyn FnOnce(&Request) -> Reply + Send>),
    /// Reply to the last request read.
    Send(Reply),
    /// Reply with an explicit id.
    SendId(u64, Reply),
    /// Write raw bytes.
    Raw(Vec<u8>),
    /// Stay silent.
    Sleep(Duration),
    /// Hang up.
    Close,
}

/// The scripted agent: runs `script` on its end of a socket pair, then
/// reads what else comes until the module hangs up; returns every request
/// it read.
struct ScriptedAgent {
    stream: RefCell<Option<UnixStream>>,
    thread: Option<JoinHandle<Vec<Request>>>,
}

fn agent(script: Vec<Step>) -> ScriptedAgent {
    let (module_end, agent_end) = UnixStream::pair().unwrap();
    let thread = thread::spawn(move || {
        let mut reader = FrameReader::new(agent_end.try_clone().unwrap());
        let mut writer = agent_end.try_clone().unwrap();
        let mut seen = Vec::new();
        let mut last_id = 0;
        for step in script {
            match step {
                Step::Read => {
                    let req = read_request(&mut reader).unwrap().expect("a request");
                    last_id = req.id;
                    seen.push(req.body);
                }
                Step::Respond(f) => {
                    let req = read_request(&mut reader).unwrap().expect("a request");
                    last_id = req.id;
                    let reply = f(&req.body);
                    seen.push(req.body);
                    write_reply(&mut writer, last_id, &reply).unwrap();
                }
                Step::Send(reply) => {
                    let _ = write_reply(&mut writer, last_id, &reply);
                }
                Step::SendId(id, reply) => {
                    let _ = write_reply(&mut writer, id, &reply);
                }
                Step::Raw(bytes) => {
                    let _ = writer.write_all(&bytes);
                }
                Step::Sleep(d) => thread::sleep(d),
                Step::Close => return seen,
            }
        }
        // Whatever the module still sends (a cancel), until it hangs up.
        agent_end
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        while let Ok(Some(req)) = read_request(&mut reader) {
            seen.push(req.body);
        }
        seen
    });
    ScriptedAgent {
        stream: RefCell::new(Some(module_end)),
        thread: Some(thread),
    }
}

impl ScriptedAgent {
    fn requests(mut self) -> Vec<Request> {
        // The module's end may still be here if it never connected.
        self.stream.borrow_mut().take();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Connect for ScriptedAgent {
    fn connect(&self, _socket: &Path, timeout: Duration) -> Result<AgentClient, ClientError> {
        match self.stream.borrow_mut().take() {
            Some(stream) => AgentClient::from_stream(stream, timeout),
            None => Err(ClientError::Io(std::io::ErrorKind::NotFound.into())),
        }
    }
}

/// A connector that must never be used: the module must refuse before it
/// talks to the agent.
struct NoAgent(AtomicUsize);

impl NoAgent {
    fn new() -> Self {
        NoAgent(AtomicUsize::new(0))
    }
    fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Connect for NoAgent {
    fn connect(&self, _: &Path, _: Duration) -> Result<AgentClient, ClientError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(ClientError::Io(std::io::ErrorKind::NotFound.into()))
    }
}

// ----------------------------------------------------------------- replies

fn user(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

fn text(s: &str) -> Text {
    Text::new(s).unwrap()
}

fn pin_prompt(id: u32) -> Reply {
    Reply::Prompt {
        prompt_id: id,
        style: PromptStyle::Secret,
        kind: PromptKind::CardPin,
        text: text("Card PIN: "),
        text_ja: Some(text("ICカードのPIN: ")),
    }
}

fn insert_card_prompt(id: u32) -> Reply {
    Reply::Prompt {
        prompt_id: id,
        style: PromptStyle::Visible,
        kind: PromptKind::InsertCard,
        text: text("Insert your card and press Enter"),
        text_ja: Some(text("ICカードを挿入して Enter を押してください")),
    }
}

fn info(en: &str, ja: Option<&str>) -> Reply {
    Reply::Info {
        text: text(en),
        text_ja: ja.map(text),
    }
}

fn result(outcome: Outcome, who: &str, purpose: Purpose, reason: Option<&str>) -> Reply {
    Reply::AuthResult {
        outcome,
        user: user(who),
        purpose,
        rule: (outcome == Outcome::Allow).then(|| Label::new("ward-card-pin").unwrap()),
        factors: if outcome == Outcome::Allow {
            vec![
                Label::new("smartcard").unwrap(),
                Label::new("card_pin").unwrap(),
            ]
        } else {
            vec![]
        },
        reason: reason.map(text),
        ticket: (outcome == Outcome::Allow).then(|| Ticket::new("header.payload.sig").unwrap()),
    }
}

fn allow() -> Reply {
    result(Outcome::Allow, USER, Purpose::Login, None)
}

fn agent_error(code: ErrorCode, message: &str) -> Reply {
    Reply::Error {
        code,
        message: text(message),
    }
}

fn status_result() -> Reply {
    Reply::StatusResult {
        agent_version: Label::new("0.1.0").unwrap(),
        server_reachable: true,
        session_user: None,
        card_present: true,
    }
}

/// The agent's side of a card-PIN login: prompt, check the PIN it gets,
/// allow or deny.
fn pin_login(expected_pin: &'static str) -> Vec<Step> {
    vec![
        Step::Read,
        Step::Send(pin_prompt(1)),
        Step::Respond(Box::new(move |req| match req {
            Request::Answer {
                prompt_id: 1,
                value,
            } if value.expose() == expected_pin => allow(),
            Request::Answer { .. } => {
                result(Outcome::Deny, USER, Purpose::Login, Some("wrong card PIN"))
            }
            other => agent_error(ErrorCode::UnexpectedMessage, &format!("{other:?}")),
        })),
    ]
}

fn run_auth(pam: &mut FakePam, args: &[&str], script: Vec<Step>) -> (PamCode, Vec<Request>) {
    run_op(Op::Authenticate, pam, args, script)
}

fn run_op(op: Op, pam: &mut FakePam, args: &[&str], script: Vec<Step>) -> (PamCode, Vec<Request>) {
    let agent = agent(script);
    let code = run(op, pam, 0, args, &agent);
    (code, agent.requests())
}

#[track_caller]
fn assert_fails_closed(code: PamCode) {
    assert!(
        !lets_through(code),
        "expected a failure code, got {code} ({})",
        crate::logic::code_name(code)
    );
}

fn is_cancel(req: &Request) -> bool {
    matches!(req, Request::Cancel {})
}

/// A temporary directory (mode 0700), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "pam-clinauth-unit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------- success

#[test]
fn pin_answered_and_allowed_succeeds() {
    let mut pam = FakePam::new().answering(&[PIN]);
    let (code, seen) = run_auth(&mut pam, &[], pin_login(PIN));
    assert_eq!(code, PAM_SUCCESS, "{}", pam.all_logs());
    assert_eq!(
        seen[0],
        Request::Authenticate {
            user: user(USER),
            purpose: Purpose::Login,
            service: Label::new("gdm-password").unwrap(),
            tty: Some(Label::new(":0").unwrap()),
            rhost: None,
        }
    );
    assert!(
        matches!(&seen[1], Request::Answer { prompt_id: 1, value } if value.expose() == PIN),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 2, "no cancel after a result: {seen:?}");
    assert_eq!(
        pam.prompts(),
        vec![(Style::EchoOff, "Card PIN: ".to_owned())]
    );
    assert!(pam
        .all_logs()
        .contains("allowed nurse.tanaka for login by rule ward-card-pin"));
}

#[test]
fn purpose_option_is_sent_and_checked() {
    let mut pam = FakePam::new().answering(&[PIN]);
    let script = vec![
        Step::Read,
        Step::Send(pin_prompt(1)),
        Step::Read,
        Step::Send(result(Outcome::Allow, USER, Purpose::Unlock, None)),
    ];
    let (code, seen) = run_auth(&mut pam, &["purpose=unlock"], script);
    assert_eq!(code, PAM_SUCCESS, "{}", pam.all_logs());
    assert!(matches!(
        &seen[0],
        Request::Authenticate {
            purpose: Purpose::Unlock,
            ..
        }
    ));
}

#[test]
fn prompts_and_infos_are_relayed_with_their_styles() {
    let mut pam = FakePam::new().answering(&["", PIN]);
    let script = vec![
        Step::Read,
        Step::Send(info("Card reader ready", None)),
        Step::Send(insert_card_prompt(1)),
        Step::Read,
        Step::Send(pin_prompt(2)),
        Step::Read,
        Step::Send(allow()),
    ];
    let (code, seen) = run_auth(&mut pam, &[], script);
    assert_eq!(code, PAM_SUCCESS, "{}", pam.all_logs());
    assert_eq!(
        pam.shown,
        vec![
            (Style::TextInfo, "Card reader ready".to_owned()),
            (Style::EchoOn, "Insert your card and press Enter".to_owned()),
            (Style::EchoOff, "Card PIN: ".to_owned()),
        ]
    );
    assert!(matches!(&seen[1], Request::Answer { prompt_id: 1, value } if value.is_empty()));
    assert!(matches!(&seen[2], Request::Answer { prompt_id: 2, value } if value.expose() == PIN));
}

#[test]
fn japanese_locale_chooses_japanese_text() {
    // From the PAM environment.
    let mut pam = FakePam::new()
        .answering(&[PIN])
        .pam_env("LANG", "ja_JP.UTF-8");
    let (code, _) = run_auth(&mut pam, &[], pin_login(PIN));
    assert_eq!(code, PAM_SUCCESS);
    assert_eq!(pam.prompts()[0].1, "ICカードのPIN: ");

    // From the process environment, when the PAM environment says nothing.
    let mut pam = FakePam::new()
        .answering(&[PIN])
        .process_env("LC_MESSAGES", "ja_JP.UTF-8")
        .process_env("LANG", "en_US.UTF-8");
    run_auth(&mut pam, &[], pin_login(PIN));
    assert_eq!(pam.prompts()[0].1, "ICカードのPIN: ");

    // The PAM environment wins over the process's; LC_ALL over LANG.
    for pam in [
        FakePam::new()
            .pam_env("LANG", "en_US.UTF-8")
            .process_env("LANG", "ja_JP.UTF-8"),
        FakePam::new()
            .pam_env("LC_ALL", "C")
            .pam_env("LANG", "ja_JP.UTF-8"),
    ] {
        let mut pam = pam.answering(&[PIN]);
        run_auth(&mut pam, &[], pin_login(PIN));
        assert_eq!(pam.prompts()[0].1, "Card PIN: ");
    }

    // No Japanese text from the agent: English.
    let mut pam = FakePam::new()
        .answering(&[PIN])
        .pam_env("LANG", "ja_JP.UTF-8");
    let script = vec![
        Step::Read,
        Step::Send(Reply::Prompt {
            prompt_id: 1,
            style: PromptStyle::Secret,
            kind: PromptKind::Pin,
            text: text("PIN: "),
            text_ja: None,
        }),
        Step::Read,
        Step::Send(allow()),
    ];
    run_auth(&mut pam, &[], script);
    assert_eq!(pam.prompts()[0].1, "PIN: ");
}

#[test]
fn japanese_locale_for_the_modules_own_messages() {
    let dir = TempDir::new("ja");
    let socket = dir.0.join("absent.sock");
    let mut pam = FakePam::new().pam_env("LANG", "ja_JP.UTF-8");
    let arg = format!("socket={}", socket.display());
    let code = run(
        Op::Authenticate,
        &mut pam,
        0,
        &[arg.as_str()],
        &SocketConnect,
    );
    assert_fails_closed(code);
    assert_eq!(
        pam.messages(Style::ErrorMsg),
        vec!["この端末では ClinAuth を利用できません。情報システム部門に連絡してください。"]
    );
}

#[test]
fn silent_flag_suppresses_messages_but_not_prompts() {
    let mut pam = FakePam::new().answering(&[PIN]);
    let agent = agent(vec![
        Step::Read,
        Step::Send(info("Card reader ready", None)),
        Step::Send(pin_prompt(1)),
        Step::Read,
        Step::Send(result(
            Outcome::Deny,
            USER,
            Purpose::Login,
            Some("wrong card PIN"),
        )),
    ]);
    let code = run(
        Op::Authenticate,
        &mut pam,
        PAM_SILENT,
        &[] as &[&str],
        &agent,
    );
    agent.requests();
    assert_eq!(code, PAM_AUTH_ERR);
    assert_eq!(pam.shown, vec![(Style::EchoOff, "Card PIN: ".to_owned())]);
}

// ------------------------------------------------------ agent unreachable

#[test]
fn agent_socket_absent_fails_closed() {
    let dir = TempDir::new("absent");
    let socket = dir.0.join("agent.sock");
    let mut pam = FakePam::new();
    let arg = format!("socket={}", socket.display());
    let code = run(
        Op::Authenticate,
        &mut pam,
        0,
        &[arg.as_str()],
        &SocketConnect,
    );
    assert_eq!(code, PAM_AUTHINFO_UNAVAIL);
    assert!(pam.prompts().is_empty());
    assert_eq!(pam.messages(Style::ErrorMsg).len(), 1);
    assert!(
        pam.all_logs().contains("cannot reach the agent"),
        "{}",
        pam.all_logs()
    );
}

#[test]
fn agent_socket_directory_absent_fails_closed() {
    let dir = TempDir::new("nodir");
    let socket = dir.0.join("missing").join("agent.sock");
    let arg = format!("socket={}", socket.display());
    for op in [
        Op::Authenticate,
        Op::Account,
        Op::OpenSession,
        Op::CloseSession,
    ] {
        let code = run(op, &mut FakePam::new(), 0, &[arg.as_str()], &SocketConnect);
        assert_fails_closed(code);
    }
}

#[test]
fn socket_in_a_directory_others_can_write_fails_closed() {
    // Anyone could put a fake agent there: refuse before connecting.
    let dir = TempDir::new("ww");
    let shared = dir.0.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = shared.join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut pam = FakePam::new();
    let arg = format!("socket={}", socket.display());
    let code = run(
        Op::Authenticate,
        &mut pam,
        0,
        &[arg.as_str()],
        &SocketConnect,
    );
    assert_eq!(code, PAM_AUTHINFO_UNAVAIL);
    assert!(listener.accept().is_err(), "the module connected anyway");
    assert!(
        pam.all_logs().contains("writable by group or others"),
        "{}",
        pam.all_logs()
    );
}

#[test]
fn agent_refusing_connections_fails_closed() {
    // A socket file nobody listens on (the agent died).
    let dir = TempDir::new("dead");
    let socket = dir.0.join("agent.sock");
    drop(UnixListener::bind(&socket).unwrap());
    let arg = format!("socket={}", socket.display());
    let code = run(
        Op::Authenticate,
        &mut FakePam::new(),
        0,
        &[arg.as_str()],
        &SocketConnect,
    );
    assert_eq!(code, PAM_AUTHINFO_UNAVAIL);
}

#[test]
fn agent_hangs_past_timeout_fails_closed() {
    let mut pam = FakePam::new();
    let agent = agent(vec![Step::Read, Step::Sleep(Duration::from_secs(3))]);
    let started = Instant::now();
    let code = run(Op::Authenticate, &mut pam, 0, &["timeout=1"], &agent);
    let took = started.elapsed();
    assert_eq!(code, PAM_AUTHINFO_UNAVAIL);
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(agent.requests().len(), 1);
    assert!(pam.all_logs().contains("did not answer in time"));
}

#[test]
fn agent_hangs_after_an_answer_fails_closed() {
    let mut pam = FakePam::new().answering(&[PIN]);
    let (code, _) = run_auth(
        &mut pam,
        &["timeout=1"],
        vec![
            Step::Read,
            Step::Send(pin_prompt(1)),
            Step::Read,
            Step::Sleep(Duration::from_secs(2)),
        ],
    );
    assert_eq!(code, PAM_AUTHINFO_UNAVAIL);
}

// ------------------------------------------------------ misbehaving agent

#[test]
fn malformed_reply_fails_closed() {
    for garbage in [
        &b"this is not json\n"[..],
        b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"auth_result\",\"outcome\":\"allow\"}}\n",
        b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"auth_result\",\"outcome\":\"maybe\",\"user\":\"nurse.tanaka\",\"purpose\":\"login\"}}\n",
        b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"allow\"}}\n",
        b"\n",
        b"\xff\xfe\n",
    ] {
        let mut pam = FakePam::new();
        let (code, _) = run_auth(&mut pam, &[], vec![Step::Read, Step::Raw(garbage.to_vec())]);
        assert_eq!(code, PAM_AUTH_ERR, "{:?}", String::from_utf8_lossy(garbage));
    }
}

#[test]
fn allow_with_unknown_fields_fails_closed() {
    let mut pam = FakePam::new();
    let frame = b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"auth_result\",\"outcome\":\"allow\",\"user\":\"nurse.tanaka\",\"purpose\":\"login\",\"factors\":[],\"admin\":true}}\n";
    let (code, _) = run_auth(&mut pam, &[], vec![Step::Read, Step::Raw(frame.to_vec())]);
    assert_eq!(code, PAM_AUTH_ERR);
}

#[test]
fn oversized_reply_fails_closed() {
    let mut pam = FakePam::new();
    let mut big = b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"info\",\"text\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_FRAME_LEN));
    big.extend(b"\"}}\n");
    let (code, _) = run_auth(&mut pam, &[], vec![Step::Read, Step::Raw(big)]);
    assert_eq!(code, PAM_AUTH_ERR);
    assert!(pam.shown.is_empty() || pam.messages(Style::TextInfo).is_empty());
}

#[test]
fn unsupported_version_reply_fails_closed() {
    let mut pam = FakePam::new();
    let frame = b"{\"v\":2,\"id\":1,\"body\":{\"type\":\"auth_result\",\"outcome\":\"allow\",\"user\":\"nurse.tanaka\",\"purpose\":\"login\"}}\n";
    let (code, _) = run_auth(&mut pam, &[], vec![Step::Read, Step::Raw(frame.to_vec())]);
    assert_eq!(code, PAM_AUTH_ERR);
}

#[test]
fn reply_with_wrong_id_fails_closed() {
    let mut pam = FakePam::new();
    let (code, _) = run_auth(&mut pam, &[], vec![Step::Read, Step::SendId(7, allow())]);
    assert_eq!(code, PAM_AUTH_ERR);
    assert!(pam.all_logs().contains("outstanding"), "{}", pam.all_logs());
}

#[test]
fn auth_result_before_the_prompt_is_answered_fails_closed() {
    // The agent prompts, then allows at once with the authenticate
    // request's id: by then the module has sent its answer, so the allow
    // answers a request that is no longer outstanding.
    let mut pam = FakePam::new().answering(&[PIN]);
    let (code, _) = run_auth(
        &mut pam,
        &[],
        vec![Step::Read, Step::Send(pin_prompt(1)), Step::Send(allow())],
    );
    assert_eq!(code, PAM_AUTH_ERR);
}

#[test]
fn status_result_during_authenticate_fails_closed() {
    let mut pam = FakePam::new();
    let (code, seen) = run_auth(&mut pam, &[], vec![Step::Read, Step::Send(status_result())]);
    assert_eq!(code, PAM_AUTH_ERR);
    assert!(seen.iter().any(is_cancel), "{seen:?}");
    assert!(
        pam.all_logs().contains("got status_result"),
        "{}",
        pam.all_logs()
    );
}

#[test]
fn other_replies_during_authenticate_fail_closed() {
    for reply in [
        Reply::AccountResult {
            outcome: Outcome::Allow,
            reason: None,
        },
        Reply::SessionOpened {
            session_id: Label::new("c1").unwrap(),
            card_bound: true,
        },
        Reply::SessionClosed {},
    ] {
        let mut pam = FakePam::new();
        let (code, _) = run_auth(&mut pam, &[], vec![Step::Read, Step::Send(reply.clone())]);
        assert_eq!(code, PAM_AUTH_ERR, "{reply:?}");
    }
}

#[test]
fn auth_result_for_another_user_fails_closed() {
    let mut pam = FakePam::new().answering(&[PIN]);
    let (code, _) = run_auth(
        &mut pam,
        &[],
        vec![
            Step::Read,
            Step::Send(pin_prompt(1)),
            Step::Read,
            Step::Send(result(Outcome::Allow, "dr.suzuki", Purpose::Login, None)),
        ],
    );
    assert_eq!(code, PAM_AUTH_ERR);
    assert!(
        pam.all_logs().contains("auth_result for user dr.suzuki"),
        "{}",
        pam.all_logs()
    );
}

#[test]
fn auth_result_for_another_purpose_fails_closed() {
    // Asked to unlock, told "allowed to break the glass" (or the reverse):
    // not what was asked.
    for (asked, told) in [
        ("purpose=unlock", Purpose::BreakGlass),
        ("purpose=break_glass", Purpose::Login),
        ("purpose=login", Purpose::Unlock),
    ] {
        let mut pam = FakePam::new().answering(&[PIN]);
        let (code, _) = run_auth(
            &mut pam,
            &[asked],
            vec![
                Step::Read,
                Step::Send(pin_prompt(1)),
                Step::Read,
                Step::Send(result(Outcome::Allow, USER, told, None)),
            ],
        );
        assert_eq!(code, PAM_AUTH_ERR, "{asked} / {told}");
    }
}

#[test]
fn agent_closes_mid_conversation_fails_closed() {
    let mut pam = FakePam::new().answering(&[PIN]);
    let (code, _) = run_auth(
        &mut pam,
        &[],
        vec![
            Step::Read,
            Step::Send(pin_prompt(1)),
            Step::Read,
            Step::Close,
        ],
    );
    assert_eq!(code, PAM_AUTH_ERR);
}

#[test]
fn agent_closes_mid_frame_fails_closed() {
    let mut pam = FakePam::new();
    let (code, _) = run_auth(
        &mut pam,
        &[],
        vec![
            Step::Read,
            Step::Raw(b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"auth_res".to_vec()),
            Step::Close,
        ],
    );
    assert_eq!(code, PAM_AUTH_ERR);
}

#[test]
fn agent_error_reply_fails_closed() {
    for (code, expected) in [
        (ErrorCode::Internal, PAM_AUTH_ERR),
        (ErrorCode::Unauthorized, PAM_AUTH_ERR),
        (ErrorCode::UnexpectedMessage, PAM_AUTH_ERR),
        (ErrorCode::Timeout, PAM_AUTH_ERR),
        (ErrorCode::Malformed, PAM_AUTH_ERR),
        (ErrorCode::ServerUnreachable, PAM_AUTHINFO_UNAVAIL),
        (ErrorCode::UnknownUser, PAM_USER_UNKNOWN),
    ] {
        let mut pam = FakePam::new();
        let (got, _) = run_auth(
            &mut pam,
            &[],
            vec![Step::Read, Step::Send(agent_error(code, "no"))],
        );
        assert_eq!(got, expected, "{code}");
    }
}

#[test]
fn unknown_user_fails_closed() {
    let mut pam = FakePam::new().user(Ok(Some(b"ghost")));
    let (code, seen) = run_auth(
        &mut pam,
        &[],
        vec![
            Step::Read,
            Step::Send(agent_error(ErrorCode::UnknownUser, "no such user")),
        ],
    );
    assert_eq!(code, PAM_USER_UNKNOWN);
    assert!(matches!(&seen[0], Request::Authenticate { user, .. } if user.as_str() == "ghost"));
    // The user is told only that it failed, not that the user is unknown.
    assert_eq!(
        pam.messages(Style::ErrorMsg),
        vec!["Authentication failed."]
    );
}

#[test]
fn server_unreachable_fails_closed() {
    let mut pam = FakePam::new();
    let (code, _) = run_auth(
        &mut pam,
        &[],
        vec![
            Step::Read,
            Step::Send(agent_error(
                ErrorCode::ServerUnreachable,
                "offline login not allowed",
            )),
        ],
    );
    assert_eq!(code, PAM_AUTHINFO_UNAVAIL);
}

#[test]
fn endless_messages_fail_closed() {
    let mut pam = FakePam::new();
    let mut script = vec![Step::Read];
    for i in 0..=MAX_MESSAGES {
        script.push(Step::Send(info(&format!("still waiting {i}"), None)));
    }
    script.push(Step::Send(allow()));
    let (code, seen) = run_auth(&mut pam, &[], script);
    assert_eq!(code, PAM_AUTH_ERR);
    assert_eq!(pam.messages(Style::TextInfo).len(), MAX_MESSAGES);
    assert!(seen.iter().any(is_cancel));
}

#[test]
fn deny_shows_the_reason_and_fails() {
    let mut pam = FakePam::new().answering(&["000000"]);
    let (code, seen) = run_auth(&mut pam, &[], pin_login(PIN));
    assert_eq!(code, PAM_AUTH_ERR);
    assert_eq!(
        pam.messages(Style::ErrorMsg),
        vec!["Access denied: wrong card PIN"]
    );
    assert!(!seen.iter().any(is_cancel));
}

#[test]
fn locked_user_is_denied_with_the_reason() {
    let mut pam = FakePam::new().pam_env("LANG", "ja_JP.UTF-8");
    let (code, _) = run_auth(
        &mut pam,
        &[],
        vec![
            Step::Read,
            Step::Send(result(
                Outcome::Deny,
                USER,
                Purpose::Login,
                Some("locked after 5 failures / 5回の失敗でロックされています"),
            )),
        ],
    );
    assert_eq!(code, PAM_AUTH_ERR);
    assert_eq!(
        pam.messages(Style::ErrorMsg),
        vec!["認証が拒否されました: locked after 5 failures / 5回の失敗でロックされています"]
    );
}

// --------------------------------------------------------- conversation

#[test]
fn conversation_failure_fails_closed() {
    let mut pam = FakePam::new().answer(Err(PAM_CONV_ERR));
    let (code, seen) = run_auth(&mut pam, &[], vec![Step::Read, Step::Send(pin_prompt(1))]);
    assert_eq!(code, PAM_CONV_ERR);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(is_cancel(&seen[1]), "the agent is told to stop: {seen:?}");
}

#[test]
fn conversation_failure_with_another_code_fails_closed() {
    for rc in [PAM_BUF_ERR, PAM_SYSTEM_ERR, PAM_SUCCESS, PAM_IGNORE, 31] {
        let mut pam = FakePam::new().answer(Err(rc));
        let (code, _) = run_auth(&mut pam, &[], vec![Step::Read, Step::Send(pin_prompt(1))]);
        assert_eq!(code, PAM_CONV_ERR, "conversation code {rc}");
    }
}

#[test]
fn null_answer_array_fails_closed() {
    let mut pam = FakePam::new().answer(Ok(Answer::NoResponse));
    let (code, seen) = run_auth(&mut pam, &[], vec![Step::Read, Step::Send(pin_prompt(1))]);
    assert_eq!(code, PAM_CONV_ERR);
    assert!(!seen.iter().any(|r| matches!(r, Request::Answer { .. })));
}

#[test]
fn null_answer_string_fails_closed() {
    // pam-u2f CVE-2021-31924: a NULL PIN from the application (Escape in a
    // screen locker) skipped the PIN check. Here it is never an empty PIN,
    // for a secret prompt or for an action prompt.
    for prompt in [pin_prompt(1), insert_card_prompt(1)] {
        let mut pam = FakePam::new().answer(Ok(Answer::NullString));
        let (code, seen) = run_auth(&mut pam, &[], vec![Step::Read, Step::Send(prompt)]);
        assert_eq!(code, PAM_CONV_ERR);
        assert!(
            !seen.iter().any(|r| matches!(r, Request::Answer { .. })),
            "{seen:?}"
        );
        assert!(seen.iter().any(is_cancel));
    }
}

#[test]
fn empty_pin_answer_fails_closed() {
    // The CVE-2021-31924 lesson again: an empty answer to a PIN, password
    // or code prompt is refused here, not sent on as "no PIN".
    for kind in [
        PromptKind::Pin,
        PromptKind::CardPin,
        PromptKind::Password,
        PromptKind::Totp,
    ] {
        let mut pam = FakePam::new().answering(&[""]);
        let prompt = Reply::Prompt {
            prompt_id: 1,
            style: PromptStyle::Secret,
            kind,
            text: text("Secret: "),
            text_ja: None,
        };
        let (code, seen) = run_auth(
            &mut pam,
            &[],
            vec![
                Step::Read,
                Step::Send(prompt),
                Step::Read,
                Step::Send(allow()),
            ],
        );
        assert_eq!(code, PAM_AUTH_ERR, "{kind:?}");
        assert!(!seen.iter().any(|r| matches!(r, Request::Answer { .. })));
        assert!(seen.iter().any(is_cancel));
    }
}

#[test]
fn non_utf8_answer_fails_closed() {
    let mut pam = FakePam::new().answer(Ok(Answer::Text(Zeroizing::new(b"49\xff17".to_vec()))));
    let (code, seen) = run_auth(&mut pam, &[], vec![Step::Read, Step::Send(pin_prompt(1))]);
    assert_eq!(code, PAM_CONV_ERR);
    assert!(!seen.iter().any(|r| matches!(r, Request::Answer { .. })));
}

#[test]
fn oversized_answer_fails_closed() {
    let long = "9".repeat(1025);
    let mut pam = FakePam::new().answering(&[long.as_str()]);
    let (code, seen) = run_auth(&mut pam, &[], vec![Step::Read, Step::Send(pin_prompt(1))]);
    assert_eq!(code, PAM_CONV_ERR);
    assert!(!seen.iter().any(|r| matches!(r, Request::Answer { .. })));
}

#[test]
fn info_conversation_failure_fails_closed() {
    let mut pam = FakePam::new();
    pam.message_failure = Some(PAM_CONV_ERR);
    let (code, seen) = run_auth(
        &mut pam,
        &[],
        vec![
            Step::Read,
            Step::Send(info("Touch your key", None)),
            Step::Send(allow()),
        ],
    );
    assert_eq!(code, PAM_CONV_ERR);
    assert!(seen.iter().any(is_cancel));
}

// ------------------------------------------------------ PAM items, user

fn refused_before_the_agent(pam: &mut FakePam, op: Op) -> PamCode {
    let no_agent = NoAgent::new();
    let code = run(op, pam, 0, &[] as &[&str], &no_agent);
    assert_eq!(no_agent.calls(), 0, "the agent was asked");
    code
}

#[test]
fn null_user_fails_closed() {
    let mut pam = FakePam::new().user(Ok(None));
    assert_eq!(
        refused_before_the_agent(&mut pam, Op::Authenticate),
        PAM_AUTH_ERR
    );
    assert!(pam.all_logs().contains("the user name is NULL"));
}

#[test]
fn empty_user_fails_closed() {
    let mut pam = FakePam::new().user(Ok(Some(b"")));
    assert_eq!(
        refused_before_the_agent(&mut pam, Op::Authenticate),
        PAM_AUTH_ERR
    );
}

#[test]
fn user_with_control_characters_fails_closed() {
    for name in [
        &b"nurse\ntanaka"[..],
        b"\x1b[2Jroot",
        b"nurse\x7f",
        b"nurse\t",
        b"nurse\xc2\x85",
    ] {
        let mut pam = FakePam::new().user(Ok(Some(name)));
        assert_eq!(
            refused_before_the_agent(&mut pam, Op::Authenticate),
            PAM_AUTH_ERR,
            "{name:?}"
        );
        assert!(!pam.all_logs().contains('\u{1b}'));
    }
}

#[test]
fn user_longer_than_the_limit_fails_closed() {
    let long = "u".repeat(257);
    let mut pam = FakePam::new().user(Ok(Some(long.as_bytes())));
    assert_eq!(
        refused_before_the_agent(&mut pam, Op::Authenticate),
        PAM_AUTH_ERR
    );
    // 256 is still a user name.
    let max = "u".repeat(256);
    let mut pam = FakePam::new().user(Ok(Some(max.as_bytes())));
    let no_agent = NoAgent::new();
    run(Op::Authenticate, &mut pam, 0, &[] as &[&str], &no_agent);
    assert_eq!(no_agent.calls(), 1);
}

#[test]
fn non_utf8_user_fails_closed() {
    let mut pam = FakePam::new().user(Ok(Some(b"nurs\xe9")));
    assert_eq!(
        refused_before_the_agent(&mut pam, Op::Authenticate),
        PAM_AUTH_ERR
    );
}

#[test]
fn get_user_error_fails_closed() {
    for (rc, expected) in [
        (PAM_CONV_ERR, PAM_CONV_ERR),
        (PAM_SYSTEM_ERR, PAM_SYSTEM_ERR),
        (31, PAM_SYSTEM_ERR),         // PAM_INCOMPLETE
        (PAM_IGNORE, PAM_SYSTEM_ERR), // even a nonsense code never lets through
    ] {
        let mut pam = FakePam::new().user(Err(rc));
        assert_eq!(
            refused_before_the_agent(&mut pam, Op::Authenticate),
            expected
        );
    }
}

#[test]
fn odd_users_fail_closed_in_every_operation() {
    for op in [
        Op::Authenticate,
        Op::Account,
        Op::OpenSession,
        Op::CloseSession,
    ] {
        for user in [None, Some(&b""[..]), Some(b"a\nb")] {
            let mut pam = FakePam::new().user(Ok(user));
            assert_fails_closed(refused_before_the_agent(&mut pam, op));
        }
    }
}

#[test]
fn null_service_fails_closed() {
    for value in [Ok(None), Ok(Some(&b""[..])), Err(PAM_SYSTEM_ERR)] {
        let mut pam = FakePam::new().item(Item::Service, value);
        assert_fails_closed(refused_before_the_agent(&mut pam, Op::Authenticate));
    }
}

#[test]
fn odd_tty_or_rhost_fails_closed() {
    let long = vec![b'h'; 300];
    for item in [Item::Tty, Item::Rhost] {
        for value in [&b"pts/1\x1b]0;x\x07"[..], long.as_slice(), b"\xff"] {
            let mut pam = FakePam::new().item(item, Ok(Some(value)));
            assert_eq!(
                refused_before_the_agent(&mut pam, Op::Authenticate),
                PAM_AUTH_ERR,
                "{item:?}"
            );
        }
        let mut pam = FakePam::new().item(item, Err(PAM_SYSTEM_ERR));
        assert_fails_closed(refused_before_the_agent(&mut pam, Op::Authenticate));
    }
}

#[test]
fn absent_or_empty_tty_and_rhost_are_sent_as_absent() {
    let mut pam = FakePam::new()
        .item(Item::Tty, Ok(Some(b"")))
        .item(Item::Rhost, Ok(None))
        .answering(&[PIN]);
    let (code, seen) = run_auth(&mut pam, &[], pin_login(PIN));
    assert_eq!(code, PAM_SUCCESS);
    assert!(matches!(
        &seen[0],
        Request::Authenticate {
            tty: None,
            rhost: None,
            ..
        }
    ));
    let mut pam = FakePam::new()
        .item(Item::Rhost, Ok(Some(b"ward3-ws12.example.jp")))
        .answering(&[PIN]);
    let (_, seen) = run_auth(&mut pam, &[], pin_login(PIN));
    assert!(matches!(
        &seen[0],
        Request::Authenticate { rhost: Some(h), .. } if h.as_str() == "ward3-ws12.example.jp"
    ));
}

// ---------------------------------------------------------------- options

#[test]
fn unknown_option_fails_closed() {
    for op in Op::ALL {
        let mut pam = FakePam::new();
        let no_agent = NoAgent::new();
        let code = run(op, &mut pam, PAM_ESTABLISH_CRED, &["nouserok"], &no_agent);
        assert_eq!(code, PAM_SERVICE_ERR, "{op:?}");
        assert_eq!(no_agent.calls(), 0);
        assert!(
            pam.logs
                .borrow()
                .iter()
                .any(|(l, m)| *l == Level::Err && m.contains("unknown argument \"nouserok\"")),
            "{}",
            pam.all_logs()
        );
    }
}

#[test]
fn malformed_options_fail_closed() {
    for arg in [
        "timeout=0",
        "timeout=601",
        "timeout=abc",
        "socket=relative.sock",
        "purpose=sign",
        "purpose=",
    ] {
        for op in Op::ALL {
            let no_agent = NoAgent::new();
            let code = run(
                op,
                &mut FakePam::new(),
                PAM_ESTABLISH_CRED,
                &[arg],
                &no_agent,
            );
            assert_eq!(code, PAM_SERVICE_ERR, "{arg} {op:?}");
            assert_eq!(no_agent.calls(), 0);
        }
    }
    let no_agent = NoAgent::new();
    let code = run(
        Op::Authenticate,
        &mut FakePam::new(),
        0,
        &[b"socket=/run/\xff".as_slice()],
        &no_agent,
    );
    assert_eq!(code, PAM_SERVICE_ERR);
}

#[test]
fn bad_options_tell_the_user_the_service_is_unavailable() {
    let mut pam = FakePam::new();
    run(
        Op::Authenticate,
        &mut pam,
        0,
        &["debug", "debug"],
        &NoAgent::new(),
    );
    assert_eq!(pam.messages(Style::ErrorMsg).len(), 1);
}

// ---------------------------------------------------------------- panics

#[test]
fn panic_in_module_fails_closed() {
    let mut pam = FakePam::new();
    pam.panic_in_converse = true;
    let agent = agent(vec![Step::Read, Step::Send(pin_prompt(1))]);
    let mut noted = false;
    let code = guarded(
        || run(Op::Authenticate, &mut pam, 0, &[] as &[&str], &agent),
        || noted = true,
    );
    assert_eq!(code, PAM_SYSTEM_ERR);
    assert!(noted, "the panic was not reported");
    agent.requests();
}

#[test]
fn panic_while_reporting_a_panic_fails_closed() {
    let code = guarded(|| panic!("first"), || panic!("second"));
    assert_eq!(code, PAM_SYSTEM_ERR);
}

#[test]
fn guarded_passes_the_code_through() {
    assert_eq!(guarded(|| PAM_SUCCESS, || {}), PAM_SUCCESS);
    assert_eq!(guarded(|| PAM_AUTH_ERR, || {}), PAM_AUTH_ERR);
}

// --------------------------------------------------------------- account

#[test]
fn account_allowed_succeeds() {
    let mut pam = FakePam::new();
    let (code, seen) = run_op(
        Op::Account,
        &mut pam,
        &[],
        vec![
            Step::Read,
            Step::Send(Reply::AccountResult {
                outcome: Outcome::Allow,
                reason: None,
            }),
        ],
    );
    assert_eq!(code, PAM_SUCCESS);
    assert_eq!(
        seen,
        vec![Request::Account {
            user: user(USER),
            service: Label::new("gdm-password").unwrap()
        }]
    );
}

#[test]
fn account_denied_fails_closed() {
    let mut pam = FakePam::new();
    let (code, _) = run_op(
        Op::Account,
        &mut pam,
        &[],
        vec![
            Step::Read,
            Step::Send(Reply::AccountResult {
                outcome: Outcome::Deny,
                reason: Some(text("the account is suspended")),
            }),
        ],
    );
    assert_eq!(code, PAM_PERM_DENIED);
    assert_eq!(
        pam.messages(Style::ErrorMsg),
        vec!["This account may not use this workstation now: the account is suspended"]
    );
}

#[test]
fn account_agent_down_fails_closed() {
    let dir = TempDir::new("acct");
    let arg = format!("socket={}", dir.0.join("agent.sock").display());
    let code = run(
        Op::Account,
        &mut FakePam::new(),
        0,
        &[arg.as_str()],
        &SocketConnect,
    );
    assert_eq!(code, PAM_AUTHINFO_UNAVAIL);
}

#[test]
fn account_unexpected_reply_fails_closed() {
    for reply in [allow(), status_result(), Reply::SessionClosed {}] {
        let (code, _) = run_op(
            Op::Account,
            &mut FakePam::new(),
            &[],
            vec![Step::Read, Step::Send(reply)],
        );
        assert_eq!(code, PAM_PERM_DENIED);
    }
}

#[test]
fn account_agent_error_fails_closed() {
    for (err, expected) in [
        (ErrorCode::UnknownUser, PAM_USER_UNKNOWN),
        (ErrorCode::ServerUnreachable, PAM_AUTHINFO_UNAVAIL),
        (ErrorCode::Internal, PAM_PERM_DENIED),
    ] {
        let (code, _) = run_op(
            Op::Account,
            &mut FakePam::new(),
            &[],
            vec![Step::Read, Step::Send(agent_error(err, "x"))],
        );
        assert_eq!(code, expected, "{err}");
    }
}

// -------------------------------------------------------------- sessions

fn opened(id: &str) -> Reply {
    Reply::SessionOpened {
        session_id: Label::new(id).unwrap(),
        card_bound: true,
    }
}

#[test]
fn open_session_sends_the_logind_session() {
    let mut pam = FakePam::new().pam_env("XDG_SESSION_ID", "c7");
    let (code, seen) = run_op(
        Op::OpenSession,
        &mut pam,
        &[],
        vec![Step::Read, Step::Send(opened("c7"))],
    );
    assert_eq!(code, PAM_SUCCESS, "{}", pam.all_logs());
    assert_eq!(
        seen,
        vec![Request::OpenSession {
            user: user(USER),
            service: Label::new("gdm-password").unwrap(),
            session_id: Some(Label::new("c7").unwrap()),
            tty: Some(Label::new(":0").unwrap()),
        }]
    );
    assert!(pam
        .all_logs()
        .contains("session c7 of nurse.tanaka opened (card bound"));
}

#[test]
fn open_session_without_session_id_lets_the_agent_find_it() {
    let mut pam = FakePam::new();
    let (code, seen) = run_op(
        Op::OpenSession,
        &mut pam,
        &[],
        vec![Step::Read, Step::Send(opened("c3"))],
    );
    assert_eq!(code, PAM_SUCCESS);
    assert!(matches!(
        &seen[0],
        Request::OpenSession {
            session_id: None,
            ..
        }
    ));
}

#[test]
fn session_id_from_the_process_environment_is_ignored() {
    // The caller of `su` controls the process environment.
    let mut pam = FakePam::new().process_env("XDG_SESSION_ID", "c1");
    let (_, seen) = run_op(
        Op::OpenSession,
        &mut pam,
        &[],
        vec![Step::Read, Step::Send(opened("c9"))],
    );
    assert!(matches!(
        &seen[0],
        Request::OpenSession {
            session_id: None,
            ..
        }
    ));
}

#[test]
fn session_opened_for_another_session_fails_closed() {
    let mut pam = FakePam::new().pam_env("XDG_SESSION_ID", "c7");
    let (code, _) = run_op(
        Op::OpenSession,
        &mut pam,
        &[],
        vec![Step::Read, Step::Send(opened("c8"))],
    );
    assert_eq!(code, PAM_SESSION_ERR);
}

#[test]
fn odd_session_id_fails_closed() {
    for value in ["c7\n", &"c".repeat(300)] {
        let mut pam = FakePam::new().pam_env("XDG_SESSION_ID", value);
        assert_eq!(
            refused_before_the_agent(&mut pam, Op::OpenSession),
            PAM_SESSION_ERR
        );
    }
}

#[test]
fn open_session_agent_down_fails_closed() {
    let dir = TempDir::new("sess");
    let arg = format!("socket={}", dir.0.join("agent.sock").display());
    for op in [Op::OpenSession, Op::CloseSession] {
        let code = run(op, &mut FakePam::new(), 0, &[arg.as_str()], &SocketConnect);
        assert_eq!(code, PAM_SESSION_ERR, "{op:?}");
    }
}

#[test]
fn open_session_agent_error_fails_closed() {
    let (code, _) = run_op(
        Op::OpenSession,
        &mut FakePam::new(),
        &[],
        vec![
            Step::Read,
            Step::Send(agent_error(
                ErrorCode::Internal,
                "sessions are not available yet",
            )),
        ],
    );
    assert_eq!(code, PAM_SESSION_ERR);
}

#[test]
fn session_unexpected_reply_fails_closed() {
    for (op, reply) in [
        (Op::OpenSession, Reply::SessionClosed {}),
        (Op::OpenSession, allow()),
        (Op::CloseSession, opened("c7")),
        (Op::CloseSession, status_result()),
    ] {
        let (code, _) = run_op(
            op,
            &mut FakePam::new(),
            &[],
            vec![Step::Read, Step::Send(reply)],
        );
        assert_eq!(code, PAM_SESSION_ERR, "{op:?}");
    }
}

#[test]
fn close_session_is_sent() {
    let mut pam = FakePam::new().pam_env("XDG_SESSION_ID", "c7");
    let (code, seen) = run_op(
        Op::CloseSession,
        &mut pam,
        &[],
        vec![Step::Read, Step::Send(Reply::SessionClosed {})],
    );
    assert_eq!(code, PAM_SUCCESS);
    assert_eq!(
        seen,
        vec![Request::CloseSession {
            user: user(USER),
            service: Label::new("gdm-password").unwrap(),
            session_id: Some(Label::new("c7").unwrap()),
        }]
    );
}

#[test]
fn session_agent_hang_fails_closed() {
    let (code, _) = run_op(
        Op::CloseSession,
        &mut FakePam::new(),
        &["timeout=1"],
        vec![Step::Read, Step::Sleep(Duration::from_millis(1500))],
    );
    assert_eq!(code, PAM_SESSION_ERR);
}

// --------------------------------------------------------------- setcred

#[test]
fn setcred_succeeds_for_each_credential_action() {
    for flags in [
        PAM_ESTABLISH_CRED,
        PAM_DELETE_CRED,
        PAM_REINITIALIZE_CRED,
        PAM_REFRESH_CRED,
        PAM_ESTABLISH_CRED | PAM_SILENT,
    ] {
        let no_agent = NoAgent::new();
        let code = run(
            Op::SetCred,
            &mut FakePam::new(),
            flags,
            &[] as &[&str],
            &no_agent,
        );
        assert_eq!(code, PAM_SUCCESS, "{flags:#x}");
        assert_eq!(no_agent.calls(), 0);
    }
}

#[test]
fn setcred_odd_flags_fail_closed() {
    for flags in [
        0,
        PAM_SILENT,
        PAM_ESTABLISH_CRED | PAM_DELETE_CRED,
        0x20,
        -1,
    ] {
        let code = run(
            Op::SetCred,
            &mut FakePam::new(),
            flags,
            &[] as &[&str],
            &NoAgent::new(),
        );
        assert_fails_closed(code);
    }
}

// ---------------------------------------------------- secrets, codes

#[test]
fn pin_never_logged_or_shown() {
    for (pin, expected) in [(PIN, PAM_SUCCESS), ("271828", PAM_AUTH_ERR)] {
        let mut pam = FakePam::new().answering(&[pin]);
        let (code, _) = run_auth(&mut pam, &["debug"], pin_login(PIN));
        assert_eq!(code, expected);
        let logs = pam.all_logs();
        assert!(logs.contains("Debug"), "debug lines expected: {logs}");
        assert!(!logs.contains(pin), "{logs}");
        assert!(!logs.contains(PIN), "{logs}");
        for (_, shown) in &pam.shown {
            assert!(!shown.contains(pin), "{shown}");
        }
    }
}

#[test]
fn debug_option_is_needed_for_debug_lines() {
    let mut pam = FakePam::new().answering(&[PIN]);
    run_auth(&mut pam, &[], pin_login(PIN));
    assert!(pam.logs.borrow().iter().all(|(l, _)| *l != Level::Debug));
}

#[test]
fn agent_text_with_control_characters_never_reaches_the_log() {
    let mut pam = FakePam::new();
    let frame = b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"\\u001b[2Jowned\"}}\n";
    let (code, _) = run_auth(&mut pam, &[], vec![Step::Read, Step::Raw(frame.to_vec())]);
    assert_eq!(code, PAM_AUTH_ERR);
    assert!(!pam.all_logs().contains('\u{1b}'), "{}", pam.all_logs());
}

/// pam-u2f CVE-2025-23013: error paths returned `PAM_IGNORE`, so in a
/// stack like `auth required pam_unix.so` + `auth required pam_u2f.so` an
/// error the user could provoke skipped the second factor. Every failure
/// of this module, in every operation, is a real failure code.
#[test]
fn no_failure_returns_success_or_ignore() {
    let io = || std::io::Error::from(std::io::ErrorKind::Other);
    let mut failures = vec![
        Failure::Options(OptionError::NotUtf8),
        Failure::Options(OptionError::Unknown("nouserok".into())),
        Failure::Timeout,
        Failure::Connect(ClientError::Io(io())),
        Failure::Connect(ClientError::Closed),
        Failure::Agent(ClientError::Closed),
        Failure::Agent(ClientError::Protocol("x".into())),
        Failure::Agent(ClientError::Io(io())),
        Failure::Unexpected {
            expected: "a",
            got: "b",
        },
        Failure::Mismatch("x".into()),
        Failure::TooManyMessages,
        Failure::Denied { reason: None },
        Failure::AccountDenied { reason: None },
        Failure::BadFlags(0),
        Failure::SessionId(BadString::ControlChar),
        Failure::EmptySecret(PromptKind::Pin),
    ];
    for bad in [
        BadString::Null,
        BadString::NotUtf8,
        BadString::Empty,
        BadString::TooLong,
        BadString::ControlChar,
    ] {
        failures.push(Failure::User(bad));
        failures.push(Failure::Item(Item::Service, bad));
        failures.push(Failure::Item(Item::Rhost, bad));
    }
    for problem in [
        ConvProblem::Failed(PAM_SUCCESS),
        ConvProblem::Failed(PAM_IGNORE),
        ConvProblem::NoResponse,
        ConvProblem::NullString,
        ConvProblem::NotUtf8,
        ConvProblem::TooLong,
        ConvProblem::BadText,
    ] {
        failures.push(Failure::Conversation(problem));
    }
    for code in [PAM_SUCCESS, PAM_IGNORE, PAM_CONV_ERR, PAM_BUF_ERR, 31, -1] {
        failures.push(Failure::PamCall { what: "x", code });
    }
    for code in [
        ErrorCode::FrameTooLarge,
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnexpectedMessage,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownUser,
        ErrorCode::Timeout,
        ErrorCode::ServerUnreachable,
        ErrorCode::Internal,
    ] {
        failures.push(Failure::AgentError {
            code,
            message: "m".into(),
        });
    }
    for failure in &failures {
        for op in Op::ALL {
            let code = failure.code(op);
            assert!(!lets_through(code), "{failure:?} in {op:?} gave {code}");
        }
    }
}

#[test]
fn user_controlled_environment_cannot_change_the_outcome() {
    // Odd locale values (the caller of su/sudo sets them) change at most
    // the language; the agent's answer decides.
    for value in ["ja\u{1b}[2J", "", "C", &"j".repeat(10_000), "ja_JP.\u{ff}"] {
        let mut pam = FakePam::new()
            .process_env("LANG", value)
            .process_env("LC_ALL", value)
            .answering(&["000000"]);
        let (code, _) = run_auth(&mut pam, &[], pin_login(PIN));
        assert_eq!(code, PAM_AUTH_ERR, "{value:?}");
    }
}
