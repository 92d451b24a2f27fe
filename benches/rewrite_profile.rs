//! A driver for instruction counts of the ID-rewriting path, for `valgrind --tool=callgrind`
//! (criterion's timings are noise on a shared machine; instruction counts are not).
//!
//! `rewrite_profile <phase> [iterations]` runs one phase on the 64 KiB, 100-ID body of
//! `hot_paths`: `scan` (find and classify), `classify` (one regular REST ID), `splice`,
//! `lookup` (resolve 100 IDs from a warm cache) or `request` (all of step 3 for one
//! request). Each phase is its own `#[inline(never)]` function, so callgrind counts only it:
//!
//! ```sh
//! valgrind --tool=callgrind --toggle-collect='rewrite_profile::phase_*' \
//!     target/release/deps/rewrite_profile-* request 100
//! ```
//!
//! Run by `cargo bench --bench rewrite_profile` with no phase, it does each phase once as a
//! smoke test.

mod support;

use std::hint::black_box;

use immutable_id_proxy::id_lookup::{Caller, IdLookup};
use immutable_id_proxy::{exchange_id, id_rewrite};
use support::{IDS_IN_BODY, SOURCES, TARGET};
use tokio::runtime::Runtime;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let phase = args.first().map(String::as_str).unwrap_or("all");
    let iterations: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1);
    let body = support::message_list(IDS_IN_BODY, support::BODY_BYTES);
    let regular = support::regular_message_id(1);
    let (lookup, caller) = support::warm_lookup();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let scanned = id_rewrite::scan_json(&body, &SOURCES).expect("the list is JSON");
    let map = runtime
        .block_on(lookup.resolve(&caller, scanned.candidates()))
        .expect("a warm cache answers");
    assert_eq!(map.len(), IDS_IN_BODY, "every ID is cached");
    let answer = |id: &str| map.get(id).map(String::as_str);
    // One untimed pass of each, so lazy set-up (the runtime, the allocator) is not counted.
    let (out, count) = runtime.block_on(support::rewrite_request(&lookup, &caller, TARGET, &body));
    assert!(
        out.is_some() && count == IDS_IN_BODY,
        "every ID is rewritten"
    );
    let run = |name: &str| phase == name || phase == "all";
    if run("scan") {
        phase_scan(&body, iterations);
    }
    if run("classify") {
        phase_classify(&regular, iterations);
    }
    if run("splice") {
        phase_splice(&scanned, &body, &answer, iterations);
    }
    if run("lookup") {
        phase_lookup(&runtime, &lookup, &caller, &scanned, iterations);
    }
    if run("request") {
        phase_request(&runtime, &lookup, &caller, &body, iterations);
    }
}

#[inline(never)]
fn phase_scan(body: &[u8], iterations: usize) {
    for _ in 0..iterations {
        black_box(id_rewrite::scan_json(black_box(body), &SOURCES).map(|s| s.candidates().len()))
            .ok();
    }
}

#[inline(never)]
fn phase_classify(id: &str, iterations: usize) {
    for _ in 0..iterations {
        black_box(exchange_id::classify(black_box(id)));
    }
}

#[inline(never)]
fn phase_splice<'m>(
    scanned: &id_rewrite::JsonIds,
    body: &[u8],
    answer: &dyn Fn(&str) -> Option<&'m str>,
    iterations: usize,
) {
    for _ in 0..iterations {
        black_box(scanned.apply_counted(black_box(body), answer));
    }
}

#[inline(never)]
fn phase_lookup(
    runtime: &Runtime,
    lookup: &IdLookup,
    caller: &Caller,
    scanned: &id_rewrite::JsonIds,
    iterations: usize,
) {
    runtime.block_on(async {
        for _ in 0..iterations {
            black_box(lookup.resolve(caller, scanned.candidates()).await).ok();
        }
    });
}

#[inline(never)]
fn phase_request(
    runtime: &Runtime,
    lookup: &IdLookup,
    caller: &Caller,
    body: &[u8],
    iterations: usize,
) {
    runtime.block_on(async {
        for _ in 0..iterations {
            black_box(support::rewrite_request(lookup, caller, TARGET, black_box(body)).await);
        }
    });
}
