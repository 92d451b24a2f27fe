//! Faults on both sides of the real binary: a Graph that misbehaves on a raw socket, clients
//! that misbehave, and afterwards the proxy's open descriptors back where they were.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::message_ids;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A "Graph" that answers every connection with `behaviour`.
async fn bad_graph<F, Fut>(behaviour: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(behaviour(stream));
        }
    });
    url
}

/// Reads the request head, so the proxy has finished sending before we misbehave.
async fn read_head(stream: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&byte[..n]),
        }
    }
}

/// Waits until the proxy's descriptor count is back to `baseline` (closing is asynchronous;
/// the wait is bounded by a generous deadline so a leak fails instead of hanging).
async fn assert_fds_back_to(proxy: &ProxyProcess, baseline: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = descriptor_count(proxy.pid());
        if now <= baseline {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "descriptors stayed at {now}, baseline {baseline}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(client: &HttpClient, url: &str) -> (u16, Value) {
    let (status, _, body) = client.get(url).await;
    (
        status.as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn graph_faults_each_have_a_defined_answer_and_leak_nothing() {
    let reset_mid_headers = bad_graph(|mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Ty").await;
        drop(s);
    })
    .await;
    let garbage = bad_graph(|mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    })
    .await;
    for (upstream, expected) in [(reset_mid_headers, 502), (garbage, 502)] {
        let proxy = ProxyProcess::start(&config_for(&upstream, "[upstream]\nmax_retries = 0\n"));
        let client = HttpClient::h1();
        let (status, _) = get(&client, &format!("{}/v1.0/me", proxy.url)).await;
        let baseline = descriptor_count(proxy.pid());
        for _ in 0..5 {
            let (status, error) = get(&client, &format!("{}/v1.0/me", proxy.url)).await;
            assert_eq!(status, expected);
            assert_eq!(error["error"]["code"], "BadGateway");
        }
        assert_eq!(status, expected);
        drop(client);
        assert_fds_back_to(&proxy, baseline).await;
    }
}

#[tokio::test]
async fn an_idempotent_request_on_a_connection_graph_closed_is_sent_again_and_a_post_is_not() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // Every connection answers its first request and closes when its second one arrives:
    // what a keep-alive connection looks like when Graph closes it just as it is reused.
    let heads = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let (seen, seen_posts) = (heads.clone(), posts.clone());
    let graph = bad_graph(move |mut s| {
        let (seen, seen_posts) = (seen.clone(), seen_posts.clone());
        async move {
            for request in 0.. {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                if head.starts_with(b"POST") {
                    seen_posts.fetch_add(1, Ordering::SeqCst);
                }
                if request == 1 {
                    return;
                }
                let body = b"{\"ok\":true}";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.write_all(body).await;
            }
        }
    })
    .await;
    let proxy = ProxyProcess::start(&config_for(&graph, "[upstream]\nmax_retries = 0\n"));
    let client = HttpClient::h1();
    let url = format!("{}/v1.0/me/messages", proxy.url);
    assert_eq!(get(&client, &url).await.0, 200);
    // The second GET goes out on the pooled connection, which closes under it.
    assert_eq!(
        get(&client, &url).await.0,
        200,
        "sent again on a new connection"
    );
    assert_eq!(heads.load(Ordering::SeqCst), 3);
    // A POST on the same kind of connection cannot be sent twice: Graph may have acted on it.
    let post = Request::post(&url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"subject\":\"x\"}")))
        .unwrap();
    let (status, _, body) = client.send(post).await;
    assert_eq!(status.as_u16(), 502);
    let error: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(error["error"]["code"], "BadGateway");
    assert_eq!(
        posts.load(Ordering::SeqCst),
        1,
        "the POST reached Graph once"
    );
    assert_eq!(heads.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_graph_reset_mid_body_ends_the_clients_body_with_an_error_not_a_clean_end() {
    let upstream = bad_graph(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n")
            .await;
        let _ = s.write_all(&[b'x'; 10_000]).await;
        drop(s);
    })
    .await;
    let proxy = ProxyProcess::start(&config_for(&upstream, ""));
    let client = HttpClient::h1();
    let response = client
        .raw()
        .request(
            Request::get(format!("{}/v1.0/me/photo/$value", proxy.url))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the head had already arrived");
    let collected = response.into_body().collect().await;
    assert!(
        collected.is_err(),
        "a truncated body must not look complete to the app"
    );
    let (status, _, _) = client.get(&format!("{}/healthz", proxy.admin)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_100_mib_answer_streams_through_in_constant_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let response = client
        .raw()
        .request(
            Request::get(format!("{}/sim/download?bytes={SIZE}", proxy.url))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, SIZE);
    assert!(
        proxy.peak_rss_kib() < 64 * 1024,
        "peak RSS {} KiB",
        proxy.peak_rss_kib()
    );
}

#[tokio::test]
async fn client_faults_each_have_a_defined_outcome_and_leak_nothing() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        "[listen]\nheader_read_timeout_ms = 300\n",
    ));
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let client = HttpClient::h1();
    let (status, _, _) = client.get(&format!("{}/healthz", proxy.admin)).await;
    assert_eq!(status, 200);
    let baseline = descriptor_count(proxy.pid());

    // Headers that never finish: closed after header_read_timeout_ms.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v1.0/me HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the proxy closed the slow client");

    // A download abandoned half-way.
    let mut download = TcpStream::connect(&addr).await.unwrap();
    download
        .write_all(b"GET /sim/download?bytes=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut some = vec![0u8; 65536];
    let n = download.read(&mut some).await.unwrap();
    assert!(n > 0);
    drop(download);

    // Both Content-Length and Transfer-Encoding: framed by Transfer-Encoding alone and the
    // connection closed after the answer (RFC 9112 6.1), so the request hidden after the
    // chunked body never reaches Graph.
    let mut smuggler = TcpStream::connect(&addr).await.unwrap();
    smuggler
        .write_all(
            b"POST /v1.0/me/sendMail HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1.0/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), smuggler.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then closed: {answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        sim.requests()
            .await
            .iter()
            .all(|r| !r["uri"].as_str().unwrap_or("").contains("smuggled")),
        "a request hidden in the body reached Graph"
    );

    // A TLS handshake of garbage to the plain listener: a 400, or closed, nothing else.
    let mut tls_garbage = TcpStream::connect(&addr).await.unwrap();
    tls_garbage
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        tls_garbage.read_to_end(&mut answer),
    )
    .await;
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"));

    let (status, _, _) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200, "the proxy still serves");
    drop(client);
    assert_fds_back_to(&proxy, baseline).await;
}

#[tokio::test]
async fn garbage_instead_of_a_tls_handshake_does_not_disturb_the_tls_listener() {
    let certs = TempDir::new("certs");
    let out = std::process::Command::new(BIN)
        .args(["certs", "init", "--dir"])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let sim = Sim::start().await;
    let config = config_for(&sim.url, "").replace(
        "[listen]\naddr = \"127.0.0.1:0\"\n",
        &format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            certs.join("server.pem").display(),
            certs.join("server-key.pem").display()
        ),
    );
    let proxy = ProxyProcess::start(&config);
    let addr = proxy.url.trim_start_matches("https://").to_owned();
    let baseline = descriptor_count(proxy.pid());
    for _ in 0..10 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let _ = s
            .write_all(b"\x16\x03\x01\xff\xffnot a client hello at all")
            .await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut sink)).await;
    }
    let client = HttpClient::with_ca(&certs.join("ca.pem"), true);
    let (status, _, _) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200);
    drop(client);
    assert_fds_back_to(&proxy, baseline).await;
}

#[tokio::test]
async fn no_token_appears_in_any_log_line_even_at_trace_level() {
    let certs = TempDir::new("certs");
    let out = std::process::Command::new(BIN)
        .args(["certs", "init", "--dir"])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let sim = Sim::start().await;
    let store = TempDir::new("store");
    let config = config_for(
        &sim.url,
        &format!(
            "[log]\nlevel = \"trace\"\n[rewrite]\nenabled = true\nstore = \"{}\"\n",
            store.join("idmap.redb").display()
        ),
    )
    .replace("level = \"debug\"\n", "")
    .replace(
        "[listen]\naddr = \"127.0.0.1:0\"\n",
        &format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            certs.join("server.pem").display(),
            certs.join("server-key.pem").display()
        ),
    );
    let proxy = ProxyProcess::start(&config);
    let token = token_for(ADELE);
    let regular = message_ids(&sim, ADELE, false).await.remove(0);
    for http2 in [false, true] {
        let client = HttpClient::with_ca(&certs.join("ca.pem"), http2);
        let auth = format!("Bearer {token}");
        let (status, _, _) = client
            .get_with(
                &format!(
                    "{}/v1.0/users/{ADELE}/messages/{}",
                    proxy.url,
                    regular.replace('=', "%3D")
                ),
                &[
                    ("authorization", &auth),
                    ("cookie", "session=cookie-secret-value"),
                ],
            )
            .await;
        assert_eq!(status, 200);
        let batch = serde_json::json!({"requests": [
            {"id": "1", "method": "GET", "url": format!("/users/{ADELE}/messages?$top=1")}
        ]});
        let request = Request::post(format!("{}/v1.0/$batch", proxy.url))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(batch.to_string())))
            .unwrap();
        assert_eq!(client.send(request).await.0, 200);
    }
    proxy.signal("TERM");
    let (code, stderr) = proxy.wait_async().await;
    assert_eq!(code, Some(0));
    assert!(
        !stderr.contains("drain grace ran out"),
        "clients that answer GOAWAY let the drain end at once"
    );
    assert!(
        stderr.lines().count() > 20,
        "trace logging was on: {stderr}"
    );
    let payload = token.split('.').nth(1).unwrap();
    for secret in [token.as_str(), payload, "cookie-secret-value"] {
        assert!(!stderr.contains(secret), "a secret reached the log");
    }
}
