//! The admin listener: liveness, readiness, metrics and an orderly exit.
//!
//! It binds loopback by default and answers only these routes. It never proxies anything and
//! never serves a private key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::body::ProxyBody;
use crate::errors::graph_error;
use crate::metrics::Metrics;

/// Starts the drain: SIGTERM, SIGINT and `POST /shutdown` all pull the same trigger.
#[derive(Clone)]
pub struct ShutdownTrigger(Arc<watch::Sender<bool>>);

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownTrigger {
    pub fn new() -> Self {
        ShutdownTrigger(Arc::new(watch::channel(false).0))
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once `trigger` has been called (at once if it already was).
    pub fn triggered(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            // Err means every sender is gone: nobody can trigger any more, so treat as done.
            let _ = rx.wait_for(|&t| t).await;
        }
    }
}

pub struct Admin {
    /// True once every listener is bound and config is loaded; false again while draining.
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
    pub shutdown: ShutdownTrigger,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>, shutdown: ShutdownTrigger) -> Self {
        Admin {
            ready: AtomicBool::new(false),
            metrics,
            shutdown,
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                if self.ready.load(Ordering::Acquire) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            (&Method::GET, "/metrics") => {
                let mut response = text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            (&Method::POST, "/shutdown") => {
                self.ready.store(false, Ordering::Release);
                self.shutdown.trigger();
                text(StatusCode::ACCEPTED, "draining\n")
            }
            _ => graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "No such admin endpoint. Try /healthz, /readyz or /metrics.",
                &uuid::Uuid::new_v4().to_string(),
            ),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
