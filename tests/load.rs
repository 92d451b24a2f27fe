//! Load: 10,000 HTTP/1.1 keep-alive client connections held open at once through the real
//! binary in front of the simulator, each answered 200 twice with the immutable-ID preference
//! added; the proxy's resident memory is reported, and once the clients hang up its
//! descriptors come back to where they were.
//!
//! An ordinary test (CI runs it): it asserts counts, never durations. It raises this
//! process's descriptor limit (the proxy inherits it) and fails, saying so, when the hard
//! limit is too low for 10,000 connections. The memory figure is a debug build's; the release
//! build's per-connection cost is measured by `benches/memory.sh`.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::*;

const CONNECTIONS: usize = 10_000;
/// Connections being set up at once: opens 10,000 quickly without overflowing the listen
/// backlog.
const OPENING: usize = 200;
/// Second requests in flight at once: bounds the proxy's upstream pool, and with it the
/// simulator's sockets, whatever the number of client connections.
const IN_FLIGHT: usize = 1_000;
/// Per process: one side of every client connection, both sides of the upstream pool at
/// worst (the simulator lives in this process), and a thousand for listeners, files and the
/// runtime.
const DESCRIPTORS_NEEDED: libc::rlim_t = 10_000 + 2 * (1_000 + 200) + 1_000;
const IMMUTABLE: &str = "IdType=\"ImmutableId\"";
const KIB: u64 = 1024;

/// Limits off (the test measures connections, not the limiter), logs at warn (20,000 debug
/// lines would only fill this process's copy of stderr), room for every connection, and no
/// header timeout closing the idle ones while the others are still being opened.
fn load_config(upstream: &str) -> String {
    config_for(
        upstream,
        "[listen]\nmax_connections = 20000\nheader_read_timeout_ms = 600000\n\
         [rate_limit]\nenabled = false\n[log]\nlevel = \"warn\"\n",
    )
    .replace("level = \"debug\"\n", "")
}

/// One request on an open connection: a 200 with a Graph folder in JSON, or why not.
async fn ask(sender: &mut SendRequest<Full<Bytes>>, host: &str, token: &str) -> Result<(), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection closed before the request: {e}"))?;
    let request = Request::get(format!("/v1.0/users/{ADELE}/mailFolders/inbox"))
        .header("host", host)
        .header("authorization", token)
        .body(Full::default())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body cut off: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    let folder: Value =
        serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
    match folder["id"].as_str() {
        Some(id) if !id.is_empty() => Ok(()),
        _ => Err(format!("answer without an id: {folder}")),
    }
}

/// Opens a keep-alive connection and asks once on it; the connection stays open for as long
/// as the returned sender lives.
async fn open_and_ask(host: &str, token: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
    tokio::spawn(conn);
    ask(&mut sender, host, token).await?;
    Ok(sender)
}

/// The TCP sockets of `/proc/<pid>/net/tcp` (this network namespace, every process) by
/// inode: local port, remote port, state (0A is LISTEN).
fn tcp_sockets(pid: u32) -> HashMap<u64, (u16, u16, String)> {
    let port = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            .unwrap_or(0)
    };
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode = fields.get(9)?.parse().ok()?;
            Some((
                inode,
                (
                    port(fields.get(1)?),
                    port(fields.get(2)?),
                    (*fields.get(3)?).to_owned(),
                ),
            ))
        })
        .collect()
}

/// `/proc/net/tcp`'s state of a listening socket.
const LISTEN: &str = "0A";

#[derive(Debug, Clone, Copy)]
struct Ports {
    proxy: u16,
    admin: u16,
    sim: u16,
}

/// The proxy's descriptors, split by what they are.
#[derive(Debug, Clone, Copy)]
struct Descriptors {
    total: usize,
    /// Accepted client connections on the proxy listener.
    clients: usize,
    /// The upstream pool: connections to the simulator, idle ones kept up to 90 s.
    upstream: usize,
    /// This test's own `/metrics` connections, which come and go as it polls.
    admin: usize,
}

impl Descriptors {
    fn of(proxy: &ProxyProcess, ports: Ports) -> Descriptors {
        let pid = proxy.pid();
        let sockets = tcp_sockets(pid);
        let mut seen = Descriptors {
            total: 0,
            clients: 0,
            upstream: 0,
            admin: 0,
        };
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return seen;
        };
        for entry in entries.flatten() {
            seen.total += 1;
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            let inode = target
                .to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            match inode.and_then(|inode| sockets.get(&inode)) {
                Some((_, remote, _)) if *remote == ports.sim => seen.upstream += 1,
                Some((local, _, state)) if state != LISTEN && *local == ports.proxy => {
                    seen.clients += 1
                }
                Some((local, _, state)) if state != LISTEN && *local == ports.admin => {
                    seen.admin += 1
                }
                _ => {}
            }
        }
        seen
    }

    /// Everything but the upstream pool, whose idle connections outlive the clients, and the
    /// metrics polling.
    fn own(&self) -> usize {
        self.total - self.upstream - self.admin
    }
}

/// What each open descriptor is, for a failure message.
fn descriptor_listing(pid: u32) -> String {
    let sockets = tcp_sockets(pid);
    let mut listing: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            let target = target.to_string_lossy().into_owned();
            let tcp = target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
                .and_then(|inode| sockets.get(&inode));
            match tcp {
                Some((local, remote, state)) => format!("{target} {local}->{remote} st {state}"),
                None => target,
            }
        })
        .collect();
    listing.sort();
    listing.join(", ")
}

/// On a new connection each time: a pooled one left idle for the admin listener's 10 s header
/// timeout could be closed by it just as it is reused.
async fn client_connections_gauge(proxy: &ProxyProcess) -> Option<u64> {
    let (_, _, body) = HttpClient::h1()
        .get(&format!("{}/metrics", proxy.admin))
        .await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("idproxy_client_connections "))
        .and_then(|v| v.trim().parse().ok())
}

fn prefer_count(stats: &Value) -> u64 {
    stats["prefer_seen"][IMMUTABLE].as_u64().unwrap_or(0)
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Polls (bounded, so a leak fails instead of hanging) until the proxy has no client
/// connection left, by its gauge and by its descriptors, and holds no more descriptors than
/// `baseline` apart from its upstream pool.
async fn assert_back_to(proxy: &ProxyProcess, ports: Ports, baseline: Descriptors) -> Descriptors {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let gauge = client_connections_gauge(proxy).await;
        let now = Descriptors::of(proxy, ports);
        if gauge == Some(0) && now.clients == 0 && now.own() <= baseline.own() {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "descriptors stayed at {now:?} (gauge {gauge:?}), baseline {baseline:?}: {}",
            descriptor_listing(proxy.pid())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keep_alive_connections_held_at_once_all_get_200_and_give_back_their_descriptors(
) {
    let limit = raise_descriptor_limit(DESCRIPTORS_NEEDED).unwrap_or_else(|why| panic!("{why}"));
    // The simulator's default 10 s idle timeout, shorter than the proxy's 90 s pool: pooled
    // connections it closes as the proxy reuses them must not cost a GET (the proxy sends
    // it again on a new connection).
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&load_config(&sim.url));
    let host = proxy.url.trim_start_matches("http://").to_owned();
    let ports = Ports {
        proxy: port_of(&proxy.url),
        admin: port_of(&proxy.admin),
        sim: sim.addr.port(),
    };
    let token = bearer(ADELE);

    // One request first, so whatever the proxy sets up on first use is in the baseline.
    let warm = open_and_ask(&host, &token)
        .await
        .unwrap_or_else(|e| panic!("warm-up request: {e}"));
    drop(warm);
    let baseline = assert_back_to(&proxy, ports, Descriptors::of(&proxy, ports)).await;
    let rss_before = proxy.rss_kib();
    let sim_before = sim.stats().await;

    let opened: Vec<Result<SendRequest<Full<Bytes>>, String>> = stream::iter(0..CONNECTIONS)
        .map(|_| open_and_ask(&host, &token))
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let mut held = Vec::with_capacity(CONNECTIONS);
    let mut failures = Vec::new();
    for outcome in opened {
        match outcome {
            Ok(sender) => held.push(sender),
            Err(why) => failures.push(why),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} connections failed their first request (limit {limit}); first: {:?}; \
         the proxy said: {}",
        failures.len(),
        failures.first(),
        proxy.stderr_so_far()
    );

    let failures: Vec<String> = stream::iter(held.iter_mut())
        .map(|sender| ask(sender, &host, &token))
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|outcome| async move { outcome.err() })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} second requests failed; first: {:?}; the proxy said: {}",
        failures.len(),
        failures.first(),
        proxy.stderr_so_far()
    );
    assert_eq!(
        held.iter().filter(|sender| !sender.is_closed()).count(),
        CONNECTIONS,
        "every connection is still open after its second answer"
    );

    let rss_held = proxy.rss_kib();
    let open = Descriptors::of(&proxy, ports);
    assert_eq!(
        client_connections_gauge(&proxy).await,
        Some(CONNECTIONS as u64),
        "the proxy's gauge counts every held connection"
    );
    assert_eq!(
        open.clients, CONNECTIONS,
        "the proxy holds one socket per client: {open:?}"
    );
    assert!(
        open.upstream <= 2 * (IN_FLIGHT + OPENING),
        "the upstream pool follows the requests in flight, not the client connections: {open:?}"
    );
    let sim_after = sim.stats().await;
    let reached =
        sim_after["requests"].as_u64().unwrap_or(0) - sim_before["requests"].as_u64().unwrap_or(0);
    let with_prefer = prefer_count(&sim_after) - prefer_count(&sim_before);
    assert_eq!(
        reached,
        2 * CONNECTIONS as u64,
        "every request reached Graph"
    );
    assert_eq!(
        with_prefer,
        2 * CONNECTIONS as u64,
        "every request reached Graph with {IMMUTABLE}: {}",
        sim_after["prefer_seen"]
    );

    let per_connection = rss_held.saturating_sub(rss_before) * KIB / CONNECTIONS as u64;
    println!(
        "RESULT load connections={CONNECTIONS} requests={} rss_before_kib={rss_before} \
         rss_held_kib={rss_held} bytes_per_connection={per_connection} \
         proxy_fds_held={} upstream_pool={} fd_limit={limit}",
        2 * CONNECTIONS,
        open.total,
        open.upstream
    );

    drop(held);
    let after = assert_back_to(&proxy, ports, baseline).await;
    println!(
        "RESULT load_closed proxy_fds={} baseline_fds={} upstream_pool={} rss_after_kib={}",
        after.total,
        baseline.total,
        after.upstream,
        proxy.rss_kib()
    );
}
