//! The agent's side of the socket: read a request, write a reply, and the
//! error to send before closing when a frame cannot be read.
//!
//! A connection loop looks like:
//!
//! ```no_run
//! # use std::os::unix::net::UnixStream;
//! # use clinauth_proto::frame::FrameReader;
//! # use clinauth_proto::serve::{read_request, rejection, write_reply};
//! # use clinauth_proto::frame::write_frame;
//! # fn handle(_: &clinauth_proto::agent::Request) -> clinauth_proto::agent::Reply { todo!() }
//! # fn run(stream: UnixStream) -> std::io::Result<()> {
//! let mut reader = FrameReader::new(stream.try_clone()?);
//! let mut writer = stream;
//! loop {
//!     match read_request(&mut reader) {
//!         Ok(Some(request)) => {
//!             let reply = handle(&request.body);
//!             if write_reply(&mut writer, request.id, &reply).is_err() {
//!                 break;
//!             }
//!         }
//!         Ok(None) => break, // the client hung up
//!         Err(err) => {
//!             if let Some(reply) = rejection(&err) {
//!                 let _ = write_frame(&mut writer, &reply);
//!             }
//!             break; // every read error closes the connection
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::io::{Read, Write};

use crate::agent::{ErrorCode, Reply, Request};
use crate::envelope::{Envelope, UNCORRELATED_ID};
use crate::frame::{write_frame, FrameError, FrameReader, WireError};
use crate::text::Text;

/// Reads and decodes the next request. `Ok(None)`: the client closed the
/// connection between frames.
///
/// Any error means the connection is to be closed, after sending
/// [`rejection`]'s reply if there is one.
pub fn read_request<R: Read>(
    reader: &mut FrameReader<R>,
) -> Result<Option<Envelope<Request>>, WireError> {
    let Some(frame) = reader.read_frame()? else {
        return Ok(None);
    };
    let request = Envelope::<Request>::decode(&frame)?;
    // Replies with id 0 are the agent's refusals of unreadable frames; a
    // request with id 0 would make its replies look like one.
    if request.id == UNCORRELATED_ID {
        return Err(FrameError::Malformed("request id 0 is reserved".into()).into());
    }
    Ok(Some(request))
}

/// Writes `reply` as the answer to request `id`, and flushes.
pub fn write_reply<W: Write + ?Sized>(
    writer: &mut W,
    id: u64,
    reply: &Reply,
) -> Result<(), WireError> {
    write_frame(writer, &Envelope::new(id, reply))
}

/// The `error` reply for a request that could not be read, to send just
/// before closing. `None` when there is no one to tell: an I/O failure, or
/// a client that hung up in the middle of a frame.
///
/// The reply has id [`UNCORRELATED_ID`] since the request's id is unknown.
pub fn rejection(err: &WireError) -> Option<Envelope<Reply>> {
    match err {
        WireError::Io(_) | WireError::Frame(FrameError::Truncated) => None,
        WireError::Frame(frame_err) => {
            let code = ErrorCode::from(frame_err);
            debug_assert!(code.closes_connection());
            Some(Envelope::new(
                UNCORRELATED_ID,
                Reply::Error {
                    code,
                    message: Text::lossy(&frame_err.to_string()),
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_FRAME_LEN;
    use std::io;

    fn first_request(input: &[u8]) -> Result<Option<Envelope<Request>>, WireError> {
        read_request(&mut FrameReader::new(input))
    }

    fn rejection_code(input: &[u8]) -> Option<ErrorCode> {
        let err = first_request(input).unwrap_err();
        rejection(&err).map(|env| match env.body {
            Reply::Error { code, .. } => code,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn reads_a_request() {
        let env = first_request(b"{\"v\":1,\"id\":9,\"body\":{\"type\":\"status\"}}\n")
            .unwrap()
            .unwrap();
        assert_eq!(env, Envelope::new(9, Request::Status {}));
        assert!(first_request(b"").unwrap().is_none());
    }

    #[test]
    fn request_id_zero_is_refused() {
        let err =
            first_request(b"{\"v\":1,\"id\":0,\"body\":{\"type\":\"status\"}}\n").unwrap_err();
        assert!(err.to_string().contains("id 0"), "{err}");
        assert_eq!(
            rejection(&err).map(|env| env.body),
            Some(Reply::Error {
                code: ErrorCode::Malformed,
                message: Text::new("malformed message: request id 0 is reserved").unwrap()
            })
        );
    }

    #[test]
    fn each_bad_frame_gets_its_code() {
        let mut big = vec![b' '; MAX_FRAME_LEN];
        big.push(b'\n');
        assert_eq!(rejection_code(&big), Some(ErrorCode::FrameTooLarge));
        assert_eq!(rejection_code(b"{oops}\n"), Some(ErrorCode::Malformed));
        assert_eq!(rejection_code(b"\xc3\x28\n"), Some(ErrorCode::Malformed));
        assert_eq!(rejection_code(b"\n"), Some(ErrorCode::Malformed));
        assert_eq!(
            rejection_code(b"{\"v\":2,\"id\":1,\"body\":{\"type\":\"status\"}}\n"),
            Some(ErrorCode::UnsupportedVersion)
        );
        // Hung up mid-frame: nobody to answer.
        assert_eq!(rejection_code(b"{\"v\":1"), None);
        let io_err = WireError::Io(io::ErrorKind::BrokenPipe.into());
        assert!(rejection(&io_err).is_none());
    }

    #[test]
    fn rejection_is_uncorrelated_and_sanitized() {
        let err =
            first_request(b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"\\u001b[2J\"}}\n").unwrap_err();
        let env = rejection(&err).unwrap();
        assert_eq!(env.id, UNCORRELATED_ID);
        match env.body {
            Reply::Error { code, message } => {
                assert_eq!(code, ErrorCode::Malformed);
                assert!(!message.as_str().contains('\u{1b}'), "{message}");
                assert!(message.as_str().contains("unknown variant"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn write_reply_frames_the_reply() {
        let mut out = Vec::new();
        write_reply(
            &mut out,
            4,
            &Reply::Info {
                text: Text::new("hi").unwrap(),
                text_ja: None,
            },
        )
        .unwrap();
        assert_eq!(
            out,
            b"{\"v\":1,\"id\":4,\"body\":{\"type\":\"info\",\"text\":\"hi\"}}\n"
        );
    }
}
