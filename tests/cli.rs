//! The command line as an operator uses it: `check`, exit codes, environment overrides,
//! `certs init`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use support::*;

fn run(args: &[&str], dir: &TempDir, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(dir.path());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the binary runs")
}

#[test]
fn check_lists_every_problem_as_key_why_and_exits_2() {
    let dir = TempDir::new("cli");
    std::fs::write(
        dir.join("bad.toml"),
        "[listen]\nadress = \"127.0.0.1:1\"\n[rate_limit]\nburst = 0\n[upstream]\nurl = \"graph.microsoft.com\"\n",
    )
    .unwrap();
    let out = run(&["check", "--config", "bad.toml"], &dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listen.adress: "), "{stderr}");
    assert!(stderr.contains("rate_limit.burst: "), "{stderr}");
    assert!(stderr.contains("upstream.url: "), "{stderr}");
}

#[test]
fn a_bad_config_never_binds_a_port() {
    let dir = TempDir::new("cli");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("bad.toml"),
        format!("[listen]\naddr = \"127.0.0.1:{port}\"\ntls_key = \"missing.pem\"\n"),
    )
    .unwrap();
    let out = run(&["run", "--config", "bad.toml"], &dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen.tls"));
}

#[test]
fn the_shipped_config_checks_clean() {
    let dir = TempDir::new("cli");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let out = run(&["check", "--config", shipped], &dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("url = \"https://graph.microsoft.com\""),
        "{stdout}"
    );
}

#[test]
fn an_environment_variable_beats_the_file_and_check_says_so() {
    let dir = TempDir::new("cli");
    std::fs::write(dir.join("c.toml"), "[rate_limit]\nburst = 7\n").unwrap();
    let out = run(
        &["check", "--config", "c.toml"],
        &dir,
        &[("IDPROXY__RATE_LIMIT__BURST", "42")],
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("burst")).unwrap();
    assert!(
        line.contains("42") && line.contains("IDPROXY__RATE_LIMIT__BURST"),
        "{line}"
    );
}

#[test]
fn a_misspelled_environment_variable_exits_2_naming_it() {
    let dir = TempDir::new("cli");
    let out = run(&["check"], &dir, &[("IDPROXY__UPSTREAM__URLL", "http://x")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("IDPROXY__UPSTREAM__URLL"));
}

#[test]
fn check_redacts_the_redis_password() {
    let dir = TempDir::new("cli");
    std::fs::write(
        dir.join("c.toml"),
        "[shared]\nredis_url = \"redis://user:hunter2@10.0.0.5:6379\"\n",
    )
    .unwrap();
    let out = run(&["check", "--config", "c.toml"], &dir, &[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("redis_url"));
}

#[test]
fn certs_init_writes_0600_keys_and_refuses_to_overwrite_without_force() {
    let dir = TempDir::new("cli");
    let out = run(
        &["certs", "init", "--dir", "certs", "--san", "proxy.internal"],
        &dir,
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ca.pem"));
    for key in ["ca-key.pem", "server-key.pem"] {
        let mode = std::fs::metadata(dir.join("certs").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let before = std::fs::read(dir.join("certs/ca-key.pem")).unwrap();
    let again = run(&["certs", "init", "--dir", "certs"], &dir, &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read(dir.join("certs/ca-key.pem")).unwrap(), before);
    let forced = run(&["certs", "init", "--dir", "certs", "--force"], &dir, &[]);
    assert_eq!(forced.status.code(), Some(0));
    assert_ne!(std::fs::read(dir.join("certs/ca-key.pem")).unwrap(), before);
}

#[test]
fn an_unknown_flag_exits_2() {
    let dir = TempDir::new("cli");
    let out = run(&["run", "--no-such-flag"], &dir, &[]);
    assert_eq!(out.status.code(), Some(2));
}
