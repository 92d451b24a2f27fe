//! The measurements behind BENCHMARKS.md that need the real binary and many connections or
//! entries: memory per idle keep-alive connection (plain and TLS), memory for a million cached
//! IDs and for a million limiter keys, and the translateExchangeIds calls that 10,000
//! concurrent misses for one mailbox cost.
//!
//! All `#[ignore]`d: they take minutes, need a file limit above 20,000 and mean something only
//! with the release binary. `benches/memory.sh` runs them one at a time with
//! `IDPROXY_BENCH_BIN` pointing at that binary and collects the `RESULT name value` lines each
//! prints before it checks DESIGN.md's target. Memory is compared as counts and bytes, never
//! time, so a busy machine changes no verdict here.

mod support;

use std::fmt::Display;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use immutable_id_proxy::admit::{Demand, Limits};
use immutable_id_proxy::config::RateLimit;
use immutable_id_proxy::identity::{AppId, Mailbox, TenantId};
use immutable_id_proxy::metrics::Metrics;
use immutable_id_proxy::sim;
use immutable_id_proxy::sim::ids::{self, MailboxKeys};
use serde_json::Value;
use support::*;

const KIB: u64 = 1024;

/// The binary under measurement: the release build when the script says so.
fn bench_bin() -> String {
    std::env::var("IDPROXY_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned())
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(name: &str, value: impl Display) {
    println!("RESULT {name} {value}");
}

fn self_rss_kib() -> u64 {
    rss_kib_of("/proc/self/status", "VmRSS:")
}

/// Limits off (they would queue a burst, which is not what is measured) and logs at warn, as
/// in the load benchmark. `extra` is appended as whole sections.
fn bench_config(upstream: &str, extra: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\nmax_connections = 50000\nheader_read_timeout_ms = 600000\n{extra}\n\
         [upstream]\nurl = \"{upstream}\"\nrequest_timeout_ms = 60000\n\n\
         [admin]\naddr = \"127.0.0.1:0\"\n\n[rate_limit]\nenabled = false\n\n[log]\nlevel = \"warn\"\n"
    )
}

/// An HTTP/1.1 client connection over `stream`, driven by its own task.
async fn http1_sender<S>(stream: S) -> hyper::client::conn::http1::SendRequest<Full<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    sender
}
/// Opens `count` HTTP/1.1 connections (at most `parallel` being set up at once), sends one
/// request on each and keeps every connection open, idle, in the returned list.
async fn open_idle_connections(
    proxy: &str,
    tls: Option<tokio_rustls::TlsConnector>,
    count: usize,
    parallel: usize,
) -> Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let addr = proxy
        .split("://")
        .nth(1)
        .expect("a proxy URL has a scheme")
        .to_owned();
    let token = bearer(ADELE);
    let mut senders = Vec::with_capacity(count);
    let indices: Vec<usize> = (0..count).collect();
    for chunk in indices.chunks(parallel) {
        let opened = futures_util::future::join_all(chunk.iter().map(|_| {
            let (addr, token, tls) = (addr.clone(), token.clone(), tls.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr)
                    .await
                    .expect("connect");
                let mut sender = match tls {
                    Some(connector) => {
                        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")
                            .expect("an IP is a server name");
                        let stream = connector.connect(name, tcp).await.expect("TLS handshake");
                        http1_sender(stream).await
                    }
                    None => http1_sender(tcp).await,
                };
                let request = Request::get(format!("/v1.0/users/{ADELE}/mailFolders/inbox"))
                    .header("host", addr.as_str())
                    .header("authorization", token.as_str())
                    .body(Full::default())
                    .expect("valid request");
                let response = sender.send_request(request).await.expect("an answer");
                assert_eq!(response.status(), StatusCode::OK);
                response.into_body().collect().await.expect("whole body");
                sender
            }
        }))
        .await;
        senders.extend(opened);
    }
    senders
}

async fn idle_connection_cost(tls: bool) {
    let count = env_count("IDPROXY_BENCH_IDLE_CONNECTIONS", 10_000);
    let parallel = 64;
    let sim = Sim::start().await;
    let certs = TempDir::new("bench-certs");
    let (listen_tls, connector) = if tls {
        let status = std::process::Command::new(BIN)
            .args(["certs", "init", "--dir"])
            .arg(certs.path())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("certs init runs");
        assert!(status.success());
        immutable_id_proxy::tls::install_crypto_provider();
        let mut client = immutable_id_proxy::tls::client_config(Some(&certs.join("ca.pem")))
            .expect("client TLS config");
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        (
            format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                certs.join("server.pem").display(),
                certs.join("server-key.pem").display()
            ),
            Some(tokio_rustls::TlsConnector::from(Arc::new(client))),
        )
    } else {
        (String::new(), None)
    };
    let proxy = ProxyProcess::start_binary(&bench_bin(), &bench_config(&sim.url, &listen_tls), &[]);

    // The first wave fills the upstream pool, the allocator's arenas and the TLS session
    // caches to what the measured wave will use, then goes away.
    let warm = open_idle_connections(&proxy.url, connector.clone(), parallel * 4, parallel).await;
    drop(warm);
    let before = proxy.rss_kib();
    let idle = open_idle_connections(&proxy.url, connector, count, parallel).await;
    let after = proxy.rss_kib();
    let open = idle.iter().filter(|s| !s.is_closed()).count();
    assert_eq!(open, count, "every measured connection is still open");

    let kind = if tls { "tls" } else { "plain" };
    let per_connection = (after.saturating_sub(before)) * KIB / count as u64;
    report(&format!("idle_connections_{kind}"), count);
    report(&format!("idle_rss_before_kib_{kind}"), before);
    report(&format!("idle_rss_after_kib_{kind}"), after);
    report(&format!("idle_bytes_per_connection_{kind}"), per_connection);
    assert!(
        per_connection <= 20 * KIB,
        "{per_connection} bytes per idle {kind} connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: benches/memory.sh runs it"]
async fn an_idle_keep_alive_connection_costs_at_most_20_kib() {
    idle_connection_cost(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: benches/memory.sh runs it"]
async fn an_idle_tls_keep_alive_connection_costs_at_most_20_kib() {
    idle_connection_cost(true).await;
}

/// The proxy's `idproxy_id_cache_entries` gauge.
async fn cache_entries(client: &HttpClient, admin: &str) -> u64 {
    let (_, _, metrics) = client.get(&format!("{admin}/metrics")).await;
    String::from_utf8_lossy(&metrics)
        .lines()
        .find_map(|l| l.strip_prefix("idproxy_id_cache_entries "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: benches/memory.sh runs it"]
async fn a_million_cached_ids_fit_in_256_mib() {
    let count = env_count("IDPROXY_BENCH_CACHED_IDS", 1_000_000) as u64;
    // Small import chunks, so the CSV text the import parses leaves little behind.
    let import_chunk = 20_000;
    let ids_per_request = 1000;
    let sim = Sim::start().await;
    let store = TempDir::new("bench-store");
    let config = bench_config(
        &sim.url,
        &format!(
            "[rewrite]\nenabled = true\ncache_capacity = {count}\nstore = \"{}\"\n",
            store.join("idmap.redb").display()
        ),
    );
    let proxy = ProxyProcess::start_binary(&bench_bin(), &config, &[]);
    let client = HttpClient::h1();
    let keys = MailboxKeys {
        mailbox_guid: *b"bench-mailbox-01",
        store_uid: *b"bench-store-uid1",
        db_guid: *b"bench-database-1",
    };
    let regular = |n: u64| ids::to_rest(&ids::regular_item_id(&keys, 1, n));
    let immutable = |n: u64| ids::to_rest(&ids::immutable_item_id(&keys, n));
    let tenant = sim::SEED_USERS
        .iter()
        .find(|u| u.upn == ADELE)
        .expect("Adele is seeded")
        .tenant_id;

    // A bulk import goes to the store only (it must not push the hot set out of the cache),
    // so the cache is then filled the way it is in service: requests carrying the IDs, each
    // ID read from the store once and kept in memory.
    let mut start = 0;
    while start < count {
        let end = (start + import_chunk).min(count);
        let csv: String = (start..end)
            .map(|n| format!("{},{}\n", regular(n), immutable(n)))
            .collect();
        let (status, _, body) = client
            .send(
                Request::post(format!("{}/idmap?tenant={tenant}", proxy.admin))
                    .header("content-type", "text/csv")
                    .body(Full::new(Bytes::from(csv)))
                    .expect("valid request"),
            )
            .await;
        assert!(status.is_success(), "{status}: {body:?}");
        start = end;
    }
    let before = proxy.rss_kib();
    let entries_before = cache_entries(&client, &proxy.admin).await;
    let token = bearer(ADELE);
    let mut start = 0;
    while start < count {
        let end = (start + ids_per_request).min(count);
        let body = serde_json::json!({
            "value": (start..end).map(|n| serde_json::json!({"id": regular(n)})).collect::<Vec<_>>()
        })
        .to_string();
        // The simulator has no such route and answers 404; what counts is what the proxy
        // cached on the way.
        client
            .send(
                Request::post(format!("{}/v1.0/users/{ADELE}/bench", proxy.url))
                    .header("authorization", token.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("valid request"),
            )
            .await;
        start = end;
    }
    let after = proxy.rss_kib();
    let entries = cache_entries(&client, &proxy.admin).await;

    let delta = after.saturating_sub(before);
    report("cached_ids_imported", count);
    report("cached_ids_entries", entries);
    report("cached_ids_rss_before_kib", before);
    report("cached_ids_rss_after_kib", after);
    report("cached_ids_rss_delta_kib", delta);
    report(
        "cached_ids_bytes_per_entry",
        delta * KIB / entries.saturating_sub(entries_before).max(1),
    );
    assert!(
        entries >= count * 99 / 100,
        "only {entries} of {count} mappings are cached"
    );
    assert!(
        delta <= 256 * KIB,
        "{delta} KiB more resident memory for {entries} cached IDs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: benches/memory.sh runs it"]
async fn a_million_limiter_keys_are_measured() {
    let count = env_count("IDPROXY_BENCH_LIMITER_MAILBOXES", 500_000);
    let tenants = 1000;
    let huge = std::num::NonZeroU32::new(1_000_000_000).expect("not zero");
    let config = RateLimit {
        enabled: true,
        on_limit: immutable_id_proxy::config::OnLimit::Reject,
        max_wait: std::time::Duration::from_secs(1),
        requests_per_second: huge,
        burst: huge,
        mailbox_concurrency: std::num::NonZeroU32::new(4).expect("not zero"),
        mailbox_requests_per_10min: std::num::NonZeroU32::new(10_000).expect("not zero"),
        tenants: Default::default(),
    };
    let limits = Limits::new(&config, Arc::new(Metrics::new()));
    let app = AppId("11111111-2222-3333-4444-555555555555".into());
    let tenant_ids: Vec<TenantId> = (0..tenants)
        .map(|t| TenantId(format!("6e6e7a6c-6f73-4f6e-9a6f-{t:012x}").into()))
        .collect();
    let before = self_rss_kib();
    for i in 0..count {
        let mailbox = Mailbox(format!("user{i:07}@tenant{}.onmicrosoft.com", i % tenants));
        let demand = Demand::single(&tenant_ids[i % tenants], &app, Some(&mailbox));
        let permit = limits.admit(&demand).await;
        assert!(permit.is_ok(), "request {i} was refused");
    }
    let after = self_rss_kib();
    let keys = limits.key_count() as u64;
    let delta = after.saturating_sub(before);
    report("limiter_mailboxes", count);
    report("limiter_keys", keys);
    report("limiter_rss_delta_kib", delta);
    report("limiter_bytes_per_key", delta * KIB / keys.max(1));
    assert!(
        keys >= 2 * count as u64,
        "{keys} keys for {count} mailboxes: one budget key per mailbox and one slot key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: benches/memory.sh runs it"]
async fn ten_thousand_concurrent_misses_for_one_mailbox_cost_at_most_12_translate_calls() {
    let count = env_count("IDPROXY_BENCH_MISSES", 10_000);
    // Unset: the shipped default (2 ms).
    let window = std::env::var("IDPROXY_BENCH_BATCH_WINDOW_MS")
        .map(|ms| format!("batch_window_ms = {ms}\n"))
        .unwrap_or_default();
    let connections = 64;
    let sim = Sim::start().await;
    ensure_messages(&sim, ADELE, count).await;
    let mut regulars = message_ids(&sim, ADELE, false).await;
    regulars.truncate(count);
    assert_eq!(regulars.len(), count);
    let store = TempDir::new("bench-store");
    let proxy = ProxyProcess::start_binary(
        &bench_bin(),
        &bench_config(
            &sim.url,
            &format!(
                "[rewrite]\nenabled = true\nstore = \"{}\"\n{window}",
                store.join("idmap.redb").display()
            ),
        ),
        &[],
    );
    let token = bearer(ADELE);
    // h2 connections, already open, so the 10,000 requests arrive as one burst (each
    // connection carries up to 200 streams at once, the server's default).
    let clients: Vec<Client<_, Full<Bytes>>> = (0..connections)
        .map(|_| {
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http()
        })
        .collect();
    for client in &clients {
        let warm = Request::get(format!(
            "{}/v1.0/users/{ADELE}/mailFolders/inbox",
            proxy.url
        ))
        .header("authorization", token.as_str())
        .body(Full::default())
        .expect("valid request");
        let response = client.request(warm).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let calls_before = sim.stats().await["translate_calls"].as_u64().unwrap_or(0);
    let tasks: Vec<_> = regulars
        .iter()
        .enumerate()
        .map(|(i, regular)| {
            let client = clients[i % connections].clone();
            let request = Request::get(format!(
                "{}/v1.0/users/{ADELE}/messages/{}?$select=id",
                proxy.url,
                regular.replace('=', "%3D")
            ))
            .header("authorization", token.as_str())
            .body(Full::default())
            .expect("valid request");
            tokio::spawn(async move {
                let response = client.request(request).await.expect("an answer");
                let status = response.status();
                let body = response.into_body().collect().await.expect("body");
                let json: Value = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
                (status, json["id"].as_str().unwrap_or_default().to_owned())
            })
        })
        .collect();
    let mut answered = 0;
    for (task, regular) in tasks.into_iter().zip(&regulars) {
        let (status, id) = task.await.expect("the request task ends");
        assert_eq!(status, StatusCode::OK);
        assert_ne!(&id, regular, "the answer carries the immutable ID");
        answered += 1;
    }
    let stats = sim.stats().await;
    let calls = stats["translate_calls"].as_u64().unwrap_or(0) - calls_before;
    let per_call: Vec<u64> = stats["translate_ids_per_call"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    report(
        "coalescing_batch_window_ms",
        std::env::var("IDPROXY_BENCH_BATCH_WINDOW_MS").unwrap_or_else(|_| "2".to_owned()),
    );
    report("coalescing_requests", answered);
    report("coalescing_translate_calls", calls);
    report(
        "coalescing_ids_per_call",
        format!("{per_call:?}").replace(' ', ""),
    );
    report("coalescing_ids_translated", per_call.iter().sum::<u64>());
    assert!(calls <= 12, "{calls} translate calls for {count} IDs");
    // An ID missing here had its call fail and was forwarded as sent (on_error = "pass").
    assert_eq!(
        per_call.iter().sum::<u64>(),
        count as u64,
        "each ID translated once"
    );
}
