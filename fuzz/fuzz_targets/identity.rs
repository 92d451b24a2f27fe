//! Fuzz target: JWT claim extraction and mailbox keys (src/identity.rs).
//! The invariants live in `fuzz_checks::identity`, which tests/fuzz_corpus.rs replays on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_checks::identity(data));
