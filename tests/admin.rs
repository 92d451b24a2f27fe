//! The admin listener and an orderly exit: readiness, metrics, SIGTERM and POST /shutdown
//! draining in-flight requests.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn healthz_readyz_and_metrics_answer() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let client = HttpClient::h1();
    let (status, _, body) = client.get(&format!("{}/healthz", proxy.admin)).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok\n"[..]));
    let (status, _, _) = client.get(&format!("{}/readyz", proxy.admin)).await;
    assert_eq!(status, 200);
    let (status, _, _) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200);
    let (status, headers, body) = client.get(&format!("{}/metrics", proxy.admin)).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("idproxy_requests_total{status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("idproxy_upstream_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("idproxy_request_duration_seconds_count 1"),
        "{text}"
    );
    let (status, _, _) = client.get(&format!("{}/nope", proxy.admin)).await;
    assert_eq!(status, 404);
}

/// Polls until the simulator has received `n` requests; the request is then in flight at
/// the simulator (which delays its answer).
async fn wait_until_sim_received(sim: &Sim, n: u64) {
    loop {
        if sim.stats().await["requests"].as_u64().unwrap_or(0) >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
}

async fn wait_until_not_ready(client: &HttpClient, admin: &str) {
    loop {
        let response = client
            .raw()
            .request(
                Request::get(format!("{admin}/readyz"))
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await;
        match response {
            Ok(r) if r.status() == 503 => return,
            Ok(_) => tokio::task::yield_now().await,
            // The admin listener closed: draining is over, which also means it was not ready.
            Err(_) => return,
        }
    }
}

async fn drains_in_flight_request(
    stop: impl FnOnce(&ProxyProcess, &HttpClient) -> tokio::task::JoinHandle<()>,
) {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    sim.configure(serde_json::json!({"delay_ms": 1500})).await;
    let client = HttpClient::h1();
    let in_flight = {
        let client = client.clone();
        let url = format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url);
        tokio::spawn(async move {
            client
                .get_with(&url, &[("authorization", &bearer(ADELE))])
                .await
        })
    };
    wait_until_sim_received(&sim, 1).await;
    let stopper = stop(&proxy, &client);
    wait_until_not_ready(&HttpClient::h1(), &proxy.admin).await;
    let (status, _, _) = in_flight.await.unwrap();
    assert_eq!(
        status, 200,
        "the in-flight request finished during the drain"
    );
    stopper.await.unwrap();
    let (code, stderr) = proxy.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
}

#[tokio::test]
async fn sigterm_turns_readyz_503_lets_in_flight_requests_finish_and_exits_0() {
    drains_in_flight_request(|proxy, _| {
        proxy.signal("TERM");
        tokio::spawn(async {})
    })
    .await;
}

#[tokio::test]
async fn post_shutdown_drains_and_exits_0_like_sigterm() {
    drains_in_flight_request(|proxy, client| {
        let client = client.clone();
        let url = format!("{}/shutdown", proxy.admin);
        tokio::spawn(async move {
            let (status, _, _) = client
                .send(Request::post(url).body(Full::default()).unwrap())
                .await;
            assert_eq!(status, 202);
        })
    })
    .await;
}
