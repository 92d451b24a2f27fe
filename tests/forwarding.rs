//! Step 5, forward: what Graph receives, streaming in both directions, and the errors the
//! proxy itself answers with.

mod support;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn hop_by_hop_and_revealing_headers_never_reach_graph_and_host_is_the_upstreams() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let (status, _, _) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[
                ("authorization", &bearer(ADELE)),
                ("connection", "keep-alive, X-Private-Hop"),
                ("x-private-hop", "secret"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic c2VjcmV0"),
                ("x-forwarded-for", "10.1.2.3"),
                ("forwarded", "for=10.1.2.3"),
                ("x-app-header", "kept"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let seen = sim.last_request_to("/messages").await;
    for gone in [
        "x-private-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-forwarded-for",
        "forwarded",
    ] {
        assert!(
            recorded_header(&seen, gone).is_empty(),
            "{gone} reached Graph"
        );
    }
    assert_eq!(
        recorded_header(&seen, "x-app-header"),
        vec!["kept".to_owned()]
    );
    assert_eq!(recorded_header(&seen, "host"), vec![sim.addr.to_string()]);
    let ids = recorded_header(&seen, "client-request-id");
    assert_eq!(ids.len(), 1);
    assert_eq!(
        uuid::Uuid::parse_str(&ids[0]).map(|u| u.get_version_num()),
        Ok(4)
    );
}

#[tokio::test]
async fn an_apps_own_client_request_id_is_kept() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let (status, _, _) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[
                ("authorization", &bearer(ADELE)),
                ("client-request-id", "legacy-app-42"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(
        recorded_header(&seen, "client-request-id"),
        vec!["legacy-app-42".to_owned()]
    );
}

#[tokio::test]
async fn an_absolute_form_target_for_another_host_goes_to_the_configured_upstream_only() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let token = token_for(ADELE);
    let request = format!(
        "GET http://evil.example/v1.0/users/{ADELE}/messages?$top=1 HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(recorded_header(&seen, "host"), vec![sim.addr.to_string()]);
}

#[tokio::test]
async fn non_utf8_header_values_pass_through() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let req = Request::get(format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url))
        .header("authorization", bearer(ADELE))
        .header(
            "x-legacy",
            http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .body(Full::<Bytes>::default())
        .unwrap();
    let (status, _, _) = client.send(req).await;
    assert_eq!(status, 200);
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(
        recorded_header(&seen, "x-legacy"),
        vec!["caf\u{fffd}".to_owned()]
    );
}

/// A body of `remaining` bytes made on the fly, 64 KiB at a time, never held whole.
struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

const GIB: u64 = 1 << 30;
/// Far below 1 GiB, far above what a streaming proxy needs.
const STREAMING_RSS_LIMIT_KIB: u64 = 128 * 1024;

#[tokio::test]
async fn a_1_gib_upload_and_download_pass_in_constant_memory() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = Client::builder(TokioExecutor::new()).build_http::<Generated>();
    let upload = Request::put(format!("{}/sim/upload", proxy.url))
        .body(Generated {
            remaining: GIB,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        })
        .unwrap();
    let response = client.request(upload).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["bytes"].as_u64(), Some(GIB));

    let download = HttpClient::h1();
    let response = download
        .raw()
        .request(
            Request::get(format!("{}/sim/download?bytes={GIB}", proxy.url))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, GIB);
    let peak = proxy.peak_rss_kib();
    assert!(
        peak > 0 && peak < STREAMING_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_body_leaves_the_proxy_serving() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = "PUT /sim/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![b'y'; 100_000]).await.unwrap();
        // Dropped here: the client goes away with most of the body unsent.
    }
    let client = HttpClient::h1();
    let (status, _, _) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200);
    let (_, _, health) = client.get(&format!("{}/healthz", proxy.admin)).await;
    assert_eq!(&health[..], b"ok\n");
    proxy.signal("TERM");
    let (code, stderr) = proxy.wait();
    assert_eq!(code, Some(0));
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let huge = "a".repeat(512 * 1024);
    let request = format!("GET /v1.0/me HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn graph_unreachable_is_a_502_in_graphs_error_shape() {
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = ProxyProcess::start(&config_for(&format!("http://{closed}"), ""));
    let client = HttpClient::h1();
    let (status, headers, body) = client.get(&format!("{}/v1.0/me", proxy.url)).await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "application/json");
    let request_id = headers["request-id"].to_str().unwrap().to_owned();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "BadGateway");
    assert_eq!(
        error["error"]["innerError"]["request-id"],
        request_id.as_str()
    );
    assert!(error["error"]["innerError"]["date"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
}

#[tokio::test]
async fn graph_answering_too_late_is_a_504() {
    let sim = Sim::start().await;
    sim.configure(serde_json::json!({"delay_ms": 3000})).await;
    let proxy = ProxyProcess::start(
        &config_for(&sim.url, "").replace("request_timeout_ms = 20000", "request_timeout_ms = 300"),
    );
    let client = HttpClient::h1();
    let (status, headers, body) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 504);
    assert!(headers.contains_key("request-id"));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "GatewayTimeout");
}

#[tokio::test]
async fn graphs_own_errors_pass_through_unchanged() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let (direct_status, _, _) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages/not-an-id", sim.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    let (status, _, body) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages/not-an-id", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, direct_status);
    assert_eq!(status, 400);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "ErrorInvalidIdMalformed");
}

/// How a plain connection starts decides how it is served (hyper's HTTP/1.1 or HTTP/2
/// connection, or hyper-util's detection when the first bytes do not tell): each way works.
#[tokio::test]
async fn every_way_a_plain_connection_may_start_is_served() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let token = bearer(ADELE);

    // HTTP/2 with prior knowledge (h2c): the connection preface comes first.
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let request = Request::get(format!("http://{addr}/v1.0/users/{ADELE}/messages?$top=1"))
        .header("authorization", token.as_str())
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await.expect("an h2c answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(recorded_header(&seen, "prefer"), ["IdType=\"ImmutableId\""]);

    // HTTP/1.1 whose first byte arrives alone: "P" could still be the HTTP/2 preface.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"P").await.unwrap();
    slow.flush().await.unwrap();
    // Not a timing assertion: only gives the first byte its own segment.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let body = r#"{"subject":"one byte first"}"#;
    let rest = format!(
        "OST /v1.0/users/{ADELE}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    slow.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("one byte first"), "{answer}");
}
