//! Step 3, rewrite_ids, end to end: an app keeps using the regular IDs it stored, and they
//! keep working through the proxy after the items move.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const IMMUTABLE_PREFIX: &str = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A";

fn rewrite_config(sim: &Sim, store: &TempDir, extra: &str) -> String {
    config_for(
        &sim.url,
        &format!(
            "[rewrite]\nenabled = true\nstore = \"{}\"\n{extra}",
            store.join("idmap.redb").display()
        ),
    )
}

fn enc(id: &str) -> String {
    id.replace('=', "%3D")
}

/// The regular ID an old app stored: read straight from Graph without the header.
async fn stored_regular_ids(sim: &Sim, n: usize) -> Vec<String> {
    let client = HttpClient::h1();
    let (status, _, body) = client
        .get_with(
            &format!(
                "{}/v1.0/users/{ADELE}/mailFolders/inbox/messages?$top={n}",
                sim.url
            ),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_slice(&body).unwrap();
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn get_json(client: &HttpClient, url: &str, upn: &str) -> (u16, Value) {
    let (status, _, body) = client
        .get_with(url, &[("authorization", &bearer(upn))])
        .await;
    (
        status.as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn translate_calls(sim: &Sim) -> u64 {
    sim.stats().await["translate_calls"].as_u64().unwrap_or(0)
}

async fn move_directly(sim: &Sim, regular: &str) -> Value {
    let client = HttpClient::h1();
    let request = Request::post(format!(
        "{}/v1.0/users/{ADELE}/messages/{}/move",
        sim.url,
        enc(regular)
    ))
    .header("authorization", bearer(ADELE))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(
        b"{\"destinationId\":\"archive\"}",
    )))
    .unwrap();
    let (status, _, body) = client.send(request).await;
    assert_eq!(status, 201);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn an_id_stored_before_a_move_keeps_working_through_the_proxy_even_after_a_restart() {
    let sim = Sim::start().await;
    let store = TempDir::new("store");
    let config = rewrite_config(&sim, &store, "");
    let proxy = ProxyProcess::start(&config);
    let client = HttpClient::h1();
    let regular = stored_regular_ids(&sim, 1).await.remove(0);
    let through_proxy = format!(
        "{}/v1.0/users/{ADELE}/messages/{}",
        proxy.url,
        enc(&regular)
    );
    let straight = format!("{}/v1.0/users/{ADELE}/messages/{}", sim.url, enc(&regular));

    let (status, before) = get_json(&client, &through_proxy, ADELE).await;
    assert_eq!(status, 200);
    let immutable = before["id"].as_str().unwrap().to_owned();
    assert!(immutable.starts_with(IMMUTABLE_PREFIX), "{immutable}");
    assert_eq!(translate_calls(&sim).await, 1);

    let moved = move_directly(&sim, &regular).await;
    assert_ne!(moved["parentFolderId"], before["parentFolderId"]);
    let (status, gone) = get_json(&client, &straight, ADELE).await;
    assert_eq!(
        status, 404,
        "Graph itself can no longer resolve the stored ID"
    );
    assert_eq!(gone["error"]["code"], "ErrorItemNotFound");

    let (status, after) = get_json(&client, &through_proxy, ADELE).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["id"], immutable.as_str());
    assert_eq!(after["parentFolderId"], moved["parentFolderId"]);
    assert_eq!(translate_calls(&sim).await, 1, "served from the cache");
    let (_, _, metrics) = client.get(&format!("{}/metrics", proxy.admin)).await;
    assert!(String::from_utf8_lossy(&metrics).contains("idproxy_id_cache_hits_total"));

    proxy.signal("TERM");
    assert_eq!(proxy.wait().0, Some(0));
    let proxy = ProxyProcess::start(&config);
    let through_new = format!(
        "{}/v1.0/users/{ADELE}/messages/{}",
        proxy.url,
        enc(&regular)
    );
    let (status, again) = get_json(&client, &through_new, ADELE).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], immutable.as_str());
    assert_eq!(
        translate_calls(&sim).await,
        1,
        "the mapping came from the store file"
    );
}

#[tokio::test]
async fn concurrent_misses_for_one_mailbox_are_coalesced_and_a_second_wave_costs_nothing() {
    const N: usize = 1000;
    let sim = Sim::start().await;
    let store = TempDir::new("store");
    let client = HttpClient::h1();
    let mut regulars = Vec::with_capacity(N);
    for i in 0..N {
        let request = Request::post(format!("{}/v1.0/users/{ADELE}/messages", sim.url))
            .header("authorization", bearer(ADELE))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({"subject": format!("m{i}")}).to_string(),
            )))
            .unwrap();
        let (status, _, body) = client.send(request).await;
        assert_eq!(status, 201);
        let created: Value = serde_json::from_slice(&body).unwrap();
        regulars.push(created["id"].as_str().unwrap().to_owned());
    }
    // Limits off: this measures coalescing, not the per-mailbox concurrency cap (which
    // would let only 4 requests, and so 4 IDs, into each batch window). A wide window keeps
    // the count independent of how fast a loaded machine sends the 1,000 requests.
    let proxy = ProxyProcess::start(&rewrite_config(
        &sim,
        &store,
        "batch_window_ms = 1000\n[rate_limit]\nenabled = false\n",
    ));
    for wave in 0..2 {
        let mut tasks = Vec::with_capacity(N);
        for regular in &regulars {
            let client = client.clone();
            let url = format!("{}/v1.0/users/{ADELE}/messages/{}", proxy.url, enc(regular));
            tasks.push(tokio::spawn(async move {
                let (status, body) = get_json(&client, &url, ADELE).await;
                (status, body["id"].as_str().unwrap_or("").to_owned())
            }));
        }
        for task in tasks {
            let (status, id) = task.await.unwrap();
            assert_eq!(status, 200);
            assert!(id.starts_with(IMMUTABLE_PREFIX));
        }
        let calls = translate_calls(&sim).await;
        if wave == 0 {
            assert!(
                (1..=3).contains(&calls),
                "{calls} translate calls for {N} IDs"
            );
        } else {
            let first = sim.stats().await["translate_ids_per_call"].clone();
            assert!(calls <= 3, "the second wave made calls: {first}");
        }
    }
    let per_call: Vec<u64> = sim.stats().await["translate_ids_per_call"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(
        per_call.iter().sum::<u64>(),
        N as u64,
        "each ID translated once: {per_call:?}"
    );
}

#[tokio::test]
async fn folders_conversations_guids_upns_and_immutable_ids_are_never_touched() {
    let sim = Sim::start().await;
    let store = TempDir::new("store");
    let proxy = ProxyProcess::start(&rewrite_config(&sim, &store, ""));
    let client = HttpClient::h1();
    let (_, folders) = get_json(
        &client,
        &format!("{}/v1.0/users/{ADELE}/mailFolders", sim.url),
        ADELE,
    )
    .await;
    let folder = folders["value"][0]["id"].as_str().unwrap().to_owned();
    let (_, page) = get_json(
        &client,
        &format!("{}/v1.0/users/{ADELE}/messages?$top=1", sim.url),
        ADELE,
    )
    .await;
    let conversation = page["value"][0]["conversationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let paths = [
        format!("/v1.0/users/{ADELE}/mailFolders/{}/messages?$top=1", enc(&folder)),
        format!("/v1.0/users/{ADELE}/messages?$filter=conversationId%20eq%20'{}'", enc(&conversation)),
        "/v1.0/users/6f9a2a92-8527-4d64-837e-b5312852f36d/messages/AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0AGnUPtcQC-Eiwmc39SmMpPgAAA8ZAfgAA".to_owned(),
    ];
    for path in &paths {
        let _ = client
            .get_with(
                &format!("{}{path}", proxy.url),
                &[("authorization", &bearer(ADELE))],
            )
            .await;
        let seen = sim.requests().await.last().cloned().unwrap();
        assert_eq!(seen["uri"].as_str().unwrap(), path.as_str());
    }
    assert_eq!(translate_calls(&sim).await, 0);
}

#[tokio::test]
async fn ids_in_batch_sub_request_urls_and_json_bodies_are_rewritten() {
    let sim = Sim::start().await;
    let store = TempDir::new("store");
    let proxy = ProxyProcess::start(&rewrite_config(&sim, &store, ""));
    let client = HttpClient::h1();
    let regulars = stored_regular_ids(&sim, 2).await;
    move_directly(&sim, &regulars[0]).await;
    // The first ID moved before the proxy ever saw it: nothing can rescue it (Graph refuses
    // to translate a stale ID), and the sub-request gets Graph's own 404.
    let batch = json!({"requests": [
        {"id": "stale", "method": "GET", "url": format!("/users/{ADELE}/messages/{}", enc(&regulars[0]))},
        {"id": "live", "method": "GET", "url": format!("/users/{ADELE}/messages/{}", enc(&regulars[1]))}
    ]});
    let request = Request::post(format!("{}/v1.0/$batch", proxy.url))
        .header("authorization", bearer(ADELE))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(batch.to_string())))
        .unwrap();
    let (status, _, body) = client.send(request).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let by_id = |id: &str| {
        answer["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("stale")["status"], 404);
    assert_eq!(by_id("live")["status"], 200);
    assert!(by_id("live")["body"]["id"]
        .as_str()
        .unwrap()
        .starts_with(IMMUTABLE_PREFIX));
    let seen = sim.last_request_to("$batch").await;
    let sent = seen["body_len"].as_u64().unwrap();
    assert!(sent > 0);
    // The live ID went out immutable: moving it now does not break the app's next call.
    move_directly(&sim, &regulars[1]).await;
    let (status, _) = get_json(
        &client,
        &format!(
            "{}/v1.0/users/{ADELE}/messages/{}",
            proxy.url,
            enc(&regulars[1])
        ),
        ADELE,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_failed_translation_forwards_the_original_by_default_and_fails_with_on_error_fail() {
    for (on_error, expected) in [("pass", 200u16), ("fail", 502)] {
        let sim = Sim::start().await;
        sim.configure(
            json!({"fail_next": [{"status": 503, "path_contains": "translateExchangeIds"}]}),
        )
        .await;
        let store = TempDir::new("store");
        let proxy = ProxyProcess::start(&rewrite_config(
            &sim,
            &store,
            &format!("on_error = \"{on_error}\"\n"),
        ));
        let client = HttpClient::h1();
        let regular = stored_regular_ids(&sim, 1).await.remove(0);
        let (status, body) = get_json(
            &client,
            &format!(
                "{}/v1.0/users/{ADELE}/messages/{}",
                proxy.url,
                enc(&regular)
            ),
            ADELE,
        )
        .await;
        assert_eq!(status, expected, "on_error = {on_error}: {body}");
        if on_error == "fail" {
            assert_eq!(body["error"]["code"], "BadGateway");
        } else {
            assert!(sim.last_request_to(&enc(&regular)).await["uri"]
                .as_str()
                .is_some());
        }
    }
}

#[tokio::test]
async fn a_404_for_a_rewritten_id_forgets_the_mapping() {
    let sim = Sim::start().await;
    let store = TempDir::new("store");
    let proxy = ProxyProcess::start(&rewrite_config(&sim, &store, "negative_ttl_s = 1\n"));
    let client = HttpClient::h1();
    let regular = stored_regular_ids(&sim, 1).await.remove(0);
    let url = format!(
        "{}/v1.0/users/{ADELE}/messages/{}",
        proxy.url,
        enc(&regular)
    );
    let (status, item) = get_json(&client, &url, ADELE).await;
    assert_eq!(status, 200);
    let immutable = item["id"].as_str().unwrap().to_owned();
    let delete = Request::delete(format!(
        "{}/v1.0/users/{ADELE}/messages/{immutable}",
        sim.url
    ))
    .header("authorization", bearer(ADELE))
    .body(Full::default())
    .unwrap();
    assert_eq!(client.send(delete).await.0, 204);
    let (status, _) = get_json(&client, &url, ADELE).await;
    assert_eq!(status, 404);
    let calls = translate_calls(&sim).await;
    let (status, _) = get_json(&client, &url, ADELE).await;
    assert_eq!(status, 404);
    assert_eq!(
        translate_calls(&sim).await,
        calls + 1,
        "the mapping was forgotten, so the proxy asked Graph again"
    );
}

#[tokio::test]
async fn mappings_posted_to_idmap_are_served_without_asking_graph() {
    let sim = Sim::start().await;
    let store = TempDir::new("store");
    let proxy = ProxyProcess::start(&rewrite_config(&sim, &store, ""));
    let client = HttpClient::h1();
    let regular = stored_regular_ids(&sim, 1).await.remove(0);
    let (_, item) = get_json(
        &client,
        &format!("{}/v1.0/users/{ADELE}/messages/{}", sim.url, enc(&regular)),
        ADELE,
    )
    .await;
    let immutable = {
        let (_, with_header) = {
            let (status, _, body) = client
                .get_with(
                    &format!("{}/v1.0/users/{ADELE}/messages/{}", sim.url, enc(&regular)),
                    &[
                        ("authorization", &bearer(ADELE)),
                        ("prefer", "IdType=\"ImmutableId\""),
                    ],
                )
                .await;
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        };
        with_header["id"].as_str().unwrap().to_owned()
    };
    assert!(item["subject"].is_string());
    let tenant = immutable_id_proxy::sim::CONTOSO_TENANT_ID;
    let request = Request::post(format!("{}/idmap?tenant={tenant}", proxy.admin))
        .header("content-type", "text/csv")
        .body(Full::new(Bytes::from(format!(
            "source_id,target_id\n{regular},{immutable}\n"
        ))))
        .unwrap();
    let (status, _, body) = client.send(request).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["imported"], 1);
    move_directly(&sim, &regular).await;
    let (status, after) = get_json(
        &client,
        &format!(
            "{}/v1.0/users/{ADELE}/messages/{}",
            proxy.url,
            enc(&regular)
        ),
        ADELE,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(after["id"], immutable.as_str());
    assert_eq!(translate_calls(&sim).await, 0);
}

#[tokio::test]
async fn with_responses_on_regular_ids_from_search_become_immutable() {
    let sim = Sim::start().await;
    let store = TempDir::new("store");
    let proxy = ProxyProcess::start(&rewrite_config(&sim, &store, "responses = true\n"));
    let client = HttpClient::h1();
    let (status, page) = get_json(
        &client,
        &format!(
            "{}/v1.0/users/{ADELE}/messages?$search=%22a%22&$top=3",
            proxy.url
        ),
        ADELE,
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(!ids.is_empty());
    for id in ids {
        assert!(id.starts_with(IMMUTABLE_PREFIX), "{id}");
    }
}

#[test]
fn a_corrupt_store_file_is_a_clear_startup_error_naming_rewrite_store() {
    let dir = TempDir::new("store");
    std::fs::write(dir.join("idmap.redb"), b"this is not a redb file at all").unwrap();
    std::fs::write(
        dir.join("c.toml"),
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[rewrite]\nenabled = true\nstore = \"{}\"\n",
            dir.join("idmap.redb").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.join("c.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no port was bound");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rewrite.store"));
}

/// A relay in front of the simulator that drops the first connection whose first request
/// is a translateExchangeIds call, after reading its head and before any answer: what the
/// proxy sees when Graph closes a pooled connection just as the call is written to it.
/// Returns the relay's URL and the number of translate calls it has seen.
async fn relay_dropping_the_first_translate_call(
    sim: &Sim,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sim_addr = sim.url.trim_start_matches("http://").to_owned();
    let translates = Arc::new(AtomicUsize::new(0));
    let seen = translates.clone();
    tokio::spawn(async move {
        while let Ok((mut app_side, _)) = listener.accept().await {
            let (seen, sim_addr) = (seen.clone(), sim_addr.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match app_side.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let is_translate = String::from_utf8_lossy(&head).contains("translateExchangeIds");
                if is_translate && seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    return; // closed with no answer
                }
                let Ok(mut graph_side) = TcpStream::connect(&sim_addr).await else {
                    return;
                };
                if graph_side.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut app_side, &mut graph_side).await;
                }
            });
        }
    });
    (url, translates)
}

#[tokio::test]
async fn a_translate_call_whose_connection_closed_before_any_answer_is_sent_again() {
    use std::sync::atomic::Ordering;
    let sim = Sim::start().await;
    let (relay, translates_seen) = relay_dropping_the_first_translate_call(&sim).await;
    let store = TempDir::new("store");
    // on_error = "fail": a look-up that gave up would answer the app 502.
    let config = config_for(
        &relay,
        &format!(
            "[rewrite]\nenabled = true\nstore = \"{}\"\non_error = \"fail\"\n",
            store.join("idmap.redb").display()
        ),
    );
    let proxy = ProxyProcess::start(&config);
    let client = HttpClient::h1();
    let regular = stored_regular_ids(&sim, 1).await.remove(0);
    let through_proxy = format!(
        "{}/v1.0/users/{ADELE}/messages/{}",
        proxy.url,
        enc(&regular)
    );
    let (status, body) = get_json(&client, &through_proxy, ADELE).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        translates_seen.load(Ordering::SeqCst),
        2,
        "dropped once, then sent again"
    );
    assert_eq!(translate_calls(&sim).await, 1, "Graph answered one call");
    let (_, _, metrics) = client.get(&format!("{}/metrics", proxy.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("idproxy_upstream_retries_total 1\n"),
        "{metrics}"
    );
    // The mapping was learned: after the move only the proxy still resolves the stored ID.
    move_directly(&sim, &regular).await;
    let (status, after) = get_json(&client, &through_proxy, ADELE).await;
    assert_eq!(status, 200, "{after}");
    assert!(after["id"].as_str().unwrap().starts_with(IMMUTABLE_PREFIX));
    assert_eq!(translate_calls(&sim).await, 1, "served from the cache");
}
