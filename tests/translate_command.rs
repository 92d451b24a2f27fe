//! `immutable-id-proxy translate`: the real binary against the simulator.

mod support;

use std::num::NonZeroUsize;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use immutable_id_proxy::id_store::IdStore;
use immutable_id_proxy::metrics::Metrics;
use immutable_id_proxy::sim::CONTOSO_TENANT_ID;
use serde_json::json;
use support::{ensure_messages, message_ids, token_for, Sim, TempDir, ADELE, BIN};

/// Runs `translate` in `dir` (no config.toml there: built-in defaults) with Adele's token in
/// `GRAPH_TOKEN`, off the async workers so the simulator keeps answering.
async fn translate(dir: &Path, sim: &Sim, extra: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env("GRAPH_TOKEN", token_for(ADELE))
        .args(["translate", "--mailbox", ADELE, "--upstream", &sim.url])
        .args(extra);
    tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
        .await
        .expect("the blocking task ends")
}

async fn translate_calls(sim: &Sim) -> u64 {
    sim.stats().await["translate_calls"]
        .as_u64()
        .expect("translate_calls")
}

/// (source_id, target_id, error) rows after the header. None of the test's fields are quoted.
fn rows(csv: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(csv).expect("output exists");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("source_id,target_id,error"));
    lines
        .map(|line| {
            let fields: Vec<&str> = line.splitn(3, ',').collect();
            assert_eq!(fields.len(), 3, "{line}");
            (fields[0].into(), fields[1].into(), fields[2].into())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translating_2500_ids_takes_three_calls_and_a_rerun_takes_none() {
    let sim = Sim::start().await;
    ensure_messages(&sim, ADELE, 2500).await;
    let regular: Vec<String> = message_ids(&sim, ADELE, false).await[..2500].to_vec();
    let immutable: Vec<String> = message_ids(&sim, ADELE, true).await[..2500].to_vec();
    let dir = TempDir::new("translate-bulk");
    let mut input = String::new();
    for (i, id) in regular.iter().enumerate() {
        // Padding and blank lines are not IDs.
        if i % 100 == 0 {
            input.push_str(&format!("  {id}\t\n\n"));
        } else {
            input.push_str(&format!("{id}\n"));
        }
    }
    input.push_str("this-is-not-an-id\n");
    std::fs::write(dir.join("ids.txt"), &input).unwrap();
    let out = dir.join("out.csv");
    let args = ["--input", "ids.txt", "--output", "out.csv"];

    let run = translate(dir.path(), &sim, &args).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains(&token_for(ADELE)),
        "the token is never printed"
    );
    assert_eq!(translate_calls(&sim).await, 3);
    assert_eq!(
        sim.stats().await["translate_ids_per_call"],
        json!([1000, 1000, 500])
    );
    let written = rows(&out);
    assert_eq!(written.len(), 2501);
    let targets: std::collections::HashMap<&str, &str> = written
        .iter()
        .filter(|(_, target, error)| !target.is_empty() && error.is_empty())
        .map(|(source, target, _)| (source.as_str(), target.as_str()))
        .collect();
    assert_eq!(targets.len(), 2500);
    for (id, expected) in regular.iter().zip(&immutable) {
        assert_eq!(targets.get(id.as_str()), Some(&expected.as_str()));
    }
    let bad = written
        .iter()
        .find(|(source, _, _)| source == "this-is-not-an-id")
        .expect("an error row for the malformed line");
    assert_eq!(bad.1, "");
    assert_eq!(bad.2, "not an Exchange ID");

    let rerun = translate(dir.path(), &sim, &args).await;
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_eq!(
        translate_calls(&sim).await,
        3,
        "everything was already done"
    );
    assert_eq!(rows(&out), written, "nothing appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_translates_only_the_ids_added_since() {
    let sim = Sim::start().await;
    let regular = message_ids(&sim, ADELE, false).await;
    let immutable = message_ids(&sim, ADELE, true).await;
    let dir = TempDir::new("translate-resume");
    std::fs::write(dir.join("ids.txt"), regular[..10].join("\n")).unwrap();
    let args = ["--input", "ids.txt", "--output", "out.csv"];
    assert_eq!(
        translate(dir.path(), &sim, &args).await.status.code(),
        Some(0)
    );
    std::fs::write(dir.join("ids.txt"), regular[..15].join("\n")).unwrap();
    assert_eq!(
        translate(dir.path(), &sim, &args).await.status.code(),
        Some(0)
    );

    assert_eq!(sim.stats().await["translate_ids_per_call"], json!([10, 5]));
    let written = rows(&dir.join("out.csv"));
    assert_eq!(written.len(), 15);
    for (i, (source, target, error)) in written.iter().enumerate() {
        assert_eq!(
            (source, target, error.as_str()),
            (&regular[i], &immutable[i], "")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_flag_fills_a_redb_file_that_the_id_store_reads() {
    let sim = Sim::start().await;
    let regular = message_ids(&sim, ADELE, false).await;
    let immutable = message_ids(&sim, ADELE, true).await;
    let dir = TempDir::new("translate-store");
    std::fs::write(dir.join("ids.txt"), regular[..12].join("\n")).unwrap();
    let run = translate(
        dir.path(),
        &sim,
        &[
            "--input",
            "ids.txt",
            "--output",
            "out.csv",
            "--store",
            "data/idmap.redb",
        ],
    )
    .await;
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let store = IdStore::open_path(
        &dir.join("data/idmap.redb"),
        NonZeroUsize::new(100).unwrap(),
        Duration::from_secs(60),
        Arc::new(Metrics::new()),
    )
    .expect("the command closed the store");
    let ids: Vec<&str> = regular[..12].iter().map(String::as_str).collect();
    let stored = store.lookup_persistent(CONTOSO_TENANT_ID, &ids).unwrap();
    let expected: Vec<Option<String>> = immutable[..12].iter().cloned().map(Some).collect();
    assert_eq!(stored, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_2_naming_the_flag() {
    let sim = Sim::start().await;
    let dir = TempDir::new("translate-args");
    std::fs::write(dir.join("ids.txt"), "x\n").unwrap();

    let mut command = Command::new(BIN);
    command
        .current_dir(dir.path())
        .env_remove("GRAPH_TOKEN")
        .args(["translate", "--mailbox", ADELE, "--input", "ids.txt"]);
    let run = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--token-env"));

    let run = translate(dir.path(), &sim, &["--input", "missing.txt"]).await;
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--input"));

    let run = translate(dir.path(), &sim, &["--from", "hexish"]).await;
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--from"));

    let run = translate(dir.path(), &sim, &["--to", "restId", "--store", "s.redb"]).await;
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--store"));
    assert_eq!(translate_calls(&sim).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_are_retried_after_retry_after() {
    let sim = Sim::start().await;
    let regular = message_ids(&sim, ADELE, false).await;
    let immutable = message_ids(&sim, ADELE, true).await;
    sim.configure(json!({"fail_next": [
        {"status": 429, "retry_after": "0", "path_contains": "translateExchangeIds"},
        {"status": 503, "retry_after": "0", "path_contains": "translateExchangeIds"},
    ]}))
    .await;
    let dir = TempDir::new("translate-retry");
    std::fs::write(dir.join("ids.txt"), regular[..3].join("\n")).unwrap();
    let run = translate(
        dir.path(),
        &sim,
        &["--input", "ids.txt", "--output", "out.csv"],
    )
    .await;
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let posts = sim
        .requests()
        .await
        .into_iter()
        .filter(|r| {
            r["uri"]
                .as_str()
                .unwrap_or("")
                .ends_with("/translateExchangeIds")
        })
        .count();
    assert_eq!(posts, 3, "two throttled tries, then the answer");
    assert_eq!(translate_calls(&sim).await, 1);
    let written = rows(&dir.join("out.csv"));
    let targets: Vec<&str> = written.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(
        targets,
        immutable[..3]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_exits_1_without_rows_so_a_rerun_retries_it() {
    let sim = Sim::start().await;
    let regular = message_ids(&sim, ADELE, false).await;
    sim.configure(json!({"fail_next": [
        {"status": 500, "path_contains": "translateExchangeIds"},
    ]}))
    .await;
    let dir = TempDir::new("translate-fail");
    std::fs::write(dir.join("ids.txt"), regular[..4].join("\n")).unwrap();
    let args = ["--input", "ids.txt", "--output", "out.csv"];
    let run = translate(dir.path(), &sim, &args).await;
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("500"));
    assert!(rows(&dir.join("out.csv")).is_empty());

    let rerun = translate(dir.path(), &sim, &args).await;
    assert_eq!(rerun.status.code(), Some(0));
    assert_eq!(rows(&dir.join("out.csv")).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sends_the_mappings_to_a_running_proxy_which_serves_them_after_a_move() {
    let sim = Sim::start().await;
    let store = TempDir::new("translate-admin-store");
    let proxy = support::ProxyProcess::start(&support::config_for(
        &sim.url,
        &format!(
            "[rewrite]\nenabled = true\nstore = \"{}\"\n",
            store.join("idmap.redb").display()
        ),
    ));
    let regular: Vec<String> = message_ids(&sim, ADELE, false).await[..3].to_vec();
    let dir = TempDir::new("translate-admin");
    std::fs::write(dir.join("ids.txt"), regular.join("\n")).unwrap();
    let run = translate(
        dir.path(),
        &sim,
        &[
            "--input",
            "ids.txt",
            "--output",
            "out.csv",
            "--admin",
            &proxy.admin,
        ],
    )
    .await;
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(translate_calls(&sim).await, 1);

    // The item moves; Graph no longer knows the stored ID, the proxy does.
    let client = support::HttpClient::h1();
    let moved = http::Request::post(format!(
        "{}/v1.0/users/{ADELE}/messages/{}/move",
        sim.url,
        regular[0].replace('=', "%3D")
    ))
    .header("authorization", support::bearer(ADELE))
    .header("content-type", "application/json")
    .body(http_body_util::Full::new(bytes::Bytes::from_static(
        b"{\"destinationId\":\"archive\"}",
    )))
    .unwrap();
    assert_eq!(client.send(moved).await.0, 201);
    let (status, _, _) = client
        .get_with(
            &format!(
                "{}/v1.0/users/{ADELE}/messages/{}",
                proxy.url,
                regular[0].replace('=', "%3D")
            ),
            &[("authorization", &support::bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        translate_calls(&sim).await,
        1,
        "served from what --admin imported"
    );
}
