//! `shared.backend = "redis"`: replicas share one quota, one in-flight cap, one penalty box
//! and one ID map through a real redis-server started here on a free loopback port, and keep
//! proxying on local state when it dies.
//!
//! redis-server must be installed (`.ci/run` installs Debian's package); a missing one fails
//! the tests with a message saying so, rather than skipping them.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use immutable_id_proxy::admit::{Demand, Limits};
use immutable_id_proxy::config::{OnLimit, RateLimit};
use immutable_id_proxy::identity::{AppId, Mailbox, TenantId};
use immutable_id_proxy::metrics::Metrics;
use immutable_id_proxy::shared::{Redis, SharedLimits};
use serde_json::Value;
use support::*;

/// A redis-server child with no persistence, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        // Redis cannot listen on port 0: take a free port from the kernel and hand it over.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        RedisServer::start_on(port)
    }

    fn start_on(port: u16) -> RedisServer {
        let dir = TempDir::new("redis");
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: these tests need it (.ci/run installs it: \
                 apt-get install redis-server)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut log = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    log.push_str(&line);
                    log.push('\n');
                    if line.contains("Ready to accept connections") {
                        break;
                    }
                }
                _ => panic!("redis-server on port {port} exited before it was ready:\n{log}"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        RedisServer {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Holds every other client's commands for `ms` (CLIENT PAUSE): a Redis that is up but
    /// does not answer. Returns once the pause is in force.
    fn pause(&self, ms: u32) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let ms = ms.to_string();
        let command = format!(
            "*3\r\n$6\r\nCLIENT\r\n$5\r\nPAUSE\r\n${}\r\n{ms}\r\n",
            ms.len()
        );
        stream.write_all(command.as_bytes()).unwrap();
        let mut reply = [0u8; 5];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn shared_config(sim: &Sim, redis: &RedisServer, extra: &str) -> String {
    config_for(
        &sim.url,
        &format!(
            "[shared]\nbackend = \"redis\"\nredis_url = \"{}\"\n{extra}",
            redis.url()
        ),
    )
}

async fn metric(client: &HttpClient, proxy: &ProxyProcess, name: &str) -> i64 {
    let (_, _, body) = client.get(&format!("{}/metrics", proxy.admin)).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `/metrics` until `name` reads `want` (reconnecting takes a backoff of up to 2 s).
async fn wait_for_metric(client: &HttpClient, proxy: &ProxyProcess, name: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(client, proxy, name).await != want {
        assert!(
            Instant::now() < deadline,
            "{name} never became {want}: {}",
            proxy.stderr_so_far()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_messages(client: &HttpClient, proxy: &ProxyProcess) -> u16 {
    let url = format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url);
    let (status, _, _) = client
        .get_with(&url, &[("authorization", &bearer(ADELE))])
        .await;
    status.as_u16()
}

#[tokio::test]
async fn two_replicas_sharing_a_tenant_admit_together_what_one_would() {
    let sim = Sim::start().await;
    let redis = RedisServer::start();
    let config = shared_config(
        &sim,
        &redis,
        "[rate_limit]\non_limit = \"reject\"\nrequests_per_second = 1\nburst = 10\n",
    );
    let a = ProxyProcess::start(&config);
    let b = ProxyProcess::start(&config);
    let client = HttpClient::h1();

    let started = Instant::now();
    let mut admitted = [0u32; 2];
    let mut refused = [0u32; 2];
    for i in 0..40 {
        let (replica, proxy) = if i % 2 == 0 { (0, &a) } else { (1, &b) };
        match get_messages(&client, proxy).await {
            200 => admitted[replica] += 1,
            429 => refused[replica] += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs();
    let total = admitted[0] + admitted[1];
    // One replica alone admits the burst of 10 plus one per second that passed; two
    // replicas with local limits would admit twice the burst.
    let bound = 10 + u32::try_from(elapsed).unwrap_or(u32::MAX) + 1;
    assert!(
        (10..=bound).contains(&total),
        "admitted {total} (A {}, B {}) in {elapsed} s; one replica admits 10..={bound}",
        admitted[0],
        admitted[1]
    );
    assert!(admitted[0] > 0 && admitted[1] > 0, "{admitted:?}");
    assert!(refused[0] > 0 && refused[1] > 0, "{refused:?}");
    for proxy in [&a, &b] {
        assert_eq!(metric(&client, proxy, "idproxy_redis_up").await, 1);
        assert_eq!(
            metric(&client, proxy, "idproxy_redis_fallback_total").await,
            0
        );
    }
    assert_eq!(sim.stats().await["requests"], total);
}

const IMMUTABLE_PREFIX: &str = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A";

async fn get_json(client: &HttpClient, url: &str) -> (u16, Value) {
    let (status, _, body) = client
        .get_with(url, &[("authorization", &bearer(ADELE))])
        .await;
    (
        status.as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn move_directly(sim: &Sim, regular: &str) {
    let request = http::Request::post(format!(
        "{}/v1.0/users/{ADELE}/messages/{}/move",
        sim.url,
        regular.replace('=', "%3D")
    ))
    .header("authorization", bearer(ADELE))
    .header("content-type", "application/json")
    .body(http_body_util::Full::new(bytes::Bytes::from_static(
        b"{\"destinationId\":\"archive\"}",
    )))
    .unwrap();
    let (status, _, _) = HttpClient::h1().send(request).await;
    assert_eq!(status, 201);
}

/// The first inbox message's regular ID, as an old app stored it, and its immutable ID.
async fn stored_and_immutable_id(sim: &Sim) -> (String, String) {
    let client = HttpClient::h1();
    let (status, page) = get_json(
        &client,
        &format!(
            "{}/v1.0/users/{ADELE}/mailFolders/inbox/messages?$top=1",
            sim.url
        ),
    )
    .await;
    assert_eq!(status, 200);
    let regular = page["value"][0]["id"].as_str().unwrap().to_owned();
    let url = format!(
        "{}/v1.0/users/{ADELE}/messages/{}",
        sim.url,
        regular.replace('=', "%3D")
    );
    let (_, _, body) = client
        .get_with(
            &url,
            &[
                ("authorization", &bearer(ADELE)),
                ("prefer", "IdType=\"ImmutableId\""),
            ],
        )
        .await;
    let item: Value = serde_json::from_slice(&body).unwrap();
    (regular, item["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn mappings_imported_into_one_replica_serve_every_replica() {
    let sim = Sim::start().await;
    let redis = RedisServer::start();
    let config = shared_config(&sim, &redis, "[rewrite]\nenabled = true\n");
    let a = ProxyProcess::start(&config);
    let b = ProxyProcess::start(&config);
    let client = HttpClient::h1();
    let (regular, immutable) = stored_and_immutable_id(&sim).await;

    let tenant = immutable_id_proxy::sim::CONTOSO_TENANT_ID;
    let request = http::Request::post(format!("{}/idmap?tenant={tenant}", a.admin))
        .header("content-type", "text/csv")
        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
            "source_id,target_id\n{regular},{immutable}\n"
        ))))
        .unwrap();
    let (status, _, body) = client.send(request).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (answer["imported"].as_u64(), answer["shared"].as_u64()),
        (Some(1), Some(1))
    );

    move_directly(&sim, &regular).await;
    let url = format!(
        "{}/v1.0/users/{ADELE}/messages/{}",
        b.url,
        regular.replace('=', "%3D")
    );
    let (status, item) = get_json(&client, &url).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["id"], immutable.as_str());
    assert_eq!(sim.stats().await["translate_calls"], 0);
}

#[tokio::test]
async fn an_id_translated_through_one_replica_is_served_by_another_without_a_translate_call() {
    let sim = Sim::start().await;
    let redis = RedisServer::start();
    // Each replica keeps its own store file, in its own directory.
    let config = shared_config(&sim, &redis, "[rewrite]\nenabled = true\n");
    let a = ProxyProcess::start(&config);
    let b = ProxyProcess::start(&config);
    let client = HttpClient::h1();

    let (status, page) = get_json(
        &client,
        &format!(
            "{}/v1.0/users/{ADELE}/mailFolders/inbox/messages?$top=1",
            sim.url
        ),
    )
    .await;
    assert_eq!(status, 200);
    let regular = page["value"][0]["id"].as_str().unwrap().to_owned();
    let path = |proxy: &ProxyProcess| {
        format!(
            "{}/v1.0/users/{ADELE}/messages/{}",
            proxy.url,
            regular.replace('=', "%3D")
        )
    };

    let (status, through_a) = get_json(&client, &path(&a)).await;
    assert_eq!(status, 200, "{through_a}");
    let immutable = through_a["id"].as_str().unwrap().to_owned();
    assert!(immutable.starts_with(IMMUTABLE_PREFIX), "{immutable}");
    assert_eq!(sim.stats().await["translate_calls"], 1);

    // After the move Graph can no longer resolve the regular ID: only the mapping A paid
    // for can.
    move_directly(&sim, &regular).await;

    let (status, through_b) = get_json(&client, &path(&b)).await;
    assert_eq!(status, 200, "{through_b}");
    assert_eq!(through_b["id"], immutable.as_str());
    assert_ne!(through_b["parentFolderId"], through_a["parentFolderId"]);
    assert_eq!(
        sim.stats().await["translate_calls"],
        1,
        "B found A's translation in Redis"
    );
    assert_eq!(metric(&client, &b, "idproxy_redis_fallback_total").await, 0);
}

#[tokio::test]
async fn redis_killed_mid_run_falls_back_to_local_limits_and_shared_limits_resume_after_restart() {
    let sim = Sim::start().await;
    let mut redis = RedisServer::start();
    let port = redis.port;
    // Four requests per app+mailbox per ten minutes: no token comes back during the test.
    let config = shared_config(
        &sim,
        &redis,
        "[rate_limit]\non_limit = \"reject\"\nmailbox_requests_per_10min = 4\n",
    );
    let a = ProxyProcess::start(&config);
    let b = ProxyProcess::start(&config);
    let client = HttpClient::h1();

    let mut shared = Vec::new();
    for proxy in [&a, &b, &a, &b, &b] {
        shared.push(get_messages(&client, proxy).await);
    }
    assert_eq!(shared, [200, 200, 200, 200, 429], "one shared budget of 4");

    redis.kill();
    let mut local = Vec::new();
    for _ in 0..5 {
        local.push(get_messages(&client, &a).await);
    }
    assert_eq!(
        local,
        [200, 200, 200, 200, 429],
        "A proxies on, within its own local budget of 4"
    );
    assert_eq!(metric(&client, &a, "idproxy_redis_up").await, 0);
    assert!(metric(&client, &a, "idproxy_redis_fallback_total").await >= 5);
    let logged = a.stderr_so_far();
    assert_eq!(
        logged.matches("Redis unavailable").count(),
        1,
        "the outage is logged once: {logged}"
    );

    let _redis = RedisServer::start_on(port);
    wait_for_metric(&client, &a, "idproxy_redis_up", 1).await;
    wait_for_metric(&client, &b, "idproxy_redis_up", 1).await;
    let mut resumed = Vec::new();
    for _ in 0..4 {
        resumed.push(get_messages(&client, &a).await);
    }
    assert_eq!(
        resumed, [200; 4],
        "A's local budget is spent, so these came from the (fresh) shared one"
    );
    assert_eq!(
        get_messages(&client, &b).await,
        429,
        "B has spent nothing locally: only the shared budget refuses it"
    );
}

#[test]
fn a_rediss_url_stops_the_start_naming_the_key() {
    let dir = TempDir::new("rediss");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        config_for(
            "http://127.0.0.1:9",
            "[shared]\nbackend = \"redis\"\nredis_url = \"rediss://cache:6380\"\n",
        ),
    )
    .unwrap();
    let output = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("shared.redis_url: rediss:// (TLS) is not supported"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_bypassed_after_the_call_timeout() {
    let sim = Sim::start().await;
    let redis = RedisServer::start();
    let a = ProxyProcess::start(&shared_config(&sim, &redis, ""));
    let client = HttpClient::h1();
    assert_eq!(get_messages(&client, &a).await, 200);
    assert_eq!(metric(&client, &a, "idproxy_redis_fallback_total").await, 0);

    redis.pause(3000);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get_messages(&client, &a).await);
    }
    assert_eq!(statuses, [200; 3], "proxying goes on on local limits");
    assert_eq!(metric(&client, &a, "idproxy_redis_up").await, 0);
    assert_eq!(metric(&client, &a, "idproxy_redis_fallback_total").await, 3);

    // The pause ends by itself; the replica reconnects.
    wait_for_metric(&client, &a, "idproxy_redis_up", 1).await;
    assert_eq!(get_messages(&client, &a).await, 200);
    assert_eq!(metric(&client, &a, "idproxy_redis_fallback_total").await, 3);
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn limits_config(on_limit: OnLimit) -> RateLimit {
    RateLimit {
        enabled: true,
        on_limit,
        max_wait: Duration::from_secs(10),
        requests_per_second: nz(1000),
        burst: nz(1000),
        mailbox_concurrency: nz(100),
        mailbox_requests_per_10min: nz(100_000),
        tenants: Default::default(),
    }
}

/// One replica's limits in this process, on its own Redis connection.
async fn replica(redis: &RedisServer, cfg: &RateLimit, lease_ttl: Duration) -> Arc<SharedLimits> {
    let metrics = Arc::new(Metrics::new());
    let handle = Redis::new(&redis.url(), metrics.clone()).unwrap();
    handle.start().await;
    assert!(handle.is_up());
    let local = Arc::new(Limits::new(cfg, metrics.clone()));
    Arc::new(SharedLimits::with_lease_ttl(
        handle, local, cfg, metrics, lease_ttl,
    ))
}

fn ids() -> (TenantId, AppId, Mailbox) {
    (
        TenantId("t1".into()),
        AppId("app".into()),
        Mailbox("alice".into()),
    )
}

#[tokio::test]
async fn the_in_flight_cap_holds_across_replicas_and_a_dead_replicas_leases_lapse() {
    let redis = RedisServer::start();
    let mut cfg = limits_config(OnLimit::Reject);
    cfg.mailbox_concurrency = nz(2);
    let a = replica(&redis, &cfg, Duration::from_secs(1)).await;
    let b = replica(&redis, &cfg, Duration::from_secs(1)).await;
    // B lives on: its leases are renewed every third of their TTL. A's never are.
    let _renewal = b.spawn_renewal();
    let (t, app, m) = ids();
    let demand = Demand::single(&t, &app, Some(&m));

    let held_by_a = a.admit(&demand).await.unwrap();
    assert_eq!(held_by_a.leases_held(), 1);
    let held_by_b = b.admit(&demand).await.unwrap();
    let refused = b.admit(&demand).await.unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_secs(1));
    assert!(a.admit(&demand).await.is_err(), "the cap of 2 is shared");

    // Released on A's connection, so A's next check sees the free slot.
    drop(held_by_a);
    let again = a.admit(&demand).await.unwrap();

    // A dies holding its lease: never released, never renewed.
    std::mem::forget(again);
    drop(held_by_b);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut admitted = Vec::new();
    loop {
        if let Ok(permit) = b.admit(&demand).await {
            admitted.push(permit);
            if admitted.len() == 2 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "A's lease never lapsed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Renewed past several TTLs, B's two leases still fill the cap.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(b.admit(&demand).await.is_err());
}

#[tokio::test]
async fn a_penalty_set_by_one_replica_holds_the_mailbox_on_every_replica() {
    let redis = RedisServer::start();
    let cfg = limits_config(OnLimit::Reject);
    let a = replica(&redis, &cfg, Duration::from_secs(30)).await;
    let b = replica(&redis, &cfg, Duration::from_secs(30)).await;
    let (t, app, m) = ids();
    a.penalize_and_wait(&t, &app, Some(&m), Duration::from_secs(30))
        .await;
    let refused = b
        .admit(&Demand::single(&t, &app, Some(&m)))
        .await
        .unwrap_err();
    assert!(
        (29..=30).contains(&refused.retry_after.as_secs()),
        "{refused:?}"
    );
    let bob = Mailbox("bob".into());
    assert!(b.admit(&Demand::single(&t, &app, Some(&bob))).await.is_ok());
    assert!(
        b.admit(&Demand::single(&t, &app, None)).await.is_ok(),
        "a mailbox penalty leaves the tenant's other requests alone"
    );
}

#[tokio::test]
async fn queued_requests_on_two_replicas_book_their_turns_in_one_bucket() {
    let redis = RedisServer::start();
    let mut cfg = limits_config(OnLimit::Queue);
    cfg.requests_per_second = nz(2);
    cfg.burst = nz(1);
    let a = replica(&redis, &cfg, Duration::from_secs(30)).await;
    let b = replica(&redis, &cfg, Duration::from_secs(30)).await;
    let tasks: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .map(|limits| {
            let limits = Arc::clone(limits);
            tokio::spawn(async move {
                let (t, app, _) = ids();
                limits
                    .admit(&Demand::single(&t, &app, None))
                    .await
                    .map(drop)
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(()));
    }
    // Burst 1: one went at once, the other three were booked a turn each.
    let queued = |l: &SharedLimits| l.metrics().rate_limited.get("queued");
    assert_eq!(queued(&a) + queued(&b), 3);

    // With no wait allowed, the bucket (still booked ahead) refuses at once.
    let mut cfg = cfg.clone();
    cfg.on_limit = OnLimit::Reject;
    b.reload(&cfg);
    let (t, app, _) = ids();
    assert!(b.admit(&Demand::single(&t, &app, None)).await.is_err());
}

/// Per-admission cost of the Redis check next to the local limiter. Run with
/// `cargo test --test shared_redis -- --ignored --nocapture admission_cost`.
#[tokio::test]
#[ignore = "benchmark: prints figures, asserts nothing about speed"]
async fn admission_cost_redis_next_to_local() {
    const N: u32 = 5000;
    let redis = RedisServer::start();
    let cfg = limits_config(OnLimit::Reject);
    let shared = replica(&redis, &cfg, Duration::from_secs(30)).await;
    let local = Limits::new(&cfg, Arc::new(Metrics::new()));
    let (t, app, m) = ids();
    let demand = Demand::single(&t, &app, Some(&m));
    let mut mine = cfg.clone();
    mine.requests_per_second = nz(1_000_000);
    mine.burst = nz(1_000_000);
    mine.mailbox_requests_per_10min = nz(1_000_000_000);
    shared.reload(&mine);
    local.reload(&mine);

    let started = Instant::now();
    for _ in 0..N {
        drop(local.admit(&demand).await.unwrap());
    }
    let local_each = started.elapsed() / N;
    let started = Instant::now();
    for _ in 0..N {
        drop(shared.admit(&demand).await.unwrap());
    }
    let shared_each = started.elapsed() / N;
    assert_eq!(
        shared.metrics().redis_fallback.get(),
        0,
        "every admission went through Redis"
    );
    println!(
        "{N} sequential admissions (tenant bucket + mailbox budget + in-flight slot): \
         local {local_each:?} each, Redis {shared_each:?} each"
    );
}
