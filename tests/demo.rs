//! `demo` and `sim` as a newcomer uses them: the printed commands really show an ID
//! surviving a move.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use support::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of `NAME=value` or `NAME='value'` on the demo's export lines.
fn exported(lines: &[String], name: &str) -> String {
    lines
        .iter()
        .filter(|l| l.starts_with("export "))
        .flat_map(|l| l.trim_start_matches("export ").split(' '))
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim_matches('\'').to_owned())
        .unwrap_or_else(|| panic!("demo printed no {name}"))
}

#[tokio::test]
async fn the_demo_commands_show_an_immutable_id_surviving_a_move() {
    let mut child = Command::new(BIN)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Killed(child);
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.starts_with("Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    let (token, proxy, sim, mailbox) = (
        exported(&lines, "TOKEN"),
        exported(&lines, "P"),
        exported(&lines, "S"),
        exported(&lines, "M"),
    );
    let text = lines.join("\n");
    let immutable = text
        .split("messages/")
        .filter_map(|rest| rest.split(['"', '/']).next())
        .find(|id| id.starts_with("AAkALg"))
        .unwrap()
        .to_owned();
    let regular = text
        .split("$S$M/messages/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let auth = format!("Bearer {token}");
    let client = HttpClient::h1();

    let (status, _, body) = client
        .get_with(
            &format!("{proxy}{mailbox}/messages/{immutable}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(status, 200);
    let before: Value = serde_json::from_slice(&body).unwrap();

    let (status, _, regular_before) = client
        .get_with(
            &format!("{sim}{mailbox}/messages/{regular}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&regular_before));

    let move_request = Request::post(format!("{proxy}{mailbox}/messages/{immutable}/move"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            b"{\"destinationId\":\"archive\"}",
        )))
        .unwrap();
    let (status, _, body) = client.send(move_request).await;
    assert_eq!(status, 201);
    let moved: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(moved["id"], immutable.as_str());
    assert_ne!(moved["parentFolderId"], before["parentFolderId"]);

    let (status, _, _) = client
        .get_with(
            &format!("{proxy}{mailbox}/messages/{immutable}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, body) = client
        .get_with(
            &format!("{sim}{mailbox}/messages/{regular}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(status, 404);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "ErrorItemNotFound");
}

#[test]
fn sim_prints_its_address_and_answers_graph_routes() {
    let mut child = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Killed(child);
    let line = BufReader::new(stdout).lines().next().unwrap().unwrap();
    let url = line.strip_prefix("sim listening on ").unwrap().to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = HttpClient::h1();
        let (status, _, body) = client
            .get_with(
                &format!("{url}/v1.0/users/{ADELE}/messages?$top=2"),
                &[("authorization", &bearer(ADELE))],
            )
            .await;
        assert_eq!(status, 200);
        let page: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(page["value"].as_array().unwrap().len(), 2);
        let (status, _, _) = client
            .get(&format!("{url}/v1.0/users/{ADELE}/messages"))
            .await;
        assert_eq!(
            status, 401,
            "a request without a token is refused like Graph does"
        );
    });
}
