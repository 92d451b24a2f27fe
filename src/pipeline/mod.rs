//! The request path, written out once:
//!
//! ```text
//! identify -> admit -> rewrite_ids -> apply_prefer -> forward (retries) -> rewrite_links
//! ```
//!
//! `Proxy::handle` is the one error boundary: every stage below returns
//! `Result<_, ProxyError>`, and only `handle` logs a failure, builds the Graph-shaped answer,
//! records metrics and writes the access-log line. Reverse-proxied and intercepted requests
//! take the same path; only link rewriting differs (see `Route`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_LOCATION,
    CONTENT_TYPE, LOCATION,
};
use http::{request, Method, Request, Response};
use hyper::body::Incoming;
use tracing::{debug, info, warn};

use crate::admit::{AdmitPermit, Demand, Limits};
use crate::batch;
use crate::body::{collect_limited, Collected, ProxyBody};
use crate::config::{Config, PreferMode};
use crate::content_coding::{self, Coding};
use crate::errors::ProxyError;
use crate::forward;
use crate::id_lookup::IdLookup;
use crate::id_store::IdStore;
use crate::identity::{identify, mailbox_from_path, Identity, Mailbox, TenantId};
use crate::links::LinkRewriter;
use crate::metrics::Metrics;
use crate::prefer::{self, SkipList};
use crate::retry::Backoff;
use crate::shared::{Redis, SharedIds, SharedLimits};
use crate::telemetry::short_path;
use crate::tls::TlsError;
use crate::upstream::Upstream;

mod ids;
mod retries;

pub const PREFER: HeaderName = HeaderName::from_static("prefer");
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// Which listener a request arrived on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The app's base URL is the proxy: Graph's absolute links are rewritten to
    /// `public_base_url` so paging stays inside the proxy.
    Reverse,
    /// Drop-in mode: the app believes it talks to Graph and follows Graph's own links back
    /// through the proxy, so links stay as Graph wrote them. The origin is where the
    /// request goes: the host the app asked for in its CONNECT (or a fixed `upstream.url`).
    Intercepted(crate::config::Origin),
}

pub struct Proxy {
    upstream: Arc<Upstream>,
    /// Step 3, when `rewrite.enabled`.
    ids: Option<ids::IdRewriting>,
    prefer_mode: PreferMode,
    skip: SkipList,
    links: Option<LinkRewriter>,
    /// Largest body held in memory to rewrite; larger ones stream through untouched.
    max_body: usize,
    max_retries: u32,
    backoff: Backoff,
    limits: Arc<Limits>,
    /// `shared.backend = "redis"`: consulted instead of `limits`, which stays the fallback.
    shared_limits: Option<Arc<SharedLimits>>,
    pub metrics: Arc<Metrics>,
}

/// What the access log and the error boundary need to know about one request.
struct Exchange {
    request_id: String,
    /// The caller's tenant, for the access log ("unknown" until identified).
    tenant: TenantId,
    attempts: u32,
    rewritten_ids: usize,
}

impl Proxy {
    /// `store` is the opened ID store when `rewrite.enabled`.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        store: Option<Arc<IdStore>>,
    ) -> Result<Proxy, TlsError> {
        let upstream = Arc::new(Upstream::new(&config.upstream)?);
        let ids = store.map(|store| ids::IdRewriting {
            lookup: IdLookup::new(upstream.clone(), store, &config.rewrite, metrics.clone()),
            sources: config.rewrite.source_types.clone(),
            on_error: config.rewrite.on_error,
            responses: config.rewrite.responses,
        });
        Ok(Proxy {
            upstream,
            ids,
            prefer_mode: config.immutable_id.mode,
            skip: SkipList::new(&config.immutable_id.skip),
            links: LinkRewriter::new(&config.upstream.url, &config.listen.public_base_url),
            max_body: config.rewrite.max_body_bytes.get(),
            max_retries: config.upstream.max_retries,
            backoff: Backoff {
                base: config.upstream.retry_base_delay,
                max: config.upstream.retry_max_delay,
            },
            limits: Arc::new(Limits::new(&config.rate_limit, metrics.clone())),
            shared_limits: None,
            metrics,
        })
    }

    /// Shares limits and the ID map with other replicas through `redis`.
    pub fn share(&mut self, redis: &Redis, config: &Config) {
        self.shared_limits = Some(Arc::new(SharedLimits::new(
            redis.clone(),
            self.limits.clone(),
            &config.rate_limit,
            self.metrics.clone(),
        )));
        if let Some(ids) = self.ids.take() {
            self.ids = Some(ids::IdRewriting {
                lookup: ids.lookup.share(SharedIds::new(redis.clone())),
                ..ids
            });
        }
    }

    /// The shared limits, when `shared.backend = "redis"` (lease renewal, SIGHUP reloads).
    pub fn shared_limits(&self) -> Option<&Arc<SharedLimits>> {
        self.shared_limits.as_ref()
    }

    /// The limiter layers, for the eviction loop and SIGHUP reloads.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Points link rewriting at `public` (used once the listener's real port is known).
    pub fn set_public_base_url(
        &mut self,
        upstream: &crate::config::Origin,
        public: &crate::config::Origin,
    ) {
        self.links = LinkRewriter::new(upstream, public);
    }

    /// The error boundary: every request gets an answer we built or Graph's own.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        route: Route,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        // hyper frames a body with both Content-Length and Transfer-Encoding by the latter
        // and drops the former before we see it, so "both" cannot be told apart from
        // "chunked": RFC 9112 6.1 then requires closing the connection after the answer,
        // which keeps bytes after the chunked body (a smuggled request) from being read.
        let close_after = req.version() <= http::Version::HTTP_11
            && req.headers().contains_key(http::header::TRANSFER_ENCODING);
        let method = req.method().clone();
        // Shortened only when a log line is written (the access log is off below `info`).
        let uri = req.uri().clone();
        let mut exchange = Exchange {
            request_id: forward::ensure_client_request_id(req.headers_mut()),
            tenant: TenantId::unknown(),
            attempts: 0,
            rewritten_ids: 0,
        };

        let response = match self.proxy(req, route, &mut exchange).await {
            Ok(response) => response,
            Err(error) => {
                let status = error.status();
                let cause = error_chain(&error);
                let path = short_path(uri.path());
                if status.is_server_error() {
                    warn!(request_id = %exchange.request_id, %method, %path, error = %cause, "request failed");
                } else {
                    info!(request_id = %exchange.request_id, %method, %path, error = %cause, "request refused");
                }
                error.into_response(&exchange.request_id)
            }
        };

        let mut response = response;
        if close_after {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        self.metrics.requests.inc(status);
        self.metrics.request_duration.observe(elapsed);
        let tenant = exchange.tenant.as_str();
        info!(
            target: "access",
            %method,
            path = %short_path(uri.path()),
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            tenant,
            attempts = exchange.attempts,
            rewritten_ids = exchange.rewritten_ids,
            request_id = %exchange.request_id,
        );
        response
    }

    async fn proxy(
        &self,
        req: Request<Incoming>,
        route: Route,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();

        // 1. identify: tenant, app and mailbox, from the token's claims and the path. Comes
        //    first because admission is keyed on it.
        let identity = identify(&parts.headers, parts.uri.path());
        exchange.tenant = identity.tenant.clone();

        // A $batch body is read now, before admission: each of its sub-requests is charged
        // to its own mailbox, and steps 3 and 4 edit them. Every other body streams.
        let body = self.read_body(&parts, body).await?;

        // 2. admit: per-tenant and per-mailbox limits, before a single byte leaves for
        //    Graph. The permit rides on the response body, so the in-flight slot is held
        //    until the app has the whole answer.
        let permit = self.admit(&identity, &body).await?;

        // 3. rewrite_ids: legacy IDs in the path, $filter and JSON body become immutable.
        //    After admit (its Graph calls count against the same budget), before Prefer,
        //    which edits the same $batch body.
        let (body, rewrote) = self.rewrite_ids(&mut parts, body, &identity).await?;
        exchange.rewritten_ids = rewrote.count;

        // 4. apply_prefer: one Prefer line with IdType="ImmutableId" on the request and on
        //    every $batch sub-request.
        let prefer_sent = self.apply_prefer(&mut parts);
        let body = self.apply_prefer_to_batch(&parts, body);

        // 5. forward: hop-by-hop headers out, Host and target from the configured upstream
        //    (or, in drop-in mode, the host the app asked for).
        let origin = match &route {
            Route::Reverse => &self.upstream.origin,
            Route::Intercepted(origin) => origin,
        };
        forward::prepare_request(&mut parts, origin)?;

        // 6. retries: 429/503/504 from Graph are retried here, with Retry-After or backoff,
        //    for requests that can be sent again; throttled $batch sub-requests too. Graph's
        //    Retry-After also opens the penalty box for this app+mailbox.
        let response = self
            .forward_with_retries(&parts, body, &identity, exchange)
            .await?;

        if response.status() == http::StatusCode::NOT_FOUND && !rewrote.in_path.is_empty() {
            self.forget_after_404(&rewrote).await;
        }

        // 7. rewrite_links, on the reverse listener only (and IDs in the answer, with
        //    rewrite.responses).
        let response = self
            .finish_response(response, route, prefer_sent, &rewrote)
            .await?;
        Ok(response.map(|body| ProxyBody::Guarded(Box::new(body), permit)))
    }

    /// Charges the request (or each $batch sub-request) to its tenant and mailbox.
    async fn admit(&self, identity: &Identity, body: &Outgoing) -> Result<AdmitPermit, ProxyError> {
        let sub_requests = match body {
            Outgoing::Held { bytes, batch: true } => {
                batch::sub_request_urls(bytes).filter(|urls| !urls.is_empty())
            }
            _ => None,
        };
        let demand = match &sub_requests {
            None => Demand::single(&identity.tenant, &identity.app, identity.mailbox.as_ref()),
            Some(urls) => {
                let mut mailboxes: Vec<(Mailbox, u32)> = Vec::new();
                for url in urls {
                    if let Some(mailbox) = mailbox_from_path(url, identity.claims.as_deref()) {
                        match mailboxes.iter_mut().find(|(m, _)| *m == mailbox) {
                            Some((_, cost)) => *cost += 1,
                            None => mailboxes.push((mailbox, 1)),
                        }
                    }
                }
                Demand {
                    tenant: &identity.tenant,
                    app: &identity.app,
                    mailboxes,
                    cost: u32::try_from(urls.len()).unwrap_or(u32::MAX),
                }
            }
        };
        let admitted = match &self.shared_limits {
            Some(shared) => shared.admit(&demand).await,
            None => self.limits.admit(&demand).await,
        };
        admitted.map_err(|rejected| ProxyError::TooManyRequests {
            retry_after: rejected.retry_after,
        })
    }

    /// Merges the app's Prefer lines with ours, unless a skip pattern says this request
    /// must go without. Returns whether IdType was sent.
    fn apply_prefer(&self, parts: &mut request::Parts) -> bool {
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        if self.skip.matches(target) {
            self.metrics.prefer_skipped.inc();
            debug!(path = %short_path(parts.uri.path()), "skip pattern matched; Prefer left as sent");
            return false;
        }
        let merged = {
            let values: Vec<&[u8]> = parts
                .headers
                .get_all(&PREFER)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            prefer::merge(&values, self.prefer_mode)
        };
        parts.headers.insert(PREFER, merged);
        true
    }

    /// Reads a `$batch` body into memory when it is JSON within `max_body_bytes`; every
    /// other body streams. An empty body counts as held, so such requests can be retried.
    async fn read_body(
        &self,
        parts: &request::Parts,
        body: Incoming,
    ) -> Result<Outgoing, ProxyError> {
        let is_batch = parts.method == Method::POST && batch::is_batch_path(parts.uri.path());
        let rewritable_json = self.ids.is_some()
            && is_json(&parts.headers)
            && is_identity_coded(&parts.headers)
            && declared_length(&parts.headers).is_some_and(|n| n <= self.max_body);
        if rewritable_json && !is_batch {
            // Step 3 may rewrite IDs in it; one that turns out larger than declared streams.
            return match collect_limited(body.into(), self.max_body)
                .await
                .map_err(ProxyError::ClientBody)?
            {
                Collected::Whole(bytes) => Ok(Outgoing::Held {
                    bytes,
                    batch: false,
                }),
                Collected::TooLarge(body) => Ok(Outgoing::Stream(body)),
            };
        }
        if !is_batch {
            return Ok(if http_body::Body::is_end_stream(&body) {
                Outgoing::Held {
                    bytes: Bytes::new(),
                    batch: false,
                }
            } else {
                Outgoing::Stream(body.into())
            });
        }
        let path = short_path(parts.uri.path());
        if !is_identity_coded(&parts.headers)
            || declared_length(&parts.headers).is_some_and(|n| n > self.max_body)
        {
            info!(%path, "$batch body is compressed or over rewrite.max_body_bytes; streamed untouched");
            return Ok(Outgoing::Stream(body.into()));
        }
        match collect_limited(body.into(), self.max_body)
            .await
            .map_err(ProxyError::ClientBody)?
        {
            Collected::Whole(bytes) => Ok(Outgoing::Held { bytes, batch: true }),
            Collected::TooLarge(body) => {
                info!(%path, "$batch body over rewrite.max_body_bytes; streamed untouched");
                Ok(Outgoing::Stream(body))
            }
        }
    }

    /// `$batch`: Graph does not apply the outer Prefer to sub-requests, so each one gets its
    /// own. A body that is not a JSON batch goes out byte for byte.
    fn apply_prefer_to_batch(&self, parts: &request::Parts, body: Outgoing) -> Outgoing {
        let bytes = match body {
            Outgoing::Held { bytes, batch: true } => bytes,
            other => return other,
        };
        let mode = self.prefer_mode;
        let skipped = &self.metrics.prefer_skipped;
        let rewritten = batch::apply_prefer(&bytes, |url, existing| {
            if self.skip.matches(url) {
                skipped.inc();
                return None;
            }
            let existing: Vec<&[u8]> = existing.map(str::as_bytes).into_iter().collect();
            prefer::merge(&existing, mode)
                .to_str()
                .ok()
                .map(str::to_owned)
        });
        match rewritten {
            Some(new) => Outgoing::Held {
                bytes: Bytes::from(new),
                batch: true,
            },
            None => {
                debug!(path = %short_path(parts.uri.path()), "$batch body is not a JSON batch; forwarded byte for byte");
                Outgoing::Held {
                    bytes,
                    batch: false,
                }
            }
        }
    }

    /// Cleans Graph's answer and, on the reverse listener, points its links back at us.
    async fn finish_response(
        &self,
        response: Response<ProxyBody>,
        route: Route,
        prefer_sent: bool,
        rewrote: &ids::Rewrote,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = response.into_parts();
        forward::prepare_response(&mut parts.headers);
        if prefer_sent {
            let applied = parts
                .headers
                .get_all(&PREFERENCE_APPLIED)
                .iter()
                .any(|v| prefer::asks_for_immutable_id(&[v.as_bytes()]));
            self.metrics
                .prefer_applied
                .inc(if applied { "immutable" } else { "not_applied" });
        }
        let links = match (&self.links, route) {
            (Some(links), Route::Reverse) => Some(links),
            _ => None,
        };
        let ids = self.wants_response_ids(rewrote);
        if let Some(links) = links {
            for name in [LOCATION, CONTENT_LOCATION] {
                let rewritten = parts
                    .headers
                    .get(&name)
                    .and_then(|v| links.rewrite_header(v.as_bytes()));
                if let Some(value) = rewritten {
                    parts.headers.insert(name, value);
                }
            }
        }
        if (links.is_none() && !ids)
            || !is_json(&parts.headers)
            || declared_length(&parts.headers).is_some_and(|n| n == 0 || n > self.max_body)
        {
            return Ok(Response::from_parts(parts, body));
        }
        let Some(coding) = Coding::from_header(parts.headers.get(CONTENT_ENCODING)) else {
            return Ok(Response::from_parts(parts, body));
        };
        let bytes = match collect_limited(body, self.max_body)
            .await
            .map_err(ProxyError::UpstreamBody)?
        {
            Collected::Whole(bytes) => bytes,
            Collected::TooLarge(body) => return Ok(Response::from_parts(parts, body)),
        };
        let new_body = self
            .rewrite_json_body(links, ids.then_some(rewrote), coding, &bytes)
            .await;
        let bytes = new_body.map_or(bytes, Bytes::from);
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Ok(Response::from_parts(parts, ProxyBody::full(bytes)))
    }

    /// Links, then (with `rewrite.responses`) IDs, in one decode/encode of the answer. None:
    /// send the original bytes (nothing changed, not JSON, or an encoding we could not
    /// undo).
    async fn rewrite_json_body(
        &self,
        links: Option<&LinkRewriter>,
        ids: Option<&ids::Rewrote>,
        coding: Coding,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        let plain = match coding {
            Coding::Identity => None,
            coding => Some(content_coding::decode(coding, bytes, self.max_body).ok()?),
        };
        let mut current: std::borrow::Cow<'_, [u8]> = match &plain {
            Some(plain) => plain.as_slice().into(),
            None => bytes.into(),
        };
        let mut changed = false;
        if let Some(links) = links.filter(|_| LinkRewriter::may_rewrite(&current)) {
            if let Ok(Some(rewritten)) = links.rewrite_json(&current) {
                current = rewritten.into();
                changed = true;
            }
        }
        if let Some(rewrote) = ids {
            if let Some((rewritten, _count)) = self.rewrite_response_ids(rewrote, &current).await {
                current = rewritten.into();
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        match coding {
            Coding::Identity => Some(current.into_owned()),
            coding => content_coding::encode(coding, &current).ok(),
        }
    }
}

/// The request body as it leaves for Graph.
enum Outgoing {
    /// Streams through once; a request with such a body is never retried.
    Stream(ProxyBody),
    /// In memory (empty, or a $batch we read), so it can be sent again. `batch` marks a
    /// $batch body whose sub-responses may be retried.
    Held { bytes: Bytes, batch: bool },
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn is_identity_coded(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// `application/json`, with or without parameters (`odata.metadata=minimal`, charset).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|mime| {
            mime.eq_ignore_ascii_case("application/json")
                || mime.to_ascii_lowercase().ends_with("+json")
        })
}

/// The error and its causes on one line, for the log. Causes here are transport errors;
/// none of them carries a token or a body.
fn error_chain(error: &ProxyError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
