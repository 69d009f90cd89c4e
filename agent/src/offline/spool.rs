//! The durable event spool: every audit event of the agent, appended to a
//! file in the state directory until the server has acknowledged it.
//!
//! # Files (in `<state_dir>/spool`, 0700; files 0600)
//!
//! - `stream`: the stream ID, 32 hex digits, drawn once when the spool is
//!   created (see `clinauth_proto::events`);
//! - `acked`: the highest sequence number the server has acknowledged
//!   (decimal), replaced atomically;
//! - `events.log`: the records not yet acknowledged, in sequence order.
//!
//! # Record
//!
//! `len: u32 BE | seq: u64 BE | payload (len bytes, the event's JSON) |
//! check: 16 bytes`, where `check` is the first 16 bytes of
//! SHA-256(`"clinauth-spool-v1\0"` ‖ len ‖ seq ‖ payload). At most
//! [`MAX_PAYLOAD`] bytes of payload.
//!
//! # Durability and recovery
//!
//! An append is one `write` at the end of the file; an event that gates an
//! allow (offline decisions) is followed by `fdatasync` before the caller
//! goes on, and every record is synced before it is uploaded. A write that
//! fails is cut off again (the file is truncated back), so a torn record
//! can only ever be the last one: at open, the file is read from the start
//! and cut at the first record that is incomplete, fails its check, or does
//! not follow in sequence (the cut bytes are kept aside in
//! `discarded-<time>.bin` for inspection).
//!
//! Sequence numbers continue across restarts and compaction: the next one
//! is one above both the last record and `acked`. Compaction (dropping
//! acknowledged records) happens only after `acked` is durably written.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clinauth_proto::events::{
    AgentEventRecord, EventBatch, MAX_BATCH_EVENTS, MAX_EVENTS_BODY_BYTES,
};

use super::fsutil;

/// The largest payload of one record.
pub const MAX_PAYLOAD: usize = 16 * 1024;
const HEADER: usize = 4 + 8;
const CHECK: usize = 16;
const DOMAIN: &[u8] = b"clinauth-spool-v1\0";
const LOG: &str = "events.log";
const STREAM: &str = "stream";
const ACKED: &str = "acked";

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("event spool {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A state file holds something else.
    #[error("event spool: {0}")]
    Corrupt(String),
    /// The spool has reached its size limit.
    #[error(
        "the event spool is full ({0} bytes): the server has not taken events for a long time"
    )]
    Full(u64),
    /// An earlier write could not be undone; the spool refuses more until
    /// the agent restarts (and recovers the file).
    #[error("the event spool is broken after a failed write; restart the agent")]
    Broken,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check(len: u32, seq: u64, payload: &[u8]) -> [u8; CHECK] {
    let mut msg = Vec::with_capacity(DOMAIN.len() + HEADER + payload.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(payload);
    let digest = clinauth_factors::card::sha256(&msg);
    let mut out = [0u8; CHECK];
    out.copy_from_slice(digest.get(..CHECK).unwrap_or(&[0u8; CHECK]));
    out
}

/// Encodes one record.
pub fn encode(seq: u64, payload: &[u8]) -> Result<Vec<u8>, SpoolError> {
    if payload.is_empty() || payload.len() > MAX_PAYLOAD {
        return Err(SpoolError::Corrupt(format!(
            "an event of {} bytes (1 to {MAX_PAYLOAD})",
            payload.len()
        )));
    }
    let len = u32::try_from(payload.len()).map_err(|_| SpoolError::Corrupt("length".into()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len() + CHECK);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&check(len, seq, payload));
    Ok(out)
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its size in the file.
    pub size: u64,
}

/// Reads the next record; `Ok(None)` at a clean end, `Err(())` at a torn or
/// corrupt record.
fn read_record(r: &mut impl Read) -> io::Result<Result<Option<Record>, ()>> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = r.read(header.get_mut(got..).unwrap_or(&mut []))?;
        if n == 0 {
            return Ok(if got == 0 { Ok(None) } else { Err(()) });
        }
        got += n;
    }
    let (len_bytes, seq_bytes) = header.split_at(4);
    let len = u32::from_be_bytes(len_bytes.try_into().unwrap_or([0xff; 4]));
    let seq = u64::from_be_bytes(seq_bytes.try_into().unwrap_or([0; 8]));
    let size = len as usize;
    if size == 0 || size > MAX_PAYLOAD || seq == 0 {
        return Ok(Err(()));
    }
    let mut rest = vec![0u8; size + CHECK];
    if let Err(e) = r.read_exact(&mut rest) {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(Err(()))
        } else {
            Err(e)
        };
    }
    let (payload, sum) = rest.split_at(size);
    if sum != check(len, seq, payload) {
        return Ok(Err(()));
    }
    Ok(Ok(Some(Record {
        seq,
        payload: payload.to_vec(),
        size: (HEADER + size + CHECK) as u64,
    })))
}

/// The spool. Not thread-safe by itself: the caller holds it in a mutex.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    log_path: PathBuf,
    log: File,
    stream: String,
    /// The next sequence number to give.
    next_seq: u64,
    /// The highest acknowledged.
    acked: u64,
    /// Bytes in the log.
    len: u64,
    /// Records in the log (all unacknowledged once open).
    count: u64,
    /// Bytes written since the last fsync.
    dirty: bool,
    broken: bool,
    max_bytes: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, recovering a torn tail.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fsutil::private_dir(dir).map_err(io_at(dir))?;
        let stream_path = dir.join(STREAM);
        let stream = match fsutil::read_limited(&stream_path, 64).map_err(io_at(&stream_path))? {
            Some(bytes) => {
                let text = String::from_utf8(bytes).unwrap_or_default();
                let text = text.trim().to_owned();
                if !clinauth_proto::events::is_stream_id(&text) {
                    return Err(SpoolError::Corrupt(format!(
                        "{} does not hold a stream ID",
                        stream_path.display()
                    )));
                }
                text
            }
            None => {
                let id = fsutil::hex(&fsutil::random::<16>().map_err(io_at(&stream_path))?);
                fsutil::write_atomic(&stream_path, format!("{id}\n").as_bytes())
                    .map_err(io_at(&stream_path))?;
                id
            }
        };
        let acked_path = dir.join(ACKED);
        let acked = match fsutil::read_limited(&acked_path, 64).map_err(io_at(&acked_path))? {
            Some(bytes) => String::from_utf8(bytes)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    SpoolError::Corrupt(format!("{} does not hold a number", acked_path.display()))
                })?,
            None => 0,
        };
        let log_path = dir.join(LOG);
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_at(&log_path))?;
        let (valid, last, count, stale) = Self::scan(&mut log, &log_path, acked)?;
        let total = log.metadata().map_err(io_at(&log_path))?.len();
        if total > valid {
            Self::discard_tail(dir, &log, valid, total, &log_path)?;
        }
        let mut spool = Spool {
            dir: dir.to_owned(),
            log_path,
            log,
            stream,
            next_seq: last.max(acked).saturating_add(1),
            acked,
            len: valid,
            count,
            dirty: false,
            broken: false,
            max_bytes,
        };
        if stale > 0 {
            // Acknowledged before a crash, not yet compacted away.
            spool.compact()?;
        }
        Ok(spool)
    }

    /// Reads every record: (valid length, last seq, unacked count, acked records still present).
    fn scan(log: &mut File, path: &Path, acked: u64) -> Result<(u64, u64, u64, u64), SpoolError> {
        log.seek(SeekFrom::Start(0)).map_err(io_at(path))?;
        let mut reader = io::BufReader::new(&*log);
        let (mut valid, mut last, mut count, mut stale) = (0u64, 0u64, 0u64, 0u64);
        loop {
            match read_record(&mut reader).map_err(io_at(path))? {
                Ok(Some(r)) if r.seq > last => {
                    valid += r.size;
                    last = r.seq;
                    if r.seq <= acked {
                        stale += 1;
                    } else {
                        count += 1;
                    }
                }
                Ok(None) => break,
                // Torn, corrupt, or out of order: the tail from here is cut.
                Ok(Some(_)) | Err(()) => break,
            }
        }
        Ok((valid, last, count, stale))
    }

    fn discard_tail(
        dir: &Path,
        log: &File,
        valid: u64,
        total: u64,
        path: &Path,
    ) -> Result<(), SpoolError> {
        let mut tail = Vec::new();
        let mut f = log.try_clone().map_err(io_at(path))?;
        f.seek(SeekFrom::Start(valid)).map_err(io_at(path))?;
        f.take(16 * 1024 * 1024)
            .read_to_end(&mut tail)
            .map_err(io_at(path))?;
        let aside = dir.join(format!("discarded-{}.bin", crate::clock::now_ms()));
        if let Err(e) = fsutil::write_atomic(&aside, &tail) {
            tracing::warn!(error = %e, "could not keep the discarded spool tail");
        }
        tracing::warn!(
            bytes = total - valid,
            kept = %aside.display(),
            "event spool: a torn or corrupt tail was cut off"
        );
        log.set_len(valid).map_err(io_at(path))?;
        log.sync_all().map_err(io_at(path))
    }

    /// The stream ID.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Events not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.count
    }

    /// The highest acknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends `event` (its `seq` is set here) and returns its sequence
    /// number; with `durable`, the record is on disk when this returns.
    pub fn append(
        &mut self,
        event: &mut AgentEventRecord,
        durable: bool,
    ) -> Result<u64, SpoolError> {
        if self.broken {
            return Err(SpoolError::Broken);
        }
        event.seq = self.next_seq;
        event.clamp();
        let payload = serde_json::to_vec(&*event)
            .map_err(|e| SpoolError::Corrupt(format!("encoding an event: {e}")))?;
        let record = encode(event.seq, &payload)?;
        if self.len + record.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full(self.len));
        }
        if let Err(e) = self.log.write_all(&record) {
            // Cut the partial record off, so that it is never followed by another.
            if self.log.set_len(self.len).is_err() {
                self.broken = true;
            }
            return Err(SpoolError::Io {
                path: self.log_path.clone(),
                source: e,
            });
        }
        self.len += record.len() as u64;
        self.count += 1;
        self.next_seq += 1;
        self.dirty = true;
        if durable {
            self.sync()?;
        }
        Ok(event.seq)
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.dirty {
            self.log.sync_data().map_err(io_at(&self.log_path))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Reads every record still in the log, in order.
    pub fn records(&self) -> Result<Vec<Record>, SpoolError> {
        self.read_records(usize::MAX, u64::MAX)
    }

    fn read_records(&self, max: usize, max_bytes: u64) -> Result<Vec<Record>, SpoolError> {
        let mut file = File::open(&self.log_path).map_err(io_at(&self.log_path))?;
        let mut reader = io::BufReader::new(&mut file).take(self.len);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        while out.len() < max {
            match read_record(&mut reader).map_err(io_at(&self.log_path))? {
                Ok(Some(r)) => {
                    if r.seq <= self.acked {
                        continue;
                    }
                    bytes += r.size;
                    if bytes > max_bytes && !out.is_empty() {
                        break;
                    }
                    out.push(r);
                }
                Ok(None) => break,
                Err(()) => {
                    return Err(SpoolError::Corrupt(
                        "a record changed on disk since it was written".into(),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The next batch to upload (synced first: the server must never hold
    /// an event the workstation could still lose and number again).
    pub fn next_batch(&mut self) -> Result<Option<EventBatch>, SpoolError> {
        if self.count == 0 {
            return Ok(None);
        }
        self.sync()?;
        // JSON in the batch is about the size of the payload; keep a margin.
        let budget = (MAX_EVENTS_BODY_BYTES as u64) * 3 / 4;
        let records = self.read_records(MAX_BATCH_EVENTS, budget)?;
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            let mut event: AgentEventRecord = serde_json::from_slice(&r.payload).map_err(|e| {
                SpoolError::Corrupt(format!("record {} is not an event: {e}", r.seq))
            })?;
            event.seq = r.seq;
            events.push(event);
        }
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(EventBatch {
            stream: self.stream.clone(),
            events,
        }))
    }

    /// The server holds every event up to `up_to`: remember it durably,
    /// then drop those records.
    pub fn ack(&mut self, up_to: u64) -> Result<(), SpoolError> {
        let last = self.next_seq.saturating_sub(1);
        let up_to = if up_to > last {
            tracing::warn!(
                up_to,
                last,
                "the server acknowledged events this agent never sent"
            );
            last
        } else {
            up_to
        };
        if up_to <= self.acked {
            return Ok(());
        }
        let path = self.dir.join(ACKED);
        fsutil::write_atomic(&path, format!("{up_to}\n").as_bytes()).map_err(io_at(&path))?;
        self.acked = up_to;
        self.compact()
    }

    /// Drops the acknowledged records from the log.
    fn compact(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let keep = self.read_records(usize::MAX, u64::MAX)?;
        if keep.is_empty() {
            self.log.set_len(0).map_err(io_at(&self.log_path))?;
            self.log.sync_all().map_err(io_at(&self.log_path))?;
            self.len = 0;
            self.count = 0;
            return Ok(());
        }
        let mut bytes = Vec::new();
        for r in &keep {
            bytes.extend_from_slice(&encode(r.seq, &r.payload)?);
        }
        fsutil::write_atomic(&self.log_path, &bytes).map_err(io_at(&self.log_path))?;
        self.log = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io_at(&self.log_path))?;
        self.len = bytes.len() as u64;
        self.count = keep.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir() -> Dir {
        Dir(std::env::temp_dir().join(format!(
            "clinauth-spool-{}",
            fsutil::hex(&fsutil::random::<8>().unwrap())
        )))
    }

    fn event(detail: &str) -> AgentEventRecord {
        AgentEventRecord {
            seq: 0,
            at_ms: 1_800_000_000_000,
            kind: "authenticate".into(),
            outcome: "allow".into(),
            user: Some("nurse.tanaka".into()),
            purpose: None,
            peer: None,
            service: None,
            detail: detail.into(),
            offline: false,
            rule: None,
            factors: vec![],
            review: false,
        }
    }

    fn details(spool: &mut Spool) -> Vec<(u64, String)> {
        spool
            .next_batch()
            .unwrap()
            .map(|b| b.events.into_iter().map(|e| (e.seq, e.detail)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn order_restart_and_ack() {
        let d = dir();
        let mut s = Spool::open(&d.0, 1 << 20).unwrap();
        let stream = s.stream().to_owned();
        for i in 1..=5 {
            assert_eq!(s.append(&mut event(&format!("e{i}")), i == 5).unwrap(), i);
        }
        drop(s);
        let mut s = Spool::open(&d.0, 1 << 20).unwrap();
        assert_eq!(s.stream(), stream);
        assert_eq!(s.pending(), 5);
        let got = details(&mut s);
        assert_eq!(
            got,
            (1..=5).map(|i| (i, format!("e{i}"))).collect::<Vec<_>>()
        );
        s.ack(3).unwrap();
        assert_eq!(s.pending(), 2);
        assert_eq!(details(&mut s), vec![(4, "e4".into()), (5, "e5".into())]);
        // A replayed acknowledgement changes nothing.
        s.ack(2).unwrap();
        assert_eq!(s.pending(), 2);
        s.append(&mut event("e6"), false).unwrap();
        drop(s);
        let mut s = Spool::open(&d.0, 1 << 20).unwrap();
        assert_eq!(
            details(&mut s).iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        s.ack(6).unwrap();
        assert_eq!(s.pending(), 0);
        assert!(s.next_batch().unwrap().is_none());
        assert_eq!(std::fs::metadata(d.0.join(LOG)).unwrap().len(), 0);
        drop(s);
        // Sequence numbers continue after everything was compacted away.
        let mut s = Spool::open(&d.0, 1 << 20).unwrap();
        assert_eq!(s.append(&mut event("e7"), true).unwrap(), 7);
        // An acknowledgement beyond what exists is capped.
        s.ack(100).unwrap();
        assert_eq!(s.acked(), 7);
        assert_eq!(s.next_seq(), 8);
        for f in [LOG, STREAM, ACKED] {
            let mode = std::fs::metadata(d.0.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    #[test]
    fn torn_tail_is_cut_and_numbering_continues() {
        let d = dir();
        let mut s = Spool::open(&d.0, 1 << 20).unwrap();
        for i in 1..=3 {
            s.append(&mut event(&format!("e{i}")), true).unwrap();
        }
        drop(s);
        let path = d.0.join(LOG);
        let full = std::fs::read(&path).unwrap();
        // Every possible torn length of a fourth record.
        let fourth = encode(
            4,
            br#"{"seq":4,"at_ms":1,"kind":"x","outcome":"y","detail":""}"#,
        )
        .unwrap();
        for cut in 1..fourth.len() {
            let mut bytes = full.clone();
            bytes.extend_from_slice(&fourth[..cut]);
            std::fs::write(&path, &bytes).unwrap();
            let mut s = Spool::open(&d.0, 1 << 20).unwrap();
            assert_eq!(s.pending(), 3, "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), full.len() as u64);
            assert_eq!(s.next_seq(), 4);
            assert_eq!(details(&mut s).len(), 3);
        }
        // A flipped bit in the last record: it is cut, the others stay.
        let mut bytes = full.clone();
        let last = bytes.len() - CHECK - 3;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let mut s = Spool::open(&d.0, 1 << 20).unwrap();
        assert_eq!(
            details(&mut s).iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(s.append(&mut event("again"), true).unwrap(), 3);
        let discarded = std::fs::read_dir(&d.0)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("discarded-")
            })
            .count();
        assert!(discarded >= 1);
    }

    #[test]
    fn crash_between_ack_and_compaction() {
        let d = dir();
        let mut s = Spool::open(&d.0, 1 << 20).unwrap();
        for i in 1..=4 {
            s.append(&mut event(&format!("e{i}")), true).unwrap();
        }
        drop(s);
        // The acknowledgement reached the disk, the compaction did not.
        fsutil::write_atomic(&d.0.join(ACKED), b"2\n").unwrap();
        let mut s = Spool::open(&d.0, 1 << 20).unwrap();
        assert_eq!(s.pending(), 2);
        assert_eq!(
            details(&mut s).iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(s.records().unwrap().len(), 2);
    }

    #[test]
    fn limits_and_batches() {
        let d = dir();
        let mut s = Spool::open(&d.0, 4096).unwrap();
        let mut n = 0;
        loop {
            match s.append(&mut event("x"), false) {
                Ok(_) => n += 1,
                Err(SpoolError::Full(_)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(n > 5);
        let d2 = dir();
        let mut s = Spool::open(&d2.0, 1 << 30).unwrap();
        for _ in 0..250 {
            s.append(&mut event(&"y".repeat(900)), false).unwrap();
        }
        let batch = s.next_batch().unwrap().unwrap();
        assert!(batch.events.len() <= MAX_BATCH_EVENTS);
        batch.check().unwrap();
        assert!(serde_json::to_vec(&batch).unwrap().len() < MAX_EVENTS_BODY_BYTES);
        // A corrupt stream file stops the agent rather than start a new stream.
        std::fs::write(d2.0.join(STREAM), b"nonsense").unwrap();
        assert!(matches!(
            Spool::open(&d2.0, 1 << 30),
            Err(SpoolError::Corrupt(_))
        ));
    }
}
