//! The admin listener: liveness, readiness, metrics, the interception CA's public
//! certificate and an orderly exit.
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

use http_body_util::BodyExt;

use crate::body::ProxyBody;
use crate::errors::graph_error;
use crate::id_store::IdStore;
use crate::metrics::Metrics;
use crate::shared::SharedIds;

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
    /// The ID store, when `rewrite.enabled`: `POST /idmap` fills it.
    pub ids: Option<Arc<IdStore>>,
    /// The interception CA's public certificate, when `forward_proxy.enabled`: `GET /ca.pem`
    /// serves it so clients can trust it. Never the key.
    pub ca_pem: Option<String>,
    /// The replicas' shared ID map (`shared.backend = "redis"`): `POST /idmap` fills it too,
    /// so one import serves every replica.
    pub shared_ids: Option<SharedIds>,
}

/// Largest CSV `POST /idmap` accepts in one request (about 200,000 mappings); larger
/// migrations are sent in several requests, as `translate --admin` does.
const IDMAP_MAX_BYTES: usize = 64 * 1024 * 1024;

impl Admin {
    pub fn new(
        metrics: Arc<Metrics>,
        shutdown: ShutdownTrigger,
        ids: Option<Arc<IdStore>>,
    ) -> Self {
        Admin {
            ready: AtomicBool::new(false),
            metrics,
            shutdown,
            ids,
            ca_pem: None,
            shared_ids: None,
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
            (&Method::POST, "/idmap") => self.import_idmap(req).await,
            (&Method::GET | &Method::HEAD, "/ca.pem") => match &self.ca_pem {
                Some(pem) => {
                    let mut response = text(StatusCode::OK, pem.clone());
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-pem-file"),
                    );
                    response
                }
                None => graph_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "forward_proxy.enabled is false: there is no interception CA.",
                    &crate::telemetry::new_request_id(),
                ),
            },
            (&Method::POST, "/shutdown") => {
                self.ready.store(false, Ordering::Release);
                self.shutdown.trigger();
                text(StatusCode::ACCEPTED, "draining\n")
            }
            _ => graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "No such admin endpoint. Try /healthz, /readyz or /metrics.",
                &crate::telemetry::new_request_id(),
            ),
        }
    }
}

impl Admin {
    /// `POST /idmap?tenant=<tid>` with `source_id,target_id` CSV lines: the mappings go into
    /// the ID store, so the proxy serves them even after the items move.
    async fn import_idmap(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let request_id = crate::telemetry::new_request_id();
        let Some(ids) = self.ids.clone() else {
            return graph_error(
                StatusCode::CONFLICT,
                "RewriteDisabled",
                "rewrite.enabled is false: there is no ID store to import into.",
                &request_id,
            );
        };
        let tenant = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("tenant="))
                .map(str::to_owned)
        });
        let Some(tenant) = tenant.filter(|t| !t.is_empty() && t.len() <= 128) else {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Name the tenant the mappings belong to: POST /idmap?tenant=<tenant id>.",
                &request_id,
            );
        };
        let body = match http_body_util::Limited::new(req.into_body(), IDMAP_MAX_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return graph_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "BadRequest",
                    "The CSV is larger than 64 MiB or was cut off; send it in parts.",
                    &request_id,
                )
            }
        };
        let Ok(csv) = String::from_utf8(body.to_vec()) else {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The CSV is not UTF-8.",
                &request_id,
            );
        };
        let for_shared = self
            .shared_ids
            .clone()
            .map(|shared| (shared, tenant.clone(), csv.clone()));
        // redb writes block; they run off the async workers.
        let imported = tokio::task::spawn_blocking(move || ids.import_csv(&tenant, &csv)).await;
        match imported {
            Ok(Ok(count)) => {
                let mut answer = format!("{{\"imported\":{count}");
                if let Some((shared, tenant, csv)) = for_shared {
                    let shared = share_mappings(&shared, &tenant, &csv).await;
                    answer.push_str(&format!(",\"shared\":{shared}"));
                }
                answer.push_str("}\n");
                let mut response = text(StatusCode::OK, answer);
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Ok(Err(e)) => graph_error(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string(), &request_id),
            Err(_) => graph_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "The import stopped unexpectedly; nothing after the last complete chunk was written.",
                &request_id,
            ),
        }
    }
}

/// Hands imported mappings to the replicas' shared map; returns how many it took. A Redis
/// failure leaves them in this replica's store only (logged, counted as a fallback).
async fn share_mappings(shared: &SharedIds, tenant: &str, csv: &str) -> usize {
    let Ok(pairs) = IdStore::mappings_in_csv(csv) else {
        return 0;
    };
    let mut shared_count = 0;
    for chunk in pairs.chunks(crate::id_lookup::MAX_IDS_PER_CALL) {
        if let Err(e) = shared.put_many(tenant, chunk).await {
            tracing::warn!(error = %e, "imported mappings not shared: Redis failed; they serve from this replica's store");
            shared.redis().fell_back();
            break;
        }
        shared_count += chunk.len();
    }
    shared_count
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
