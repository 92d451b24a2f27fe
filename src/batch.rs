//! `$batch` request bodies: read each sub-request (for the limiter, one token apiece) and put
//! the merged Prefer into each sub-request's own `headers` object, because Graph does not
//! apply the outer request's headers to the inner ones.
//!
//! The body is re-serialised from `serde_json::Value` with `preserve_order`, so keys,
//! requests and ids keep their order; only a Prefer value (and a `headers` object created
//! for it) changes. Anything that is not a batch body is reported as `None` and the caller
//! forwards the original bytes. One odd sub-request never fails the batch: it is left alone.

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

const REQUESTS: &str = "requests";
const HEADERS: &str = "headers";
const PREFER: &str = "Prefer";

/// `/v1.0/$batch` or `/beta/$batch`, `$` percent-encoded or not, query string ignored.
pub fn is_batch_path(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let Some(path) = path.strip_prefix('/') else {
        return false;
    };
    let Some((version, rest)) = path.split_once('/') else {
        return false;
    };
    (version.eq_ignore_ascii_case("v1.0") || version.eq_ignore_ascii_case("beta"))
        && percent_decode_str(rest)
            .decode_utf8()
            .is_ok_and(|segment| segment.eq_ignore_ascii_case("$batch"))
}

/// One entry of `requests`, borrowed from the parsed body. Fields that are missing or not
/// strings read as `""` (Graph will reject the batch itself; the limiter still counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRequest<'a> {
    pub id: &'a str,
    pub method: &'a str,
    pub url: &'a str,
    /// The first Prefer header (name matched case-insensitively) when it is a string.
    pub prefer: Option<&'a str>,
}

/// The sub-requests of a parsed batch body; `None` when it has no `requests` array.
pub fn sub_requests(batch: &Value) -> Option<Vec<SubRequest<'_>>> {
    let requests = batch.as_object()?.get(REQUESTS)?.as_array()?;
    Some(requests.iter().map(sub_request).collect())
}

fn sub_request(entry: &Value) -> SubRequest<'_> {
    let field = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or_default();
    let prefer = entry
        .get(HEADERS)
        .and_then(Value::as_object)
        .and_then(|headers| {
            headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(PREFER))
        })
        .and_then(|(_, value)| value.as_str());
    SubRequest {
        id: field("id"),
        method: field("method"),
        url: field("url"),
        prefer,
    }
}

/// Sub-request count and each sub-request's url (for rate limiting: one token per
/// sub-request, against the mailbox its url names).
pub fn sub_request_urls(body: &[u8]) -> Option<Vec<String>> {
    let batch: Value = serde_json::from_slice(body).ok()?;
    let requests = sub_requests(&batch)?;
    Some(requests.iter().map(|r| r.url.to_owned()).collect())
}

/// Rewrites a `$batch` request body so each sub-request's own `headers` object carries the
/// merged Prefer.
///
/// `decide(url, existing_prefer)` returns the Prefer value to set, or `None` to leave that
/// sub-request alone (a skip pattern matched). `headers` is created when missing (or
/// `null`); an existing Prefer key keeps its spelling and place. Several Prefer keys in one
/// object (`Prefer` and `prefer`) are handed to `decide` joined with `", "`, as RFC 7240
/// treats repeated lines, and collapse into the first. A sub-request whose `headers` is not
/// an object, or whose Prefer is not a string, is left alone.
///
/// Returns `None` when the body is not a JSON object with a `requests` array. Numbers are
/// re-serialised by serde_json, so a float written `1.50` comes out `1.5` (same value).
pub fn apply_prefer(
    body: &[u8],
    mut decide: impl FnMut(&str, Option<&str>) -> Option<String>,
) -> Option<Vec<u8>> {
    let mut batch: Value = serde_json::from_slice(body).ok()?;
    let requests = batch.as_object_mut()?.get_mut(REQUESTS)?.as_array_mut()?;
    for entry in requests.iter_mut() {
        if let Value::Object(request) = entry {
            set_prefer(request, &mut decide);
        }
    }
    serde_json::to_vec(&batch).ok()
}

fn set_prefer(
    request: &mut Map<String, Value>,
    decide: &mut impl FnMut(&str, Option<&str>) -> Option<String>,
) {
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match request.get_mut(HEADERS) {
        None | Some(Value::Null) => {
            if let Some(prefer) = decide(&url, None) {
                let mut headers = Map::new();
                headers.insert(PREFER.to_owned(), Value::String(prefer));
                request.insert(HEADERS.to_owned(), Value::Object(headers));
            }
        }
        Some(Value::Object(headers)) => set_prefer_header(headers, &url, decide),
        Some(_) => {}
    }
}

fn set_prefer_header(
    headers: &mut Map<String, Value>,
    url: &str,
    decide: &mut impl FnMut(&str, Option<&str>) -> Option<String>,
) {
    let keys: Vec<String> = headers
        .keys()
        .filter(|name| name.eq_ignore_ascii_case(PREFER))
        .cloned()
        .collect();
    let mut existing: Vec<&str> = Vec::with_capacity(keys.len());
    for key in &keys {
        match headers.get(key).and_then(Value::as_str) {
            Some(value) => existing.push(value),
            None => return,
        }
    }
    let existing = (!existing.is_empty()).then(|| existing.join(", "));
    let Some(prefer) = decide(url, existing.as_deref()) else {
        return;
    };
    let Some((first, rest)) = keys.split_first() else {
        headers.insert(PREFER.to_owned(), Value::String(prefer));
        return;
    };
    headers.insert(first.clone(), Value::String(prefer));
    for key in rest {
        headers.shift_remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PreferMode;
    use crate::prefer::{merge, SkipList, IMMUTABLE_ID};
    use serde_json::json;

    /// What the pipeline will pass: the skip list, then the ordinary merge.
    fn pipeline_decide(skip: &[&str]) -> impl FnMut(&str, Option<&str>) -> Option<String> {
        let skip = SkipList::new(&skip.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        move |url, existing| {
            if skip.matches(url) {
                return None;
            }
            let lines: Vec<&[u8]> = existing.iter().map(|e| e.as_bytes()).collect();
            let merged = merge(&lines, PreferMode::Force);
            Some(String::from_utf8_lossy(merged.as_bytes()).into_owned())
        }
    }

    fn rewrite(body: &Value, skip: &[&str]) -> Value {
        let bytes = serde_json::to_vec(body).unwrap();
        let out = apply_prefer(&bytes, pipeline_decide(skip)).expect("a batch body");
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn batch_paths_are_recognised_in_every_spelling() {
        for path in [
            "/v1.0/$batch",
            "/beta/$batch",
            "/v1.0/%24batch",
            "/V1.0/$BATCH",
            "/beta/%24Batch?x=1",
        ] {
            assert!(is_batch_path(path), "{path}");
        }
        for path in [
            "/v1.0/me/$batch",
            "/$batch",
            "v1.0/$batch",
            "/v2.0/$batch",
            "/v1.0/$batchx",
            "/v1.0/%ff",
            "",
        ] {
            assert!(!is_batch_path(path), "{path}");
        }
    }

    #[test]
    fn sub_request_without_headers_gets_a_headers_object() {
        let out = rewrite(
            &json!({"requests":[{"id":"1","method":"GET","url":"/me/messages"}]}),
            &[],
        );
        assert_eq!(
            out,
            json!({"requests":[{"id":"1","method":"GET","url":"/me/messages",
                "headers":{"Prefer":IMMUTABLE_ID}}]})
        );
    }

    #[test]
    fn null_headers_are_treated_as_missing() {
        let out = rewrite(
            &json!({"requests":[{"id":"1","url":"me","headers":null}]}),
            &[],
        );
        assert_eq!(
            out["requests"][0]["headers"],
            json!({"Prefer": IMMUTABLE_ID})
        );
    }

    #[test]
    fn existing_headers_keep_their_other_fields_and_order() {
        let body = br#"{"requests":[{"id":"1","method":"POST","url":"/me/messages","headers":{"Content-Type":"application/json","X-A":"b"},"body":{"subject":"hi","n":[1,2]}}]}"#;
        let out = apply_prefer(body, pipeline_decide(&[])).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"requests":[{"id":"1","method":"POST","url":"/me/messages","headers":{"Content-Type":"application/json","X-A":"b","Prefer":"IdType=\"ImmutableId\""},"body":{"subject":"hi","n":[1,2]}}]}"#
        );
    }

    #[test]
    fn existing_prefer_in_other_case_is_merged_in_place() {
        let body = br#"{"requests":[{"id":"1","url":"/me/events","headers":{"prefer":"outlook.timezone=\"Pacific Standard Time\", IdType=\"RestId\"","Accept":"application/json"}}]}"#;
        let out = apply_prefer(body, pipeline_decide(&[])).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"requests":[{"id":"1","url":"/me/events","headers":{"prefer":"IdType=\"ImmutableId\", outlook.timezone=\"Pacific Standard Time\"","Accept":"application/json"}}]}"#
        );
    }

    #[test]
    fn several_prefer_keys_collapse_into_the_first() {
        let mut seen = Vec::new();
        let body = br#"{"requests":[{"id":"1","url":"me","headers":{"PREFER":"a=1","X":"y","Prefer":"b=2"}}]}"#;
        let out = apply_prefer(body, |_, existing| {
            seen.push(existing.map(str::to_owned));
            Some("merged".to_owned())
        })
        .unwrap();
        assert_eq!(seen, vec![Some("a=1, b=2".to_owned())]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"requests":[{"id":"1","url":"me","headers":{"PREFER":"merged","X":"y"}}]}"#
        );
    }

    #[test]
    fn decide_gets_each_url_and_none_leaves_that_request_alone() {
        let body = json!({"requests":[
            {"id":"1","method":"GET","url":"/me/messages?$search=\"x\""},
            {"id":"2","method":"GET","url":"/me/messages?%24search=x","headers":{"Prefer":"a=1"}},
            {"id":"3","method":"GET","url":"/me/messages"}
        ]});
        let out = rewrite(&body, &["*$search=*"]);
        assert_eq!(out["requests"][0], body["requests"][0]);
        assert_eq!(out["requests"][1], body["requests"][1]);
        assert_eq!(out["requests"][2]["headers"]["Prefer"], IMMUTABLE_ID);
    }

    #[test]
    fn every_other_field_survives_untouched() {
        let body = json!({
            "requests":[{
                "id":"2","atomicityGroup":"g","method":"PATCH","url":"users/a@b.com/events/AAMk=",
                "dependsOn":["1"],"body":{"x":{"deep":[true,null,"s"]}},
                "headers":{"Content-Type":"application/json"},"x-unknown":7
            }],
            "extra":"kept"
        });
        let out = rewrite(&body, &[]);
        let mut expected = body.clone();
        expected["requests"][0]["headers"]["Prefer"] = json!(IMMUTABLE_ID);
        assert_eq!(out, expected);
        let keys: Vec<&String> = out["requests"][0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "id",
                "atomicityGroup",
                "method",
                "url",
                "dependsOn",
                "body",
                "headers",
                "x-unknown"
            ]
        );
    }

    #[test]
    fn twenty_requests_keep_their_order_and_ids() {
        let requests: Vec<Value> = (0..20)
            .rev()
            .map(|i| json!({"id": format!("r{i}"), "method":"GET", "url": format!("/users/u{i}@x.com/messages")}))
            .collect();
        let out = rewrite(&json!({ "requests": requests }), &[]);
        let ids: Vec<&str> = out["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..20).rev().map(|i| format!("r{i}")).collect();
        assert_eq!(ids, expected);
        assert!(out["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["headers"]["Prefer"] == IMMUTABLE_ID));
    }

    #[test]
    fn odd_sub_requests_are_left_alone_without_failing_the_batch() {
        let body = json!({"requests":[
            {"id":"1","url":"me","headers":"not an object"},
            {"id":"2","url":"me","headers":{"Prefer":42}},
            {"id":"3","url":"me","headers":{"prefer":"a=1","Prefer":["x"]}},
            "not a request",
            7,
            {"id":"6","url":5},
            {"id":"7","url":"me"}
        ]});
        let out = rewrite(&body, &[]);
        for i in 0..5 {
            assert_eq!(out["requests"][i], body["requests"][i], "entry {i}");
        }
        assert_eq!(out["requests"][5]["headers"]["Prefer"], IMMUTABLE_ID);
        assert_eq!(out["requests"][6]["headers"]["Prefer"], IMMUTABLE_ID);
    }

    #[test]
    fn url_that_is_not_a_string_reaches_decide_as_empty() {
        let mut urls = Vec::new();
        apply_prefer(
            br#"{"requests":[{"id":"1","url":5},{"id":"2"}]}"#,
            |url, _| {
                urls.push(url.to_owned());
                None
            },
        )
        .unwrap();
        assert_eq!(urls, ["", ""]);
    }

    #[test]
    fn bodies_that_are_not_batches_give_none() {
        for body in [
            &b"{\"requests\":[{\"id\":\"1\""[..],
            b"",
            b"not json",
            b"[]",
            b"{}",
            b"{\"requests\":{}}",
            b"{\"Requests\":[]}",
            b"\"requests\"",
            b"{\"requests\":[]} trailing",
            b"\xef\xbb\xbf{\"requests\":[]}",
        ] {
            assert_eq!(
                apply_prefer(body, |_, _| Some("x".into())),
                None,
                "{body:?}"
            );
            assert_eq!(sub_request_urls(body), None, "{body:?}");
        }
    }

    #[test]
    fn deeply_nested_body_gives_none_not_a_stack_overflow() {
        let deep = format!(
            "{{\"requests\":[{{\"body\":{}{}}}]}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(apply_prefer(deep.as_bytes(), |_, _| None), None);
    }

    #[test]
    fn empty_requests_array_is_still_a_batch() {
        assert_eq!(
            apply_prefer(br#"{"requests":[]}"#, |_, _| Some("x".into())),
            Some(br#"{"requests":[]}"#.to_vec())
        );
        assert_eq!(sub_request_urls(br#"{"requests":[]}"#), Some(vec![]));
    }

    #[test]
    fn every_sub_request_is_counted_with_its_url() {
        let body = br#"{"requests":[
            {"id":"1","method":"GET","url":"/me/messages"},
            {"id":"2","method":"GET","url":"users/bob@x.com/events"},
            {"id":"3"},
            "junk"
        ]}"#;
        assert_eq!(
            sub_request_urls(body),
            Some(vec![
                "/me/messages".to_owned(),
                "users/bob@x.com/events".to_owned(),
                String::new(),
                String::new()
            ])
        );
    }

    #[test]
    fn sub_requests_expose_id_method_url_and_prefer() {
        let batch = json!({"requests":[
            {"id":"a","method":"GET","url":"/me","headers":{"PREFER":"return=minimal"}},
            {"id":"b","method":"POST","url":"me/sendMail"}
        ]});
        assert_eq!(
            sub_requests(&batch),
            Some(vec![
                SubRequest {
                    id: "a",
                    method: "GET",
                    url: "/me",
                    prefer: Some("return=minimal")
                },
                SubRequest {
                    id: "b",
                    method: "POST",
                    url: "me/sendMail",
                    prefer: None
                },
            ])
        );
    }
}
