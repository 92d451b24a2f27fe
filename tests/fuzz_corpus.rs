//! Replays the fuzz corpus on the stable toolchain, without libFuzzer: every file under
//! `fuzz/corpus/<target>/` goes through the same checks the cargo-fuzz target runs
//! (`fuzz/src/lib.rs`, included here), so CI keeps guarding every crash, hang and broken
//! invariant the fuzzers found. A few proptest properties feed the same checks with
//! generated inputs shaped like real headers and bodies.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::path::PathBuf;

use proptest::prelude::*;

/// Every file of one target's corpus, with its name for the failure message.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("readable corpus directory").path();
            let bytes = std::fs::read(&path).expect("readable corpus file");
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// Runs `check` on each file; a panic names the file that caused it.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = corpus(target);
    for (name, bytes) in &files {
        if std::panic::catch_unwind(|| check(bytes)).is_err() {
            panic!("fuzz check {target} fails on {name}");
        }
    }
    files.len()
}

#[test]
fn prefer_corpus_keeps_its_invariants() {
    assert!(replay("prefer", fuzz_checks::prefer) >= 5);
}

#[test]
fn identity_corpus_keeps_its_invariants() {
    assert!(replay("identity", fuzz_checks::identity) >= 5);
}

#[test]
fn exchange_id_corpus_keeps_its_invariants() {
    assert!(replay("exchange_id", fuzz_checks::exchange_id) >= 5);
}

#[test]
fn id_rewrite_corpus_keeps_its_invariants() {
    assert!(replay("id_rewrite", fuzz_checks::id_rewrite) >= 5);
}

#[test]
fn links_corpus_keeps_its_invariants() {
    assert!(replay("links", fuzz_checks::links) >= 5);
}

#[test]
fn batch_corpus_keeps_its_invariants() {
    assert!(replay("batch", fuzz_checks::batch) >= 5);
}

#[test]
fn retry_after_corpus_keeps_its_invariants() {
    assert!(replay("retry_after", fuzz_checks::retry_after) >= 5);
}

#[test]
fn config_corpus_keeps_its_invariants() {
    assert!(replay("config", fuzz_checks::config) >= 5);
}

#[test]
fn replay_names_the_file_that_breaks_a_check() {
    // The replay is only worth something if a failing check fails the test, with the file
    // that made it fail.
    fn always_fails(_: &[u8]) {
        panic!("broken invariant");
    }
    let outcome = std::panic::catch_unwind(|| replay("retry_after", always_fails));
    let message = outcome.expect_err("a failing check must fail the replay");
    let message = message
        .downcast_ref::<String>()
        .expect("replay panics with a formatted message");
    assert!(message.contains("fuzz/corpus/retry_after/"), "{message}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merged_prefer_lines_keep_their_invariants(
        mode in any::<u8>(),
        lines in prop::collection::vec("[ -~\t]{0,40}", 0..4),
    ) {
        let mut input = vec![mode];
        input.extend_from_slice(lines.join("\n").as_bytes());
        fuzz_checks::prefer(&input);
    }

    #[test]
    fn json_documents_round_trip_through_the_scanner(
        value in json_value(),
    ) {
        let text = serde_json::to_vec(&value).expect("serialisable");
        fuzz_checks::links(&text);
        fuzz_checks::id_rewrite(&text);
    }

    #[test]
    fn retry_after_numbers_and_dates_keep_their_invariants(
        seconds in any::<u64>(),
        fraction in "[0-9]{0,12}",
        at in 0u64..4_000_000_000,
    ) {
        fuzz_checks::retry_after(seconds.to_string().as_bytes());
        fuzz_checks::retry_after(format!("{seconds}.{fraction}").as_bytes());
        let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at));
        fuzz_checks::retry_after(date.as_bytes());
    }
}

/// Small JSON documents whose strings include Exchange IDs and Graph links.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let string = prop_oneof![
        "\\PC{0,20}",
        Just(fuzz_checks::IMMUTABLE.to_owned()),
        Just("AAMkADgwNzM0ZDllLTVhYmItNDU2ZC1iMGI4LTFiOTAyOWQ2NDNlOQBGAAAAAADhDq91SSK4QIw9CuwFXFc0BwBmGstC9VnGQYyUCu1kIwJ2AAAAAAEMAABmGstC9VnGQYyUCu1kIwJ2AABM3JaPAAA=".to_owned()),
        Just("https://graph.microsoft.com/v1.0/me/messages?$skiptoken=abc".to_owned()),
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        string.clone().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("id".to_owned()),
                        Just("@odata.nextLink".to_owned()),
                        "[a-z]{1,6}".prop_map(String::from)
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|members| serde_json::Value::Object(members.into_iter().collect())),
        ]
    })
}
