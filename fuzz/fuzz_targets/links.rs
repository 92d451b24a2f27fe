//! Fuzz target: link rewriting (src/links.rs) and the JSON scanner under it (src/json_scan.rs).
//! The invariants live in `fuzz_checks::links`, which tests/fuzz_corpus.rs replays on stable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_checks::links(data));
