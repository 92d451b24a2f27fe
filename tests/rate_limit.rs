//! Step 2, admit: every tenant and mailbox stays inside its limits, through the real binary
//! in front of the simulator.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use support::*;

const ALEX: &str = "alexw@contoso.onmicrosoft.com";
const MEGAN: &str = "meganb@fabrikam.onmicrosoft.com";

fn messages(proxy: &ProxyProcess, upn: &str) -> String {
    format!("{}/v1.0/users/{upn}/messages?$top=1", proxy.url)
}

async fn metric(client: &HttpClient, proxy: &ProxyProcess, line_prefix: &str) -> u64 {
    let (_, _, body) = client.get(&format!("{}/metrics", proxy.admin)).await;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn one_tenant_over_its_limit_gets_429_with_retry_after_and_another_tenant_is_unaffected() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        "[rate_limit]\non_limit = \"reject\"\nrequests_per_second = 1\nburst = 2\n",
    ));
    let client = HttpClient::h1();
    let adele = bearer(ADELE);
    for _ in 0..2 {
        let (status, _, _) = client
            .get_with(&messages(&proxy, ADELE), &[("authorization", &adele)])
            .await;
        assert_eq!(status, 200);
    }
    let (status, headers, body) = client
        .get_with(&messages(&proxy, ADELE), &[("authorization", &adele)])
        .await;
    assert_eq!(status, 429);
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "TooManyRequests");
    assert!(headers.contains_key("request-id"));

    let (status, _, _) = client
        .get_with(
            &messages(&proxy, MEGAN),
            &[("authorization", &bearer(MEGAN))],
        )
        .await;
    assert_eq!(status, 200, "fabrikam has its own bucket");
    assert_eq!(
        sim.stats().await["requests"],
        3,
        "the refused request never reached Graph"
    );
    assert_eq!(
        metric(
            &client,
            &proxy,
            "idproxy_rate_limited_total{action=\"rejected\"}"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_tenant_override_has_its_own_quota() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        &format!(
            "[rate_limit]\non_limit = \"reject\"\nrequests_per_second = 1\nburst = 1\n[rate_limit.tenants.\"{}\"]\nburst = 3\n",
            immutable_id_proxy::sim::CONTOSO_TENANT_ID
        ),
    ));
    let client = HttpClient::h1();
    let adele = bearer(ADELE);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _, _) = client
            .get_with(&messages(&proxy, ADELE), &[("authorization", &adele)])
            .await;
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
}

fn batch_of(n: usize, upn: &str) -> String {
    let requests: Vec<Value> = (0..n)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/{upn}/messages?$top=1")}))
        .collect();
    json!({ "requests": requests }).to_string()
}

#[tokio::test]
async fn a_batch_of_5_costs_5_tokens() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        "[rate_limit]\non_limit = \"reject\"\nrequests_per_second = 1\nburst = 5\nmailbox_concurrency = 5\n",
    ));
    let client = HttpClient::h1();
    let request = Request::post(format!("{}/v1.0/$batch", proxy.url))
        .header("authorization", bearer(ADELE))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(batch_of(5, ADELE))))
        .unwrap();
    let (status, _, _) = client.send(request).await;
    assert_eq!(status, 200);
    let (status, _, _) = client
        .get_with(&messages(&proxy, ALEX), &[("authorization", &bearer(ALEX))])
        .await;
    assert_eq!(status, 429, "the batch used the tenant's whole burst");
}

#[tokio::test]
async fn no_more_than_mailbox_concurrency_requests_are_in_flight_per_mailbox() {
    let sim = Sim::start().await;
    sim.configure(json!({"delay_ms": 150})).await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        "[rate_limit]\nmailbox_concurrency = 2\nburst = 1000\nrequests_per_second = 1000\n",
    ));
    let client = HttpClient::h1();
    let adele = bearer(ADELE);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        let url = messages(&proxy, ADELE);
        let adele = adele.clone();
        tasks.push(tokio::spawn(async move {
            client.get_with(&url, &[("authorization", &adele)]).await.0
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200, "queued, never refused");
    }
    let stats = sim.stats().await;
    let max = stats["max_concurrency"][ADELE].as_u64().unwrap();
    assert!((1..=2).contains(&max), "max in flight at Graph: {max}");
    assert!(
        metric(
            &client,
            &proxy,
            "idproxy_rate_limited_total{action=\"queued\"}"
        )
        .await
            >= 1
    );
}

#[tokio::test]
async fn queue_mode_serves_waiting_requests_in_arrival_order_and_loses_none() {
    let sim = Sim::start().await;
    // Each request stays at Graph a moment, so the ones behind it really wait together.
    sim.configure(json!({"delay_ms": 100})).await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        // One slot per mailbox: a request reaches Graph only after the one before it has
        // finished, so Graph's arrival order is exactly the proxy's admission order.
        "[rate_limit]\non_limit = \"queue\"\nmax_wait_ms = 30000\nmailbox_concurrency = 1\n",
    ));
    let client = HttpClient::h1();
    let adele = bearer(ADELE);
    let mut tasks = Vec::new();
    let mut most_waiting = 0;
    for i in 0..10u64 {
        let c = client.clone();
        let url = messages(&proxy, ADELE);
        let adele = adele.clone();
        tasks.push(tokio::spawn(async move {
            c.get_with(
                &url,
                &[
                    ("authorization", &adele),
                    ("client-request-id", &format!("order-{i}")),
                ],
            )
            .await
            .0
        }));
        // The next request is sent only once this one is waiting in the queue or has
        // reached Graph: requests 0..=i are then each either waiting (queue depth) or
        // through, never both, so the sum reaches i + 1 exactly when request i has arrived.
        loop {
            let waiting = metric(&client, &proxy, "idproxy_queue_depth").await;
            let through = sim.stats().await["requests"].as_u64().unwrap_or(0);
            if waiting + through > i {
                most_waiting = most_waiting.max(waiting);
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let order: Vec<String> = sim
        .requests()
        .await
        .iter()
        .filter_map(|r| recorded_header(r, "client-request-id").into_iter().next())
        .filter(|id| id.starts_with("order-"))
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("order-{i}")).collect();
    assert_eq!(order, expected);
    assert!(
        most_waiting >= 2,
        "requests really waited together ({most_waiting} at most)"
    );
    assert_eq!(metric(&client, &proxy, "idproxy_queue_depth").await, 0);
}

#[tokio::test]
async fn a_graph_429_with_retry_after_holds_back_that_mailbox_only() {
    let sim = Sim::start().await;
    sim.configure(json!({"fail_next": [{"status": 429, "retry_after": "30"}]}))
        .await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        "[upstream]\nmax_retries = 0\n[rate_limit]\non_limit = \"reject\"\n",
    ));
    let client = HttpClient::h1();
    let adele = bearer(ADELE);
    let (status, headers, body) = client
        .get_with(&messages(&proxy, ADELE), &[("authorization", &adele)])
        .await;
    assert_eq!(status, 429, "Graph's own answer passes through");
    assert_eq!(headers["retry-after"], "30");
    let graph_error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(graph_error["error"]["code"], "TooManyRequests");

    let (status, headers, _) = client
        .get_with(&messages(&proxy, ADELE), &[("authorization", &adele)])
        .await;
    assert_eq!(status, 429, "the penalty box answers for Graph");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert_eq!(
        sim.stats().await["requests"],
        1,
        "the held request never reached Graph"
    );

    let (status, _, _) = client
        .get_with(&messages(&proxy, ALEX), &[("authorization", &bearer(ALEX))])
        .await;
    assert_eq!(status, 200, "another mailbox carries on");
    assert_eq!(
        metric(&client, &proxy, "idproxy_penalty_box_total").await,
        1
    );
}

#[tokio::test]
async fn limits_disabled_means_nothing_is_held() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(
        &sim.url,
        "[rate_limit]\nenabled = false\non_limit = \"reject\"\nrequests_per_second = 1\nburst = 1\n",
    ));
    let client = HttpClient::h1();
    let adele = bearer(ADELE);
    for _ in 0..5 {
        let (status, _, _) = client
            .get_with(&messages(&proxy, ADELE), &[("authorization", &adele)])
            .await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn sighup_reloads_rate_limit_and_a_bad_file_keeps_the_old_limits() {
    let sim = Sim::start().await;
    let config = config_for(
        &sim.url,
        "[rate_limit]\non_limit = \"reject\"\nrequests_per_second = 1\nburst = 1\n",
    );
    let proxy = ProxyProcess::start(&config);
    let client = HttpClient::h1();
    let adele = bearer(ADELE);
    let url = messages(&proxy, ADELE);
    let headers = [("authorization", adele.as_str())];
    let get = || client.get_with(&url, &headers);
    assert_eq!(get().await.0, 200);
    assert_eq!(get().await.0, 429);

    // A broken file is refused; the old limit (burst 1) stays.
    std::fs::write(
        proxy.dir.join("config.toml"),
        config.replace("burst = 1", "burst = 0"),
    )
    .unwrap();
    proxy.signal("HUP");
    wait_for_log_line(&proxy, "configuration refused").await;
    assert_eq!(get().await.0, 429);

    std::fs::write(
        proxy.dir.join("config.toml"),
        config.replace("burst = 1", "burst = 50"),
    )
    .unwrap();
    proxy.signal("HUP");
    wait_for_log_line(&proxy, "[rate_limit] reloaded").await;
    assert_eq!(
        get().await.0,
        200,
        "the new, larger burst applies without a restart"
    );
}

/// Polls the proxy's stderr (collected by the harness) for a line.
async fn wait_for_log_line(proxy: &ProxyProcess, needle: &str) {
    loop {
        if proxy.stderr_so_far().contains(needle) {
            return;
        }
        tokio::task::yield_now().await;
    }
}
