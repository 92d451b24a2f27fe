//! Configuration: `config.toml`, `IDPROXY__SECTION__KEY` environment overrides and the
//! `--listen` / `--upstream` flags, parsed into validated types before any port is bound.
//!
//! Nothing here opens a socket or creates a file; the only I/O is reading the config file
//! and checking that the files it names are readable. Every problem found is collected and
//! reported as `key: why`, so one run of `check` lists them all. Layers, lowest first:
//! built-in defaults, the file, `IDPROXY__` variables, then the flags.
//!
//! The file is walked as a `toml::Table` against one key table (`KEYS`) rather than through
//! a `deny_unknown_fields` serde struct, because serde stops at the first unknown key or
//! wrong type and we must report all of them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

/// The whole validated configuration. Built once at start-up, never mutated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub upstream: Upstream,
    pub immutable_id: ImmutableId,
    pub rate_limit: RateLimit,
    pub rewrite: Rewrite,
    pub shared: Shared,
    pub forward_proxy: ForwardProxy,
    pub admin: Admin,
    pub log: Log,
}

/// `scheme://authority` with no path: the upstream and the public base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    /// Both files set: the listener speaks TLS.
    pub tls: Option<TlsFiles>,
    /// How apps reach the proxy; links on the upstream origin are rewritten to it.
    pub public_base_url: Origin,
    pub header_read_timeout: Duration,
    pub max_connections: NonZeroUsize,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: Origin,
    /// Extra PEM trust roots on top of the system and webpki roots.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_retries: u32,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// Outbound corporate proxy; `None`: honour HTTPS_PROXY/NO_PROXY.
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreferMode {
    /// Replace any IdType the app sent.
    Force,
    /// Keep the app's own IdType when it sent one.
    Respect,
}

#[derive(Debug, Clone)]
pub struct ImmutableId {
    pub mode: PreferMode,
    /// Globs over path+query (`*` = any characters) sent without the header.
    pub skip: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLimit {
    Queue,
    Reject,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    pub enabled: bool,
    pub on_limit: OnLimit,
    pub max_wait: Duration,
    pub requests_per_second: NonZeroU32,
    pub burst: NonZeroU32,
    pub mailbox_concurrency: NonZeroU32,
    pub mailbox_requests_per_10min: NonZeroU32,
    /// Per-tenant overrides, keyed by tenant id as written in the file.
    pub tenants: BTreeMap<String, TenantLimit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimit {
    pub requests_per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceType {
    RestId,
    EwsId,
    EntryId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Pass,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    pub enabled: bool,
    pub source_types: Vec<SourceType>,
    pub store: PathBuf,
    pub cache_capacity: NonZeroUsize,
    pub negative_ttl: Duration,
    pub batch_window: Duration,
    /// Bodies larger than this (or of unknown length beyond it) stream through untouched.
    pub max_body_bytes: NonZeroUsize,
    pub on_error: OnError,
    pub responses: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

#[derive(Debug, Clone)]
pub struct Shared {
    pub backend: Backend,
    pub redis_url: String,
}

#[derive(Debug, Clone)]
pub struct ForwardProxy {
    pub enabled: bool,
    pub addr: SocketAddr,
    pub intercept_hosts: Vec<String>,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// `host:port` entries, or `*` for every host.
    pub tunnel_allow: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: LogLevel,
}

/// Gives each config enum its one spelling, shared by parsing and `describe` so they
/// cannot drift apart.
macro_rules! config_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every accepted value, in the order error messages list them.
            const NAMES: &'static [(&'static str, $ty)] = &[$(($name, $ty::$variant)),+];

            /// The spelling used in config.toml.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }
    };
}

config_names!(PreferMode { Force => "force", Respect => "respect" });
config_names!(OnLimit { Queue => "queue", Reject => "reject" });
config_names!(SourceType { RestId => "restId", EwsId => "ewsId", EntryId => "entryId" });
config_names!(OnError { Pass => "pass", Fail => "fail" });
config_names!(Backend { Memory => "memory", Redis => "redis" });
config_names!(LogFormat { Text => "text", Json => "json" });
config_names!(LogLevel {
    Error => "error",
    Warn => "warn",
    Info => "info",
    Debug => "debug",
    Trace => "trace",
});

impl Origin {
    /// Accepts `http://host[:port]` or `https://host[:port]`, optionally with a trailing
    /// `/`. Anything more is refused rather than dropped, because a path or query silently
    /// ignored would send traffic somewhere the operator did not mean.
    pub fn parse(s: &str) -> Result<Origin, String> {
        if s.contains('#') {
            return Err("must not have a fragment (#...)".to_string());
        }
        let uri: http::Uri = s
            .parse()
            .map_err(|_| "not a URL (expected http://host or https://host)".to_string())?;
        let scheme = match uri.scheme_str() {
            Some(name) if name.eq_ignore_ascii_case("https") => http::uri::Scheme::HTTPS,
            Some(name) if name.eq_ignore_ascii_case("http") => http::uri::Scheme::HTTP,
            Some(name) => return Err(format!("scheme must be http or https, not {name:?}")),
            None => return Err("must be an absolute URL (http://... or https://...)".to_string()),
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err("must be an absolute URL (http://... or https://...)".to_string());
        };
        if authority.as_str().contains('@') {
            return Err("must not contain a user name or password".to_string());
        }
        if authority.host().is_empty() {
            return Err("has no host".to_string());
        }
        // http::Uri accepts any digits after the colon; a port above 65535 must not get
        // as far as the connector.
        let after_host = authority
            .as_str()
            .get(authority.host().len()..)
            .unwrap_or_default();
        if let Some(port) = after_host.strip_prefix(':') {
            if port.parse::<u16>().is_err() {
                return Err(format!("port {port:?} is not a number from 0 to 65535"));
            }
        }
        if !matches!(uri.path(), "" | "/") {
            return Err(format!("must not have a path (found {:?})", uri.path()));
        }
        if uri.query().is_some() {
            return Err("must not have a query (?...)".to_string());
        }
        Ok(Origin { scheme, authority })
    }

    pub fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Where a key's effective value came from, shown by `check` so an operator can tell why
/// a value is not the one in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    /// The variable's name as it appeared in the environment.
    Env(String),
    /// The flag, e.g. `--listen`.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Command-line flags that beat both the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`: replaces `listen.addr`.
    pub listen: Option<String>,
    /// `--upstream`: replaces `upstream.url`.
    pub upstream: Option<String>,
}

/// One problem, printed as `key: why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key (`rate_limit.burst`), the variable name for an unknown `IDPROXY__`
    /// variable, or `config` for the file itself.
    pub key: String,
    pub why: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, why: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            why: why.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.why)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one load; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated configuration and where each value came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Dotted key (`rate_limit.burst`, `rate_limit.tenants.<id>.burst`) to its source.
    pub sources: BTreeMap<String, Source>,
    /// The file that was read; `None` when running on built-in defaults.
    pub file: Option<PathBuf>,
}

const ENV_PREFIX: &str = "IDPROXY__";
const DEFAULT_FILE: &str = "config.toml";

/// The longest accepted duration. Larger values would overflow `Instant + Duration` in
/// code that does not expect a timeout of centuries.
const MAX_DURATION_S: u64 = 365 * 24 * 60 * 60;

/// A key's built-in value, which also fixes the TOML type the key takes.
#[derive(Clone, Copy)]
enum Builtin {
    /// A string; `""` means "unset" for optional keys.
    Str(&'static str),
    Int(i64),
    Bool(bool),
    List(&'static [&'static str]),
    /// `rate_limit.tenants`: empty by default.
    Table,
}

impl Builtin {
    fn value(self) -> Value {
        match self {
            Builtin::Str(s) => Value::String(s.to_string()),
            Builtin::Int(n) => Value::Integer(n),
            Builtin::Bool(b) => Value::Boolean(b),
            Builtin::List(items) => Value::Array(
                items
                    .iter()
                    .map(|item| Value::String((*item).to_string()))
                    .collect(),
            ),
            Builtin::Table => Value::Table(toml::Table::new()),
        }
    }
}

struct KeySpec {
    /// `section.key`, exactly as in DESIGN.md.
    name: &'static str,
    default: Builtin,
}

impl KeySpec {
    fn section(&self) -> &'static str {
        self.name
            .split_once('.')
            .map_or(self.name, |(section, _)| section)
    }

    fn key(&self) -> &'static str {
        self.name.split_once('.').map_or("", |(_, key)| key)
    }
}

const fn spec(name: &'static str, default: Builtin) -> KeySpec {
    KeySpec { name, default }
}

/// Every key of config.toml with its default, in the file's order (`describe` and the
/// error order follow it). Parsing knows all of them even before the feature exists.
const KEYS: &[KeySpec] = &[
    spec("listen.addr", Builtin::Str("127.0.0.1:8080")),
    spec("listen.tls_cert", Builtin::Str("")),
    spec("listen.tls_key", Builtin::Str("")),
    // Empty: derived from listen.addr and TLS, so `--listen` moves it too.
    spec("listen.public_base_url", Builtin::Str("")),
    spec("listen.header_read_timeout_ms", Builtin::Int(10_000)),
    spec("listen.max_connections", Builtin::Int(10_000)),
    spec("upstream.url", Builtin::Str("https://graph.microsoft.com")),
    spec("upstream.ca_file", Builtin::Str("")),
    spec("upstream.connect_timeout_ms", Builtin::Int(5_000)),
    spec("upstream.request_timeout_ms", Builtin::Int(100_000)),
    spec("upstream.max_retries", Builtin::Int(3)),
    spec("upstream.retry_base_delay_ms", Builtin::Int(3_000)),
    spec("upstream.retry_max_delay_ms", Builtin::Int(180_000)),
    spec("upstream.proxy", Builtin::Str("")),
    spec("immutable_id.mode", Builtin::Str("force")),
    spec("immutable_id.skip", Builtin::List(&[])),
    spec("rate_limit.enabled", Builtin::Bool(true)),
    spec("rate_limit.on_limit", Builtin::Str("queue")),
    spec("rate_limit.max_wait_ms", Builtin::Int(30_000)),
    spec("rate_limit.requests_per_second", Builtin::Int(50)),
    spec("rate_limit.burst", Builtin::Int(100)),
    spec("rate_limit.mailbox_concurrency", Builtin::Int(4)),
    spec(
        "rate_limit.mailbox_requests_per_10min",
        Builtin::Int(10_000),
    ),
    spec("rate_limit.tenants", Builtin::Table),
    spec("rewrite.enabled", Builtin::Bool(false)),
    spec(
        "rewrite.source_types",
        Builtin::List(&["restId", "ewsId", "entryId"]),
    ),
    spec("rewrite.store", Builtin::Str("data/idmap.redb")),
    spec("rewrite.cache_capacity", Builtin::Int(1_000_000)),
    spec("rewrite.negative_ttl_s", Builtin::Int(300)),
    spec("rewrite.batch_window_ms", Builtin::Int(2)),
    spec("rewrite.max_body_bytes", Builtin::Int(4_194_304)),
    spec("rewrite.on_error", Builtin::Str("pass")),
    spec("rewrite.responses", Builtin::Bool(false)),
    spec("shared.backend", Builtin::Str("memory")),
    spec("shared.redis_url", Builtin::Str("redis://127.0.0.1:6379")),
    spec("forward_proxy.enabled", Builtin::Bool(false)),
    spec("forward_proxy.addr", Builtin::Str("127.0.0.1:3128")),
    spec(
        "forward_proxy.intercept_hosts",
        Builtin::List(&[
            "graph.microsoft.com",
            "graph.microsoft.us",
            "dod-graph.microsoft.us",
            "microsoftgraph.chinacloudapi.cn",
        ]),
    ),
    spec("forward_proxy.ca_cert", Builtin::Str("certs/ca.pem")),
    spec("forward_proxy.ca_key", Builtin::Str("certs/ca-key.pem")),
    spec(
        "forward_proxy.tunnel_allow",
        Builtin::List(&["login.microsoftonline.com:443"]),
    ),
    spec("admin.addr", Builtin::Str("127.0.0.1:9090")),
    spec("log.format", Builtin::Str("text")),
    spec("log.level", Builtin::Str("info")),
];

/// Words people type instead of our key names, so the "did you mean" hint still finds them.
const ALIASES: &[(&str, &str)] = &[
    ("address", "addr"),
    ("cert", "tls_cert"),
    ("key", "tls_key"),
    ("retries", "max_retries"),
    ("rps", "requests_per_second"),
];

fn find_spec(section: &str, key: &str) -> Option<&'static KeySpec> {
    KEYS.iter()
        .find(|spec| spec.section() == section && spec.key() == key)
}

fn sections() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for spec in KEYS {
        if !names.contains(&spec.section()) {
            names.push(spec.section());
        }
    }
    names
}

fn keys_of(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|spec| spec.section() == section)
        .map(KeySpec::key)
        .collect()
}

/// Reads the config file (default `./config.toml`), then applies `env` (the whole process
/// environment; only `IDPROXY__` variables are looked at) and the flags.
///
/// A missing default file means built-in defaults; a file named explicitly must exist.
/// Pass `std::env::vars_os()` filtered to valid UTF-8 rather than `std::env::vars()`,
/// which panics on a non-Unicode variable anywhere in the environment.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigErrors> {
    load_with_default(path, Path::new(DEFAULT_FILE), env, overrides)
}

fn load_with_default(
    path: Option<&Path>,
    default_file: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigErrors> {
    let unreadable = |path: &Path, error: std::io::Error| {
        ConfigErrors(vec![ConfigError::new(
            "config",
            format!("cannot read {}: {error}", path.display()),
        )])
    };
    let (text, file) = match path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (text, Some(path.to_path_buf())),
            Err(error) => return Err(unreadable(path, error)),
        },
        None => match std::fs::read_to_string(default_file) {
            Ok(text) => (text, Some(default_file.to_path_buf())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
            Err(error) => return Err(unreadable(default_file, error)),
        },
    };
    let mut loaded = parse_str(&text, env, overrides)?;
    loaded.file = file;
    Ok(loaded)
}

/// Like [`load`] with `text` as the file's contents; keys in `text` get [`Source::File`].
pub fn parse_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigErrors> {
    let mut layers = Layers::default();
    match text.parse::<toml::Table>() {
        Ok(table) => layers.add_file(table),
        // Keep going: the environment and flags are still worth checking in the same run.
        Err(error) => layers.errors.push(syntax_error(text, &error)),
    }
    layers.add_env(env);
    layers.add_flags(overrides);

    let mut resolver = Resolver {
        set: layers.set,
        errors: layers.errors,
        sources: BTreeMap::new(),
    };
    let config = resolve(&mut resolver);
    for spec in KEYS {
        let source = resolver.source(spec.name);
        resolver.sources.insert(spec.name.to_string(), source);
    }
    match config {
        Some(config) if resolver.errors.is_empty() => Ok(Loaded {
            config,
            sources: resolver.sources,
            file: None,
        }),
        _ if resolver.errors.is_empty() => Err(ConfigErrors(vec![ConfigError::new(
            "config",
            "could not be validated (internal error: no problem was recorded)",
        )])),
        _ => Err(ConfigErrors(resolver.errors)),
    }
}

fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let position = error.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map_or(0, |last| last.chars().count())
            + 1;
        format!(" at line {line}, column {column}")
    });
    ConfigError::new(
        "config",
        format!(
            "invalid TOML{}: {}",
            position.unwrap_or_default(),
            error.message()
        ),
    )
}

/// The raw values set by the file, environment and flags, before any type is checked.
#[derive(Default)]
struct Layers {
    set: BTreeMap<&'static str, (Value, Source)>,
    errors: Vec<ConfigError>,
}

impl Layers {
    fn add_file(&mut self, table: toml::Table) {
        let known_sections = sections();
        for (section, value) in table {
            if !known_sections.contains(&section.as_str()) {
                let why = unknown("unknown section", &section, &known_sections, |s| {
                    format!("[{s}]")
                });
                self.errors.push(ConfigError::new(section, why));
                continue;
            }
            let Value::Table(entries) = value else {
                self.errors.push(ConfigError::new(
                    &section,
                    format!(
                        "expected a table ([{section}]), found {}",
                        type_name(&value)
                    ),
                ));
                continue;
            };
            for (key, value) in entries {
                match find_spec(&section, &key) {
                    Some(spec) => {
                        self.set.insert(spec.name, (value, Source::File));
                    }
                    None => {
                        let why =
                            unknown("unknown key", &key, &keys_of(&section), |k| k.to_string());
                        self.errors
                            .push(ConfigError::new(format!("{section}.{key}"), why));
                    }
                }
            }
        }
    }

    fn add_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        // Sorted so that a variable set twice under different spellings resolves the same
        // way on every run.
        let ours: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        for (name, raw) in ours {
            let rest = name
                .get(ENV_PREFIX.len()..)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let (section, key) = rest.split_once("__").unwrap_or((rest.as_str(), ""));
            let Some(spec) = find_spec(section, key) else {
                let why = unknown_env(section, key);
                self.errors.push(ConfigError::new(name, why));
                continue;
            };
            let value = env_value(spec.default, &raw);
            self.set.insert(spec.name, (value, Source::Env(name)));
        }
    }

    fn add_flags(&mut self, overrides: &Overrides) {
        if let Some(addr) = &overrides.listen {
            self.set.insert(
                "listen.addr",
                (Value::String(addr.clone()), Source::Flag("--listen")),
            );
        }
        if let Some(url) = &overrides.upstream {
            self.set.insert(
                "upstream.url",
                (Value::String(url.clone()), Source::Flag("--upstream")),
            );
        }
    }
}

/// Turns an environment string into the TOML value its key expects. A value that is valid
/// TOML of the right shape is taken as such; otherwise string keys take the raw text (so
/// `127.0.0.1:8080` needs no quotes) and list keys accept `a,b,c`.
fn env_value(default: Builtin, raw: &str) -> Value {
    let parsed = raw.trim().parse::<Value>().ok();
    match (default, parsed) {
        (Builtin::Str(_), Some(Value::String(s))) => Value::String(s),
        (Builtin::Str(_), _) => Value::String(raw.to_string()),
        (Builtin::List(_), Some(Value::Array(items))) => Value::Array(items),
        (Builtin::List(_), _) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_string()))
                .collect(),
        ),
        // Left as a string so the type check names what was expected.
        (Builtin::Int(_) | Builtin::Bool(_) | Builtin::Table, parsed) => {
            parsed.unwrap_or_else(|| Value::String(raw.to_string()))
        }
    }
}

fn unknown(what: &str, word: &str, candidates: &[&str], show: impl Fn(&str) -> String) -> String {
    match suggest(word, candidates) {
        Some(best) => format!("{what} (did you mean {}?)", show(best)),
        None => what.to_string(),
    }
}

fn unknown_env(section: &str, key: &str) -> String {
    let known_sections = sections();
    let env_name =
        |section: &str, key: &str| format!("{ENV_PREFIX}{}__{}", section, key).to_ascii_uppercase();
    if known_sections.contains(&section) {
        match suggest(key, &keys_of(section)) {
            Some(best) => format!(
                "unknown setting (did you mean {}?)",
                env_name(section, best)
            ),
            None => format!(
                "unknown setting: [{section}] has no key {key:?} (use {ENV_PREFIX}SECTION__KEY)"
            ),
        }
    } else {
        match suggest(section, &known_sections) {
            Some(best) => format!("unknown setting (did you mean {}?)", env_name(best, key)),
            None => {
                format!("unknown setting: no section {section:?} (use {ENV_PREFIX}SECTION__KEY)")
            }
        }
    }
}

/// The closest known name, if it is close enough to be a typo.
fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // Long garbage gets no hint; this also bounds the edit-distance work.
    if word.is_empty() || word.len() > 64 {
        return None;
    }
    let limit = (word.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for &candidate in candidates {
        let aliases = ALIASES
            .iter()
            .filter(|(_, to)| *to == candidate)
            .map(|(from, _)| *from);
        for spelling in std::iter::once(candidate).chain(aliases) {
            let distance = edit_distance(word, spelling);
            if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, candidate));
            }
        }
    }
    best.map(|(_, name)| name)
}

/// Optimal-string-alignment distance: like Levenshtein, but a swap of two neighbouring
/// letters (`brust`) costs one, as it does for the typist.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    // Every index below stays within 0..=a.len() by 0..=b.len(), so the table is never
    // indexed out of bounds.
    let at = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        d[at(i, 0)] = i;
    }
    for j in 0..=b.len() {
        d[at(0, j)] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[at(i - 1, j)] + 1)
                .min(d[at(i, j - 1)] + 1)
                .min(d[at(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[at(i - 2, j - 2)] + 1);
            }
            d[at(i, j)] = best;
        }
    }
    d[at(a.len(), b.len())]
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn expect_str(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("expected a string, found {}", type_name(other))),
    }
}

fn expect_int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Integer(n) => Ok(*n),
        other => Err(format!("expected an integer, found {}", type_name(other))),
    }
}

fn expect_bool(value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(b) => Ok(*b),
        other => Err(format!(
            "expected a boolean (true or false), found {}",
            type_name(other)
        )),
    }
}

fn expect_strings(value: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "expected an array of strings, found {}",
            type_name(value)
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "expected an array of strings, item {} is {}",
                i + 1,
                type_name(other)
            )),
        })
        .collect()
}

/// An integer above zero and at most `max`, checked before any conversion so a negative
/// number can never wrap into a huge one.
fn positive(value: &Value, max: u64) -> Result<u64, String> {
    let n = expect_int(value)?;
    let n = u64::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "must be greater than 0".to_string())?;
    if n > max {
        return Err(format!("must be at most {max}"));
    }
    Ok(n)
}

fn non_zero_u32(value: &Value) -> Result<NonZeroU32, String> {
    let n = positive(value, u64::from(u32::MAX))?;
    u32::try_from(n)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("must be from 1 to {}", u32::MAX))
}

fn non_zero_usize(value: &Value) -> Result<NonZeroUsize, String> {
    let n = positive(value, u64::try_from(usize::MAX).unwrap_or(u64::MAX))?;
    usize::try_from(n)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| format!("must be from 1 to {}", usize::MAX))
}

fn millis(value: &Value) -> Result<Duration, String> {
    positive(value, MAX_DURATION_S * 1000).map(Duration::from_millis)
}

fn seconds(value: &Value) -> Result<Duration, String> {
    positive(value, MAX_DURATION_S).map(Duration::from_secs)
}

/// Zero is allowed here: it means "never retry".
fn retries(value: &Value) -> Result<u32, String> {
    let n = expect_int(value)?;
    if n < 0 {
        return Err("must not be negative (0 means no retries)".to_string());
    }
    u32::try_from(n).map_err(|_| format!("must be at most {}", u32::MAX))
}

fn socket_addr(value: &Value) -> Result<SocketAddr, String> {
    expect_str(value)?
        .trim()
        .parse()
        .map_err(|_| "not a socket address (host:port)".to_string())
}

fn origin(value: &Value) -> Result<Origin, String> {
    Origin::parse(expect_str(value)?.trim())
}

/// An empty string means "not set", the only way to unset a key from the environment.
fn optional_path(value: &Value) -> Result<Option<PathBuf>, String> {
    let s = expect_str(value)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
}

fn required_path(value: &Value) -> Result<PathBuf, String> {
    optional_path(value)?.ok_or_else(|| "must not be empty".to_string())
}

fn optional_origin(value: &Value) -> Result<Option<Origin>, String> {
    let s = expect_str(value)?.trim();
    if s.is_empty() {
        return Ok(None);
    }
    Origin::parse(s).map(Some)
}

/// An outbound proxy in the form HTTPS_PROXY takes: `host:port` or `http(s)://host:port`,
/// credentials allowed.
fn proxy_url(value: &Value) -> Result<Option<String>, String> {
    let s = expect_str(value)?.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|_| "not a proxy URL (expected http://host:port)".to_string())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("proxy scheme must be http or https".to_string()),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(Some(s.to_string())),
        _ => Err("has no host".to_string()),
    }
}

fn choice<T: Copy>(value: &Value, names: &[(&'static str, T)]) -> Result<T, String> {
    let s = expect_str(value)?.trim();
    names
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, item)| *item)
        .ok_or_else(|| {
            let all: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            format!("must be one of {} (found {s:?})", all.join(", "))
        })
}

fn readable(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    match file.metadata() {
        Ok(meta) if meta.is_dir() => Err(format!("{} is a directory", path.display())),
        Ok(_) => Ok(()),
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

fn tunnel_entry(entry: &str) -> Result<(), String> {
    if entry == "*" {
        return Ok(());
    }
    let bad = || format!("{entry:?} is not host:port or \"*\"");
    let (host, port) = entry.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|port| port > 0);
    if host.is_empty() || host.contains('*') || host.contains('/') || !port_ok {
        return Err(bad());
    }
    Ok(())
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Type-checks and validates layered values, recording every failure against its key.
struct Resolver {
    set: BTreeMap<&'static str, (Value, Source)>,
    errors: Vec<ConfigError>,
    sources: BTreeMap<String, Source>,
}

impl Resolver {
    fn source(&self, name: &str) -> Source {
        self.set
            .get(name)
            .map_or(Source::Default, |(_, source)| source.clone())
    }

    fn read<T>(
        &mut self,
        name: &'static str,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        let (value, source) = match self.set.get(name) {
            Some((value, source)) => (value.clone(), source.clone()),
            None => match KEYS.iter().find(|spec| spec.name == name) {
                Some(spec) => (spec.default.value(), Source::Default),
                None => {
                    self.errors
                        .push(ConfigError::new(name, "internal error: key not in KEYS"));
                    return None;
                }
            },
        };
        match convert(&value) {
            Ok(item) => Some(item),
            Err(why) => {
                self.fail(name, &source, why);
                None
            }
        }
    }

    /// Records a problem; a value that came from outside the file says where, because the
    /// operator will look in the file first.
    fn fail(&mut self, key: &str, source: &Source, why: impl Into<String>) {
        let mut why = why.into();
        match source {
            Source::Env(name) => why.push_str(&format!(" (from {name})")),
            Source::Flag(flag) => why.push_str(&format!(" (from {flag})")),
            Source::Default | Source::File => {}
        }
        self.errors.push(ConfigError::new(key, why));
    }

    fn check_readable(&mut self, name: &'static str, path: &Path) {
        if let Err(why) = readable(path) {
            let source = self.source(name);
            self.fail(name, &source, why);
        }
    }
}

fn resolve(r: &mut Resolver) -> Option<Config> {
    // Every section is resolved before any `?`, so all of their errors are collected.
    let listen = resolve_listen(r);
    let upstream = resolve_upstream(r);
    let immutable_id = resolve_immutable_id(r);
    let rate_limit = resolve_rate_limit(r);
    let rewrite = resolve_rewrite(r);
    let shared = resolve_shared(r);
    let forward_proxy = resolve_forward_proxy(r);
    let admin = r.read("admin.addr", socket_addr).map(|addr| Admin { addr });
    let log = resolve_log(r);
    Some(Config {
        listen: listen?,
        upstream: upstream?,
        immutable_id: immutable_id?,
        rate_limit: rate_limit?,
        rewrite: rewrite?,
        shared: shared?,
        forward_proxy: forward_proxy?,
        admin: admin?,
        log: log?,
    })
}

fn resolve_listen(r: &mut Resolver) -> Option<Listen> {
    let addr = r.read("listen.addr", socket_addr);
    let cert = r.read("listen.tls_cert", optional_path);
    let key = r.read("listen.tls_key", optional_path);
    let tls = match (cert, key) {
        (Some(Some(cert)), Some(Some(key))) => {
            r.check_readable("listen.tls_cert", &cert);
            r.check_readable("listen.tls_key", &key);
            Some(Some(TlsFiles { cert, key }))
        }
        (Some(Some(_)), Some(None)) => {
            r.fail(
                "listen.tls_key",
                &Source::Default,
                "must be set when listen.tls_cert is set",
            );
            None
        }
        (Some(None), Some(Some(_))) => {
            r.fail(
                "listen.tls_cert",
                &Source::Default,
                "must be set when listen.tls_key is set",
            );
            None
        }
        (Some(None), Some(None)) => Some(None),
        _ => None,
    };
    let public = r.read("listen.public_base_url", optional_origin);
    let public_base_url = match (public, addr, &tls) {
        (Some(Some(origin)), _, _) => Some(origin),
        (Some(None), Some(addr), Some(tls)) => {
            // An empty value means "derive it", so report it as the default it stands for.
            r.set.remove("listen.public_base_url");
            let derived = derived_origin(addr, tls.is_some());
            if derived.is_none() {
                r.fail(
                    "listen.public_base_url",
                    &Source::Default,
                    format!("cannot be derived from listen.addr {addr}; set it"),
                );
            }
            derived
        }
        _ => None,
    };
    let header_read_timeout = r.read("listen.header_read_timeout_ms", millis);
    let max_connections = r.read("listen.max_connections", non_zero_usize);
    Some(Listen {
        addr: addr?,
        tls: tls?,
        public_base_url: public_base_url?,
        header_read_timeout: header_read_timeout?,
        max_connections: max_connections?,
    })
}

/// The URL apps use when none is configured. A wildcard listen address is not something a
/// client can connect to, so the loopback address of the same family stands in for it:
/// right for the sidecar and the local case, and anything else must set the URL.
fn derived_origin(addr: SocketAddr, tls: bool) -> Option<Origin> {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    // An IPv6 scope id prints as `%eth0`, which is not valid in an authority: then None.
    let authority = SocketAddr::new(ip, addr.port()).to_string().parse().ok()?;
    let scheme = if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    Some(Origin { scheme, authority })
}

fn resolve_upstream(r: &mut Resolver) -> Option<Upstream> {
    let url = r.read("upstream.url", origin);
    let ca_file = r.read("upstream.ca_file", optional_path);
    if let Some(Some(path)) = &ca_file {
        r.check_readable("upstream.ca_file", path);
    }
    let connect_timeout = r.read("upstream.connect_timeout_ms", millis);
    let request_timeout = r.read("upstream.request_timeout_ms", millis);
    let max_retries = r.read("upstream.max_retries", retries);
    let retry_base_delay = r.read("upstream.retry_base_delay_ms", millis);
    let retry_max_delay = r.read("upstream.retry_max_delay_ms", millis);
    if let (Some(base), Some(max)) = (retry_base_delay, retry_max_delay) {
        if max < base {
            let source = r.source("upstream.retry_max_delay_ms");
            r.fail(
                "upstream.retry_max_delay_ms",
                &source,
                "must be at least upstream.retry_base_delay_ms",
            );
        }
    }
    let proxy = r.read("upstream.proxy", proxy_url);
    Some(Upstream {
        url: url?,
        ca_file: ca_file?,
        connect_timeout: connect_timeout?,
        request_timeout: request_timeout?,
        max_retries: max_retries?,
        retry_base_delay: retry_base_delay?,
        retry_max_delay: retry_max_delay?,
        proxy: proxy?,
    })
}

fn resolve_immutable_id(r: &mut Resolver) -> Option<ImmutableId> {
    let mode = r.read("immutable_id.mode", |v| choice(v, PreferMode::NAMES));
    let skip = r.read("immutable_id.skip", |v| {
        let globs = expect_strings(v)?;
        // An empty glob matches nothing a client can send, so it is surely a mistake.
        if globs.iter().any(|glob| glob.is_empty()) {
            return Err("entries must not be empty".to_string());
        }
        Ok(globs)
    });
    Some(ImmutableId {
        mode: mode?,
        skip: skip?,
    })
}

fn resolve_rate_limit(r: &mut Resolver) -> Option<RateLimit> {
    let enabled = r.read("rate_limit.enabled", expect_bool);
    let on_limit = r.read("rate_limit.on_limit", |v| choice(v, OnLimit::NAMES));
    let max_wait = r.read("rate_limit.max_wait_ms", millis);
    let requests_per_second = r.read("rate_limit.requests_per_second", non_zero_u32);
    let burst = r.read("rate_limit.burst", non_zero_u32);
    let mailbox_concurrency = r.read("rate_limit.mailbox_concurrency", non_zero_u32);
    let mailbox_requests_per_10min = r.read("rate_limit.mailbox_requests_per_10min", non_zero_u32);
    let tenants = resolve_tenants(r, requests_per_second, burst);
    Some(RateLimit {
        enabled: enabled?,
        on_limit: on_limit?,
        max_wait: max_wait?,
        requests_per_second: requests_per_second?,
        burst: burst?,
        mailbox_concurrency: mailbox_concurrency?,
        mailbox_requests_per_10min: mailbox_requests_per_10min?,
        tenants: tenants?,
    })
}

/// Per-tenant overrides; a key left out inherits the section's default, so an override
/// can raise only the rate and keep the usual burst.
fn resolve_tenants(
    r: &mut Resolver,
    default_rps: Option<NonZeroU32>,
    default_burst: Option<NonZeroU32>,
) -> Option<BTreeMap<String, TenantLimit>> {
    const NAME: &str = "rate_limit.tenants";
    let source = r.source(NAME);
    let table = r.read(NAME, |v| match v {
        Value::Table(table) => Ok(table.clone()),
        other => Err(format!(
            "expected a table of tenant id = {{ requests_per_second = N, burst = N }}, found {}",
            type_name(other)
        )),
    })?;
    let mut tenants = BTreeMap::new();
    let mut complete = true;
    for (id, value) in table {
        let key = format!("{NAME}.{}", toml_key(&id));
        if id.trim().is_empty() {
            r.fail(&key, &source, "tenant id must not be empty");
            complete = false;
            continue;
        }
        let Value::Table(limits) = value else {
            r.fail(
                &key,
                &source,
                format!(
                    "expected a table like {{ requests_per_second = 10, burst = 20 }}, found {}",
                    type_name(&value)
                ),
            );
            complete = false;
            continue;
        };
        let mut rps = (default_rps, Source::Default);
        let mut burst = (default_burst, Source::Default);
        for (name, value) in &limits {
            let sub_key = format!("{key}.{}", toml_key(name));
            let slot = match name.as_str() {
                "requests_per_second" => &mut rps,
                "burst" => &mut burst,
                _ => {
                    let why = unknown(
                        "unknown key",
                        name,
                        &["requests_per_second", "burst"],
                        |k| k.to_string(),
                    );
                    r.fail(&sub_key, &source, why);
                    complete = false;
                    continue;
                }
            };
            match non_zero_u32(value) {
                Ok(n) => *slot = (Some(n), source.clone()),
                Err(why) => {
                    r.fail(&sub_key, &source, why);
                    *slot = (None, source.clone());
                }
            }
        }
        r.sources
            .insert(format!("{key}.requests_per_second"), rps.1);
        r.sources.insert(format!("{key}.burst"), burst.1);
        match (rps.0, burst.0) {
            (Some(requests_per_second), Some(burst)) => {
                tenants.insert(
                    id,
                    TenantLimit {
                        requests_per_second,
                        burst,
                    },
                );
            }
            _ => complete = false,
        }
    }
    complete.then_some(tenants)
}

fn resolve_rewrite(r: &mut Resolver) -> Option<Rewrite> {
    let enabled = r.read("rewrite.enabled", expect_bool);
    let source_types = r.read("rewrite.source_types", |v| {
        let mut types = Vec::new();
        for name in expect_strings(v)? {
            let kind = choice(&Value::String(name), SourceType::NAMES)?;
            // A type listed twice means nothing more than once.
            if !types.contains(&kind) {
                types.push(kind);
            }
        }
        Ok(types)
    });
    let store = r.read("rewrite.store", required_path);
    let cache_capacity = r.read("rewrite.cache_capacity", non_zero_usize);
    let negative_ttl = r.read("rewrite.negative_ttl_s", seconds);
    let batch_window = r.read("rewrite.batch_window_ms", millis);
    let max_body_bytes = r.read("rewrite.max_body_bytes", non_zero_usize);
    let on_error = r.read("rewrite.on_error", |v| choice(v, OnError::NAMES));
    let responses = r.read("rewrite.responses", expect_bool);
    Some(Rewrite {
        enabled: enabled?,
        source_types: source_types?,
        store: store?,
        cache_capacity: cache_capacity?,
        negative_ttl: negative_ttl?,
        batch_window: batch_window?,
        max_body_bytes: max_body_bytes?,
        on_error: on_error?,
        responses: responses?,
    })
}

fn resolve_shared(r: &mut Resolver) -> Option<Shared> {
    let backend = r.read("shared.backend", |v| choice(v, Backend::NAMES));
    let redis_url = r.read("shared.redis_url", |v| {
        let url = expect_str(v)?.trim();
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
            .ok_or_else(|| "must start with redis:// or rediss://".to_string())?;
        if rest.is_empty() {
            return Err("has no host".to_string());
        }
        Ok(url.to_string())
    });
    Some(Shared {
        backend: backend?,
        redis_url: redis_url?,
    })
}

fn resolve_forward_proxy(r: &mut Resolver) -> Option<ForwardProxy> {
    let enabled = r.read("forward_proxy.enabled", expect_bool);
    let addr = r.read("forward_proxy.addr", socket_addr);
    let intercept_hosts = r.read("forward_proxy.intercept_hosts", |v| {
        let hosts = expect_strings(v)?;
        // CONNECT targets are matched on the host alone, so a port or scheme here would
        // silently never match.
        match hosts
            .iter()
            .find(|host| host.is_empty() || host.contains([':', '/', '*', ' ']))
        {
            Some(bad) => Err(format!("{bad:?} is not a plain host name")),
            None => Ok(hosts),
        }
    });
    let ca_cert = r.read("forward_proxy.ca_cert", optional_path);
    let ca_key = r.read("forward_proxy.ca_key", optional_path);
    // The CA files are only needed once the forward proxy runs; a fresh machine has none.
    if enabled == Some(true) {
        for (name, path) in [
            ("forward_proxy.ca_cert", &ca_cert),
            ("forward_proxy.ca_key", &ca_key),
        ] {
            match path {
                Some(Some(path)) => r.check_readable(name, path),
                Some(None) => {
                    let source = r.source(name);
                    r.fail(name, &source, "must be set when forward_proxy.enabled");
                }
                None => {}
            }
        }
    }
    let tunnel_allow = r.read("forward_proxy.tunnel_allow", |v| {
        let entries = expect_strings(v)?;
        for entry in &entries {
            tunnel_entry(entry)?;
        }
        Ok(entries)
    });
    if let (Some(entries), Some(addr)) = (&tunnel_allow, addr) {
        if entries.iter().any(|entry| entry == "*") && !is_loopback(&addr) {
            let source = r.source("forward_proxy.tunnel_allow");
            r.fail(
                "forward_proxy.tunnel_allow",
                &source,
                format!(
                    "\"*\" with the non-loopback forward_proxy.addr {addr} would be an open proxy"
                ),
            );
        }
    }
    Some(ForwardProxy {
        enabled: enabled?,
        addr: addr?,
        intercept_hosts: intercept_hosts?,
        ca_cert: ca_cert?.unwrap_or_default(),
        ca_key: ca_key?.unwrap_or_default(),
        tunnel_allow: tunnel_allow?,
    })
}

fn resolve_log(r: &mut Resolver) -> Option<Log> {
    let format = r.read("log.format", |v| choice(v, LogFormat::NAMES));
    let level = r.read("log.level", |v| choice(v, LogLevel::NAMES));
    Some(Log {
        format: format?,
        level: level?,
    })
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        toml_string(key)
    }
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(toml_string).collect();
    format!("[{}]", items.join(", "))
}

fn toml_path(path: Option<&Path>) -> String {
    toml_string(
        &path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

/// Hides the password (or a lone user part, which some clients treat as the password) in
/// `scheme://user:password@host/...`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user_info = match user_info.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}://{user_info}@{host}{tail}")
}

/// Writes `key = value  # source` lines.
struct Describer<'a> {
    out: String,
    sources: &'a BTreeMap<String, Source>,
}

impl Describer<'_> {
    fn section(&mut self, header: &str, source_key: Option<&str>) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        match source_key {
            Some(key) => self.commented(&format!("[{header}]"), key),
            None => self.out.push_str(&format!("[{header}]\n")),
        }
    }

    fn entry(&mut self, key: &str, value: &str, source_key: &str) {
        self.commented(&format!("{key} = {value}"), source_key);
    }

    fn commented(&mut self, text: &str, source_key: &str) {
        let source = self
            .sources
            .get(source_key)
            .map_or_else(|| Source::Default.to_string(), Source::to_string);
        self.out.push_str(&format!("{text:<40}  # {source}\n"));
    }
}

impl Loaded {
    /// The effective configuration as TOML that parses back to the same `Config`, every
    /// key followed by where its value came from. Passwords in URLs are shown as `***`.
    pub fn describe(&self) -> String {
        let mut d = Describer {
            out: String::new(),
            sources: &self.sources,
        };
        let mut section = "";
        for spec in KEYS {
            if spec.section() != section {
                section = spec.section();
                d.section(section, None);
            }
            if spec.name == "rate_limit.tenants" {
                self.describe_tenants(&mut d);
            } else if let Some(value) = effective_value(&self.config, spec.name) {
                d.entry(spec.key(), &value, spec.name);
            }
        }
        d.out
    }

    /// Tenants are written as `[rate_limit.tenants.<id>]` tables, which only parse back
    /// because `tenants` is the last key of `[rate_limit]` in KEYS.
    fn describe_tenants(&self, d: &mut Describer<'_>) {
        const NAME: &str = "rate_limit.tenants";
        let tenants = &self.config.rate_limit.tenants;
        if tenants.is_empty() {
            d.entry("tenants", "{}", NAME);
        }
        for (id, limit) in tenants {
            let key = format!("{NAME}.{}", toml_key(id));
            d.section(&key, Some(NAME));
            d.entry(
                "requests_per_second",
                &limit.requests_per_second.to_string(),
                &format!("{key}.requests_per_second"),
            );
            d.entry("burst", &limit.burst.to_string(), &format!("{key}.burst"));
        }
    }
}

/// One key's effective value written as TOML; `None` only for a name not in KEYS.
fn effective_value(c: &Config, name: &str) -> Option<String> {
    let ms = |duration: Duration| duration.as_millis().to_string();
    let tls = c.listen.tls.as_ref();
    let (u, rl, rw, fp) = (&c.upstream, &c.rate_limit, &c.rewrite, &c.forward_proxy);
    let value = match name {
        "listen.addr" => toml_string(&c.listen.addr.to_string()),
        "listen.tls_cert" => toml_path(tls.map(|t| t.cert.as_path())),
        "listen.tls_key" => toml_path(tls.map(|t| t.key.as_path())),
        "listen.public_base_url" => toml_string(&c.listen.public_base_url.to_string()),
        "listen.header_read_timeout_ms" => ms(c.listen.header_read_timeout),
        "listen.max_connections" => c.listen.max_connections.to_string(),
        "upstream.url" => toml_string(&u.url.to_string()),
        "upstream.ca_file" => toml_path(u.ca_file.as_deref()),
        "upstream.connect_timeout_ms" => ms(u.connect_timeout),
        "upstream.request_timeout_ms" => ms(u.request_timeout),
        "upstream.max_retries" => u.max_retries.to_string(),
        "upstream.retry_base_delay_ms" => ms(u.retry_base_delay),
        "upstream.retry_max_delay_ms" => ms(u.retry_max_delay),
        "upstream.proxy" => toml_string(&u.proxy.as_deref().map(redact_url).unwrap_or_default()),
        "immutable_id.mode" => toml_string(c.immutable_id.mode.as_str()),
        "immutable_id.skip" => toml_list(c.immutable_id.skip.iter().map(String::as_str)),
        "rate_limit.enabled" => rl.enabled.to_string(),
        "rate_limit.on_limit" => toml_string(rl.on_limit.as_str()),
        "rate_limit.max_wait_ms" => ms(rl.max_wait),
        "rate_limit.requests_per_second" => rl.requests_per_second.to_string(),
        "rate_limit.burst" => rl.burst.to_string(),
        "rate_limit.mailbox_concurrency" => rl.mailbox_concurrency.to_string(),
        "rate_limit.mailbox_requests_per_10min" => rl.mailbox_requests_per_10min.to_string(),
        "rewrite.enabled" => rw.enabled.to_string(),
        "rewrite.source_types" => toml_list(rw.source_types.iter().map(SourceType::as_str)),
        "rewrite.store" => toml_path(Some(&rw.store)),
        "rewrite.cache_capacity" => rw.cache_capacity.to_string(),
        "rewrite.negative_ttl_s" => rw.negative_ttl.as_secs().to_string(),
        "rewrite.batch_window_ms" => ms(rw.batch_window),
        "rewrite.max_body_bytes" => rw.max_body_bytes.to_string(),
        "rewrite.on_error" => toml_string(rw.on_error.as_str()),
        "rewrite.responses" => rw.responses.to_string(),
        "shared.backend" => toml_string(c.shared.backend.as_str()),
        "shared.redis_url" => toml_string(&redact_url(&c.shared.redis_url)),
        "forward_proxy.enabled" => fp.enabled.to_string(),
        "forward_proxy.addr" => toml_string(&fp.addr.to_string()),
        "forward_proxy.intercept_hosts" => toml_list(fp.intercept_hosts.iter().map(String::as_str)),
        "forward_proxy.ca_cert" => toml_path(Some(&fp.ca_cert)),
        "forward_proxy.ca_key" => toml_path(Some(&fp.ca_key)),
        "forward_proxy.tunnel_allow" => toml_list(fp.tunnel_allow.iter().map(String::as_str)),
        "admin.addr" => toml_string(&c.admin.addr.to_string()),
        "log.format" => toml_string(c.log.format.as_str()),
        "log.level" => toml_string(c.log.level.as_str()),
        _ => return None,
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(text: &str) -> Loaded {
        match parse_str(text, no_env(), &Overrides::default()) {
            Ok(loaded) => loaded,
            Err(errors) => panic!("expected a valid config, got:\n{errors}"),
        }
    }

    fn errors_with(text: &str, vars: &[(&str, &str)], overrides: &Overrides) -> Vec<String> {
        match parse_str(text, env(vars), overrides) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        errors_with(text, &[], &Overrides::default())
    }

    fn assert_error(text: &str, expected: &str) {
        let found = errors(text);
        assert!(
            found.iter().any(|e| e == expected),
            "expected {expected:?} among {found:?}"
        );
    }

    fn assert_error_starts(text: &str, expected: &str) {
        let found = errors(text);
        assert!(
            found.iter().any(|e| e.starts_with(expected)),
            "expected one starting {expected:?} among {found:?}"
        );
    }

    /// A file under the system temp dir, unique per test so parallel tests do not collide.
    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("idproxy-config-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("temp dir is writable in tests");
        path
    }

    fn missing_path(name: &str) -> String {
        std::env::temp_dir()
            .join(format!("idproxy-config-test-missing-{name}"))
            .display()
            .to_string()
    }

    #[test]
    fn empty_file_gives_built_in_defaults() {
        let loaded = parse("");
        let c = &loaded.config;
        assert_eq!(c.listen.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(c.listen.tls.is_none());
        assert_eq!(
            c.listen.public_base_url.to_string(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(c.listen.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.listen.max_connections.get(), 10_000);
        assert_eq!(c.upstream.url.to_string(), "https://graph.microsoft.com");
        assert!(c.upstream.url.is_https());
        assert_eq!(c.upstream.ca_file, None);
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(5_000));
        assert_eq!(c.upstream.request_timeout, Duration::from_millis(100_000));
        assert_eq!(c.upstream.max_retries, 3);
        assert_eq!(c.upstream.retry_base_delay, Duration::from_secs(3));
        assert_eq!(c.upstream.retry_max_delay, Duration::from_secs(180));
        assert_eq!(c.upstream.proxy, None);
        assert_eq!(c.immutable_id.mode, PreferMode::Force);
        assert!(c.immutable_id.skip.is_empty());
        assert!(c.rate_limit.enabled);
        assert_eq!(c.rate_limit.on_limit, OnLimit::Queue);
        assert_eq!(c.rate_limit.max_wait, Duration::from_secs(30));
        assert_eq!(c.rate_limit.requests_per_second.get(), 50);
        assert_eq!(c.rate_limit.burst.get(), 100);
        assert_eq!(c.rate_limit.mailbox_concurrency.get(), 4);
        assert_eq!(c.rate_limit.mailbox_requests_per_10min.get(), 10_000);
        assert!(c.rate_limit.tenants.is_empty());
        assert!(!c.rewrite.enabled);
        assert_eq!(
            c.rewrite.source_types,
            vec![SourceType::RestId, SourceType::EwsId, SourceType::EntryId]
        );
        assert_eq!(c.rewrite.store, PathBuf::from("data/idmap.redb"));
        assert_eq!(c.rewrite.cache_capacity.get(), 1_000_000);
        assert_eq!(c.rewrite.negative_ttl, Duration::from_secs(300));
        assert_eq!(c.rewrite.batch_window, Duration::from_millis(2));
        assert_eq!(c.rewrite.max_body_bytes.get(), 4_194_304);
        assert_eq!(c.rewrite.on_error, OnError::Pass);
        assert!(!c.rewrite.responses);
        assert_eq!(c.shared.backend, Backend::Memory);
        assert_eq!(c.shared.redis_url, "redis://127.0.0.1:6379");
        assert!(!c.forward_proxy.enabled);
        assert_eq!(c.forward_proxy.addr, "127.0.0.1:3128".parse().unwrap());
        assert_eq!(c.forward_proxy.intercept_hosts.len(), 4);
        assert_eq!(c.forward_proxy.ca_cert, PathBuf::from("certs/ca.pem"));
        assert_eq!(c.forward_proxy.ca_key, PathBuf::from("certs/ca-key.pem"));
        assert_eq!(
            c.forward_proxy.tunnel_allow,
            vec!["login.microsoftonline.com:443".to_string()]
        );
        assert_eq!(c.admin.addr, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, LogLevel::Info);
        assert_eq!(loaded.file, None);
        assert_eq!(loaded.sources.len(), KEYS.len());
        assert!(loaded.sources.values().all(|s| *s == Source::Default));
    }

    #[test]
    fn shipped_config_toml_works_as_is() {
        let loaded = parse(include_str!("../config.toml"));
        let c = &loaded.config;
        assert_eq!(c.listen.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            c.listen.public_base_url.to_string(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(c.upstream.url.to_string(), "https://graph.microsoft.com");
        assert_eq!(c.upstream.max_retries, 3);
        assert_eq!(c.rate_limit.burst.get(), 100);
        let example = &c.rate_limit.tenants["00000000-0000-0000-0000-000000000000"];
        assert_eq!(example.requests_per_second.get(), 10);
        assert_eq!(example.burst.get(), 20);
        assert_eq!(
            c.forward_proxy.intercept_hosts[3],
            "microsoftgraph.chinacloudapi.cn"
        );
        assert_eq!(c.log.level, LogLevel::Info);
        // Every key is written out, so a key added to KEYS must be documented in the file.
        for spec in KEYS {
            // The file leaves public_base_url empty, which asks for the derived default.
            let expected = if spec.name == "listen.public_base_url" {
                Source::Default
            } else {
                Source::File
            };
            assert_eq!(
                loaded.sources[spec.name], expected,
                "{} missing from config.toml",
                spec.name
            );
        }
    }

    #[test]
    fn shipped_config_toml_equals_built_in_defaults_apart_from_the_example_tenant() {
        let shipped = parse(include_str!("../config.toml"));
        let mut shipped_text = shipped.describe().replace("# file", "# default");
        let defaults = parse("").describe();
        let tenant = "[rate_limit.tenants.00000000-0000-0000-0000-000000000000]";
        let start = shipped_text.find(tenant).unwrap();
        let end = shipped_text.find("[rewrite]").unwrap();
        shipped_text.replace_range(start..end, "");
        let defaults = defaults.replace(&format!("{:<40}  # default\n", "tenants = {}"), "");
        assert_eq!(shipped_text, defaults);
    }

    #[test]
    fn zero_burst_is_rejected_with_its_key() {
        assert_eq!(
            errors("[rate_limit]\nburst = 0"),
            vec!["rate_limit.burst: must be greater than 0"]
        );
    }

    #[test]
    fn every_duration_size_and_rate_of_zero_is_an_error() {
        for spec in KEYS {
            if !matches!(spec.default, Builtin::Int(_)) || spec.name == "upstream.max_retries" {
                continue;
            }
            let text = format!("[{}]\n{} = 0", spec.section(), spec.key());
            assert_eq!(
                errors(&text),
                vec![format!("{}: must be greater than 0", spec.name)]
            );
        }
    }

    #[test]
    fn negative_numbers_are_errors_and_never_wrap() {
        assert_error(
            "[listen]\nmax_connections = -1",
            "listen.max_connections: must be greater than 0",
        );
        assert_error(
            "[upstream]\nconnect_timeout_ms = -5000",
            "upstream.connect_timeout_ms: must be greater than 0",
        );
        assert_error(
            "[rewrite]\nnegative_ttl_s = -9223372036854775808",
            "rewrite.negative_ttl_s: must be greater than 0",
        );
    }

    #[test]
    fn rates_beyond_u32_are_errors() {
        assert_error(
            "[rate_limit]\nrequests_per_second = 4294967296",
            "rate_limit.requests_per_second: must be at most 4294967295",
        );
    }

    #[test]
    fn absurd_durations_are_capped_at_a_year() {
        assert_error_starts(
            "[upstream]\nrequest_timeout_ms = 9223372036854775807",
            "upstream.request_timeout_ms: must be at most 31536000000",
        );
    }

    #[test]
    fn zero_max_retries_means_no_retries() {
        let loaded = parse("[upstream]\nmax_retries = 0");
        assert_eq!(loaded.config.upstream.max_retries, 0);
    }

    #[test]
    fn negative_max_retries_is_an_error() {
        assert_error_starts(
            "[upstream]\nmax_retries = -1",
            "upstream.max_retries: must not be negative",
        );
    }

    #[test]
    fn retry_cap_below_base_delay_is_an_error() {
        assert_error(
            "[upstream]\nretry_base_delay_ms = 5000\nretry_max_delay_ms = 1000",
            "upstream.retry_max_delay_ms: must be at least upstream.retry_base_delay_ms",
        );
    }

    #[test]
    fn misspelt_key_is_named_with_a_suggestion() {
        assert_eq!(
            errors("[listen]\nadress = \"127.0.0.1:1\""),
            vec!["listen.adress: unknown key (did you mean addr?)"]
        );
        assert_eq!(
            errors("[rate_limit]\nbrust = 5"),
            vec!["rate_limit.brust: unknown key (did you mean burst?)"]
        );
    }

    #[test]
    fn unrelated_unknown_key_gets_no_suggestion() {
        assert_eq!(
            errors("[log]\ncolour_scheme = \"dark\""),
            vec!["log.colour_scheme: unknown key"]
        );
    }

    #[test]
    fn unknown_section_is_an_error() {
        assert_eq!(
            errors("[lisen]\naddr = \"127.0.0.1:1\""),
            vec!["lisen: unknown section (did you mean [listen]?)"]
        );
        assert_eq!(errors("[metrics]\nx = 1"), vec!["metrics: unknown section"]);
    }

    #[test]
    fn section_written_as_a_plain_key_is_an_error() {
        assert_eq!(
            errors("log = \"debug\""),
            vec!["log: expected a table ([log]), found a string"]
        );
        assert_eq!(
            errors("[[listen]]\naddr = \"127.0.0.1:1\""),
            vec!["listen: expected a table ([listen]), found an array"]
        );
    }

    #[test]
    fn wrong_types_name_the_key_and_the_expected_type() {
        assert_error(
            "[rate_limit]\nburst = \"10\"",
            "rate_limit.burst: expected an integer, found a string",
        );
        assert_error(
            "[rate_limit]\nenabled = \"yes\"",
            "rate_limit.enabled: expected a boolean (true or false), found a string",
        );
        assert_error(
            "[listen]\naddr = 8080",
            "listen.addr: expected a string, found an integer",
        );
        assert_error(
            "[immutable_id]\nskip = \"*\"",
            "immutable_id.skip: expected an array of strings, found a string",
        );
        assert_error(
            "[immutable_id]\nskip = [\"a\", 1]",
            "immutable_id.skip: expected an array of strings, item 2 is an integer",
        );
        assert_error(
            "[rewrite]\nmax_body_bytes = 1.5",
            "rewrite.max_body_bytes: expected an integer, found a float",
        );
    }

    #[test]
    fn tls_cert_without_key_names_the_missing_key() {
        assert_eq!(
            errors("[listen]\ntls_cert = \"certs/server.pem\""),
            vec!["listen.tls_key: must be set when listen.tls_cert is set"]
        );
    }

    #[test]
    fn tls_key_without_cert_names_the_missing_key() {
        assert_eq!(
            errors("[listen]\ntls_key = \"certs/server-key.pem\""),
            vec!["listen.tls_cert: must be set when listen.tls_key is set"]
        );
    }

    #[test]
    fn unreadable_tls_files_are_errors_naming_each_key() {
        let text = format!(
            "[listen]\ntls_cert = {}\ntls_key = {}",
            toml_string(&missing_path("cert.pem")),
            toml_string(&missing_path("key.pem"))
        );
        let found = errors(&text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("listen.tls_cert: cannot read "));
        assert!(found[1].starts_with("listen.tls_key: cannot read "));
    }

    #[test]
    fn readable_tls_files_turn_tls_on_and_make_the_default_url_https() {
        let cert = temp_file("tls-cert.pem", "cert");
        let key = temp_file("tls-key.pem", "key");
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:8443\"\ntls_cert = {}\ntls_key = {}",
            toml_string(&cert.display().to_string()),
            toml_string(&key.display().to_string())
        );
        let loaded = parse(&text);
        let tls = loaded.config.listen.tls.as_ref().unwrap();
        assert_eq!(tls.cert, cert);
        assert_eq!(tls.key, key);
        assert_eq!(
            loaded.config.listen.public_base_url.to_string(),
            "https://127.0.0.1:8443"
        );
    }

    #[test]
    fn a_directory_is_not_a_readable_file() {
        let dir = std::env::temp_dir().display().to_string();
        let text = format!("[upstream]\nca_file = {}", toml_string(&dir));
        assert_error_starts(&text, "upstream.ca_file: ");
        assert!(errors(&text)[0].ends_with("is a directory"));
    }

    #[test]
    fn default_public_base_url_follows_listen_addr() {
        let loaded = parse("[listen]\naddr = \"[::1]:9000\"");
        assert_eq!(
            loaded.config.listen.public_base_url.to_string(),
            "http://[::1]:9000"
        );
        let wildcard = parse("[listen]\naddr = \"0.0.0.0:8080\"");
        assert_eq!(
            wildcard.config.listen.public_base_url.to_string(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn explicit_public_base_url_is_kept() {
        let loaded = parse("[listen]\npublic_base_url = \"https://proxy.internal:8443/\"");
        assert_eq!(
            loaded.config.listen.public_base_url.to_string(),
            "https://proxy.internal:8443"
        );
    }

    #[test]
    fn public_base_url_must_be_an_absolute_http_url_without_path_or_query() {
        for (url, why) in [
            ("proxy.internal:8080", "must be an absolute URL"),
            ("/v1.0", "must be an absolute URL"),
            ("ftp://proxy.internal", "scheme must be http or https"),
            ("http://proxy.internal/v1.0", "must not have a path"),
            ("http://proxy.internal/?a=1", "must not have a query"),
            ("http://proxy.internal/#top", "must not have a fragment"),
            ("http://:8080", "has no host"),
            ("http://proxy.internal:99999", "port \"99999\""),
            (
                "http://user:pw@proxy.internal",
                "must not contain a user name",
            ),
            ("not a url", "not a URL"),
        ] {
            let text = format!("[listen]\npublic_base_url = {}", toml_string(url));
            assert_error_starts(&text, &format!("listen.public_base_url: {why}"));
        }
    }

    #[test]
    fn upstream_url_must_be_an_origin() {
        assert_error_starts(
            "[upstream]\nurl = \"https://graph.microsoft.com/v1.0\"",
            "upstream.url: must not have a path",
        );
        assert_error_starts("[upstream]\nurl = \"\"", "upstream.url: ");
    }

    #[test]
    fn origin_parses_and_displays_scheme_and_authority() {
        let origin = Origin::parse("HTTP://127.0.0.1:3000/").unwrap();
        assert_eq!(origin.to_string(), "http://127.0.0.1:3000");
        assert!(!origin.is_https());
        assert!(Origin::parse("https://graph.microsoft.us")
            .unwrap()
            .is_https());
    }

    #[test]
    fn empty_ca_file_and_proxy_mean_unset() {
        let loaded = parse("[upstream]\nca_file = \"\"\nproxy = \"\"");
        assert_eq!(loaded.config.upstream.ca_file, None);
        assert_eq!(loaded.config.upstream.proxy, None);
    }

    #[test]
    fn missing_ca_file_is_an_error() {
        let text = format!(
            "[upstream]\nca_file = {}",
            toml_string(&missing_path("ca.pem"))
        );
        assert_error_starts(&text, "upstream.ca_file: cannot read ");
    }

    #[test]
    fn readable_ca_file_is_kept() {
        let ca = temp_file("upstream-ca.pem", "roots");
        let text = format!(
            "[upstream]\nca_file = {}",
            toml_string(&ca.display().to_string())
        );
        assert_eq!(parse(&text).config.upstream.ca_file, Some(ca));
    }

    #[test]
    fn upstream_proxy_is_kept_and_checked() {
        let loaded = parse("[upstream]\nproxy = \"http://proxy.corp:3128\"");
        assert_eq!(
            loaded.config.upstream.proxy.as_deref(),
            Some("http://proxy.corp:3128")
        );
        assert_error(
            "[upstream]\nproxy = \"socks5://proxy.corp:1080\"",
            "upstream.proxy: proxy scheme must be http or https",
        );
    }

    #[test]
    fn forward_proxy_ca_files_are_only_checked_when_enabled() {
        let text = format!(
            "[forward_proxy]\nca_cert = {}\nca_key = {}",
            toml_string(&missing_path("fp-ca.pem")),
            toml_string(&missing_path("fp-ca-key.pem"))
        );
        assert!(!parse(&text).config.forward_proxy.enabled);
        let enabled = format!("{text}\nenabled = true");
        let found = errors(&enabled);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("forward_proxy.ca_cert: cannot read "));
        assert!(found[1].starts_with("forward_proxy.ca_key: cannot read "));
    }

    #[test]
    fn enabled_forward_proxy_with_readable_ca_loads() {
        let cert = temp_file("fp-ca.pem", "ca");
        let key = temp_file("fp-ca-key.pem", "key");
        let text = format!(
            "[forward_proxy]\nenabled = true\nca_cert = {}\nca_key = {}",
            toml_string(&cert.display().to_string()),
            toml_string(&key.display().to_string())
        );
        let loaded = parse(&text);
        assert!(loaded.config.forward_proxy.enabled);
        assert_eq!(loaded.config.forward_proxy.ca_cert, cert);
    }

    #[test]
    fn enum_values_outside_their_choices_are_errors() {
        for (text, expected) in [
            (
                "[immutable_id]\nmode = \"always\"",
                "immutable_id.mode: must be one of force, respect (found \"always\")",
            ),
            (
                "[rate_limit]\non_limit = \"drop\"",
                "rate_limit.on_limit: must be one of queue, reject (found \"drop\")",
            ),
            (
                "[rewrite]\non_error = \"ignore\"",
                "rewrite.on_error: must be one of pass, fail (found \"ignore\")",
            ),
            (
                "[shared]\nbackend = \"etcd\"",
                "shared.backend: must be one of memory, redis (found \"etcd\")",
            ),
            (
                "[log]\nformat = \"xml\"",
                "log.format: must be one of text, json (found \"xml\")",
            ),
            (
                "[log]\nlevel = \"verbose\"",
                "log.level: must be one of error, warn, info, debug, trace (found \"verbose\")",
            ),
            (
                "[rewrite]\nsource_types = [\"restId\", \"immutableId\"]",
                "rewrite.source_types: must be one of restId, ewsId, entryId (found \"immutableId\")",
            ),
        ] {
            assert_eq!(errors(text), vec![expected.to_string()]);
        }
    }

    #[test]
    fn enum_values_are_case_insensitive_and_source_types_deduplicated() {
        let loaded = parse(
            "[log]\nlevel = \"DEBUG\"\n[rewrite]\nsource_types = [\"ewsId\", \"EWSID\", \"restId\"]",
        );
        assert_eq!(loaded.config.log.level, LogLevel::Debug);
        assert_eq!(
            loaded.config.rewrite.source_types,
            vec![SourceType::EwsId, SourceType::RestId]
        );
    }

    #[test]
    fn log_level_spells_itself_as_in_the_file() {
        assert_eq!(LogLevel::Warn.as_str(), "warn");
        assert_eq!(LogLevel::Trace.as_str(), "trace");
        assert_eq!(SourceType::EntryId.as_str(), "entryId");
    }

    #[test]
    fn redis_url_needs_a_redis_scheme() {
        assert_error(
            "[shared]\nredis_url = \"http://127.0.0.1:6379\"",
            "shared.redis_url: must start with redis:// or rediss://",
        );
        let loaded = parse("[shared]\nbackend = \"redis\"\nredis_url = \"rediss://cache:6380/0\"");
        assert_eq!(loaded.config.shared.backend, Backend::Redis);
        assert_eq!(loaded.config.shared.redis_url, "rediss://cache:6380/0");
    }

    #[test]
    fn wildcard_tunnel_on_a_public_address_is_an_open_proxy() {
        assert_error_starts(
            "[forward_proxy]\naddr = \"0.0.0.0:3128\"\ntunnel_allow = [\"*\"]",
            "forward_proxy.tunnel_allow: \"*\" with the non-loopback forward_proxy.addr 0.0.0.0:3128",
        );
    }

    #[test]
    fn wildcard_tunnel_on_loopback_is_allowed() {
        let loaded = parse("[forward_proxy]\naddr = \"[::1]:3128\"\ntunnel_allow = [\"*\"]");
        assert_eq!(
            loaded.config.forward_proxy.tunnel_allow,
            vec!["*".to_string()]
        );
    }

    #[test]
    fn tunnel_entries_must_be_host_and_port() {
        for entry in [
            "login.microsoftonline.com",
            "host:0",
            "host:https",
            ":443",
            "*.microsoft.com:443",
        ] {
            let text = format!("[forward_proxy]\ntunnel_allow = [{}]", toml_string(entry));
            assert_eq!(
                errors(&text),
                vec![format!(
                    "forward_proxy.tunnel_allow: {entry:?} is not host:port or \"*\""
                )]
            );
        }
    }

    #[test]
    fn intercept_hosts_must_be_plain_host_names() {
        assert_error(
            "[forward_proxy]\nintercept_hosts = [\"graph.microsoft.com:443\"]",
            "forward_proxy.intercept_hosts: \"graph.microsoft.com:443\" is not a plain host name",
        );
    }

    #[test]
    fn addresses_must_be_socket_addresses() {
        assert_error(
            "[listen]\naddr = \"localhost:8080\"",
            "listen.addr: not a socket address (host:port)",
        );
        assert_error(
            "[admin]\naddr = \"9090\"",
            "admin.addr: not a socket address (host:port)",
        );
    }

    #[test]
    fn tenant_overrides_inherit_the_section_defaults() {
        let loaded = parse(
            "[rate_limit]\nrequests_per_second = 40\nburst = 80\n\
             [rate_limit.tenants.contoso]\nburst = 5\n\
             [rate_limit.tenants.\"fabrikam\"]\nrequests_per_second = 7\n\
             [rate_limit.tenants.empty]\n",
        );
        let tenants = &loaded.config.rate_limit.tenants;
        assert_eq!(tenants["contoso"].requests_per_second.get(), 40);
        assert_eq!(tenants["contoso"].burst.get(), 5);
        assert_eq!(tenants["fabrikam"].requests_per_second.get(), 7);
        assert_eq!(tenants["fabrikam"].burst.get(), 80);
        assert_eq!(tenants["empty"].burst.get(), 80);
        assert_eq!(
            loaded.sources["rate_limit.tenants.contoso.burst"],
            Source::File
        );
        assert_eq!(
            loaded.sources["rate_limit.tenants.contoso.requests_per_second"],
            Source::Default
        );
    }

    #[test]
    fn tenant_problems_name_the_tenant_key() {
        let found = errors(
            "[rate_limit.tenants.\"\"]\nburst = 1\n\
             [rate_limit.tenants.t1]\nburst = 0\nbrust = 3\n\
             [rate_limit]\ntenants.t2 = 5\n",
        );
        assert_eq!(
            found,
            vec![
                "rate_limit.tenants.\"\": tenant id must not be empty",
                "rate_limit.tenants.t1.brust: unknown key (did you mean burst?)",
                "rate_limit.tenants.t1.burst: must be greater than 0",
                "rate_limit.tenants.t2: expected a table like { requests_per_second = 10, burst = 20 }, found an integer",
            ]
        );
    }

    #[test]
    fn env_beats_the_file() {
        let loaded = parse_str(
            "[rate_limit]\nburst = 10\nrequests_per_second = 3",
            env(&[("IDPROXY__RATE_LIMIT__BURST", "5"), ("PATH", "/bin")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(loaded.config.rate_limit.burst.get(), 5);
        assert_eq!(loaded.config.rate_limit.requests_per_second.get(), 3);
        assert_eq!(
            loaded.sources["rate_limit.burst"],
            Source::Env("IDPROXY__RATE_LIMIT__BURST".to_string())
        );
        assert_eq!(
            loaded.sources["rate_limit.requests_per_second"],
            Source::File
        );
    }

    #[test]
    fn env_section_and_key_are_case_insensitive() {
        let loaded = parse_str(
            "",
            env(&[("IDPROXY__log__Level", "debug")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(loaded.config.log.level, LogLevel::Debug);
    }

    #[test]
    fn env_values_take_plain_strings_toml_arrays_and_comma_lists() {
        let loaded = parse_str(
            "",
            env(&[
                ("IDPROXY__LISTEN__ADDR", "0.0.0.0:80"),
                ("IDPROXY__UPSTREAM__URL", "\"http://127.0.0.1:5000\""),
                (
                    "IDPROXY__IMMUTABLE_ID__SKIP",
                    "[\"*$search=*\", \"*/photo/*\"]",
                ),
                (
                    "IDPROXY__FORWARD_PROXY__TUNNEL_ALLOW",
                    "a.example:443, b.example:443",
                ),
                ("IDPROXY__REWRITE__ENABLED", "true"),
                ("IDPROXY__REWRITE__STORE", "123"),
                ("IDPROXY__UPSTREAM__PROXY", ""),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        let c = &loaded.config;
        assert_eq!(c.listen.addr, "0.0.0.0:80".parse().unwrap());
        assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:5000");
        assert_eq!(c.immutable_id.skip, vec!["*$search=*", "*/photo/*"]);
        assert_eq!(
            c.forward_proxy.tunnel_allow,
            vec!["a.example:443", "b.example:443"]
        );
        assert!(c.rewrite.enabled);
        assert_eq!(c.rewrite.store, PathBuf::from("123"));
        assert_eq!(c.upstream.proxy, None);
    }

    #[test]
    fn env_inline_table_sets_tenants() {
        let loaded = parse_str(
            include_str!("../config.toml"),
            env(&[(
                "IDPROXY__RATE_LIMIT__TENANTS",
                "{ \"t-1\" = { burst = 3 }, t2 = { requests_per_second = 9 } }",
            )]),
            &Overrides::default(),
        )
        .unwrap();
        let tenants = &loaded.config.rate_limit.tenants;
        assert_eq!(tenants.len(), 2, "the variable replaces the file's table");
        assert_eq!(tenants["t-1"].burst.get(), 3);
        assert_eq!(tenants["t2"].requests_per_second.get(), 9);
        assert_eq!(
            loaded.sources["rate_limit.tenants.t2.requests_per_second"],
            Source::Env("IDPROXY__RATE_LIMIT__TENANTS".to_string())
        );
    }

    #[test]
    fn unknown_env_variable_is_named() {
        let found = errors_with(
            "",
            &[
                ("IDPROXY__LISTEN__ADRESS", "127.0.0.1:1"),
                ("IDPROXY__LSTEN__ADDR", "127.0.0.1:1"),
                ("IDPROXY__NOPE", "1"),
                ("OTHER__LISTEN__ADDR", "ignored"),
            ],
            &Overrides::default(),
        );
        assert_eq!(
            found,
            vec![
                "IDPROXY__LISTEN__ADRESS: unknown setting (did you mean IDPROXY__LISTEN__ADDR?)",
                "IDPROXY__LSTEN__ADDR: unknown setting (did you mean IDPROXY__LISTEN__ADDR?)",
                "IDPROXY__NOPE: unknown setting: no section \"nope\" (use IDPROXY__SECTION__KEY)",
            ]
        );
    }

    #[test]
    fn bad_env_value_names_the_key_and_the_variable() {
        assert_eq!(
            errors_with("", &[("IDPROXY__RATE_LIMIT__BURST", "lots")], &Overrides::default()),
            vec!["rate_limit.burst: expected an integer, found a string (from IDPROXY__RATE_LIMIT__BURST)"]
        );
        assert_eq!(
            errors_with(
                "",
                &[("IDPROXY__RATE_LIMIT__BURST", "-5")],
                &Overrides::default()
            ),
            vec!["rate_limit.burst: must be greater than 0 (from IDPROXY__RATE_LIMIT__BURST)"]
        );
    }

    #[test]
    fn flags_beat_env_and_file() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".to_string()),
            upstream: Some("http://127.0.0.1:7001".to_string()),
        };
        let loaded = parse_str(
            "[listen]\naddr = \"127.0.0.1:1000\"\n[upstream]\nurl = \"https://graph.microsoft.us\"",
            env(&[
                ("IDPROXY__LISTEN__ADDR", "127.0.0.1:2000"),
                ("IDPROXY__UPSTREAM__URL", "https://example.com"),
            ]),
            &overrides,
        )
        .unwrap();
        assert_eq!(loaded.config.listen.addr, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(
            loaded.config.upstream.url.to_string(),
            "http://127.0.0.1:7001"
        );
        assert_eq!(loaded.sources["listen.addr"], Source::Flag("--listen"));
        assert_eq!(loaded.sources["upstream.url"], Source::Flag("--upstream"));
        assert_eq!(
            loaded.config.listen.public_base_url.to_string(),
            "http://127.0.0.1:7000",
            "the derived URL follows the flag"
        );
    }

    #[test]
    fn bad_flag_value_names_the_key_and_the_flag() {
        let overrides = Overrides {
            listen: Some("nowhere".to_string()),
            upstream: None,
        };
        assert_eq!(
            errors_with("", &[], &overrides),
            vec!["listen.addr: not a socket address (host:port) (from --listen)"]
        );
    }

    #[test]
    fn describe_knows_every_key() {
        let config = parse("").config;
        for spec in KEYS {
            if spec.name != "rate_limit.tenants" {
                assert!(
                    effective_value(&config, spec.name).is_some(),
                    "{}",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn describe_shows_every_source_and_redacts_secrets() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".to_string()),
            upstream: None,
        };
        let loaded = parse_str(
            "[shared]\nredis_url = \"redis://app:s3cret@cache:6379/0\"\n\
             [upstream]\nproxy = \"http://me:pa55@proxy.corp:3128\"",
            env(&[("IDPROXY__RATE_LIMIT__BURST", "5")]),
            &overrides,
        )
        .unwrap();
        let text = loaded.describe();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("pa55"), "{text}");
        let line = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("no {key} in\n{text}"))
                .to_string()
        };
        assert!(line("redis_url").starts_with("redis_url = \"redis://app:***@cache:6379/0\""));
        assert!(line("redis_url").ends_with("# file"));
        assert!(line("proxy").contains("http://me:***@proxy.corp:3128"));
        assert!(line("burst").ends_with("# env IDPROXY__RATE_LIMIT__BURST"));
        assert!(line("addr").ends_with("# flag --listen"));
        assert!(line("max_wait_ms").ends_with("# default"));
        assert!(line("tenants").starts_with("tenants = {}"));
    }

    fn without_sources(text: &str) -> String {
        text.lines()
            .map(|line| line.split("  # ").next().unwrap_or(line).trim_end())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn describe_output_parses_back_to_the_same_config() {
        let original = parse_str(
            include_str!("../config.toml"),
            env(&[
                ("IDPROXY__IMMUTABLE_ID__SKIP", "a\"b,c\\d"),
                (
                    "IDPROXY__RATE_LIMIT__TENANTS",
                    "{ \"odd id.x\" = { burst = 2 } }",
                ),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        let reparsed = parse(&original.describe());
        assert_eq!(
            without_sources(&reparsed.describe()),
            without_sources(&original.describe())
        );
        assert_eq!(reparsed.config.immutable_id.skip, vec!["a\"b", "c\\d"]);
        assert_eq!(
            reparsed.config.rate_limit.tenants["odd id.x"].burst.get(),
            2
        );
        for spec in KEYS {
            assert_eq!(reparsed.sources[spec.name], Source::File, "{}", spec.name);
        }
    }

    #[test]
    fn a_file_with_several_errors_reports_all_of_them() {
        let found = errors(
            "[listen]\naddr = \"nope\"\nadress = 1\n\
             [rate_limit]\nburst = 0\non_limit = \"drop\"\n\
             [log]\nlevel = 3\n\
             [extra]\n",
        );
        assert_eq!(
            found,
            vec![
                "extra: unknown section",
                "listen.adress: unknown key (did you mean addr?)",
                "listen.addr: not a socket address (host:port)",
                "rate_limit.on_limit: must be one of queue, reject (found \"drop\")",
                "rate_limit.burst: must be greater than 0",
                "log.level: expected a string, found an integer",
            ]
        );
    }

    #[test]
    fn errors_display_one_per_line() {
        let errors = ConfigErrors(vec![
            ConfigError::new("a.b", "bad"),
            ConfigError::new("c", "worse"),
        ]);
        assert_eq!(errors.to_string(), "a.b: bad\nc: worse");
    }

    #[test]
    fn toml_syntax_error_gives_line_and_column() {
        assert_eq!(
            errors("[listen]\naddr = \n"),
            vec!["config: invalid TOML at line 2, column 8: string values must be quoted, expected literal string"]
        );
    }

    #[test]
    fn syntax_error_still_reports_bad_env() {
        let found = errors_with("[listen", &[("IDPROXY__X__Y", "1")], &Overrides::default());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("config: invalid TOML at line 1"));
        assert!(found[1].starts_with("IDPROXY__X__Y: unknown setting"));
    }

    #[test]
    fn odd_toml_never_panics() {
        let shipped = include_str!("../config.toml");
        let mut checked = 0;
        for (i, _) in shipped.char_indices().step_by(5) {
            let mut mutated = shipped.to_string();
            mutated.remove(i);
            match parse_str(&mutated, no_env(), &Overrides::default()) {
                Ok(loaded) => assert!(loaded.sources.len() >= KEYS.len()),
                Err(errors) => assert!(!errors.0.is_empty()),
            }
            checked += 1;
        }
        assert!(checked > 100);
        for text in [
            "a = 1979-05-27T07:32:00Z",
            "[listen]\naddr = 1979-05-27",
            "[rate_limit]\ntenants = [1, 2]",
            &"[x]\ny = ".repeat(3),
            &format!("v = {}{}", "[".repeat(200), "]".repeat(200)),
            "\u{feff}[log]\nlevel = \"info\"",
        ] {
            if let Err(errors) = parse_str(text, no_env(), &Overrides::default()) {
                assert!(!errors.0.is_empty());
            }
        }
    }

    #[test]
    fn missing_default_file_means_built_in_defaults() {
        let loaded = load_with_default(
            None,
            Path::new(&missing_path("config.toml")),
            no_env(),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(loaded.file, None);
        assert_eq!(loaded.config.rate_limit.burst.get(), 100);
    }

    #[test]
    fn named_file_that_cannot_be_read_is_a_config_error() {
        let path = missing_path("named.toml");
        let errors = load(Some(Path::new(&path)), no_env(), &Overrides::default()).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].key, "config");
        assert!(errors.0[0].why.starts_with(&format!("cannot read {path}")));
    }

    #[test]
    fn named_file_is_read_and_remembered() {
        let path = temp_file("named.toml", "[log]\nformat = \"json\"\n");
        let loaded = load(Some(&path), no_env(), &Overrides::default()).unwrap();
        assert_eq!(loaded.file, Some(path));
        assert_eq!(loaded.config.log.format, LogFormat::Json);
        assert_eq!(loaded.sources["log.format"], Source::File);
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://token@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("redis://u:p@h/x@y"), "redis://u:***@h/x@y");
    }
}
