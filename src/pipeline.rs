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

use crate::batch;
use crate::body::{collect_limited, Collected, ProxyBody};
use crate::config::{Config, PreferMode};
use crate::content_coding::{self, Coding};
use crate::errors::ProxyError;
use crate::forward::{self, CLIENT_REQUEST_ID};
use crate::identity::{identify, Identity};
use crate::links::LinkRewriter;
use crate::metrics::Metrics;
use crate::prefer::{self, SkipList};
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
    pub metrics: Arc<Metrics>,
}

/// What the access log and the error boundary need to know about one request.
struct Exchange {
    request_id: String,
    identity: Option<Identity>,
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
            metrics,
        })
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
            identity: None,
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
        let tenant = exchange
            .identity
            .as_ref()
            .map_or("unknown", |i| i.tenant.as_str());
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
        exchange.identity = Some(identify(&parts.headers, parts.uri.path()));

        // 2. admit: per-tenant and per-mailbox limits go here (issue #4), before a single
        //    byte leaves for Graph.

        // 3. rewrite_ids: legacy-ID translation goes here (issue #5). It runs before Prefer
        //    so that a buffered $batch body is parsed once for both.

        // 4. apply_prefer: one Prefer line with IdType="ImmutableId" on the request and on
        //    every $batch sub-request.
        let prefer_sent = self.apply_prefer(&mut parts);
        let body = self.apply_prefer_to_batch(&parts, body).await?;

        // 5. forward: hop-by-hop headers out, Host and target from the configured upstream.
        forward::prepare_request(&mut parts, &self.upstream.origin)?;
        let body = match body {
            BatchBody::Unchanged(body) => body,
            BatchBody::Rewritten(bytes) => {
                parts
                    .headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                ProxyBody::full(bytes)
            }
        };
        let upstream_request = Request::from_parts(parts, body);

        // 6. retries with Retry-After and backoff wrap this send (issue #4).
        exchange.attempts += 1;
        let response = self.upstream.send(upstream_request, &self.metrics).await?;

        // 7. rewrite_links, on the reverse listener only.
        self.finish_response(response, route, prefer_sent).await
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

    /// `$batch`: Graph does not apply the outer Prefer to sub-requests, so each one gets its
    /// own. Only a JSON body within `max_body_bytes` is buffered; anything else streams on.
    async fn apply_prefer_to_batch(
        &self,
        parts: &request::Parts,
        body: Incoming,
    ) -> Result<BatchBody, ProxyError> {
        if parts.method != Method::POST || !batch::is_batch_path(parts.uri.path()) {
            return Ok(BatchBody::Unchanged(body.into()));
        }
        if !is_identity_coded(&parts.headers)
            || declared_length(&parts.headers).is_some_and(|n| n > self.max_body)
        {
            info!(path = %short_path(parts.uri.path()), "$batch body is compressed or over rewrite.max_body_bytes; streamed untouched");
            return Ok(BatchBody::Unchanged(body.into()));
        }
        let bytes = match collect_limited(body, self.max_body)
            .await
            .map_err(ProxyError::ClientBody)?
        {
            Collected::Whole(bytes) => bytes,
            Collected::TooLarge(body) => {
                info!(path = %short_path(parts.uri.path()), "$batch body over rewrite.max_body_bytes; streamed untouched");
                return Ok(BatchBody::Unchanged(body));
            }
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
            Some(new) => Ok(BatchBody::Rewritten(Bytes::from(new))),
            None => {
                debug!("$batch body is not a JSON batch; forwarded byte for byte");
                Ok(BatchBody::Unchanged(ProxyBody::full(bytes)))
            }
        }
    }

    /// Cleans Graph's answer and, on the reverse listener, points its links back at us.
    async fn finish_response(
        &self,
        response: Response<Incoming>,
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
            _ => return Ok(Response::from_parts(parts, body.into())),
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
            return Ok(Response::from_parts(parts, body.into()));
        }
        let Some(coding) = Coding::from_header(parts.headers.get(CONTENT_ENCODING)) else {
            return Ok(Response::from_parts(parts, body.into()));
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

enum BatchBody {
    Unchanged(ProxyBody),
    Rewritten(Bytes),
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
