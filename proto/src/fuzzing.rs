//! Entry points for fuzzing, kept in the library so the seed corpus also
//! runs as an ordinary test (`tests/fuzz_corpus.rs`).

use std::io::{self, Read};

use crate::agent::{Reply, Request};
use crate::envelope::Envelope;
use crate::frame::{encode_frame, Frame, FrameDecoder, FrameError, FrameReader, WireError};

/// Decodes arbitrary bytes as agent-socket traffic and checks invariants.
///
/// The first byte picks a chunk size (1 to 256); the rest is fed in chunks
/// of that size to a [`FrameDecoder`] and, independently, through a
/// [`FrameReader`] over a reader returning at most that many bytes per read.
/// Every frame is then decoded as both a [`Request`] and a [`Reply`].
///
/// # Panics
///
/// Only when an invariant is broken, which is what a fuzzer looks for:
/// the decoder and the reader disagree, a frame breaks the size limit, or
/// a message that decoded does not encode and decode back to itself.
pub fn decode_all(data: &[u8]) -> Summary {
    let mut summary = Summary::default();
    let Some((&first, rest)) = data.split_first() else {
        return summary;
    };
    let chunk = usize::from(first) + 1;
    let from_decoder = with_decoder(rest, chunk);
    let from_reader = with_reader(rest, chunk);
    assert_eq!(from_decoder, from_reader, "decoder and reader disagree");
    for item in &from_decoder {
        match item {
            Ok(frame) => {
                assert!(frame.len() < crate::frame::MAX_FRAME_LEN);
                summary.frames += 1;
                summary.requests += usize::from(check_message::<Request>(frame));
                summary.replies += usize::from(check_message::<Reply>(frame));
            }
            Err(err) => summary.error = Some(err.clone()),
        }
    }
    summary
}

/// What [`decode_all`] found, for tests that check a seed means what its
/// name says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Complete frames.
    pub frames: usize,
    /// Frames that decoded as a request.
    pub requests: usize,
    /// Frames that decoded as a reply.
    pub replies: usize,
    /// The error that ended the stream, if any.
    pub error: Option<FrameError>,
}

/// Frames, then the error that ended the stream, if any.
type Outcome = Vec<Result<Frame, FrameError>>;

fn with_decoder(data: &[u8], chunk: usize) -> Outcome {
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        let mut input = piece;
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(err) => {
                    out.push(Err(err));
                    return out;
                }
            }
        }
    }
    if let Err(err) = decoder.finish() {
        out.push(Err(err));
    }
    out
}

struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        if let Some(dst) = buf.get_mut(..n) {
            dst.copy_from_slice(head);
        }
        self.data = tail;
        Ok(n)
    }
}

fn with_reader(data: &[u8], chunk: usize) -> Outcome {
    let mut reader = FrameReader::new(Trickle { data, chunk });
    let mut out = Vec::new();
    loop {
        match reader.read_frame() {
            Ok(Some(frame)) => out.push(Ok(frame)),
            Ok(None) => return out,
            Err(WireError::Frame(err)) => {
                out.push(Err(err));
                return out;
            }
            // `Trickle` never fails.
            Err(WireError::Io(err)) => unreachable!("in-memory read failed: {err}"),
        }
    }
}

/// Whether `frame` decodes as a `B`; if it does, checks the round trip.
fn check_message<B>(frame: &Frame) -> bool
where
    B: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(envelope) = Envelope::<B>::decode(frame) else {
        return false;
    };
    let encoded = encode_frame(&envelope);
    assert!(
        encoded.is_ok(),
        "accepted message does not encode: {encoded:?}"
    );
    let encoded = encoded.unwrap_or_default();
    let mut input = &encoded[..];
    let again = FrameDecoder::new()
        .decode(&mut input)
        .ok()
        .flatten()
        .and_then(|f| Envelope::<B>::decode(&f).ok());
    assert!(input.is_empty(), "re-encoded message is not one frame");
    assert_eq!(
        again.as_ref(),
        Some(&envelope),
        "round trip changed the message"
    );
    true
}

/// Arbitrary bytes as the server-signed tokens and the app-supplied fields
/// of clinical-app operations: tickets, confirmations and offline bundles
/// are verified with a fixed key (never valid, never a panic); digests,
/// record IDs, actions and summaries are parsed.
///
/// # Panics
///
/// Only when an invariant is broken: a forged token verifies, or a field
/// that parsed does not print back to what was parsed.
pub fn tokens(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let key = [7u8; 32];
    assert!(crate::ticket::verify(&text, &key, 1_800_000_000).is_err());
    assert!(crate::confirmation::verify(&text, &key).is_err());
    assert!(crate::offline::verify(&text, &key).is_err());
    let _ = crate::ticket::key_id(&text);
    if let Ok(d) = crate::records::Digest::parse(&text) {
        assert_eq!(d.to_string(), text, "digest does not round-trip");
        assert_eq!(d.bytes().len(), d.alg().digest_len());
    }
    if let Ok(id) = crate::records::RecordId::new(&text) {
        assert_eq!(id.as_str(), text);
    }
    if let Ok(a) = crate::records::Action::new(&text) {
        assert_eq!(a.as_str(), text);
    }
    if let Ok(s) = crate::records::Summary::new(&text) {
        assert_eq!(s.as_str(), text);
    }
    let _ = serde_json::from_str::<crate::records::Operation>(&text);
    let _ = serde_json::from_str::<crate::records::RecordView>(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_tiny_inputs() {
        assert_eq!(decode_all(b""), Summary::default());
        assert_eq!(decode_all(b"\x00"), Summary::default());
        assert_eq!(decode_all(b"\x00\n").error, Some(FrameError::Empty));
        let status = decode_all(b"\x05{\"v\":1,\"id\":1,\"body\":{\"type\":\"status\"}}\n");
        assert_eq!(
            status,
            Summary {
                frames: 1,
                requests: 1,
                replies: 0,
                error: None
            }
        );
    }

    #[test]
    fn decoder_and_reader_agree_on_errors() {
        let mut big = vec![0u8];
        big.extend(vec![b'x'; crate::frame::MAX_FRAME_LEN + 3]);
        assert_eq!(with_decoder(&big[1..], 1), vec![Err(FrameError::TooLarge)]);
        decode_all(&big);
        let out = with_reader(b"{}\n\xff\n", 2);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], Err(FrameError::InvalidUtf8));
    }
}
