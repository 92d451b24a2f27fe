//! Drop-in mode end to end: real clients (curl, Python requests, a hyper client speaking
//! CONNECT itself) reach the simulator through the forward proxy of the real binary, with
//! the CA and bundle made by `certs init` and `certs bundle`.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IMMUTABLE_PREFIX: &str = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A";
const IMMUTABLE: &str = "IdType=\"ImmutableId\"";

fn run_bin(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the binary runs")
}

fn certs_init(dir: &TempDir) {
    let out = run_bin(&["certs", "init", "--dir", "."], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn forward_config(upstream: &str, certs: &TempDir, extra: &str) -> String {
    config_for(
        upstream,
        &format!(
            "[forward_proxy]\nenabled = true\naddr = \"127.0.0.1:0\"\nca_cert = \"{}\"\nca_key = \"{}\"\n{extra}",
            certs.join("ca.pem").display(),
            certs.join("ca-key.pem").display()
        ),
    )
}

fn forward_addr(proxy: &ProxyProcess) -> String {
    proxy
        .forward
        .clone()
        .expect("the forward listener was announced")
        .trim_start_matches("http://")
        .to_owned()
}

/// curl with nothing from the environment deciding about proxies. It runs off the test's
/// runtime thread, which also serves the simulator.
async fn curl(args: &[&str]) -> Output {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY");
    run_off_thread(command).await
}

async fn run_off_thread(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("the command runs"))
        .await
        .unwrap()
}

/// Sends `head` to the forward proxy and reads its answer head and body (by
/// Content-Length). The stream stays open for what follows a 200.
async fn ask(forward: &str, head: &str) -> (u16, Value, TcpStream) {
    let mut stream = TcpStream::connect(forward).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "answer cut off");
        buf.push(byte[0]);
        if buf.ends_with(b"\r\n\r\n") {
            break buf.len();
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).to_string();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let length = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, json, stream)
}

fn connect_head(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

fn tls_connector(ca: Option<&Path>) -> tokio_rustls::TlsConnector {
    immutable_id_proxy::tls::install_crypto_provider();
    let mut config = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in immutable_id_proxy::tls::load_certs(ca).unwrap() {
                roots.add(cert).unwrap();
            }
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        None => immutable_id_proxy::tls::client_config(None).unwrap(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An h2 connection to `host` through the forward proxy, TLS verified against `ca`.
async fn intercepted_h2(
    forward: &str,
    host: &str,
    ca: &Path,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (status, _, stream) = ask(forward, &connect_head(&format!("{host}:443"))).await;
    assert_eq!(status, 200);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let tls = tls_connector(Some(ca)).connect(name, stream).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn send_h2(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (u16, Value) {
    let response = send.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn metric(proxy: &ProxyProcess, line: &str) -> u64 {
    let (_, _, body) = HttpClient::h1()
        .get(&format!("{}/metrics", proxy.admin))
        .await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn curl_reaches_graph_through_the_forward_proxy_over_h1_and_h2_with_the_header_added() {
    let certs = TempDir::new("fwd-certs");
    certs_init(&certs);
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&forward_config(&sim.url, &certs, ""));
    let forward = proxy.forward.clone().unwrap();
    let ca = certs.join("ca.pem");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = curl(&[
            flag,
            "--proxy",
            &forward,
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            &format!("authorization: {}", bearer(ADELE)),
            "-w",
            "\n%{http_code} %{http_version}",
            &format!("https://graph.microsoft.com/v1.0/users/{ADELE}/messages?$top=1"),
        ])
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, tail) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(tail, format!("200 {version}"));
        let page: Value = serde_json::from_str(body).unwrap();
        let id = page["value"][0]["id"].as_str().unwrap();
        assert!(id.starts_with(IMMUTABLE_PREFIX), "{id}");
        let seen = sim.last_request_to("/messages").await;
        assert_eq!(recorded_header(&seen, "prefer"), vec![IMMUTABLE.to_owned()]);
    }
    assert_eq!(
        metric(&proxy, "idproxy_tunnels_total{kind=\"intercepted\"}").await,
        2
    );
}

#[tokio::test]
async fn python_requests_with_https_proxy_and_the_bundle_reaches_the_simulator() {
    let certs = TempDir::new("fwd-certs");
    certs_init(&certs);
    let out = run_bin(&["certs", "bundle", "--dir", "."], certs.path());
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("system roots from"), "{said}");
    let bundle = std::fs::read_to_string(certs.join("bundle.pem")).unwrap();
    assert!(bundle.ends_with(&std::fs::read_to_string(certs.join("ca.pem")).unwrap()));
    assert!(!bundle.contains("PRIVATE KEY"));

    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&forward_config(&sim.url, &certs, ""));
    let script = format!(
        "import requests\n\
         r = requests.get('https://graph.microsoft.com/v1.0/users/{ADELE}/messages?$top=1',\n\
         \x20   headers={{'Authorization': '{}'}}, timeout=30)\n\
         print(r.status_code, r.json()['value'][0]['id'])\n",
        bearer(ADELE)
    );
    let mut python = Command::new("python3");
    python
        .args(["-c", &script])
        .env("HTTPS_PROXY", proxy.forward.clone().unwrap())
        .env("REQUESTS_CA_BUNDLE", certs.join("bundle.pem"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    let out = run_off_thread(python).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, id) = stdout.trim().split_once(' ').unwrap();
    assert_eq!(status, "200");
    assert!(id.starts_with(IMMUTABLE_PREFIX), "{id}");
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(recorded_header(&seen, "prefer"), vec![IMMUTABLE.to_owned()]);
}

#[tokio::test]
async fn an_allowed_host_gets_a_blind_tunnel_to_a_tls_server_the_client_verifies_itself() {
    let ours = TempDir::new("fwd-certs");
    certs_init(&ours);
    let theirs = TempDir::new("fwd-other");
    certs_init(&theirs);
    let tls = immutable_id_proxy::tls::server_config(
        &theirs.join("server.pem"),
        &theirs.join("server-key.pem"),
    )
    .unwrap();
    let far = Sim::start_with_tls(Some((
        tokio_rustls::TlsAcceptor::from(tls),
        theirs.join("ca.pem"),
    )))
    .await;
    let graph = Sim::start().await;
    let proxy = ProxyProcess::start(&forward_config(
        &graph.url,
        &ours,
        &format!("tunnel_allow = [\"127.0.0.1:{}\"]", far.addr.port()),
    ));
    let forward = proxy.forward.clone().unwrap();
    let url = format!("{}/v1.0/users/{ADELE}/messages?$top=1", far.url);
    let auth = format!("authorization: {}", bearer(ADELE));
    let args = |ca: &Path| {
        vec![
            "--proxy".to_owned(),
            forward.clone(),
            "--cacert".to_owned(),
            ca.display().to_string(),
            "-H".to_owned(),
            auth.clone(),
            "-w".to_owned(),
            "\n%{http_code}".to_owned(),
            url.clone(),
        ]
    };

    let with = args(&theirs.join("ca.pem"));
    let out = curl(&with.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("\n200"), "{stdout}");
    let seen = far.last_request_to("/messages").await;
    assert!(
        recorded_header(&seen, "prefer").is_empty(),
        "the tunnel is blind: nothing was added"
    );
    // Our CA does not verify the far server: the certificate is its own, not one we minted.
    let with = args(&ours.join("ca.pem"));
    let out = curl(&with.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(!out.status.success());
    assert_eq!(
        metric(&proxy, "idproxy_tunnels_total{kind=\"tunneled\"}").await,
        2
    );
}

#[tokio::test]
async fn a_tunnel_carries_the_answer_after_the_client_half_closes() {
    let certs = TempDir::new("fwd-certs");
    certs_init(&certs);
    // Reads until the client stops sending, then answers with what it counted.
    let counter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = counter.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut stream, _) = counter.accept().await.unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        stream
            .write_all(format!("got {} bytes", all.len()).as_bytes())
            .await
            .unwrap();
    });
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&forward_config(
        &sim.url,
        &certs,
        &format!("tunnel_allow = [\"127.0.0.1:{port}\"]"),
    ));
    let (status, _, mut stream) = ask(
        &forward_addr(&proxy),
        &connect_head(&format!("127.0.0.1:{port}")),
    )
    .await;
    assert_eq!(status, 200);
    stream.write_all(&[7u8; 5000]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 5000 bytes");
}

#[tokio::test]
async fn hosts_neither_intercepted_nor_allowed_get_403_and_targets_without_a_port_get_400() {
    let certs = TempDir::new("fwd-certs");
    certs_init(&certs);
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&forward_config(&sim.url, &certs, ""));
    let forward = forward_addr(&proxy);

    let (status, body, _) = ask(&forward, &connect_head("example.org:443")).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "Forbidden");
    let (status, body, _) = ask(
        &forward,
        "GET http://example.org/v1.0/me HTTP/1.1\r\nHost: example.org\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "Forbidden");
    let (status, body, _) = ask(&forward, &connect_head("example.org")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
    // The login endpoint is allowed by default; a port it does not list is not.
    let (status, _, _) = ask(&forward, &connect_head("login.microsoftonline.com:8443")).await;
    assert_eq!(status, 403);
    assert_eq!(
        metric(&proxy, "idproxy_tunnels_total{kind=\"refused\"}").await,
        3
    );
    assert!(sim.requests().await.is_empty(), "nothing reached Graph");

    // Plain HTTP in absolute form for an intercepted host takes the pipeline too.
    let (status, page, _) = ask(
        &forward,
        &format!(
            "GET http://graph.microsoft.com/v1.0/users/{ADELE}/messages?$top=1 HTTP/1.1\r\n\
             Host: graph.microsoft.com\r\nAuthorization: {}\r\n\r\n",
            bearer(ADELE)
        ),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(recorded_header(&seen, "prefer"), vec![IMMUTABLE.to_owned()]);
}

#[test]
fn a_ca_key_that_does_not_match_the_certificate_stops_start_up_with_exit_2() {
    let one = TempDir::new("fwd-certs");
    certs_init(&one);
    let two = TempDir::new("fwd-other");
    certs_init(&two);
    std::fs::copy(two.join("ca-key.pem"), one.join("ca-key.pem")).unwrap();
    let config = forward_config("http://127.0.0.1:9", &one, "");
    std::fs::write(one.join("config.toml"), config).unwrap();
    let out = run_bin(&["run", "--config", "config.toml"], one.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("forward_proxy.ca_key does not belong to forward_proxy.ca_cert"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_rewritten_id_and_a_batch_go_through_one_intercepted_h2_connection() {
    let certs = TempDir::new("fwd-certs");
    certs_init(&certs);
    let store = TempDir::new("fwd-store");
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&forward_config(
        &sim.url,
        &certs,
        &format!(
            "[rewrite]\nenabled = true\nstore = \"{}\"",
            store.join("idmap.redb").display()
        ),
    ));
    let (_, _, body) = HttpClient::h1()
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", sim.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    let page: Value = serde_json::from_slice(&body).unwrap();
    let regular = page["value"][0]["id"].as_str().unwrap().to_owned();
    assert!(!regular.starts_with(IMMUTABLE_PREFIX));

    let mut send = intercepted_h2(
        &forward_addr(&proxy),
        "graph.microsoft.com",
        &certs.join("ca.pem"),
    )
    .await;
    let get = Request::get(format!(
        "https://graph.microsoft.com/v1.0/users/{ADELE}/messages/{}",
        regular.replace('=', "%3D")
    ))
    .header("authorization", bearer(ADELE))
    .body(Full::default())
    .unwrap();
    let (status, message) = send_h2(&mut send, get).await;
    assert_eq!(status, 200, "{message}");
    let immutable = message["id"].as_str().unwrap();
    assert!(immutable.starts_with(IMMUTABLE_PREFIX), "{immutable}");
    let seen = sim.last_request_to("/messages/").await;
    let uri = seen["uri"].as_str().unwrap();
    assert!(
        !uri.contains(&regular.replace('=', "%3D")) && !uri.contains(&regular),
        "{uri}"
    );
    assert_eq!(sim.stats().await["translate_calls"], 1);

    let batch = json!({"requests": [
        {"id": "1", "method": "GET", "url": format!("/users/{ADELE}/messages?$top=1")},
        {"id": "2", "method": "GET", "url": format!("/users/{ADELE}/events?$top=1")}
    ]});
    let post = Request::post("https://graph.microsoft.com/v1.0/$batch")
        .header("authorization", bearer(ADELE))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(batch.to_string())))
        .unwrap();
    let (status, answer) = send_h2(&mut send, post).await;
    assert_eq!(status, 200, "{answer}");
    let responses = answer["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 2);
    for response in responses {
        let id = response["body"]["value"][0]["id"].as_str().unwrap();
        assert!(
            id.len() == 68 && id.starts_with(IMMUTABLE_PREFIX),
            "{response}"
        );
    }
    assert!(
        sim.stats().await["prefer_seen"][IMMUTABLE]
            .as_u64()
            .unwrap_or(0)
            >= 3
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_its_handshake_and_nobody_else_notices() {
    let certs = TempDir::new("fwd-certs");
    certs_init(&certs);
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&forward_config(&sim.url, &certs, ""));
    let forward = forward_addr(&proxy);

    let (status, _, stream) = ask(&forward, &connect_head("graph.microsoft.com:443")).await;
    assert_eq!(status, 200);
    let name = rustls::pki_types::ServerName::try_from("graph.microsoft.com").unwrap();
    let refused = tls_connector(None).connect(name, stream).await;
    assert!(
        refused.is_err(),
        "a client with only public roots rejects our leaf"
    );

    let mut send = intercepted_h2(&forward, "graph.microsoft.com", &certs.join("ca.pem")).await;
    let get = Request::get(format!(
        "https://graph.microsoft.com/v1.0/users/{ADELE}/messages?$top=1"
    ))
    .header("authorization", bearer(ADELE))
    .body(Full::default())
    .unwrap();
    assert_eq!(send_h2(&mut send, get).await.0, 200);

    // The drain waits for the open h2 connection to answer the shutdown ping, so this
    // runtime keeps serving it while another thread waits for the exit.
    proxy.signal("TERM");
    let (code, stderr) = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("TLS handshake inside CONNECT failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("drain grace ran out"), "{stderr}");
}

#[tokio::test]
async fn a_tunnel_peer_that_never_answers_gets_504_after_the_connect_timeout() {
    let certs = TempDir::new("fwd-certs");
    certs_init(&certs);
    // A listener that never accepts, its queue filled: further SYNs are dropped, so a
    // connect to it neither succeeds nor fails.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let silent = socket.listen(1).unwrap();
    let addr = silent.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(std::time::Duration::from_secs(1), TcpStream::connect(addr))
            .await
        {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    assert!(queued.len() < 16, "the accept queue never filled");
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&forward_config(
        &sim.url,
        &certs,
        &format!("tunnel_allow = [\"{addr}\"]\n[upstream]\nconnect_timeout_ms = 300"),
    ));
    let (status, body, _) = ask(&forward_addr(&proxy), &connect_head(&addr.to_string())).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["code"], "GatewayTimeout");
    drop(silent);
}

#[tokio::test]
async fn the_admin_port_serves_the_ca_certificate_and_never_the_key() {
    let certs = TempDir::new("fwd-certs");
    certs_init(&certs);
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&forward_config(&sim.url, &certs, ""));
    let (status, headers, body) = HttpClient::h1()
        .get(&format!("{}/ca.pem", proxy.admin))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-pem-file");
    assert_eq!(
        String::from_utf8_lossy(&body),
        std::fs::read_to_string(certs.join("ca.pem")).unwrap()
    );
    assert!(!String::from_utf8_lossy(&body).contains("PRIVATE KEY"));

    let plain = ProxyProcess::start(&config_for(&sim.url, ""));
    assert!(plain.forward.is_none());
    let (status, _, _) = HttpClient::h1()
        .get(&format!("{}/ca.pem", plain.admin))
        .await;
    assert_eq!(status, 404);
}

#[test]
fn env_prints_the_settings_of_each_stack_with_the_configured_address() {
    let dir = TempDir::new("fwd-env");
    std::fs::write(
        dir.join("config.toml"),
        "[forward_proxy]\naddr = \"127.0.0.1:3999\"\nca_cert = \"pki/ca.pem\"\n",
    )
    .unwrap();
    let bundle = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("pki/bundle.pem");
    let expect = [
        (
            "python",
            format!("export REQUESTS_CA_BUNDLE={}\n", bundle.display()),
        ),
        ("node", "export NODE_USE_ENV_PROXY=1\n".to_owned()),
        (
            "java",
            "-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=3999".to_owned(),
        ),
        (
            "dotnetfx",
            "proxyaddress=\"http://127.0.0.1:3999\"".to_owned(),
        ),
        (
            "dotnet",
            "export HTTPS_PROXY=http://127.0.0.1:3999\n".to_owned(),
        ),
        (
            "curl",
            format!(
                "--proxy http://127.0.0.1:3999 --cacert {}",
                bundle.display()
            ),
        ),
    ];
    for (runtime, needle) in expect {
        let out = run_bin(
            &["env", "--runtime", runtime, "--config", "config.toml"],
            dir.path(),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{runtime}");
        assert!(text.contains(&needle), "{runtime}: {text}");
    }
    let out = run_bin(&["env", "--runtime", "cobol"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}
