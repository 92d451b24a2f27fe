//! Every request that reaches Graph carries exactly one Prefer line with
//! IdType="ImmutableId", and every `$batch` sub-request carries its own.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const IMMUTABLE: &str = "IdType=\"ImmutableId\"";

fn is_immutable(id: &str) -> bool {
    id.len() == 68 && id.starts_with("AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A")
}

#[tokio::test]
async fn a_plain_request_reaches_graph_with_idtype_and_gets_immutable_ids() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let (status, _, body) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=3", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let page: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| is_immutable(id)), "{ids:?}");
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(recorded_header(&seen, "prefer"), vec![IMMUTABLE.to_owned()]);
}

#[tokio::test]
async fn several_prefer_lines_become_one_with_the_apps_preferences_kept_byte_for_byte() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let req = Request::get(format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url))
        .header("authorization", bearer(ADELE))
        .header("prefer", "outlook.timezone=\"Pacific Standard Time\"")
        .header("prefer", "odata.maxpagesize=3;x=1 , IdType=\"RestId\"")
        .header("prefer", "return=minimal")
        .body(Full::<Bytes>::default())
        .unwrap();
    let (status, _, _) = client.send(req).await;
    assert_eq!(status, 200);
    let seen = sim.last_request_to("/messages").await;
    let prefer = recorded_header(&seen, "prefer");
    assert_eq!(prefer.len(), 1, "exactly one Prefer line: {prefer:?}");
    assert_eq!(
        prefer[0],
        "IdType=\"ImmutableId\", outlook.timezone=\"Pacific Standard Time\", odata.maxpagesize=3;x=1, return=minimal"
    );
}

#[tokio::test]
async fn respect_mode_keeps_the_apps_own_idtype() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        "[immutable_id]\nmode = \"respect\"\n",
    ));
    let client = HttpClient::h1();
    let (status, _, _) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[
                ("authorization", &bearer(ADELE)),
                ("prefer", "idtype=\"RestId\""),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(
        recorded_header(&seen, "prefer"),
        vec!["idtype=\"RestId\"".to_owned()]
    );
}

#[tokio::test]
async fn a_skip_pattern_sends_the_request_without_idtype_and_counts_it() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        "[immutable_id]\nskip = [\"*$search=*\"]\n",
    ));
    let client = HttpClient::h1();
    let (status, _, _) = client
        .get_with(
            &format!(
                "{}/v1.0/users/{ADELE}/messages?%24search=%22hello%22",
                proxy.url
            ),
            &[
                ("authorization", &bearer(ADELE)),
                ("prefer", "return=minimal"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let seen = sim.last_request_to("search").await;
    assert_eq!(
        recorded_header(&seen, "prefer"),
        vec!["return=minimal".to_owned()]
    );
    let (_, _, metrics) = client.get(&format!("{}/metrics", proxy.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("idproxy_prefer_skipped_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unbalanced_quote_still_gets_idtype_and_never_a_500() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let (status, _, _) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[
                ("authorization", &bearer(ADELE)),
                ("prefer", "outlook.timezone=\"Pacific, return=minimal"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let seen = sim.last_request_to("/messages").await;
    let prefer = recorded_header(&seen, "prefer");
    assert_eq!(prefer.len(), 1);
    assert!(prefer[0].starts_with(IMMUTABLE), "{prefer:?}");
    assert!(
        prefer[0].contains("outlook.timezone=\"Pacific, return=minimal"),
        "{prefer:?}"
    );
}

fn batch_body() -> Value {
    json!({
        "requests": [
            {"id": "1", "method": "GET", "url": format!("/users/{ADELE}/messages?$top=1")},
            {"id": "2", "method": "GET", "url": format!("users/{ADELE}/messages?$top=1"),
             "headers": {"Prefer": "outlook.timezone=\"Pacific Standard Time\""}},
            {"id": "3", "method": "GET", "url": format!("/users/{ADELE}/events?$top=1"),
             "headers": {"prefer": "IdType=\"RestId\""}}
        ]
    })
}

async fn post_batch(
    client: &HttpClient,
    proxy: &ProxyProcess,
    body: Vec<u8>,
) -> (u16, Value, Bytes) {
    let req = Request::post(format!("{}/v1.0/$batch", proxy.url))
        .header("authorization", bearer(ADELE))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (status, _, body) = client.send(req).await;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status.as_u16(), json, body)
}

#[tokio::test]
async fn every_batch_sub_request_gets_the_header_in_its_own_headers_object() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let (status, answer, _) =
        post_batch(&client, &proxy, serde_json::to_vec(&batch_body()).unwrap()).await;
    assert_eq!(status, 200);
    let responses = answer["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 3);
    for response in responses {
        assert_eq!(response["status"], 200, "{response}");
        let id = response["body"]["value"][0]["id"].as_str().unwrap();
        assert!(is_immutable(id), "sub-request {} got {id}", response["id"]);
    }
    let stats = sim.stats().await;
    let seen = &stats["prefer_seen"];
    assert!(
        seen["IdType=\"ImmutableId\", outlook.timezone=\"Pacific Standard Time\""]
            .as_u64()
            .is_some(),
        "{seen}"
    );
    assert!(seen[IMMUTABLE].as_u64().unwrap_or(0) >= 2, "{seen}");
}

#[tokio::test]
async fn malformed_batch_json_is_forwarded_byte_for_byte() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let broken = b"{\"requests\": [ {\"id\": \"1\", ".to_vec();
    let (status, answer, _) = post_batch(&client, &proxy, broken.clone()).await;
    assert_eq!(
        status, 400,
        "the simulator, like Graph, refuses it: {answer}"
    );
    let seen = sim.last_request_to("$batch").await;
    assert_eq!(seen["body_len"].as_u64(), Some(broken.len() as u64));
}

#[tokio::test]
async fn a_batch_over_max_body_bytes_streams_through_untouched() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, "[rewrite]\nmax_body_bytes = 64\n"));
    let client = HttpClient::h1();
    let body = serde_json::to_vec(&batch_body()).unwrap();
    let (status, answer, _) = post_batch(&client, &proxy, body.clone()).await;
    assert_eq!(status, 200);
    let first = answer["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "1")
        .unwrap();
    let id = first["body"]["value"][0]["id"].as_str().unwrap();
    assert!(
        !is_immutable(id),
        "the body was too large to rewrite, so no header: {id}"
    );
    let seen = sim.last_request_to("$batch").await;
    assert_eq!(seen["body_len"].as_u64(), Some(body.len() as u64));
}
