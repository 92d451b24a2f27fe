//! One pipelined connection to Redis: requests are written in the order they are sent, and
//! replies (which Redis returns in the same order) are handed back to whoever waits for
//! them. One task owns the socket; callers only touch a channel, so sending never blocks and
//! works from `Drop`.
//!
//! Must not: hand a reply to the wrong caller (a waiter is queued before its bytes are
//! written, so order holds even when a caller stops waiting), keep a broken socket (any I/O
//! or protocol error ends the task, and every caller still waiting learns it), or log a
//! password.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::resp::{self, Command, Value};
use super::RedisError;

/// Requests already queued are written together, up to about this many bytes per write.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Where Redis is and how to log in, from `shared.redis_url`.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

/// Why `shared.redis_url` cannot be used (the config check already ensured the scheme).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "shared.redis_url: rediss:// (TLS) is not supported by this build; use redis:// \
         (on a trusted network, or through a local TLS tunnel such as stunnel)"
    )]
    Tls,
    #[error("shared.redis_url: {0}")]
    Bad(&'static str),
}

impl Target {
    /// `redis://[[user]:password@]host[:port][/db]`.
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let url = url.trim();
        if url.starts_with("rediss://") {
            return Err(UrlError::Tls);
        }
        let rest = url
            .strip_prefix("redis://")
            .ok_or(UrlError::Bad("must start with redis://"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.find(':') {
                    Some(at) => (&info[..at], Some(&info[at + 1..])),
                    None => ("", Some(info)),
                };
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|s| s.into_owned())
                        .map_err(|_| UrlError::Bad("user or password is not UTF-8"))
                };
                let user = Some(decode(user)?).filter(|u| !u.is_empty());
                let password = password.map(decode).transpose()?;
                (user, password)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or(UrlError::Bad("unclosed [ in the host"))?;
            let port = v6[end + 1..].strip_prefix(':');
            (&v6[..end], port)
        } else {
            match hostport.rfind(':') {
                Some(at) => (&hostport[..at], Some(&hostport[at + 1..])),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::Bad("has no host"));
        }
        let port = match port {
            None | Some("") => 6379,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or(UrlError::Bad("port is not a number from 1 to 65535"))?,
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        let db = if path.is_empty() {
            0
        } else {
            path.parse()
                .map_err(|_| UrlError::Bad("the path must be a database number"))?
        };
        Ok(Target {
            host: host.to_owned(),
            port,
            user,
            password,
            db,
        })
    }
}

/// What a caller waits on: every reply of its commands, in order.
pub type Replies = oneshot::Receiver<Vec<Value>>;

struct Request {
    frame: BytesMut,
    replies: usize,
    /// `None`: fire and forget (a lease release); its replies are read and dropped.
    reply: Option<oneshot::Sender<Vec<Value>>>,
}

struct Waiter {
    remaining: usize,
    got: Vec<Value>,
    reply: Option<oneshot::Sender<Vec<Value>>>,
}

type Pending = Arc<Mutex<VecDeque<Waiter>>>;

fn lock(pending: &Pending) -> MutexGuard<'_, VecDeque<Waiter>> {
    // The queue is consistent between statements; a panic elsewhere leaves it usable.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A live connection. Dropping every clone closes the socket once queued requests are
/// written.
#[derive(Clone)]
pub struct Connection {
    tx: mpsc::UnboundedSender<Request>,
}

impl Connection {
    /// Connects within `timeout`, logs in, selects the database and checks the server
    /// answers. `on_end` runs when the connection breaks or closes.
    pub async fn open(
        target: &Target,
        timeout: Duration,
        on_end: impl FnOnce() + Send + 'static,
    ) -> Result<Connection, RedisError> {
        let connect = TcpStream::connect((target.host.as_str(), target.port));
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| RedisError::Timeout)?
            .map_err(RedisError::Io)?;
        // Verdicts are tiny; Nagle would hold each one back for an ACK.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            tokio::select! {
                () = read_replies(read, Arc::clone(&pending)) => {}
                () = write_requests(write, rx, Arc::clone(&pending)) => {}
            }
            // Waiters still queued get their senders dropped: "connection lost".
            lock(&pending).clear();
            on_end();
        });
        let connection = Connection { tx };

        let mut hello = Vec::new();
        if let Some(password) = &target.password {
            let auth = match &target.user {
                Some(user) => Command::new("AUTH").arg(user.clone()),
                None => Command::new("AUTH"),
            };
            hello.push(auth.arg(password.clone()));
        }
        if target.db != 0 {
            hello.push(Command::new("SELECT").num(target.db));
        }
        hello.push(Command::new("PING"));
        let replies = connection.send(&hello)?;
        let replies = tokio::time::timeout(timeout, replies)
            .await
            .map_err(|_| RedisError::Timeout)?
            .map_err(|_| RedisError::Lost)?;
        if let Some(Value::Error(message)) = replies.iter().find(|r| matches!(r, Value::Error(_))) {
            return Err(RedisError::Refused(message.clone()));
        }
        Ok(connection)
    }

    /// Queues `commands` as one pipeline; the receiver yields all their replies.
    pub fn send(&self, commands: &[Command]) -> Result<Replies, RedisError> {
        let (reply, replies) = oneshot::channel();
        self.queue(commands, Some(reply))?;
        Ok(replies)
    }

    /// Queues `commands` without waiting for their replies.
    pub fn send_and_forget(&self, commands: &[Command]) -> Result<(), RedisError> {
        self.queue(commands, None)
    }

    fn queue(
        &self,
        commands: &[Command],
        reply: Option<oneshot::Sender<Vec<Value>>>,
    ) -> Result<(), RedisError> {
        if commands.is_empty() {
            if let Some(reply) = reply {
                let _ = reply.send(Vec::new());
            }
            return Ok(());
        }
        let mut frame = BytesMut::new();
        for command in commands {
            command.encode(&mut frame);
        }
        self.tx
            .send(Request {
                frame,
                replies: commands.len(),
                reply,
            })
            .map_err(|_| RedisError::Lost)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

async fn write_requests(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Request>,
    pending: Pending,
) {
    let mut out = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(request) = next.take() {
            // Queued before its bytes leave, so its replies can never arrive first.
            lock(&pending).push_back(Waiter {
                remaining: request.replies,
                got: Vec::with_capacity(request.replies),
                reply: request.reply,
            });
            out.extend_from_slice(&request.frame);
            if out.len() < WRITE_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
    // Every handle is gone: a polite close lets Redis free the client at once.
    let _ = write.shutdown().await;
}

async fn read_replies(mut read: OwnedReadHalf, pending: Pending) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let (value, used) = match resp::parse(&buf) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "Redis sent bytes that are not RESP2; reconnecting");
                    return;
                }
            };
            buf.advance(used);
            let mut queue = lock(&pending);
            let Some(waiter) = queue.front_mut() else {
                // A reply nobody asked for: the stream is out of step.
                return;
            };
            waiter.got.push(value);
            waiter.remaining = waiter.remaining.saturating_sub(1);
            if waiter.remaining == 0 {
                if let Some(done) = queue.pop_front() {
                    drop(queue);
                    if let Some(reply) = done.reply {
                        // The caller may have stopped waiting (timeout): nothing to do.
                        let _ = reply.send(done.got);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_takes_the_default_port_and_database() {
        let t = Target::parse("redis://cache.internal").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.db, t.user, t.password),
            ("cache.internal", 6379, 0, None, None)
        );
    }

    #[test]
    fn user_password_port_and_database_are_read() {
        let t = Target::parse("redis://app:p%40ss@10.0.0.5:6380/2").unwrap();
        assert_eq!(t.host, "10.0.0.5");
        assert_eq!(t.port, 6380);
        assert_eq!(t.db, 2);
        assert_eq!(t.user.as_deref(), Some("app"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        let t = Target::parse("redis://:secret@h").unwrap();
        assert_eq!((t.user, t.password.as_deref()), (None, Some("secret")));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let t = Target::parse("redis://[::1]:7000").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 7000));
        let t = Target::parse("redis://[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 6379));
    }

    #[test]
    fn tls_and_broken_urls_are_refused_naming_the_key() {
        let tls = Target::parse("rediss://cache:6380").unwrap_err();
        assert_eq!(tls, UrlError::Tls);
        assert!(tls.to_string().starts_with("shared.redis_url: rediss://"));
        for bad in [
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h/x",
            "redis://[::1",
            "http://h",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("shared.redis_url: "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let t = Target::parse("redis://u:hunter2@h").unwrap();
        let text = format!("{t:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
