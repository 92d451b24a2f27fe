//! The two Graph calls of the ID look-up, one attempt each: `translateExchangeIds` (also
//! used by the `translate` command) and the app-only fallback that reads an item with
//! `$select=id`.
//!
//! Both carry the caller's own Authorization, `Prefer: IdType="ImmutableId"` and a fresh
//! `client-request-id`; both read the whole answer (bounded) under the upstream's request
//! timeout. Neither retries Graph's answers (the caller decides), but both are read-only,
//! so one whose connection broke before any answer (Graph closed a pooled keep-alive
//! connection as it was reused) is sent again on a new connection, at most
//! `MAX_RESENDS_AFTER_CLOSE` times, as step 6 does for the app's idempotent requests.
//! They never log the token.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::{Caller, LookupError, PREFER_IMMUTABLE};
use crate::body::ProxyBody;
use crate::errors::ProxyError;
use crate::exchange_id::IdFormat;
use crate::metrics::Metrics;
use crate::upstream::Upstream;

const PREFER: HeaderName = HeaderName::from_static("prefer");
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("client-request-id");

/// A 1000-ID answer is about 300 KiB; anything far beyond that is not a translate answer.
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// How often a call whose connection broke before any answer is sent again.
const MAX_RESENDS_AFTER_CLOSE: u32 = 2;

/// An ID written into a URL path keeps only RFC 3986 unreserved characters raw, so `=`
/// becomes `%3D`.
const PATH_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Graph's per-ID failure (`errorDetails`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    pub code: String,
    pub message: String,
}

/// One translateExchangeIds call, as both the proxy and the `translate` command send it.
pub struct TranslateCall<'a> {
    pub mailbox_path: &'a str,
    pub authorization: &'a HeaderValue,
    pub source: IdFormat,
    pub target: IdFormat,
    pub ids: &'a [String],
}

/// Per `sourceId` of the call: the target, or Graph's per-ID error. IDs Graph did not
/// mention are absent.
pub type Translated = HashMap<String, Result<String, IdError>>;

/// Sends one call (one attempt, under the upstream's request timeout for head and body) and
/// matches the answer by `sourceId`. Counts the call in `translate_calls`.
pub async fn translate_exchange_ids(
    upstream: &Upstream,
    metrics: &Metrics,
    call: &TranslateCall<'_>,
) -> Result<Translated, LookupError> {
    let uri = mailbox_uri(upstream, call.mailbox_path, "/translateExchangeIds")?;
    let body = serde_json::json!({
        "inputIds": call.ids,
        "sourceIdType": call.source.graph_name(),
        "targetIdType": call.target.graph_name(),
    });
    let body = Bytes::from(body.to_string());
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = || {
        Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(AUTHORIZATION, call.authorization.clone())
            .header(PREFER, PREFER_IMMUTABLE)
            .header(CONTENT_TYPE, "application/json")
            .header(CLIENT_REQUEST_ID, request_id.as_str())
            .body(ProxyBody::full(body.clone()))
            .map_err(|_| LookupError::BadMailboxPath)
    };
    metrics.translate_calls.inc();
    let (status, headers, answer) = exchange(upstream, metrics, request).await?;
    tracing::debug!(
        client_request_id = %request_id,
        ids = call.ids.len(),
        source = call.source.graph_name(),
        status = status.as_u16(),
        "translateExchangeIds"
    );
    if status != StatusCode::OK {
        return Err(refused(status, &headers, &answer));
    }
    let requested: HashSet<&str> = call.ids.iter().map(String::as_str).collect();
    parse_answer(&answer, &requested)
}

/// The immutable ID of a message, read with the Prefer header; `None` when Graph no longer
/// knows the ID (404).
pub async fn read_immutable_id(
    upstream: &Upstream,
    metrics: &Metrics,
    caller: &Caller,
    regular: &str,
) -> Result<Option<String>, LookupError> {
    let tail = format!(
        "/messages/{}?$select=id",
        utf8_percent_encode(regular, PATH_ESCAPED)
    );
    let uri = mailbox_uri(upstream, &caller.mailbox_path, &tail)?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = || {
        Request::builder()
            .method(Method::GET)
            .uri(uri.clone())
            .header(AUTHORIZATION, caller.authorization.clone())
            .header(PREFER, PREFER_IMMUTABLE)
            .header(CLIENT_REQUEST_ID, request_id.as_str())
            .body(ProxyBody::Empty)
            .map_err(|_| LookupError::BadMailboxPath)
    };
    let (status, headers, answer) = exchange(upstream, metrics, request).await?;
    tracing::debug!(client_request_id = %request_id, status = status.as_u16(), "item read for its immutable ID");
    match status {
        StatusCode::OK => {
            let json: Value = serde_json::from_slice(&answer)
                .map_err(|_| LookupError::BadAnswer("the item is not JSON"))?;
            json.get("id")
                .and_then(Value::as_str)
                .map(|id| Some(id.to_owned()))
                .ok_or(LookupError::BadAnswer("the item has no id"))
        }
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(refused(status, &headers, &answer)),
    }
}

/// `upstream origin + mailbox_path + tail`, refusing a path that is not a plain absolute
/// path (the caller built it from the app's request).
fn mailbox_uri(upstream: &Upstream, mailbox_path: &str, tail: &str) -> Result<Uri, LookupError> {
    if !mailbox_path.starts_with('/') || mailbox_path.contains(['?', '#']) {
        return Err(LookupError::BadMailboxPath);
    }
    let path = format!("{}{tail}", mailbox_path.trim_end_matches('/'));
    Uri::builder()
        .scheme(upstream.origin.scheme.clone())
        .authority(upstream.origin.authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|_| LookupError::BadMailboxPath)
}

/// One request and its whole (bounded) answer, the body under the same deadline as the head.
/// `request` builds the request afresh for each send (a resend after a broken connection).
async fn exchange(
    upstream: &Upstream,
    metrics: &Metrics,
    request: impl Fn() -> Result<Request<ProxyBody>, LookupError>,
) -> Result<(StatusCode, http::HeaderMap, Bytes), LookupError> {
    let mut resent = 0;
    let response = loop {
        match upstream.send(request()?, metrics).await {
            Ok(response) => break response,
            Err(ProxyError::Upstream(e)) if !e.is_connect() && resent < MAX_RESENDS_AFTER_CLOSE => {
                // The connection broke before any answer: Graph cannot have acted on a
                // read-only call, so it simply goes again on a new connection.
                tracing::debug!(error = %e, "the upstream connection closed under an ID look-up call; sending it again");
                resent += 1;
                metrics.upstream_retries.inc();
            }
            Err(ProxyError::UpstreamTimeout(after)) => return Err(LookupError::Timeout(after)),
            Err(other) => return Err(LookupError::Unreachable(Arc::new(other))),
        }
    };
    let (parts, body) = response.into_parts();
    let deadline = upstream.request_timeout();
    let collected = tokio::time::timeout(deadline, Limited::new(body, MAX_ANSWER_BYTES).collect())
        .await
        .map_err(|_| LookupError::Timeout(deadline))?
        .map_err(|e| LookupError::AnswerBroke(Arc::from(e)))?;
    Ok((parts.status, parts.headers, collected.to_bytes()))
}

fn refused(status: StatusCode, headers: &http::HeaderMap, body: &[u8]) -> LookupError {
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|json| json["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    LookupError::Refused {
        status: status.as_u16(),
        code,
        retry_after: crate::retry::retry_after_header(headers, SystemTime::now()),
    }
}

/// `{"value":[{"sourceId", "targetId" | "errorDetails"}]}` matched by `sourceId`. Entries
/// for IDs that were not asked for are ignored; a repeated `sourceId` keeps its first entry.
pub fn parse_answer(answer: &[u8], requested: &HashSet<&str>) -> Result<Translated, LookupError> {
    let json: Value = serde_json::from_slice(answer)
        .map_err(|_| LookupError::BadAnswer("translateExchangeIds answer is not JSON"))?;
    let entries = json
        .get("value")
        .and_then(Value::as_array)
        .ok_or(LookupError::BadAnswer(
            "translateExchangeIds answer has no value list",
        ))?;
    let mut results = Translated::new();
    for entry in entries {
        let Some(source) = entry.get("sourceId").and_then(Value::as_str) else {
            continue;
        };
        if !requested.contains(source) || results.contains_key(source) {
            continue;
        }
        let result = match entry.get("targetId").and_then(Value::as_str) {
            Some(target) => Ok(target.to_owned()),
            None => {
                let details = entry.get("errorDetails");
                let text = |key: &str| {
                    details
                        .and_then(|d| d.get(key))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                Err(IdError {
                    code: text("code"),
                    message: text("message"),
                })
            }
        };
        results.insert(source.to_owned(), result);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn requested<'a>(ids: &[&'a str]) -> HashSet<&'a str> {
        ids.iter().copied().collect()
    }

    #[test]
    fn answers_are_matched_by_source_id_not_by_position() {
        let answer = br#"{"value":[
            {"sourceId":"b","targetId":"B"},
            {"sourceId":"a","errorDetails":{"code":"ErrorItemNotFound","message":"gone"}},
            {"sourceId":"c","targetId":"C"}
        ]}"#;
        let results = parse_answer(answer, &requested(&["a", "b", "c"])).unwrap();
        assert_eq!(results["b"], Ok("B".to_string()));
        assert_eq!(results["c"], Ok("C".to_string()));
        assert_eq!(
            results["a"],
            Err(IdError {
                code: "ErrorItemNotFound".into(),
                message: "gone".into()
            })
        );
    }

    #[test]
    fn unasked_and_repeated_source_ids_are_ignored() {
        let answer = br#"{"value":[
            {"sourceId":"a","targetId":"first"},
            {"sourceId":"a","targetId":"second"},
            {"sourceId":"zzz","targetId":"Z"},
            {"targetId":"orphan"},
            "not an object"
        ]}"#;
        let results = parse_answer(answer, &requested(&["a", "b"])).unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results["a"], Ok("first".to_string()));
    }

    #[test]
    fn an_entry_with_neither_target_nor_details_is_an_empty_error() {
        let results = parse_answer(br#"{"value":[{"sourceId":"a"}]}"#, &requested(&["a"])).unwrap();
        assert_eq!(
            results["a"],
            Err(IdError {
                code: String::new(),
                message: String::new()
            })
        );
    }

    #[test]
    fn answers_that_are_not_a_value_list_are_bad_answers() {
        for answer in [&b"<html>"[..], b"{}", br#"{"value":{}}"#, b""] {
            let error = parse_answer(answer, &requested(&["a"])).unwrap_err();
            assert!(matches!(error, LookupError::BadAnswer(_)), "{error:?}");
        }
    }

    #[test]
    fn refusal_reads_graph_error_code_and_retry_after() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("7"));
        let error = refused(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"error":{"code":"TooManyRequests","message":"x"}}"#,
        );
        match error {
            LookupError::Refused {
                status,
                code,
                retry_after,
            } => {
                assert_eq!(status, 429);
                assert_eq!(code, "TooManyRequests");
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
            }
            other => panic!("unexpected {other:?}"),
        }
        let error = refused(StatusCode::FORBIDDEN, &http::HeaderMap::new(), b"nope");
        assert!(matches!(
            error,
            LookupError::Refused { status: 403, ref code, retry_after: None } if code.is_empty()
        ));
    }

    #[test]
    fn ids_in_fallback_paths_are_escaped() {
        let escaped = utf8_percent_encode("AAMk_a-b=", PATH_ESCAPED).to_string();
        assert_eq!(escaped, "AAMk_a-b%3D");
        let escaped = utf8_percent_encode("a/b+c", PATH_ESCAPED).to_string();
        assert_eq!(escaped, "a%2Fb%2Bc");
    }
}
