//! Link rewriting (DESIGN step 7): absolute URLs that point back at Graph are moved onto
//! the proxy's public origin, so paging and redirects stay inside the proxy and keep the
//! `Prefer` header that SDK page iterators do not re-send.
//!
//! Only the scheme and authority change; path, query and fragment are copied byte for
//! byte (`%24skip`, `$skiptoken` and `$deltatoken` are opaque to us). Links to any other
//! host, above all the pre-authenticated `outlook.office.com` upload URLs, are never
//! touched, and neither is anything else in the body. Used on the reverse-proxy listener
//! only: intercepted drop-in traffic keeps Graph's own links.

use crate::config::Origin;
use crate::json_scan::{self, ScanError};

/// Graph's public and national-cloud hosts. Links to them are rewritten even when the
/// upstream is a simulator or a corporate gateway, because Graph writes its own name.
pub const GRAPH_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// The JSON annotations holding paging links. Matched as key suffixes so annotations on
/// an expanded collection (`members@odata.nextLink`) are rewritten too.
const LINK_ANNOTATIONS: &[&str] = &["@odata.nextLink", "@odata.deltaLink"];

/// Headers whose URL values are rewritten, also inside `$batch` sub-responses.
const LINK_HEADERS: &[&str] = &["location", "content-location"];

/// Rewrites links on the upstream origin or a Graph host to the public origin.
#[derive(Debug, Clone)]
pub struct LinkRewriter {
    upstream: Endpoint,
    /// `scheme://authority` of the public origin, as configured.
    public_prefix: String,
}

/// An origin reduced to what decides "same origin": lowercase scheme and host, and the
/// port with the scheme's default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    https: bool,
    host: String,
    port: u16,
}

impl Endpoint {
    fn from_origin(origin: &Origin) -> Option<Endpoint> {
        let https = scheme_is_https(origin.scheme.as_str())?;
        Some(Endpoint {
            https,
            host: origin.authority.host().to_ascii_lowercase(),
            port: origin.authority.port_u16().unwrap_or(default_port(https)),
        })
    }
}

impl LinkRewriter {
    /// `None` when the public origin is the upstream origin: links already point where
    /// the app should go.
    pub fn new(upstream: &Origin, public: &Origin) -> Option<LinkRewriter> {
        if upstream == public {
            return None;
        }
        let upstream_endpoint = Endpoint::from_origin(upstream)?;
        if Endpoint::from_origin(public).as_ref() == Some(&upstream_endpoint) {
            return None;
        }
        Some(LinkRewriter {
            upstream: upstream_endpoint,
            public_prefix: format!("{}://{}", public.scheme, public.authority),
        })
    }

    /// The same URL on the public origin, when `url` is absolute and on the upstream
    /// origin or on `https://<Graph host>` (optionally with `:443`). `None` otherwise.
    pub fn rewrite_url(&self, url: &str) -> Option<String> {
        let (scheme, rest) = url.split_once("://")?;
        let https = scheme_is_https(scheme)?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at_checked(authority_end)?;
        let (host, port) = split_authority(authority)?;
        let port = match port {
            Some(port) => port,
            None => default_port(https),
        };
        let on_upstream = https == self.upstream.https
            && port == self.upstream.port
            && host.eq_ignore_ascii_case(&self.upstream.host);
        let on_graph = https
            && port == default_port(true)
            && GRAPH_HOSTS
                .iter()
                .any(|graph| host.eq_ignore_ascii_case(graph));
        (on_upstream || on_graph).then(|| format!("{}{}", self.public_prefix, path_and_query))
    }

    /// For the `Location` and `Content-Location` response headers. `None` leaves the
    /// header as it is (not UTF-8, relative, or another host).
    pub fn rewrite_header(&self, value: &[u8]) -> Option<http::HeaderValue> {
        let url = std::str::from_utf8(value).ok()?;
        let rewritten = self.rewrite_url(url)?;
        http::HeaderValue::from_str(&rewritten).ok()
    }

    /// False when `rewrite_json` cannot change `body`: it holds none of the link
    /// annotations, no `"headers"` key and no `\u` escape that could spell either. A
    /// byte search, so answers that carry no links skip the JSON scan.
    pub fn may_rewrite(body: &[u8]) -> bool {
        // Two passes instead of one per needle: the annotations and `\u` each start with a
        // byte that is rare in JSON, so one scan for either byte checks three needles.
        let rare = memchr::memchr2_iter(b'@', b'\\', body).any(|at| {
            let rest = &body[at..];
            rest.starts_with(b"@odata.nextLink")
                || rest.starts_with(b"@odata.deltaLink")
                || rest.starts_with(b"\\u")
        });
        rare || memchr::memmem::find(body, b"\"headers\"").is_some()
    }

    /// Rewrites paging annotations anywhere in the body (so also inside `$batch`
    /// sub-responses) and `Location` / `Content-Location` inside a `headers` object
    /// (batch sub-response headers). `Ok(None)`: nothing changed; `Err`: not JSON.
    pub fn rewrite_json(&self, body: &[u8]) -> Result<Option<Vec<u8>>, ScanError> {
        json_scan::rewrite_strings(body, |context, value| {
            let key = context.key?;
            let is_annotation = LINK_ANNOTATIONS
                .iter()
                .any(|annotation| key.ends_with(annotation));
            let is_batch_header = context.parent_key == Some("headers")
                && LINK_HEADERS
                    .iter()
                    .any(|header| key.eq_ignore_ascii_case(header));
            if is_annotation || is_batch_header {
                self.rewrite_url(value)
            } else {
                None
            }
        })
    }
}

/// `Some(true)` for https, `Some(false)` for http, `None` for anything else.
fn scheme_is_https(scheme: &str) -> Option<bool> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(true)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(false)
    } else {
        None
    }
}

fn default_port(https: bool) -> u16 {
    if https {
        443
    } else {
        80
    }
}

/// Splits `host[:port]` (host possibly a bracketed IPv6 literal). Refuses userinfo, which
/// would make the host something other than what a reader sees first, and any port that
/// is not a plain number.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.contains(['@', '\\']) {
        return None;
    }
    let port_start = if authority.starts_with('[') {
        authority.find(']')? + 1
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at_checked(port_start)?;
    if port.is_empty() {
        return Some((host, None));
    }
    let digits = port.strip_prefix(':')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((host, Some(digits.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        let uri: http::Uri = url.parse().unwrap();
        Origin {
            scheme: uri.scheme().unwrap().clone(),
            authority: uri.authority().unwrap().clone(),
        }
    }

    fn rewriter(upstream: &str, public: &str) -> LinkRewriter {
        LinkRewriter::new(&origin(upstream), &origin(public)).unwrap()
    }

    #[test]
    fn bodies_without_link_keys_are_known_unchanged_without_a_scan() {
        let rewriter = graph_to_local();
        let plain = br#"{"id":"AAMk","subject":"https://graph.microsoft.com/v1.0/me"}"#;
        assert!(!LinkRewriter::may_rewrite(plain));
        assert_eq!(rewriter.rewrite_json(plain), Ok(None));
        for body in [
            &br#"{"@odata.nextLink":"https://graph.microsoft.com/v1.0/me/messages?$skip=10"}"#[..],
            br#"{"value":[],"@odata.deltaLink":"https://graph.microsoft.com/v1.0/x"}"#,
            br#"{"responses":[{"headers":{"Location":"https://graph.microsoft.com/v1.0/x"}}]}"#,
            // An escape may spell the key: the byte search cannot tell, so it says maybe.
            br#"{"\u0040odata.nextLink":"https://graph.microsoft.com/v1.0/x"}"#,
        ] {
            assert!(
                LinkRewriter::may_rewrite(body),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(rewriter.rewrite_json(body).unwrap().is_some());
        }
    }

    /// The plain form of `may_rewrite`: one search per needle.
    fn may_rewrite_reference(body: &[u8]) -> bool {
        [
            &b"@odata.nextLink"[..],
            b"@odata.deltaLink",
            b"\"headers\"",
            b"\\u",
        ]
        .iter()
        .any(|needle| memchr::memmem::find(body, needle).is_some())
    }

    proptest::proptest! {
        /// The two-pass search finds exactly what one search per needle finds.
        #[test]
        fn may_rewrite_matches_one_search_per_needle(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-z@.\\\\\"u]{0,6}",
                    proptest::sample::select(vec![
                        "@odata.nextLink".to_owned(),
                        "@odata.deltaLin".to_owned(),
                        "@odata.deltaLink".to_owned(),
                        "\"headers\"".to_owned(),
                        "\"header".to_owned(),
                        "\\u".to_owned(),
                        "\\".to_owned(),
                        "@@odata.nextLink".to_owned(),
                    ]),
                ],
                0..8,
            ),
        ) {
            let body = parts.concat();
            proptest::prop_assert_eq!(
                LinkRewriter::may_rewrite(body.as_bytes()),
                may_rewrite_reference(body.as_bytes())
            );
        }
    }

    proptest::proptest! {
        /// `may_rewrite` false means `rewrite_json` changes nothing.
        #[test]
        fn no_link_keys_means_no_rewrite(
            keys in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-zA-Z@.]{1,20}",
                    proptest::sample::select(vec![
                        "@odata.nextLink".to_owned(),
                        "members@odata.deltaLink".to_owned(),
                        "@odata.NextLink".to_owned(),
                        "Location".to_owned(),
                    ]),
                ],
                0..6,
            ),
        ) {
            let rewriter = graph_to_local();
            let fields: Vec<String> = keys
                .iter()
                .map(|k| format!("\"{k}\":\"https://graph.microsoft.com/v1.0/me\""))
                .collect();
            let body = format!("{{{}}}", fields.join(","));
            let rewritten = rewriter.rewrite_json(body.as_bytes());
            proptest::prop_assert!(rewritten.is_ok());
            if !LinkRewriter::may_rewrite(body.as_bytes()) {
                proptest::prop_assert_eq!(rewritten, Ok(None));
            }
        }
    }

    fn graph_to_local() -> LinkRewriter {
        rewriter("https://graph.microsoft.com", "http://127.0.0.1:8080")
    }

    fn rewrite_body(links: &LinkRewriter, body: &str) -> Option<String> {
        links
            .rewrite_json(body.as_bytes())
            .unwrap()
            .map(|out| String::from_utf8(out).unwrap())
    }

    #[test]
    fn same_upstream_and_public_origin_needs_no_rewriter() {
        let up = origin("https://graph.microsoft.com");
        assert!(LinkRewriter::new(&up, &up).is_none());
        assert!(LinkRewriter::new(&up, &origin("https://GRAPH.microsoft.com")).is_none());
        assert!(LinkRewriter::new(&up, &origin("https://graph.microsoft.com:443")).is_none());
        assert!(LinkRewriter::new(&up, &origin("http://graph.microsoft.com")).is_some());
    }

    #[test]
    fn skip_link_keeps_its_percent_encoded_query_byte_for_byte() {
        assert_eq!(
            graph_to_local()
                .rewrite_url("https://graph.microsoft.com/v1.0/me/messages?%24skip=10")
                .as_deref(),
            Some("http://127.0.0.1:8080/v1.0/me/messages?%24skip=10")
        );
    }

    #[test]
    fn delta_and_skip_tokens_are_kept_byte_for_byte() {
        let links = rewriter("https://graph.microsoft.com", "https://proxy.internal:8443");
        let tail = "/v1.0/me/mailFolders('Inbox')/messages/delta?$skiptoken=ZGVsdGE%3d&$deltatoken=a%2Bb~c#frag";
        assert_eq!(
            links.rewrite_url(&format!("https://graph.microsoft.com{tail}")),
            Some(format!("https://proxy.internal:8443{tail}"))
        );
    }

    #[test]
    fn graph_hosts_match_case_insensitively_with_or_without_port_443() {
        let links = graph_to_local();
        for url in [
            "https://GRAPH.Microsoft.COM/v1.0/users",
            "HTTPS://graph.microsoft.com/v1.0/users",
            "https://graph.microsoft.com:443/v1.0/users",
        ] {
            assert_eq!(
                links.rewrite_url(url).as_deref(),
                Some("http://127.0.0.1:8080/v1.0/users"),
                "{url}"
            );
        }
    }

    #[test]
    fn national_cloud_hosts_are_rewritten() {
        let links = graph_to_local();
        for host in GRAPH_HOSTS {
            assert_eq!(
                links.rewrite_url(&format!("https://{host}/beta/me?$top=5")),
                Some("http://127.0.0.1:8080/beta/me?$top=5".to_owned()),
                "{host}"
            );
        }
    }

    #[test]
    fn lookalike_and_other_hosts_are_untouched() {
        let links = graph_to_local();
        for url in [
            "https://graph.microsoft.com.evil.com/x",
            "https://graph.microsoft.comx/x",
            "https://xgraph.microsoft.com/x",
            "https://evil.com/graph.microsoft.com/x",
            "https://evil.com?https://graph.microsoft.com/",
            "https://outlook.office.com/api/v2.0/Users('a')/Messages('b')/AttachmentSessions('c')?authtoken=x",
            "http://graph.microsoft.com/v1.0/me",
            "https://graph.microsoft.com:8443/v1.0/me",
            "https://graph.microsoft.com:/v1.0/me",
            "https://graph.microsoft.com:+443/v1.0/me",
            "ftp://graph.microsoft.com/v1.0/me",
            "//graph.microsoft.com/v1.0/me",
            "/v1.0/me/messages?$skip=10",
            "graph.microsoft.com/v1.0/me",
            " https://graph.microsoft.com/v1.0/me",
            "",
        ] {
            assert_eq!(links.rewrite_url(url), None, "{url}");
        }
    }

    #[test]
    fn userinfo_is_never_rewritten() {
        let links = graph_to_local();
        for url in [
            "https://a@graph.microsoft.com/v1.0/me",
            "https://graph.microsoft.com@evil.com/v1.0/me",
            "https://graph.microsoft.com\\@evil.com/v1.0/me",
            "https://user:pw@graph.microsoft.com/v1.0/me",
        ] {
            assert_eq!(links.rewrite_url(url), None, "{url}");
        }
    }

    #[test]
    fn links_on_a_local_upstream_move_to_the_public_origin() {
        let links = rewriter("http://127.0.0.1:4321", "https://proxy.internal:8443");
        assert_eq!(
            links
                .rewrite_url("http://127.0.0.1:4321/v1.0/me/messages?%24skip=10")
                .as_deref(),
            Some("https://proxy.internal:8443/v1.0/me/messages?%24skip=10")
        );
        assert_eq!(links.rewrite_url("http://127.0.0.1:4322/v1.0/me"), None);
        assert_eq!(links.rewrite_url("https://127.0.0.1:4321/v1.0/me"), None);
        assert_eq!(links.rewrite_url("http://127.0.0.1/v1.0/me"), None);
        assert_eq!(
            links
                .rewrite_url("https://graph.microsoft.com/v1.0/me")
                .as_deref(),
            Some("https://proxy.internal:8443/v1.0/me")
        );
    }

    #[test]
    fn an_upstream_on_a_default_port_matches_links_that_spell_it_out() {
        let links = rewriter("http://sim.local", "http://127.0.0.1:8080");
        assert_eq!(
            links.rewrite_url("http://SIM.local:80/a").as_deref(),
            Some("http://127.0.0.1:8080/a")
        );
        assert_eq!(
            links.rewrite_url("http://sim.local").as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }

    #[test]
    fn an_ipv6_upstream_is_matched_with_its_brackets() {
        let links = rewriter("http://[::1]:9000", "http://127.0.0.1:8080");
        assert_eq!(
            links
                .rewrite_url("http://[::1]:9000/v1.0/me?x=1")
                .as_deref(),
            Some("http://127.0.0.1:8080/v1.0/me?x=1")
        );
        assert_eq!(links.rewrite_url("http://[::1]:9001/v1.0/me"), None);
        assert_eq!(links.rewrite_url("http://[::1/v1.0/me"), None);
    }

    #[test]
    fn location_headers_are_rewritten_and_others_left_alone() {
        let links = graph_to_local();
        assert_eq!(
            links.rewrite_header(b"https://graph.microsoft.com/v2/tenant/directoryObjects/abc"),
            Some(http::HeaderValue::from_static(
                "http://127.0.0.1:8080/v2/tenant/directoryObjects/abc"
            ))
        );
        assert_eq!(
            links.rewrite_header(
                b"https://outlook.office.com/api/v2.0/Users('a')/Messages('b')/Attachments('c')"
            ),
            None
        );
        assert_eq!(links.rewrite_header(b"/relative/path"), None);
        assert_eq!(
            links.rewrite_header(b"https://graph.microsoft.com/\xff"),
            None
        );
    }

    #[test]
    fn next_and_delta_links_in_a_page_are_rewritten_and_nothing_else() {
        let body = r#"{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users('me')/messages","value":[{"id":"AAMk=","webLink":"https://graph.microsoft.com/x","body":{"content":"see https://graph.microsoft.com/v1.0/me"}}],
 "@odata.nextLink" : "https://graph.microsoft.com/v1.0/me/messages?%24skip=10"}"#;
        let expected = body.replace(
            "\"https://graph.microsoft.com/v1.0/me/messages?%24skip=10\"",
            "\"http://127.0.0.1:8080/v1.0/me/messages?%24skip=10\"",
        );
        assert_eq!(rewrite_body(&graph_to_local(), body), Some(expected));

        let delta = r#"{"value":[],"@odata.deltaLink":"https://graph.microsoft.com/v1.0/me/messages/delta?$deltatoken=abc%3D%3D"}"#;
        assert_eq!(
            rewrite_body(&graph_to_local(), delta).as_deref(),
            Some(
                r#"{"value":[],"@odata.deltaLink":"http://127.0.0.1:8080/v1.0/me/messages/delta?$deltatoken=abc%3D%3D"}"#
            )
        );
    }

    #[test]
    fn escaped_slashes_in_a_link_are_read_and_the_rewrite_is_valid_json() {
        let body =
            r#"{"@odata.nextLink":"https:\/\/graph.microsoft.com\/v1.0\/users?$skiptoken=a%2Fb"}"#;
        let out = rewrite_body(&graph_to_local(), body).unwrap();
        assert_eq!(
            out,
            r#"{"@odata.nextLink":"http://127.0.0.1:8080/v1.0/users?$skiptoken=a%2Fb"}"#
        );
    }

    #[test]
    fn expanded_collection_next_links_are_rewritten() {
        let body = r#"{"id":"g","members@odata.nextLink":"https://graph.microsoft.com/v1.0/groups/g/members?$skiptoken=x"}"#;
        assert_eq!(
            rewrite_body(&graph_to_local(), body).as_deref(),
            Some(
                r#"{"id":"g","members@odata.nextLink":"http://127.0.0.1:8080/v1.0/groups/g/members?$skiptoken=x"}"#
            )
        );
    }

    #[test]
    fn batch_sub_response_bodies_and_headers_are_rewritten() {
        let body = r#"{"responses":[
  {"id":"1","status":200,"headers":{"Content-Type":"application/json","location":"https://graph.microsoft.com/v1.0/a"},
   "body":{"value":[],"@odata.nextLink":"https://graph.microsoft.com/v1.0/me/events?%24skip=20"}},
  {"id":"2","status":201,"headers":{"Content-Location":"https://graph.microsoft.com/v1.0/b","Location":"https://outlook.office.com/api/v2.0/up"},"body":{"uploadUrl":"https://graph.microsoft.com/keep"}}
]}"#;
        let expected = body
            .replace(
                "\"https://graph.microsoft.com/v1.0/a\"",
                "\"http://127.0.0.1:8080/v1.0/a\"",
            )
            .replace(
                "\"https://graph.microsoft.com/v1.0/me/events?%24skip=20\"",
                "\"http://127.0.0.1:8080/v1.0/me/events?%24skip=20\"",
            )
            .replace(
                "\"https://graph.microsoft.com/v1.0/b\"",
                "\"http://127.0.0.1:8080/v1.0/b\"",
            );
        assert_eq!(rewrite_body(&graph_to_local(), body), Some(expected));
    }

    #[test]
    fn location_outside_a_headers_object_is_untouched() {
        let body = r#"{"location":"https://graph.microsoft.com/v1.0/a","value":[{"Location":"https://graph.microsoft.com/v1.0/b"}]}"#;
        assert_eq!(rewrite_body(&graph_to_local(), body), None);
    }

    #[test]
    fn a_page_without_graph_links_is_left_as_it_is() {
        let body = r#"{"value":[{"id":"x"}],"@odata.nextLink":"https://outlook.office.com/next"}"#;
        assert_eq!(rewrite_body(&graph_to_local(), body), None);
    }

    #[test]
    fn a_body_that_is_not_json_is_an_error() {
        assert_eq!(
            graph_to_local().rewrite_json(b"<html>"),
            Err(ScanError::NotJson { offset: 0 })
        );
    }
}
