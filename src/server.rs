//! Listeners: accept connections, terminate TLS, speak HTTP/1.1 and HTTP/2, drain on
//! shutdown.
//!
//! The accept loop never dies on one bad connection: accept errors are logged and, when the
//! process is out of descriptors, briefly backed off. TLS handshakes run inside each
//! connection's own task under a deadline, so a slow or garbage handshake holds up nobody.
//! The service is handed already-bound listeners: tests bind 127.0.0.1:0 and read the port.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::OptionFuture;
use futures_util::FutureExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
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
    /// Whether HTTP/1.1 connections may be upgraded (CONNECT tunnels of the drop-in
    /// listener). Without upgrades, a connection is served by the one protocol it speaks,
    /// told by ALPN or by its first bytes.
    pub upgrades: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            drain_grace: DRAIN_GRACE,
            open_connections: None,
            upgrades: false,
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
/// in-flight requests `drain_grace` to finish. Connections run on the calling runtime.
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
    let connections = Connections::new(tls, handler, &options);
    accept_until(&listener, &options, shutdown, |accepted| {
        connections.spawn(accepted)
    })
    .await;
    drop(listener);
    connections.drain(options.drain_grace).await;
}

thread_local! {
    /// Which worker of `serve_workers` this thread is, if it is one.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// How many worker threads `serve_workers` starts: one per core this process may use.
pub fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// The index (below `worker_count()`) of the `serve_workers` thread running this code, or
/// `None` on any other thread. Lets a component keep per-worker state (the upstream pool)
/// that no other thread touches.
pub fn worker_index() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// Threads that each run their own single-threaded runtime, like nginx's worker
/// processes: a connection and everything it starts (its requests, their upstream
/// connections and timers) stay on one thread, so no request pays for waking or stealing
/// work across threads. Started (runtimes built) before the proxy says it listens; each
/// then runs the one job `serve_workers` gives it.
pub struct Workers {
    threads: Vec<WorkerThread>,
}

struct WorkerThread {
    job: oneshot::Sender<Job>,
    finished: oneshot::Receiver<()>,
}

/// Made on the worker's thread, so the future itself need not be `Send`.
type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

impl Workers {
    /// `worker_count()` threads with their runtimes built. A thread or runtime that cannot
    /// start is logged and left out; with none, `serve_workers` serves from the caller's
    /// runtime.
    pub async fn start() -> Workers {
        let mut threads = Vec::new();
        for index in 0..worker_count() {
            let (job, next_job) = oneshot::channel::<Job>();
            let (done, finished) = oneshot::channel::<()>();
            let (ready, is_ready) = oneshot::channel::<()>();
            let started = std::thread::Builder::new()
                .name(format!("idproxy-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(index)));
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            warn!(error = %e, worker = index, "cannot start a worker's runtime");
                            return;
                        }
                    };
                    let _ = ready.send(());
                    runtime.block_on(async move {
                        // Err: the pool was dropped unused.
                        if let Ok(job) = next_job.await {
                            job().await;
                        }
                    });
                    // Ends what the drained connections left on this runtime (idle
                    // upstream connections and their reaper) before saying so.
                    drop(runtime);
                    drop(done);
                });
            if let Err(e) = started {
                warn!(error = %e, worker = index, "cannot start a worker thread");
                continue;
            }
            // Err: the runtime could not be built (logged by the thread).
            if is_ready.await.is_ok() {
                threads.push(WorkerThread { job, finished });
            }
        }
        Workers { threads }
    }
}

/// As `serve`, but the connections run on `workers`. The calling runtime accepts and hands
/// each connection to the worker with the fewest open ones, which keeps the cores evenly
/// loaded even when all clients connect at once.
pub async fn serve_workers<H, F, B>(
    workers: Workers,
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
    let mut serving = Vec::new();
    for (index, thread) in workers.threads.into_iter().enumerate() {
        let (to_worker, mut handoffs) = mpsc::unbounded_channel::<Accepted>();
        let (tls, handler, options) = (tls.clone(), handler.clone(), options.clone());
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let connections = Connections::new(tls, handler, &options);
                while let Some(accepted) = handoffs.recv().await {
                    connections.spawn(accepted);
                }
                connections.drain(options.drain_grace).await;
            })
        });
        if thread.job.send(job).is_err() {
            warn!(
                worker = index,
                "a worker thread has ended; serving without it"
            );
            continue;
        }
        serving.push(Worker {
            to_worker,
            load: Arc::new(AtomicUsize::new(0)),
            finished: thread.finished,
        });
    }
    if serving.is_empty() {
        warn!("no worker thread could start; serving from the main runtime");
        return serve(listener, tls, handler, options, shutdown).await;
    }

    let mut next = 0;
    accept_until(&listener, &options, shutdown, |mut accepted| {
        // The least loaded worker; among equals, the one after the last chosen.
        let n = serving.len();
        let chosen = (0..n)
            .map(|k| (next + k) % n)
            .min_by_key(|&i| serving[i].load.load(Ordering::Relaxed))
            .unwrap_or(0);
        next = (chosen + 1) % n;
        let worker = &serving[chosen];
        accepted.load = Some(LoadGuard::new(worker.load.clone()));
        if worker.to_worker.send(accepted).is_err() {
            // The worker's thread is gone; dropping the connection closes it.
            warn!(worker = chosen, "a worker has stopped; connection closed");
        }
    })
    .await;
    drop(listener);
    for worker in serving {
        drop(worker.to_worker);
        // Err: the worker's thread ended without saying so; finished either way.
        let _ = worker.finished.await;
    }
}

struct Worker {
    to_worker: mpsc::UnboundedSender<Accepted>,
    load: Arc<AtomicUsize>,
    finished: oneshot::Receiver<()>,
}

/// One open connection in a worker's load count.
struct LoadGuard(Arc<AtomicUsize>);

impl LoadGuard {
    fn new(load: Arc<AtomicUsize>) -> LoadGuard {
        load.fetch_add(1, Ordering::Relaxed);
        LoadGuard(load)
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection accepted and counted, not yet served.
struct Accepted {
    stream: std::net::TcpStream,
    addr: SocketAddr,
    /// The connection's place in `max_connections`.
    permit: OwnedSemaphorePermit,
    counted: Option<OpenConnection>,
    /// The count of open connections of the worker serving it, when handed to one.
    load: Option<LoadGuard>,
}

/// Accepts until `shutdown` resolves, passing each connection to `serve_one`. Waits for a
/// free slot before accepting, so excess clients queue in the backlog instead of costing us
/// memory.
async fn accept_until(
    listener: &TcpListener,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()>,
    mut serve_one: impl FnMut(Accepted),
) {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
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
        // Detached from this runtime's reactor: the connection may be served by another.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                debug!(error = %e, "accepted connection unusable");
                continue;
            }
        };
        serve_one(Accepted {
            stream,
            addr,
            permit,
            counted: options.open_connections.clone().map(OpenConnection::new),
            load: None,
        });
    }
}

/// Serves connections on the runtime it was made on, and drains them at the end.
struct Connections<H> {
    graceful: GracefulShutdown,
    protocols: Arc<Protocols>,
    tls: Option<TlsAcceptor>,
    handler: H,
    handshake_timeout: Duration,
}

/// How to serve each protocol a connection may speak.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// Tells HTTP/1.1 from HTTP/2 by reading the first bytes itself: for connections whose
    /// protocol is not known beforehand, and for upgrades.
    auto: auto::Builder<TokioExecutor>,
    upgrades: bool,
}

/// What a connection speaks, as far as is known before hyper reads from it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Speaks {
    Http1,
    Http2,
    Unknown,
}

type Served = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Protocols {
    fn new(options: &ServeOptions) -> Protocols {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout);
        auto.http2().timer(TokioTimer::new());
        Protocols {
            http1,
            http2,
            auto,
            upgrades: options.upgrades,
        }
    }

    /// The future that serves `io` to its end, drained with the others by `watcher`.
    ///
    /// A connection whose protocol is known is handed straight to that protocol's hyper
    /// connection. Letting hyper-util's `auto` find out instead costs every HTTP/1.1
    /// connection a 16 KiB read buffer where 8 KiB do: it reads the first bytes itself and
    /// hands them back, so hyper's buffer must grow past its first size (an idle plain
    /// connection measured 19.2 KB that way, 12.9 KB this way). Boxed, so that each
    /// connection holds exactly the state of the protocol it speaks.
    fn serve<I, S, B>(&self, io: I, speaks: Speaks, service: S, watcher: Watcher) -> Served
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if self.upgrades {
            let conn = self.auto.serve_connection_with_upgrades(io, service);
            return Box::pin(watcher.watch(conn.into_owned()).map(log_end));
        }
        match speaks {
            Speaks::Http1 => {
                let conn = self.http1.serve_connection(io, service);
                Box::pin(watcher.watch(conn).map(log_end))
            }
            Speaks::Http2 => {
                let conn = self.http2.serve_connection(io, service);
                Box::pin(watcher.watch(conn).map(log_end))
            }
            Speaks::Unknown => {
                let conn = self.auto.serve_connection(io, service);
                Box::pin(watcher.watch(conn.into_owned()).map(log_end))
            }
        }
    }
}

impl<H, F, B> Connections<H>
where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(tls: Option<TlsAcceptor>, handler: H, options: &ServeOptions) -> Connections<H> {
        Connections {
            graceful: GracefulShutdown::new(),
            protocols: Arc::new(Protocols::new(options)),
            tls,
            handler,
            handshake_timeout: options.header_read_timeout,
        }
    }

    fn spawn(&self, accepted: Accepted) {
        let Accepted {
            stream,
            addr,
            permit,
            counted,
            load,
        } = accepted;
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                debug!(error = %e, "cannot register an accepted connection");
                return;
            }
        };
        let watcher = self.graceful.watcher();
        let handler = self.handler.clone();
        let handshake_timeout = self.handshake_timeout;
        let span = tracing::debug_span!("conn", peer = %addr);
        let peer = Peer {
            addr,
            tls: self.tls.is_some(),
        };
        let service = service_fn(move |req| {
            // Boxed: hyper keeps room for one in-flight service future in every
            // connection, idle or not, and the pipeline's future is several KiB.
            // One allocation per request is cheaper than that room per idle client.
            let fut = Box::pin(handler(req, peer));
            async move { Ok::<_, Infallible>(fut.await) }
        });
        // The task is built from combinators, not an async block: an async block that
        // awaits a future it was given keeps room for it twice, and the serving future is
        // most of what an idle connection costs.
        let held = (permit, counted, load);
        let protocols = self.protocols.clone();
        // Two tasks of different types: a plain connection's task then has no room for
        // a TLS stream and its handshake.
        match self.tls.clone() {
            None => {
                let task = sniff(stream, protocols.upgrades)
                    .then(move |sniffed| {
                        OptionFuture::from(sniffed.map(|(stream, speaks)| {
                            protocols.serve(TokioIo::new(stream), speaks, service, watcher)
                        }))
                    })
                    .map(move |_| drop(held));
                tokio::spawn(task.instrument(span));
            }
            Some(acceptor) => {
                // Boxed, and freed once done: the TLS state it holds moves on into the
                // serving future, so the task keeps no room for it.
                let task = Box::pin(tls_handshake(acceptor, stream, handshake_timeout))
                    .then(move |stream| {
                        OptionFuture::from(stream.map(|stream| {
                            let speaks = match stream.get_ref().1.alpn_protocol() {
                                Some(b"h2") => Speaks::Http2,
                                Some(b"http/1.1") => Speaks::Http1,
                                _ => Speaks::Unknown,
                            };
                            protocols.serve(TokioIo::new(stream), speaks, service, watcher)
                        }))
                    })
                    .map(move |_| drop(held));
                tokio::spawn(task.instrument(span));
            }
        }
    }

    /// Gives open connections `grace` to finish their requests, then closes the rest.
    async fn drain(self, grace: Duration) {
        let open = self.graceful.count();
        if open > 0 {
            info!(connections = open, "draining");
        }
        if tokio::time::timeout(grace, self.graceful.shutdown())
            .await
            .is_err()
        {
            warn!(?grace, "drain grace ran out; closing remaining connections");
        }
    }
}

/// What a plain connection speaks, from its first bytes, looked at without taking them
/// (`peek`) so that hyper reads them into its own buffer. `None` (logged) when the client
/// closes or fails first. Like hyper-util's detection before it, this waits as long as the
/// client says nothing: hyper's `header_read_timeout` starts with the first bytes. With
/// `upgrades`, nothing is looked at: hyper-util's `auto` finds out itself.
async fn sniff(stream: TcpStream, upgrades: bool) -> Option<(TcpStream, Speaks)> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if upgrades {
        return Some((stream, Speaks::Unknown));
    }
    let mut first = [0u8; PREFACE.len()];
    let seen = match stream.peek(&mut first).await {
        Ok(0) => return None,
        Ok(n) => &first[..n],
        Err(e) => {
            debug!(error = %e, "connection failed before its first request");
            return None;
        }
    };
    let speaks = if seen == PREFACE {
        Speaks::Http2
    } else if PREFACE.starts_with(seen) {
        // Too little to tell (a client sending its first bytes one at a time).
        Speaks::Unknown
    } else {
        Speaks::Http1
    };
    Some((stream, speaks))
}

/// Completes a TLS handshake within `timeout`; `None` (logged) when it fails or runs late.
async fn tls_handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            None
        }
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
