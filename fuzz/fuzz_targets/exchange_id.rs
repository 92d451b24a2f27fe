//! Fuzz target: the Exchange ID classifier and its codecs (src/exchange_id.rs).
//! The invariants live in `fuzz_checks::exchange_id`, which tests/fuzz_corpus.rs replays on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_checks::exchange_id(data));
