//! Shared test harness: the real binary on 127.0.0.1:0, the simulator as upstream, and real
//! HTTP/1.1 and HTTP/2 clients (plain and TLS).
//!
//! Nothing here sleeps or uses fixed ports: processes print the addresses they bound, and
//! the harness reads them back.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use immutable_id_proxy::sim::{self, Simulator};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_immutable-id-proxy");

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("idproxy-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir is creatable");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The simulator, served in-process on its own loopback port.
pub struct Sim {
    pub addr: SocketAddr,
    pub url: String,
    pub state: Arc<Simulator>,
    /// Speaks to the simulator's control routes (trusting its CA when it serves TLS).
    control: HttpClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sim {
    pub async fn start() -> Sim {
        Self::start_with_tls(None).await
    }

    /// `tls`: the acceptor and the CA file that signed its certificate.
    pub async fn start_with_tls(tls: Option<(tokio_rustls::TlsAcceptor, PathBuf)>) -> Sim {
        let (tls, control) = match tls {
            Some((acceptor, ca)) => (Some(acceptor), HttpClient::with_ca(&ca, false)),
            None => (None, HttpClient::h1()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sim");
        let addr = listener.local_addr().expect("sim addr");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Simulator::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(sim::serve(state.clone(), listener, tls, async move {
            let _ = stopped.await;
        }));
        Sim {
            addr,
            url: format!("{scheme}://{addr}"),
            state,
            control,
            stop: Some(stop),
        }
    }

    /// A plain-HTTP simulator that keeps idle keep-alive connections for `idle` instead of
    /// 10 s (see `sim::server::serve_with_idle_timeout`): longer than the proxy's 90 s pool,
    /// so long runs never race a connection the simulator is closing.
    pub async fn start_with_idle_timeout(idle: std::time::Duration) -> Sim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sim");
        let addr = listener.local_addr().expect("sim addr");
        let state = Simulator::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(sim::server::serve_with_idle_timeout(
            state.clone(),
            listener,
            None,
            idle,
            async move {
                let _ = stopped.await;
            },
        ));
        Sim {
            addr,
            url: format!("http://{addr}"),
            state,
            control: HttpClient::h1(),
            stop: Some(stop),
        }
    }

    /// What the simulator received, newest last.
    pub async fn requests(&self) -> Vec<Value> {
        let (status, _, body) = self
            .control
            .get(&format!("{}/sim/requests", self.url))
            .await;
        assert_eq!(status, 200);
        let json: Value = serde_json::from_slice(&body).expect("sim requests is JSON");
        match json {
            Value::Array(items) => items,
            Value::Object(mut map) => {
                match map.remove("requests").or_else(|| map.remove("value")) {
                    Some(Value::Array(items)) => items,
                    _ => panic!("unexpected /sim/requests shape"),
                }
            }
            _ => panic!("unexpected /sim/requests shape"),
        }
    }

    /// The last request the simulator received whose URI contains `needle`.
    pub async fn last_request_to(&self, needle: &str) -> Value {
        self.requests()
            .await
            .into_iter()
            .rev()
            .find(|r| r["uri"].as_str().is_some_and(|u| u.contains(needle)))
            .unwrap_or_else(|| panic!("simulator saw no request to {needle}"))
    }

    pub async fn stats(&self) -> Value {
        let (_, _, body) = self.control.get(&format!("{}/sim/stats", self.url)).await;
        serde_json::from_slice(&body).expect("sim stats is JSON")
    }

    pub async fn configure(&self, switches: Value) {
        let (status, _, _) = self
            .control
            .send(
                Request::post(format!("{}/sim/config", self.url))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(switches.to_string())))
                    .expect("valid request"),
            )
            .await;
        assert!(status.is_success(), "sim config refused: {status}");
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Header value from a recorded simulator request (names compared case-insensitively).
pub fn recorded_header(request: &Value, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    match &request["headers"] {
        Value::Array(pairs) => {
            for pair in pairs {
                let (n, v) = match pair {
                    Value::Array(kv) if kv.len() == 2 => (kv[0].as_str(), kv[1].as_str()),
                    Value::Object(o) => (
                        o.get("name").and_then(Value::as_str),
                        o.get("value").and_then(Value::as_str),
                    ),
                    _ => (None, None),
                };
                if let (Some(n), Some(v)) = (n, v) {
                    if n.eq_ignore_ascii_case(name) {
                        out.push(v.to_owned());
                    }
                }
            }
        }
        Value::Object(map) => {
            for (n, v) in map {
                if n.eq_ignore_ascii_case(name) {
                    match v {
                        Value::String(s) => out.push(s.clone()),
                        Value::Array(vs) => {
                            out.extend(vs.iter().filter_map(|v| v.as_str().map(str::to_owned)))
                        }
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// The real binary, running `run` with a config file written for the test.
pub struct ProxyProcess {
    pub child: Child,
    pub url: String,
    pub admin: String,
    /// `http://ADDR` of the forward proxy listener, when `forward_proxy.enabled`.
    pub forward: Option<String>,
    pub dir: TempDir,
    /// Everything the process wrote to stderr so far, collected by a reader thread.
    stderr: Arc<std::sync::Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl ProxyProcess {
    /// Starts `immutable-id-proxy run` with `config` (TOML) plus listen/admin on port 0.
    pub fn start(config: &str) -> ProxyProcess {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> ProxyProcess {
        Self::start_binary(BIN, config, env)
    }

    /// `start_with_env` with another build of the binary (the benchmarks use the release one).
    pub fn start_binary(bin: &str, config: &str, env: &[(&str, &str)]) -> ProxyProcess {
        let dir = TempDir::new("proxy");
        let path = dir.join("config.toml");
        std::fs::write(&path, config).expect("write config");
        let mut command = Command::new(bin);
        command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        Self::start_command(command, dir)
    }

    /// Starts a prepared command that runs the proxy (the binary under another path, or
    /// behind `chroot`), reading back the addresses it prints; `dir` lives as long as it.
    pub fn start_command(mut command: Command, dir: TempDir) -> ProxyProcess {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the proxy binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        let mut admin = None;
        let mut forward = None;
        while url.is_none() || admin.is_none() {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("proxy listening on ") {
                        url = Some(rest.trim().to_owned());
                    } else if let Some(rest) = line.strip_prefix("admin listening on ") {
                        admin = Some(rest.trim().to_owned());
                    } else if let Some(rest) = line.strip_prefix("forward proxy listening on ") {
                        forward = Some(rest.trim().to_owned());
                    }
                }
                _ => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("proxy exited before listening: {err}");
                }
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let stderr_reader = child.stderr.take().map(|pipe| {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut text) = sink.lock() {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
            })
        });
        ProxyProcess {
            child,
            url: url.unwrap_or_default(),
            admin: admin.unwrap_or_default(),
            forward,
            dir,
            stderr,
            stderr_reader,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name through the real `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for exit and returns the exit code plus everything written to stderr.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("wait for proxy");
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        (status.code(), self.stderr_so_far())
    }

    /// `wait` off the async workers, so this test's own clients keep running (an h2 client
    /// must answer the proxy's GOAWAY for the drain to finish).
    pub async fn wait_async(self) -> (Option<i32>, String) {
        tokio::task::spawn_blocking(move || self.wait())
            .await
            .expect("the wait task ends")
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Resident memory now (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(&format!("/proc/{}/status", self.pid()), "VmRSS:")
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// A `VmRSS:`/`VmHWM:` line of a `/proc/<pid>/status` file, in KiB (0 when unreadable).
pub fn rss_kib_of(status_path: &str, field: &str) -> u64 {
    std::fs::read_to_string(status_path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config for a proxy in front of `upstream`, on loopback port 0 for both listeners.
/// `extra` may name sections that the base already has: its keys are merged into them.
pub fn config_for(upstream: &str, extra: &str) -> String {
    let base = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"{upstream}\"\nrequest_timeout_ms = 20000\n\n[admin]\naddr = \"127.0.0.1:0\"\n\n[log]\nlevel = \"debug\"\n"
    );
    merge_toml(&base, extra)
}

/// Splices the sections of `extra` into `base`: keys of a section `base` already has go
/// right under its header, new sections are appended.
pub fn merge_toml(base: &str, extra: &str) -> String {
    let mut out = base.to_owned();
    let mut section = String::new();
    let mut pending: Vec<(String, Vec<String>)> = Vec::new();
    for line in extra.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_owned();
            pending.push((section.clone(), Vec::new()));
        } else if !trimmed.is_empty() {
            if pending.is_empty() {
                pending.push((section.clone(), Vec::new()));
            }
            if let Some((_, lines)) = pending.last_mut() {
                lines.push(line.to_owned());
            }
        }
    }
    for (header, lines) in pending {
        let body = lines.join("\n");
        let marker = format!("{header}\n");
        match out.find(&marker) {
            Some(at) if !header.is_empty() => {
                out.insert_str(at + marker.len(), &format!("{body}\n"));
            }
            _ => out.push_str(&format!("\n{header}\n{body}\n")),
        }
    }
    out
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A real HTTP client: HTTP/1.1 or HTTP/2, plain or TLS with a given CA.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
}

impl HttpClient {
    pub fn h1() -> HttpClient {
        Self::build(None, false)
    }

    pub fn with_ca(ca: &Path, http2: bool) -> HttpClient {
        Self::build(Some(ca), http2)
    }

    fn build(ca: Option<&Path>, http2: bool) -> HttpClient {
        immutable_id_proxy::tls::install_crypto_provider();
        let tls = immutable_id_proxy::tls::client_config(ca).expect("client TLS config");
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let mut client = Client::builder(TokioExecutor::new());
        if http2 {
            client.http2_only(true);
        }
        HttpClient {
            client: client.build(connector),
        }
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let response: Response<hyper::body::Incoming> = self
            .client
            .request(req)
            .await
            .expect("request reaches the server");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        (parts.status, parts.headers, body)
    }

    pub async fn get(&self, url: &str) -> (StatusCode, HeaderMap, Bytes) {
        self.send(
            Request::get(url)
                .body(Full::default())
                .expect("valid request"),
        )
        .await
    }

    pub async fn get_with(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Full::default()).expect("valid request"))
            .await
    }

    pub fn raw(&self) -> &Client<Connector, Full<Bytes>> {
        &self.client
    }
}

/// An unsigned test token for a seeded simulator user.
pub fn token_for(upn: &str) -> String {
    let user = sim::SEED_USERS
        .iter()
        .find(|u| u.upn.eq_ignore_ascii_case(upn))
        .unwrap_or_else(|| panic!("no seeded user {upn}"));
    sim::token::mint(
        user.tenant_id,
        user.user_id,
        "11111111-2222-3333-4444-555555555555",
        false,
    )
}

pub fn bearer(upn: &str) -> String {
    format!("Bearer {}", token_for(upn))
}

pub const ADELE: &str = "adelev@contoso.onmicrosoft.com";

/// Creates messages until the mailbox holds at least `count`.
pub async fn ensure_messages(sim: &Sim, upn: &str, count: usize) {
    let have = message_ids(sim, upn, false).await.len();
    let client = HttpClient::h1();
    let url = format!("{}/v1.0/users/{upn}/messages", sim.url);
    let missing: Vec<usize> = (have..count).collect();
    for chunk in missing.chunks(50) {
        futures_util::future::join_all(chunk.iter().map(|n| {
            let request = Request::post(&url)
                .header("authorization", bearer(upn))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::json!({"subject": format!("message {n}")}).to_string(),
                )))
                .expect("valid request");
            let client = client.clone();
            async move {
                let (status, _, _) = client.send(request).await;
                assert_eq!(status, 201);
            }
        }))
        .await;
    }
}

/// Every message ID of the mailbox, newest first; regular IDs unless `immutable`.
pub async fn message_ids(sim: &Sim, upn: &str, immutable: bool) -> Vec<String> {
    let client = HttpClient::h1();
    let token = bearer(upn);
    let mut headers = vec![("authorization", token.as_str())];
    if immutable {
        headers.push(("prefer", "IdType=\"ImmutableId\""));
    }
    let mut ids = Vec::new();
    loop {
        let url = format!(
            "{}/v1.0/users/{upn}/messages?$top=1000&$skip={}&$select=id",
            sim.url,
            ids.len()
        );
        let (status, _, body) = client.get_with(&url, &headers).await;
        assert_eq!(status, 200);
        let json: Value = serde_json::from_slice(&body).expect("list is JSON");
        let page = json["value"].as_array().expect("value list").clone();
        ids.extend(
            page.iter()
                .map(|m| m["id"].as_str().expect("id").to_owned()),
        );
        if json.get("@odata.nextLink").is_none() {
            return ids;
        }
    }
}

/// Raises this process's soft RLIMIT_NOFILE to at least `needed` (children such as the
/// proxy inherit it) and returns the soft limit now in force. Fails, naming both figures,
/// when the hard limit is below `needed`: a test that needs the descriptors must not
/// silently run with fewer.
pub fn raise_descriptor_limit(needed: libc::rlim_t) -> Result<libc::rlim_t, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the `rlimit` struct it is given, which is a valid,
    // exclusively borrowed local that outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur >= needed {
        return Ok(limit.rlim_cur);
    }
    if limit.rlim_max < needed {
        return Err(format!(
            "this test needs {needed} open files per process but the hard limit \
             (ulimit -Hn) is {}; raise it (e.g. `ulimit -Hn 65536` as root, or \
             LimitNOFILE/--ulimit nofile for a service or container)",
            limit.rlim_max
        ));
    }
    limit.rlim_cur = needed;
    // SAFETY: setrlimit only reads the `rlimit` struct it is given, a valid local; raising
    // the soft limit up to the hard limit needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!(
            "setrlimit(RLIMIT_NOFILE, {needed}) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(needed)
}

/// Descriptors the process `pid` has open now (0 when it is gone).
pub fn descriptor_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
