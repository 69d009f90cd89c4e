//! Arbitrary bytes into the agent-socket frame decoder and message types.
//! The first byte picks the chunk size the bytes arrive in; see
//! `clinauth_proto::fuzzing::decode_all`, which panics only when an
//! invariant breaks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = clinauth_proto::fuzzing::decode_all(data);
});
