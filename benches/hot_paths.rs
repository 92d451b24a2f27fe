//! Criterion benchmarks of the pure, synchronous parts of the request path: Prefer merging,
//! the Exchange ID classifier, JSON link rewriting, JSON ID rewriting with a warm cache
//! (a `HashMap` standing in for the cache) and JWT claim extraction.
//!
//! Run with `cargo bench --bench hot_paths`. Not part of `cargo test` or CI: timings on a
//! shared machine are noise to a test, and these only say where time goes. Fixtures are
//! built from the simulator's ID encoder, so every ID is a real Graph layout that the
//! classifier accepts; nothing here touches the network or the disk.

mod support;

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use immutable_id_proxy::config::{Origin, PreferMode};
use immutable_id_proxy::links::LinkRewriter;
use immutable_id_proxy::{exchange_id, id_rewrite, identity, prefer};
use support::{
    immutable_message_id, message_list, regular_message_id, BODY_BYTES, IDS_IN_BODY, SOURCES,
    TARGET,
};

fn prefer_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefer_merge");
    let none: [&[u8]; 0] = [];
    let app: [&[u8]; 2] = [
        b"odata.maxpagesize=50, IdType=\"RestId\"",
        b"outlook.body-content-type=\"text\", return=minimal",
    ];
    group.bench_function("no_app_header", |b| {
        b.iter(|| prefer::merge(black_box(&none), PreferMode::Force))
    });
    group.bench_function("two_app_lines_force", |b| {
        b.iter(|| prefer::merge(black_box(&app), PreferMode::Force))
    });
    group.bench_function("two_app_lines_respect", |b| {
        b.iter(|| prefer::merge(black_box(&app), PreferMode::Respect))
    });
    group.finish();
}

fn classify(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    let regular = regular_message_id(1);
    let immutable = immutable_message_id(1);
    let cases = [
        ("regular_rest_message", regular.as_str()),
        ("immutable_message", immutable.as_str()),
        ("guid", "6f9a2a92-8527-4d64-837e-b5312852f36d"),
        ("upn", "AdeleV@contoso.onmicrosoft.com"),
    ];
    for (name, id) in cases {
        group.bench_function(name, |b| b.iter(|| exchange_id::classify(black_box(id))));
    }
    group.finish();
}

fn links(c: &mut Criterion) {
    let mut group = c.benchmark_group("rewrite_links_json");
    let upstream = Origin::parse("https://graph.microsoft.com").unwrap_or_else(|e| panic!("{e}"));
    let public = Origin::parse("http://127.0.0.1:8080").unwrap_or_else(|e| panic!("{e}"));
    let rewriter = LinkRewriter::new(&upstream, &public).expect("origins differ");
    let body = message_list(IDS_IN_BODY, BODY_BYTES);
    assert!(
        matches!(rewriter.rewrite_json(&body), Ok(Some(_))),
        "the nextLink is rewritten"
    );
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("64KiB_list_with_next_link", |b| {
        b.iter(|| rewriter.rewrite_json(black_box(&body)))
    });
    group.finish();
}

fn id_rewrite_warm(c: &mut Criterion) {
    let mut group = c.benchmark_group("rewrite_ids_json_warm_cache");
    let sources = SOURCES;
    let cache: HashMap<String, String> = support::mappings().into_iter().collect();
    let lookup = |id: &str| cache.get(id).cloned();
    let body = message_list(IDS_IN_BODY, BODY_BYTES);
    let applied = id_rewrite::apply_to_json(&body, &sources, &lookup)
        .ok()
        .flatten()
        .map(|r| r.applied.len());
    assert_eq!(
        applied,
        Some(IDS_IN_BODY),
        "every ID in the body is rewritten"
    );
    group.throughput(Throughput::Bytes(body.len() as u64));
    // Step 3 scans once (`scan_json`: the candidates and their places), resolves, then
    // splices (`JsonIds::apply`); `apply_to_json` is both, the whole pure cost.
    group.bench_function("scan_64KiB_100_ids", |b| {
        b.iter(|| id_rewrite::scan_json(black_box(&body), &sources))
    });
    let scanned = id_rewrite::scan_json(&body, &sources).expect("the list is JSON");
    group.bench_function("splice_64KiB_100_ids", |b| {
        b.iter(|| scanned.apply(black_box(&body), &lookup))
    });
    group.bench_function("scan_and_splice_64KiB_100_ids", |b| {
        b.iter(|| id_rewrite::apply_to_json(black_box(&body), &sources, &lookup))
    });
    // All of step 3 for one request, with the real `IdLookup` (memory cache) in place of
    // the `HashMap`: what the load test's rewrite scenario pays per request.
    let (id_lookup, caller) = support::warm_lookup();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    group.bench_function("request_64KiB_100_ids", |b| {
        b.iter(|| {
            runtime.block_on(support::rewrite_request(
                &id_lookup,
                &caller,
                TARGET,
                black_box(&body),
            ))
        })
    });
    group.finish();
}

fn jwt_claims(c: &mut Criterion) {
    let token = immutable_id_proxy::sim::token::mint(
        "6e6e7a6c-6f73-4f6e-9a6f-636f6e746f73",
        "5c7bb4a6-2a8e-4d3a-9a7f-1f0c6a3b8e01",
        "11111111-2222-3333-4444-555555555555",
        false,
    );
    let header = format!("Bearer {token}");
    assert!(identity::claims_from_authorization(header.as_bytes()).is_some());
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&header).expect("a JWT is a valid header value"),
    );
    let mut group = c.benchmark_group("identify");
    group.bench_function("claims_from_authorization", |b| {
        b.iter(|| identity::claims_from_authorization(black_box(header.as_bytes())))
    });
    group.bench_function("identify_request", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |headers| {
                identity::identify(
                    black_box(headers),
                    "/v1.0/users/adelev@contoso.onmicrosoft.com/messages",
                )
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    prefer_merge,
    classify,
    links,
    id_rewrite_warm,
    jwt_claims
);
criterion_main!(benches);
