//! Blind tunnels: bytes between the app and a `tunnel_allow` host, in both directions,
//! untouched.
//!
//! The proxy never looks inside (the login endpoint's TLS is between the app and Microsoft).
//! The peer is connected before the app hears 200, so a host that does not answer becomes
//! a 504 after `upstream.connect_timeout` instead of a tunnel that hangs.

use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("{target} did not accept a connection within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which `host:port` pairs may be tunnelled.
#[derive(Debug, Clone)]
pub enum TunnelAllow {
    Any,
    /// Lower-case `host` (IPv6 in brackets, as in the CONNECT line) and port.
    Only(Vec<(String, u16)>),
}

impl TunnelAllow {
    /// From validated `tunnel_allow` entries (`host:port` or `*`).
    pub fn new(entries: &[String]) -> TunnelAllow {
        if entries.iter().any(|e| e == "*") {
            return TunnelAllow::Any;
        }
        TunnelAllow::Only(
            entries
                .iter()
                .filter_map(|e| {
                    let (host, port) = e.rsplit_once(':')?;
                    Some((host.to_ascii_lowercase(), port.parse().ok()?))
                })
                .collect(),
        )
    }

    pub fn allows(&self, host: &str, port: u16) -> bool {
        match self {
            TunnelAllow::Any => true,
            TunnelAllow::Only(entries) => entries
                .iter()
                .any(|(h, p)| *p == port && h.eq_ignore_ascii_case(host)),
        }
    }
}

/// Resolves and connects to the peer, all within `timeout`.
pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, TunnelError> {
    let target = format!("{host}:{port}");
    // The CONNECT line writes IPv6 literals in brackets; the resolver wants them bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(timeout, TcpStream::connect((bare, port))).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(TunnelError::Connect { target, source }),
        Err(_) => Err(TunnelError::Timeout { target, timeout }),
    }
}

/// Copies both ways until both sides are done. When one side stops sending, the other
/// side's write half is shut down, so a client that half-closes still gets its answer.
pub async fn splice(app: Upgraded, mut peer: TcpStream) {
    let mut app = TokioIo::new(app);
    match tokio::io::copy_bidirectional(&mut app, &mut peer).await {
        Ok((up, down)) => debug!(bytes_up = up, bytes_down = down, "tunnel closed"),
        Err(e) => debug!(error = %e, "tunnel ended with an error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_host_and_port_pairs_are_allowed() {
        let allow = TunnelAllow::new(&[
            "login.microsoftonline.com:443".to_owned(),
            "[::1]:8443".to_owned(),
        ]);
        assert!(allow.allows("LOGIN.microsoftonline.com", 443));
        assert!(!allow.allows("login.microsoftonline.com", 80));
        assert!(!allow.allows("example.org", 443));
        assert!(allow.allows("[::1]", 8443));
        assert!(TunnelAllow::new(&["*".to_owned()]).allows("example.org", 22));
        assert!(!TunnelAllow::new(&[]).allows("example.org", 443));
    }

    #[tokio::test]
    async fn a_refused_connection_names_its_target() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = connect("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, TunnelError::Connect { .. }));
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
    }
}
