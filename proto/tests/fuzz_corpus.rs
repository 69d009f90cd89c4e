//! Runs the fuzz target's function over the seed corpus, so every seed is
//! checked by `cargo test` without cargo-fuzz or a nightly toolchain.

use std::path::Path;

use clinauth_proto::frame::FrameError;
use clinauth_proto::fuzzing::decode_all;

#[test]
fn seed_corpus_decodes_as_named() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frame_decoder");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        // Panics if an invariant breaks.
        let summary = decode_all(&data);
        seen += 1;
        // Seeds named for what they hold must hold it, so the corpus stays
        // meaningful when files are edited. Files added by the fuzzer
        // (hash names) are only run.
        let s = &summary;
        if name.starts_with("req_") {
            assert!(
                s.frames > 0 && s.requests == s.frames && s.error.is_none(),
                "{name}: {s:?}"
            );
        } else if name.starts_with("rep_") {
            assert!(
                s.frames > 0 && s.replies == s.frames && s.error.is_none(),
                "{name}: {s:?}"
            );
        } else if name == "oversized_line" {
            assert_eq!(s.error, Some(FrameError::TooLarge), "{name}");
        } else if name == "exactly_max_line" {
            assert_eq!((s.frames, &s.error), (1, &None), "{name}");
        } else if name == "invalid_utf8" {
            assert_eq!(s.error, Some(FrameError::InvalidUtf8), "{name}");
        } else if name == "partial_frame" {
            assert_eq!(
                (s.frames, &s.error),
                (1, &Some(FrameError::Truncated)),
                "{name}"
            );
        } else if name == "empty_line" {
            assert_eq!(
                (s.frames, &s.error),
                (1, &Some(FrameError::Empty)),
                "{name}"
            );
        } else if [
            "wrong_version",
            "unknown_field",
            "unknown_type",
            "nested_json",
            "pin_as_number",
            "bad_digest",
        ]
        .contains(&name.as_str())
        {
            assert_eq!((s.frames, s.requests, s.replies), (1, 0, 0), "{name}");
        }
    }
    assert!(seen >= 10, "only {seen} seeds in {}", dir.display());
}

#[test]
fn tokens_corpus_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/tokens");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        clinauth_proto::fuzzing::tokens(&data);
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} seeds in {}", dir.display());
    // The parsers accept what they should.
    let digest = std::fs::read_to_string(dir.join("digest_sha256")).unwrap();
    assert!(clinauth_proto::records::Digest::parse(&digest).is_ok());
}
