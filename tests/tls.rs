//! Real TLS on both sides: certificates made by `certs init` at test time, HTTP/1.1 and
//! HTTP/2 clients, and a TLS upstream trusted through `upstream.ca_file`.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

fn certs_init(dir: &TempDir) {
    let status = Command::new(BIN)
        .args(["certs", "init", "--dir"])
        .arg(dir.path())
        .output()
        .expect("certs init runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

fn tls_config(upstream: &str, certs: &TempDir) -> String {
    config_for(upstream, "").replace(
        "[listen]\naddr = \"127.0.0.1:0\"\n",
        &format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            certs.join("server.pem").display(),
            certs.join("server-key.pem").display()
        ),
    )
}

async fn tls_sim(certs: &TempDir) -> Sim {
    let config = immutable_id_proxy::tls::server_config(
        &certs.join("server.pem"),
        &certs.join("server-key.pem"),
    )
    .unwrap();
    Sim::start_with_tls(Some((
        tokio_rustls::TlsAcceptor::from(config),
        certs.join("ca.pem"),
    )))
    .await
}

#[tokio::test]
async fn the_tls_listener_serves_http1_and_http2_with_the_header_added() {
    let certs = TempDir::new("certs");
    certs_init(&certs);
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&tls_config(&sim.url, &certs));
    assert!(proxy.url.starts_with("https://"), "{}", proxy.url);
    for http2 in [false, true] {
        let client = HttpClient::with_ca(&certs.join("ca.pem"), http2);
        let (status, _, body) = client
            .get_with(
                &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
                &[("authorization", &bearer(ADELE))],
            )
            .await;
        assert_eq!(status, 200, "http2={http2}");
        let page: Value = serde_json::from_slice(&body).unwrap();
        assert!(page["value"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("AAkALg"));
    }
    let prefer_seen = sim.stats().await["prefer_seen"].clone();
    assert_eq!(prefer_seen["IdType=\"ImmutableId\""].as_u64(), Some(2));
}

#[tokio::test]
async fn a_tls_upstream_is_trusted_through_ca_file_and_spoken_to_over_h2() {
    let certs = TempDir::new("certs");
    certs_init(&certs);
    let sim = tls_sim(&certs).await;
    let config = config_for(&sim.url, "").replace(
        "[upstream]\n",
        &format!(
            "[upstream]\nca_file = \"{}\"\n",
            certs.join("ca.pem").display()
        ),
    );
    let proxy = ProxyProcess::start(&config);
    let client = HttpClient::h1();
    let (status, _, body) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(
        seen["version"], "HTTP/2.0",
        "ALPN should agree on h2: {seen}"
    );
}

#[tokio::test]
async fn an_upstream_certificate_nobody_trusts_is_a_502() {
    let certs = TempDir::new("certs");
    certs_init(&certs);
    let sim = tls_sim(&certs).await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let (status, _, body) = client.get(&format!("{}/v1.0/me", proxy.url)).await;
    assert_eq!(status, 502);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "BadGateway");
    assert!(sim.requests().await.is_empty());
}

/// A TLS client that offers no ALPN protocol is served all the same (the listener then
/// finds out from the first bytes which HTTP it speaks).
#[tokio::test]
async fn a_tls_client_without_alpn_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let certs = TempDir::new("certs");
    certs_init(&certs);
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&tls_config(&sim.url, &certs));
    let addr = proxy.url.trim_start_matches("https://").to_owned();
    immutable_id_proxy::tls::install_crypto_provider();
    let mut config =
        immutable_id_proxy::tls::client_config(Some(&certs.join("ca.pem"))).expect("client TLS");
    config.alpn_protocols.clear();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let request = format!(
        "GET /v1.0/users/{ADELE}/messages?$top=1 HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         Connection: close\r\n\r\n",
        bearer(ADELE)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A TLS peer may close without close_notify; what was read until then is the answer.
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(recorded_header(&seen, "prefer"), ["IdType=\"ImmutableId\""]);
}
