//! One client connection: read requests, run at most one conversation at a
//! time, write replies.
//!
//! A conversation (authenticate) runs as its own task; this loop relays
//! its prompts and the caller's answers. Anything out of order (an answer
//! to another prompt, a new request in the middle) ends the conversation
//! with an error and aborts the task, so nothing is left half-done; a
//! caller that hangs up aborts it too. Frames the agent cannot read get an
//! error and the connection closes.

use std::sync::Arc;

use clinauth_proto::agent::{ErrorCode, Reply, Request};
use clinauth_proto::envelope::{Envelope, UNCORRELATED_ID};
use clinauth_proto::frame::{FrameDecoder, FrameError};
use clinauth_proto::{SecretString, Text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use zeroize::{Zeroize, Zeroizing};

use super::peer::{authorize, Peer};
use crate::apps::{self, events::Subscription};
use crate::conversation::{Conversation, Exchange};
use crate::daemon::Daemon;
use clinauth_policy::Purpose;

/// A conversation in progress.
struct Talk {
    task: JoinHandle<Reply>,
    exchanges: mpsc::Receiver<Exchange>,
    /// The prompt waiting for its answer.
    pending: Option<(u32, oneshot::Sender<SecretString>)>,
    /// Replies carry the id of the latest request of the conversation.
    id: u64,
    user: clinauth_proto::UserName,
    purpose: clinauth_policy::Purpose,
    /// The reply that ends this conversation.
    ends: Ends,
    /// The flow's side of the conversation is gone.
    flow_done: bool,
}

/// The reply a conversation ends with, for the `cancel` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// `auth_result` (authenticate, step_up, register_record's step-up).
    Auth,
    /// `record_result` (decide_record).
    Record,
    /// `sign_result` (sign).
    Sign,
}

impl Drop for Talk {
    fn drop(&mut self) {
        // The caller is gone or out of step: stop the flow where it is. Its
        // card session, prompts and server exchange are dropped with it.
        self.task.abort();
    }
}

fn error(code: ErrorCode, message: &str) -> Reply {
    Reply::Error {
        code,
        message: Text::lossy(message),
    }
}

async fn send(writer: &mut OwnedWriteHalf, id: u64, reply: &Reply) -> bool {
    let Ok(frame) = Envelope::new(id, reply).encode() else {
        return false;
    };
    writer.write_all(&frame).await.is_ok() && writer.flush().await.is_ok()
}

/// Serves `stream` until the caller hangs up or breaks the protocol.
pub async fn serve(stream: UnixStream, peer: Peer, daemon: Arc<Daemon>) {
    let (mut reader, mut writer) = stream.into_split();
    let mut decoder = FrameDecoder::new();
    let mut buf = Zeroizing::new(vec![0u8; 4096]);
    let mut talk: Option<Talk> = None;
    let mut next_prompt: u32 = 1;
    // The `subscribe` request's id and its sources, once subscribed.
    let mut subscription: Option<(u64, Subscription)> = None;
    loop {
        let conversing = talk.is_some();
        let subscribed = subscription.is_some();
        tokio::select! {
            read = reader.read(&mut buf[..]) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        // Hung up (between frames or in one): nothing to answer.
                        if talk.is_some() {
                            daemon.note_abandoned(&peer);
                        }
                        return;
                    }
                    Ok(n) => n,
                };
                let mut input = buf.get(..n).unwrap_or_default();
                loop {
                    let frame = match decoder.decode(&mut input) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => {
                            refuse_frame(&mut writer, &e).await;
                            daemon.note_refused(&peer, &e.to_string());
                            buf.zeroize();
                            return;
                        }
                    };
                    let request = match Envelope::<Request>::decode(&frame) {
                        Ok(r) if r.id == UNCORRELATED_ID => {
                            refuse_frame(&mut writer, &FrameError::Malformed("request id 0 is reserved".into())).await;
                            return;
                        }
                        Ok(r) => r,
                        Err(e) => {
                            refuse_frame(&mut writer, &e).await;
                            daemon.note_refused(&peer, &e.to_string());
                            buf.zeroize();
                            return;
                        }
                    };
                    if let Request::Subscribe {} = request.body {
                        if authorize(&peer, &request.body).is_ok() {
                            subscription = Some((
                                request.id,
                                Subscription::new(daemon.readers().subscribe(), daemon.sessions().subscribe()),
                            ));
                            daemon.note_subscribed(&peer);
                            if !send(&mut writer, request.id, &Reply::Subscribed {}).await {
                                return;
                            }
                            continue;
                        }
                    }
                    if !handle(&mut writer, &peer, &daemon, request, &mut talk, &mut next_prompt).await {
                        buf.zeroize();
                        return;
                    }
                }
                if let Some(used) = buf.get_mut(..n) {
                    used.zeroize();
                }
            }
            event = async { match subscription.as_mut() { Some((_, sub)) => sub.next().await, None => unreachable_future().await } }, if subscribed => {
                let Some((sub_id, _)) = subscription.as_ref() else { continue };
                if !send(&mut writer, *sub_id, &Reply::Event { event }).await {
                    return;
                }
            }
            event = async { match talk.as_mut() { Some(t) => next_event(t).await, None => unreachable_future().await } }, if conversing => {
                match event {
                    Event::Exchange(Exchange::Info { text, text_ja }) => {
                        let Some(t) = talk.as_ref() else { continue };
                        if !send(&mut writer, t.id, &Reply::Info { text, text_ja: Some(text_ja) }).await {
                            return;
                        }
                    }
                    Event::Exchange(Exchange::Prompt { kind, style, text, text_ja, answer }) => {
                        let Some(t) = talk.as_mut() else { continue };
                        let prompt_id = next_prompt;
                        next_prompt = next_prompt.wrapping_add(1).max(1);
                        t.pending = Some((prompt_id, answer));
                        let reply = Reply::Prompt { prompt_id, style, kind, text, text_ja: Some(text_ja) };
                        if !send(&mut writer, t.id, &reply).await {
                            return;
                        }
                    }
                    Event::Done(result) => {
                        let Some(t) = talk.take() else { continue };
                        let reply = result.unwrap_or_else(|_| error(ErrorCode::Internal, "the authentication task failed"));
                        if !send(&mut writer, t.id, &reply).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}

enum Event {
    Exchange(Exchange),
    Done(Result<Reply, tokio::task::JoinError>),
}

/// The next thing the conversation has for the caller: queued prompts and
/// infos first, then the flow's result.
async fn next_event(t: &mut Talk) -> Event {
    loop {
        tokio::select! {
            biased;
            exchange = t.exchanges.recv(), if t.pending.is_none() && !t.flow_done => {
                match exchange {
                    Some(e) => return Event::Exchange(e),
                    // The flow dropped its conversation: its result follows.
                    None => t.flow_done = true,
                }
            }
            result = &mut t.task => return Event::Done(result),
        }
    }
}

/// Starts a conversation whose flow is `task`.
fn start(
    talk: &mut Option<Talk>,
    next_prompt: &mut u32,
    id: u64,
    user: clinauth_proto::UserName,
    (purpose, ends): (clinauth_policy::Purpose, Ends),
    task: JoinHandle<Reply>,
    exchanges: mpsc::Receiver<Exchange>,
) {
    *next_prompt = 1;
    *talk = Some(Talk {
        task,
        exchanges,
        pending: None,
        id,
        user,
        purpose,
        ends,
        flow_done: false,
    });
}

/// A future that never completes, for `select!` branches that are off.
async fn unreachable_future<T>() -> T {
    std::future::pending().await
}

async fn refuse_frame(writer: &mut OwnedWriteHalf, err: &FrameError) {
    let code = ErrorCode::from(err);
    let reply = error(code, &err.to_string());
    let _ = send(writer, UNCORRELATED_ID, &reply).await;
}

/// Handles one request; `false` closes the connection.
async fn handle(
    writer: &mut OwnedWriteHalf,
    peer: &Peer,
    daemon: &Arc<Daemon>,
    request: Envelope<Request>,
    talk: &mut Option<Talk>,
    next_prompt: &mut u32,
) -> bool {
    let id = request.id;
    if let Err(refusal) = authorize(peer, &request.body) {
        daemon.note_unauthorized(peer, &request.body, refusal.0);
        // A refusal in the middle of a conversation ends it.
        *talk = None;
        return send(writer, id, &error(ErrorCode::Unauthorized, refusal.0)).await;
    }
    match request.body {
        Request::Answer { prompt_id, value } => {
            let Some(t) = talk.as_mut() else {
                return send(
                    writer,
                    id,
                    &error(
                        ErrorCode::UnexpectedMessage,
                        "no conversation is in progress",
                    ),
                )
                .await;
            };
            match t.pending.take() {
                Some((expected, answer)) if expected == prompt_id => {
                    t.id = id;
                    // The flow may have ended meanwhile; its result follows.
                    let _ = answer.send(value);
                    true
                }
                _ => {
                    *talk = None;
                    send(
                        writer,
                        id,
                        &error(
                            ErrorCode::UnexpectedMessage,
                            "this answer does not match the open prompt; the conversation is ended",
                        ),
                    )
                    .await
                }
            }
        }
        Request::Cancel {} => {
            let Some(t) = talk.take() else {
                return send(
                    writer,
                    id,
                    &error(
                        ErrorCode::UnexpectedMessage,
                        "no conversation is in progress",
                    ),
                )
                .await;
            };
            daemon.note_cancelled(peer, &t.user, t.purpose);
            let reason = Some(Text::lossy("cancelled by the caller"));
            let reply = match t.ends {
                Ends::Auth => Reply::AuthResult {
                    outcome: clinauth_proto::Outcome::Deny,
                    user: t.user.clone(),
                    purpose: t.purpose,
                    rule: None,
                    factors: Vec::new(),
                    reason,
                    ticket: None,
                },
                Ends::Record => Reply::RecordResult {
                    outcome: clinauth_proto::Outcome::Deny,
                    record: None,
                    reason,
                },
                Ends::Sign => Reply::SignResult {
                    outcome: clinauth_proto::Outcome::Deny,
                    signature: None,
                    certificate: None,
                    ticket: None,
                    reason,
                },
            };
            send(writer, id, &reply).await
        }
        other if talk.is_some() => {
            let _ = other;
            *talk = None;
            send(
                writer,
                id,
                &error(
                    ErrorCode::UnexpectedMessage,
                    "a conversation is in progress; it is ended",
                ),
            )
            .await
        }
        Request::Authenticate {
            user,
            purpose,
            service,
            tty,
            rhost,
        } => {
            let (conv, exchanges) = Conversation::new(daemon.conversation_timeout());
            let flow = daemon.clone();
            let who = peer.clone();
            let for_user = user.clone();
            let task = tokio::spawn(async move {
                flow.authenticate(&who, for_user, purpose, service, tty, rhost, conv)
                    .await
            });
            *next_prompt = 1;
            *talk = Some(Talk {
                task,
                exchanges,
                pending: None,
                id,
                user,
                purpose,
                ends: Ends::Auth,
                flow_done: false,
            });
            true
        }
        Request::StepUp {
            user,
            action,
            max_age,
        } => {
            let user = match apps::app_user(peer, user) {
                Ok(u) => u,
                Err(why) => return send(writer, id, &error(ErrorCode::Unauthorized, why)).await,
            };
            let context = format!(
                "An application asks you to prove it is you, for: {action}\nアプリケーションが本人確認を求めています: {action}",
                action = action.as_str()
            );
            let (conv, exchanges) = apps::app_conversation(daemon, peer, context);
            let (flow, who, for_user) = (daemon.clone(), peer.clone(), user.clone());
            let task =
                tokio::spawn(
                    async move { flow.step_up(&who, for_user, action, max_age, conv).await },
                );
            start(
                talk,
                next_prompt,
                id,
                user,
                (Purpose::StepUp, Ends::Auth),
                task,
                exchanges,
            );
            true
        }
        Request::RegisterRecord {
            user,
            digest,
            summary,
            confirmer,
        } => {
            let user = match apps::app_user(peer, user) {
                Ok(u) => u,
                Err(why) => return send(writer, id, &error(ErrorCode::Unauthorized, why)).await,
            };
            let context = format!(
                "Authenticate to enter a record for {c} to confirm: {s}\n{c} さんが確定する記録を代行入力するため、本人確認をしてください: {s}",
                c = confirmer.as_str(),
                s = summary.as_str()
            );
            let (conv, exchanges) = apps::app_conversation(daemon, peer, context);
            let (flow, who, for_user) = (daemon.clone(), peer.clone(), user.clone());
            let task = tokio::spawn(async move {
                flow.register_record(&who, for_user, digest, summary, confirmer, conv)
                    .await
            });
            start(
                talk,
                next_prompt,
                id,
                user,
                (Purpose::StepUp, Ends::Auth),
                task,
                exchanges,
            );
            true
        }
        Request::DecideRecord {
            user,
            record,
            verdict,
        } => {
            let user = match apps::app_user(peer, user) {
                Ok(u) => u,
                Err(why) => return send(writer, id, &error(ErrorCode::Unauthorized, why)).await,
            };
            let (conv, exchanges) = apps::app_conversation(daemon, peer, String::new());
            let (flow, who, for_user) = (daemon.clone(), peer.clone(), user.clone());
            let task = tokio::spawn(async move {
                flow.decide_record(&who, for_user, record, verdict, conv)
                    .await
            });
            start(
                talk,
                next_prompt,
                id,
                user,
                (Purpose::Confirm, Ends::Record),
                task,
                exchanges,
            );
            true
        }
        Request::Sign { user, digest } => {
            let user = match apps::app_user(peer, user) {
                Ok(u) => u,
                Err(why) => return send(writer, id, &error(ErrorCode::Unauthorized, why)).await,
            };
            let context = format!(
                "Sign a document with your card's signature key.\n電子署名: カードの署名用鍵で文書に署名します。\n{digest}"
            );
            let (conv, exchanges) = apps::app_conversation(daemon, peer, context);
            let (flow, who, for_user) = (daemon.clone(), peer.clone(), user.clone());
            let task = tokio::spawn(async move { flow.sign(&who, for_user, digest, conv).await });
            start(
                talk,
                next_prompt,
                id,
                user,
                (Purpose::Sign, Ends::Sign),
                task,
                exchanges,
            );
            true
        }
        Request::PendingRecords { user } => {
            let reply = match apps::app_user(peer, user) {
                Ok(user) => daemon.pending_records(user).await,
                Err(why) => error(ErrorCode::Unauthorized, why),
            };
            send(writer, id, &reply).await
        }
        Request::GetRecord { record } => {
            let reply = daemon.get_record(peer, record).await;
            send(writer, id, &reply).await
        }
        // Handled by the connection loop; here only when unauthorized.
        Request::Subscribe {} => {
            send(
                writer,
                id,
                &error(ErrorCode::Unauthorized, "the caller may not subscribe"),
            )
            .await
        }
        Request::Status {} => {
            let reply = daemon.status(peer);
            send(writer, id, &reply).await
        }
        Request::Account { user, service } => {
            let reply = daemon.account(peer, user, service).await;
            send(writer, id, &reply).await
        }
        Request::OpenSession {
            user,
            service,
            session_id,
            tty,
        } => {
            let reply = daemon
                .open_session(peer, user, service, session_id, tty)
                .await;
            send(writer, id, &reply).await
        }
        Request::CloseSession {
            user,
            service,
            session_id,
        } => {
            let reply = daemon.close_session(peer, user, service, session_id).await;
            send(writer, id, &reply).await
        }
    }
}
