//! Fuzz target: $batch bodies (src/batch.rs) and batch retries (src/retry.rs batch_retry, merge_batch_responses).
//! The invariants live in `fuzz_checks::batch`, which tests/fuzz_corpus.rs replays on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_checks::batch(data));
