//! The simulator spoken to over real HTTP, as the proxy and its tests will: paging links,
//! `Prefer` handling, moves, translateExchangeIds, `$batch`, throttling, statistics and
//! compression.

use std::io::Read;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use immutable_id_proxy::sim::{self, token, Simulator, SEED_USERS};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const IMMUTABLE: &str = "IdType=\"ImmutableId\"";

struct Running {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    token: String,
    _stop: oneshot::Sender<()>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn start() -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(sim::serve(Simulator::new(), listener, None, async move {
        let _ = stopped.await;
    }));
    let adele = SEED_USERS[0];
    Running {
        base,
        client: Client::builder(TokioExecutor::new()).build_http(),
        token: token::mint(adele.tenant_id, adele.user_id, "test-app", false),
        _stop: stop,
    }
}

impl Running {
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let uri = if path.starts_with("http") {
            path.replace("https://graph.microsoft.com", &self.base)
        } else {
            format!("{}{path}", self.base)
        };
        let mut request = Request::builder().method(method).uri(uri);
        if !path.contains("/sim/") {
            request = request.header("authorization", format!("Bearer {}", self.token));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(
                request
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap(),
            )
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.call(Method::GET, path, headers, "").await
    }
}

#[tokio::test]
async fn list_follows_absolute_next_links_to_the_end() {
    let sim = start().await;
    let mut next = "/v1.0/me/mailFolders/inbox/messages".to_string();
    let mut ids = Vec::new();
    let mut links = Vec::new();
    loop {
        let page = sim.get(&next, &[]).await;
        assert_eq!(page.status, 200);
        let body = page.json();
        ids.extend(
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string()),
        );
        match body["@odata.nextLink"].as_str() {
            Some(link) => {
                links.push(link.to_string());
                next = link.to_string();
            }
            None => break,
        }
    }
    assert_eq!(ids.len(), 25);
    assert_eq!(
        links,
        [
            "https://graph.microsoft.com/v1.0/me/mailFolders/inbox/messages?%24skip=10",
            "https://graph.microsoft.com/v1.0/me/mailFolders/inbox/messages?%24skip=20"
        ]
    );
}

#[tokio::test]
async fn prefer_immutable_returns_immutable_ids_and_preference_applied() {
    let sim = start().await;
    let answer = sim
        .get(
            "/v1.0/users/AdeleV@contoso.onmicrosoft.com/messages?$top=5",
            &[("prefer", IMMUTABLE)],
        )
        .await;
    assert_eq!(answer.headers["preference-applied"], IMMUTABLE);
    for message in answer.json()["value"].as_array().unwrap() {
        let id = message["id"].as_str().unwrap();
        assert_eq!(id.len(), 68);
        assert!(id.starts_with("AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A"));
    }
    let plain = sim.get("/beta/me/messages?$top=1", &[]).await;
    assert!(plain.headers.get("preference-applied").is_none());
    assert_eq!(plain.json()["value"][0]["id"].as_str().unwrap().len(), 152);
}

#[tokio::test]
async fn moved_message_old_id_is_404_and_immutable_id_still_works() {
    let sim = start().await;
    let first = sim.get("/v1.0/me/messages?$top=1", &[]).await.json();
    let old = first["value"][0]["id"].as_str().unwrap().to_string();
    let immutable = sim
        .get(
            &format!("/v1.0/me/messages/{old}"),
            &[("prefer", IMMUTABLE)],
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let moved = sim
        .call(
            Method::POST,
            &format!("/v1.0/me/messages/{old}/move"),
            &[("content-type", "application/json")],
            r#"{"destinationId":"archive"}"#,
        )
        .await;
    assert_eq!(moved.status, 201);
    let moved = moved.json();
    assert_ne!(moved["id"].as_str().unwrap(), old);
    let gone = sim.get(&format!("/v1.0/me/messages/{old}"), &[]).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"]["code"], "ErrorItemNotFound");
    assert!(gone.headers.contains_key("request-id"));
    let still = sim
        .get(
            &format!("/v1.0/me/messages/{immutable}"),
            &[("prefer", IMMUTABLE)],
        )
        .await;
    assert_eq!(still.status, 200);
    assert_eq!(still.json()["id"], immutable.as_str());
    assert_eq!(still.json()["parentFolderId"], moved["parentFolderId"]);
}

#[tokio::test]
async fn translate_maps_rest_ids_to_immutable_with_per_id_errors() {
    let sim = start().await;
    let regular = sim.get("/v1.0/me/messages?$top=2", &[]).await.json();
    let immutable = sim
        .get("/v1.0/me/messages?$top=2", &[("prefer", IMMUTABLE)])
        .await
        .json();
    let inputs = [
        regular["value"][0]["id"].as_str().unwrap(),
        regular["value"][1]["id"].as_str().unwrap(),
        "junk",
    ];
    let body = json!({"inputIds": inputs, "sourceIdType": "restId", "targetIdType": "restImmutableEntryId"});
    let answer = sim
        .call(
            Method::POST,
            "/v1.0/me/translateExchangeIds",
            &[("content-type", "application/json")],
            &body.to_string(),
        )
        .await;
    assert_eq!(answer.status, 200);
    let value = answer.json()["value"].clone();
    assert_eq!(value[0]["targetId"], immutable["value"][0]["id"]);
    assert_eq!(value[1]["targetId"], immutable["value"][1]["id"]);
    assert_eq!(value[2]["sourceId"], "junk");
    assert_eq!(value[2]["errorDetails"]["code"], "ErrorInvalidIdMalformed");
    let stats = sim.get("/sim/stats", &[]).await.json();
    assert_eq!(stats["translate_calls"], 1);
    assert_eq!(stats["translate_ids_per_call"], json!([3]));
}

#[tokio::test]
async fn batch_runs_sub_requests_with_their_own_headers_and_424_for_failed_dependencies() {
    let sim = start().await;
    let body = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/me/messages/notanid"},
        {"id": "2", "method": "GET", "url": "me/messages?$top=1", "dependsOn": ["1"]},
        {"id": "3", "method": "GET", "url": "me/messages?$top=1", "headers": {"Prefer": IMMUTABLE}},
        {"id": "4", "method": "GET", "url": "/me/messages?$top=1"},
    ]});
    let answer = sim
        .call(
            Method::POST,
            "/v1.0/$batch",
            &[("content-type", "application/json"), ("prefer", IMMUTABLE)],
            &body.to_string(),
        )
        .await;
    assert_eq!(answer.status, 200);
    let responses = answer.json()["responses"].clone();
    let statuses: Vec<u64> = (0..4)
        .map(|i| responses[i]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [400, 424, 200, 200]);
    assert_eq!(
        responses[2]["body"]["value"][0]["id"]
            .as_str()
            .unwrap()
            .len(),
        68
    );
    // The outer Prefer is not applied to sub-requests.
    assert_eq!(
        responses[3]["body"]["value"][0]["id"]
            .as_str()
            .unwrap()
            .len(),
        152
    );
    let stats = sim.get("/sim/stats", &[]).await.json();
    assert_eq!(stats["batch_subrequests"], 4);
    assert_eq!(stats["prefer_seen"][IMMUTABLE], 2);
}

#[tokio::test]
async fn throttle_budget_answers_429_with_retry_after() {
    let sim = start().await;
    let config = json!({"throttle": {"budget": 2, "window_ms": 600000, "concurrency": 4, "retry_after_s": 7}});
    let set = sim
        .call(Method::POST, "/sim/config", &[], &config.to_string())
        .await;
    assert_eq!(set.status, 200);
    assert_eq!(sim.get("/v1.0/me", &[]).await.status, 200);
    assert_eq!(sim.get("/v1.0/me", &[]).await.status, 200);
    let refused = sim.get("/v1.0/me", &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["retry-after"], "7");
    assert_eq!(refused.json()["error"]["code"], "TooManyRequests");
    // Another mailbox has its own budget.
    assert_eq!(
        sim.get("/v1.0/users/alexw@contoso.onmicrosoft.com", &[])
            .await
            .status,
        200
    );
    sim.call(Method::POST, "/sim/reset", &[], "").await;
    assert_eq!(sim.get("/v1.0/me", &[]).await.status, 200);
}

#[tokio::test]
async fn injected_503_comes_once_with_its_retry_after() {
    let sim = start().await;
    let config = json!({"fail_next": [{"status": 503, "retry_after": "1"}, {"status": 503}]});
    sim.call(Method::POST, "/sim/config", &[], &config.to_string())
        .await;
    let first = sim.get("/v1.0/me", &[]).await;
    assert_eq!(
        (first.status, first.headers["retry-after"].to_str().unwrap()),
        (StatusCode::SERVICE_UNAVAILABLE, "1")
    );
    let second = sim.get("/v1.0/me", &[]).await;
    assert_eq!(second.status, 503);
    assert!(second.headers.get("retry-after").is_none());
    assert_eq!(sim.get("/v1.0/me", &[]).await.status, 200);
}

#[tokio::test]
async fn stats_and_request_log_report_what_arrived() {
    let sim = start().await;
    sim.get(
        "/v1.0/me/messages?$top=1",
        &[("prefer", IMMUTABLE), ("client-request-id", "abc")],
    )
    .await;
    sim.get("/v1.0/me/events", &[]).await;
    let stats = sim.get("/sim/stats", &[]).await.json();
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["prefer_seen"], json!({IMMUTABLE: 1}));
    assert_eq!(
        stats["max_concurrency"]["adelev@contoso.onmicrosoft.com"],
        1
    );
    let log = sim.get("/sim/requests", &[]).await.json();
    let first = &log["requests"][0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["uri"], "/v1.0/me/messages?$top=1");
    let headers = first["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["client-request-id", "abc"])));
    assert!(headers.iter().any(|h| h[0] == "host"));
}

#[tokio::test]
async fn compression_follows_the_first_supported_accept_encoding() {
    let sim = start().await;
    sim.call(Method::POST, "/sim/config", &[], r#"{"compress": true}"#)
        .await;
    let answer = sim
        .get(
            "/v1.0/me/messages",
            &[("accept-encoding", "zstd, gzip, br")],
        )
        .await;
    assert_eq!(answer.headers["content-encoding"], "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(answer.body.as_ref())
        .read_to_string(&mut text)
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["value"].as_array().unwrap().len(), 10);
    let plain = sim.get("/v1.0/me", &[]).await;
    assert!(plain.headers.get("content-encoding").is_none());
    assert_eq!(
        plain.json()["userPrincipalName"],
        "adelev@contoso.onmicrosoft.com"
    );
}

#[tokio::test]
async fn missing_or_garbage_tokens_get_401_but_sim_routes_do_not_need_one() {
    let sim = start().await;
    let bare = sim
        .client
        .request(
            Request::get(format!("{}/v1.0/me", sim.base))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    let garbage = sim
        .client
        .request(
            Request::get(format!("{}/v1.0/me", sim.base))
                .header("authorization", "Bearer EwB0A8l6")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(garbage.status(), 401);
    let body = garbage.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    let minted = sim
        .get("/sim/token?user=alexw@contoso.onmicrosoft.com", &[])
        .await;
    assert_eq!(minted.status, 200);
    let token = String::from_utf8(minted.body.to_vec()).unwrap();
    let claims = token::parse_authorization(&format!("Bearer {token}")).unwrap();
    assert_eq!(claims.object_id, SEED_USERS[1].user_id);
}

#[tokio::test]
async fn upload_counts_and_download_streams_the_asked_length() {
    let sim = start().await;
    let upload = sim
        .call(Method::PUT, "/sim/upload", &[], &"x".repeat(200_000))
        .await;
    assert_eq!(upload.json(), json!({"bytes": 200_000}));
    let download = sim.get("/sim/download?bytes=150000", &[]).await;
    assert_eq!(download.headers["content-length"], "150000");
    assert_eq!(download.body.len(), 150_000);
    let links = sim.get("/sim/echo-links", &[]).await;
    assert_eq!(
        links.json()["@odata.nextLink"],
        "https://graph.microsoft.com/v1.0/me/messages?%24skip=10"
    );
    assert!(links.headers["location"]
        .to_str()
        .unwrap()
        .starts_with("https://graph.microsoft.com/"));
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_too() {
    let sim = start().await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let response = client
        .request(
            Request::get(format!("{}/v1.0/me/mailFolders", sim.base))
                .header("authorization", format!("Bearer {}", sim.token))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Inbox", "Drafts", "Sent Items", "Archive", "Deleted Items"]
    );
}
