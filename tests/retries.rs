//! Step 6, retries: what the proxy repeats after Graph's 429/503/504, and what it never
//! repeats.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

fn config(sim: &Sim) -> String {
    config_for(
        &sim.url,
        "[upstream]\nmax_retries = 3\nretry_base_delay_ms = 10\nretry_max_delay_ms = 50\n",
    )
}

fn messages(proxy: &ProxyProcess) -> String {
    format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url)
}

#[tokio::test]
async fn a_503_is_retried_with_retry_attempt_until_graph_answers() {
    let sim = Sim::start().await;
    sim.configure(json!({"fail_next": [
        {"status": 503, "retry_after": "0"},
        {"status": 429}
    ]}))
    .await;
    let proxy = ProxyProcess::start(&config(&sim));
    let client = HttpClient::h1();
    let (status, _, _) = client
        .get_with(&messages(&proxy), &[("authorization", &bearer(ADELE))])
        .await;
    assert_eq!(status, 200);
    let requests = sim.requests().await;
    let attempts: Vec<Vec<String>> = requests
        .iter()
        .filter(|r| r["uri"].as_str().unwrap_or("").contains("/messages"))
        .map(|r| recorded_header(r, "retry-attempt"))
        .collect();
    assert_eq!(
        attempts,
        vec![vec![], vec!["1".to_owned()], vec!["2".to_owned()]]
    );
    let (_, _, metrics) = client.get(&format!("{}/metrics", proxy.admin)).await;
    assert!(String::from_utf8_lossy(&metrics).contains("idproxy_upstream_retries_total 2"));
}

#[tokio::test]
async fn after_the_last_try_graphs_own_answer_goes_back_unchanged() {
    let sim = Sim::start().await;
    let failures: Vec<Value> = (0..4).map(|_| json!({"status": 504})).collect();
    sim.configure(json!({ "fail_next": failures })).await;
    let proxy = ProxyProcess::start(&config(&sim));
    let client = HttpClient::h1();
    let (status, _, body) = client
        .get_with(&messages(&proxy), &[("authorization", &bearer(ADELE))])
        .await;
    assert_eq!(status, 504);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "GatewayTimeout");
    assert_eq!(
        sim.stats().await["requests"],
        4,
        "one try and three retries"
    );
}

#[tokio::test]
async fn requests_from_an_sdk_or_already_retried_are_not_retried_again() {
    for header in [
        ("sdkversion", "graph-dotnet/5.56.0"),
        ("retry-attempt", "1"),
        ("user-agent", "kiota-dotnet/1.9.0"),
    ] {
        let sim = Sim::start().await;
        sim.configure(json!({"fail_next": [{"status": 503, "retry_after": "0"}]}))
            .await;
        let proxy = ProxyProcess::start(&config(&sim));
        let client = HttpClient::h1();
        let (status, _, _) = client
            .get_with(
                &messages(&proxy),
                &[("authorization", &bearer(ADELE)), header],
            )
            .await;
        assert_eq!(status, 503, "{header:?}");
        assert_eq!(sim.stats().await["requests"], 1, "{header:?}");
    }
}

#[tokio::test]
async fn a_streamed_post_is_never_sent_twice() {
    let sim = Sim::start().await;
    sim.configure(json!({"fail_next": [{"status": 503, "retry_after": "0"}]}))
        .await;
    let proxy = ProxyProcess::start(&config(&sim));
    let client = HttpClient::h1();
    let request = Request::post(format!("{}/v1.0/users/{ADELE}/messages", proxy.url))
        .header("authorization", bearer(ADELE))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            b"{\"subject\":\"only once\"}",
        )))
        .unwrap();
    let (status, _, _) = client.send(request).await;
    assert_eq!(status, 503);
    assert_eq!(sim.stats().await["requests"], 1);
}

#[tokio::test]
async fn throttled_batch_sub_requests_are_retried_as_a_smaller_batch_and_merged_back() {
    let sim = Sim::start().await;
    sim.configure(json!({"fail_next": [
        {"status": 429, "retry_after": "0", "path_contains": "events"}
    ]}))
    .await;
    let proxy = ProxyProcess::start(&config(&sim));
    let client = HttpClient::h1();
    let batch = json!({"requests": [
        {"id": "m", "method": "GET", "url": format!("/users/{ADELE}/messages?$top=1")},
        {"id": "e", "method": "GET", "url": format!("/users/{ADELE}/events?$top=1")},
        {"id": "c", "method": "GET", "url": format!("/users/{ADELE}/contacts?$top=1")}
    ]});
    let request = Request::post(format!("{}/v1.0/$batch", proxy.url))
        .header("authorization", bearer(ADELE))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(batch.to_string())))
        .unwrap();
    let (status, _, body) = client.send(request).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let responses = answer["responses"].as_array().unwrap();
    let ids: Vec<&str> = responses
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    for r in responses {
        assert_eq!(r["status"], 200, "{r}");
    }
    let stats = sim.stats().await;
    assert_eq!(
        stats["batch_subrequests"], 4,
        "three, then the one that was throttled"
    );
}
