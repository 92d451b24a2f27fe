//! Retries of Graph's 429, 503 and 504 answers (DESIGN.md step 6), the pure part: how long
//! to wait (`Retry-After` or an exponential backoff with jitter), which requests may be sent
//! again, whether the app already retries by itself, and how a `$batch` answer with
//! throttled sub-responses becomes a smaller `$batch` whose answers are merged back.
//!
//! Nothing here sleeps, sends or reads a clock on its own (except `batch_retry`, which reads
//! `SystemTime::now()` once to resolve HTTP-date `Retry-After` values): the forwarding stage
//! owns the loop, the timer and the attempt counter. Every input is client- or
//! Graph-controlled, so nothing here panics or overflows; a body that is not a well-formed
//! batch yields `None`, and the caller then hands Graph's own answer back unchanged.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, Method};
use serde_json::{Map, Value};

/// Sent on every retry, as the Graph SDKs do, so Graph (and our logs) can tell a replay from
/// a first try; its presence on an incoming request also tells us the app retries itself.
pub const RETRY_ATTEMPT: HeaderName = HeaderName::from_static("retry-attempt");

/// The Graph SDKs' telemetry header. SDKs attach it only to Graph hosts, so through the
/// reverse listener it is usually missing; through the forward proxy it is there.
const SDK_VERSION: HeaderName = HeaderName::from_static("sdkversion");

/// The status a `$batch` sub-request gets when one of its `dependsOn` requests failed.
const FAILED_DEPENDENCY: u16 = 424;

/// `Retry-After` as delta-seconds (`"3"`), decimal seconds (`"2.128"`, which Graph sends
/// although RFC 9110 only has whole seconds) or an HTTP-date.
///
/// Surrounding spaces and tabs are ignored. Anything else (a sign, an exponent such as
/// `"1e400"`, `".5"`, text, bytes that are not UTF-8) is `None`: a malformed header is treated
/// as absent, so the backoff applies. A date already in the past is `Some(ZERO)`: Graph did
/// say when, and that moment has come. Huge values are returned as they are (saturating at
/// `Duration::MAX`); the caller caps them with `retry_max_delay`.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_seconds(text);
    }
    // Every HTTP-date form starts with a day name, so a leading digit above is never a date.
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first `Retry-After` header of a Graph answer, parsed as `parse_retry_after` does.
pub fn retry_after_header(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?;
    parse_retry_after(value.as_bytes(), now)
}

/// `1*DIGIT [ "." 1*DIGIT ]`; digits past nanoseconds are dropped, whole seconds past
/// `u64::MAX` saturate.
fn parse_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: u32 = 0;
    if let Some(fraction) = fraction {
        if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut scale = 100_000_000;
        for digit in fraction.bytes().take(9) {
            nanos += u32::from(digit - b'0') * scale;
            scale /= 10;
        }
    }
    let mut seconds: u64 = 0;
    for digit in whole.bytes() {
        let next = seconds
            .checked_mul(10)
            .and_then(|s| s.checked_add(u64::from(digit - b'0')));
        match next {
            Some(next) => seconds = next,
            None => return Some(Duration::MAX),
        }
    }
    // nanos < 1e9 by construction (at most nine digits), so this never carries or panics.
    Some(Duration::new(seconds, nanos))
}

/// An inner `$batch` Retry-After may arrive as a JSON string or a JSON number.
fn retry_after_json(value: &Value, now: SystemTime) -> Option<Duration> {
    match value {
        Value::String(text) => parse_retry_after(text.as_bytes(), now),
        Value::Number(number) => match number.as_u64() {
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None => {
                let seconds = number.as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
                // Non-negative and finite, so the only failure left is overflow: saturate.
                Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
            }
        },
        _ => None,
    }
}

/// The statuses the Graph SDK retry handlers retry: throttled, unavailable, gateway timeout.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 503 | 504)
}

/// Methods whose repetition does no harm, so a retry cannot create a second item or send a
/// second mail. Other methods are retried only when the proxy holds the body in memory and
/// the caller decides so.
pub fn is_replayable_method(method: &Method) -> bool {
    *method == Method::GET
        || *method == Method::HEAD
        || *method == Method::OPTIONS
        || *method == Method::PUT
        || *method == Method::DELETE
}

/// The app (or its SDK) already retries, so the proxy must not: its own retries times the
/// app's would multiply the load on a throttled mailbox (3 x 3 requests).
///
/// True when the request carries `Retry-Attempt` (it is itself a retry), `SdkVersion`, or a
/// `User-Agent` that `is_sdk_user_agent` recognises.
pub fn client_retries_itself(headers: &HeaderMap) -> bool {
    headers.contains_key(RETRY_ATTEMPT)
        || headers.contains_key(SDK_VERSION)
        || headers
            .get_all(http::header::USER_AGENT)
            .iter()
            .any(|value| is_sdk_user_agent(value.as_bytes()))
}

/// Graph SDK names in the `graph-{lang}` form the SDKs use for their telemetry (`SdkVersion:
/// graph-dotnet/5.56.0, graph-dotnet-core/3.1.0`, older `Graph-dotnet-1.21.0`), matched as
/// the start of a product token so an app merely named "...graph..." is not caught.
const GRAPH_SDK_PRODUCTS: &[&[u8]] = &[
    b"graph-dotnet",
    b"graph-java",
    b"graph-js",
    b"graph-typescript",
    b"graph-python",
    b"graph-go",
    b"graph-php",
    b"graph-powershell",
    b"graph-ruby",
    b"graph-cli",
];

/// A User-Agent of an HTTP stack that has a Graph-style retry handler. The list is kept
/// short on purpose: a miss only means the proxy retries too (the old behaviour), while a
/// false match takes retries away from an app that has none. Recognised, case-insensitive:
/// - `kiota` anywhere: every Kiota HTTP library appends its product (`kiota-dotnet/1.x`,
///   `kiota-java`, `kiota-typescript`, `kiota-go`, `kiota-python`, `kiota-php`,
///   `kiota-ruby`) and carries the retry handler the current Graph SDKs use;
/// - `msgraph-sdk` anywhere (the SDK package names, e.g. `msgraph-sdk-python`);
/// - a product token named `graph-{lang}` (`GRAPH_SDK_PRODUCTS`), optionally followed by
///   `-core` or a version;
/// - the Graph PowerShell SDK, which sends `Mozilla/5.0 (...) PowerShell/7.4.0 Get-MgUser`:
///   a `PowerShell/x` token followed by a `Verb-Mg...` cmdlet name (plain
///   `Invoke-RestMethod` has no cmdlet token there, so it does not match).
pub fn is_sdk_user_agent(user_agent: &[u8]) -> bool {
    let lower = user_agent.to_ascii_lowercase();
    if contains(&lower, b"kiota") || contains(&lower, b"msgraph-sdk") {
        return true;
    }
    let tokens: Vec<&[u8]> = user_agent
        .split(|b| matches!(b, b' ' | b'\t' | b',' | b';' | b'(' | b')'))
        .filter(|token| !token.is_empty())
        .collect();
    let names_graph_sdk = tokens.iter().any(|token| {
        let name = token.split(|b| *b == b'/').next().unwrap_or(token);
        GRAPH_SDK_PRODUCTS.iter().any(|product| {
            name.len() >= product.len()
                && name[..product.len()].eq_ignore_ascii_case(product)
                && (name.len() == product.len() || name[product.len()] == b'-')
        })
    });
    let runs_mg_cmdlet = tokens.windows(2).any(|pair| {
        let host = pair[0].to_ascii_lowercase();
        host.starts_with(b"powershell/") && is_mg_cmdlet(pair[1])
    });
    names_graph_sdk || runs_mg_cmdlet
}

/// `Get-MgUser`, `Invoke-MgGraphRequest`, `New-MgBetaUser`: a verb, `-Mg`, then a noun.
fn is_mg_cmdlet(token: &[u8]) -> bool {
    let Some(dash) = token.iter().position(|b| *b == b'-') else {
        return false;
    };
    let (verb, noun) = (&token[..dash], &token[dash + 1..]);
    !verb.is_empty()
        && verb.iter().all(u8::is_ascii_alphabetic)
        && noun.len() > 2
        && noun.starts_with(b"Mg")
        && noun[2].is_ascii_uppercase()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// How long to wait between tries when Graph did not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait ceiling before the first retry; it doubles for every later one.
    pub base: Duration,
    /// No wait exceeds this, not even one Graph asked for: the app is waiting on us.
    pub max: Duration,
}

impl Backoff {
    /// Wait before retry number `attempt` (1-based; 0 counts as 1).
    ///
    /// Graph's `Retry-After`, when sent, wins over the backoff (capped at `max`), because
    /// Graph keeps counting requests sent while throttled. Otherwise the ceiling is
    /// `base * 2^(attempt-1)` capped at `max`, with *equal jitter*: the wait is in
    /// `[ceiling/2, ceiling]`, at `ceiling/2 + ceiling/2 * jitter`. Full jitter would
    /// sometimes retry almost at once, which a throttled mailbox only punishes.
    /// `jitter` is a number in `[0, 1)` from the caller; out-of-range values are clamped and
    /// NaN counts as 0.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max);
        }
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let spread = Duration::try_from_secs_f64(half.as_secs_f64() * jitter)
            .unwrap_or(half)
            .min(half);
        // ceiling - half >= half >= spread, and their sum is at most ceiling: no overflow.
        (ceiling - half) + spread
    }

    fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        1u32.checked_shl(doublings)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |wait| wait.min(self.max))
    }
}

/// A smaller `$batch` that repeats only what Graph throttled.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRetry {
    /// The `$batch` request body to send: the original's entries to retry, in their order,
    /// untouched except for `dependsOn`.
    pub body: Vec<u8>,
    /// The ids of those entries, as the app spelled them.
    pub ids: Vec<String>,
    /// The longest inner `Retry-After`: Graph asks to retry them all after the longest one.
    pub retry_after: Option<Duration>,
}

/// `batch_retry_at` with the current time, for HTTP-date inner `Retry-After` values.
pub fn batch_retry(request: &[u8], response: &[u8]) -> Option<BatchRetry> {
    batch_retry_at(request, response, SystemTime::now())
}

/// Which sub-requests of a `$batch` to send again, given the original request body and
/// Graph's 200 answer. `None` when nothing is retryable or either body is not a batch
/// (not JSON, no `requests`/`responses` array, an entry without a string `id`, duplicate
/// ids, a response without a numeric `status`, a `dependsOn` that is not a list of strings).
///
/// - Sub-responses 429/503/504 are retried.
/// - A 424 whose `dependsOn` names a retried request is retried with it, provided each of its
///   other dependencies succeeded (2xx/3xx) or is retried too; a dependency that failed for
///   good (a 4xx, or a 424 of its own that is not retried) keeps it out, and so its own
///   dependents too. A dependent that somehow did not get 424 is never repeated: it ran.
/// - In the smaller batch, `dependsOn` keeps only retried ids: the others are done. A list
///   left empty is removed.
pub fn batch_retry_at(request: &[u8], response: &[u8], now: SystemTime) -> Option<BatchRetry> {
    let mut request: Value = serde_json::from_slice(request).ok()?;
    let response: Value = serde_json::from_slice(response).ok()?;
    let outcomes = sub_responses(&response, now)?;
    let entries = request.get_mut("requests")?.as_array_mut()?;
    let steps = sub_requests(entries)?;

    let mut retried: HashSet<&str> = steps
        .iter()
        .filter(|step| {
            outcomes
                .get(&step.key)
                .is_some_and(|outcome| is_retryable_status(outcome.status))
        })
        .map(|step| step.key.as_str())
        .collect();
    if retried.is_empty() {
        return None;
    }
    let retry_after = retried
        .iter()
        .filter_map(|key| outcomes.get(*key).and_then(|outcome| outcome.retry_after))
        .max();

    let succeeded = |key: &str| {
        outcomes
            .get(key)
            .is_some_and(|outcome| (200..400).contains(&outcome.status))
    };
    let blocked: Vec<&Step> = steps
        .iter()
        .filter(|step| {
            !step.depends_on.is_empty()
                && outcomes
                    .get(&step.key)
                    .is_some_and(|outcome| outcome.status == FAILED_DEPENDENCY)
        })
        .collect();
    // Each pass adds at least one request or stops, so this ends within blocked.len() + 1
    // passes; `retried` only grows, so the order of entries does not matter.
    loop {
        let mut added = false;
        for step in &blocked {
            if retried.contains(step.key.as_str()) {
                continue;
            }
            let waits_on_retry = step.depends_on.iter().any(|d| retried.contains(d.as_str()));
            let rest_done = step
                .depends_on
                .iter()
                .all(|d| retried.contains(d.as_str()) || succeeded(d));
            if waits_on_retry && rest_done {
                retried.insert(step.key.as_str());
                added = true;
            }
        }
        if !added {
            break;
        }
    }

    let mut ids = Vec::new();
    let mut kept = Vec::new();
    for (mut entry, step) in std::mem::take(entries).into_iter().zip(&steps) {
        if !retried.contains(step.key.as_str()) {
            continue;
        }
        if let Value::Object(fields) = &mut entry {
            keep_retried_dependencies(fields, &retried);
        }
        ids.push(step.id.clone());
        kept.push(entry);
    }
    *entries = kept;
    let body = serde_json::to_vec(&request).ok()?;
    Some(BatchRetry {
        body,
        ids,
        retry_after,
    })
}

/// One `$batch` sub-request, as far as retries care.
struct Step {
    /// The id, lowercased: batch ids are case-insensitive.
    key: String,
    /// The id as the app wrote it.
    id: String,
    /// Lowercased `dependsOn` ids.
    depends_on: Vec<String>,
}

fn sub_requests(entries: &[Value]) -> Option<Vec<Step>> {
    let mut seen = HashSet::new();
    let mut steps = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = entry.get("id")?.as_str()?;
        let key = id.to_lowercase();
        if !seen.insert(key.clone()) {
            return None;
        }
        let depends_on = match entry.get("dependsOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|d| d.as_str().map(str::to_lowercase))
                .collect::<Option<Vec<_>>>()?,
            Some(_) => return None,
        };
        steps.push(Step {
            key,
            id: id.to_owned(),
            depends_on,
        });
    }
    Some(steps)
}

/// What Graph answered for one sub-request.
struct Outcome {
    status: u16,
    retry_after: Option<Duration>,
}

/// Sub-responses by lowercased id. Graph answers in any order; a repeated id keeps its first.
fn sub_responses(response: &Value, now: SystemTime) -> Option<HashMap<String, Outcome>> {
    let mut outcomes = HashMap::new();
    for entry in response.get("responses")?.as_array()? {
        let id = entry.get("id")?.as_str()?;
        let status = u16::try_from(entry.get("status")?.as_u64()?).ok()?;
        let retry_after = entry
            .get("headers")
            .and_then(Value::as_object)
            .and_then(|headers| {
                headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
            })
            .and_then(|(_, value)| retry_after_json(value, now));
        outcomes.entry(id.to_lowercase()).or_insert(Outcome {
            status,
            retry_after,
        });
    }
    Some(outcomes)
}

/// Dependencies outside the retry already ran (or the entry would not be retried), so
/// naming them in the smaller batch would only make Graph reject it as unknown ids.
fn keep_retried_dependencies(fields: &mut Map<String, Value>, retried: &HashSet<&str>) {
    let Some(Value::Array(list)) = fields.get_mut("dependsOn") else {
        return;
    };
    list.retain(|d| {
        d.as_str()
            .is_some_and(|d| retried.contains(d.to_lowercase().as_str()))
    });
    if list.is_empty() {
        // shift_remove keeps the order of the other fields (swap_remove would not).
        fields.shift_remove("dependsOn");
    }
}

/// Graph's original `$batch` answer with the retry's sub-responses put in place of the ones
/// they repeat (matched by id, case-insensitively). Everything else, the order of
/// `responses` included, stays as Graph sent it. `None` when either body is not a batch
/// answer (then the caller returns the original unchanged).
pub fn merge_batch_responses(original: &[u8], retry: &[u8]) -> Option<Vec<u8>> {
    let mut original: Value = serde_json::from_slice(original).ok()?;
    let retry: Value = serde_json::from_slice(retry).ok()?;
    let mut replacements: HashMap<String, &Value> = HashMap::new();
    for entry in retry.get("responses")?.as_array()? {
        let key = entry.get("id")?.as_str()?.to_lowercase();
        replacements.entry(key).or_insert(entry);
    }
    for entry in original.get_mut("responses")?.as_array_mut()? {
        let Some(key) = entry
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_lowercase)
        else {
            continue;
        };
        if let Some(replacement) = replacements.remove(&key) {
            *entry = replacement.clone();
        }
    }
    serde_json::to_vec(&original).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    /// 2015-10-21T07:28:00Z, the instant of the RFC 9110 date example.
    const OCT_21_2015: u64 = 1_445_412_480;

    fn parse(value: &str) -> Option<Duration> {
        parse_retry_after(value.as_bytes(), at(OCT_21_2015))
    }

    #[test]
    fn whole_seconds_are_delta_seconds() {
        assert_eq!(parse("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("315"), Some(Duration::from_secs(315)));
        assert_eq!(parse("007"), Some(Duration::from_secs(7)));
    }

    #[test]
    fn graphs_decimal_seconds_keep_their_fraction() {
        assert_eq!(parse("2.128"), Some(Duration::from_millis(2128)));
        assert_eq!(parse("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse("1.000000001"), Some(Duration::new(1, 1)));
    }

    #[test]
    fn fraction_digits_beyond_nanoseconds_are_dropped() {
        assert_eq!(parse("1.1234567899"), Some(Duration::new(1, 123_456_789)));
    }

    #[test]
    fn surrounding_spaces_and_tabs_are_ignored() {
        assert_eq!(parse("  3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse("\t2.5\t"), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn negative_and_garbage_values_are_absent() {
        for value in [
            "-1", "+3", "abc", "", "   ", "3s", "3 4", "1e400", "1e3", ".5", "3.", "1.2.3", "NaN",
            "inf", "0x10", "３",
        ] {
            assert_eq!(parse(value), None, "{value:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_absent() {
        assert_eq!(parse_retry_after(b"\xff3", at(0)), None);
        assert_eq!(parse_retry_after(b"3\xc3", at(0)), None);
    }

    #[test]
    fn huge_whole_seconds_come_back_as_is_or_saturate() {
        assert_eq!(
            parse("18446744073709551615"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse("18446744073709551616"), Some(Duration::MAX));
        assert_eq!(parse(&"9".repeat(400)), Some(Duration::MAX));
        assert_eq!(parse(&format!("{}.5", "9".repeat(40))), Some(Duration::MAX));
    }

    #[test]
    fn a_future_http_date_waits_until_then() {
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:10 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse(" Wed, 21 Oct 2015 08:28:00 GMT "),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn obsolete_http_date_forms_are_understood() {
        assert_eq!(
            parse("Wednesday, 21-Oct-15 07:28:05 GMT"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse("Wed Oct 21 07:28:07 2015"),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn a_past_or_present_http_date_means_retry_now() {
        assert_eq!(parse("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
    }

    #[test]
    fn a_malformed_http_date_is_absent() {
        assert_eq!(parse("Wed, 32 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse("Wed, 21 Oct 2015"), None);
        assert_eq!(parse("tomorrow"), None);
    }

    #[test]
    fn retry_after_header_reads_the_first_value() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after_header(&headers, at(0)), None);
        headers.append(http::header::RETRY_AFTER, HeaderValue::from_static("4"));
        headers.append(http::header::RETRY_AFTER, HeaderValue::from_static("9"));
        assert_eq!(
            retry_after_header(&headers, at(0)),
            Some(Duration::from_secs(4))
        );
    }

    #[test]
    fn only_throttling_and_unavailability_are_retried() {
        for status in [429, 503, 504] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [200, 400, 401, 404, 424, 500, 502, 0, u16::MAX] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[test]
    fn only_methods_safe_to_repeat_are_replayable() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_replayable_method(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT, Method::TRACE] {
            assert!(!is_replayable_method(&method), "{method}");
        }
        let custom = Method::from_bytes(b"MERGE").expect("a valid token");
        assert!(!is_replayable_method(&custom));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn retry_attempt_header_is_lowercase_retry_attempt() {
        assert_eq!(RETRY_ATTEMPT.as_str(), "retry-attempt");
    }

    #[test]
    fn a_request_that_is_itself_a_retry_is_not_retried_again() {
        assert!(client_retries_itself(&headers(&[("retry-attempt", "1")])));
    }

    #[test]
    fn an_sdkversion_header_means_the_sdk_retries() {
        assert!(client_retries_itself(&headers(&[(
            "sdkversion",
            "graph-dotnet/5.56.0, graph-dotnet-core/3.1.0"
        )])));
    }

    #[test]
    fn kiota_user_agents_mean_the_client_retries() {
        for agent in [
            "kiota-dotnet/1.9.11",
            "Foo/1.0 kiota-java/1.8.8",
            "kiota-typescript/1.0.0-preview.50",
            "KIOTA-GO/1.0",
            "kiota-python/1.3.1",
            "kiota-ruby/0.2.0",
        ] {
            let mut map = HeaderMap::new();
            map.insert(http::header::USER_AGENT, HeaderValue::from_static(agent));
            assert!(client_retries_itself(&map), "{agent}");
        }
    }

    #[test]
    fn graph_sdk_product_tokens_mean_the_client_retries() {
        for agent in [
            "graph-java/6.0.0",
            "Graph-dotnet-1.21.0",
            "MyApp/2.0 (Windows) graph-dotnet-core/3.1.0",
            "graph-js/3.0.7",
            "msgraph-sdk-python/1.2.0",
            "node graph-powershell/2.10",
        ] {
            assert!(is_sdk_user_agent(agent.as_bytes()), "{agent}");
        }
    }

    #[test]
    fn graph_powershell_cmdlets_mean_the_client_retries() {
        assert!(is_sdk_user_agent(
            b"Mozilla/5.0 (Windows NT 10.0; Microsoft Windows 10.0.22631; en-US) PowerShell/7.4.1 Get-MgUser"
        ));
        assert!(is_sdk_user_agent(
            b"Mozilla/5.0 (Linux; Ubuntu 22.04; en-US) PowerShell/7.4.0 Invoke-MgGraphRequest"
        ));
        assert!(is_sdk_user_agent(
            b"Mozilla/5.0 (Macintosh; Darwin 23.0; en-GB) PowerShell/5.1.0 New-MgBetaUser"
        ));
    }

    #[test]
    fn ordinary_user_agents_get_proxy_retries() {
        for agent in [
            "",
            "curl/8.5.0",
            "Mozilla/5.0 (Windows NT 10.0; Microsoft Windows 10.0.22631; en-US) PowerShell/7.4.1",
            "Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.22621.2506",
            "PowerShell/7.4.1 Get-Mgmt",
            "PowerShell/7.4.1 Get-Content",
            "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
            "MyGraphApp/1.0",
            "autograph-js/1.0",
            "graph-javascriptish/1.0",
            "python-requests/2.31.0",
            "okhttp/4.12.0",
            "Go-http-client/2.0",
        ] {
            assert!(!is_sdk_user_agent(agent.as_bytes()), "{agent}");
            let mut map = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(agent) {
                map.insert(http::header::USER_AGENT, value);
            }
            assert!(!client_retries_itself(&map), "{agent}");
        }
    }

    #[test]
    fn any_of_several_user_agent_headers_counts() {
        let map = headers(&[("user-agent", "curl/8"), ("user-agent", "kiota-go/1.0")]);
        assert!(client_retries_itself(&map));
    }

    #[test]
    fn a_user_agent_with_opaque_bytes_is_still_examined() {
        let mut map = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"app\xe9/1 kiota-dotnet/1.0").expect("obs-text");
        map.insert(http::header::USER_AGENT, value);
        assert!(client_retries_itself(&map));
        assert!(!is_sdk_user_agent(b"\xff\xfe\x00"));
    }

    #[test]
    fn no_headers_means_the_proxy_retries() {
        assert!(!client_retries_itself(&HeaderMap::new()));
        assert!(!client_retries_itself(&headers(&[(
            "client-request-id",
            "1"
        )])));
    }

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_then_stops_at_max() {
        // Jitter 1.0 (clamped: the top of the range) shows the ceiling itself.
        let waits: Vec<_> = (1..=7)
            .map(|attempt| backoff().delay(attempt, None, 1.0))
            .map(|wait| wait.as_millis())
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    }

    #[test]
    fn jitter_zero_waits_half_the_ceiling() {
        assert_eq!(backoff().delay(1, None, 0.0), Duration::from_millis(250));
        assert_eq!(backoff().delay(3, None, 0.0), Duration::from_millis(1000));
        assert_eq!(backoff().delay(9, None, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn jitter_spreads_waits_within_half_and_whole_ceiling() {
        for attempt in 1..=8 {
            let ceiling = backoff().ceiling(attempt);
            for step in 0..100 {
                let jitter = f64::from(step) / 100.0;
                let wait = backoff().delay(attempt, None, jitter);
                assert!(wait >= ceiling / 2 && wait <= ceiling, "{attempt} {jitter}");
            }
        }
        assert_eq!(backoff().delay(2, None, 0.5), Duration::from_millis(750));
    }

    #[test]
    fn jitter_out_of_range_is_clamped() {
        assert_eq!(
            backoff().delay(2, None, f64::NAN),
            Duration::from_millis(500)
        );
        assert_eq!(backoff().delay(2, None, -3.0), Duration::from_millis(500));
        assert_eq!(backoff().delay(2, None, 7.0), Duration::from_millis(1000));
        assert_eq!(
            backoff().delay(2, None, f64::INFINITY),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn attempt_zero_counts_as_the_first() {
        assert_eq!(backoff().delay(0, None, 0.0), backoff().delay(1, None, 0.0));
    }

    #[test]
    fn absurd_attempts_and_bases_saturate_at_max() {
        let huge = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(
            huge.delay(u32::MAX, None, 0.0),
            Duration::MAX - Duration::MAX / 2
        );
        let nearly_whole = huge.delay(1, None, 0.999);
        assert!(nearly_whole > Duration::MAX / 2 + Duration::MAX / 4);
        assert_eq!(backoff().delay(u32::MAX, None, 0.0), Duration::from_secs(5));
        assert_eq!(backoff().delay(33, None, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn a_zero_base_never_waits() {
        let eager = Backoff {
            base: Duration::ZERO,
            max: Duration::from_secs(1),
        };
        assert_eq!(eager.delay(5, None, 0.7), Duration::ZERO);
    }

    #[test]
    fn graphs_retry_after_beats_the_backoff() {
        let wait = backoff().delay(1, Some(Duration::from_millis(2128)), 0.9);
        assert_eq!(wait, Duration::from_millis(2128));
        assert_eq!(
            backoff().delay(6, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff().delay(1, Some(Duration::ZERO), 0.5),
            Duration::ZERO
        );
    }

    #[test]
    fn graphs_retry_after_is_capped_at_max() {
        assert_eq!(
            backoff().delay(1, Some(Duration::from_secs(315)), 0.0),
            Duration::from_secs(10)
        );
        assert_eq!(
            backoff().delay(1, Some(Duration::MAX), 0.0),
            Duration::from_secs(10)
        );
    }

    fn bytes(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).expect("a Value always serialises")
    }

    fn json_of(body: &[u8]) -> Value {
        serde_json::from_slice(body).expect("the function wrote valid JSON")
    }

    fn get(id: &str) -> Value {
        json!({"id": id, "method": "GET", "url": format!("/me/messages/{id}")})
    }

    fn answer(id: &str, status: u16) -> Value {
        json!({"id": id, "status": status, "headers": {}, "body": {}})
    }

    fn throttled(id: &str, retry_after: Value) -> Value {
        json!({
            "id": id,
            "status": 429,
            "headers": {"Retry-After": retry_after, "Content-Type": "application/json"},
            "body": {"error": {"code": "TooManyRequests", "message": "Please retry again later."}}
        })
    }

    fn retry_of(requests: Value, responses: Value) -> Option<BatchRetry> {
        batch_retry_at(
            &bytes(&json!({ "requests": requests })),
            &bytes(&json!({ "responses": responses })),
            at(OCT_21_2015),
        )
    }

    #[test]
    fn only_throttled_and_unavailable_sub_requests_are_retried() {
        let retry = retry_of(
            json!([get("1"), get("2"), get("3"), get("4"), get("5"), get("6")]),
            json!([
                answer("1", 200),
                throttled("2", json!("3")),
                answer("3", 503),
                answer("4", 404),
                answer("5", 504),
                answer("6", 500)
            ]),
        )
        .expect("three are retryable");
        assert_eq!(retry.ids, ["2", "3", "5"]);
        assert_eq!(
            json_of(&retry.body),
            json!({"requests": [get("2"), get("3"), get("5")]})
        );
        assert_eq!(retry.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn nothing_retryable_means_no_retry() {
        let retry = retry_of(
            json!([get("1"), get("2")]),
            json!([answer("1", 200), answer("2", 400)]),
        );
        assert_eq!(retry, None);
        assert_eq!(retry_of(json!([]), json!([])), None);
    }

    #[test]
    fn the_longest_inner_retry_after_wins() {
        let retry = retry_of(
            json!([get("a"), get("b"), get("c"), get("d")]),
            json!([
                throttled("a", json!("2.128")),
                throttled("b", json!(7)),
                throttled("c", json!("Wed, 21 Oct 2015 07:28:05 GMT")),
                throttled("d", json!("junk"))
            ]),
        )
        .expect("all throttled");
        assert_eq!(retry.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(retry.ids, ["a", "b", "c", "d"]);
    }

    #[test]
    fn inner_retry_after_is_found_whatever_its_case_or_type() {
        let responses = json!([
            {"id": "1", "status": 429, "headers": {"retry-after": 1.5}},
            {"id": "2", "status": 503, "headers": {"RETRY-AFTER": "2"}}
        ]);
        let retry = retry_of(json!([get("1"), get("2")]), responses).expect("retryable");
        assert_eq!(retry.retry_after, Some(Duration::from_secs(2)));

        let retry = retry_of(
            json!([get("1")]),
            json!([{"id": "1", "status": 429, "headers": {"Retry-After": 4.25}}]),
        )
        .expect("retryable");
        assert_eq!(retry.retry_after, Some(Duration::from_millis(4250)));
    }

    #[test]
    fn inner_retry_after_missing_or_unusable_is_none() {
        let retry = retry_of(
            json!([get("1"), get("2"), get("3"), get("4")]),
            json!([
                {"id": "1", "status": 429},
                {"id": "2", "status": 429, "headers": null},
                {"id": "3", "status": 429, "headers": {"Retry-After": -1}},
                {"id": "4", "status": 429, "headers": {"Retry-After": [5]}}
            ]),
        )
        .expect("retryable");
        assert_eq!(retry.retry_after, None);
        assert_eq!(retry.ids.len(), 4);
    }

    #[test]
    fn a_huge_inner_retry_after_number_saturates() {
        let retry = retry_of(
            json!([get("1")]),
            json!([{"id": "1", "status": 429, "headers": {"Retry-After": 1e300}}]),
        )
        .expect("retryable");
        assert_eq!(retry.retry_after, Some(Duration::MAX));
    }

    #[test]
    fn sub_request_ids_match_case_insensitively() {
        let retry = retry_of(
            json!([get("Alpha"), get("beta")]),
            json!([throttled("ALPHA", json!("1")), answer("BETA", 200)]),
        )
        .expect("alpha is throttled");
        assert_eq!(retry.ids, ["Alpha"]);
    }

    #[test]
    fn dependents_of_a_throttled_request_are_retried_with_it() {
        let mut second = get("2");
        second["dependsOn"] = json!(["1"]);
        let mut third = get("3");
        third["dependsOn"] = json!(["2"]);
        let retry = retry_of(
            json!([get("1"), second.clone(), third.clone(), get("4")]),
            json!([
                throttled("1", json!("5")),
                answer("2", 424),
                answer("3", 424),
                answer("4", 200)
            ]),
        )
        .expect("1 is throttled");
        assert_eq!(retry.ids, ["1", "2", "3"]);
        assert_eq!(
            json_of(&retry.body),
            json!({"requests": [get("1"), second, third]})
        );
    }

    #[test]
    fn dependents_listed_before_their_dependency_are_still_carried() {
        let mut first = get("1");
        first["dependsOn"] = json!(["2"]);
        let mut second = get("2");
        second["dependsOn"] = json!(["3"]);
        let retry = retry_of(
            json!([first, second, get("3")]),
            json!([answer("1", 424), answer("2", 424), answer("3", 503)]),
        )
        .expect("3 is unavailable");
        assert_eq!(retry.ids, ["1", "2", "3"]);
    }

    #[test]
    fn dependencies_that_already_succeeded_are_dropped_from_dependson() {
        let mut throttled_step = get("2");
        throttled_step["dependsOn"] = json!(["1"]);
        let mut waiting =
            json!({"id": "3", "dependsOn": ["1", "2"], "method": "GET", "url": "/me"});
        let retry = retry_of(
            json!([get("1"), throttled_step, waiting.clone()]),
            json!([
                answer("1", 201),
                throttled("2", json!("1")),
                answer("3", 424)
            ]),
        )
        .expect("2 is throttled");
        assert_eq!(retry.ids, ["2", "3"]);
        waiting["dependsOn"] = json!(["2"]);
        assert_eq!(
            json_of(&retry.body),
            json!({"requests": [get("2"), waiting]})
        );
    }

    #[test]
    fn dependson_ids_of_other_case_are_kept_when_retried() {
        let mut dependent = get("b");
        dependent["dependsOn"] = json!(["A"]);
        let retry = retry_of(
            json!([get("a"), dependent.clone()]),
            json!([throttled("a", json!(1)), answer("b", 424)]),
        )
        .expect("a is throttled");
        assert_eq!(retry.ids, ["a", "b"]);
        assert_eq!(json_of(&retry.body)["requests"][1], dependent);
    }

    #[test]
    fn dependents_of_a_request_that_failed_for_good_are_not_retried() {
        let mut dependent = get("3");
        dependent["dependsOn"] = json!(["1", "2"]);
        let mut chained = get("4");
        chained["dependsOn"] = json!(["3"]);
        let retry = retry_of(
            json!([get("1"), get("2"), dependent, chained, get("5")]),
            json!([
                answer("1", 403),
                throttled("2", json!("1")),
                answer("3", 424),
                answer("4", 424),
                throttled("5", json!("2"))
            ]),
        )
        .expect("2 and 5 are throttled");
        assert_eq!(retry.ids, ["2", "5"]);
        assert_eq!(retry.retry_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_dependent_that_ran_is_never_repeated() {
        let mut dependent = get("2");
        dependent["dependsOn"] = json!(["1"]);
        let retry = retry_of(
            json!([get("1"), dependent]),
            json!([throttled("1", json!(1)), answer("2", 201)]),
        )
        .expect("1 is throttled");
        assert_eq!(retry.ids, ["1"]);
    }

    #[test]
    fn a_dependent_on_an_unknown_id_is_not_carried() {
        let mut dependent = get("2");
        dependent["dependsOn"] = json!(["1", "ghost"]);
        let retry = retry_of(
            json!([get("1"), dependent]),
            json!([throttled("1", json!(1)), answer("2", 424)]),
        )
        .expect("1 is throttled");
        assert_eq!(retry.ids, ["1"]);
    }

    #[test]
    fn a_sub_request_without_a_response_is_not_retried() {
        let retry = retry_of(
            json!([get("1"), get("2")]),
            json!([throttled("1", json!(1))]),
        )
        .expect("1 is throttled");
        assert_eq!(retry.ids, ["1"]);
    }

    #[test]
    fn other_request_fields_and_their_order_survive() {
        let entry = json!({
            "url": "/me/events",
            "dependsOn": ["0"],
            "id": "1",
            "method": "POST",
            "headers": {"Content-Type": "application/json", "Prefer": "IdType=\"ImmutableId\""},
            "body": {"subject": "Plan", "attendees": []}
        });
        let request = json!({"requests": [get("0"), entry]});
        let response = json!({"responses": [answer("0", 200), throttled("1", json!("1"))]});
        let retry = batch_retry(&bytes(&request), &bytes(&response)).expect("1 is throttled");
        let text = String::from_utf8(retry.body).expect("JSON is UTF-8");
        assert_eq!(
            text,
            r#"{"requests":[{"url":"/me/events","id":"1","method":"POST","headers":{"Content-Type":"application/json","Prefer":"IdType=\"ImmutableId\""},"body":{"subject":"Plan","attendees":[]}}]}"#
        );
    }

    #[test]
    fn malformed_batches_give_no_retry() {
        let good_request = bytes(&json!({"requests": [get("1")]}));
        let good_response = bytes(&json!({"responses": [throttled("1", json!(1))]}));
        assert!(batch_retry(&good_request, &good_response).is_some());

        for request in [
            &b""[..],
            b"not json",
            b"[]",
            b"{}",
            b"{\"requests\": {}}",
            b"{\"requests\": [1]}",
            b"{\"requests\": [{\"method\": \"GET\"}]}",
            b"{\"requests\": [{\"id\": 1, \"method\": \"GET\"}]}",
            b"{\"requests\": [{\"id\": \"1\"}, {\"id\": \"1\"}]}",
            b"{\"requests\": [{\"id\": \"1\"}, {\"id\": \"x\", \"dependsOn\": \"1\"}]}",
            b"{\"requests\": [{\"id\": \"1\", \"dependsOn\": [2]}]}",
            b"{\"requests\": [{\"id\": \"1\"}",
        ] {
            assert_eq!(batch_retry(request, &good_response), None, "{request:?}");
        }
        for response in [
            &b""[..],
            b"null",
            b"{\"responses\": null}",
            b"{\"responses\": [{\"id\": \"1\"}]}",
            b"{\"responses\": [{\"id\": \"1\", \"status\": \"429\"}]}",
            b"{\"responses\": [{\"id\": \"1\", \"status\": 70000}]}",
            b"{\"responses\": [{\"id\": \"1\", \"status\": -429}]}",
            b"{\"responses\": [{\"status\": 429}]}",
            b"{\"error\": {\"code\": \"BadRequest\"}}",
        ] {
            assert_eq!(batch_retry(&good_request, response), None, "{response:?}");
        }
    }

    #[test]
    fn request_ids_differing_only_in_case_are_duplicates() {
        let request = bytes(&json!({"requests": [get("a"), get("A")]}));
        let response = bytes(&json!({"responses": [throttled("a", json!(1))]}));
        assert_eq!(batch_retry(&request, &response), None);
    }

    #[test]
    fn merge_replaces_retried_answers_and_keeps_the_rest_in_order() {
        let original = json!({
            "responses": [
                answer("3", 200),
                throttled("1", json!("2")),
                answer("4", 404),
                answer("2", 424)
            ],
            "@odata.extra": true
        });
        let retry = json!({"responses": [
            {"id": "2", "status": 201, "headers": {}, "body": {"id": "new"}},
            {"id": "1", "status": 200, "headers": {}, "body": {"value": []}}
        ]});
        let merged = merge_batch_responses(&bytes(&original), &bytes(&retry)).expect("both valid");
        assert_eq!(
            json_of(&merged),
            json!({
                "responses": [
                    answer("3", 200),
                    {"id": "1", "status": 200, "headers": {}, "body": {"value": []}},
                    answer("4", 404),
                    {"id": "2", "status": 201, "headers": {}, "body": {"id": "new"}}
                ],
                "@odata.extra": true
            })
        );
    }

    #[test]
    fn merge_matches_ids_case_insensitively() {
        let original = json!({"responses": [answer("Msg", 429), answer("other", 200)]});
        let retry = json!({"responses": [answer("MSG", 200)]});
        let merged = merge_batch_responses(&bytes(&original), &bytes(&retry)).expect("valid");
        assert_eq!(
            json_of(&merged),
            json!({"responses": [answer("MSG", 200), answer("other", 200)]})
        );
    }

    #[test]
    fn a_still_throttled_retry_answer_replaces_the_old_one() {
        let original = json!({"responses": [throttled("1", json!("1"))]});
        let retry = json!({"responses": [throttled("1", json!("9"))]});
        let merged = merge_batch_responses(&bytes(&original), &bytes(&retry)).expect("valid");
        assert_eq!(json_of(&merged), retry);
    }

    #[test]
    fn merge_ignores_retry_answers_for_unknown_ids() {
        let original = json!({"responses": [answer("1", 429), {"status": 200}]});
        let retry = json!({"responses": [answer("9", 200), answer("1", 200)]});
        let merged = merge_batch_responses(&bytes(&original), &bytes(&retry)).expect("valid");
        assert_eq!(
            json_of(&merged),
            json!({"responses": [answer("1", 200), {"status": 200}]})
        );
    }

    #[test]
    fn merge_with_an_empty_retry_changes_nothing() {
        let original = json!({"responses": [answer("1", 429)]});
        let merged =
            merge_batch_responses(&bytes(&original), br#"{"responses":[]}"#).expect("valid");
        assert_eq!(json_of(&merged), original);
    }

    #[test]
    fn merge_of_malformed_bodies_is_none() {
        let good = bytes(&json!({"responses": [answer("1", 200)]}));
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"responses\": 3}",
            b"{\"error\": {\"code\": \"BadRequest\"}}",
        ] {
            assert_eq!(merge_batch_responses(bad, &good), None, "{bad:?}");
            assert_eq!(merge_batch_responses(&good, bad), None, "{bad:?}");
        }
        let retry_without_id = bytes(&json!({"responses": [{"status": 200}]}));
        assert_eq!(merge_batch_responses(&good, &retry_without_id), None);
    }

    #[test]
    fn a_retry_round_trip_fills_every_throttled_answer() {
        let mut dependent = get("2");
        dependent["dependsOn"] = json!(["1"]);
        let request = bytes(&json!({"requests": [get("1"), dependent, get("3")]}));
        let first = bytes(&json!({"responses": [
            answer("3", 200), throttled("1", json!("1")), answer("2", 424)
        ]}));
        let retry = batch_retry(&request, &first).expect("1 is throttled");
        assert_eq!(retry.ids, ["1", "2"]);
        let second = bytes(&json!({"responses": [answer("2", 201), answer("1", 200)]}));
        let merged = merge_batch_responses(&first, &second).expect("valid");
        assert_eq!(
            json_of(&merged),
            json!({"responses": [answer("3", 200), answer("1", 200), answer("2", 201)]})
        );
        assert_eq!(batch_retry(&request, &merged), None);
    }

    /// A small deterministic generator, so the mangled inputs below are the same every run.
    fn next(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *seed >> 33
    }

    #[test]
    fn mangled_bodies_never_panic_and_any_retry_is_a_consistent_batch() {
        let mut dependent = get("b");
        dependent["dependsOn"] = json!(["a"]);
        let request = bytes(&json!({"requests": [get("a"), dependent, get("c")]}));
        let response = bytes(&json!({"responses": [
            throttled("a", json!("2.5")), answer("b", 424), answer("c", 503)
        ]}));
        let mut seed = 7;
        let mut retries = 0;
        for _ in 0..3000 {
            let (mut req, mut resp) = (request.clone(), response.clone());
            for _ in 0..1 + next(&mut seed) % 3 {
                let target = if next(&mut seed) % 2 == 0 {
                    &mut req
                } else {
                    &mut resp
                };
                let position = (next(&mut seed) as usize) % target.len();
                let noise = b"{}[]\",:0-9aZ\x00\xff";
                match next(&mut seed) % 3 {
                    0 => target[position] = noise[position % noise.len()],
                    1 => target.truncate(position),
                    _ => target.insert(position, b'"'),
                }
                if target.is_empty() {
                    target.push(b'{');
                }
            }
            if let Some(retry) = batch_retry_at(&req, &resp, at(0)) {
                retries += 1;
                let body = json_of(&retry.body);
                let sent = body["requests"].as_array().expect("requests array");
                assert_eq!(sent.len(), retry.ids.len());
                assert!(!retry.ids.is_empty());
            }
            // Merging an answer with itself must leave it as it was.
            if let Some(merged) = merge_batch_responses(&resp, &resp) {
                assert_eq!(json_of(&merged), json_of(&resp));
            }
        }
        assert!(
            retries > 0,
            "some mangled inputs must still be valid batches"
        );
    }
}
