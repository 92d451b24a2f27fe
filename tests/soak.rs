//! Soak: mixed traffic through the real binary for a long run (`IDPROXY_SOAK_SECS`, default
//! 30 minutes), the proxy's resident memory and open descriptors sampled every 10 s, and the
//! least-squares slope of each reported after a 10% warm-up. A flat line is the target.
//!
//! Traffic, from a fixed set of workers for the whole run: pass-through lists, ID rewriting
//! with cache hits (stored regular IDs asked again and again) and misses (a message moved in
//! the simulator gets a new regular ID, then is asked for by it), `$batch` requests, a
//! throttled tenant driven above its tiny rate so its requests queue, and drop-in requests
//! through CONNECT tunnels to the forward-proxy listener. Every outcome is counted per kind.
//!
//! It fails on any error of any kind (a wrong status or body, a client error, a timeout) and
//! on a throttled request that neither completed nor got 429 with Retry-After. It asserts
//! nothing about speed or slopes: those are reported for a person to judge.
//! `#[ignore]`d; `benches/soak.sh` runs it against the release binary (`IDPROXY_SOAK_BIN`).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use immutable_id_proxy::sim::FABRIKAM_TENANT_ID;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const ALEX: &str = "alexw@contoso.onmicrosoft.com";
const MEGAN: &str = "meganb@fabrikam.onmicrosoft.com";
const IMMUTABLE_PREFIX: &str = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A";
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Any single exchange taking longer than this counts as a request that vanished.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
/// How long a throttled request may queue in the proxy before it gets 429.
const MAX_WAIT_MS: u64 = 1000;
/// Errors quoted per kind in the failure message; the rest are only counted.
const QUOTED_ERRORS: usize = 5;

/// Workers per kind of traffic, fixed for the whole run.
const PASS_THROUGH_WORKERS: usize = 2;
const CACHE_HIT_WORKERS: usize = 2;
const CACHE_MISS_WORKERS: usize = 2;
const BATCH_WORKERS: usize = 1;
/// Far more than 2 requests per second can serve, so requests queue and some time out.
const THROTTLED_WORKERS: usize = 6;
const DROP_IN_WORKERS: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PassThrough,
    CacheHit,
    CacheMiss,
    Batch,
    Throttled,
    DropIn,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::PassThrough,
        Kind::CacheHit,
        Kind::CacheMiss,
        Kind::Batch,
        Kind::Throttled,
        Kind::DropIn,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::PassThrough => "pass_through",
            Kind::CacheHit => "cache_hit",
            Kind::CacheMiss => "cache_miss",
            Kind::Batch => "batch",
            Kind::Throttled => "throttled",
            Kind::DropIn => "drop_in",
        }
    }
}

/// What happened to one request.
enum Outcome {
    /// 2xx with the body the request should have had.
    Done,
    /// 429 with a whole-seconds Retry-After of at least 1 (only the throttled tenant).
    RetryLater,
    Failed(String),
}

#[derive(Default, Debug, Clone)]
struct Counts {
    sent: u64,
    done: u64,
    retry_later: u64,
    failed: u64,
    quoted: Vec<String>,
}

#[derive(Default)]
struct Tally(Mutex<BTreeMap<Kind, Counts>>);

impl Tally {
    fn record(&self, kind: Kind, outcome: Outcome) {
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counts = all.entry(kind).or_default();
        counts.sent += 1;
        match outcome {
            Outcome::Done => counts.done += 1,
            Outcome::RetryLater => counts.retry_later += 1,
            Outcome::Failed(why) => {
                counts.failed += 1;
                if counts.quoted.len() < QUOTED_ERRORS {
                    counts.quoted.push(why);
                }
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<Kind, Counts> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn enc(id: &str) -> String {
    id.replace('=', "%3D")
}

/// Status, head and whole body of an answer; an error says the body was cut off.
async fn read_answer(
    response: http::Response<hyper::body::Incoming>,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body cut off: {e}"))?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}
/// One exchange on a pooled client, never panicking: the answer, or why there was none.
async fn exchange(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let answer = async {
        let response = client
            .raw()
            .request(request)
            .await
            .map_err(|e| format!("client error: {e:?}"))?;
        read_answer(response).await
    };
    tokio::time::timeout(CLIENT_DEADLINE, answer)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CLIENT_DEADLINE:?}")))
}

fn get(url: &str, token: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .header("authorization", token)
        .body(Full::default())
        .expect("a GET with a valid URL and token is a valid request")
}

fn json_of(body: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("answer is not JSON ({e})"))
}

/// A 200 whose JSON passes `check`, or why not.
fn expect_ok(
    answer: Result<(StatusCode, HeaderMap, Bytes), String>,
    check: impl FnOnce(&Value) -> Result<(), String>,
) -> Outcome {
    let outcome = answer.and_then(|(status, _, body)| {
        if status != StatusCode::OK {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        check(&json_of(&body)?)
    });
    match outcome {
        Ok(()) => Outcome::Done,
        Err(why) => Outcome::Failed(why),
    }
}

/// Every `id` of a Graph list is immutable: the proxy added the preference.
fn all_immutable(page: &Value) -> Result<(), String> {
    let items = page["value"]
        .as_array()
        .ok_or_else(|| format!("no value list in {page}"))?;
    if items.is_empty() {
        return Err("an empty list".to_owned());
    }
    match items
        .iter()
        .find(|m| !m["id"].as_str().unwrap_or("").starts_with(IMMUTABLE_PREFIX))
    {
        Some(item) => Err(format!("a regular ID came back: {}", item["id"])),
        None => Ok(()),
    }
}

fn is_the_item(item: &Value, immutable: &str) -> Result<(), String> {
    if item["id"] == immutable {
        Ok(())
    } else {
        Err(format!("expected {immutable}, got {}", item["id"]))
    }
}

/// What every worker shares.
struct Run {
    proxy_url: String,
    sim_url: String,
    forward: String,
    ca: std::path::PathBuf,
    deadline: Instant,
    tally: Tally,
    /// Adele's stored regular IDs with the immutable ID each must come back as.
    hits: Vec<(String, String)>,
}

impl Run {
    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }
}

async fn pass_through(run: Arc<Run>) {
    let client = HttpClient::h1();
    let token = bearer(ADELE);
    let url = format!(
        "{}/v1.0/users/{ADELE}/messages?$top=5&$select=id,subject",
        run.proxy_url
    );
    while run.running() {
        let answer = exchange(&client, get(&url, &token)).await;
        run.tally
            .record(Kind::PassThrough, expect_ok(answer, all_immutable));
    }
}

async fn cache_hits(run: Arc<Run>, worker: usize) {
    let client = HttpClient::h1();
    let token = bearer(ADELE);
    let mut n = worker;
    while run.running() {
        let (regular, immutable) = &run.hits[n % run.hits.len()];
        n += 1;
        let url = format!(
            "{}/v1.0/users/{ADELE}/messages/{}",
            run.proxy_url,
            enc(regular)
        );
        let answer = exchange(&client, get(&url, &token)).await;
        run.tally.record(
            Kind::CacheHit,
            expect_ok(answer, |item| is_the_item(item, immutable)),
        );
    }
}

/// Moves each of its messages in the simulator (a new regular ID, as after a move in
/// Outlook), then asks the proxy for it by that ID, which it has never seen.
async fn cache_misses(run: Arc<Run>, mut messages: Vec<(String, String)>) {
    let client = HttpClient::h1();
    let direct = HttpClient::h1();
    let token = bearer(ALEX);
    let mut round = 0usize;
    while run.running() {
        let destination = if round % 2 == 0 { "archive" } else { "inbox" };
        round += 1;
        for (regular, immutable) in &mut messages {
            if !run.running() {
                break;
            }
            let move_it = Request::post(format!(
                "{}/v1.0/users/{ALEX}/messages/{}/move",
                run.sim_url,
                enc(regular)
            ))
            .header("authorization", &token)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({ "destinationId": destination }).to_string(),
            )))
            .expect("a move with a valid URL is a valid request");
            let moved = match exchange(&direct, move_it).await {
                Ok((status, _, body)) if status == StatusCode::CREATED => {
                    json_of(&body).and_then(|m| {
                        m["id"]
                            .as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("moved item without id: {m}"))
                    })
                }
                Ok((status, _, body)) => Err(format!(
                    "simulator move: {status}: {}",
                    String::from_utf8_lossy(&body)
                )),
                Err(why) => Err(format!("simulator move: {why}")),
            };
            let new_regular = match moved {
                Ok(id) => id,
                Err(why) => {
                    run.tally.record(Kind::CacheMiss, Outcome::Failed(why));
                    continue;
                }
            };
            *regular = new_regular;
            let url = format!(
                "{}/v1.0/users/{ALEX}/messages/{}",
                run.proxy_url,
                enc(regular)
            );
            let answer = exchange(&client, get(&url, &token)).await;
            run.tally.record(
                Kind::CacheMiss,
                expect_ok(answer, |item| is_the_item(item, immutable)),
            );
        }
    }
}

async fn batches(run: Arc<Run>) {
    let client = HttpClient::h1();
    let token = bearer(ADELE);
    let mut n = 0usize;
    while run.running() {
        let (regular, immutable) = &run.hits[n % run.hits.len()];
        n += 1;
        let body = json!({"requests": [
            {"id": "1", "method": "GET", "url": format!("/users/{ADELE}/messages?$top=2&$select=id")},
            {"id": "2", "method": "GET", "url": format!("/users/{ADELE}/messages/{}", enc(regular))},
            {"id": "3", "method": "GET", "url": format!("/users/{ADELE}/mailFolders/inbox")},
        ]});
        let request = Request::post(format!("{}/v1.0/$batch", run.proxy_url))
            .header("authorization", &token)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a batch with a valid URL is a valid request");
        let answer = exchange(&client, request).await;
        run.tally.record(
            Kind::Batch,
            expect_ok(answer, |batch| {
                let responses = batch["responses"]
                    .as_array()
                    .ok_or_else(|| format!("no responses in {batch}"))?;
                let by_id = |id: &str| {
                    responses
                        .iter()
                        .find(|r| r["id"] == id)
                        .ok_or_else(|| format!("no response {id} in {batch}"))
                };
                for id in ["1", "2", "3"] {
                    let response = by_id(id)?;
                    if response["status"] != 200 {
                        return Err(format!("sub-request {id}: {response}"));
                    }
                }
                all_immutable(&by_id("1")?["body"])?;
                is_the_item(&by_id("2")?["body"], immutable)
            }),
        );
    }
}

/// Megan's tenant may send 2 requests a second; these workers send as fast as the proxy
/// answers, so requests queue. Each must end as a 2xx or as 429 with Retry-After.
async fn throttled(run: Arc<Run>) {
    let client = HttpClient::h1();
    let token = bearer(MEGAN);
    let url = format!("{}/v1.0/users/{MEGAN}/messages?$top=1", run.proxy_url);
    while run.running() {
        let outcome = match exchange(&client, get(&url, &token)).await {
            Ok((status, _, body)) if status.is_success() => match json_of(&body) {
                Ok(page) => match all_immutable(&page) {
                    Ok(()) => Outcome::Done,
                    Err(why) => Outcome::Failed(why),
                },
                Err(why) => Outcome::Failed(why),
            },
            Ok((StatusCode::TOO_MANY_REQUESTS, headers, body)) => {
                let seconds = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                match seconds {
                    Some(s) if s >= 1 => Outcome::RetryLater,
                    _ => Outcome::Failed(format!(
                        "429 without a usable Retry-After ({:?}): {}",
                        headers.get("retry-after"),
                        String::from_utf8_lossy(&body)
                    )),
                }
            }
            Ok((status, _, body)) => {
                Outcome::Failed(format!("{status}: {}", String::from_utf8_lossy(&body)))
            }
            Err(why) => Outcome::Failed(why),
        };
        run.tally.record(Kind::Throttled, outcome);
    }
}

fn tls_connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, String> {
    immutable_id_proxy::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in immutable_id_proxy::tls::load_certs(ca).map_err(|e| format!("CA: {e}"))? {
        roots.add(cert).map_err(|e| format!("CA: {e}"))?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// CONNECT to Graph through the forward listener, then TLS to the leaf the proxy mints,
/// verified against its CA: an HTTP/1.1 sender over the intercepted tunnel.
async fn intercepted_tunnel(
    forward: &str,
    connector: &tokio_rustls::TlsConnector,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    const HOST: &str = "graph.microsoft.com";
    let mut stream = TcpStream::connect(forward)
        .await
        .map_err(|e| format!("connect to the forward listener: {e}"))?;
    stream
        .write_all(format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    // Byte by byte, so nothing of the TLS stream that follows is read here.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err("CONNECT answer cut off".to_owned()),
            Err(e) => return Err(format!("CONNECT answer: {e}")),
        }
        if head.len() > 16 * 1024 {
            return Err("CONNECT answer head too long".to_owned());
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("CONNECT refused: {head}"));
    }
    let name =
        rustls::pki_types::ServerName::try_from(HOST).map_err(|e| format!("server name: {e}"))?;
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS to the minted leaf: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP/1.1 over the tunnel: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Each round opens a new tunnel, sends two requests over it and hangs up, so tunnels are
/// set up and torn down all run long.
async fn drop_in(run: Arc<Run>) {
    let token = bearer(ADELE);
    let path = format!("/v1.0/users/{ADELE}/messages?$top=2&$select=id");
    let connector = match tls_connector(&run.ca) {
        Ok(connector) => connector,
        Err(why) => {
            run.tally.record(Kind::DropIn, Outcome::Failed(why));
            return;
        }
    };
    while run.running() {
        let opened = tokio::time::timeout(
            CLIENT_DEADLINE,
            intercepted_tunnel(&run.forward, &connector),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no tunnel within {CLIENT_DEADLINE:?}")));
        let mut sender = match opened {
            Ok(sender) => sender,
            Err(why) => {
                run.tally.record(Kind::DropIn, Outcome::Failed(why));
                continue;
            }
        };
        for _ in 0..2 {
            let request = Request::get(&path)
                .header("host", "graph.microsoft.com")
                .header("authorization", &token)
                .body(Full::default())
                .expect("a GET with a valid path is a valid request");
            let answer = tokio::time::timeout(CLIENT_DEADLINE, async {
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| format!("over the tunnel: {e}"))?;
                read_answer(response).await
            })
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {CLIENT_DEADLINE:?}")));
            run.tally
                .record(Kind::DropIn, expect_ok(answer, all_immutable));
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    seconds: f64,
    rss_kib: u64,
    fds: usize,
}

/// Least-squares slope of `value` against time, per minute; 0 with fewer than two samples.
fn slope_per_minute(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.seconds).sum::<f64>() / n;
    let mean_v = samples.iter().map(&value).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for s in samples {
        covariance += (s.seconds - mean_t) * (value(s) - mean_v);
        variance += (s.seconds - mean_t).powi(2);
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance * 60.0
    }
}

/// Regular IDs (as an old app stored them) paired with the immutable ID of the same
/// message, read straight from the simulator.
async fn id_pairs(sim: &Sim, upn: &str) -> Vec<(String, String)> {
    let regular = message_ids(sim, upn, false).await;
    let immutable = message_ids(sim, upn, true).await;
    assert_eq!(regular.len(), immutable.len());
    regular.into_iter().zip(immutable).collect()
}

async fn metric(client: &HttpClient, admin: &str, line: &str) -> f64 {
    let (_, _, body) = client.get(&format!("{admin}/metrics")).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn report(name: &str, value: impl std::fmt::Display) {
    println!("RESULT {name} {value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long run: benches/soak.sh runs it (IDPROXY_SOAK_SECS=60 for a short one)"]
async fn mixed_traffic_for_the_whole_run_loses_no_request_and_reports_memory_and_descriptor_slopes()
{
    let seconds = env_u64("IDPROXY_SOAK_SECS", 1800).max(1);
    let bin = std::env::var("IDPROXY_SOAK_BIN").unwrap_or_else(|_| BIN.to_owned());
    // The workers hold a few dozen sockets; the limit matters only if a leak shows up.
    let limit = raise_descriptor_limit(4096).unwrap_or_else(|why| panic!("{why}"));

    let certs = TempDir::new("soak-certs");
    let made = std::process::Command::new(&bin)
        .args(["certs", "init", "--dir"])
        .arg(certs.path())
        .output()
        .expect("the binary runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let store = TempDir::new("soak-store");
    // Idle upstream connections outlive the proxy's 90 s pool (see the simulator's
    // `serve_with_idle_timeout`). GETs would survive the race (the proxy sends them again),
    // but the soak's POSTs ($batch, moves) cannot be sent twice.
    let sim = Sim::start_with_idle_timeout(Duration::from_secs(120)).await;
    // Contoso's limits cannot trigger; Fabrikam's are tiny. A small ID cache fills during
    // warm-up, so that a flat line afterwards means nothing else grows.
    let config = config_for(
        &sim.url,
        &format!(
            "[rate_limit]\nenabled = true\non_limit = \"queue\"\nmax_wait_ms = {MAX_WAIT_MS}\n\
             requests_per_second = 100000\nburst = 100000\nmailbox_concurrency = 1000\n\
             mailbox_requests_per_10min = 1000000000\n\
             [rate_limit.tenants.\"{FABRIKAM_TENANT_ID}\"]\nrequests_per_second = 2\nburst = 2\n\
             [rewrite]\nenabled = true\nstore = \"{}\"\ncache_capacity = 5000\n\
             [forward_proxy]\nenabled = true\naddr = \"127.0.0.1:0\"\nca_cert = \"{}\"\nca_key = \"{}\"\n\
             [log]\nlevel = \"warn\"\n",
            store.join("idmap.redb").display(),
            certs.join("ca.pem").display(),
            certs.join("ca-key.pem").display(),
        ),
    )
    .replace("level = \"debug\"\n", "");
    let mut proxy = ProxyProcess::start_binary(&bin, &config, &[]);
    let admin = HttpClient::h1();
    let forward = proxy
        .forward
        .clone()
        .expect("the forward listener was announced")
        .trim_start_matches("http://")
        .to_owned();

    let hits = id_pairs(&sim, ADELE).await;
    let misses = id_pairs(&sim, ALEX).await;
    let prefer_before = sim.stats().await["prefer_seen"]["IdType=\"ImmutableId\""]
        .as_u64()
        .unwrap_or(0);
    let started = Instant::now();
    let run = Arc::new(Run {
        proxy_url: proxy.url.clone(),
        sim_url: sim.url.clone(),
        forward,
        ca: certs.join("ca.pem"),
        deadline: started + Duration::from_secs(seconds),
        tally: Tally::default(),
        hits,
    });
    println!(
        "soak: {seconds} s against {bin} (pid {}), descriptor limit {limit}",
        proxy.pid()
    );

    let mut workers = Vec::new();
    for _ in 0..PASS_THROUGH_WORKERS {
        workers.push(tokio::spawn(pass_through(run.clone())));
    }
    for worker in 0..CACHE_HIT_WORKERS {
        workers.push(tokio::spawn(cache_hits(run.clone(), worker * 7)));
    }
    for worker in 0..CACHE_MISS_WORKERS {
        let mine: Vec<(String, String)> = misses
            .iter()
            .skip(worker)
            .step_by(CACHE_MISS_WORKERS)
            .cloned()
            .collect();
        workers.push(tokio::spawn(cache_misses(run.clone(), mine)));
    }
    for _ in 0..BATCH_WORKERS {
        workers.push(tokio::spawn(batches(run.clone())));
    }
    for _ in 0..THROTTLED_WORKERS {
        workers.push(tokio::spawn(throttled(run.clone())));
    }
    for _ in 0..DROP_IN_WORKERS {
        workers.push(tokio::spawn(drop_in(run.clone())));
    }

    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        ticks.tick().await;
        let sample = Sample {
            seconds: started.elapsed().as_secs_f64(),
            rss_kib: proxy.rss_kib(),
            fds: descriptor_count(proxy.pid()),
        };
        let sent: u64 = run.tally.snapshot().values().map(|c| c.sent).sum();
        println!(
            "SAMPLE t={:.0}s rss_kib={} fds={} requests={sent}",
            sample.seconds, sample.rss_kib, sample.fds
        );
        samples.push(sample);
        if !run.running() {
            break;
        }
    }
    for worker in workers {
        worker.await.expect("a worker never panics");
    }
    let alive = proxy.child.try_wait().map(|s| s.is_none()).unwrap_or(false);

    let warm_up = seconds as f64 / 10.0;
    let steady: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.seconds >= warm_up)
        .collect();
    let rss_slope = slope_per_minute(&steady, |s| s.rss_kib as f64);
    let fd_slope = slope_per_minute(&steady, |s| s.fds as f64);
    let first = steady.first().copied().unwrap_or(samples[0]);
    let last = samples.last().copied().unwrap_or(first);
    report("soak_seconds", seconds);
    report("soak_samples", samples.len());
    report("soak_steady_samples", steady.len());
    report("soak_rss_first_steady_kib", first.rss_kib);
    report("soak_rss_last_kib", last.rss_kib);
    report(
        "soak_rss_max_kib",
        samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
    );
    report("soak_rss_slope_kib_per_min", format!("{rss_slope:.1}"));
    report("soak_fds_first_steady", first.fds);
    report("soak_fds_last", last.fds);
    report(
        "soak_fds_max",
        samples.iter().map(|s| s.fds).max().unwrap_or(0),
    );
    report("soak_fd_slope_per_min", format!("{fd_slope:.2}"));

    let counts = run.tally.snapshot();
    for kind in Kind::ALL {
        let c = counts.get(&kind).cloned().unwrap_or_default();
        let name = kind.name();
        report(&format!("{name}_sent"), c.sent);
        report(&format!("{name}_2xx"), c.done);
        report(&format!("{name}_429_retry_after"), c.retry_later);
        report(&format!("{name}_errors"), c.failed);
    }
    let overload = counts.get(&Kind::Throttled).cloned().unwrap_or_default();
    report(
        "throttled_unaccounted",
        overload.sent as i64 - (overload.done + overload.retry_later) as i64,
    );
    let queued = metric(
        &admin,
        &proxy.admin,
        "idproxy_rate_limited_total{action=\"queued\"}",
    )
    .await;
    let rejected = metric(
        &admin,
        &proxy.admin,
        "idproxy_rate_limited_total{action=\"rejected\"}",
    )
    .await;
    let cache_hits = metric(&admin, &proxy.admin, "idproxy_id_cache_hits_total").await;
    let cache_misses = metric(&admin, &proxy.admin, "idproxy_id_cache_misses_total").await;
    let translate_calls = metric(&admin, &proxy.admin, "idproxy_translate_calls_total").await;
    let tunnels = metric(
        &admin,
        &proxy.admin,
        "idproxy_tunnels_total{kind=\"intercepted\"}",
    )
    .await;
    report("proxy_queued", queued);
    report("proxy_rejected", rejected);
    report("proxy_id_cache_hits", cache_hits);
    report("proxy_id_cache_misses", cache_misses);
    report("proxy_translate_calls", translate_calls);
    report("proxy_tunnels_intercepted", tunnels);
    let prefer_after = sim.stats().await["prefer_seen"]["IdType=\"ImmutableId\""]
        .as_u64()
        .unwrap_or(0);
    let stderr = proxy.stderr_so_far();
    report("proxy_stderr_lines", stderr.lines().count());

    assert!(alive, "the proxy died during the run: {stderr}");
    let failures: Vec<String> = counts
        .iter()
        .filter(|(_, c)| c.failed > 0)
        .map(|(kind, c)| format!("{}: {} failed, e.g. {:?}", kind.name(), c.failed, c.quoted))
        .collect();
    assert!(
        failures.is_empty(),
        "errors during the soak: {failures:#?}\nthe proxy said: {}",
        stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    for kind in Kind::ALL {
        let c = counts.get(&kind).cloned().unwrap_or_default();
        assert!(c.done > 0, "{} never completed a request", kind.name());
        if kind != Kind::Throttled {
            assert_eq!(c.retry_later, 0, "only the throttled tenant is limited");
        }
    }
    assert_eq!(
        overload.sent,
        overload.done + overload.retry_later,
        "every throttled request either completed or got 429 with Retry-After"
    );
    assert!(
        overload.retry_later > 0 && queued > 0.0,
        "the throttled tenant was really over its limit: {overload:?}, queued {queued}"
    );
    assert!(
        rejected >= overload.retry_later as f64,
        "every 429 the tenant saw was the proxy's own: {rejected} < {}",
        overload.retry_later
    );
    let drop_in = counts.get(&Kind::DropIn).cloned().unwrap_or_default();
    assert_eq!(
        tunnels * 2.0,
        drop_in.sent as f64,
        "two requests over every intercepted tunnel"
    );
    assert!(
        cache_misses > 0.0 && translate_calls > 0.0 && cache_hits > 0.0,
        "both cache paths ran: hits {cache_hits}, misses {cache_misses}, calls {translate_calls}"
    );
    let reached: u64 = counts.values().map(|c| c.done).sum();
    assert!(
        prefer_after - prefer_before >= reached,
        "every completed request reached Graph with the preference: {} < {reached}",
        prefer_after - prefer_before
    );
}
