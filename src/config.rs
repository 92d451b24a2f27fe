//! Configuration: `config.toml`, `IDPROXY__SECTION__KEY` environment overrides and the
//! `--listen` / `--upstream` flags, parsed into validated types before any port is bound.
//!
//! Nothing here opens a socket. Every problem found is collected and reported as
//! `key: why`, so one run of `check` lists them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

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
