//! Framing on the agent socket: one JSON document per line.
//!
//! A frame is UTF-8 JSON followed by `\n`; its length, newline included, is
//! at most [`MAX_FRAME_LEN`]. Compact JSON never contains a raw newline
//! (serde_json escapes it inside strings), so the newline is an unambiguous
//! delimiter.
//!
//! Refused, each with a [`FrameError`]:
//! - a line longer than the limit, as soon as more than `MAX_FRAME_LEN - 1`
//!   bytes are buffered without a newline (nothing past the limit is kept);
//! - a line that is not UTF-8;
//! - an empty line: there are no keep-alives, so an empty line is a peer
//!   bug and is refused rather than skipped;
//! - end of stream in the middle of a frame.
//!
//! JSON nesting depth is bounded by serde_json's recursion limit (128), so
//! a deeply nested frame is a `Malformed` error, not a stack overflow.
//!
//! Frames can carry secrets (an `answer` holds a PIN), so every buffer here
//! is a `Zeroizing` one and grows by copying into a fresh zeroizing buffer,
//! never by a reallocation that would leave a copy behind.

use std::fmt;
use std::io::{self, Read, Write};

use serde::Serialize;
use thiserror::Error;
use zeroize::Zeroizing;

/// Longest frame, in bytes, including the trailing `\n`.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// A frame could not be read, decoded or encoded.
///
/// Every one of these ends the connection (see
/// [`ErrorCode::closes_connection`](crate::agent::ErrorCode::closes_connection)).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is longer than [`MAX_FRAME_LEN`].
    #[error("frame longer than {MAX_FRAME_LEN} bytes")]
    TooLarge,
    /// The frame is not valid UTF-8.
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    /// An empty line.
    #[error("empty frame")]
    Empty,
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame")]
    Truncated,
    /// The frame is not a valid message: bad JSON, unknown field or type,
    /// a field out of its limits. The detail never contains a secret.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The envelope's `v` is not [`PROTOCOL_VERSION`](crate::envelope::PROTOCOL_VERSION).
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u64),
}

/// An error reading or writing frames on a stream.
#[derive(Debug, Error)]
pub enum WireError {
    /// The stream failed (including read/write timeouts).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The bytes were not an acceptable frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// One complete frame: valid UTF-8, not empty, without its `\n`.
///
/// Wiped when dropped; `Debug` shows only the length because a frame may
/// hold a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Zeroizing<String>);

impl Frame {
    /// Checks UTF-8 and emptiness of one line (without its newline).
    fn from_line(mut line: Zeroizing<Vec<u8>>) -> Result<Self, FrameError> {
        if line.is_empty() {
            return Err(FrameError::Empty);
        }
        // Moving the Vec out of its wrapper does not copy the bytes; on
        // error they are wrapped again so they are still wiped.
        match String::from_utf8(std::mem::take(&mut *line)) {
            Ok(text) => Ok(Self(Zeroizing::new(text))),
            Err(err) => {
                drop(Zeroizing::new(err.into_bytes()));
                Err(FrameError::InvalidUtf8)
            }
        }
    }

    /// The frame's JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in bytes, without the newline.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: empty frames are refused. Here for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame([{} bytes])", self.0.len())
    }
}

/// Appends `data` to `buf`, growing it by copying into a new zeroizing
/// buffer (the old one is wiped when dropped) so no stale copy is freed
/// unwiped.
fn extend_zeroizing(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let needed = buf.len().saturating_add(data.len());
    if needed > buf.capacity() {
        let new_cap = buf
            .capacity()
            .saturating_mul(2)
            .clamp(256, MAX_FRAME_LEN)
            .max(needed);
        let mut grown = Zeroizing::new(Vec::with_capacity(new_cap));
        grown.extend_from_slice(buf);
        std::mem::swap(buf, &mut grown);
    }
    buf.extend_from_slice(data);
}

/// Incremental frame decoder: feed it bytes as they arrive, take complete
/// frames out.
///
/// It buffers at most one incomplete frame, never more than
/// `MAX_FRAME_LEN - 1` bytes. After the first error it is finished: every
/// later call returns that error again (the connection is to be closed).
#[derive(Default)]
pub struct FrameDecoder {
    partial: Zeroizing<Vec<u8>>,
    failed: Option<FrameError>,
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.partial.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl FrameDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes bytes from the front of `input` and returns the next complete
    /// frame, if there is one.
    ///
    /// On `Ok(Some(frame))`, `input` is advanced past that frame's newline
    /// and may still hold more bytes: call again. On `Ok(None)`, all of
    /// `input` has been consumed into the decoder's buffer.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.decode_inner(input);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            // Drop whatever was buffered (and wipe it).
            self.partial = Zeroizing::new(Vec::new());
        }
        result
    }

    fn decode_inner(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        let data = *input;
        match data.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                let (line, rest) = data.split_at(newline);
                *input = rest.get(1..).unwrap_or_default();
                // +1 for the newline itself.
                if self.partial.len() + line.len() + 1 > MAX_FRAME_LEN {
                    return Err(FrameError::TooLarge);
                }
                extend_zeroizing(&mut self.partial, line);
                let bytes = Zeroizing::new(std::mem::take(&mut *self.partial));
                Frame::from_line(bytes).map(Some)
            }
            None => {
                *input = &[];
                // Even if the next byte were the newline, the frame would be
                // `partial + data + 1` long: refuse now, not at the newline.
                if self.partial.len() + data.len() + 1 > MAX_FRAME_LEN {
                    return Err(FrameError::TooLarge);
                }
                extend_zeroizing(&mut self.partial, data);
                Ok(None)
            }
        }
    }

    /// Call at end of stream: an error if a frame was left incomplete (or
    /// the decoder had already failed).
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }

    /// Bytes of an incomplete frame held now.
    pub fn buffered_len(&self) -> usize {
        self.partial.len()
    }
}

/// Size of the read buffer of a [`FrameReader`].
const READ_CHUNK: usize = 4096;

/// Reads frames from a blocking stream, with the same limits as
/// [`FrameDecoder`] (it uses one).
///
/// Its read buffer is zeroizing, unlike `BufReader`'s, because frames carry
/// secrets. Reads are bounded: at most 4 KiB per `read` call, and a frame
/// over the limit fails as soon as the limit is passed.
pub struct FrameReader<R> {
    inner: R,
    buf: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
    decoder: FrameDecoder,
}

impl<R> fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReader")
            .field("pending", &(self.end - self.start))
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

impl<R: Read> FrameReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Zeroizing::new(vec![0; READ_CHUNK]),
            start: 0,
            end: 0,
            decoder: FrameDecoder::new(),
        }
    }

    /// Reads the next frame. `Ok(None)` is a clean end of stream (between
    /// frames). A read timeout comes back as `WireError::Io` with kind
    /// `WouldBlock` or `TimedOut`; a partial frame read so far is kept, so
    /// calling again continues it.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            if self.start < self.end {
                let pending = self.buf.get(self.start..self.end).unwrap_or_default();
                let mut rest = pending;
                let result = self.decoder.decode(&mut rest);
                self.start = self.end - rest.len();
                if let Some(frame) = result? {
                    return Ok(Some(frame));
                }
            }
            match self.inner.read(&mut self.buf) {
                Ok(0) => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
                Ok(n) => {
                    self.start = 0;
                    self.end = n.min(self.buf.len());
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped stream, mutably (for example to shut it down).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// A `Write` into a pre-allocated zeroizing buffer that refuses to grow past
/// [`MAX_FRAME_LEN`] - 1 bytes, so encoding stops early and never
/// reallocates.
struct BoundedWriter {
    buf: Zeroizing<Vec<u8>>,
    overflowed: bool,
}

impl Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() >= MAX_FRAME_LEN {
            self.overflowed = true;
            return Err(io::Error::other("frame too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encodes `message` as one frame (compact JSON and `\n`).
///
/// Refuses with [`FrameError::TooLarge`] a message whose frame would exceed
/// [`MAX_FRAME_LEN`]. The result is wiped when dropped.
pub fn encode_frame<T: Serialize + ?Sized>(message: &T) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut writer = BoundedWriter {
        buf: Zeroizing::new(Vec::with_capacity(MAX_FRAME_LEN)),
        overflowed: false,
    };
    if let Err(err) = serde_json::to_writer(&mut writer, message) {
        return Err(if writer.overflowed {
            FrameError::TooLarge
        } else {
            FrameError::Malformed(format!("cannot encode: {err}"))
        });
    }
    // Room for the newline is guaranteed by `BoundedWriter`'s `>=` check.
    writer.buf.push(b'\n');
    Ok(writer.buf)
}

/// Encodes `message` and writes it as one frame, then flushes.
pub fn write_frame<W: Write + ?Sized, T: Serialize + ?Sized>(
    writer: &mut W,
    message: &T,
) -> Result<(), WireError> {
    let bytes = encode_frame(message)?;
    writer.write_all(&bytes)?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a fresh decoder in pieces of `chunk` bytes and
    /// returns frames and the first error.
    fn decode_chunked(input: &[u8], chunk: usize) -> (Vec<String>, Option<FrameError>) {
        let mut decoder = FrameDecoder::new();
        let mut frames = Vec::new();
        for piece in input.chunks(chunk) {
            let mut rest = piece;
            loop {
                match decoder.decode(&mut rest) {
                    Ok(Some(f)) => frames.push(f.as_str().to_owned()),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
            assert!(rest.is_empty());
            assert!(decoder.buffered_len() < MAX_FRAME_LEN);
        }
        (frames, decoder.finish().err())
    }

    fn line_of_len(total_with_newline: usize) -> Vec<u8> {
        let mut v = vec![b'x'; total_with_newline - 1];
        v.push(b'\n');
        v
    }

    #[test]
    fn several_frames_in_one_read() {
        let (frames, err) = decode_chunked(b"{\"a\":1}\n{\"b\":2}\n[3]\n", 4096);
        assert_eq!(frames, vec!["{\"a\":1}", "{\"b\":2}", "[3]"]);
        assert_eq!(err, None);
    }

    #[test]
    fn bytes_arriving_one_at_a_time() {
        let input = "{\"text\":\"暗証番号\"}\n{}\n".as_bytes();
        let (frames, err) = decode_chunked(input, 1);
        assert_eq!(frames, vec!["{\"text\":\"暗証番号\"}", "{}"]);
        assert_eq!(err, None);
    }

    #[test]
    fn exactly_the_limit_is_accepted() {
        let line = line_of_len(MAX_FRAME_LEN);
        for chunk in [1, 7, 4096, MAX_FRAME_LEN] {
            let (frames, err) = decode_chunked(&line, chunk);
            assert_eq!(err, None, "chunk {chunk}");
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].len(), MAX_FRAME_LEN - 1);
        }
    }

    #[test]
    fn one_over_the_limit_is_refused() {
        let line = line_of_len(MAX_FRAME_LEN + 1);
        for chunk in [1, 7, 4096, MAX_FRAME_LEN + 1] {
            let (frames, err) = decode_chunked(&line, chunk);
            assert!(frames.is_empty());
            assert_eq!(err, Some(FrameError::TooLarge), "chunk {chunk}");
        }
    }

    #[test]
    fn too_large_detected_before_newline() {
        let mut decoder = FrameDecoder::new();
        let mut almost = &[b'x'; MAX_FRAME_LEN - 1][..];
        assert_eq!(decoder.decode(&mut almost), Ok(None));
        assert_eq!(decoder.buffered_len(), MAX_FRAME_LEN - 1);
        // One more non-newline byte: no newline can make this fit any more.
        let mut one = &b"x"[..];
        assert_eq!(decoder.decode(&mut one), Err(FrameError::TooLarge));
        assert_eq!(decoder.buffered_len(), 0);
        // Finished: the error sticks, even for valid input.
        let mut valid = &b"{}\n"[..];
        assert_eq!(decoder.decode(&mut valid), Err(FrameError::TooLarge));
        assert_eq!(decoder.finish(), Err(FrameError::TooLarge));
    }

    #[test]
    fn frames_before_an_oversized_one_are_delivered() {
        let mut input = b"{}\n".to_vec();
        input.extend(vec![b'y'; MAX_FRAME_LEN + 10]);
        let (frames, err) = decode_chunked(&input, 1000);
        assert_eq!(frames, vec!["{}"]);
        assert_eq!(err, Some(FrameError::TooLarge));
    }

    #[test]
    fn invalid_utf8_refused() {
        let (frames, err) = decode_chunked(b"{\"a\":\"\xff\xfe\"}\n", 3);
        assert!(frames.is_empty());
        assert_eq!(err, Some(FrameError::InvalidUtf8));
        // A multi-byte character split across reads is fine.
        let (frames, err) = decode_chunked("\"ß\"\n".as_bytes(), 2);
        assert_eq!(frames, vec!["\"ß\""]);
        assert_eq!(err, None);
    }

    #[test]
    fn empty_line_refused() {
        let (frames, err) = decode_chunked(b"{}\n\n{}\n", 100);
        assert_eq!(frames, vec!["{}"]);
        assert_eq!(err, Some(FrameError::Empty));
    }

    #[test]
    fn truncated_at_end_of_stream() {
        let (frames, err) = decode_chunked(b"{}\n{\"a\":", 2);
        assert_eq!(frames, vec!["{}"]);
        assert_eq!(err, Some(FrameError::Truncated));
        assert_eq!(FrameDecoder::new().finish(), Ok(()));
    }

    #[test]
    fn encode_refuses_oversized() {
        // A JSON string of n bytes encodes to n + 2 quotes + newline.
        let fits = "z".repeat(MAX_FRAME_LEN - 3);
        let frame = encode_frame(&fits).unwrap();
        assert_eq!(frame.len(), MAX_FRAME_LEN);
        assert_eq!(frame.last(), Some(&b'\n'));
        let over = "z".repeat(MAX_FRAME_LEN - 2);
        assert_eq!(encode_frame(&over), Err(FrameError::TooLarge));
    }

    #[test]
    fn encoded_frames_have_no_inner_newline() {
        let frame = encode_frame(&serde_json::json!({"t": "a\nb\r\nc"})).unwrap();
        assert_eq!(frame.iter().filter(|&&b| b == b'\n').count(), 1);
        let (frames, err) = decode_chunked(&frame, 5);
        assert_eq!(err, None);
        assert_eq!(frames, vec![r#"{"t":"a\nb\r\nc"}"#]);
    }

    /// A reader that hands out at most `chunk` bytes per call and can
    /// report an error once.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
        interrupt_once: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.interrupt_once {
                self.interrupt_once = false;
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = self.chunk.min(out.len()).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn reader_reads_frames_then_eof() {
        let data = b"{\"a\":1}\n{\"b\":2}\n".to_vec();
        let mut reader = FrameReader::new(Trickle {
            data,
            pos: 0,
            chunk: 3,
            interrupt_once: true,
        });
        assert_eq!(reader.read_frame().unwrap().unwrap().as_str(), "{\"a\":1}");
        assert_eq!(reader.read_frame().unwrap().unwrap().as_str(), "{\"b\":2}");
        assert!(reader.read_frame().unwrap().is_none());
        assert!(reader.read_frame().unwrap().is_none());
    }

    #[test]
    fn reader_stops_at_the_limit() {
        // An endless stream without a newline: the reader must give up
        // after the limit instead of reading forever.
        let mut reader = FrameReader::new(io::repeat(b'a'));
        match reader.read_frame() {
            Err(WireError::Frame(FrameError::TooLarge)) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn reader_reports_truncation() {
        let mut reader = FrameReader::new(&b"{\"a\":1"[..]);
        match reader.read_frame() {
            Err(WireError::Frame(FrameError::Truncated)) => {}
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn write_frame_writes_one_line() {
        let mut out = Vec::new();
        write_frame(&mut out, &serde_json::json!({"k": [1, 2]})).unwrap();
        assert_eq!(out, b"{\"k\":[1,2]}\n");
    }

    #[test]
    fn frame_debug_hides_content() {
        let mut input = &b"{\"value\":\"493817\"}\n"[..];
        let frame = FrameDecoder::new().decode(&mut input).unwrap().unwrap();
        let shown = format!("{frame:?}");
        assert!(!shown.contains("493817"), "{shown}");
    }
}
