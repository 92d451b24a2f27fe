//! Step 7, links: Graph's absolute links point back at the proxy on the reverse listener, so
//! paging keeps going through it (and keeps getting the header).

mod support;

use std::io::{Read, Write};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn next_links_point_at_the_proxy_and_following_them_pages_through_it() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let auth = bearer(ADELE);
    let mut url = format!("{}/v1.0/users/{ADELE}/messages?$top=10", proxy.url);
    let mut seen_ids = Vec::new();
    let mut pages = 0;
    loop {
        let (status, _, body) = client.get_with(&url, &[("authorization", &auth)]).await;
        assert_eq!(status, 200);
        pages += 1;
        let page: Value = serde_json::from_slice(&body).unwrap();
        for m in page["value"].as_array().unwrap() {
            seen_ids.push(m["id"].as_str().unwrap().to_owned());
        }
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&proxy.url), "{next}");
                assert!(
                    next.contains("%24skip="),
                    "query kept byte for byte: {next}"
                );
                url = next.to_owned();
            }
            None => break,
        }
        assert!(pages < 50, "paging does not end");
    }
    assert!(pages >= 3, "25 seeded inbox messages in pages of 10");
    let prefer_seen = sim.stats().await["prefer_seen"].clone();
    assert_eq!(
        prefer_seen["IdType=\"ImmutableId\""].as_u64(),
        Some(pages),
        "every page went through the proxy with the header: {prefer_seen}"
    );
    let unique: std::collections::HashSet<_> = seen_ids.iter().collect();
    assert_eq!(unique.len(), seen_ids.len());
}

#[tokio::test]
async fn location_content_location_and_other_hosts() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let (status, headers, body) = client.get(&format!("{}/sim/echo-links", proxy.url)).await;
    assert_eq!(status, 200);
    let location = headers["location"].to_str().unwrap();
    assert!(location.starts_with(&proxy.url), "{location}");
    let content_location = headers["content-location"].to_str().unwrap();
    assert!(
        content_location.starts_with(&proxy.url),
        "{content_location}"
    );
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["@odata.nextLink"],
        format!("{}/v1.0/me/messages?%24skip=10", proxy.url)
    );
    assert!(json["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .starts_with(&proxy.url));
    assert!(json["other"]
        .as_str()
        .unwrap()
        .starts_with("https://outlook.office.com/"));
}

#[tokio::test]
async fn a_created_item_location_points_at_the_proxy() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let req = Request::post(format!("{}/v1.0/users/{ADELE}/messages", proxy.url))
        .header("authorization", bearer(ADELE))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"subject": "draft from a legacy app"}).to_string(),
        )))
        .unwrap();
    let (status, headers, body) = client.send(req).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let location = headers["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/v1.0/", proxy.url)),
        "{location}"
    );
}

#[tokio::test]
async fn delta_next_and_delta_links_are_rewritten() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let auth = bearer(ADELE);
    let mut url = format!(
        "{}/v1.0/users/{ADELE}/mailFolders/inbox/messages/delta",
        proxy.url
    );
    let mut delta_link = None;
    for _ in 0..50 {
        let (status, _, body) = client.get_with(&url, &[("authorization", &auth)]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let page: Value = serde_json::from_slice(&body).unwrap();
        if let Some(next) = page["@odata.nextLink"].as_str() {
            assert!(next.starts_with(&proxy.url), "{next}");
            url = next.to_owned();
            continue;
        }
        delta_link = page["@odata.deltaLink"].as_str().map(str::to_owned);
        break;
    }
    let delta_link = delta_link.expect("delta ends with a deltaLink");
    assert!(delta_link.starts_with(&proxy.url), "{delta_link}");
    let (status, _, _) = client
        .get_with(&delta_link, &[("authorization", &auth)])
        .await;
    assert_eq!(status, 200);
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        other => panic!("unexpected coding {other}"),
    }
    out
}

#[tokio::test]
async fn compressed_json_is_decoded_rewritten_and_re_encoded() {
    let sim = Sim::start().await;
    sim.configure(json!({"compress": true})).await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    for coding in ["gzip", "deflate", "br"] {
        let (status, headers, body) = client
            .get_with(
                &format!("{}/v1.0/users/{ADELE}/messages?$top=5", proxy.url),
                &[
                    ("authorization", &bearer(ADELE)),
                    ("accept-encoding", coding),
                ],
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-encoding"], coding);
        assert_eq!(
            headers["content-length"].to_str().unwrap(),
            body.len().to_string()
        );
        let page: Value = serde_json::from_slice(&decode(coding, &body)).unwrap();
        let next = page["@odata.nextLink"].as_str().unwrap();
        assert!(next.starts_with(&proxy.url), "{coding}: {next}");
    }
}

#[tokio::test]
async fn next_links_inside_batch_sub_responses_are_rewritten() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let batch = json!({"requests": [
        {"id": "a", "method": "GET", "url": format!("/users/{ADELE}/messages?$top=2")}
    ]});
    let req = Request::post(format!("{}/v1.0/$batch", proxy.url))
        .header("authorization", bearer(ADELE))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(batch.to_string())))
        .unwrap();
    let (status, _, body) = client.send(req).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let next = answer["responses"][0]["body"]["@odata.nextLink"]
        .as_str()
        .unwrap();
    assert!(next.starts_with(&proxy.url), "{next}");
}

#[test]
fn gzip_helper_round_trips() {
    // Guards the test's own decoder so a failure above means the proxy, not the test.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b"{}").unwrap();
    assert_eq!(decode("gzip", &enc.finish().unwrap()), b"{}");
}
