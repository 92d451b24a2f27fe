//! Listeners: accept connections, terminate TLS, speak HTTP/1.1 and HTTP/2, drain on
//! shutdown.
//!
//! The accept loop never dies on one bad connection: accept errors are logged and, when the
//! process is out of descriptors, briefly backed off. TLS handshakes run inside each
//! connection's own task under a deadline, so a slow or garbage handshake holds up nobody.
//! The service is handed already-bound listeners: tests bind 127.0.0.1:0 and read the port.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument};

use crate::metrics::Gauge;

/// How long in-flight requests may take to finish once shutdown starts.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Also bounds the TLS handshake: a client that has not finished it by then is closed.
    pub header_read_timeout: Duration,
    /// Beyond this many open connections, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    pub drain_grace: Duration,
    /// Raised for each accepted connection while it is open (`idproxy_client_connections`);
    /// `None` for listeners whose connections are not counted (admin, simulator).
    pub open_connections: Option<Arc<Gauge>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            drain_grace: DRAIN_GRACE,
            open_connections: None,
        }
    }
}

/// One open connection in the gauge, counted out when the connection's task ends however it
/// ends (closed, reset, failed handshake, dropped at shutdown).
struct OpenConnection(Arc<Gauge>);

impl OpenConnection {
    fn new(gauge: Arc<Gauge>) -> OpenConnection {
        gauge.add(1);
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// What a handler learns about the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Serves `handler` on `listener` until `shutdown` resolves, then stops accepting and gives
/// in-flight requests `drain_grace` to finish.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);

    loop {
        // Wait for a free slot before accepting, so excess clients queue in the backlog
        // instead of costing us memory.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    back_off_after_accept_error(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let counted = options.open_connections.clone().map(OpenConnection::new);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let handler = handler.clone();
        let handshake_timeout = options.header_read_timeout;
        let span = tracing::debug_span!("conn", peer = %addr);
        let peer = Peer {
            addr,
            tls: tls.is_some(),
        };
        let service = service_fn(move |req| {
            // Boxed: hyper keeps room for one in-flight service future in every
            // connection, idle or not, and the pipeline's future is several KiB.
            // One allocation per request is cheaper than that room per idle client.
            let fut = Box::pin(handler(req, peer));
            async move { Ok::<_, Infallible>(fut.await) }
        });
        // Two tasks of different types: a plain connection's task then has no room for
        // a TLS stream and its handshake.
        match tls {
            None => {
                tokio::spawn(
                    async move {
                        let _permit = permit;
                        let _counted = counted;
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        log_end(watcher.watch(conn).await);
                    }
                    .instrument(span),
                );
            }
            Some(acceptor) => {
                tokio::spawn(
                    async move {
                        let _permit = permit;
                        let _counted = counted;
                        let handshake =
                            tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                        let stream = match handshake {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                debug!("TLS handshake timed out");
                                return;
                            }
                        };
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        log_end(watcher.watch(conn).await);
                    }
                    .instrument(span),
                );
            }
        }
    }

    drop(listener);
    let open = graceful.count();
    if open > 0 {
        info!(connections = open, "draining");
    }
    if tokio::time::timeout(options.drain_grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(grace = ?options.drain_grace, "drain grace ran out; closing remaining connections");
    }
}

fn log_end<E: std::fmt::Display>(result: Result<(), E>) {
    if let Err(e) = result {
        // Resets, timeouts and malformed requests: the client's business.
        debug!(error = %e, "connection ended with an error");
    }
}

async fn back_off_after_accept_error(e: &std::io::Error) {
    // EMFILE/ENFILE (out of descriptors) and ENOBUFS/ENOMEM persist until something closes;
    // spinning on them would burn a core. Other errors concern one connection only.
    let pressure = matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12));
    if pressure {
        warn!(error = %e, "accept failed; backing off");
        tokio::time::sleep(Duration::from_millis(50)).await;
    } else {
        debug!(error = %e, "accept failed");
    }
}
