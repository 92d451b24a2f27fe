//! The command line: `run` (the default), `check`, `certs init|bundle`, `env`, `translate`,
//! `sim`, `demo` and `probe`.
//!
//! Exit codes: 0 ok; 2 bad config or arguments (the message names the key or flag); 1 a
//! runtime failure. Logs go to stderr; the addresses a command listens on go to stdout, one
//! line each, so scripts and tests can read them.

#![forbid(unsafe_code)]
// Bad input gets an answer, never a panic: outside tests, no unwrap() or expect().
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use immutable_id_proxy::admin::ShutdownTrigger;
use immutable_id_proxy::app::{self, App};
use immutable_id_proxy::config::{self, Overrides};
use immutable_id_proxy::forward_proxy::client_setup;
use immutable_id_proxy::{bulk_translate, certs, demo, probe, telemetry};

#[derive(Parser)]
#[command(
    name = "immutable-id-proxy",
    version,
    about = "A Microsoft Graph proxy that gives legacy apps immutable Outlook IDs",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: ConfigArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run(ConfigArgs),
    /// Validate the config and print the effective settings with where each came from.
    Check(ConfigArgs),
    /// Local CA and listener certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// A local Microsoft Graph simulator, for trying the proxy and an app without a tenant.
    Sim {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
    },
    /// The simulator and a proxy in front of it on free loopback ports, with curl commands
    /// to paste; runs until Ctrl-C.
    Demo,
    /// Translate stored IDs to immutable ones in bulk (CSV out; resumable).
    Translate(bulk_translate::TranslateArgs),
    /// GET a URL, by default the admin port's /readyz: exit 0 on a 2xx answer, 1 otherwise.
    /// A health check for images with no shell.
    Probe {
        #[arg(default_value = probe::DEFAULT_URL)]
        url: String,
    },
    /// Print the proxy and trust settings a client stack needs for drop-in mode.
    Env(EnvArgs),
}

#[derive(Args)]
struct EnvArgs {
    /// The client stack
    #[arg(long, value_enum)]
    runtime: client_setup::Runtime,
    /// The bundle made by `certs bundle` [default: bundle.pem beside forward_proxy.ca_cert]
    #[arg(long)]
    bundle: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args, Default)]
struct ConfigArgs {
    /// Config file [default: ./config.toml; built-in defaults when it does not exist]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listener address, overriding listen.addr
    #[arg(long)]
    listen: Option<String>,
    /// Upstream URL, overriding upstream.url
    #[arg(long)]
    upstream: Option<String>,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a local CA and a listener certificate signed by it.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Extra DNS name or IP address for the listener certificate (repeatable)
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Replace existing keys
        #[arg(long)]
        force: bool,
    },
    /// Write the system's roots plus our CA as one PEM file, for clients of drop-in mode.
    Bundle {
        /// Where `certs init` wrote ca.pem
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The bundle to write [default: DIR/bundle.pem]
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::Check(args)) => check(args),
        Some(Command::Sim { listen }) => sim(&listen),
        Some(Command::Demo) => demo(),
        Some(Command::Translate(args)) => bulk_translate::run(args),
        Some(Command::Probe { url }) => probe_url(&url),
        Some(Command::Env(args)) => env(args),
        Some(Command::Certs(CertsCommand::Bundle { dir, out })) => {
            let ca = dir.join(certs::CA_CERT);
            let out = out.unwrap_or_else(|| dir.join("bundle.pem"));
            let system = std::path::Path::new(client_setup::SYSTEM_BUNDLE);
            match client_setup::write_bundle(&ca, &out, system) {
                Ok(bundle) => {
                    print!("{}", bundle.describe(&ca));
                    ExitCode::SUCCESS
                }
                Err(e @ client_setup::BundleError::Ca(_)) => {
                    eprintln!("certs bundle: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("certs bundle: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Certs(CertsCommand::Init { dir, sans, force })) => {
            match certs::init(&dir, &sans, force) {
                Ok(created) => {
                    print!("{}", certs::trust_instructions(&created));
                    ExitCode::SUCCESS
                }
                Err(e @ certs::CertsError::Exists(_)) | Err(e @ certs::CertsError::BadSan(_)) => {
                    eprintln!("certs init: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("certs init: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load(args: &ConfigArgs) -> Result<config::Loaded, ExitCode> {
    let overrides = Overrides {
        listen: args.listen.clone(),
        upstream: args.upstream.clone(),
    };
    // vars_os: std::env::vars() panics on a variable that is not Unicode; such a variable
    // cannot be one of ours, so it is skipped.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    config::load(args.config.as_deref(), env, &overrides).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(2)
    })
}

fn check(args: ConfigArgs) -> ExitCode {
    let loaded = match load(&args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    print!("{}", loaded.describe());
    for feature in app::inactive_features(&loaded.config) {
        println!("# note: {feature}");
    }
    ExitCode::SUCCESS
}

fn env(args: EnvArgs) -> ExitCode {
    let loaded = match load(&args.config) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let fp = &loaded.config.forward_proxy;
    let bundle = args.bundle.unwrap_or_else(|| {
        fp.ca_cert
            .parent()
            .unwrap_or_else(|| std::path::Path::new(""))
            .join("bundle.pem")
    });
    let setup = client_setup::ClientSetup::new(fp.addr, &bundle, &fp.ca_cert);
    print!("{}", setup.env_text(args.runtime));
    if !fp.enabled {
        eprintln!(
            "note: forward_proxy.enabled is false in this config; the proxy will not listen on {}",
            fp.addr
        );
    }
    if !setup.bundle.exists() {
        eprintln!(
            "note: {} does not exist yet; run `immutable-id-proxy certs bundle`",
            setup.bundle.display()
        );
    }
    ExitCode::SUCCESS
}

fn run(args: ConfigArgs) -> ExitCode {
    let loaded = match load(&args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let config = loaded.config;
    telemetry::init(config.log.format, config.log.level);
    match &loaded.file {
        Some(path) => tracing::info!(config = %path.display(), "config loaded"),
        None => tracing::info!("no config file; using built-in defaults"),
    }
    let mut app = match App::build(config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let bound = match app.bind().await {
            Ok(bound) => bound,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let scheme = if app.is_tls() { "https" } else { "http" };
        // Printed first: readers stop at the two lines below.
        if let Some(forward) = bound.forward_addr() {
            println!("forward proxy listening on http://{forward}");
        }
        if let (Some(proxy), Some(admin)) = (bound.proxy_addr(), bound.admin_addr()) {
            println!("proxy listening on {scheme}://{proxy}");
            println!("admin listening on http://{admin}");
        }
        let shutdown = ShutdownTrigger::new();
        tokio::spawn(trigger_on_signals(shutdown.clone()));
        let reload: app::Reload = Box::new(move || {
            let overrides = Overrides {
                listen: args.listen.clone(),
                upstream: args.upstream.clone(),
            };
            config::load(args.config.as_deref(), utf8_env(), &overrides)
                .map(|loaded| loaded.config)
                .map_err(|errors| errors.to_string().replace('\n', "; "))
        });
        app.run(bound, shutdown, Some(reload)).await;
        ExitCode::SUCCESS
    })
}

/// The environment as UTF-8 pairs. `std::env::vars()` panics on a variable that is not
/// Unicode; such a variable cannot be one of ours, so it is skipped.
fn utf8_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn sim(listen: &str) -> ExitCode {
    let addr: std::net::SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(_) => {
            eprintln!("--listen: not a socket address (host:port): {listen}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config::LogFormat::Text, config::LogLevel::Info);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("cannot listen on {addr} (--listen): {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(bound) = listener.local_addr() {
            println!("sim listening on http://{bound}");
        }
        let shutdown = ShutdownTrigger::new();
        tokio::spawn(trigger_on_signals(shutdown.clone()));
        match demo::run_simulator(listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("simulator failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn demo() -> ExitCode {
    telemetry::init(config::LogFormat::Text, config::LogLevel::Info);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let env = utf8_env();
    runtime.block_on(async move {
        let shutdown = ShutdownTrigger::new();
        tokio::spawn(trigger_on_signals(shutdown.clone()));
        match demo::run(env, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(demo::DemoError::Config(errors)) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("demo failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn probe_url(url: &str) -> ExitCode {
    // One request: a current-thread runtime starts no worker threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(probe::probe(url, probe::DEFAULT_TIMEOUT)) {
        Ok(status) if status.is_success() => {
            println!("{url}: {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("{url}: {status}");
            ExitCode::FAILURE
        }
        Err(e @ probe::ProbeError::BadUrl(_)) => {
            eprintln!("probe: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT both start the drain; a second signal is not needed (the drain has its
/// own deadline).
async fn trigger_on_signals(shutdown: ShutdownTrigger) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still works");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.trigger();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    shutdown.trigger();
}
