//! Fuzz target: ID rewriting in targets, JSON bodies, $batch bodies and responses (src/id_rewrite.rs).
//! The invariants live in `fuzz_checks::id_rewrite`, which tests/fuzz_corpus.rs replays on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_checks::id_rewrite(data));
