//! Arbitrary bytes as tickets, confirmations, digests, record IDs and the
//! other fields apps hand the agent; see `clinauth_proto::fuzzing::tokens`,
//! which panics only when a forged token verifies or a field does not
//! round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clinauth_proto::fuzzing::tokens(data);
});
