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

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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
use crate::forward::{self, CLIENT_REQUEST_ID};
use crate::identity::{identify, mailbox_from_path, Identity, Mailbox};
use crate::links::LinkRewriter;
use crate::metrics::Metrics;
use crate::prefer::{self, SkipList};
use crate::retry::{self, Backoff, RETRY_ATTEMPT};
use crate::telemetry::short_path;
use crate::tls::TlsError;
use crate::upstream::Upstream;

pub const PREFER: HeaderName = HeaderName::from_static("prefer");
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The app's base URL is the proxy: Graph's absolute links are rewritten to
    /// `public_base_url` so paging stays inside the proxy.
    Reverse,
    /// Drop-in mode: the app believes it talks to Graph and follows Graph's own links back
    /// through the proxy, so links stay as Graph wrote them.
    Intercepted,
}

pub struct Proxy {
    upstream: Upstream,
    prefer_mode: PreferMode,
    skip: SkipList,
    links: Option<LinkRewriter>,
    /// Largest body held in memory to rewrite; larger ones stream through untouched.
    max_body: usize,
    max_retries: u32,
    backoff: Backoff,
    limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
}

/// What the access log and the error boundary need to know about one request.
struct Exchange {
    request_id: String,
    /// The caller's tenant, for the access log ("unknown" until identified).
    tenant: String,
    attempts: u32,
    rewritten_ids: usize,
}

impl Proxy {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Proxy, TlsError> {
        Ok(Proxy {
            upstream: Upstream::new(&config.upstream)?,
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
            metrics,
        })
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
        let method = req.method().clone();
        let path = short_path(req.uri().path());
        let mut exchange = Exchange {
            request_id: ensure_client_request_id(req.headers_mut()),
            tenant: "unknown".to_owned(),
            attempts: 0,
            rewritten_ids: 0,
        };

        let response = match self.proxy(req, route, &mut exchange).await {
            Ok(response) => response,
            Err(error) => {
                let status = error.status();
                let cause = error_chain(&error);
                if status.is_server_error() {
                    warn!(request_id = %exchange.request_id, %method, %path, error = %cause, "request failed");
                } else {
                    info!(request_id = %exchange.request_id, %method, %path, error = %cause, "request refused");
                }
                error.into_response(&exchange.request_id)
            }
        };

        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        self.metrics.requests.inc(status);
        self.metrics.request_duration.observe(elapsed);
        let tenant = exchange.tenant.as_str();
        info!(
            target: "access",
            %method,
            %path,
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
        exchange.tenant = identity.tenant.as_str().to_owned();

        // A $batch body is read now, before admission: each of its sub-requests is charged
        // to its own mailbox, and steps 3 and 4 edit them. Every other body streams.
        let body = self.read_body(&parts, body).await?;

        // 2. admit: per-tenant and per-mailbox limits, before a single byte leaves for
        //    Graph. The permit rides on the response body, so the in-flight slot is held
        //    until the app has the whole answer.
        let permit = self.admit(&identity, &body).await?;

        // 3. rewrite_ids: legacy-ID translation goes here (issue #5). It runs before Prefer
        //    so that a buffered $batch body is parsed once for both.

        // 4. apply_prefer: one Prefer line with IdType="ImmutableId" on the request and on
        //    every $batch sub-request.
        let prefer_sent = self.apply_prefer(&mut parts);
        let body = self.apply_prefer_to_batch(&parts, body);

        // 5. forward: hop-by-hop headers out, Host and target from the configured upstream.
        forward::prepare_request(&mut parts, &self.upstream.origin)?;

        // 6. retries: 429/503/504 from Graph are retried here, with Retry-After or backoff,
        //    for requests that can be sent again; throttled $batch sub-requests too. Graph's
        //    Retry-After also opens the penalty box for this app+mailbox.
        let response = self
            .forward_with_retries(&parts, body, &identity, exchange)
            .await?;

        // 7. rewrite_links, on the reverse listener only.
        let response = self.finish_response(response, route, prefer_sent).await?;
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
                    if let Some(mailbox) = mailbox_from_path(url, identity.claims.as_ref()) {
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
        self.limits
            .admit(&demand)
            .await
            .map_err(|rejected| ProxyError::TooManyRequests {
                retry_after: rejected.retry_after,
            })
    }

    /// Sends the request, and sends it again while Graph answers 429/503/504 and the rules
    /// of step 6 allow: the app (or its SDK) does not retry itself, and the body can be
    /// replayed. After the last try Graph's own answer goes back unchanged.
    async fn forward_with_retries(
        &self,
        parts: &request::Parts,
        body: Outgoing,
        identity: &Identity,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let held = match body {
            Outgoing::Stream(body) => {
                exchange.attempts = 1;
                let request = Request::from_parts(clone_head(parts, None, 0), body);
                let response = self.upstream.send(request, &self.metrics).await?;
                self.penalize_if_throttled(identity, &response);
                return Ok(response.map(ProxyBody::from));
            }
            Outgoing::Held { bytes, batch } => (bytes, batch),
        };
        let (bytes, batch) = held;
        let may_retry = self.max_retries > 0
            && !retry::client_retries_itself(&parts.headers)
            && (batch || retry::is_replayable_method(&parts.method));
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            exchange.attempts = attempt;
            let request = Request::from_parts(
                clone_head(parts, Some(bytes.len()), attempt),
                ProxyBody::full(bytes.clone()),
            );
            let response = self.upstream.send(request, &self.metrics).await?;
            self.penalize_if_throttled(identity, &response);
            let status = response.status().as_u16();
            if !(may_retry && retry::is_retryable_status(status) && attempt <= self.max_retries) {
                break response;
            }
            let retry_after = retry::retry_after_header(response.headers(), SystemTime::now());
            let wait = self.backoff.delay(attempt, retry_after, jitter());
            debug!(
                status,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "Graph asked us to wait; retrying"
            );
            drop(response);
            self.metrics.upstream_retries.inc();
            tokio::time::sleep(wait).await;
        };
        if batch && may_retry && response.status() == 200 && is_identity_coded(response.headers()) {
            return self
                .retry_batch_sub_requests(parts, &bytes, response, exchange)
                .await;
        }
        Ok(response.map(ProxyBody::from))
    }

    /// Graph keeps counting requests sent while it throttles, so its 429/503 Retry-After
    /// holds back this app+mailbox (or the tenant, for requests without a mailbox).
    fn penalize_if_throttled(&self, identity: &Identity, response: &Response<Incoming>) {
        let status = response.status().as_u16();
        if status != 429 && status != 503 {
            return;
        }
        if let Some(wait) = retry::retry_after_header(response.headers(), SystemTime::now()) {
            if !wait.is_zero() {
                self.limits.penalize(
                    &identity.tenant,
                    &identity.app,
                    identity.mailbox.as_ref(),
                    wait,
                );
            }
        }
    }

    /// A $batch answer is a 200 whose sub-responses may be 429/503/504; those are sent again
    /// as a smaller batch and merged back, at most `max_retries` times.
    async fn retry_batch_sub_requests(
        &self,
        parts: &request::Parts,
        request_body: &Bytes,
        response: Response<Incoming>,
        exchange: &mut Exchange,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut head, body) = response.into_parts();
        let mut current = match collect_limited(body.into(), self.max_body)
            .await
            .map_err(ProxyError::UpstreamBody)?
        {
            Collected::Whole(bytes) => bytes,
            Collected::TooLarge(body) => return Ok(Response::from_parts(head, body)),
        };
        let mut round = 0;
        while round < self.max_retries {
            let Some(plan) = retry::batch_retry(request_body, &current) else {
                break;
            };
            round += 1;
            let wait = self.backoff.delay(round, plan.retry_after, jitter());
            debug!(
                sub_requests = plan.ids.len(),
                round,
                wait_ms = wait.as_millis() as u64,
                "retrying throttled $batch sub-requests"
            );
            self.metrics.upstream_retries.inc();
            tokio::time::sleep(wait).await;
            exchange.attempts += 1;
            let retry_body = Bytes::from(plan.body);
            let request = Request::from_parts(
                clone_head(parts, Some(retry_body.len()), round + 1),
                ProxyBody::full(retry_body),
            );
            let answer = self.upstream.send(request, &self.metrics).await?;
            if answer.status() != 200 || !is_identity_coded(answer.headers()) {
                break;
            }
            let answer = match collect_limited(answer.into_body().into(), self.max_body)
                .await
                .map_err(ProxyError::UpstreamBody)?
            {
                Collected::Whole(bytes) => bytes,
                Collected::TooLarge(_) => break,
            };
            match retry::merge_batch_responses(&current, &answer) {
                Some(merged) => current = Bytes::from(merged),
                None => break,
            }
        }
        head.headers
            .insert(CONTENT_LENGTH, HeaderValue::from(current.len()));
        Ok(Response::from_parts(head, ProxyBody::full(current)))
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
            (Some(links), Route::Reverse) => links,
            _ => return Ok(Response::from_parts(parts, body)),
        };
        for name in [LOCATION, CONTENT_LOCATION] {
            let rewritten = parts
                .headers
                .get(&name)
                .and_then(|v| links.rewrite_header(v.as_bytes()));
            if let Some(value) = rewritten {
                parts.headers.insert(name, value);
            }
        }
        if !is_json(&parts.headers)
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
        let new_body = rewrite_json_links(links, coding, &bytes, self.max_body);
        let bytes = new_body.map_or(bytes, Bytes::from);
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Ok(Response::from_parts(parts, ProxyBody::full(bytes)))
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

/// The request head for one attempt. `body_len` is the held body's length (None: streamed,
/// keep the app's framing); attempts after the first carry `Retry-Attempt`.
fn clone_head(parts: &request::Parts, body_len: Option<usize>, attempt: u32) -> request::Parts {
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers.clone();
        if let Some(len) = body_len {
            if len > 0 || headers.contains_key(CONTENT_LENGTH) {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            }
        }
        if attempt > 1 {
            headers.insert(RETRY_ATTEMPT, HeaderValue::from(attempt - 1));
        }
    }
    // The builder only fails on invalid parts, and these came from a valid request.
    match builder.body(()) {
        Ok(request) => request.into_parts().0,
        Err(_) => Request::new(()).into_parts().0,
    }
}

/// A number in [0, 1) for backoff jitter: std's per-instance random hash keys are random
/// enough to spread retries, and need no extra dependency.
fn jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The rewritten body, or None to send the original bytes (nothing to change, not JSON,
/// or a compressed body we could not decode).
fn rewrite_json_links(
    links: &LinkRewriter,
    coding: Coding,
    bytes: &[u8],
    limit: usize,
) -> Option<Vec<u8>> {
    let plain = match coding {
        Coding::Identity => None,
        coding => Some(content_coding::decode(coding, bytes, limit).ok()?),
    };
    let rewritten = links
        .rewrite_json(plain.as_deref().unwrap_or(bytes))
        .ok()??;
    match coding {
        Coding::Identity => Some(rewritten),
        coding => content_coding::encode(coding, &rewritten).ok(),
    }
}

/// The app's `client-request-id`, or a new one added to the request so Graph and our logs
/// share it.
fn ensure_client_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = headers
        .get(&CLIENT_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return id.to_owned();
    }
    let id = uuid::Uuid::new_v4().to_string();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(CLIENT_REQUEST_ID, value);
    }
    id
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
