//! Drop-in mode: the listener apps reach through `HTTPS_PROXY`, for apps that have
//! `https://graph.microsoft.com` compiled in.
//!
//! ```text
//!   CONNECT host:port ─┬─ host in intercept_hosts ─▶ 200, TLS with a leaf for host (mint.rs),
//!                      │                              HTTP/1.1 or h2 inside, each request
//!                      │                              through pipeline::Proxy::handle
//!                      ├─ host:port in tunnel_allow ─▶ connect, 200, blind bytes (tunnel.rs)
//!                      └─ anything else ─────────────▶ 403 in Graph's error shape
//!   GET http://host/…  ─── host intercepted ─────────▶ the pipeline; otherwise 403
//! ```
//!
//! Intercepted requests take exactly the path reverse-proxied ones do (header, limits, ID
//! rewriting, retries); only links are left as Graph wrote them, since the app already
//! believes it talks to Graph. This module never registers itself as anyone's system proxy
//! and never hands out the CA's private key. `client_setup.rs` holds the `certs bundle` and
//! `env` commands that tell client stacks how to use it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument};

use crate::body::ProxyBody;
use crate::config::{Config, Origin};
use crate::errors::{graph_error, ProxyError};
use crate::metrics::Metrics;
use crate::pipeline::{Proxy, Route};
use crate::server::{self, Peer, ServeOptions};

pub mod client_setup;
pub mod mint;
pub mod tunnel;

pub use mint::{LeafMint, MintError};
use tunnel::TunnelAllow;

/// What `upstream.url` is unless configured: intercepted requests then go to the host the
/// app asked for, so a `graph.microsoft.us` app stays in its national cloud.
const DEFAULT_UPSTREAM: &str = "graph.microsoft.com";

pub struct ForwardProxy {
    proxy: Arc<Proxy>,
    mint: Arc<LeafMint>,
    /// Lower-case host names whose TLS is terminated here.
    intercept: Vec<String>,
    tunnel_allow: TunnelAllow,
    /// `upstream.url` when it is not the default (tests point it at the simulator).
    fixed_upstream: Option<Origin>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Serves HTTP/1.1 and h2 inside intercepted TLS.
    inner: auto::Builder<TokioExecutor>,
    /// Intercepted connections live past their CONNECT request, so the listener's own drain
    /// does not see them; this one does. Taken (None) once draining started.
    intercepted: Mutex<Option<GracefulShutdown>>,
}

impl ForwardProxy {
    pub fn new(config: &Config, proxy: Arc<Proxy>, mint: Arc<LeafMint>) -> ForwardProxy {
        let upstream = &config.upstream.url;
        let is_default = upstream.scheme == Scheme::HTTPS
            && upstream
                .authority
                .host()
                .eq_ignore_ascii_case(DEFAULT_UPSTREAM)
            && upstream.authority.port_u16().is_none_or(|p| p == 443);
        let mut inner = auto::Builder::new(TokioExecutor::new());
        inner
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.listen.header_read_timeout);
        inner.http2().timer(TokioTimer::new());
        let metrics = proxy.metrics.clone();
        ForwardProxy {
            proxy,
            mint,
            intercept: config
                .forward_proxy
                .intercept_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            tunnel_allow: TunnelAllow::new(&config.forward_proxy.tunnel_allow),
            fixed_upstream: (!is_default).then(|| upstream.clone()),
            connect_timeout: config.upstream.connect_timeout,
            handshake_timeout: config.listen.header_read_timeout,
            metrics,
            inner,
            intercepted: Mutex::new(Some(GracefulShutdown::new())),
        }
    }

    /// Serves `listener` until `shutdown`, then drains intercepted connections too.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        options: ServeOptions,
        shutdown: impl Future<Output = ()>,
    ) {
        let grace = options.drain_grace;
        let this = self.clone();
        server::serve(
            listener,
            None,
            move |req, peer| this.clone().handle(req, peer),
            // CONNECT tunnels are HTTP/1.1 upgrades.
            ServeOptions {
                upgrades: true,
                ..options
            },
            shutdown,
        )
        .await;
        let intercepted = self
            .intercepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(graceful) = intercepted {
            if tokio::time::timeout(grace, graceful.shutdown())
                .await
                .is_err()
            {
                warn!(
                    ?grace,
                    "drain grace ran out; closing intercepted connections"
                );
            }
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            return self.connect(req, peer).await;
        }
        // A plain-HTTP request in absolute form (`GET http://graph.microsoft.com/...`): the
        // app has no TLS to us, but an intercepted host still gets the whole pipeline.
        let host = req.uri().host().map(str::to_ascii_lowercase);
        match host {
            Some(host) if self.is_intercepted(&host) => {
                let origin = self.origin_for(&host, None);
                self.proxy
                    .clone()
                    .handle(req, Route::Intercepted(origin))
                    .await
            }
            Some(host) => {
                info!(%host, "plain request for a host that is not intercepted; refused");
                self.refuse()
            }
            None => refusal(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "This is a forward proxy: send CONNECT host:port or an absolute URL.",
            ),
        }
    }

    async fn connect(self: Arc<Self>, req: Request<Incoming>, peer: Peer) -> Response<ProxyBody> {
        let Some((host, port)) = connect_target(req.uri().authority()) else {
            debug!(target = %req.uri(), "CONNECT target is not host:port");
            return refusal(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The CONNECT target must be host:port.",
            );
        };
        if self.is_intercepted(&host) {
            self.metrics.tunnels.inc("intercepted");
            let origin = self.origin_for(&host, Some(port));
            let span = tracing::debug_span!("intercepted", peer = %peer.addr, %host);
            tokio::spawn(self.intercept(req, host, origin).instrument(span));
            return Response::new(ProxyBody::Empty);
        }
        if !self.tunnel_allow.allows(&host, port) {
            info!(%host, port, "CONNECT to a host that is neither intercepted nor allowed; refused");
            return self.refuse();
        }
        let peer_stream = match tunnel::connect(&host, port, self.connect_timeout).await {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "tunnel peer unreachable");
                let (status, code) = match e {
                    tunnel::TunnelError::Timeout { .. } => {
                        (StatusCode::GATEWAY_TIMEOUT, "GatewayTimeout")
                    }
                    tunnel::TunnelError::Connect { .. } => (StatusCode::BAD_GATEWAY, "BadGateway"),
                };
                return refusal(
                    status,
                    code,
                    "The proxy could not reach the requested host.",
                );
            }
        };
        self.metrics.tunnels.inc("tunneled");
        let span = tracing::debug_span!("tunnel", peer = %peer.addr, %host, port);
        tokio::spawn(
            async move {
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => tunnel::splice(upgraded, peer_stream).await,
                    Err(e) => debug!(error = %e, "CONNECT upgrade failed"),
                }
            }
            .instrument(span),
        );
        Response::new(ProxyBody::Empty)
    }

    /// Terminates the app's TLS with a leaf for `host` and serves what comes inside.
    async fn intercept(self: Arc<Self>, req: Request<Incoming>, host: String, origin: Origin) {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                debug!(error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        let config = match self.mint.server_config(&host) {
            Ok(config) => config,
            Err(e) => {
                warn!(error = %e, "no certificate for an intercepted host");
                return;
            }
        };
        let handshake = TlsAcceptor::from(config).accept(TokioIo::new(upgraded));
        let tls = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // Most often a client that does not trust our CA: its business, not ours.
                debug!(error = %e, "TLS handshake inside CONNECT failed");
                return;
            }
            Err(_) => {
                debug!("TLS handshake inside CONNECT timed out");
                return;
            }
        };
        let proxy = self.proxy.clone();
        let service = service_fn(move |req| {
            let response = proxy
                .clone()
                .handle(req, Route::Intercepted(origin.clone()));
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let conn = self
            .inner
            .serve_connection(TokioIo::new(tls), service)
            .into_owned();
        let watcher = self
            .intercepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(GracefulShutdown::watcher);
        let result = match watcher {
            Some(watcher) => watcher.watch(conn).await,
            // Draining already: serve what the app sent, accept nothing new on it.
            None => {
                let mut conn = std::pin::pin!(conn);
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            debug!(error = %e, "intercepted connection ended with an error");
        }
    }

    fn is_intercepted(&self, host: &str) -> bool {
        self.intercept.iter().any(|h| h == host)
    }

    /// Where an intercepted request goes: the fixed upstream when one is configured,
    /// otherwise `https://host` (with the CONNECT port when it is not 443).
    fn origin_for(&self, host: &str, port: Option<u16>) -> Origin {
        if let Some(fixed) = &self.fixed_upstream {
            return fixed.clone();
        }
        let authority = match port {
            Some(port) if port != 443 => format!("{host}:{port}"),
            _ => host.to_owned(),
        };
        Origin {
            scheme: Scheme::HTTPS,
            // `host` came out of a parsed authority, so it parses again; the fallback only
            // keeps this total.
            authority: authority
                .parse()
                .unwrap_or_else(|_| Authority::from_static(DEFAULT_UPSTREAM)),
        }
    }

    fn refuse(&self) -> Response<ProxyBody> {
        self.metrics.tunnels.inc("refused");
        ProxyError::Forbidden.into_response(&uuid::Uuid::new_v4().to_string())
    }
}

/// `host:port` of a CONNECT line, host lower-cased. None when either part is missing.
fn connect_target(authority: Option<&Authority>) -> Option<(String, u16)> {
    let authority = authority?;
    let port = authority.port_u16().filter(|&p| p != 0)?;
    let host = authority.host();
    if host.is_empty() || authority.as_str().contains('@') {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    graph_error(status, code, message, &uuid::Uuid::new_v4().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Option<(String, u16)> {
        let uri: http::Uri = text.parse().ok()?;
        connect_target(uri.authority())
    }

    #[test]
    fn a_connect_target_needs_a_host_and_a_port() {
        assert_eq!(
            target("Graph.Microsoft.com:443"),
            Some(("graph.microsoft.com".to_owned(), 443))
        );
        assert_eq!(target("[::1]:8443"), Some(("[::1]".to_owned(), 8443)));
        assert_eq!(target("graph.microsoft.com"), None);
        assert_eq!(target("graph.microsoft.com:0"), None);
        assert_eq!(target("user@graph.microsoft.com:443"), None);
        assert_eq!(target("/v1.0/me"), None);
    }
}
