//! Fuzz target: Prefer parsing, merging and skip globs (src/prefer.rs).
//! The invariants live in `fuzz_checks::prefer`, which tests/fuzz_corpus.rs replays on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_checks::prefer(data));
