//! Group commit: one task writes the decisions of many requests in one
//! transaction.
//!
//! Every begin and finish ends in a write (the challenge issued or used,
//! counters, throttling, the workstation's contact time, the audit entry).
//! Instead of a transaction and a durable commit (an fsync) each, requests
//! send their writes here as a [`Plan`] and wait. The writer task takes
//! whatever is queued (up to [`MAX_BATCH`]) and writes it in one
//! transaction with a handful of statements for the whole batch: one
//! multi-row INSERT of the challenges issued, one conditional UPDATE that
//! uses the challenges presented, one UPDATE of contact times, one read of
//! the audit chain's head and a multi-row INSERT of every audit entry. A
//! plan with conditional writes of its own (one-time counters, throttling
//! after a failure, a suspended FIDO2 key) runs inside a SAVEPOINT, so that
//! its failure leaves the others untouched. Only after COMMIT returns is
//! any caller answered, and for decisions and refusals only once the commit
//! is on disk (`synchronous=FULL` on SQLite), so no decision is ever
//! returned before its audit entry is durable. A batch's begins, which
//! decide nothing, are committed first in a transaction of their own that
//! the next durable commit syncs (see [`Durability`]).
//!
//! Guarantees kept from the one-transaction-per-request design:
//! - a challenge is used once, on any replica: the UPDATE flips `used_at`
//!   only where it is NULL, and a challenge presented twice in one batch
//!   goes to the first plan only;
//! - the audit chain stays one chain: the head is read inside the batch's
//!   transaction (SQLite: under its write lock; PostgreSQL: under one
//!   advisory lock per batch, taken after the row updates, as every other
//!   writer does), so entries from every replica and from officer
//!   operations interleave without a fork;
//! - each plan's audit entries are contiguous and in order.

use super::challenge::{self, Challenge, ChallengeError};
use super::evidence::{self, CounterUpdate};
use super::throttle::{self, Counter};
use crate::audit::{self, AuditKey, Event};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, Tx};
use clinauth_policy::FailureLimits;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The most plans written in one transaction.
pub const MAX_BATCH: usize = 256;

/// Why a plan was not written. Nothing was written for it.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The challenge cannot be used (already used, expired, another workstation's).
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    /// A one-time counter (TOTP step, FIDO2 count) was advanced by a
    /// concurrent request first.
    #[error("a one-time code was already used")]
    Reused,
    /// Storage or audit failed.
    #[error("storage: {0}")]
    Store(String),
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> Self {
        CommitError::Store(e.to_string())
    }
}

impl From<sqlx::Error> for CommitError {
    fn from(e: sqlx::Error) -> Self {
        CommitError::Store(e.to_string())
    }
}

impl From<audit::AuditError> for CommitError {
    fn from(e: audit::AuditError) -> Self {
        CommitError::Store(e.to_string())
    }
}

/// A failure to count against the user and the workstation (R-RATE-1).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The user's counter key.
    pub user_key: String,
    /// The workstation's bucket key.
    pub ws_key: String,
    /// A biometric was presented and did not match (R-BIO-4).
    pub biometric: bool,
    /// The limits of the rule.
    pub limits: FailureLimits,
}

/// A FIDO2 key whose signature counter went backwards.
#[derive(Debug, Clone)]
pub struct Regression {
    /// The credential's row ID.
    pub credential: String,
    /// Suspend it (policy `fido2.counter_regression = "suspend"`).
    pub suspend: bool,
    /// Its audit entry, completed with the outcome when written.
    pub event: Event,
}

/// A pending break-glass review to create with the decision (R-EMERG-1).
#[derive(Debug, Clone)]
pub struct ReviewItem {
    /// The challenge ID (the ticket's `jti`).
    pub id: String,
    /// The user.
    pub user: String,
    /// The workstation.
    pub workstation: String,
    /// The purpose.
    pub purpose: String,
    /// The rule.
    pub rule: String,
    /// The factors.
    pub factors: Vec<String>,
}

/// Builds a denial's audit entry from the user's counter and the
/// workstation's bucket after the failure.
pub type AfterFailure = Box<dyn Fn(&Counter, &Counter) -> Event + Send + Sync>;

/// The audit entry of a finish: fixed, or built once the failure counters
/// after this failure are known (a denial names them).
pub enum FinishAudit {
    /// Known in advance.
    Event(Event),
    /// Built from the counters after the failure.
    AfterFailure(AfterFailure),
}

/// The writes of a finish.
pub struct FinishPlan {
    /// The challenge presented.
    pub challenge_id: String,
    /// The workstation presenting it.
    pub workstation: String,
    /// The nonce and user it had when it was read before verification.
    pub expect: ([u8; 32], String),
    /// One-time counters to advance (TOTP, FIDO2).
    pub counters: Vec<CounterUpdate>,
    /// On an allow: the user's failure counter to clear, if there was one.
    pub clear: Option<String>,
    /// On a deny: the failure to count.
    pub failure: Option<Failure>,
    /// Regressed FIDO2 keys.
    pub regressions: Vec<Regression>,
    /// The decision's audit entry.
    pub audit: FinishAudit,
    /// A review item to create (allowed break-glass).
    pub review: Option<ReviewItem>,
}

/// What a finish wrote.
#[derive(Debug, Clone)]
pub struct FinishDone {
    /// After a failure: the user's counter and the workstation's bucket.
    pub failure: Option<(Counter, Counter)>,
}

/// One request's writes.
pub enum Plan {
    /// Store a fresh challenge and the begin's audit entry.
    Begin {
        /// The challenge from [`challenge::fresh`].
        challenge: Challenge,
        /// The begin's audit entry.
        audit: Event,
    },
    /// Use a challenge, record the decision.
    Finish(Box<FinishPlan>),
    /// Only an audit entry (a refusal).
    Audit(Event),
}

/// What was written.
#[derive(Debug)]
pub enum Done {
    /// A begin or an audit entry.
    Written,
    /// A finish.
    Finish(Box<FinishDone>),
}

type Job = (Plan, i64, oneshot::Sender<Result<Done, CommitError>>);

/// The handle requests send their plans to; the writer task starts with the
/// first plan, on the runtime of its caller.
#[derive(Clone)]
pub struct Committer {
    store: Store,
    key: Arc<crate::keys::Keys>,
    metrics: Option<Arc<Metrics>>,
    queue: Arc<OnceLock<mpsc::UnboundedSender<Job>>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Committer")
    }
}

impl Committer {
    /// A committer for `store`, signing audit entries with the audit key of `keys`.
    pub fn new(store: Store, keys: Arc<crate::keys::Keys>) -> Committer {
        Committer {
            store,
            key: keys,
            metrics: None,
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// Counts every commit's time and size in `metrics` (`/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Committer {
        self.metrics = Some(metrics);
        self
    }

    /// Writes `plan` (at `now_ms`) with whatever else is queued, and
    /// returns once it is committed: durably, but for a begin (see
    /// [`Durability`]).
    pub async fn submit(&self, plan: Plan, now_ms: i64) -> Result<Done, CommitError> {
        let queue = self.queue.get_or_init(|| {
            spawn_writer(self.store.clone(), self.key.clone(), self.metrics.clone())
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send((plan, now_ms, reply))
            .map_err(|_| CommitError::Store("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| CommitError::Store("the writer has stopped".into()))?
    }
}

/// How a transaction's commit reaches the disk.
///
/// Decisions, refusals and everything with a failure counter or a one-time
/// counter are committed `Now`: their callers are answered only once the
/// commit is on disk. Begins decide nothing; they are committed `Deferred`
/// (SQLite: `synchronous=NORMAL` for that transaction; PostgreSQL:
/// `synchronous_commit = off`): answered once committed, synced by the next
/// durable commit. Both engines write their log in order and a durable
/// commit syncs everything before it, so a crash can lose only the latest
/// begins (their challenges, then unknown, are refused at finish: fail
/// closed) with their audit entries, never a decision's entry, and the
/// chain that survives is a prefix, intact. It takes one disk sync off
/// every login's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answer after the commit is synced to disk.
    Now,
    /// Answer after the commit; the next `Now` commit syncs it.
    Deferred,
}

/// Splits a batch into its begins (committed first, [`Durability::Deferred`])
/// and the rest ([`Durability::Now`]), each in arrival order.
fn split(jobs: Vec<Job>) -> [(Vec<Job>, Durability); 2] {
    let (begins, rest): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|(plan, _, _)| matches!(plan, Plan::Begin { .. }));
    [(begins, Durability::Deferred), (rest, Durability::Now)]
}

/// The contact times this writer has written. A workstation's is written
/// again only once [`crate::directory::CONTACT_RESOLUTION_MS`] old: until
/// then the batch needs no statement for it (a round trip on PostgreSQL).
/// Another replica may have written a later one; the database keeps the
/// latest either way.
#[derive(Debug, Default)]
struct Contacts(HashMap<String, i64>);

impl Contacts {
    /// More workstations than any site has; past it the memory starts over.
    const MAX: usize = 100_000;

    /// The latest time of each workstation in `calls` that is due a write.
    fn due<'a>(&self, calls: impl Iterator<Item = (&'a str, i64)>) -> Vec<(&'a str, i64)> {
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for (id, at) in calls {
            let t = latest.entry(id).or_insert(at);
            *t = (*t).max(at);
        }
        let mut due: Vec<(&str, i64)> = latest
            .into_iter()
            .filter(|(id, at)| {
                self.0
                    .get(*id)
                    .is_none_or(|t| *t <= crate::directory::contact_stale_before(*at))
            })
            .collect();
        due.sort_unstable();
        due
    }

    /// After the commit that wrote `due`.
    fn written(&mut self, due: &[(&str, i64)]) {
        if self.0.len() + due.len() > Self::MAX {
            self.0.clear();
        }
        for (id, at) in due {
            let t = self.0.entry((*id).to_owned()).or_insert(*at);
            *t = (*t).max(*at);
        }
    }
}

/// The workstation of every plan in `slots` that was not refused, with the
/// plan's time.
fn callers(slots: &[Slot]) -> impl Iterator<Item = (&str, i64)> {
    slots
        .iter()
        .filter(|s| matches!(s.result, None | Some(Ok(_))))
        .filter_map(|s| match &s.plan {
            Plan::Begin { challenge, .. } => Some((challenge.workstation.as_str(), s.now_ms)),
            Plan::Finish(f) => Some((f.workstation.as_str(), s.now_ms)),
            Plan::Audit(_) => None,
        })
}

/// Starts the writer. On a SQLite file: a thread of its own with its own
/// rusqlite connection (see [`local`]), one thread hand-off per batch.
/// Otherwise (PostgreSQL, or no such connection): a task on the runtime of
/// the first caller, writing through sqlx.
fn spawn_writer(
    store: Store,
    keys: Arc<crate::keys::Keys>,
    metrics: Option<Arc<Metrics>>,
) -> mpsc::UnboundedSender<Job> {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = match store.fast().map(|fast| fast.open_writer()) {
        Some(Ok(conn)) => Some(conn),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "no SQLite writer connection; writing through sqlx");
            None
        }
        None => None,
    };
    match conn {
        Some(conn) => {
            let keys = keys.clone();
            // A failed spawn drops the receiver: every submit then fails closed.
            if let Err(e) = std::thread::Builder::new()
                .name("clinauth-writer".into())
                .spawn(move || local_writer(conn, keys, metrics, rx))
            {
                tracing::error!(error = %e, "cannot start the writer thread");
            }
        }
        None => {
            tokio::spawn(writer(store, keys, metrics, rx));
        }
    }
    tx
}

async fn writer(
    store: Store,
    keys: Arc<crate::keys::Keys>,
    metrics: Option<Arc<Metrics>>,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut contacts = Contacts::default();
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        for (group, durability) in split(std::mem::take(&mut jobs)) {
            if !group.is_empty() {
                let (started, plans) = (Instant::now(), group.len());
                write_batch(&store, &keys.audit, group, durability, &mut contacts).await;
                count(metrics.as_deref(), durability, plans, started);
            }
        }
    }
}

fn count(metrics: Option<&Metrics>, durability: Durability, plans: usize, started: Instant) {
    if let Some(m) = metrics {
        m.count_commit(durability == Durability::Now, plans, started.elapsed());
    }
}

/// The writer thread on a SQLite file: takes what is queued, writes it and
/// answers the callers, until every [`Committer`] is gone.
fn local_writer(
    conn: rusqlite::Connection,
    keys: Arc<crate::keys::Keys>,
    metrics: Option<Arc<Metrics>>,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    // `open_writer` leaves the connection at synchronous=FULL.
    let mut current = Durability::Now;
    let mut contacts = Contacts::default();
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        for (group, durability) in split(jobs) {
            if group.is_empty() {
                continue;
            }
            if durability != current {
                let level = match durability {
                    Durability::Now => "FULL",
                    Durability::Deferred => "NORMAL",
                };
                if let Err(e) = conn.pragma_update(None, "synchronous", level) {
                    // Not knowing the level, answer nobody before it is durable.
                    tracing::error!(error = %e, "cannot set the commit's durability");
                    let mut slots = slots_of(group);
                    reply_all(&mut slots, &Err(CommitError::Store(e.to_string())));
                    let _ = conn.pragma_update(None, "synchronous", "FULL");
                    current = Durability::Now;
                    continue;
                }
                current = durability;
            }
            let (started, plans) = (Instant::now(), group.len());
            write_batch_local(&conn, &keys.audit, group, &mut contacts);
            count(metrics.as_deref(), durability, plans, started);
        }
    }
}

fn slots_of(jobs: Vec<Job>) -> Vec<Slot> {
    jobs.into_iter()
        .map(|(plan, now_ms, reply)| Slot {
            plan,
            now_ms,
            reply: Some(reply),
            result: None,
            events: Vec::new(),
            review_event: None,
        })
        .collect()
}

/// Answers every caller: its plan's result, or the batch's error.
fn reply_all(slots: &mut [Slot], outcome: &Result<(), CommitError>) {
    for slot in slots {
        let result = match outcome {
            Ok(()) => slot
                .result
                .take()
                .unwrap_or_else(|| Err(CommitError::Store("plan not written".into()))),
            Err(e) => Err(CommitError::Store(e.to_string())),
        };
        if let Some(reply) = slot.reply.take() {
            let _ = reply.send(result);
        }
    }
}

fn reset(slot: &mut Slot) {
    slot.result = None;
    slot.events.clear();
    slot.review_event = None;
}

/// A batch on the SQLite file through the writer's rusqlite connection,
/// on the writer thread, which also answers the callers.
fn write_batch_local(
    conn: &rusqlite::Connection,
    key: &AuditKey,
    jobs: Vec<Job>,
    contacts: &mut Contacts,
) {
    let mut slots = slots_of(jobs);
    let mut outcome = local::write_slots(conn, key, &mut slots, contacts);
    if let (Err(e), true) = (&outcome, slots.len() > 1) {
        tracing::warn!(error = %e, plans = slots.len(), "batch failed; writing its plans one by one");
        for slot in slots.iter_mut() {
            reset(slot);
            if let Err(e) = local::write_slots(conn, key, std::slice::from_mut(slot), contacts) {
                slot.result = Some(Err(e));
            }
        }
        outcome = Ok(());
    }
    reply_all(&mut slots, &outcome);
}

/// A plan's place in the batch while it is written.
struct Slot {
    plan: Plan,
    now_ms: i64,
    reply: Option<oneshot::Sender<Result<Done, CommitError>>>,
    result: Option<Result<Done, CommitError>>,
    /// Audit events to append for this plan, in order.
    events: Vec<Event>,
    /// For a review: the index (in `events`) of the decision's entry.
    review_event: Option<usize>,
}

async fn write_batch(
    store: &Store,
    key: &AuditKey,
    jobs: Vec<Job>,
    durability: Durability,
    contacts: &mut Contacts,
) {
    let mut slots = slots_of(jobs);
    let mut outcome = write_slots(store, key, &mut slots, durability, contacts).await;
    if let (Err(e), true) = (&outcome, slots.len() > 1) {
        // The batch failed as a whole (on PostgreSQL, say, a deadlock with
        // another replica over a challenge replayed to both): nothing of it
        // was written. Write each plan on its own, so that one plan cannot
        // fail the others.
        tracing::warn!(error = %e, plans = slots.len(), "batch failed; writing its plans one by one");
        for slot in slots.iter_mut() {
            reset(slot);
            if let Err(e) =
                write_slots(store, key, std::slice::from_mut(slot), durability, contacts).await
            {
                slot.result = Some(Err(e));
            }
        }
        outcome = Ok(());
    }
    reply_all(&mut slots, &outcome);
}

async fn exec(tx: &mut Tx, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut **tx).await.map(|_| ())
}

/// Writes every slot in one transaction; `Err` when the whole batch failed
/// (nothing written). A plan refused on its own has its `result` set to the
/// refusal and left no write.
async fn write_slots(
    store: &Store,
    key: &AuditKey,
    slots: &mut [Slot],
    durability: Durability,
    contacts: &mut Contacts,
) -> Result<(), CommitError> {
    let mut tx = match durability {
        Durability::Now => store.begin().await?,
        Durability::Deferred => store.begin_deferred().await?,
    };
    let latest = slots.iter().map(|s| s.now_ms).max().unwrap_or(0);

    // 1. Challenges issued by begins: one multi-row INSERT.
    let issued: Vec<(&Challenge, i64)> = slots
        .iter()
        .filter_map(|s| match &s.plan {
            Plan::Begin { challenge, .. } => Some((challenge, s.now_ms)),
            _ => None,
        })
        .collect();
    challenge::insert_many(&mut tx, &issued).await?;
    drop(issued);

    // 2. Challenges used by simple finishes (no conditional writes of their
    //    own): one conditional UPDATE for all of them.
    let simple: Vec<usize> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| match &s.plan {
            Plan::Finish(f) => {
                f.counters.is_empty() && f.failure.is_none() && f.regressions.is_empty()
            }
            _ => false,
        })
        .map(|(i, _)| i)
        .collect();
    if !simple.is_empty() {
        let wanted: Vec<(&str, &str)> = simple
            .iter()
            .filter_map(|i| match &slots[*i].plan {
                Plan::Finish(f) => Some((f.challenge_id.as_str(), f.workstation.as_str())),
                _ => None,
            })
            .collect();
        let used = challenge::consume_many(&mut tx, &wanted, latest).await?;
        for (i, result) in simple.iter().zip(used) {
            let slot = &mut slots[*i];
            slot.result = Some(match result {
                Ok(c) => {
                    checked(slot, c).map(|_| Done::Finish(Box::new(FinishDone { failure: None })))
                }
                Err(e) => Err(CommitError::Challenge(e)),
            });
        }
        // Clearing a failure counter after a success: rare (only users who
        // failed before), one statement each.
        for i in &simple {
            let slot = &slots[*i];
            if let (Some(Ok(_)), Plan::Finish(f)) = (&slot.result, &slot.plan) {
                if let Some(user_key) = &f.clear {
                    throttle::clear(&mut tx, user_key).await?;
                }
            }
        }
    }

    // 3. Finishes with conditional writes, each inside a savepoint.
    for slot in slots.iter_mut() {
        let Plan::Finish(f) = &slot.plan else {
            continue;
        };
        if slot.result.is_some() {
            continue;
        }
        exec(&mut tx, "SAVEPOINT clinauth_plan").await?;
        match complex_finish(&mut tx, f, slot.now_ms).await {
            Ok((done, regressions)) => {
                exec(&mut tx, "RELEASE SAVEPOINT clinauth_plan").await?;
                slot.events.extend(regressions);
                slot.result = Some(Ok(Done::Finish(Box::new(done))));
            }
            Err(e) => {
                exec(&mut tx, "ROLLBACK TO SAVEPOINT clinauth_plan").await?;
                exec(&mut tx, "RELEASE SAVEPOINT clinauth_plan").await?;
                slot.result = Some(Err(e));
            }
        }
    }

    // 4. The contact time of every workstation that called in, once each,
    //    when due.
    let due: Vec<(String, i64)> = contacts
        .due(callers(slots))
        .into_iter()
        .map(|(id, at)| (id.to_owned(), at))
        .collect();
    let ids: Vec<&str> = due.iter().map(|(id, _)| id.as_str()).collect();
    touch_workstations(&mut tx, &ids, latest).await?;

    // 5. Audit entries, in plan order, after the row updates.
    let (events, owners) = collect_events(slots);
    let entries = audit::append_batch(&mut tx, store.backend(), key, &events).await?;

    // 6. Review items, naming their decision's entry.
    for (entry, (i, j)) in entries.iter().zip(owners) {
        let slot = &slots[i];
        if slot.review_event != Some(j) {
            continue;
        }
        if let Plan::Finish(f) = &slot.plan {
            if let Some(r) = &f.review {
                crate::review::create(
                    &mut tx,
                    &crate::review::NewReview {
                        id: &r.id,
                        user: &r.user,
                        workstation: &r.workstation,
                        purpose: &r.purpose,
                        rule: &r.rule,
                        factors: &r.factors,
                        audit_seq: entry.seq,
                    },
                    slot.now_ms,
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    let due: Vec<(&str, i64)> = due.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    contacts.written(&due);
    Ok(())
}

/// Every plan's audit entries, in plan order, and for each entry its slot
/// and its index among the slot's entries. Marks begins and audit-only
/// plans written (they cannot fail on their own).
fn collect_events(slots: &mut [Slot]) -> (Vec<Event>, Vec<(usize, usize)>) {
    let mut events: Vec<Event> = Vec::new();
    let mut owners: Vec<(usize, usize)> = Vec::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        match (&slot.plan, &slot.result) {
            (Plan::Begin { audit, .. }, None) => {
                slot.events.push(audit.clone());
                slot.result = Some(Ok(Done::Written));
            }
            (Plan::Audit(event), None) => {
                slot.events.push(event.clone());
                slot.result = Some(Ok(Done::Written));
            }
            (Plan::Finish(f), Some(Ok(Done::Finish(done)))) => {
                let event = match &f.audit {
                    FinishAudit::Event(e) => e.clone(),
                    FinishAudit::AfterFailure(build) => {
                        let (user, bucket) = done.failure.unwrap_or_default();
                        build(&user, &bucket)
                    }
                };
                if f.review.is_some() {
                    slot.review_event = Some(slot.events.len());
                }
                slot.events.push(event);
            }
            _ => {}
        }
        for j in 0..slot.events.len() {
            owners.push((i, j));
        }
        events.extend(slot.events.iter().cloned());
    }
    (events, owners)
}

/// A used challenge must be the one read before verification.
fn checked(slot: &Slot, used: Challenge) -> Result<Challenge, CommitError> {
    match &slot.plan {
        Plan::Finish(f) if used.nonce == f.expect.0 && used.user == f.expect.1 => Ok(used),
        _ => Err(CommitError::Challenge(ChallengeError::Unknown)),
    }
}

/// A finish with conditional writes: use the challenge, advance counters,
/// count a failure, suspend regressed keys. Returns what it wrote and the
/// regressions' audit entries.
async fn complex_finish(
    tx: &mut Tx,
    f: &FinishPlan,
    now_ms: i64,
) -> Result<(FinishDone, Vec<Event>), CommitError> {
    let used = challenge::consume(tx, &f.challenge_id, &f.workstation, now_ms).await?;
    if used.nonce != f.expect.0 || used.user != f.expect.1 {
        return Err(CommitError::Challenge(ChallengeError::Unknown));
    }
    // Row updates first, audit entries later (lock order on PostgreSQL).
    let mut events = Vec::with_capacity(f.regressions.len());
    for r in &f.regressions {
        let suspended = r.suspend
            && crate::credentials::set_fido2_state(
                tx,
                &r.credential,
                crate::directory::DeviceState::Suspended,
            )
            .await?
            .is_some();
        let mut event = r.event.clone();
        event.outcome = if suspended { "suspended" } else { "refused" }.into();
        if let Some(detail) = event.detail.as_object_mut() {
            detail.insert(
                "state".into(),
                json!(if suspended { "suspended" } else { "active" }),
            );
        }
        events.push(event);
    }
    if !f.counters.is_empty() {
        let verified = evidence::Verified {
            counters: f.counters.clone(),
            ..Default::default()
        };
        if evidence::commit_counters(tx, &verified, now_ms)
            .await?
            .is_err()
        {
            return Err(CommitError::Reused);
        }
    }
    if let Some(user_key) = &f.clear {
        throttle::clear(tx, user_key).await?;
    }
    let failure = match &f.failure {
        Some(fail) => {
            let after =
                throttle::fail(tx, &fail.user_key, fail.biometric, &fail.limits, now_ms).await?;
            let bucket = throttle::fill_bucket(tx, &fail.ws_key, now_ms).await?;
            Some((after, bucket))
        }
        None => None,
    };
    Ok((FinishDone { failure }, events))
}

async fn touch_workstations(tx: &mut Tx, ids: &[&str], now_ms: i64) -> Result<(), CommitError> {
    use std::fmt::Write as _;
    for chunk in ids.chunks(500) {
        if chunk.is_empty() {
            continue;
        }
        let mut sql = String::from(
            "UPDATE workstations SET last_contact = $1 WHERE (last_contact IS NULL OR last_contact <= $2) AND id IN (",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", i + 3);
        }
        sql.push(')');
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(crate::directory::contact_stale_before(now_ms));
        for id in chunk {
            query = query.bind(id.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The same batch on a SQLite file, written synchronously through a
/// `rusqlite` connection on the writer thread: one thread hand-off per
/// batch instead of two per statement (sqlx runs each SQLite statement on
/// its connection's worker thread). The statements, conditions and order
/// are those of [`write_slots`], one plan at a time (in-thread a statement
/// costs microseconds, so there is nothing to gain from multi-row forms).
mod local {
    use super::*;
    use rusqlite::{params, Connection, OptionalExtension};

    fn err(e: rusqlite::Error) -> CommitError {
        CommitError::Store(e.to_string())
    }

    /// Runs a statement without parameters, parsed once per connection.
    fn run(conn: &Connection, sql: &str) -> Result<(), CommitError> {
        conn.prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(|_| ())
            .map_err(err)
    }

    /// Writes every slot in one transaction (see [`super::write_slots`]).
    pub(super) fn write_slots(
        conn: &Connection,
        key: &AuditKey,
        slots: &mut [Slot],
        contacts: &mut Contacts,
    ) -> Result<(), CommitError> {
        run(conn, "BEGIN IMMEDIATE")?;
        match body(conn, key, slots, contacts).and_then(|due| {
            run(conn, "COMMIT")?;
            Ok(due)
        }) {
            Ok(due) => {
                let due: Vec<(&str, i64)> = due.iter().map(|(id, at)| (id.as_str(), *at)).collect();
                contacts.written(&due);
                Ok(())
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Returns the contact times it wrote.
    fn body(
        conn: &Connection,
        key: &AuditKey,
        slots: &mut [Slot],
        contacts: &Contacts,
    ) -> Result<Vec<(String, i64)>, CommitError> {
        // 1. Challenges issued.
        {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO challenges (id, nonce, user_id, workstation, purpose, webauthn, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err)?;
            for slot in slots.iter() {
                if let Plan::Begin { challenge: c, .. } = &slot.plan {
                    insert
                        .execute(params![
                            c.id,
                            c.nonce.to_vec(),
                            c.user,
                            c.workstation,
                            c.purpose.as_str(),
                            c.webauthn,
                            slot.now_ms,
                            c.expires_at_ms
                        ])
                        .map_err(err)?;
                }
            }
        }
        // 2. Simple finishes; 3. the others inside a savepoint each.
        for slot in slots.iter_mut() {
            let Plan::Finish(f) = &slot.plan else {
                continue;
            };
            let simple = f.counters.is_empty() && f.failure.is_none() && f.regressions.is_empty();
            if simple {
                slot.result = Some(match consume(conn, f, slot.now_ms)? {
                    Ok(()) => {
                        if let Some(user_key) = &f.clear {
                            clear(conn, user_key)?;
                        }
                        Ok(Done::Finish(Box::new(FinishDone { failure: None })))
                    }
                    Err(e) => Err(e),
                });
                continue;
            }
            run(conn, "SAVEPOINT clinauth_plan")?;
            match complex(conn, f, slot.now_ms) {
                Ok((done, regressions)) => {
                    run(conn, "RELEASE SAVEPOINT clinauth_plan")?;
                    slot.events.extend(regressions);
                    slot.result = Some(Ok(Done::Finish(Box::new(done))));
                }
                Err(e) => {
                    run(conn, "ROLLBACK TO SAVEPOINT clinauth_plan")?;
                    run(conn, "RELEASE SAVEPOINT clinauth_plan")?;
                    slot.result = Some(Err(e));
                }
            }
        }
        // 4. Contact times, when due.
        let due: Vec<(String, i64)> = contacts
            .due(callers(slots))
            .into_iter()
            .map(|(id, at)| (id.to_owned(), at))
            .collect();
        if !due.is_empty() {
            let mut touch = conn
                .prepare_cached(
                    "UPDATE workstations SET last_contact = ?1 WHERE id = ?2 AND (last_contact IS NULL OR last_contact <= ?3)",
                )
                .map_err(err)?;
            for (id, at) in &due {
                touch
                    .execute(params![at, id, crate::directory::contact_stale_before(*at)])
                    .map_err(err)?;
            }
        }
        // 5. Audit entries, after the row updates.
        let (events, owners) = collect_events(slots);
        if !events.is_empty() {
            let details = audit::checked_details(&events)?;
            let head = conn
                .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .map_err(err)?
                .query_row([], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                })
                .optional()
                .map_err(err)?;
            let head = match head {
                Some((seq, hash)) => (seq, audit::hash32_of(hash)?),
                None => (0, audit::GENESIS),
            };
            let entries = audit::chain(key, head, &events, details);
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO audit_log (seq, at_ms, actor, workstation, action, target, outcome, detail, prev_hash, hash, signature) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(err)?;
            for e in &entries {
                insert
                    .execute(params![
                        e.seq,
                        e.at_ms,
                        e.actor,
                        e.workstation,
                        e.action,
                        e.target,
                        e.outcome,
                        e.detail,
                        e.prev_hash.to_vec(),
                        e.hash.to_vec(),
                        e.signature
                    ])
                    .map_err(err)?;
            }
            // 6. Review items, naming their decision's entry.
            for (entry, (i, j)) in entries.iter().zip(owners) {
                let Some(slot) = slots.get(i) else { continue };
                if slot.review_event != Some(j) {
                    continue;
                }
                if let Plan::Finish(f) = &slot.plan {
                    if let Some(r) = &f.review {
                        let factors = serde_json::to_string(&r.factors)
                            .map_err(|e| CommitError::Store(e.to_string()))?;
                        conn.prepare_cached(
                            "INSERT INTO reviews (id, user_id, workstation, purpose, rule, factors, audit_seq, created_at, state) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending')",
                        )
                        .map_err(err)?
                        .execute(params![
                            r.id,
                            r.user,
                            r.workstation,
                            r.purpose,
                            r.rule,
                            factors,
                            entry.seq,
                            slot.now_ms
                        ])
                        .map_err(err)?;
                    }
                }
            }
        }
        Ok(due)
    }

    /// Uses the plan's challenge once (see [`challenge::consume`]); the
    /// inner `Err` is a refusal.
    fn consume(
        conn: &Connection,
        f: &FinishPlan,
        now_ms: i64,
    ) -> Result<Result<(), CommitError>, CommitError> {
        let id = f.challenge_id.as_str();
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Err(CommitError::Challenge(ChallengeError::Unknown)));
        }
        let used = conn
            .prepare_cached(
                "UPDATE challenges SET used_at = ?1 \
                 WHERE id = ?2 AND used_at IS NULL AND expires_at >= ?1 AND workstation = ?3 \
                 RETURNING nonce, user_id",
            )
            .map_err(err)?
            .query_row(params![now_ms, id, f.workstation], |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?))
            })
            .optional()
            .map_err(err)?;
        if let Some((nonce, user)) = used {
            return Ok(
                if nonce.as_slice() == f.expect.0.as_slice() && user == f.expect.1 {
                    Ok(())
                } else {
                    Err(CommitError::Challenge(ChallengeError::Unknown))
                },
            );
        }
        let row = conn
            .prepare_cached("SELECT workstation, expires_at, used_at FROM challenges WHERE id = ?1")
            .map_err(err)?
            .query_row(params![id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                ))
            })
            .optional()
            .map_err(err)?;
        let reason = match row {
            None => ChallengeError::Unknown,
            Some((owner, _, _)) if owner != f.workstation => ChallengeError::OtherWorkstation,
            Some((_, _, Some(_))) => ChallengeError::Used,
            Some((_, expires, None)) if expires < now_ms => ChallengeError::Expired,
            Some(_) => ChallengeError::Unknown,
        };
        Ok(Err(CommitError::Challenge(reason)))
    }

    fn clear(conn: &Connection, key: &str) -> Result<(), CommitError> {
        conn.prepare_cached("DELETE FROM throttle WHERE key = ?1")
            .map_err(err)?
            .execute(params![key])
            .map_err(err)?;
        Ok(())
    }

    fn read_counter(conn: &Connection, key: &str) -> Result<Counter, CommitError> {
        let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        Ok(conn
            .prepare_cached(
                "SELECT failures, biometric_failures, last_failure, locked FROM throttle WHERE key = ?1",
            )
            .map_err(err)?
            .query_row(params![key], |row| {
                Ok(Counter {
                    failures: clamp(row.get(0)?),
                    biometric_failures: clamp(row.get(1)?),
                    last_failure_ms: row.get(2)?,
                    locked: row.get::<_, i64>(3)? != 0,
                })
            })
            .optional()
            .map_err(err)?
            .unwrap_or_default())
    }

    fn write_counter(conn: &Connection, key: &str, c: &Counter) -> Result<(), CommitError> {
        conn.prepare_cached(
            "INSERT INTO throttle (key, failures, biometric_failures, last_failure, locked) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (key) DO UPDATE SET failures = ?2, biometric_failures = ?3, last_failure = ?4, locked = ?5",
        )
        .map_err(err)?
        .execute(params![
            key,
            i64::from(c.failures),
            i64::from(c.biometric_failures),
            c.last_failure_ms,
            i64::from(c.locked)
        ])
        .map_err(err)?;
        Ok(())
    }

    /// See [`super::complex_finish`].
    fn complex(
        conn: &Connection,
        f: &FinishPlan,
        now_ms: i64,
    ) -> Result<(FinishDone, Vec<Event>), CommitError> {
        consume(conn, f, now_ms)??;
        let mut events = Vec::with_capacity(f.regressions.len());
        for r in &f.regressions {
            let mut suspended = false;
            if r.suspend {
                suspended = conn
                    .prepare_cached(
                        "UPDATE credentials SET state = 'suspended' WHERE id = ?1 AND kind = 'fido2'",
                    )
                    .map_err(err)?
                    .execute(params![r.credential])
                    .map_err(err)?
                    == 1;
            }
            let mut event = r.event.clone();
            event.outcome = if suspended { "suspended" } else { "refused" }.into();
            if let Some(detail) = event.detail.as_object_mut() {
                detail.insert(
                    "state".into(),
                    json!(if suspended { "suspended" } else { "active" }),
                );
            }
            events.push(event);
        }
        for u in &f.counters {
            let done = match (&u.public_data, u.allow_equal) {
                (Some(data), false) => conn
                    .prepare_cached(
                        "UPDATE credentials SET counter = ?1, public_data = ?3, last_used = ?4 WHERE id = ?2 AND counter < ?1",
                    )
                    .map_err(err)?
                    .execute(params![u.value, u.credential, data, now_ms]),
                (Some(data), true) => conn
                    .prepare_cached(
                        "UPDATE credentials SET counter = ?1, public_data = ?3, last_used = ?4 WHERE id = ?2 AND counter <= ?1",
                    )
                    .map_err(err)?
                    .execute(params![u.value, u.credential, data, now_ms]),
                (None, _) => conn
                    .prepare_cached(
                        "UPDATE credentials SET counter = ?1, last_used = ?3 WHERE id = ?2 AND counter < ?1",
                    )
                    .map_err(err)?
                    .execute(params![u.value, u.credential, now_ms]),
            }
            .map_err(err)?;
            if done != 1 {
                return Err(CommitError::Reused);
            }
        }
        if let Some(user_key) = &f.clear {
            clear(conn, user_key)?;
        }
        let failure = match &f.failure {
            Some(fail) => {
                let after = read_counter(conn, &fail.user_key)?.after_failure(
                    &fail.user_key,
                    fail.biometric,
                    &fail.limits,
                    now_ms,
                );
                write_counter(conn, &fail.user_key, &after)?;
                let bucket = read_counter(conn, &fail.ws_key)?.after_fill(now_ms);
                write_counter(conn, &fail.ws_key, &bucket)?;
                Some((after, bucket))
            }
            None => None,
        };
        Ok((FinishDone { failure }, events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clinauth_policy::Purpose;

    fn event(action: &str) -> Event {
        Event {
            at_ms: 0,
            actor: "alice".into(),
            workstation: Some("ws1".into()),
            action: action.into(),
            target: None,
            outcome: "ok".into(),
            detail: json!({}),
        }
    }

    fn job(plan: Plan) -> Job {
        let (reply, _answer) = oneshot::channel();
        (plan, 0, reply)
    }

    fn begin(id: &str) -> Job {
        job(Plan::Begin {
            challenge: Challenge {
                id: id.into(),
                nonce: [0; 32],
                user: "alice".into(),
                workstation: "ws1".into(),
                purpose: Purpose::Login,
                expires_at_ms: 1,
                webauthn: None,
            },
            audit: event("auth.begin"),
        })
    }

    fn name(job: &Job) -> String {
        match &job.0 {
            Plan::Begin { challenge, .. } => challenge.id.clone(),
            Plan::Audit(e) => e.action.clone(),
            Plan::Finish(f) => f.challenge_id.clone(),
        }
    }

    #[test]
    fn contact_times_are_written_when_due_and_only_once_committed() {
        let step = crate::directory::CONTACT_RESOLUTION_MS;
        let mut contacts = Contacts::default();
        let calls = [("ws2", 1_000), ("ws1", 1_000), ("ws1", 1_200)];
        let due = contacts.due(calls.into_iter());
        assert_eq!(due, [("ws1", 1_200), ("ws2", 1_000)]);
        // Not committed: still due.
        assert_eq!(contacts.due(calls.into_iter()), due);
        contacts.written(&due);
        assert!(contacts
            .due([("ws1", 1_200 + step - 1)].into_iter())
            .is_empty());
        assert_eq!(
            contacts.due([("ws1", 1_200 + step), ("ws2", 1_500), ("ws3", 9)].into_iter()),
            [("ws1", 1_200 + step), ("ws3", 9)]
        );
    }

    #[test]
    fn begins_are_deferred_everything_else_durable_each_in_arrival_order() {
        let jobs = vec![
            job(Plan::Audit(event("refusal-1"))),
            begin("b1"),
            job(Plan::Audit(event("refusal-2"))),
            begin("b2"),
        ];
        let [(begins, first), (rest, second)] = split(jobs);
        assert_eq!(first, Durability::Deferred);
        assert_eq!(begins.iter().map(name).collect::<Vec<_>>(), ["b1", "b2"]);
        assert_eq!(second, Durability::Now);
        assert_eq!(
            rest.iter().map(name).collect::<Vec<_>>(),
            ["refusal-1", "refusal-2"]
        );
    }
}
