//! Identify (step 1 of a request): which tenant, app and mailbox a request is for, so the
//! limiter can key its buckets.
//!
//! The bearer token's payload is decoded, never verified: Graph access tokens carry a header
//! nonce that makes third-party verification impossible, and Graph checks them anyway.
//! Nothing here keeps, logs or prints the token (each thread remembers the claims of a few
//! recent payload segments, which without their signature are no credential). Anything unreadable (no token, personal
//! accounts' opaque tokens, bad base64 or JSON, odd claims) lands in the `unknown` tenant
//! and never fails the request.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// Where requests whose caller we cannot name are counted; it has its own bucket.
const UNKNOWN: &str = "unknown";

/// Claims become limiter keys and log fields: anything longer is not a real GUID or app id.
const MAX_CLAIM_LEN: usize = 128;

/// Mailbox keys: an SMTP address is at most 254 characters; anything longer is not one.
const MAX_MAILBOX_LEN: usize = 320;

/// Real access tokens are a few kilobytes; refuse to decode more than this.
const MAX_PAYLOAD_LEN: usize = 64 * 1024;

/// base64url as JWTs use it, but tolerant of apps or libraries that pad it.
const JWT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Shared text: a request's tenant and app are cloned into limiter keys, the access log
/// and ID look-ups, and a clone is a count, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub Arc<str>);

/// `unknown`, allocated once.
static UNKNOWN_NAME: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(UNKNOWN));

impl TenantId {
    pub fn unknown() -> Self {
        Self(UNKNOWN_NAME.clone())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(pub Arc<str>);

impl AppId {
    pub fn unknown() -> Self {
        Self(UNKNOWN_NAME.clone())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The mailbox a request touches, case-folded so `Alice@x` and `alice@x` share one budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mailbox(pub String);

impl Mailbox {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The token claims the proxy routes on. Holds no part of the token itself, so the derived
/// `Debug` is safe to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub tid: Option<String>,
    /// `appid` (v1.0 tokens) or `azp` (v2.0 tokens).
    pub app: Option<String>,
    pub oid: Option<String>,
    /// Client-credentials token: `roles` present and no `scp`. Graph refuses some calls
    /// (translateExchangeIds) for these.
    pub app_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant: TenantId,
    pub app: AppId,
    pub mailbox: Option<Mailbox>,
    /// Shared with the thread's recent payloads (see `RecentClaims`).
    pub claims: Option<Arc<Claims>>,
}

/// Claims of an `Authorization: Bearer <jwt>` value; `None` when it is not a readable JWT.
pub fn claims_from_authorization(value: &[u8]) -> Option<Claims> {
    claims_from_payload(jwt_payload(value)?)
}

/// The payload segment of an `Authorization: Bearer <jwt>` value, still base64url. Works
/// on bytes: only the payload needs to be text, and the rest of a token (most of it) is not
/// looked at beyond finding its dots.
fn jwt_payload(value: &[u8]) -> Option<&str> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    if !value[..space].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = value[space + 1..].trim_ascii();
    let after_header = memchr::memchr(b'.', token)? + 1;
    let payload_len = memchr::memchr(b'.', &token[after_header..])?;
    let (payload, signature) = (
        &token[after_header..after_header + payload_len],
        &token[after_header + payload_len + 1..],
    );
    // A further dot would make an encrypted JWE (five parts), whose payload we cannot read.
    if memchr::memchr(b'.', signature).is_some() || payload.len() > MAX_PAYLOAD_LEN {
        return None;
    }
    std::str::from_utf8(payload).ok()
}

fn claims_from_payload(payload: &str) -> Option<Claims> {
    let json = JWT_BASE64.decode(payload).ok()?;
    let Value::Object(payload) = serde_json::from_slice::<Value>(&json).ok()? else {
        return None;
    };
    Some(Claims {
        tid: sane_claim(&payload, "tid"),
        app: sane_claim(&payload, "appid").or_else(|| sane_claim(&payload, "azp")),
        oid: sane_claim(&payload, "oid"),
        app_only: payload.contains_key("roles") && !payload.contains_key("scp"),
    })
}

/// Payloads each thread remembers the claims of.
const RECENT_PAYLOADS: usize = 4;

/// Longer payloads are decoded every time rather than kept (real ones are 1-2 KiB).
const MAX_RECENT_PAYLOAD_LEN: usize = 8 * 1024;

/// The claims of the last few token payloads this thread decoded. An app sends the same
/// token for its whole lifetime (about an hour), and decoding it (base64, then a JSON
/// object) was a fifth of the proxy's instructions per pass-through request. Keyed by the
/// payload segment alone: without its signature that is not a usable credential, so no
/// token is kept. The claims are a pure function of the payload, so a hit is exact.
#[derive(Default)]
struct RecentClaims {
    entries: Vec<(Box<str>, Named)>,
    /// The entry replaced next once all are taken (oldest first).
    next: usize,
}

/// What identify takes from a token: its claims, and the tenant and app they name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Named {
    claims: Option<Arc<Claims>>,
    tenant: TenantId,
    app: AppId,
}

impl Named {
    fn new(claims: Option<Claims>) -> Named {
        let tenant = claims
            .as_ref()
            .and_then(|c| c.tid.as_deref())
            .map_or_else(TenantId::unknown, |tid| TenantId(tid.into()));
        let app = claims
            .as_ref()
            .and_then(|c| c.app.as_deref())
            .map_or_else(AppId::unknown, |app| AppId(app.into()));
        Named {
            claims: claims.map(Arc::new),
            tenant,
            app,
        }
    }
}

impl RecentClaims {
    fn named(&mut self, payload: &str) -> Named {
        if let Some((_, named)) = self.entries.iter().find(|(seen, _)| **seen == *payload) {
            return named.clone();
        }
        let named = Named::new(claims_from_payload(payload));
        if payload.len() <= MAX_RECENT_PAYLOAD_LEN {
            let entry = (Box::from(payload), named.clone());
            if self.entries.len() < RECENT_PAYLOADS {
                self.entries.push(entry);
            } else {
                self.entries[self.next] = entry;
                self.next = (self.next + 1) % RECENT_PAYLOADS;
            }
        }
        named
    }
}

thread_local! {
    static RECENT_CLAIMS: std::cell::RefCell<RecentClaims> = std::cell::RefCell::default();
}

/// The claims of an Authorization value and what they name, answered from this thread's
/// recent payloads when it can. Anything unreadable names `unknown`.
fn named_by_authorization(value: &[u8]) -> Named {
    let Some(payload) = jwt_payload(value) else {
        return Named::new(None);
    };
    let remembered = RECENT_CLAIMS.try_with(|recent| {
        // Never busy (nothing below calls back here); if it were, decode without it.
        recent
            .try_borrow_mut()
            .map(|mut recent| recent.named(payload))
    });
    match remembered {
        Ok(Ok(named)) => named,
        // The thread is shutting down, or the cache is in use: decode without it.
        _ => Named::new(claims_from_payload(payload)),
    }
}

/// A string claim fit to be a key: non-empty, bounded, visible ASCII only. GUIDs always are;
/// anything else is treated as absent rather than trusted.
fn sane_claim(payload: &Map<String, Value>, name: &str) -> Option<String> {
    let value = payload.get(name)?.as_str()?;
    let sane = !value.is_empty()
        && value.len() <= MAX_CLAIM_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| value.to_owned())
}

/// The mailbox a Graph path (or `$batch` sub-request url) addresses: the case-folded
/// `users/{id|upn}` segment (`users('{upn}')` and percent-encoding included), or the token's
/// `oid` for `me`. The version segment is optional because batch urls omit it.
pub fn mailbox_from_path(path: &str, claims: Option<&Claims>) -> Option<Mailbox> {
    let path = without_origin(path);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let mut first = segments.next()?;
    if first.eq_ignore_ascii_case("v1.0") || first.eq_ignore_ascii_case("beta") {
        first = segments.next()?;
    }
    let first = percent_decode_str(first).decode_utf8_lossy();

    if first.eq_ignore_ascii_case("me") {
        return claims.and_then(|c| c.oid.as_deref()).and_then(mailbox);
    }
    if first.eq_ignore_ascii_case("users") {
        let key = percent_decode_str(segments.next()?).decode_utf8_lossy();
        if key.starts_with('$') || key.contains('(') {
            // `$count`, `delta()` and other functions on the collection, not a mailbox.
            return None;
        }
        return mailbox(&key);
    }
    let key = odata_key(&first, "users")?;
    mailbox(&key)
}

/// `users('a@b.com')` / `users(GUID)` key syntax; `''` is OData's escaped quote.
fn odata_key<'a>(segment: &'a str, collection: &str) -> Option<Cow<'a, str>> {
    let head = segment.get(..collection.len())?;
    if !head.eq_ignore_ascii_case(collection) {
        return None;
    }
    let inner = segment[collection.len()..]
        .strip_prefix('(')?
        .strip_suffix(')')?;
    match inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        Some(quoted) if quoted.contains("''") => Some(Cow::Owned(quoted.replace("''", "'"))),
        Some(quoted) => Some(Cow::Borrowed(quoted)),
        None => Some(Cow::Borrowed(inner)),
    }
}

fn mailbox(key: &str) -> Option<Mailbox> {
    let key = key.trim();
    if key.is_empty() || key.len() > MAX_MAILBOX_LEN || key.chars().any(char::is_control) {
        return None;
    }
    Some(Mailbox(key.to_lowercase()))
}

/// Intercepted requests may carry an absolute URL; only its path matters here.
fn without_origin(path: &str) -> &str {
    let Some((scheme, rest)) = path.split_once("://") else {
        return path;
    };
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphabetic()) {
        return path;
    }
    rest.find('/').map_or("", |slash| &rest[slash..])
}

/// Step 1: tenant, app and mailbox of one request. Never fails: what cannot be read is
/// `unknown` (tenant, app) or `None` (mailbox).
pub fn identify(headers: &http::HeaderMap, path: &str) -> Identity {
    let Named {
        claims,
        tenant,
        app,
    } = headers.get(http::header::AUTHORIZATION).map_or_else(
        || Named::new(None),
        |value| named_by_authorization(value.as_bytes()),
    );
    let mailbox = mailbox_from_path(path, claims.as_deref());
    Identity {
        tenant,
        app,
        mailbox,
        claims,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use http::{HeaderMap, HeaderValue};

    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const APP: &str = "de8bc8b5-d9f9-48b1-a8ad-b748da725064";
    const OID: &str = "00000000-0000-0000-0000-0000000000aa";

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256","nonce":"n"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    fn bearer(payload: &str) -> Vec<u8> {
        format!("Bearer {}", jwt(payload)).into_bytes()
    }

    fn delegated() -> Claims {
        Claims {
            tid: Some(TID.into()),
            app: Some(APP.into()),
            oid: Some(OID.into()),
            app_only: false,
        }
    }

    #[test]
    fn v1_token_gives_tenant_app_and_oid() {
        let payload = format!(
            r#"{{"ver":"1.0","tid":"{TID}","appid":"{APP}","oid":"{OID}","scp":"Mail.Read"}}"#
        );
        assert_eq!(
            claims_from_authorization(&bearer(&payload)),
            Some(delegated())
        );
    }

    #[test]
    fn v2_token_names_the_app_with_azp() {
        let payload = format!(r#"{{"ver":"2.0","tid":"{TID}","azp":"{APP}","scp":"x"}}"#);
        let claims = claims_from_authorization(&bearer(&payload)).unwrap();
        assert_eq!(claims.app.as_deref(), Some(APP));
        assert!(!claims.app_only);
    }

    #[test]
    fn appid_wins_over_azp() {
        let payload = r#"{"appid":"from-appid","azp":"from-azp"}"#;
        let claims = claims_from_authorization(&bearer(payload)).unwrap();
        assert_eq!(claims.app.as_deref(), Some("from-appid"));
    }

    #[test]
    fn roles_without_scp_is_app_only() {
        let app_only = format!(r#"{{"tid":"{TID}","roles":["Mail.Read"],"oid":"{OID}"}}"#);
        assert!(
            claims_from_authorization(&bearer(&app_only))
                .unwrap()
                .app_only
        );
        let both = r#"{"roles":["a"],"scp":"b"}"#;
        assert!(!claims_from_authorization(&bearer(both)).unwrap().app_only);
        assert!(!claims_from_authorization(&bearer("{}")).unwrap().app_only);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_padding_optional() {
        let payload = format!(r#"{{"tid":"{TID}"}}"#);
        let padded = base64::engine::general_purpose::URL_SAFE.encode(&payload);
        assert!(padded.ends_with('='), "fixture must exercise padding");
        let value = format!("bEaReR   e30.{padded}.sig ");
        let claims = claims_from_authorization(value.as_bytes()).unwrap();
        assert_eq!(claims.tid.as_deref(), Some(TID));
    }

    #[test]
    fn unsigned_jwt_with_empty_signature_still_reads() {
        let token = format!("Bearer e30.{}.", URL_SAFE_NO_PAD.encode(r#"{"tid":"t1"}"#));
        let claims = claims_from_authorization(token.as_bytes()).unwrap();
        assert_eq!(claims.tid.as_deref(), Some("t1"));
    }

    #[test]
    fn opaque_and_garbage_tokens_have_no_claims() {
        for value in [
            &b"Bearer EwBwA8l6BAAUO9chh8cJscQLmU+LSWpbnr0vmwwAAeWk4AbPs6DpVuTghPLA"[..],
            b"Bearer",
            b"Bearer ",
            b"Basic dXNlcjpwYXNz",
            b"Bearer a.!!!notbase64!!!.c",
            b"Bearer a.b.c.d.e",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(claims_from_authorization(value), None, "{value:?}");
        }
        let not_json = format!("Bearer e30.{}.s", URL_SAFE_NO_PAD.encode("not json"));
        assert_eq!(claims_from_authorization(not_json.as_bytes()), None);
        let array = format!("Bearer e30.{}.s", URL_SAFE_NO_PAD.encode("[1,2]"));
        assert_eq!(claims_from_authorization(array.as_bytes()), None);
    }

    #[test]
    fn odd_claims_are_treated_as_absent() {
        let long = "a".repeat(129);
        let payload = format!(r#"{{"tid":42,"appid":["x"],"azp":"","oid":"{long}","roles":null}}"#);
        let claims = claims_from_authorization(&bearer(&payload)).unwrap();
        assert_eq!(
            claims,
            Claims {
                tid: None,
                app: None,
                oid: None,
                app_only: true
            }
        );
        let spaced = claims_from_authorization(&bearer(r#"{"tid":"a b","oid":"x\u0007"}"#));
        assert_eq!(spaced.unwrap().tid, None);
        let exactly_128 = format!(r#"{{"tid":"{}"}}"#, "t".repeat(128));
        let claims = claims_from_authorization(&bearer(&exactly_128)).unwrap();
        assert_eq!(claims.tid.map(|t| t.len()), Some(128));
    }

    #[test]
    fn identify_without_token_is_unknown_tenant() {
        let identity = identify(&HeaderMap::new(), "/v1.0/users/Alice@Contoso.com/messages");
        assert_eq!(identity.tenant, TenantId::unknown());
        assert_eq!(identity.tenant.as_str(), "unknown");
        assert_eq!(identity.app, AppId::unknown());
        assert_eq!(identity.mailbox, Some(Mailbox("alice@contoso.com".into())));
        assert_eq!(identity.claims, None);
    }

    #[test]
    fn identify_opaque_token_is_unknown_tenant() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer EwB4A8l6BAAU"),
        );
        let identity = identify(&headers, "/v1.0/me/messages");
        assert_eq!(identity.tenant.as_str(), "unknown");
        assert_eq!(identity.mailbox, None);
    }

    #[test]
    fn identify_reads_token_and_me_mailbox() {
        let mut headers = HeaderMap::new();
        let payload = format!(r#"{{"tid":"{TID}","appid":"{APP}","oid":"{OID}","scp":"x"}}"#);
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_bytes(&bearer(&payload)).unwrap(),
        );
        let identity = identify(&headers, "/v1.0/me/mailFolders/inbox/messages");
        assert_eq!(
            identity,
            Identity {
                tenant: TenantId(TID.into()),
                app: AppId(APP.into()),
                mailbox: Some(Mailbox(OID.into())),
                claims: Some(Arc::new(delegated())),
            }
        );
    }

    #[test]
    fn identity_debug_never_shows_the_token() {
        let mut headers = HeaderMap::new();
        let token = jwt(&format!(r#"{{"tid":"{TID}","oid":"{OID}"}}"#));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let shown = format!("{:?}", identify(&headers, "/v1.0/me"));
        assert!(shown.contains(TID));
        for part in token.split('.') {
            assert!(!shown.contains(part), "{part} leaked");
        }
    }

    fn mbx(path: &str) -> Option<String> {
        mailbox_from_path(path, Some(&delegated())).map(|m| m.0)
    }

    #[test]
    fn mailbox_from_every_path_form() {
        let upn = Some("alice@contoso.com".to_owned());
        assert_eq!(mbx("/v1.0/users/alice@contoso.com/messages"), upn);
        assert_eq!(mbx("/beta/users/alice@contoso.com/events"), upn);
        assert_eq!(mbx("/v1.0/users/alice%40contoso.com/messages"), upn);
        assert_eq!(mbx("/v1.0/users('alice@contoso.com')/messages"), upn);
        assert_eq!(mbx("/v1.0/users('alice%40contoso.com')"), upn);
        assert_eq!(
            mbx("/v1.0/users%28%27alice%40contoso.com%27%29/messages"),
            upn
        );
        assert_eq!(mbx("/users/alice@contoso.com/messages?$top=1"), upn);
        assert_eq!(mbx("users/alice@contoso.com"), upn);
        assert_eq!(
            mbx("https://graph.microsoft.com/v1.0/users/alice@contoso.com"),
            upn
        );
        assert_eq!(mbx("/V1.0/Users/alice@contoso.com"), upn);
    }

    #[test]
    fn me_paths_use_the_token_oid() {
        let oid = Some(OID.to_owned());
        assert_eq!(mbx("/v1.0/me/messages"), oid);
        assert_eq!(mbx("/beta/me"), oid);
        assert_eq!(mbx("/me"), oid);
        assert_eq!(mbx("me/events?$select=id"), oid);
        assert_eq!(mbx("/v1.0/ME/"), oid);
        assert_eq!(mailbox_from_path("/v1.0/me/messages", None), None);
        assert_eq!(
            mailbox_from_path("/v1.0/me", Some(&Claims::default())),
            None
        );
    }

    #[test]
    fn upn_is_case_folded() {
        assert_eq!(
            mbx("/v1.0/users/Alice.Smith@Contoso.COM/messages"),
            Some("alice.smith@contoso.com".into())
        );
        assert_eq!(
            mbx("/v1.0/users/AABBCCDD-0000-1111-2222-333344445555"),
            Some("aabbccdd-0000-1111-2222-333344445555".into())
        );
        assert_eq!(mbx("/v1.0/users/ÄRNE@x.se"), Some("ärne@x.se".into()));
    }

    #[test]
    fn odata_key_unescapes_doubled_quotes_and_accepts_bare_keys() {
        assert_eq!(
            mbx("/v1.0/users('o''brien@x.com')"),
            Some("o'brien@x.com".into())
        );
        assert_eq!(mbx("/v1.0/users(AB-CD)/messages"), Some("ab-cd".into()));
        assert_eq!(mbx("/v1.0/users()"), None);
        assert_eq!(mbx("/v1.0/users("), None);
    }

    #[test]
    fn paths_without_a_mailbox_give_none() {
        for path in [
            "",
            "/",
            "/v1.0",
            "/v1.0/",
            "/v1.0/users",
            "/v1.0/users/",
            "/v1.0/users?$top=5",
            "/v1.0/users/$count",
            "/v1.0/users/delta()",
            "/v1.0/groups/abc/events",
            "/v1.0/$batch",
            "/v1.0/usersx/abc",
            "/v1.0/users/%00bad",
            "https://graph.microsoft.com",
        ] {
            assert_eq!(mbx(path), None, "{path}");
        }
        let long = format!("/v1.0/users/{}@x.com", "a".repeat(400));
        assert_eq!(mbx(&long), None);
    }

    #[test]
    fn recent_claims_answer_exactly_what_decoding_answers() {
        let payloads: Vec<String> = (0..7)
            .map(|n| format!(r#"{{"tid":"tenant-{n}","appid":"{APP}","oid":"{OID}"}}"#))
            .collect();
        let mut values: Vec<Vec<u8>> = payloads.iter().map(|p| bearer(p)).collect();
        // Unreadable ones are remembered too, and stay unreadable.
        let not_json = format!("Bearer e30.{}.s", URL_SAFE_NO_PAD.encode("not json"));
        values.push(not_json.into_bytes());
        values.push(b"Basic dXNlcjpwYXNz".to_vec());
        // No tenant or app claim: unknown.
        values.push(bearer(r#"{"oid":"x"}"#));
        // The same payload under another signature is the same claims.
        values.push(
            format!("Bearer e30.{}.other", URL_SAFE_NO_PAD.encode(&payloads[0])).into_bytes(),
        );
        let mut recent = RecentClaims::default();
        // Round after round, more distinct payloads than entries: hits, misses and
        // replacements all give what a fresh decode gives.
        for round in 0..3 {
            for value in &values {
                let expected = Named::new(claims_from_authorization(value));
                assert_eq!(named_by_authorization(value), expected, "round {round}");
                if let Some(payload) = jwt_payload(value) {
                    assert_eq!(recent.named(payload), expected, "round {round}");
                }
            }
        }
        assert_eq!(recent.entries.len(), RECENT_PAYLOADS);
        let named = named_by_authorization(&values[3]);
        assert_eq!(named.tenant.as_str(), "tenant-3");
        assert_eq!(named.app.as_str(), APP);
        let unknown = named_by_authorization(&values[9]);
        assert_eq!(
            (unknown.tenant.as_str(), unknown.app.as_str()),
            (UNKNOWN, UNKNOWN)
        );
        assert!(unknown.claims.is_some());
    }

    #[test]
    fn recent_claims_keep_the_latest_payloads_and_never_a_signature() {
        let mut recent = RecentClaims::default();
        let payloads: Vec<String> = (0..RECENT_PAYLOADS + 2)
            .map(|n| URL_SAFE_NO_PAD.encode(format!(r#"{{"tid":"t{n}"}}"#)))
            .collect();
        for payload in &payloads {
            assert!(recent.named(payload).claims.is_some());
        }
        let kept: Vec<&str> = recent.entries.iter().map(|(p, _)| &**p).collect();
        for payload in &payloads[2..] {
            assert!(kept.contains(&payload.as_str()), "{payload} was replaced");
        }
        assert!(!kept.contains(&payloads[0].as_str()));
        assert!(
            kept.iter().all(|p| !p.contains('.')),
            "only payload segments"
        );
        let long = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"tid":"t","x":"{}"}}"#,
            "x".repeat(MAX_RECENT_PAYLOAD_LEN)
        ));
        assert_eq!(recent.named(&long).tenant.as_str(), "t");
        assert!(recent
            .entries
            .iter()
            .all(|(p, _)| p.len() <= MAX_RECENT_PAYLOAD_LEN));
    }

    /// The text form `jwt_payload` replaced: trim, split at the first blank, split at dots.
    fn jwt_payload_reference(value: &[u8]) -> Option<&str> {
        let value = std::str::from_utf8(value).ok()?.trim();
        let (scheme, token) = value.split_once([' ', '\t'])?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut parts = token.trim().split('.');
        let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || payload.len() > MAX_PAYLOAD_LEN {
            return None;
        }
        Some(payload)
    }

    proptest::proptest! {
        /// On text (what real headers are) the byte form finds the same payload.
        #[test]
        fn jwt_payload_matches_the_text_form(
            lead in "[ \t]{0,2}",
            scheme in proptest::sample::select(vec!["Bearer", "bEaReR", "Basic", "Bearerx", ""]),
            rest in "[ \t.a-c=_-]{0,16}",
        ) {
            let value = format!("{lead}{scheme}{rest}");
            proptest::prop_assert_eq!(
                jwt_payload(value.as_bytes()),
                jwt_payload_reference(value.as_bytes())
            );
        }
    }
}
