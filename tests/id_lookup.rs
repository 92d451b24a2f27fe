//! IdLookup against the real simulator: coalescing, single flight, per-credential calls,
//! negative caching of stale IDs, the app-only fallback and the persistent store.

mod support;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderValue, Request};
use http_body_util::Full;
use immutable_id_proxy::config::{self, Config, Overrides, SourceType};
use immutable_id_proxy::id_lookup::{Caller, IdLookup};
use immutable_id_proxy::id_rewrite::{candidate_for, Candidate};
use immutable_id_proxy::id_store::{IdStore, Lookup};
use immutable_id_proxy::metrics::Metrics;
use immutable_id_proxy::sim::{self, CONTOSO_TENANT_ID};
use immutable_id_proxy::upstream::Upstream;
use serde_json::{json, Value};
use support::{
    bearer, ensure_messages, message_ids, recorded_header, HttpClient, Sim, TempDir, ADELE,
};

const ALEX: &str = "alexw@contoso.onmicrosoft.com";
const SOURCES: [SourceType; 3] = [SourceType::RestId, SourceType::EwsId, SourceType::EntryId];

fn config(sim: &Sim, store: &Path) -> Config {
    config_with_window(sim, store, 50)
}

fn config_with_window(sim: &Sim, store: &Path, window_ms: u64) -> Config {
    let text = format!(
        "[upstream]\nurl = \"{}\"\nrequest_timeout_ms = 20000\n\n[rewrite]\nstore = \"{}\"\nbatch_window_ms = {window_ms}\n",
        sim.url,
        store.display()
    );
    config::parse_str(&text, Vec::new(), &Overrides::default())
        .expect("test config is valid")
        .config
}

struct Fixture {
    lookup: IdLookup,
    metrics: Arc<Metrics>,
    config: Config,
}

fn fixture(sim: &Sim, dir: &TempDir) -> Fixture {
    fixture_from(config(sim, &dir.join("idmap.redb")))
}

fn fixture_from(config: Config) -> Fixture {
    let metrics = Arc::new(Metrics::new());
    let upstream = Arc::new(Upstream::new(&config.upstream).expect("upstream client"));
    let store = Arc::new(IdStore::open(&config.rewrite, metrics.clone()).expect("store opens"));
    let lookup = IdLookup::new(upstream, store, &config.rewrite, metrics.clone());
    Fixture {
        lookup,
        metrics,
        config,
    }
}

fn caller(upn: &str, authorization: &str, app_only: bool) -> Caller {
    Caller {
        tenant: CONTOSO_TENANT_ID.to_owned(),
        mailbox_path: format!("/v1.0/users/{upn}"),
        authorization: HeaderValue::from_str(authorization).expect("token is a header value"),
        app_only,
    }
}

fn candidate(id: &str) -> Candidate {
    candidate_for(id, &SOURCES).expect("simulator IDs are translatable message IDs")
}

async fn translate_calls(sim: &Sim) -> u64 {
    sim.stats().await["translate_calls"]
        .as_u64()
        .expect("translate_calls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_misses_for_one_mailbox_take_at_most_three_calls() {
    let sim = Sim::start().await;
    let dir = TempDir::new("lookup-coalesce");
    let fx = fixture(&sim, &dir);
    ensure_messages(&sim, ADELE, 1000).await;
    let regular: Vec<String> = message_ids(&sim, ADELE, false).await[..1000].to_vec();
    let immutable: Vec<String> = message_ids(&sim, ADELE, true).await[..1000].to_vec();
    assert!(immutable.iter().all(|id| id.starts_with("AAkALg")));
    let adele = caller(ADELE, &bearer(ADELE), false);

    let singles: Vec<[Candidate; 1]> = regular.iter().map(|id| [candidate(id)]).collect();
    let results = join_all(singles.iter().map(|one| fx.lookup.resolve(&adele, one))).await;
    for ((id, expected), result) in regular.iter().zip(&immutable).zip(&results) {
        let map = result.as_ref().expect("lookup succeeds");
        assert_eq!(map.get(id), Some(expected));
    }
    let stats = sim.stats().await;
    let calls = stats["translate_calls"].as_u64().unwrap();
    assert!((1..=3).contains(&calls), "{calls} translate calls");
    let sent: u64 = stats["translate_ids_per_call"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(sent, 1000, "every ID sent exactly once");
    assert_eq!(fx.metrics.translate_calls.get(), calls);
    assert_eq!(fx.metrics.translate_ids.get("ok"), 1000);

    let again = join_all(singles.iter().map(|one| fx.lookup.resolve(&adele, one))).await;
    assert!(again
        .iter()
        .zip(&immutable)
        .all(|(r, expected)| r.as_ref().unwrap().values().next() == Some(expected)));
    assert_eq!(
        translate_calls(&sim).await,
        calls,
        "the second wave is served from the cache"
    );
    assert_eq!(fx.metrics.translate_ids.get("cached"), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_arriving_while_a_call_is_in_flight_wait_and_go_out_as_one_call() {
    let sim = Sim::start().await;
    let dir = TempDir::new("lookup-one-in-flight");
    // A 5 ms window, and misses 25 ms apart: each would close its own batch, were it not for
    // the call of the same mailbox still in flight.
    let fx = fixture_from(config_with_window(&sim, &dir.join("idmap.redb"), 5));
    ensure_messages(&sim, ADELE, 21).await;
    let regular: Vec<String> = message_ids(&sim, ADELE, false).await[..21].to_vec();
    let immutable: Vec<String> = message_ids(&sim, ADELE, true).await[..21].to_vec();
    let adele = caller(ADELE, &bearer(ADELE), false);
    // Graph takes 4 s per request from now on: the first call stays in flight while the
    // twenty other misses arrive.
    sim.configure(json!({ "delay_ms": 4000 })).await;
    let lookup = Arc::new(fx.lookup);
    let first = {
        let (lookup, adele, one) = (lookup.clone(), adele.clone(), [candidate(&regular[0])]);
        tokio::spawn(async move { lookup.resolve(&adele, &one).await })
    };
    while fx.metrics.translate_calls.get() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut later = Vec::new();
    for id in &regular[1..] {
        let (lookup, adele, one) = (lookup.clone(), adele.clone(), [candidate(id)]);
        later.push(tokio::spawn(
            async move { lookup.resolve(&adele, &one).await },
        ));
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let first = first.await.expect("task").expect("lookup succeeds");
    assert_eq!(first.get(&regular[0]), Some(&immutable[0]));
    for ((task, id), expected) in later.into_iter().zip(&regular[1..]).zip(&immutable[1..]) {
        let map = task.await.expect("task").expect("lookup succeeds");
        assert_eq!(map.get(id), Some(expected));
    }
    assert_eq!(
        sim.stats().await["translate_ids_per_call"],
        json!([1, 20]),
        "the twenty misses waited for the first call, then went out together"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_already_being_translated_is_not_asked_for_again() {
    let sim = Sim::start().await;
    let dir = TempDir::new("lookup-single-flight");
    let fx = fixture(&sim, &dir);
    let regular = message_ids(&sim, ADELE, false).await;
    let adele = caller(ADELE, &bearer(ADELE), false);
    let same = vec![candidate(&regular[0]), candidate(&regular[1])];
    let results = join_all((0..20).map(|_| fx.lookup.resolve(&adele, &same))).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().len() == 2));
    assert_eq!(sim.stats().await["translate_ids_per_call"], json!([2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_with_different_tokens_or_mailboxes_never_share_a_call() {
    let sim = Sim::start().await;
    let dir = TempDir::new("lookup-credentials");
    let fx = fixture(&sim, &dir);
    let adele_ids = message_ids(&sim, ADELE, false).await;
    let alex_ids = message_ids(&sim, ALEX, false).await;
    let adele_immutable = message_ids(&sim, ADELE, true).await;
    let alex_immutable = message_ids(&sim, ALEX, true).await;
    let adele_token = bearer(ADELE);
    let alex_token = bearer(ALEX);
    // Adele's own mailbox again, through another app with its own token.
    let other_app_token = format!(
        "Bearer {}",
        sim::token::mint(
            CONTOSO_TENANT_ID,
            sim::SEED_USERS[0].user_id,
            "99999999-8888-7777-6666-555555555555",
            false
        )
    );
    let adele = caller(ADELE, &adele_token, false);
    let alex = caller(ALEX, &alex_token, false);
    let other_app = caller(ADELE, &other_app_token, false);
    let pick = |ids: &[String], range: std::ops::Range<usize>| -> Vec<Candidate> {
        ids[range].iter().map(|id| candidate(id)).collect()
    };
    let (for_adele, for_alex, for_other_app) = (
        pick(&adele_ids, 0..5),
        pick(&alex_ids, 0..4),
        pick(&adele_ids, 5..8),
    );
    let (a, b, c) = tokio::join!(
        fx.lookup.resolve(&adele, &for_adele),
        fx.lookup.resolve(&alex, &for_alex),
        fx.lookup.resolve(&other_app, &for_other_app),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    for i in 0..5 {
        assert_eq!(a[&adele_ids[i]], adele_immutable[i]);
    }
    for i in 0..4 {
        assert_eq!(b[&alex_ids[i]], alex_immutable[i]);
    }
    for i in 5..8 {
        assert_eq!(c[&adele_ids[i]], adele_immutable[i]);
    }

    let mut sizes: Vec<u64> = sim.stats().await["translate_ids_per_call"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [3, 4, 5]);
    let calls: Vec<Value> = sim
        .requests()
        .await
        .into_iter()
        .filter(|r| {
            r["uri"]
                .as_str()
                .unwrap_or("")
                .ends_with("/translateExchangeIds")
        })
        .collect();
    assert_eq!(calls.len(), 3);
    let mut seen: Vec<(String, String)> = calls
        .iter()
        .map(|r| {
            let uri = r["uri"].as_str().unwrap().to_owned();
            let auth = recorded_header(r, "authorization").join(",");
            assert_eq!(recorded_header(r, "prefer"), ["IdType=\"ImmutableId\""]);
            assert_eq!(recorded_header(r, "client-request-id").len(), 1);
            (uri, auth)
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (
            format!("/v1.0/users/{ADELE}/translateExchangeIds"),
            adele_token,
        ),
        (
            format!("/v1.0/users/{ADELE}/translateExchangeIds"),
            other_app_token,
        ),
        (
            format!("/v1.0/users/{ALEX}/translateExchangeIds"),
            alex_token,
        ),
    ];
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_id_gets_no_mapping_and_is_remembered_as_failed() {
    let sim = Sim::start().await;
    let dir = TempDir::new("lookup-stale");
    let fx = fixture(&sim, &dir);
    let stale = message_ids(&sim, ADELE, false).await[0].clone();
    let client = HttpClient::h1();
    let escaped = stale.replace('=', "%3D");
    let (status, _, _) = client
        .send(
            Request::post(format!(
                "{}/v1.0/users/{ADELE}/messages/{escaped}/move",
                sim.url
            ))
            .header("authorization", bearer(ADELE))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(r#"{"destinationId":"archive"}"#)))
            .unwrap(),
        )
        .await;
    assert_eq!(status, 201);
    let adele = caller(ADELE, &bearer(ADELE), false);

    let found = fx
        .lookup
        .resolve(&adele, &[candidate(&stale)])
        .await
        .unwrap();
    assert!(found.is_empty());
    assert_eq!(
        fx.lookup.store().lookup_cached(CONTOSO_TENANT_ID, &stale),
        Lookup::Failed
    );
    assert_eq!(fx.metrics.translate_ids.get("error"), 1);
    let found = fx
        .lookup
        .resolve(&adele, &[candidate(&stale)])
        .await
        .unwrap();
    assert!(found.is_empty());
    assert_eq!(
        translate_calls(&sim).await,
        1,
        "the failure is not asked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_only_tokens_refused_by_graph_fall_back_to_reading_the_item() {
    let sim = Sim::start().await;
    sim.configure(json!({"app_only_translate_forbidden": true}))
        .await;
    let dir = TempDir::new("lookup-app-only");
    let fx = fixture(&sim, &dir);
    let regular = message_ids(&sim, ADELE, false).await;
    let immutable = message_ids(&sim, ADELE, true).await;
    let app_token = format!(
        "Bearer {}",
        sim::token::mint(
            CONTOSO_TENANT_ID,
            sim::APP_SERVICE_PRINCIPAL_ID,
            sim::DEFAULT_APP_ID,
            true
        )
    );
    let app = caller(ADELE, &app_token, true);

    let found = fx
        .lookup
        .resolve(&app, &[candidate(&regular[0]), candidate(&regular[1])])
        .await
        .unwrap();
    assert_eq!(found[&regular[0]], immutable[0]);
    assert_eq!(found[&regular[1]], immutable[1]);
    assert_eq!(fx.metrics.translate_calls.get(), 1, "one refused call");

    let found = fx
        .lookup
        .resolve(&app, &[candidate(&regular[2])])
        .await
        .unwrap();
    assert_eq!(found[&regular[2]], immutable[2]);
    assert_eq!(
        fx.metrics.translate_calls.get(),
        1,
        "the refusal is remembered for the tenant"
    );
    let reads: Vec<Value> = sim
        .requests()
        .await
        .into_iter()
        .filter(|r| r["uri"].as_str().unwrap_or("").ends_with("?$select=id"))
        .collect();
    assert_eq!(reads.len(), 3);
    assert!(reads.iter().all(
        |r| recorded_header(r, "prefer") == ["IdType=\"ImmutableId\""]
            && recorded_header(r, "authorization") == [app_token.clone()]
    ));
    assert_eq!(translate_calls(&sim).await, 0, "Graph translated nothing");
}

#[tokio::test]
async fn mappings_survive_reopening_the_store_file() {
    let sim = Sim::start().await;
    let dir = TempDir::new("lookup-persist");
    let fx = fixture(&sim, &dir);
    let regular = message_ids(&sim, ADELE, false).await;
    let immutable = message_ids(&sim, ADELE, true).await;
    let adele = caller(ADELE, &bearer(ADELE), false);
    let wanted: Vec<Candidate> = regular[..3].iter().map(|id| candidate(id)).collect();
    let found = fx.lookup.resolve(&adele, &wanted).await.unwrap();
    assert_eq!(found.len(), 3);
    let Fixture { lookup, config, .. } = fx;
    // On this single-threaded runtime the batch task has ended before resolve returned, so
    // this was the last handle on the file.
    drop(lookup);

    let reopened =
        IdStore::open(&config.rewrite, Arc::new(Metrics::new())).expect("the file is free again");
    let ids: Vec<&str> = regular[..3].iter().map(String::as_str).collect();
    let stored = reopened.lookup_persistent(CONTOSO_TENANT_ID, &ids).unwrap();
    let expected: Vec<Option<String>> = immutable[..3].iter().cloned().map(Some).collect();
    assert_eq!(stored, expected);
}
