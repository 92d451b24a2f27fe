//! Fuzz target: the config loader (src/config.rs parse_str, Origin::parse).
//! The invariants live in `fuzz_checks::config`, which tests/fuzz_corpus.rs replays on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_checks::config(data));
