//! The module's logic, in plain Rust behind [`PamOps`] and [`Connect`].
//!
//! [`run`] is what every PAM entry point calls: it parses the options, does
//! the operation, logs the outcome and returns the PAM code. Only one path
//! returns `PAM_SUCCESS`: the agent's explicit yes (an `auth_result` with
//! `outcome: allow` for the same user and purpose, an `account_result`
//! allowing, a `session_opened` for the same session, a `session_closed`),
//! or `pam_setcred` with a valid flag. Everything else is a [`Failure`],
//! and [`Failure::code`] never maps to `PAM_SUCCESS` or `PAM_IGNORE`.
#![forbid(unsafe_code)]

use std::any::Any;
use std::ffi::c_int;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use clinauth_proto::secret::SecretError;
use clinauth_proto::text::TextError;
use clinauth_proto::{
    AgentClient, ClientError, ErrorCode, Label, Outcome, PromptKind, PromptStyle, Reply, Request,
    SecretString, UserName,
};

use crate::codes::*;
use crate::messages::{fit, Lang, Message};
use crate::ops::{Answer, Connect, Item, Level, PamOps, Style};
use crate::options::{OptionError, Options};

/// The most `prompt` and `info` replies one authentication may have: an
/// agent that keeps talking is refused instead of holding the login forever.
pub const MAX_MESSAGES: usize = 64;

/// Longest syslog line the module writes, in bytes.
const MAX_LOG_LEN: usize = 1024;

/// The PAM operation being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `pam_sm_authenticate`.
    Authenticate,
    /// `pam_sm_acct_mgmt`.
    Account,
    /// `pam_sm_open_session`.
    OpenSession,
    /// `pam_sm_close_session`.
    CloseSession,
    /// `pam_sm_setcred`.
    SetCred,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 5] = [
        Op::Authenticate,
        Op::Account,
        Op::OpenSession,
        Op::CloseSession,
        Op::SetCred,
    ];

    /// The name used in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Op::Authenticate => "authenticate",
            Op::Account => "account",
            Op::OpenSession => "open_session",
            Op::CloseSession => "close_session",
            Op::SetCred => "setcred",
        }
    }
}

/// What is wrong with a string from libpam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadString {
    /// A NULL pointer where a value is required.
    Null,
    /// Not UTF-8.
    NotUtf8,
    /// Empty where a value is required.
    Empty,
    /// Longer than the protocol allows (256 bytes).
    TooLong,
    /// Contains a control character.
    ControlChar,
}

impl fmt::Display for BadString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadString::Null => "is NULL",
            BadString::NotUtf8 => "is not UTF-8",
            BadString::Empty => "is empty",
            BadString::TooLong => "is longer than 256 bytes",
            BadString::ControlChar => "contains a control character",
        })
    }
}

impl From<TextError> for BadString {
    fn from(err: TextError) -> Self {
        match err {
            TextError::Empty { .. } => BadString::Empty,
            TextError::TooLong { .. } => BadString::TooLong,
            TextError::ControlChar { .. } => BadString::ControlChar,
        }
    }
}

/// What went wrong in the PAM conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvProblem {
    /// The conversation function returned this error.
    Failed(PamCode),
    /// It returned success but no response array.
    NoResponse,
    /// The response's string was NULL (the user pressed Escape, the
    /// application had nothing): never taken as an empty answer.
    NullString,
    /// The answer is not UTF-8.
    NotUtf8,
    /// The answer is longer than the protocol allows (1 KiB).
    TooLong,
    /// A text could not be passed to the conversation function.
    BadText,
}

impl fmt::Display for ConvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvProblem::Failed(code) => {
                write!(f, "the conversation function failed ({})", code_name(*code))
            }
            ConvProblem::NoResponse => f.write_str("the conversation function gave no response"),
            ConvProblem::NullString => f.write_str("the conversation function gave a NULL answer"),
            ConvProblem::NotUtf8 => f.write_str("the answer is not UTF-8"),
            ConvProblem::TooLong => f.write_str("the answer is longer than 1024 bytes"),
            ConvProblem::BadText => f.write_str("a message could not be passed to the application"),
        }
    }
}

/// Why an operation did not succeed. Every variant maps to a failure code.
#[derive(Debug)]
pub enum Failure {
    /// The module's arguments are wrong.
    Options(OptionError),
    /// A libpam call failed.
    PamCall {
        /// Which call.
        what: &'static str,
        /// Its return code.
        code: PamCode,
    },
    /// `PAM_USER` is unusable.
    User(BadString),
    /// A PAM item is unusable.
    Item(Item, BadString),
    /// `XDG_SESSION_ID` in the PAM environment is unusable.
    SessionId(BadString),
    /// The conversation with the user failed.
    Conversation(ConvProblem),
    /// An empty answer to a prompt for a PIN, password or code.
    EmptySecret(PromptKind),
    /// The agent could not be reached (socket absent, refused, unsafe).
    Connect(ClientError),
    /// The agent did not answer within the timeout.
    Timeout,
    /// The agent broke the protocol or the connection (malformed,
    /// oversized, wrong id, unexpected version, closed).
    Agent(ClientError),
    /// The agent answered with an `error` reply.
    AgentError {
        /// Its code.
        code: ErrorCode,
        /// Its message (never a secret).
        message: String,
    },
    /// A valid reply that does not belong here (a `status_result` in the
    /// middle of an authentication).
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// A reply about another user, purpose or session than asked.
    Mismatch(String),
    /// The agent sent more than [`MAX_MESSAGES`] prompts and infos.
    TooManyMessages,
    /// The agent denied the authentication.
    Denied {
        /// Its reason.
        reason: Option<String>,
    },
    /// The agent refused account management.
    AccountDenied {
        /// Its reason.
        reason: Option<String>,
    },
    /// `pam_setcred` with flags that name no credential action.
    BadFlags(c_int),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Options(err) => write!(
                f,
                "invalid module arguments in the PAM configuration: {err}"
            ),
            Failure::PamCall { what, code } => write!(f, "{what} failed ({})", code_name(*code)),
            Failure::User(bad) => write!(f, "the user name {bad}"),
            Failure::Item(item, bad) => write!(f, "{} {bad}", item.name()),
            Failure::SessionId(bad) => write!(f, "XDG_SESSION_ID in the PAM environment {bad}"),
            Failure::Conversation(problem) => problem.fmt(f),
            Failure::EmptySecret(kind) => {
                write!(f, "empty answer to a {} prompt", kind_name(*kind))
            }
            Failure::Connect(err) => write!(f, "cannot reach the agent: {err}"),
            Failure::Timeout => f.write_str("the agent did not answer in time"),
            Failure::Agent(err) => write!(f, "bad reply from the agent: {err}"),
            Failure::AgentError { code, message } => {
                write!(f, "the agent answered error {code}: {message}")
            }
            Failure::Unexpected { expected, got } => {
                write!(f, "protocol violation: expected {expected}, got {got}")
            }
            Failure::Mismatch(what) => write!(f, "protocol violation: {what}"),
            Failure::TooManyMessages => {
                write!(
                    f,
                    "the agent sent more than {MAX_MESSAGES} prompts and messages"
                )
            }
            Failure::Denied { reason } => {
                write!(
                    f,
                    "denied by the agent: {}",
                    reason.as_deref().unwrap_or("no reason given")
                )
            }
            Failure::AccountDenied { reason } => write!(
                f,
                "account refused by the agent: {}",
                reason.as_deref().unwrap_or("no reason given")
            ),
            Failure::BadFlags(flags) => write!(f, "no credential action in flags {flags:#x}"),
        }
    }
}

impl Failure {
    /// The PAM code for this failure in `op`: never `PAM_SUCCESS` nor
    /// `PAM_IGNORE`.
    pub fn code(&self, op: Op) -> PamCode {
        let code = match self {
            Failure::Options(_) => PAM_SERVICE_ERR,
            Failure::PamCall { code, .. } => match *code {
                PAM_CONV_ERR | PAM_BUF_ERR => *code,
                _ => PAM_SYSTEM_ERR,
            },
            Failure::Conversation(_) => PAM_CONV_ERR,
            Failure::Connect(_) | Failure::Timeout => PAM_AUTHINFO_UNAVAIL,
            Failure::AgentError { code, .. } => match code {
                ErrorCode::UnknownUser => PAM_USER_UNKNOWN,
                ErrorCode::ServerUnreachable => PAM_AUTHINFO_UNAVAIL,
                _ => PAM_AUTH_ERR,
            },
            Failure::User(_)
            | Failure::Item(..)
            | Failure::SessionId(_)
            | Failure::EmptySecret(_)
            | Failure::Agent(_)
            | Failure::Unexpected { .. }
            | Failure::Mismatch(_)
            | Failure::TooManyMessages
            | Failure::Denied { .. } => PAM_AUTH_ERR,
            Failure::AccountDenied { .. } => PAM_PERM_DENIED,
            Failure::BadFlags(_) => PAM_SYSTEM_ERR,
        };
        let code = match op {
            Op::Authenticate | Op::SetCred => code,
            Op::Account => match code {
                PAM_AUTH_ERR => PAM_PERM_DENIED,
                other => other,
            },
            Op::OpenSession | Op::CloseSession => match code {
                PAM_SERVICE_ERR | PAM_SYSTEM_ERR | PAM_BUF_ERR => code,
                _ => PAM_SESSION_ERR,
            },
        };
        never_lets_through(code)
    }

    /// How loud the log line is.
    fn level(&self) -> Level {
        match self {
            Failure::Options(_) | Failure::PamCall { .. } | Failure::Connect(_) => Level::Err,
            Failure::Agent(_)
            | Failure::Unexpected { .. }
            | Failure::Mismatch(_)
            | Failure::TooManyMessages
            | Failure::Timeout
            | Failure::AgentError { .. }
            | Failure::Item(..)
            | Failure::User(_)
            | Failure::SessionId(_)
            | Failure::BadFlags(_) => Level::Warning,
            Failure::Conversation(_)
            | Failure::EmptySecret(_)
            | Failure::Denied { .. }
            | Failure::AccountDenied { .. } => Level::Notice,
        }
    }

    /// What to tell the user, if anything (denials were already shown with
    /// their reason; after a conversation failure there is nobody to tell).
    fn user_message(&self) -> Option<Message> {
        match self {
            Failure::Options(_) | Failure::Connect(_) | Failure::Timeout => {
                Some(Message::Unavailable)
            }
            Failure::AgentError {
                code: ErrorCode::ServerUnreachable,
                ..
            } => Some(Message::Unavailable),
            Failure::Conversation(_) | Failure::Denied { .. } | Failure::AccountDenied { .. } => {
                None
            }
            _ => Some(Message::Failed),
        }
    }
}

/// A code safe to return on an error path: `PAM_SUCCESS` and `PAM_IGNORE`
/// become `PAM_SYSTEM_ERR`.
pub fn never_lets_through(code: PamCode) -> PamCode {
    if lets_through(code) {
        PAM_SYSTEM_ERR
    } else {
        code
    }
}

/// The name of a PAM code, for log lines.
pub fn code_name(code: PamCode) -> &'static str {
    match code {
        PAM_SUCCESS => "PAM_SUCCESS",
        PAM_SERVICE_ERR => "PAM_SERVICE_ERR",
        PAM_SYSTEM_ERR => "PAM_SYSTEM_ERR",
        PAM_BUF_ERR => "PAM_BUF_ERR",
        PAM_PERM_DENIED => "PAM_PERM_DENIED",
        PAM_AUTH_ERR => "PAM_AUTH_ERR",
        PAM_AUTHINFO_UNAVAIL => "PAM_AUTHINFO_UNAVAIL",
        PAM_USER_UNKNOWN => "PAM_USER_UNKNOWN",
        PAM_SESSION_ERR => "PAM_SESSION_ERR",
        PAM_CONV_ERR => "PAM_CONV_ERR",
        PAM_IGNORE => "PAM_IGNORE",
        _ => "another PAM error",
    }
}

fn kind_name(kind: PromptKind) -> &'static str {
    match kind {
        PromptKind::Pin => "pin",
        PromptKind::CardPin => "card_pin",
        PromptKind::Password => "password",
        PromptKind::Totp => "totp",
        PromptKind::InsertCard => "insert_card",
        PromptKind::TouchKey => "touch_key",
        PromptKind::PlaceFinger => "place_finger",
        PromptKind::Other => "other",
    }
}

/// Whether an empty answer to a prompt of this kind is refused (the
/// pam-u2f CVE-2021-31924 lesson: "no PIN" must never mean "PIN skipped").
fn needs_a_value(kind: PromptKind) -> bool {
    matches!(
        kind,
        PromptKind::Pin | PromptKind::CardPin | PromptKind::Password | PromptKind::Totp
    )
}

fn reply_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::Prompt { .. } => "prompt",
        Reply::Info { .. } => "info",
        Reply::AuthResult { .. } => "auth_result",
        Reply::StatusResult { .. } => "status_result",
        Reply::AccountResult { .. } => "account_result",
        Reply::SessionOpened { .. } => "session_opened",
        Reply::SessionClosed {} => "session_closed",
        Reply::Record { .. } => "record",
        Reply::Records { .. } => "records",
        Reply::RecordResult { .. } => "record_result",
        Reply::SignResult { .. } => "sign_result",
        Reply::Subscribed {} => "subscribed",
        Reply::Event { .. } => "event",
        Reply::Error { .. } => "error",
    }
}

/// Sorts a client error: a timeout, an `error` reply, or a broken agent.
fn from_client(err: ClientError) -> Failure {
    match err {
        ClientError::Timeout => Failure::Timeout,
        ClientError::AgentError { code, message } => Failure::AgentError { code, message },
        other => Failure::Agent(other),
    }
}

/// Runs `f` (an entry point's body) and turns a panic into
/// `PAM_SYSTEM_ERR`, after calling `on_panic` (to log it; a panic there is
/// caught too): a panic must neither unwind into libpam nor abort the
/// login process, and never lets anyone in.
pub fn guarded<F, G>(f: F, on_panic: G) -> PamCode
where
    F: FnOnce() -> PamCode,
    G: FnOnce(),
{
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(payload) => {
            drop_quietly(payload);
            if let Err(payload) = catch_unwind(AssertUnwindSafe(on_panic)) {
                drop_quietly(payload);
            }
            PAM_SYSTEM_ERR
        }
    }
}

/// Drops a panic payload, even one whose destructor panics.
fn drop_quietly(payload: Box<dyn Any + Send>) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
}

/// One operation's context.
struct Ctx<'a, P: PamOps + ?Sized> {
    ops: &'a mut P,
    opts: &'a Options,
    op: Op,
    silent: bool,
    lang: Lang,
    user: Option<UserName>,
}

impl<P: PamOps + ?Sized> Ctx<'_, P> {
    fn log(&self, level: Level, message: &str) {
        log_line(self.ops, level, self.op, message);
    }

    fn debug(&self, message: impl FnOnce() -> String) {
        if self.opts.debug {
            self.log(Level::Debug, &message());
        }
    }

    /// Shows a message to the user (unless `PAM_SILENT`), as an error or an
    /// information.
    fn show(&mut self, style: Style, text: &str) -> Result<(), Failure> {
        if self.silent {
            return Ok(());
        }
        match self.ops.converse(style, fit(text)) {
            // Any answer to a message is dropped, which wipes it.
            Ok(_) => Ok(()),
            Err(code) => Err(Failure::Conversation(ConvProblem::Failed(code))),
        }
    }

    /// Shows an error on the way out; a failure to show it changes nothing.
    fn tell(&mut self, text: &str) {
        let _ = self.show(Style::ErrorMsg, text);
    }

    fn user(&mut self) -> Result<UserName, Failure> {
        let raw = self
            .ops
            .user()
            .map_err(|code| Failure::PamCall {
                what: "pam_get_user",
                code,
            })?
            .ok_or(Failure::User(BadString::Null))?;
        let name = String::from_utf8(raw).map_err(|_| Failure::User(BadString::NotUtf8))?;
        let user = UserName::new(name).map_err(|e| Failure::User(e.into()))?;
        self.user = Some(user.clone());
        Ok(user)
    }

    /// A PAM item that must be set (the service).
    fn required_item(&self, item: Item) -> Result<Label, Failure> {
        self.optional_item(item)?
            .ok_or(Failure::Item(item, BadString::Null))
    }

    /// A PAM item that may be unset; an empty one counts as unset.
    fn optional_item(&self, item: Item) -> Result<Option<Label>, Failure> {
        let raw = self.ops.item(item).map_err(|code| Failure::PamCall {
            what: "pam_get_item",
            code,
        })?;
        let Some(raw) = raw else { return Ok(None) };
        if raw.is_empty() && item != Item::Service {
            return Ok(None);
        }
        label(raw).map(Some).map_err(|bad| Failure::Item(item, bad))
    }

    fn connect<C: Connect + ?Sized>(&self, connect: &C) -> Result<AgentClient, Failure> {
        self.debug(|| format!("connecting to the agent at {}", self.opts.socket.display()));
        connect
            .connect(&self.opts.socket, self.opts.timeout)
            .map_err(|err| match err {
                ClientError::Timeout => Failure::Timeout,
                other => Failure::Connect(other),
            })
    }
}

fn label(raw: Vec<u8>) -> Result<Label, BadString> {
    let s = String::from_utf8(raw).map_err(|_| BadString::NotUtf8)?;
    Label::new(s).map_err(BadString::from)
}

/// Writes a log line, prefixed with the operation, with control
/// characters replaced and cut to [`MAX_LOG_LEN`].
fn log_line<P: PamOps + ?Sized>(ops: &P, level: Level, op: Op, message: &str) {
    let mut line = String::with_capacity(message.len().min(MAX_LOG_LEN) + 16);
    line.push_str(op.name());
    line.push_str(": ");
    for c in message.chars() {
        let c = if c.is_control() { '\u{fffd}' } else { c };
        if line.len() + c.len_utf8() > MAX_LOG_LEN {
            break;
        }
        line.push(c);
    }
    ops.log(level, &line);
}

/// Runs `op` on `ops` with the module arguments `args`: what every entry
/// point does. Returns the PAM code.
pub fn run<P, C, A>(op: Op, ops: &mut P, flags: c_int, args: &[A], connect: &C) -> PamCode
where
    P: PamOps + ?Sized,
    C: Connect + ?Sized,
    A: AsRef<[u8]>,
{
    let opts = match Options::parse(args) {
        Ok(opts) => opts,
        Err(err) => {
            let failure = Failure::Options(err);
            let code = failure.code(op);
            log_line(
                ops,
                Level::Err,
                op,
                &format!("refused ({}): {failure}", code_name(code)),
            );
            if matches!(op, Op::Authenticate | Op::Account) && flags & PAM_SILENT == 0 {
                let lang = Lang::detect(ops);
                let _ = ops.converse(Style::ErrorMsg, Message::Unavailable.text(lang));
            }
            return code;
        }
    };
    let lang = Lang::detect(ops);
    let mut cx = Ctx {
        ops,
        opts: &opts,
        op,
        silent: flags & PAM_SILENT != 0,
        lang,
        user: None,
    };
    let result = match op {
        Op::Authenticate => authenticate(&mut cx, connect),
        Op::Account => account(&mut cx, connect),
        Op::OpenSession => open_session(&mut cx, connect),
        Op::CloseSession => close_session(&mut cx, connect),
        Op::SetCred => setcred(flags),
    };
    match result {
        Ok(()) => PAM_SUCCESS,
        Err(failure) => {
            let code = failure.code(op);
            let who = match &cx.user {
                Some(user) => format!(" for user {user}"),
                None => String::new(),
            };
            cx.log(
                failure.level(),
                &format!("refused ({}){who}: {failure}", code_name(code)),
            );
            if matches!(op, Op::Authenticate | Op::Account) {
                if let Some(message) = failure.user_message() {
                    let text = message.text(cx.lang);
                    cx.tell(text);
                }
            }
            code
        }
    }
}

fn authenticate<P, C>(cx: &mut Ctx<'_, P>, connect: &C) -> Result<(), Failure>
where
    P: PamOps + ?Sized,
    C: Connect + ?Sized,
{
    let user = cx.user()?;
    let service = cx.required_item(Item::Service)?;
    let tty = cx.optional_item(Item::Tty)?;
    let rhost = cx.optional_item(Item::Rhost)?;
    let purpose = cx.opts.purpose;
    let mut client = cx.connect(connect)?;
    cx.debug(|| {
        format!(
            "asking the agent to authenticate {user} for {purpose} (service {service}, tty {}, rhost {})",
            tty.as_ref().map_or("-", Label::as_str),
            rhost.as_ref().map_or("-", Label::as_str),
        )
    });
    let request = Request::Authenticate {
        user: user.clone(),
        purpose,
        service,
        tty,
        rhost,
    };
    client.send(&request).map_err(from_client)?;
    let result = conversation(cx, &mut client, &user);
    if let Err(failure) = &result {
        if conversation_still_open(failure) {
            // Tell the agent to stop waiting; its answer does not matter.
            let _ = client.send(&Request::Cancel {});
        }
    }
    result
}

/// Whether the agent may still be waiting for us after `failure` (the
/// failure was on our side, not an end the agent sent).
fn conversation_still_open(failure: &Failure) -> bool {
    matches!(
        failure,
        Failure::Conversation(_)
            | Failure::EmptySecret(_)
            | Failure::TooManyMessages
            | Failure::Unexpected { .. }
    )
}

/// Relays the agent's prompts and messages until its `auth_result`.
fn conversation<P: PamOps + ?Sized>(
    cx: &mut Ctx<'_, P>,
    client: &mut AgentClient,
    user: &UserName,
) -> Result<(), Failure> {
    let mut messages = 0usize;
    loop {
        let reply = client.recv().map_err(from_client)?;
        match reply {
            Reply::Prompt {
                prompt_id,
                style,
                kind,
                text,
                text_ja,
            } => {
                messages += 1;
                if messages > MAX_MESSAGES {
                    return Err(Failure::TooManyMessages);
                }
                let pam_style = match style {
                    PromptStyle::Secret => Style::EchoOff,
                    PromptStyle::Visible => Style::EchoOn,
                };
                cx.debug(|| format!("prompt {prompt_id} ({}, {pam_style:?})", kind_name(kind)));
                let shown = cx
                    .lang
                    .pick(text.as_str(), text_ja.as_ref().map(|t| t.as_str()));
                let value = ask(cx.ops, pam_style, fit(shown), kind)?;
                client
                    .send(&Request::Answer { prompt_id, value })
                    .map_err(from_client)?;
                cx.debug(|| format!("answered prompt {prompt_id}"));
            }
            Reply::Info { text, text_ja } => {
                messages += 1;
                if messages > MAX_MESSAGES {
                    return Err(Failure::TooManyMessages);
                }
                let shown = cx
                    .lang
                    .pick(text.as_str(), text_ja.as_ref().map(|t| t.as_str()));
                cx.show(Style::TextInfo, shown)?;
            }
            Reply::AuthResult {
                outcome,
                user: result_user,
                purpose,
                rule,
                factors,
                reason,
                ticket: _,
            } => {
                if result_user != *user {
                    return Err(Failure::Mismatch(format!(
                        "auth_result for user {result_user} while authenticating {user}"
                    )));
                }
                if purpose != cx.opts.purpose {
                    return Err(Failure::Mismatch(format!(
                        "auth_result for purpose {purpose} while authenticating for {}",
                        cx.opts.purpose
                    )));
                }
                return match outcome {
                    Outcome::Allow => {
                        let factors: Vec<&str> = factors.iter().map(Label::as_str).collect();
                        cx.log(
                            Level::Info,
                            &format!(
                                "allowed {user} for {purpose} by rule {} (factors: {})",
                                rule.as_ref().map_or("-", Label::as_str),
                                factors.join(", ")
                            ),
                        );
                        Ok(())
                    }
                    Outcome::Deny => {
                        let reason = reason.map(|r| r.into_string());
                        let text = Message::Denied.with_reason(cx.lang, reason.as_deref());
                        cx.tell(&text);
                        Err(Failure::Denied { reason })
                    }
                };
            }
            other => {
                return Err(Failure::Unexpected {
                    expected: "prompt, info or auth_result",
                    got: reply_name(&other),
                })
            }
        }
    }
}

/// Asks the user one prompt and checks the answer.
fn ask<P: PamOps + ?Sized>(
    ops: &mut P,
    style: Style,
    text: &str,
    kind: PromptKind,
) -> Result<SecretString, Failure> {
    let answer = ops
        .converse(style, text)
        .map_err(|code| Failure::Conversation(ConvProblem::Failed(code)))?;
    let bytes = match answer {
        Answer::NoResponse => return Err(Failure::Conversation(ConvProblem::NoResponse)),
        Answer::NullString => return Err(Failure::Conversation(ConvProblem::NullString)),
        Answer::Text(bytes) => bytes,
    };
    let text =
        std::str::from_utf8(&bytes).map_err(|_| Failure::Conversation(ConvProblem::NotUtf8))?;
    let value = SecretString::new(text).map_err(|err| {
        Failure::Conversation(match err {
            SecretError::TooLong => ConvProblem::TooLong,
            // A C string holds no NUL; kept for completeness.
            SecretError::Nul => ConvProblem::BadText,
        })
    })?;
    if value.is_empty() && needs_a_value(kind) {
        return Err(Failure::EmptySecret(kind));
    }
    Ok(value)
}

fn account<P, C>(cx: &mut Ctx<'_, P>, connect: &C) -> Result<(), Failure>
where
    P: PamOps + ?Sized,
    C: Connect + ?Sized,
{
    let user = cx.user()?;
    let service = cx.required_item(Item::Service)?;
    let mut client = cx.connect(connect)?;
    let reply = client
        .call(&Request::Account {
            user: user.clone(),
            service,
        })
        .map_err(from_client)?;
    match reply {
        Reply::AccountResult {
            outcome: Outcome::Allow,
            ..
        } => {
            cx.debug(|| format!("account of {user} allowed"));
            Ok(())
        }
        Reply::AccountResult {
            outcome: Outcome::Deny,
            reason,
        } => {
            let reason = reason.map(|r| r.into_string());
            let text = Message::AccountDenied.with_reason(cx.lang, reason.as_deref());
            cx.tell(&text);
            Err(Failure::AccountDenied { reason })
        }
        other => Err(Failure::Unexpected {
            expected: "account_result",
            got: reply_name(&other),
        }),
    }
}

/// `XDG_SESSION_ID` from the PAM environment (set by `pam_systemd`), never
/// from the process environment, which the caller of `su` controls.
fn session_id<P: PamOps + ?Sized>(cx: &Ctx<'_, P>) -> Result<Option<Label>, Failure> {
    match cx.ops.pam_env("XDG_SESSION_ID") {
        None => Ok(None),
        Some(raw) if raw.is_empty() => Ok(None),
        Some(raw) => label(raw).map(Some).map_err(Failure::SessionId),
    }
}

fn open_session<P, C>(cx: &mut Ctx<'_, P>, connect: &C) -> Result<(), Failure>
where
    P: PamOps + ?Sized,
    C: Connect + ?Sized,
{
    let user = cx.user()?;
    let service = cx.required_item(Item::Service)?;
    let tty = cx.optional_item(Item::Tty)?;
    let session_id = session_id(cx)?;
    let mut client = cx.connect(connect)?;
    let reply = client
        .call(&Request::OpenSession {
            user: user.clone(),
            service,
            session_id: session_id.clone(),
            tty,
        })
        .map_err(from_client)?;
    match reply {
        Reply::SessionOpened {
            session_id: bound,
            card_bound,
        } => {
            if let Some(asked) = &session_id {
                if *asked != bound {
                    return Err(Failure::Mismatch(format!(
                        "session_opened for session {bound} while opening session {asked}"
                    )));
                }
            }
            cx.log(
                Level::Info,
                &format!(
                    "session {bound} of {user} opened ({})",
                    if card_bound {
                        "card bound: removing it locks the session"
                    } else {
                        "no card bound"
                    }
                ),
            );
            Ok(())
        }
        other => Err(Failure::Unexpected {
            expected: "session_opened",
            got: reply_name(&other),
        }),
    }
}

fn close_session<P, C>(cx: &mut Ctx<'_, P>, connect: &C) -> Result<(), Failure>
where
    P: PamOps + ?Sized,
    C: Connect + ?Sized,
{
    let user = cx.user()?;
    let service = cx.required_item(Item::Service)?;
    let session_id = session_id(cx)?;
    let mut client = cx.connect(connect)?;
    let reply = client
        .call(&Request::CloseSession {
            user: user.clone(),
            service,
            session_id,
        })
        .map_err(from_client)?;
    match reply {
        Reply::SessionClosed {} => {
            cx.debug(|| format!("session of {user} closed"));
            Ok(())
        }
        other => Err(Failure::Unexpected {
            expected: "session_closed",
            got: reply_name(&other),
        }),
    }
}

/// `pam_setcred`: the module holds no credentials (the agent keeps the
/// ticket), so establishing, deleting, reinitializing or refreshing them
/// succeeds and grants nothing; flags that name none of these are refused.
/// See `docs/PAM.md` for why this is not tied to an earlier
/// `pam_authenticate` in the same handle.
fn setcred(flags: c_int) -> Result<(), Failure> {
    let action = flags & !PAM_SILENT;
    if [
        PAM_ESTABLISH_CRED,
        PAM_DELETE_CRED,
        PAM_REINITIALIZE_CRED,
        PAM_REFRESH_CRED,
    ]
    .contains(&action)
    {
        Ok(())
    } else {
        Err(Failure::BadFlags(flags))
    }
}
