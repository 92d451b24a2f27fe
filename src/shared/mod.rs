//! State shared by replicas (`shared.backend = "redis"`): the rate-limit buckets, in-flight
//! leases and penalty box (`limits.rs`), and the regular->immutable ID map (`ids.rs`), kept in
//! one Redis so N replicas enforce one quota and pay for a translation once.
//!
//! This file is the Redis handle every shared part uses: one pipelined connection
//! (`connection.rs`, RESP2 in `resp.rs`), each call under `CALL_TIMEOUT`, server-side scripts
//! run with EVALSHA (loaded on first use, and again after NOSCRIPT), and the up/down state.
//! A call that fails or times out marks Redis down: the caller falls back to its local state
//! for that request (and counts it in `idproxy_redis_fallback_total`), later calls fall back
//! at once without waiting, the change is logged once, `idproxy_redis_up` drops to 0, and a
//! background task reconnects with backoff.
//!
//! Must not: stop or slow the proxy when Redis is down or slow (no call waits longer than
//! `CALL_TIMEOUT`, none at all while down), log the URL's password, or spin on reconnects.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

mod connection;
pub mod ids;
pub mod limits;
pub mod resp;

pub use connection::{Target, UrlError};
pub use ids::SharedIds;
pub use limits::SharedLimits;
use resp::{Command, Value};

use connection::Connection;

/// Longest a request waits for Redis before it uses local state instead. Redis answers a
/// script in well under a millisecond on a healthy network; a call this slow means Redis is
/// overloaded or unreachable, and waiting longer would hold up every request.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(200);

/// Connecting and logging in, done off the request path.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Reconnect delays double from the first to the last, with ±25% jitter so replicas do not
/// reconnect in step after an outage.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A connection that breaks sooner than this after it was made keeps the backoff growing,
/// so a flapping Redis is retried (and logged) at most every `MAX_BACKOFF`.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Why a Redis call gave no usable answer. Every variant means "use local state for this".
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("Redis is marked down (reconnecting in the background)")]
    Down,
    #[error("Redis did not answer within the call timeout")]
    Timeout,
    #[error("the connection to Redis was lost")]
    Lost,
    #[error("cannot connect to Redis")]
    Io(#[source] std::io::Error),
    /// An error reply: the connection is fine, the command was not.
    #[error("Redis refused the command: {0}")]
    Refused(String),
    #[error("Redis answered in an unexpected shape: {0}")]
    Unexpected(&'static str),
}

/// A Lua script run with EVALSHA. `name` only labels it in logs.
pub struct Script {
    pub name: &'static str,
    pub source: &'static str,
}

/// The handle to the shared Redis. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Read on every request; the state lock is only taken to get the connection.
    up: AtomicBool,
    /// Script name -> SHA1 as Redis reported it on SCRIPT LOAD.
    scripts: Mutex<HashMap<&'static str, Bytes>>,
    /// The runtime `start` ran on (the main one): reconnects run there, not on the worker
    /// whose request noticed the outage, so the connection outlives any one worker.
    home: std::sync::OnceLock<tokio::runtime::Handle>,
}

struct State {
    current: Option<(u64, Connection)>,
    next_serial: u64,
    reconnecting: bool,
    connected_at: Option<Instant>,
    backoff: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every state change is a single assignment; a panic elsewhere leaves it usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Redis {
    /// Reads `shared.redis_url`; connects nothing yet (see `start`).
    pub fn new(redis_url: &str, metrics: Arc<Metrics>) -> Result<Redis, UrlError> {
        let target = Target::parse(redis_url)?;
        metrics.redis_up.set(0);
        Ok(Redis {
            inner: Arc::new(Inner {
                target,
                metrics,
                state: Mutex::new(State {
                    current: None,
                    next_serial: 0,
                    reconnecting: false,
                    connected_at: None,
                    backoff: FIRST_BACKOFF,
                }),
                up: AtomicBool::new(false),
                scripts: Mutex::new(HashMap::new()),
                home: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Connects once (within `CONNECT_TIMEOUT`), before the proxy serves, so the first
    /// requests already share state. When Redis is not there the proxy starts anyway, on
    /// local state, and keeps trying in the background.
    pub async fn start(&self) {
        let _ = self.inner.home.set(tokio::runtime::Handle::current());
        {
            let mut state = lock(&self.inner.state);
            if state.reconnecting || state.current.is_some() {
                return;
            }
            state.reconnecting = true;
        }
        match Inner::connect(&self.inner).await {
            Ok(()) => {}
            Err(e) => {
                warn!(
                    redis = %self.target_label(),
                    error = %error_chain(&e),
                    "Redis unreachable at start: limits and the ID map are local to this replica until it answers"
                );
                let delay = lock(&self.inner.state).backoff;
                tokio::spawn(reconnect(Arc::downgrade(&self.inner), delay));
            }
        }
    }

    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Counts one decision made on local state because Redis could not be used.
    pub fn fell_back(&self) {
        self.inner.metrics.redis_fallback.inc();
    }

    /// host:port, for logs (never the password).
    pub fn target_label(&self) -> String {
        format!("{}:{}", self.inner.target.host, self.inner.target.port)
    }

    /// Sends `commands` as one pipeline and returns their replies (error replies included,
    /// as `Value::Error`).
    pub async fn query(&self, commands: &[Command]) -> Result<Vec<Value>, RedisError> {
        let (serial, connection) = self.connection()?;
        let replies = match connection.send(commands) {
            Ok(replies) => replies,
            Err(e) => {
                self.inner.lost(serial, &e);
                return Err(e);
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, replies).await {
            Ok(Ok(values)) if values.len() == commands.len() => Ok(values),
            Ok(Ok(_)) => Err(RedisError::Unexpected("reply count")),
            Ok(Err(_)) => {
                self.inner.lost(serial, &RedisError::Lost);
                Err(RedisError::Lost)
            }
            Err(_) => {
                self.inner.lost(serial, &RedisError::Timeout);
                Err(RedisError::Timeout)
            }
        }
    }

    /// One command; an error reply becomes `RedisError::Refused`.
    pub async fn call(&self, command: Command) -> Result<Value, RedisError> {
        let mut replies = self.query(std::slice::from_ref(&command)).await?;
        match replies.pop() {
            Some(Value::Error(message)) => Err(RedisError::Refused(message)),
            Some(value) => Ok(value),
            None => Err(RedisError::Unexpected("no reply")),
        }
    }

    /// Queues `commands` and does not wait: lease releases from `Drop`. Silently nothing
    /// while Redis is down (what they would undo expires by itself).
    pub fn send_and_forget(&self, commands: &[Command]) {
        let Ok((serial, connection)) = self.connection() else {
            return;
        };
        if let Err(e) = connection.send_and_forget(commands) {
            self.inner.lost(serial, &e);
        }
    }

    /// Runs `script` with EVALSHA, loading it first when this process has not yet (or Redis
    /// lost it: NOSCRIPT after a restart or SCRIPT FLUSH).
    pub async fn eval(
        &self,
        script: &Script,
        keys: &[Bytes],
        args: &[Bytes],
    ) -> Result<Value, RedisError> {
        let known = lock(&self.inner.scripts).get(script.name).cloned();
        let sha = match known {
            Some(sha) => sha,
            None => self.load(script).await?,
        };
        match self.evalsha(&sha, keys, args).await {
            Err(RedisError::Refused(message)) if message.starts_with("NOSCRIPT") => {
                let sha = self.load(script).await?;
                self.evalsha(&sha, keys, args).await
            }
            other => other,
        }
    }

    async fn evalsha(
        &self,
        sha: &Bytes,
        keys: &[Bytes],
        args: &[Bytes],
    ) -> Result<Value, RedisError> {
        let command = Command::new("EVALSHA")
            .arg(sha.clone())
            .num(keys.len())
            .args(keys.iter().cloned())
            .args(args.iter().cloned());
        self.call(command).await
    }

    async fn load(&self, script: &Script) -> Result<Bytes, RedisError> {
        let reply = self
            .call(Command::new("SCRIPT").arg("LOAD").arg(script.source))
            .await?;
        let sha = match reply {
            Value::Bulk(sha) => sha,
            _ => return Err(RedisError::Unexpected("SCRIPT LOAD did not return a SHA")),
        };
        debug!(script = script.name, "Redis script loaded");
        lock(&self.inner.scripts).insert(script.name, sha.clone());
        Ok(sha)
    }

    fn connection(&self) -> Result<(u64, Connection), RedisError> {
        if !self.is_up() {
            return Err(RedisError::Down);
        }
        let found = lock(&self.inner.state).current.clone();
        match found {
            Some((serial, connection)) if !connection.is_closed() => Ok((serial, connection)),
            Some((serial, _)) => {
                self.inner.lost(serial, &RedisError::Lost);
                Err(RedisError::Lost)
            }
            None => Err(RedisError::Down),
        }
    }
}

impl Inner {
    /// Opens a connection and makes it the current one.
    async fn connect(self: &Arc<Self>) -> Result<(), RedisError> {
        let serial = {
            let mut state = lock(&self.state);
            state.next_serial = state.next_serial.wrapping_add(1);
            state.next_serial
        };
        let weak = Arc::downgrade(self);
        let connection = Connection::open(&self.target, CONNECT_TIMEOUT, move || {
            if let Some(inner) = weak.upgrade() {
                inner.lost(serial, &RedisError::Lost);
            }
        })
        .await?;
        let was_down_before = {
            let mut state = lock(&self.state);
            state.current = Some((serial, connection));
            state.reconnecting = false;
            state.connected_at = Some(Instant::now());
            serial > 1
        };
        self.up.store(true, Ordering::Relaxed);
        self.metrics.redis_up.set(1);
        if was_down_before {
            info!(redis = %format!("{}:{}", self.target.host, self.target.port), "Redis reachable again: limits and the ID map are shared again");
        } else {
            info!(redis = %format!("{}:{}", self.target.host, self.target.port), "connected to Redis: limits and the ID map are shared");
        }
        Ok(())
    }

    /// Connection `serial` failed: mark Redis down (logged once per outage) and reconnect
    /// in the background. A failure of an older connection changes nothing.
    fn lost(self: &Arc<Self>, serial: u64, why: &RedisError) {
        let delay = {
            let mut state = lock(&self.state);
            if state.current.as_ref().map(|(s, _)| *s) != Some(serial) {
                return;
            }
            state.current = None;
            let flapping = state
                .connected_at
                .is_some_and(|at| at.elapsed() < STABLE_AFTER);
            state.backoff = if flapping {
                (state.backoff * 2).min(MAX_BACKOFF)
            } else {
                FIRST_BACKOFF
            };
            if state.reconnecting {
                return;
            }
            state.reconnecting = true;
            state.backoff
        };
        self.up.store(false, Ordering::Relaxed);
        self.metrics.redis_up.set(0);
        warn!(
            redis = %format!("{}:{}", self.target.host, self.target.port),
            error = %error_chain(why),
            "Redis unavailable: falling back to local limits and the local ID store; reconnecting in the background"
        );
        let runtime = self
            .home
            .get()
            .cloned()
            .or_else(|| tokio::runtime::Handle::try_current().ok());
        if let Some(runtime) = runtime {
            runtime.spawn(reconnect(Arc::downgrade(self), delay));
        }
    }
}

/// Tries until a connection is made (or the proxy is gone), each wait longer than the last.
async fn reconnect(inner: Weak<Inner>, first: Duration) {
    let mut delay = first;
    loop {
        tokio::time::sleep(jittered(delay)).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        match Inner::connect(&strong).await {
            Ok(()) => return,
            Err(e) => {
                debug!(error = %error_chain(&e), "Redis reconnect failed; trying again");
                delay = (delay * 2).min(MAX_BACKOFF);
                lock(&strong.state).backoff = delay;
            }
        }
    }
}

/// `delay` ±25%.
fn jittered(delay: Duration) -> Duration {
    let random = RandomState::new().hash_one(Instant::now());
    let quarter = delay / 4;
    let span = u64::try_from(quarter.as_micros())
        .unwrap_or(0)
        .saturating_mul(2);
    let offset = if span == 0 { 0 } else { random % span };
    (delay - quarter) + Duration::from_micros(offset)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_quarter_either_way() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(400));
            assert!(
                d >= Duration::from_millis(300) && d < Duration::from_millis(500),
                "{d:?}"
            );
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_replica_with_no_redis_is_down_and_calls_fail_at_once() {
        // Port 1 on loopback: nothing listens there, so the connect is refused at once.
        let metrics = Arc::new(Metrics::new());
        let redis = Redis::new("redis://127.0.0.1:1", metrics.clone()).unwrap();
        redis.start().await;
        assert!(!redis.is_up());
        assert_eq!(metrics.redis_up.get(), 0);
        let error = redis.call(Command::new("PING")).await.unwrap_err();
        assert!(matches!(error, RedisError::Down), "{error}");
        redis.send_and_forget(&[Command::new("PING")]);
    }

    #[test]
    fn tls_urls_are_refused_before_anything_connects() {
        let e = Redis::new("rediss://h:6380", Arc::new(Metrics::new())).err();
        assert_eq!(e, Some(UrlError::Tls));
    }
}
