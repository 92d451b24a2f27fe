//! The errors the proxy itself produces, and the Graph-shaped answer each one becomes.
//!
//! Inner stages return `Result<_, ProxyError>`; only `pipeline::handle` turns an error into a
//! response, so every failure is logged once and answered in Graph's envelope, which SDKs and
//! old apps already know how to parse. Graph's own error answers never pass through here:
//! they go back to the app unchanged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::ProxyBody;

/// `request-id` on every answer we build, as Graph sends it.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("request-id");

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Graph could not be reached or the exchange broke (refused, TLS failure, reset).
    #[error("upstream unreachable")]
    Upstream(#[source] hyper_util::client::legacy::Error),
    /// Graph accepted the connection but sent no answer within `request_timeout_ms`.
    #[error("upstream did not answer in {0:?}")]
    UpstreamTimeout(Duration),
    /// The upstream request could not be built from what the app sent.
    #[error("request cannot be forwarded: {0}")]
    BadRequest(&'static str),
    /// The app's body broke while we were reading it to rewrite it (client went away).
    #[error("client body could not be read")]
    ClientBody(#[source] hyper::Error),
    /// Graph's answer broke while we were reading it to rewrite it.
    #[error("upstream body could not be read")]
    UpstreamBody(#[source] hyper::Error),
    /// Our own limiter said no (`Retry-After` in whole seconds, at least 1).
    #[error("rate limit reached")]
    TooManyRequests { retry_after: Duration },
    /// Legacy IDs could not be translated and `rewrite.on_error = "fail"`.
    #[error("ID translation failed")]
    Translate(#[source] crate::id_lookup::LookupError),
    /// Forward proxy: CONNECT to a host neither intercepted nor allowed.
    #[error("host is not allowed through this proxy")]
    Forbidden,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::UpstreamBody(_) => StatusCode::BAD_GATEWAY,
            ProxyError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Translate(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The stable `error.code` string of DESIGN.md; apps branch on it, so it never changes.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::Upstream(_) => "BadGateway",
            ProxyError::UpstreamTimeout(_) => "GatewayTimeout",
            ProxyError::BadRequest(_) => "BadRequest",
            ProxyError::ClientBody(_) => "BadRequest",
            ProxyError::UpstreamBody(_) => "BadGateway",
            ProxyError::TooManyRequests { .. } => "TooManyRequests",
            ProxyError::Translate(_) => "BadGateway",
            ProxyError::Forbidden => "Forbidden",
        }
    }

    /// Text for the app: says what happened without leaking internals (no addresses, no
    /// causes that might carry a URL with an ID in it).
    fn message(&self) -> &'static str {
        match self {
            ProxyError::Upstream(_) => "The proxy could not reach Microsoft Graph.",
            ProxyError::UpstreamTimeout(_) => "Microsoft Graph did not answer in time.",
            ProxyError::BadRequest(why) => why,
            ProxyError::ClientBody(_) => "The request body could not be read.",
            ProxyError::UpstreamBody(_) => "The answer from Microsoft Graph broke off.",
            ProxyError::TooManyRequests { .. } => "Please retry again later.",
            ProxyError::Translate(_) => {
                "A legacy ID in the request could not be translated to an immutable ID."
            }
            ProxyError::Forbidden => "This host is not allowed through the proxy.",
        }
    }

    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let mut response = graph_error(self.status(), self.code(), self.message(), request_id);
        if let ProxyError::TooManyRequests { retry_after } = self {
            response.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(retry_after)),
            );
        }
        response
    }
}

/// Whole seconds, rounded up, at least 1: what SDK retry handlers expect to read.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Graph's error envelope:
/// `{"error":{"code","message","innerError":{"request-id","date"}}}`.
pub fn graph_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": { "request-id": request_id, "date": rfc3339_now() }
        }
    });
    let bytes = Bytes::from(body.to_string());
    let mut response = Response::new(ProxyBody::full(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, value);
    }
    response
}

/// The current UTC time as `2026-11-21T19:08:12Z`, without pulling in a date crate.
pub fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_documented_status_and_code() {
        let table = [
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                504,
                "GatewayTimeout",
            ),
            (ProxyError::BadRequest("x"), 400, "BadRequest"),
            (
                ProxyError::TooManyRequests {
                    retry_after: Duration::from_millis(1),
                },
                429,
                "TooManyRequests",
            ),
            (ProxyError::Forbidden, 403, "Forbidden"),
        ];
        for (error, status, code) in table {
            assert_eq!(error.status().as_u16(), status);
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }

    #[test]
    fn too_many_requests_answer_carries_retry_after_and_graph_body() {
        let response = ProxyError::TooManyRequests {
            retry_after: Duration::from_millis(2500),
        }
        .into_response("abc");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        assert_eq!(response.headers()[REQUEST_ID], "abc");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_287_692), "2026-11-21T19:01:32Z");
    }
}
