//! Fuzz target: Retry-After parsing (src/retry.rs parse_retry_after).
//! The invariants live in `fuzz_checks::retry_after`, which tests/fuzz_corpus.rs replays on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_checks::retry_after(data));
