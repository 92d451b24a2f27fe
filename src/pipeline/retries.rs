//! Step 6, retries: Graph's 429/503/504 answers are retried the way the Graph SDKs do it,
//! for apps that have no SDK, and throttled `$batch` sub-requests are sent again as a
//! smaller batch and merged back.
//!
//! Never retried: a request whose body streamed through (it cannot be replayed), or one the
//! app or its SDK already retries (no 3 x 3 amplification). Apart from those rules, an
//! idempotent request whose connection broke before any answer (Graph closed a pooled
//! keep-alive connection as it was reused) is sent again on a new connection, at most
//! `MAX_RESENDS_AFTER_CLOSE` times. Comes after `forward` has
//! prepared the head; each attempt gets a fresh copy of it.

use std::hash::{BuildHasher, Hasher};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH};
use http::{request, Request, Response};
use hyper::body::Incoming;
use tracing::debug;

use super::{is_identity_coded, Exchange, Outgoing, Proxy};
use crate::body::{collect_limited, Collected, ProxyBody};
use crate::errors::ProxyError;
use crate::identity::Identity;
use crate::retry::{self, RETRY_ATTEMPT};

/// How often an idempotent request is sent again after its connection broke before any
/// answer (a pooled connection that Graph closed as we reused it); more than one, because
/// Graph may close several idle connections of the pool at once.
const MAX_RESENDS_AFTER_CLOSE: u32 = 2;

impl Proxy {
    /// Sends the request, and sends it again while Graph answers 429/503/504 and the rules
    /// of step 6 allow: the app (or its SDK) does not retry itself, and the body can be
    /// replayed. After the last try Graph's own answer goes back unchanged.
    pub(super) async fn forward_with_retries(
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
        let mut resent_after_close = 0;
        let response = loop {
            attempt += 1;
            exchange.attempts = attempt;
            let request = Request::from_parts(
                clone_head(parts, Some(bytes.len()), attempt),
                ProxyBody::full(bytes.clone()),
            );
            let response = match self.upstream.send(request, &self.metrics).await {
                Ok(response) => response,
                Err(ProxyError::Upstream(e))
                    if !e.is_connect()
                        && resent_after_close < MAX_RESENDS_AFTER_CLOSE
                        && retry::is_replayable_method(&parts.method) =>
                {
                    // A kept-alive connection that Graph closed just as we reused it: the
                    // request never got an answer, and an idempotent one is simply sent
                    // again on a new connection (not a Graph retry: no attempt is counted).
                    debug!(error = %e, "the upstream connection closed under the request; sending it again");
                    resent_after_close += 1;
                    attempt -= 1;
                    self.metrics.upstream_retries.inc();
                    continue;
                }
                Err(e) => return Err(e),
            };
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
                let (tenant, app, mailbox) =
                    (&identity.tenant, &identity.app, identity.mailbox.as_ref());
                match &self.shared_limits {
                    Some(shared) => shared.penalize(tenant, app, mailbox, wait),
                    None => self.limits.penalize(tenant, app, mailbox, wait),
                }
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
