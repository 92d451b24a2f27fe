//! The sidecar container (deployment 3): the static binary runs from an empty root as a
//! numeric non-root user, `probe` is a shell-free health check, the environment configures
//! `run`, and the Dockerfile and Kubernetes manifests hold what the recipe relies on.
//!
//! The static binary is built once per test run by `deploy/build-static.sh`, into its own
//! target directory beside the debug build so neither invalidates the other.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The user the image runs as (Dockerfile `USER`, the manifests' `runAsUser`).
const IMAGE_USER: &str = "65532:65532";

/// Builds the static binary (once for every test in this file) and returns its path.
fn static_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // BIN is <target>/debug/immutable-id-proxy.
        let target = Path::new(BIN)
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives two levels under the target dir");
        let out = Command::new(Path::new(ROOT).join("deploy/build-static.sh"))
            .env("CARGO_TARGET_DIR", target.join("static-build"))
            .output()
            .expect("deploy/build-static.sh runs");
        assert!(
            out.status.success(),
            "static build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(path.is_file(), "build-static.sh printed {path:?}");
        path
    })
}

/// ELF64 little-endian program headers as (type, file offset, file size).
fn program_headers(elf: &[u8]) -> Vec<(u32, usize, usize)> {
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| {
            let at = phoff + i * phentsize;
            (u32_at(at), u64_at(at + 8), u64_at(at + 32))
        })
        .collect()
}

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;

/// The ELF interpreter (`/lib64/ld-linux-x86-64.so.2` for a dynamic binary), if any, and
/// the number of shared libraries the dynamic section asks for.
fn interpreter_and_needed(path: &Path) -> (Option<String>, usize) {
    let elf = std::fs::read(path).expect("read the binary");
    let headers = program_headers(&elf);
    let interpreter = headers
        .iter()
        .find(|(kind, _, _)| *kind == PT_INTERP)
        .map(|&(_, at, len)| String::from_utf8_lossy(&elf[at..at + len]).into_owned());
    let needed = headers
        .iter()
        .filter(|(kind, _, _)| *kind == PT_DYNAMIC)
        .flat_map(|&(_, at, len)| elf[at..at + len].chunks_exact(16))
        .filter(|entry| u64::from_le_bytes(entry[..8].try_into().unwrap()) == DT_NEEDED)
        .count();
    (interpreter, needed)
}

#[test]
fn the_static_binary_has_no_interpreter_and_needs_no_shared_library() {
    let (interpreter, needed) = interpreter_and_needed(static_binary());
    assert_eq!(interpreter, None);
    assert_eq!(needed, 0);
    // The same reading of the ordinary build finds both, so the check above can fail.
    let (interpreter, needed) = interpreter_and_needed(Path::new(BIN));
    assert!(
        interpreter.is_some_and(|i| i.contains("ld-linux")),
        "debug build"
    );
    assert!(needed > 0);
}

/// A root directory holding only the static binary, `config.toml` and `extra` files.
fn empty_root(config: &str, extra: &[(&str, &str)]) -> TempDir {
    let root = TempDir::new("root");
    std::fs::copy(static_binary(), root.join("immutable-id-proxy")).expect("copy the binary");
    std::fs::write(root.join("config.toml"), config).expect("write config");
    for (path, text) in extra {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a file under the root")).unwrap();
        std::fs::write(path, text).unwrap();
    }
    root
}

/// `chroot` into `root` as the image's user, or, where chroot is not permitted (not root),
/// the binary in place: weaker (the host's files are visible), said loudly.
fn in_root(root: &Path, args: &[&str]) -> Command {
    static CHROOT_WORKS: OnceLock<bool> = OnceLock::new();
    let works = *CHROOT_WORKS.get_or_init(|| {
        Command::new("chroot")
            .args(["/", "true"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if works {
        let mut command = Command::new("chroot");
        command
            .arg(format!("--userspec={IMAGE_USER}"))
            .arg(root)
            .arg("/immutable-id-proxy")
            .args(args);
        command
    } else {
        eprintln!("chroot is not available here (needs root): running outside an empty root");
        let mut command = Command::new(root.join("immutable-id-proxy"));
        command.args(args).current_dir(root);
        command
    }
}

async fn output_of(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("the command runs"))
        .await
        .expect("the blocking task finishes")
}

/// Starts the static binary in `root`, proxies one request to the simulator through it and
/// checks what arrived there.
async fn proxies_a_request(root: TempDir, sim: &Sim) -> ProxyProcess {
    let command = in_root(root.path(), &["run", "--config", "config.toml"]);
    let proxy = ProxyProcess::start_command(command, root);
    let client = HttpClient::h1();
    let (status, _, body) = client.get(&format!("{}/healthz", proxy.admin)).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok\n"[..]));
    let (status, _, body) = client
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(
        recorded_header(&seen, "prefer"),
        vec!["IdType=\"ImmutableId\"".to_owned()]
    );
    proxy
}

#[tokio::test]
async fn the_static_binary_in_an_empty_root_answers_healthz_probes_and_proxies() {
    let sim = Sim::start().await;
    let root = empty_root(&config_for(&sim.url, ""), &[]);
    let root_path = root.path().to_owned();
    let proxy = proxies_a_request(root, &sim).await;

    let ready = output_of(in_root(
        &root_path,
        &["probe", &format!("{}/readyz", proxy.admin)],
    ))
    .await;
    assert_eq!(
        ready.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    assert!(String::from_utf8_lossy(&ready.stdout).contains("200 OK"));

    // Nothing was written into the root: the image needs no writable file system.
    let mut files: Vec<String> = std::fs::read_dir(&root_path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["config.toml", "immutable-id-proxy"]);

    proxy.signal("TERM");
    let (code, stderr) = proxy.wait();
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn the_static_binary_resolves_the_upstream_by_name_from_etc_hosts_without_nss_libraries() {
    // Kubernetes and Docker mount /etc/hosts and /etc/resolv.conf into every container; a
    // static glibc reads them with its built-in files and dns lookups, no libnss_*.so.
    let sim = Sim::start().await;
    let by_name = format!("http://graph.sim.test:{}", sim.addr.port());
    let root = empty_root(
        &config_for(&by_name, ""),
        &[("etc/hosts", "127.0.0.1 graph.sim.test\n")],
    );
    let proxy = proxies_a_request(root, &sim).await;
    let seen = sim.last_request_to("/messages").await;
    assert_eq!(
        recorded_header(&seen, "host"),
        vec![format!("graph.sim.test:{}", sim.addr.port())]
    );
    drop(proxy);
}

#[tokio::test]
async fn run_takes_the_upstream_from_the_environment_over_the_file() {
    let sim = Sim::start().await;
    // The file names a port nobody listens on: the request succeeds only if the variable wins.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = ProxyProcess::start_with_env(
        &config_for(&format!("http://{closed}"), ""),
        &[("IDPROXY__UPSTREAM__URL", &sim.url)],
    );
    let (status, _, _) = HttpClient::h1()
        .get_with(
            &format!("{}/v1.0/users/{ADELE}/messages?$top=1", proxy.url),
            &[("authorization", &bearer(ADELE))],
        )
        .await;
    assert_eq!(status, 200, "{}", proxy.stderr_so_far());
    assert_eq!(sim.stats().await["requests"].as_u64(), Some(1));
}

fn probe(url: &str) -> Command {
    let mut command = Command::new(BIN);
    command.args(["probe", url]);
    command
}

#[tokio::test]
async fn probe_exits_0_on_a_2xx_and_1_on_an_error_status_or_a_closed_port_or_2_on_a_bad_url() {
    let sim = Sim::start().await;
    let proxy = ProxyProcess::start(&config_for(&sim.url, ""));
    let ready = output_of(probe(&format!("{}/readyz", proxy.admin))).await;
    assert_eq!(ready.status.code(), Some(0));
    let missing = output_of(probe(&format!("{}/no-such-route", proxy.admin))).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    let admin = proxy.admin.clone();
    drop(proxy);
    let closed = output_of(probe(&format!("{admin}/readyz"))).await;
    assert_eq!(closed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&closed.stderr).contains("cannot connect"));
    let bad = output_of(probe("https://127.0.0.1:9090/readyz")).await;
    assert_eq!(bad.status.code(), Some(2));
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let mut joined = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        match line.strip_suffix('\\') {
            Some(continued) => joined.push_str(continued),
            None => {
                joined.push_str(line);
                joined.push('\n');
            }
        }
    }
    joined
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (op, rest) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
            (op.to_ascii_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_dockerfile_builds_from_scratch_as_a_numeric_user_with_a_shell_free_healthcheck() {
    let instructions = dockerfile();
    let all = |op: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, rest)| rest.clone())
            .collect()
    };
    assert_eq!(all("FROM"), ["scratch"]);
    assert_eq!(all("USER"), [IMAGE_USER]);

    // The binary copied is the one build-static.sh makes, and .dockerignore lets it in.
    let copies = all("COPY");
    let binary = "target/x86_64-unknown-linux-gnu/static/immutable-id-proxy";
    assert!(copies.contains(&format!("{binary} /immutable-id-proxy")));
    let script = std::fs::read_to_string(Path::new(ROOT).join("deploy/build-static.sh")).unwrap();
    assert!(script.contains("--profile static --target \"$target\""));
    assert!(script.contains("target=x86_64-unknown-linux-gnu"));
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap();
    for copy in &copies {
        let source = copy.split_whitespace().next().unwrap();
        assert!(
            ignore.lines().any(|l| l == format!("!{source}")),
            "{source}"
        );
    }

    // Exec form: the image has no /bin/sh to run a command string.
    let healthcheck = all("HEALTHCHECK").concat();
    let cmd = healthcheck.split_once("CMD ").expect("HEALTHCHECK CMD").1;
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("HEALTHCHECK CMD is a JSON array");
    assert_eq!(cmd, ["/immutable-id-proxy", "probe"]);
    let entrypoint: Vec<String> = serde_json::from_str(&all("ENTRYPOINT").concat()).unwrap();
    assert_eq!(entrypoint, ["/immutable-id-proxy"]);

    // The exposed ports are the ones the environment makes it listen on, and the probe's
    // default URL is the admin one.
    let env = all("ENV").join(" ");
    let port_of = |key: &str| -> String {
        let value = env
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("ENV {key}"));
        value.rsplit(':').next().unwrap().to_owned()
    };
    let listen = port_of("IDPROXY__LISTEN__ADDR");
    let admin = port_of("IDPROXY__ADMIN__ADDR");
    let mut exposed: Vec<String> = all("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    exposed.sort();
    let mut expected = vec![listen, admin.clone()];
    expected.sort();
    assert_eq!(exposed, expected);
    assert!(immutable_id_proxy::probe::DEFAULT_URL.contains(&format!(":{admin}/readyz")));
}

/// Every document of a YAML file, as JSON, read by PyYAML (.ci/run installs it).
fn yaml_documents(name: &str) -> Vec<Value> {
    let path = Path::new(ROOT).join("deploy").join(name);
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(&path)
        .output()
        .expect("python3 runs (.ci/run installs python3-yaml)");
    assert!(
        out.status.success(),
        "{name} does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

fn pod_spec(name: &str) -> Value {
    let docs = yaml_documents(name);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("{name} holds a Deployment"));
    assert_eq!(deployment["apiVersion"], "apps/v1");
    deployment["spec"]["template"]["spec"].clone()
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|items| items.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no entry named {name}"))
}

fn env_of(container: &Value, key: &str) -> String {
    named(&container["env"], key)["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{key} has a literal value"))
        .to_owned()
}

/// The native sidecar: an init container that keeps running, started before the app and
/// only let go once `/readyz` answers, as a non-root user with sized resources.
fn check_sidecar(spec: &Value) -> Value {
    let sidecar = named(&spec["initContainers"], "idproxy").clone();
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["args"][0], "run");
    let admin = env_of(&sidecar, "IDPROXY__ADMIN__ADDR");
    assert!(admin.starts_with("127.0.0.1:"), "admin stays on loopback");
    let startup: Vec<String> =
        serde_json::from_value(sidecar["startupProbe"]["exec"]["command"].clone()).unwrap();
    assert_eq!(
        startup,
        [
            "/immutable-id-proxy".to_owned(),
            "probe".to_owned(),
            format!("http://{admin}/readyz")
        ]
    );
    let security = &sidecar["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(
        format!("{}:{}", security["runAsUser"], security["runAsGroup"]),
        IMAGE_USER
    );
    assert_eq!(security["readOnlyRootFilesystem"], true);
    let resources = &sidecar["resources"];
    for key in ["cpu", "memory"] {
        assert!(resources["requests"][key].is_string(), "requests.{key}");
    }
    assert!(resources["limits"]["memory"].is_string());
    sidecar
}

#[test]
fn the_gateway_manifest_points_the_app_at_the_sidecar_on_loopback() {
    let spec = pod_spec("k8s-gateway.yaml");
    let sidecar = check_sidecar(&spec);
    let listen = env_of(&sidecar, "IDPROXY__LISTEN__ADDR");
    assert!(listen.starts_with("127.0.0.1:"));
    let app = named(&spec["containers"], "app");
    let base_url = env_of(app, "GRAPH_BASE_URL");
    assert!(
        base_url.starts_with(&format!("http://{listen}/")),
        "{base_url}"
    );
}

/// The path a container sees `volume` mounted at.
fn mount_of(container: &Value, volume: &str) -> Option<String> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str().map(str::to_owned))
}

#[test]
fn the_drop_in_manifest_hands_the_app_a_bundle_but_keeps_the_ca_key_in_the_proxy() {
    let spec = pod_spec("k8s-drop-in.yaml");
    let sidecar = check_sidecar(&spec);
    let app = named(&spec["containers"], "app").clone();
    assert_eq!(env_of(&sidecar, "IDPROXY__FORWARD_PROXY__ENABLED"), "true");
    let forward = env_of(&sidecar, "IDPROXY__FORWARD_PROXY__ADDR");
    assert!(forward.starts_with("127.0.0.1:"));
    assert_eq!(env_of(&app, "HTTPS_PROXY"), format!("http://{forward}"));

    // The bundle (the app image's own roots plus our CA) is written before the proxy starts,
    // into an emptyDir that the app mounts read-only, and the app's trust variables name
    // that file. It runs in the app's image: the proxy's scratch image has no roots.
    let init = spec["initContainers"].as_array().unwrap();
    let bundler = init
        .iter()
        .position(|c| c["name"] == "ca-bundle")
        .expect("a bundle init container");
    let proxy_at = init.iter().position(|c| c["name"] == "idproxy").unwrap();
    assert!(
        bundler < proxy_at,
        "the bundle exists before the proxy starts"
    );
    let bundler = &init[bundler];
    assert_eq!(
        bundler["image"], app["image"],
        "the app's trust store, not scratch's"
    );
    let script = bundler["command"][2].as_str().unwrap();
    assert!(script.contains("/etc/idproxy-ca/ca.pem"), "{script}");
    let out = script.rsplit("> ").next().unwrap().trim();
    let shared = named(&spec["volumes"], "ca-bundle");
    assert!(shared["emptyDir"].is_object());
    let written_at = mount_of(bundler, "ca-bundle").unwrap();
    let file = out
        .strip_prefix(&format!("{written_at}/"))
        .expect("the bundle is written inside the shared volume");
    let app_mount = named(&app["volumeMounts"], "ca-bundle");
    assert_eq!(app_mount["readOnly"], true);
    let app_sees = format!("{}/{file}", app_mount["mountPath"].as_str().unwrap());
    assert_eq!(env_of(&app, "SSL_CERT_FILE"), app_sees);

    // The Secret with the key is mounted in the proxy alone; the bundler gets only ca.pem.
    let key_path = env_of(&sidecar, "IDPROXY__FORWARD_PROXY__CA_KEY");
    let key_volume = named(&spec["volumes"], "idproxy-ca");
    assert!(key_volume["secret"]["items"].is_null(), "the whole Secret");
    let key_mount = mount_of(&sidecar, "idproxy-ca").unwrap();
    assert!(key_path.starts_with(&format!("{key_mount}/")));
    let all = init.iter().chain(spec["containers"].as_array().unwrap());
    for container in all.filter(|c| c["name"] != "idproxy") {
        assert_eq!(
            mount_of(container, "idproxy-ca"),
            None,
            "{}",
            container["name"]
        );
    }
    let public = named(&spec["volumes"], "idproxy-ca-public");
    let items: Vec<String> = public["secret"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(items, ["ca.pem"]);
    assert_eq!(
        public["secret"]["secretName"],
        key_volume["secret"]["secretName"]
    );
}
