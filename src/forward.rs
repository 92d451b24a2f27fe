//! Step 5, forward: turn the app's request head into the one Graph receives, and clean
//! Graph's answer head before the app sees it.
//!
//! Hop-by-hop headers never cross the proxy (RFC 9110 7.6.1), `Host` is the upstream's,
//! nothing that reveals the app's network (X-Forwarded-For and friends) is sent, and every
//! request carries a `client-request-id` so it can be found in Graph's logs. The request
//! target is always the configured upstream: an absolute-form URI naming another host only
//! contributes its path and query.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{request, Version};

use crate::config::Origin;
use crate::errors::ProxyError;

pub const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("client-request-id");

/// Hop-by-hop by definition, whatever `Connection` says: `proxy-connection` is the
/// non-standard one old clients still send. Standard names compare as the enum they are (a
/// byte compare each); only the two non-standard ones are spelled out.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ]
    .contains(name)
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Headers that would tell Graph about the app's network; the proxy speaks for itself.
const REVEALING: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most heads carry none, and one that does (an HTTP/1.1 answer's `Connection:
    // keep-alive`) carries one or two: one look at the names finds them, so only those are
    // removed (a removal is a hash and a probe; nine of them were most of this step).
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    for name in doomed {
        headers.remove(name);
    }
}

/// The upstream URI for a request path: the configured origin, the app's path and query
/// byte for byte.
pub fn upstream_uri(
    origin: &Origin,
    path_and_query: Option<&PathAndQuery>,
) -> Result<Uri, ProxyError> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(origin.scheme.clone());
    parts.authority = Some(origin.authority.clone());
    parts.path_and_query = Some(
        path_and_query
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts)
        .map_err(|_| ProxyError::BadRequest("The request target is not a valid URI."))
}

/// Rewrites the request head in place for the upstream. The `client-request-id` is already
/// there (`ensure_client_request_id`, as the request arrived).
pub fn prepare_request(parts: &mut request::Parts, origin: &Origin) -> Result<(), ProxyError> {
    parts.uri = upstream_uri(origin, parts.uri.path_and_query())?;
    // The pooled client speaks HTTP/2 to Graph when ALPN agrees whatever the app spoke; an
    // HTTP/2 version here would be refused on an HTTP/1.1 connection.
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if headers
        .keys()
        .any(|name| REVEALING.contains(&name.as_str()))
    {
        for name in REVEALING {
            headers.remove(name);
        }
    }
    // The client sets Host from the URI when none is present.
    headers.remove(header::HOST);
    Ok(())
}

/// The app's `client-request-id`, or a new one added to the request so Graph and our logs
/// share it. Called once per request, as it arrives, before any step can fail.
pub fn ensure_client_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = headers
        .get(&CLIENT_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return id.to_owned();
    }
    let id = crate::telemetry::new_request_id();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(CLIENT_REQUEST_ID, value);
    }
    id
}

/// Cleans Graph's answer head before it goes back to the app.
pub fn prepare_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hop-by-hop name, spelled out.
    const HOP_BY_HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];

    fn origin() -> Origin {
        Origin {
            scheme: http::uri::Scheme::HTTPS,
            authority: http::uri::Authority::from_static("graph.microsoft.com"),
        }
    }

    #[test]
    fn headers_named_in_connection_are_dropped_with_the_standard_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("prefer", HeaderValue::from_static("return=minimal"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("prefer"));
    }

    #[test]
    fn hop_by_hop_names_are_told_apart_as_the_list_says() {
        let mut names: Vec<HeaderName> = HOP_BY_HOP
            .iter()
            .map(|n| HeaderName::from_static(n))
            .collect();
        names.extend(
            [
                "host",
                "prefer",
                "authorization",
                "keep-alive-x",
                "x-connection",
                "proxy-connections",
                "content-length",
                "tes",
            ]
            .map(HeaderName::from_static),
        );
        for name in names {
            assert_eq!(
                is_hop_by_hop(&name),
                HOP_BY_HOP.contains(&name.as_str()),
                "{name}"
            );
        }
    }

    #[test]
    fn each_hop_by_hop_header_goes_and_every_end_to_end_one_stays() {
        for hop in HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.append(hop, HeaderValue::from_static("a"));
            h.append(hop, HeaderValue::from_static("b"));
            h.insert("prefer", HeaderValue::from_static("return=minimal"));
            h.insert("authorization", HeaderValue::from_static("Bearer x"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(hop), "{hop}");
            assert_eq!(h.len(), 2, "{hop}");
        }
        // Names listed on several Connection lines, with odd spacing and case.
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("close , X-One"));
        h.append("connection", HeaderValue::from_static("x-TWO,,"));
        for name in ["x-one", "x-two", "x-three"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-three"]);
        // Connection names only count when Connection is there.
        let mut h = HeaderMap::new();
        h.insert("x-one", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn absolute_form_target_for_another_host_goes_to_the_configured_upstream() {
        let req = http::Request::get("http://evil.example/v1.0/me?$top=1")
            .header("host", "evil.example")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .unwrap();
        let (mut parts, _) = req.into_parts();
        let id = ensure_client_request_id(&mut parts.headers);
        prepare_request(&mut parts, &origin()).unwrap();
        assert_eq!(parts.uri, "https://graph.microsoft.com/v1.0/me?$top=1");
        assert!(parts.headers.get("host").is_none());
        assert!(parts.headers.get("x-forwarded-for").is_none());
        assert_eq!(parts.headers[CLIENT_REQUEST_ID], id.as_str());
    }

    #[test]
    fn an_apps_own_client_request_id_is_kept() {
        let req = http::Request::get("/v1.0/me")
            .header("client-request-id", "abc-123")
            .body(())
            .unwrap();
        let (mut parts, _) = req.into_parts();
        assert_eq!(ensure_client_request_id(&mut parts.headers), "abc-123");
        prepare_request(&mut parts, &origin()).unwrap();
        assert_eq!(parts.headers[CLIENT_REQUEST_ID], "abc-123");
    }
}
