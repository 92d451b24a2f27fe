//! `immutable-id-proxy probe [URL]`: one plain-HTTP GET, for health checks in an image that
//! has no shell and no curl (`HEALTHCHECK CMD ["/immutable-id-proxy", "probe"]`, a
//! Kubernetes exec probe).
//!
//! It speaks only plain HTTP/1.1, the admin listener's protocol, to one URL; it follows no
//! redirect, reads no body and never touches the proxy's config or state. A 2xx answer is
//! healthy, anything else (another status, no connection, no answer in time) is not.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

/// The admin listener's readiness route at its shipped address: the Dockerfile's
/// HEALTHCHECK relies on this default, so it needs no argument.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090/readyz";

/// Long enough for a loaded proxy to answer, short enough to fit inside Docker's and
/// Kubernetes' own probe timeouts, which then report the failure.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("not a plain http://host[:port][/path] URL: {0}")]
    BadUrl(String),
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Where the probe connects and what it asks for, taken apart before any socket is opened.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port` as `ToSocketAddrs` takes it (an IPv6 host keeps its brackets).
    pub authority: String,
    /// The Host header: the URL's authority as written.
    pub host: String,
    pub path_and_query: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, ProbeError> {
        let bad = || ProbeError::BadUrl(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(bad());
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(Target {
            authority: format!("{}:{port}", authority.host()),
            host: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// The status `url` answers a GET with, within `timeout` (connecting included).
pub async fn probe(url: &str, timeout: Duration) -> Result<StatusCode, ProbeError> {
    let target = Target::parse(url)?;
    tokio::time::timeout(timeout, exchange(&target))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

async fn exchange(target: &Target) -> Result<StatusCode, ProbeError> {
    let stream = tokio::net::TcpStream::connect(target.authority.as_str())
        .await
        .map_err(|source| ProbeError::Connect {
            authority: target.authority.clone(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(ProbeError::Http)?;
    // The connection task ends with the exchange; its own error, if any, surfaces through
    // send_request below.
    tokio::spawn(connection);
    let request = Request::get(target.path_and_query.as_str())
        .header(header::HOST, target.host.as_str())
        .header(header::USER_AGENT, "immutable-id-proxy-probe")
        .body(Empty::new())
        .map_err(|_| ProbeError::BadUrl(target.path_and_query.clone()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(ProbeError::Http)?;
    Ok(response.status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot server that answers the first request with `status_line`, and hands back
    /// the request it read.
    async fn answering(status_line: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/readyz", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed before sending its headers");
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = format!("HTTP/1.1 {status_line}\r\ncontent-length: 0\r\n\r\n");
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        (url, server)
    }

    #[test]
    fn default_url_is_the_admin_readiness_route() {
        let target = Target::parse(DEFAULT_URL).unwrap();
        assert_eq!(target.authority, "127.0.0.1:9090");
        assert_eq!(target.path_and_query, "/readyz");
    }

    #[test]
    fn a_url_without_port_or_path_means_port_80_and_slash() {
        let target = Target::parse("http://localhost").unwrap();
        assert_eq!(
            target,
            Target {
                authority: "localhost:80".into(),
                host: "localhost".into(),
                path_and_query: "/".into(),
            }
        );
    }

    #[test]
    fn an_ipv6_host_keeps_its_brackets_so_it_can_be_connected_to() {
        let target = Target::parse("http://[::1]:9090/healthz?x=1").unwrap();
        assert_eq!(target.authority, "[::1]:9090");
        assert_eq!(target.path_and_query, "/healthz?x=1");
        assert!(std::net::ToSocketAddrs::to_socket_addrs(target.authority.as_str()).is_ok());
    }

    #[test]
    fn https_relative_and_userinfo_urls_are_refused() {
        for url in [
            "https://127.0.0.1:9090/readyz",
            "/readyz",
            "127.0.0.1:9090",
            "http://user:pw@127.0.0.1:9090/",
            "not a url",
        ] {
            assert!(
                matches!(Target::parse(url), Err(ProbeError::BadUrl(_))),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn a_2xx_answer_is_returned_and_the_request_names_path_and_host() {
        let (url, server) = answering("200 OK").await;
        assert_eq!(probe(&url, DEFAULT_TIMEOUT).await.unwrap(), StatusCode::OK);
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
        let host = url
            .trim_start_matches("http://")
            .trim_end_matches("/readyz");
        assert!(
            request
                .to_ascii_lowercase()
                .contains(&format!("host: {host}\r\n")),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_draining_proxys_503_is_returned_as_such() {
        let (url, _server) = answering("503 Service Unavailable").await;
        assert_eq!(
            probe(&url, DEFAULT_TIMEOUT).await.unwrap(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = probe(&format!("http://{addr}/readyz"), DEFAULT_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProbeError::Connect { authority, .. } if *authority == addr.to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/readyz", listener.local_addr().unwrap());
        let timeout = Duration::from_millis(200);
        let err = probe(&url, timeout).await.unwrap_err();
        assert!(
            matches!(err, ProbeError::Timeout(t) if t == timeout),
            "{err}"
        );
        drop(listener);
    }
}
