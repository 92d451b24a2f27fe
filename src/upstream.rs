//! The pooled client that carries requests to Graph (or to whatever `upstream.url` names).
//!
//! One pool per worker thread: keep-alive connections are pooled per host, HTTPS is negotiated
//! with ALPN so Graph gets HTTP/2 when it offers it, and both timeouts of `[upstream]` apply.
//! It knows nothing of the request's meaning; `forward.rs` builds what it sends.

use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::config;
use crate::errors::ProxyError;
use crate::metrics::Metrics;
use crate::server;
use crate::tls::{self, TlsError};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

pub struct Upstream {
    /// One pool per `serve_workers` thread (index + 1), so a worker's requests reuse the
    /// connections its own runtime drives; `[0]` for every other thread (the forward proxy,
    /// the ID lookup's background calls).
    clients: Box<[Client<Connector, ProxyBody>]>,
    pub origin: config::Origin,
    request_timeout: Duration,
}

impl Upstream {
    pub fn new(cfg: &config::Upstream) -> Result<Upstream, TlsError> {
        let tls = tls::client_config(cfg.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90));
        let clients = (0..=server::worker_count())
            .map(|_| builder.build(connector.clone()))
            .collect();
        Ok(Upstream {
            clients,
            origin: cfg.url.clone(),
            request_timeout: cfg.request_timeout,
        })
    }

    /// The deadline for an answer's head; callers that read a body in full (the ID lookup's
    /// own calls) use it as the deadline for the body too.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// One attempt: the answer's head within `request_timeout`, or the error that says why
    /// not. The body then streams with no deadline (a 1 GiB download may take a while).
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        metrics: &Metrics,
    ) -> Result<Response<Incoming>, ProxyError> {
        let started = Instant::now();
        let client = server::worker_index()
            .and_then(|i| self.clients.get(i + 1))
            // `new` builds worker_count() + 1 >= 1 clients, so [0] exists.
            .unwrap_or(&self.clients[0]);
        let result = tokio::time::timeout(self.request_timeout, client.request(request)).await;
        metrics.upstream_duration.observe(started.elapsed());
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(ProxyError::Upstream(e)),
            Err(_) => Err(ProxyError::UpstreamTimeout(self.request_timeout)),
        }
    }
}
