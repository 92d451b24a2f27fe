//! The invariants the fuzz targets check, one function per parser that sees input from an
//! app or from Graph. Each function takes the raw fuzz input, feeds it to the product code
//! and panics when a property breaks: a panic is how libFuzzer learns of a finding.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) and by
//! `tests/fuzz_corpus.rs`, which includes this file with `#[path]` and replays the stored
//! corpus on the stable toolchain, so CI keeps guarding what the fuzzers found. Product code
//! never calls it; the `assert!`s and `expect`s here are the point, not a lapse of the
//! no-panic rule.
//!
//! Inputs that carry several parts split them at the first NUL byte (`split_nul`): a NUL
//! can appear in neither a header value nor a JSON text outside a string escape, so the
//! corpus files stay readable.

use std::time::{Duration, SystemTime};

use immutable_id_proxy::config::{self, Origin, Overrides, PreferMode, SourceType};
use immutable_id_proxy::exchange_id::{self, IdFormat};
use immutable_id_proxy::id_rewrite;
use immutable_id_proxy::identity;
use immutable_id_proxy::json_scan::{self, ScanError};
use immutable_id_proxy::links::LinkRewriter;
use immutable_id_proxy::prefer::{self, SkipList, IMMUTABLE_ID};
use immutable_id_proxy::{batch, retry};
use serde_json::Value;

/// A real REST immutable ID (id-samples.tsv): what the fuzz map answers for every lookup.
/// It is not a translatable item itself, so a rewritten text must hold no candidate.
pub const IMMUTABLE: &str = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0AGnUPtcQC-Eiwmc39SmMpPgAAA8ZAfgAA";

const ALL_SOURCES: [SourceType; 3] = [SourceType::RestId, SourceType::EwsId, SourceType::EntryId];

/// The part before the first NUL and the part after it (empty when there is none).
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// Prefer parsing and merging (prefer.rs). Input: the first byte picks the mode, the rest is
/// Prefer lines separated by `\n`; the first two lines are also a skip glob and a target.
pub fn prefer(data: &[u8]) {
    let Some((&mode_byte, rest)) = data.split_first() else {
        return;
    };
    let mode = if mode_byte & 1 == 0 {
        PreferMode::Force
    } else {
        PreferMode::Respect
    };
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let merged = prefer::merge(&lines, mode);
    let out = merged.as_bytes();
    assert!(
        http::HeaderValue::from_bytes(out).is_ok(),
        "merge built an invalid header value: {out:?}"
    );
    let elements = prefer::parse(out);
    let id_types: Vec<_> = elements.iter().filter(|p| p.is("IdType")).collect();
    match mode {
        PreferMode::Force => {
            assert_eq!(
                elements.first().map(|p| p.raw),
                Some(IMMUTABLE_ID.as_bytes()),
                "Force must put ours first: {out:?}"
            );
            assert_eq!(id_types.len(), 1, "Force must leave one IdType: {out:?}");
            assert!(prefer::asks_for_immutable_id(&[out]));
        }
        PreferMode::Respect => {
            assert!(
                id_types.iter().any(|p| !p.unterminated_quote),
                "Respect must leave a readable IdType: {out:?}"
            );
        }
    }
    // Every header-valid preference of the app survives byte for byte (Force drops only
    // IdType), in order among the whole ones.
    let wanted: Vec<&[u8]> = lines
        .iter()
        .flat_map(|line| prefer::parse(line))
        .filter(|p| p.raw.iter().all(|&b| is_header_value_byte(b)))
        .filter(|p| !p.unterminated_quote)
        .filter(|p| !(mode == PreferMode::Force && p.is("IdType")))
        .map(|p| p.raw)
        .collect();
    let mut kept = elements.iter().map(|p| p.raw);
    for raw in &wanted {
        assert!(
            kept.any(|k| k == *raw),
            "preference {raw:?} lost or reordered in {out:?}"
        );
    }
    // Merging the merged value again changes nothing, so a proxy behind a proxy is harmless.
    assert_eq!(
        prefer::merge(&[out], mode).as_bytes(),
        out,
        "merge is not idempotent"
    );

    // Skip globs: the matcher agrees with a plain dynamic-programming glob.
    let pattern = lines.first().copied().unwrap_or_default();
    let target = lines.get(1).copied().unwrap_or_default();
    if let (Ok(pattern), Ok(target)) = (std::str::from_utf8(pattern), std::str::from_utf8(target)) {
        let skip = SkipList::new(&[pattern.to_owned()]);
        let decoded: Vec<u8> = percent_encoding::percent_decode(target.as_bytes()).collect();
        let expected = glob_reference(pattern.as_bytes(), target.as_bytes())
            || (target.contains('%') && glob_reference(pattern.as_bytes(), &decoded));
        assert_eq!(
            skip.matches(target),
            expected,
            "glob {pattern:?} on {target:?}"
        );
    }
}

fn is_header_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// `*` matches any run of bytes; everything else matches itself. Quadratic table, only
/// used on fuzz-sized inputs.
fn glob_reference(pattern: &[u8], text: &[u8]) -> bool {
    // row[j]: pattern[..i] matches text[..j].
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        if p == b'*' {
            next[0] = row[0];
            for j in 1..=text.len() {
                next[j] = row[j] || next[j - 1];
            }
        } else {
            for j in 1..=text.len() {
                next[j] = row[j - 1] && text[j - 1] == p;
            }
        }
        row = next;
    }
    row[text.len()]
}

/// JWT claim extraction and mailbox keys (identity.rs). Input: an Authorization value, and
/// after a NUL a request path. The part before the NUL is also used as a token payload.
pub fn identity(data: &[u8]) {
    let (authorization, path) = split_nul(data);
    let claims = identity::claims_from_authorization(authorization);
    if let Some(claims) = &claims {
        for claim in [&claims.tid, &claims.app, &claims.oid]
            .into_iter()
            .flatten()
        {
            assert!(
                !claim.is_empty()
                    && claim.len() <= 128
                    && claim.bytes().all(|b| b.is_ascii_graphic()),
                "claim {claim:?} is not fit to be a key"
            );
        }
    }

    // The same bytes as a token payload: claims exist exactly when they are a JSON object,
    // and `tid` is read from it as serde_json reads it.
    let payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        authorization,
    );
    let token = format!("Bearer e30.{payload}.sig");
    let from_payload = identity::claims_from_authorization(token.as_bytes());
    let object = serde_json::from_slice::<Value>(authorization)
        .ok()
        .and_then(|v| v.as_object().cloned());
    assert_eq!(
        from_payload.is_some(),
        object.is_some() && payload.len() <= 64 * 1024,
        "claims for a payload that is {}a JSON object",
        if object.is_some() { "" } else { "not " }
    );
    if let (Some(claims), Some(object)) = (&from_payload, &object) {
        let tid = object.get("tid").and_then(Value::as_str);
        assert!(
            claims.tid.is_none() || claims.tid.as_deref() == tid,
            "tid {:?} is not the payload's {tid:?}",
            claims.tid
        );
    }

    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    for claims in [None, claims.as_ref(), from_payload.as_ref()] {
        if let Some(mailbox) = identity::mailbox_from_path(path, claims) {
            let key = mailbox.as_str();
            assert!(
                !key.is_empty() && !key.chars().any(char::is_control),
                "mailbox key {key:?}"
            );
            assert_eq!(key, key.trim(), "mailbox key {key:?} is not trimmed");
        }
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_bytes(authorization) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let who = identity::identify(&headers, path);
    assert!(!who.tenant.as_str().is_empty() && !who.app.as_str().is_empty());
}

/// The ID classifier and its codecs (exchange_id.rs). Input: any text.
pub fn exchange_id(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    if let Some(id) = exchange_id::classify(text) {
        assert!(
            (40..=700).contains(&text.len()) && text.is_ascii(),
            "classified {text:?} outside the ID shape"
        );
        // The same bytes in the other alphabet are the same ID.
        let (other, other_format) = match id.format {
            IdFormat::EwsId => (Some(exchange_id::ews_to_rest(text)), Some(IdFormat::RestId)),
            IdFormat::RestId if text.contains(['-', '_']) => {
                (Some(exchange_id::rest_to_ews(text)), Some(IdFormat::EwsId))
            }
            _ => (None, None),
        };
        if let (Some(other), Some(format)) = (other, other_format) {
            let again = exchange_id::classify(&other);
            assert_eq!(
                again.as_ref().map(|a| (a.format, a.kind, &a.mailbox_guid)),
                Some((format, id.kind, &id.mailbox_guid)),
                "{text:?} and {other:?} differ"
            );
        }
        if id.format == IdFormat::HexEntryId {
            let converted = exchange_id::hex_entry_id_to_entry_id(text)
                .expect("a classified hex entry ID is hex");
            let again = exchange_id::classify(&converted).map(|a| (a.format, a.kind));
            assert_eq!(again, Some((IdFormat::EntryId, id.kind)), "{converted:?}");
        }
    }
    // The strict decoders agree with the base64 crate's canonical engines.
    let ews = exchange_id::decode_ews(text);
    let reference = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text).ok();
    assert_eq!(ews, reference, "decode_ews({text:?})");
    let rest = exchange_id::decode_rest(text);
    let rest_reference = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        exchange_id::rest_to_ews(text),
    )
    .ok()
    .filter(|_| !text.contains(['+', '/']));
    assert_eq!(rest, rest_reference, "decode_rest({text:?})");
    // Entry ID encoding round-trips through its decoder.
    if !data.is_empty() {
        let encoded = exchange_id::entry_id_from_bytes(data);
        assert_eq!(
            exchange_id::decode_entry_id(&encoded).as_deref(),
            Some(data),
            "entry ID of {data:?}"
        );
    }
    if let Some(candidate) = exchange_id::id_in_path_segment(text) {
        assert!(
            (40..=700).contains(&candidate.len())
                && candidate
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+/-_=".contains(&c)),
            "segment candidate {candidate:?}"
        );
    }
}

/// ID rewriting in targets, JSON, `$batch` and responses (id_rewrite.rs). Input: the same
/// text as a request target and as a body.
pub fn id_rewrite(data: &[u8]) {
    let never = |_: &str| None;
    let immutable = |_: &str| Some(IMMUTABLE.to_owned());

    // A map that knows nothing changes nothing.
    assert!(matches!(
        id_rewrite::rewrite_json(data, &ALL_SOURCES, &never),
        Ok(None) | Err(_)
    ));
    assert!(matches!(
        id_rewrite::rewrite_response(data, &ALL_SOURCES, &never),
        Ok(None) | Err(_)
    ));
    assert_eq!(id_rewrite::rewrite_batch(data, &ALL_SOURCES, &never), None);

    // Mapping every candidate replaces every one of them, and no candidate is left behind.
    let found = id_rewrite::candidates_in_json(data, &ALL_SOURCES);
    let applied = id_rewrite::apply_to_json(data, &ALL_SOURCES, &immutable);
    match (&found, &applied) {
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Ok(found), Ok(None)) => assert!(found.is_empty(), "unreplaced {found:?}"),
        (Ok(found), Ok(Some(rewritten))) => {
            assert!(!found.is_empty() && rewritten.applied.len() >= found.len());
            assert_eq!(
                id_rewrite::candidates_in_json(&rewritten.output, &ALL_SOURCES),
                Ok(Vec::new()),
                "candidates left in {:?}",
                String::from_utf8_lossy(&rewritten.output)
            );
        }
        _ => panic!("candidates_in_json {found:?} but apply_to_json {applied:?}"),
    }
    // The one-pass splice (scan once, apply at the recorded spans) writes exactly what
    // replacing each string in place during a scan would.
    let in_place = json_scan::rewrite_strings(data, |_, text| {
        id_rewrite::candidate_for(text, &ALL_SOURCES).map(|_| IMMUTABLE.to_owned())
    });
    assert_eq!(
        in_place.map(|out| out.filter(|out| out.as_slice() != data)),
        applied.map(|rewritten| rewritten.map(|r| r.output)),
        "one-pass splice and in-place rewrite disagree"
    );
    if let Ok(Some(rewritten)) = id_rewrite::apply_to_response(data, &ALL_SOURCES, &immutable) {
        assert_eq!(
            id_rewrite::candidates_in_response(&rewritten.output, &ALL_SOURCES),
            Ok(Vec::new())
        );
    }

    let batch_found = id_rewrite::candidates_in_batch(data, &ALL_SOURCES);
    let batch_applied = id_rewrite::apply_to_batch(data, &ALL_SOURCES, &immutable);
    assert_eq!(
        batch_applied.is_some(),
        batch_found.as_ref().is_some_and(|found| !found.is_empty()),
        "candidates {batch_found:?} but rewrite {batch_applied:?}"
    );
    if let Some(rewritten) = batch_applied {
        assert_eq!(
            id_rewrite::candidates_in_batch(&rewritten.output, &ALL_SOURCES),
            Some(Vec::new()),
            "candidates left in the batch"
        );
    }

    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    assert_eq!(
        id_rewrite::rewrite_target(target, &ALL_SOURCES, &never),
        None
    );
    let found = id_rewrite::candidates_in_target(target, &ALL_SOURCES);
    let applied = id_rewrite::apply_to_target(target, &ALL_SOURCES, &immutable);
    assert_eq!(
        applied.is_some(),
        !found.is_empty(),
        "candidates {found:?} but rewrite {applied:?}"
    );
    if let Some(rewritten) = applied {
        assert_eq!(
            id_rewrite::candidates_in_target(&rewritten.output, &ALL_SOURCES),
            Vec::new(),
            "candidates left in {:?}",
            rewritten.output
        );
    }
}

/// Link rewriting (links.rs) and the JSON scanner under it (json_scan.rs). Input: a
/// response body; the part before a NUL is also tried as a URL and a header value.
pub fn links(data: &[u8]) {
    let upstream = Origin::parse("https://graph.microsoft.com").expect("a valid origin");
    let public = Origin::parse("http://127.0.0.1:8080").expect("a valid origin");
    let rewriter = LinkRewriter::new(&upstream, &public).expect("the origins differ");

    json_scan_agrees_with_serde_json(data);

    let rewritten = rewriter.rewrite_json(data);
    if !LinkRewriter::may_rewrite(data) {
        assert!(
            !matches!(rewritten, Ok(Some(_))),
            "may_rewrite said no, yet links were rewritten"
        );
    }
    match rewritten {
        Ok(Some(out)) => {
            assert_eq!(
                json_scan::rewrite_strings(&out, |_, _| None),
                Ok(None),
                "rewritten links are not JSON"
            );
            // Rewritten links point at the public origin, which is not rewritten again.
            assert_eq!(rewriter.rewrite_json(&out), Ok(None), "not idempotent");
        }
        Ok(None) => {}
        Err(error) => assert_eq!(
            json_scan::rewrite_strings(data, |_, _| None).err(),
            Some(error)
        ),
    }

    let (first, _) = split_nul(data);
    if let Ok(url) = std::str::from_utf8(first) {
        if let Some(rewritten) = rewriter.rewrite_url(url) {
            let tail = rewritten
                .strip_prefix("http://127.0.0.1:8080")
                .expect("rewritten onto the public origin");
            assert!(
                url.ends_with(tail),
                "{url:?} lost its path in {rewritten:?}"
            );
            assert_eq!(rewriter.rewrite_url(&rewritten), None);
        }
    }
    if let Some(value) = rewriter.rewrite_header(first) {
        assert!(value.as_bytes().starts_with(b"http://127.0.0.1:8080"));
    }
}

/// json_scan accepts what serde_json accepts when it skips a value, except the documented
/// differences: raw bytes that are not UTF-8 (json_scan refuses them, serde_json does not
/// look) and nesting (json_scan stops at 128 levels, serde_json's skipping has no limit).
/// Lone surrogate escapes are accepted by both. Replacing every string by its own text
/// keeps the document's value.
fn json_scan_agrees_with_serde_json(data: &[u8]) {
    let scanned = json_scan::rewrite_strings(data, |_, _| None);
    if std::str::from_utf8(data).is_err() {
        // serde_json skips a string without checking its UTF-8; json_scan refuses the body.
        assert!(
            matches!(scanned, Err(ScanError::NotJson { .. })),
            "accepted non-UTF-8"
        );
        return;
    }
    let serde = serde_json::from_slice::<serde::de::IgnoredAny>(data);
    match (&scanned, &serde) {
        (Ok(None), Ok(_)) | (Err(ScanError::NotJson { .. }), Err(_)) => {}
        // serde_json skips values with its own stack and no depth limit; json_scan stops at
        // MAX_DEPTH whatever follows.
        (Err(ScanError::TooDeep), _) => {}
        _ => panic!(
            "json_scan says {scanned:?}, serde_json says {serde:?} for {:?}",
            String::from_utf8_lossy(data)
        ),
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let copied = json_scan::rewrite_strings(data, |_, text| Some(text.to_owned()))
            .expect("serde_json accepted it")
            .unwrap_or_else(|| data.to_vec());
        let reread: Value =
            serde_json::from_slice(&copied).expect("re-escaped strings are still JSON");
        assert_eq!(reread, value, "copying every string changed the document");
    }
}

/// `$batch` bodies (batch.rs) and the retry of throttled sub-requests (retry.rs). Input: a
/// request body, a NUL, a `$batch` answer body.
pub fn batch(data: &[u8]) {
    let (request, response) = split_nul(data);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);

    let urls = batch::sub_request_urls(request);
    let merged = prefer::merge(&[], PreferMode::Force);
    let merged = merged.to_str().expect("our own value is ASCII").to_owned();
    let applied = batch::apply_prefer(request, |_, _| Some(merged.clone()));
    assert_eq!(applied.is_some(), urls.is_some(), "a batch is a batch");
    if let Some(out) = &applied {
        let value: Value = serde_json::from_slice(out).expect("apply_prefer writes JSON");
        let parsed = batch::sub_requests(&value).expect("still a batch");
        assert_eq!(
            parsed.iter().map(|r| r.url).collect::<Vec<_>>(),
            urls.clone().unwrap_or_default(),
            "sub-request urls changed"
        );
        // Applying it again finds our Prefer everywhere it was set and changes none of the
        // strings (numbers are compared out: serde_json's float parsing is not exact).
        let again = batch::apply_prefer(out, |_, _| Some(merged.clone())).expect("still a batch");
        let again: Value = serde_json::from_slice(&again).expect("apply_prefer writes JSON");
        assert_eq!(
            batch::sub_requests(&again),
            Some(parsed),
            "apply_prefer is not idempotent"
        );
    }
    if let Ok(path) = std::str::from_utf8(response) {
        let _ = batch::is_batch_path(path);
    }

    if let Some(retry) = retry::batch_retry_at(request, response, now) {
        assert!(!retry.ids.is_empty(), "a retry of nothing");
        let value: Value = serde_json::from_slice(&retry.body).expect("retry body is JSON");
        let entries = value["requests"].as_array().expect("retry body is a batch");
        assert_eq!(entries.len(), retry.ids.len());
        let ids: Vec<String> = retry.ids.iter().map(|id| id.to_lowercase()).collect();
        for entry in entries {
            if let Some(list) = entry.get("dependsOn").and_then(Value::as_array) {
                assert!(!list.is_empty(), "an empty dependsOn was kept");
                for dependency in list {
                    let dependency = dependency.as_str().expect("kept ones are strings");
                    assert!(
                        ids.contains(&dependency.to_lowercase()),
                        "dependsOn {dependency:?} is not retried"
                    );
                }
            }
        }
        // Merging the retry's answer back keeps the original answer's shape.
        let retry_answer = serde_json::json!({
            "responses": retry.ids.iter().map(|id| serde_json::json!({"id": id, "status": 200})).collect::<Vec<_>>()
        });
        let retry_answer = serde_json::to_vec(&retry_answer).expect("serialisable");
        let merged = retry::merge_batch_responses(response, &retry_answer)
            .expect("the answer was a batch answer");
        let merged: Value = serde_json::from_slice(&merged).expect("merged answer is JSON");
        let original: Value = serde_json::from_slice(response).expect("it parsed before");
        assert_eq!(
            merged["responses"].as_array().map(Vec::len),
            original["responses"].as_array().map(Vec::len),
            "merging changed the number of answers"
        );
    }
    if let Some(merged) = retry::merge_batch_responses(request, response) {
        let merged: Value = serde_json::from_slice(&merged).expect("merged answer is JSON");
        let original: Value = serde_json::from_slice(request).expect("it parsed before");
        assert_eq!(
            merged["responses"].as_array().map(Vec::len),
            original["responses"].as_array().map(Vec::len)
        );
    }
}

/// Retry-After values (retry.rs). Input: the header value.
pub fn retry_after(data: &[u8]) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let later = now + Duration::from_secs(3_600);
    let early = retry::parse_retry_after(data, now);
    let late = retry::parse_retry_after(data, later);
    assert_eq!(
        early.is_some(),
        late.is_some(),
        "the clock decided validity"
    );
    if let (Some(early), Some(late)) = (early, late) {
        assert!(late <= early, "a later clock waits longer");
        assert!(
            early - late <= Duration::from_secs(3_600),
            "waits drift past the clock"
        );
    }
    let Ok(text) = std::str::from_utf8(data) else {
        assert_eq!(early, None, "non-UTF-8 accepted");
        return;
    };
    let trimmed = text.trim_matches([' ', '\t']);
    if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
        assert_eq!(early, late, "delta-seconds depend on the clock");
        if let Ok(seconds) = trimmed.parse::<u64>() {
            assert_eq!(early, Some(Duration::from_secs(seconds)));
        }
        if early.is_some() {
            let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, "0"));
            assert!(
                !whole.is_empty()
                    && !fraction.is_empty()
                    && whole
                        .bytes()
                        .chain(fraction.bytes())
                        .all(|b| b.is_ascii_digit()),
                "{trimmed:?} is not delta-seconds"
            );
        }
    }
    let padded = format!(" \t{text}\t ");
    assert_eq!(retry::parse_retry_after(padded.as_bytes(), now), early);
}

/// The config loader (config.rs). Input: a config file, then after a NUL `NAME=value`
/// environment lines; the file text is also tried as an origin URL.
pub fn config(data: &[u8]) {
    let (file, env) = split_nul(data);
    let Ok(file) = std::str::from_utf8(file) else {
        return;
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    match config::parse_str(file, env.clone(), &Overrides::default()) {
        Ok(loaded) => {
            let again = config::parse_str(file, env, &Overrides::default())
                .expect("the same input loads twice");
            assert_eq!(
                format!("{:?}", loaded.config),
                format!("{:?}", again.config)
            );
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a problem");
            for error in &errors.0 {
                assert!(!error.key.is_empty() && !error.why.is_empty(), "{error:?}");
            }
        }
    }
    if let Ok(origin) = Origin::parse(file) {
        let spelled = format!("{}://{}", origin.scheme, origin.authority);
        assert_eq!(Origin::parse(&spelled).as_ref(), Ok(&origin), "{spelled:?}");
    }
}
