//! Prefer (RFC 7240): merge every `Prefer` line an app sent into the one value Graph gets,
//! carrying `IdType="ImmutableId"`, and decide which paths are sent without it.
//!
//! Works on raw header bytes: values may hold non-UTF-8 (obs-text) and must pass through
//! byte for byte. Nothing here reorders, re-spells or re-quotes an app's own preferences,
//! and nothing here panics on any header bytes. It must not touch any other header.

use bytes::Bytes;
use http::HeaderValue;
use percent_encoding::percent_decode;

use crate::config::PreferMode;

/// Graph's documented opt-in, quoted as the documentation writes it.
pub const IMMUTABLE_ID: &str = "IdType=\"ImmutableId\"";

const ID_TYPE: &str = "IdType";
const SEPARATOR: &[u8] = b", ";

/// One element of a Prefer list, borrowed from the header bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preference<'a> {
    /// The preference name exactly as written (compare with [`Preference::is`]).
    pub name: &'a [u8],
    /// The whole element as written: name, value and `;` parameters, outer whitespace trimmed.
    pub raw: &'a [u8],
    /// A `"` opened in this element never closed, so it swallowed the rest of its line.
    pub unterminated_quote: bool,
}

impl<'a> Preference<'a> {
    /// Preference names are case-insensitive (RFC 7240 section 2).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value after `=` with its surrounding quotes removed (escapes left as written),
    /// `None` for a bare `return-minimal`-style preference.
    pub fn value(&self) -> Option<&'a [u8]> {
        let rest = trim_start(&self.raw[self.name.len()..]);
        let rest = trim_start(rest.strip_prefix(b"=")?);
        if let Some(quoted) = rest.strip_prefix(b"\"") {
            let end = closing_quote(quoted).unwrap_or(quoted.len());
            return Some(&quoted[..end]);
        }
        let end = rest
            .iter()
            .position(|&b| b == b';' || is_ows(b))
            .unwrap_or(rest.len());
        Some(&rest[..end])
    }

    fn is_id_type(&self) -> bool {
        self.is(ID_TYPE)
    }
}

/// The preferences of one Prefer value, in order; empty elements dropped.
///
/// Commas inside a quoted string do not split. A quote that never closes runs to the end of
/// the value: that last element is returned with `unterminated_quote` set.
pub fn parse(value: &[u8]) -> Vec<Preference<'_>> {
    let mut preferences = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, &b) in value.iter().enumerate() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
        } else if b == b'"' {
            in_quote = true;
        } else if b == b',' {
            push_element(&mut preferences, &value[start..i], false);
            start = i + 1;
        }
    }
    push_element(&mut preferences, &value[start..], in_quote);
    preferences
}

fn push_element<'a>(out: &mut Vec<Preference<'a>>, element: &'a [u8], unterminated_quote: bool) {
    let raw = trim_end(trim_start(element));
    if raw.is_empty() {
        return;
    }
    let name_len = raw
        .iter()
        .position(|&b| b == b'=' || b == b';' || is_ows(b))
        .unwrap_or(raw.len());
    out.push(Preference {
        name: &raw[..name_len],
        raw,
        unterminated_quote,
    });
}

/// Merge every Prefer line the app sent into exactly one value that carries
/// `IdType="ImmutableId"`.
///
/// `Force`: any app IdType is removed and ours put first (RFC 7240: the first occurrence
/// wins). `Respect`: an app IdType is kept as the app wrote it and ours is not added. Every
/// other preference is kept byte for byte, in order, joined with `", "`.
///
/// An element with an unbalanced quote is kept byte for byte but moved to the very end:
/// left in place, its open quote would swallow every later preference, ours included, when
/// Graph parses the joined line. It never counts as the app's IdType in `Respect` mode, since
/// Graph could not read it. Only the first such element is kept (each line can end in one):
/// joined, a second one's quote would close the first's, and the rest of the second would
/// then read as preferences of their own, an IdType the app smuggled past `Force` included.
/// Elements holding bytes that cannot appear in a header value are dropped; none can when
/// the inputs came from `HeaderValue`s.
pub fn merge(values: &[&[u8]], mode: PreferMode) -> HeaderValue {
    let preferences: Vec<Preference<'_>> = values
        .iter()
        .flat_map(|value| parse(value))
        .filter(|p| p.raw.iter().all(|&b| is_header_value_byte(b)))
        .filter(|p| !(mode == PreferMode::Force && p.is_id_type()))
        .collect();

    let app_id_type = mode == PreferMode::Respect
        && preferences
            .iter()
            .any(|p| p.is_id_type() && !p.unterminated_quote);

    let mut out = Vec::with_capacity(
        IMMUTABLE_ID.len()
            + preferences
                .iter()
                .map(|p| p.raw.len() + SEPARATOR.len())
                .sum::<usize>(),
    );
    if !app_id_type {
        out.extend_from_slice(IMMUTABLE_ID.as_bytes());
    }
    let (whole, broken): (Vec<&Preference<'_>>, Vec<&Preference<'_>>) =
        preferences.iter().partition(|p| !p.unterminated_quote);
    for preference in whole.into_iter().chain(broken.into_iter().take(1)) {
        if !out.is_empty() {
            out.extend_from_slice(SEPARATOR);
        }
        out.extend_from_slice(preference.raw);
    }

    // Every byte was checked with HeaderValue's own rule above, so this cannot fail; the
    // fallback still beats a panic should that rule ever drift.
    HeaderValue::from_maybe_shared(Bytes::from(out))
        .unwrap_or_else(|_| HeaderValue::from_static(IMMUTABLE_ID))
}

/// Whether these Prefer (or Preference-Applied) lines ask for immutable IDs: the first IdType
/// counts (RFC 7240), and Graph echoes it both quoted and bare, so both are accepted.
pub fn asks_for_immutable_id(values: &[&[u8]]) -> bool {
    values
        .iter()
        .flat_map(|value| parse(value))
        .find(|p| p.is_id_type())
        .and_then(|p| p.value())
        .is_some_and(|v| v.eq_ignore_ascii_case(b"ImmutableId"))
}

/// Skip patterns: requests whose path+query match one are sent without our IdType.
#[derive(Debug, Clone, Default)]
pub struct SkipList {
    patterns: Vec<Vec<u8>>,
}

impl SkipList {
    pub fn new(patterns: &[String]) -> Self {
        Self {
            patterns: patterns.iter().map(|p| p.as_bytes().to_vec()).collect(),
        }
    }

    /// A whole-string glob match (`*` = any run of characters) against the path+query as
    /// sent or percent-decoded: apps send `%24search=` as often as `$search=`.
    pub fn matches(&self, path_and_query: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let raw = path_and_query.as_bytes();
        let decoded: Option<Vec<u8>> = raw.contains(&b'%').then(|| percent_decode(raw).collect());
        self.patterns.iter().any(|pattern| {
            glob_matches(pattern, raw)
                || decoded
                    .as_deref()
                    .is_some_and(|decoded| glob_matches(pattern, decoded))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Iterative wildcard match with one backtrack point: linear memory, at worst
/// pattern x text steps, so a hostile path cannot blow up the matcher.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, consumed)) => {
                    p = star + 1;
                    t = consumed + 1;
                    backtrack = Some((star, consumed + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Index of the first unescaped `"` in the text after an opening quote.
fn closing_quote(quoted: &[u8]) -> Option<usize> {
    let mut escaped = false;
    for (i, &b) in quoted.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            return Some(i);
        }
    }
    None
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// HeaderValue's rule: visible ASCII, space, tab and obs-text; no CTLs, no DEL.
fn is_header_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_ows(b))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| !is_ows(b)).map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use PreferMode::{Force, Respect};

    fn merged(values: &[&str], mode: PreferMode) -> String {
        let bytes: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        merge(&bytes, mode).to_str().unwrap().to_owned()
    }

    fn raws(value: &str) -> Vec<&str> {
        parse(value.as_bytes())
            .iter()
            .map(|p| std::str::from_utf8(p.raw).unwrap())
            .collect()
    }

    #[test]
    fn no_prefer_at_all_gets_just_immutable_id() {
        assert_eq!(merged(&[], Force), IMMUTABLE_ID);
        assert_eq!(merged(&[], Respect), IMMUTABLE_ID);
    }

    #[test]
    fn several_prefer_lines_become_one_with_idtype_first() {
        let out = merged(
            &["odata.maxpagesize=10", "outlook.body-content-type=\"text\""],
            Force,
        );
        assert_eq!(
            out,
            "IdType=\"ImmutableId\", odata.maxpagesize=10, outlook.body-content-type=\"text\""
        );
    }

    #[test]
    fn quoted_commas_and_spaces_stay_inside_their_preference() {
        let value = "outlook.timezone=\"Pacific Standard Time, Canada\",return=minimal";
        assert_eq!(
            raws(value),
            vec![
                "outlook.timezone=\"Pacific Standard Time, Canada\"",
                "return=minimal"
            ]
        );
        assert_eq!(
            merged(&[value], Force),
            "IdType=\"ImmutableId\", outlook.timezone=\"Pacific Standard Time, Canada\", return=minimal"
        );
    }

    #[test]
    fn escaped_quote_inside_a_quoted_string_does_not_end_it() {
        let value = r#"a="x\", y", b=2"#;
        assert_eq!(raws(value), vec![r#"a="x\", y""#, "b=2"]);
        assert_eq!(parse(value.as_bytes())[0].value(), Some(&br#"x\", y"#[..]));
    }

    #[test]
    fn parameters_belong_to_their_preference() {
        let value = "respond-async; wait=10 ;foo=\"a,b\", handling=lenient";
        let prefs = parse(value.as_bytes());
        assert_eq!(prefs.len(), 2);
        assert_eq!(prefs[0].name, b"respond-async");
        assert_eq!(prefs[0].raw, b"respond-async; wait=10 ;foo=\"a,b\"");
        assert_eq!(prefs[0].value(), None);
        assert_eq!(prefs[1].name, b"handling");
        assert_eq!(prefs[1].value(), Some(&b"lenient"[..]));
    }

    #[test]
    fn force_replaces_app_idtype_whatever_its_case() {
        for app in [
            "IdType=\"RestId\"",
            "idtype=\"RestId\"",
            "IDTYPE=RestId",
            "IdType = \"ImmutableId\"",
        ] {
            let out = merged(
                &[&format!("return=minimal, {app}, odata.maxpagesize=5")],
                Force,
            );
            assert_eq!(
                out, "IdType=\"ImmutableId\", return=minimal, odata.maxpagesize=5",
                "app sent {app}"
            );
        }
    }

    #[test]
    fn force_removes_idtype_from_every_line() {
        let out = merged(&["IdType=\"RestId\"", "a=1, idtype=x", "IDTYPE"], Force);
        assert_eq!(out, "IdType=\"ImmutableId\", a=1");
    }

    #[test]
    fn respect_keeps_app_idtype_as_written_and_adds_nothing() {
        let out = merged(&["odata.maxpagesize=5, idtype=\"RestId\""], Respect);
        assert_eq!(out, "odata.maxpagesize=5, idtype=\"RestId\"");
        let out = merged(&["a=1", "IDTYPE=\"ImmutableId\""], Respect);
        assert_eq!(out, "a=1, IDTYPE=\"ImmutableId\"");
    }

    #[test]
    fn respect_without_app_idtype_puts_ours_first() {
        let out = merged(&["return=minimal"], Respect);
        assert_eq!(out, "IdType=\"ImmutableId\", return=minimal");
    }

    #[test]
    fn app_preferences_are_kept_byte_for_byte() {
        let value = "Outlook.TimeZone=\"Pacific Standard Time\" ;  X=\"y\",odata.MaxPageSize = 3";
        let out = merged(&[value], Force);
        assert_eq!(
            out,
            "IdType=\"ImmutableId\", Outlook.TimeZone=\"Pacific Standard Time\" ;  X=\"y\", odata.MaxPageSize = 3"
        );
    }

    #[test]
    fn empty_elements_and_outer_whitespace_are_dropped() {
        assert_eq!(raws(" , a=1,, \t,b ,"), vec!["a=1", "b"]);
        assert_eq!(
            merged(&["", " , ", "a=1"], Force),
            "IdType=\"ImmutableId\", a=1"
        );
    }

    #[test]
    fn non_utf8_bytes_pass_through() {
        let value: &[u8] = b"x-note=\"caf\xe9\", a=\xff\xfe";
        let out = merge(&[value], Force);
        assert_eq!(
            out.as_bytes(),
            b"IdType=\"ImmutableId\", x-note=\"caf\xe9\", a=\xff\xfe"
        );
    }

    #[test]
    fn unbalanced_quote_still_gets_idtype() {
        let out = merged(&["outlook.timezone=\"Pacific, return=minimal"], Force);
        assert_eq!(
            out,
            "IdType=\"ImmutableId\", outlook.timezone=\"Pacific, return=minimal"
        );
    }

    #[test]
    fn unbalanced_quote_is_moved_after_whole_preferences() {
        let out = merged(&["a=\"open, b=1", "c=2"], Force);
        assert_eq!(out, "IdType=\"ImmutableId\", c=2, a=\"open, b=1");
        let prefs = parse(b"x=1, a=\"open, b=1");
        assert!(!prefs[0].unterminated_quote);
        assert!(prefs[1].unterminated_quote);
        assert_eq!(prefs[1].raw, b"a=\"open, b=1");
    }

    #[test]
    fn second_unbalanced_quote_cannot_close_the_first_and_smuggle_an_idtype() {
        // Found by the prefer fuzz target: joined, the second line's quote closed the
        // first's and `IdType="RestId"` became a preference of its own.
        let out = merged(&["a=\"x", "b=\"y, IdType=\"RestId\""], Force);
        assert_eq!(out, "IdType=\"ImmutableId\", a=\"x");
        let ids = parse(out.as_bytes())
            .iter()
            .filter(|p| p.is("IdType"))
            .count();
        assert_eq!(ids, 1);
        assert_eq!(merged(&["\"", "\","], Force), "IdType=\"ImmutableId\", \"");
    }

    #[test]
    fn unbalanced_idtype_is_not_respected() {
        let out = merged(&["IdType=\"RestId"], Respect);
        assert_eq!(out, "IdType=\"ImmutableId\", IdType=\"RestId");
        assert_eq!(merged(&["IdType=\"RestId, a=1"], Force), IMMUTABLE_ID);
    }

    #[test]
    fn trailing_backslash_in_open_quote_does_not_panic() {
        let prefs = parse(b"a=\"x\\");
        assert_eq!(prefs.len(), 1);
        assert!(prefs[0].unterminated_quote);
        assert_eq!(prefs[0].value(), Some(&b"x\\"[..]));
    }

    #[test]
    fn bytes_no_header_may_carry_are_dropped_with_their_element() {
        let out = merge(&[b"a=1, b=\r\nEvil: 1, c=3"], Force);
        assert_eq!(out.as_bytes(), b"IdType=\"ImmutableId\", a=1, c=3");
    }

    #[test]
    fn output_is_one_valid_header_value_for_odd_inputs() {
        for input in [
            &b"\""[..],
            b",,,",
            b"\"\"\"",
            b"=",
            b";;;",
            b"\xff",
            b"\\\"",
        ] {
            let out = merge(&[input], Force);
            assert!(out.as_bytes().starts_with(IMMUTABLE_ID.as_bytes()));
            assert!(!out.as_bytes().iter().any(|&b| b == b'\r' || b == b'\n'));
        }
    }

    #[test]
    fn immutable_id_is_recognised_quoted_or_bare_and_first_wins() {
        assert!(asks_for_immutable_id(&[b"IdType=\"ImmutableId\""]));
        assert!(asks_for_immutable_id(&[b"a=1, idtype=ImmutableId"]));
        assert!(!asks_for_immutable_id(&[
            b"IdType=RestId",
            b"IdType=ImmutableId"
        ]));
        assert!(!asks_for_immutable_id(&[b"return=minimal"]));
        assert!(!asks_for_immutable_id(&[]));
    }

    #[test]
    fn merged_value_reads_back_as_immutable() {
        let out = merge(&[b"IdType=\"RestId\", a=1"], Force);
        assert!(asks_for_immutable_id(&[out.as_bytes()]));
    }

    fn skip(patterns: &[&str]) -> SkipList {
        SkipList::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn skip_matches_search_whether_dollar_is_encoded_or_not() {
        let list = skip(&["*$search=*"]);
        assert!(list.matches("/v1.0/me/messages?$search=\"pizza\""));
        assert!(list.matches("/v1.0/me/messages?%24search=%22pizza%22"));
        assert!(!list.matches("/v1.0/me/messages?$filter=x"));
        assert!(!list.matches("/v1.0/me/messages"));
    }

    #[test]
    fn skip_pattern_written_encoded_matches_the_raw_form() {
        let list = skip(&["*%24search=*"]);
        assert!(list.matches("/v1.0/me/messages?%24search=a"));
        assert!(!list.matches("/v1.0/me/messages?$search=a"));
    }

    #[test]
    fn skip_globs_match_the_whole_string_literally() {
        let list = skip(&["/v1.0/users/*/photo"]);
        assert!(list.matches("/v1.0/users/a@b.com/photo"));
        assert!(!list.matches("/v1.0/users/a@b.com/photo/$value"));
        assert!(!list.matches("x/v1.0/users/a/photo"));
        let list = skip(&["/v1.0/me?x=1"]);
        assert!(list.matches("/v1.0/me?x=1"));
        assert!(!list.matches("/v1.0/meXx=1"));
    }

    #[test]
    fn skip_star_handles_backtracking_and_empty_runs() {
        assert!(glob_matches(b"*a*b", b"xaxxab"));
        assert!(glob_matches(b"a**", b"a"));
        assert!(glob_matches(b"*", b""));
        assert!(!glob_matches(b"*a*b", b"xaxxa"));
        assert!(!glob_matches(b"", b"a"));
        assert!(glob_matches(b"", b""));
    }

    #[test]
    fn empty_skip_list_matches_nothing() {
        let list = SkipList::new(&[]);
        assert!(list.is_empty());
        assert!(!list.matches("/v1.0/me"));
        assert!(!skip(&["*"]).is_empty());
        assert!(skip(&["*"]).matches("/v1.0/me"));
    }

    #[test]
    fn skip_survives_broken_percent_encoding() {
        let list = skip(&["*%zz*"]);
        assert!(list.matches("/v1.0/me?q=%zz"));
        assert!(!skip(&["*$x*"]).matches("/v1.0/me?q=%"));
    }
}
