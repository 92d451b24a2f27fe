//! `POST /{version}/$batch`: up to 20 sub-requests with unique (case-insensitive) ids,
//! relative urls with or without a leading `/`, `dependsOn` with 424 for failed
//! dependencies, and answers as `{"responses":[{id,status,headers,body}]}`.
//!
//! Sub-requests use only their own headers: the outer `Authorization` decides who is
//! calling, but an outer `Prefer` is never applied to them (what real Graph was seen to do).
//! Sub-requests run one after another, each admitted by the throttle on its own mailbox.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use super::reply::{GraphError, GraphReply};
use super::routes::{run_subrequest, GraphRequest};
use super::stats::joined_prefer;
use super::token::Claims;
use super::{lock, Simulator};

/// Graph's documented limit.
pub const MAX_REQUESTS: usize = 20;

struct SubRequest {
    id: String,
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
    depends_on: Vec<String>,
}

pub fn handle(
    sim: &Simulator,
    claims: &Claims,
    version: &str,
    body: &[u8],
) -> Result<GraphReply, GraphError> {
    let requests = parse(version, body)?;
    lock(&sim.stats).batch_subrequests += requests.len() as u64;
    let mut responses: Vec<Value> = Vec::with_capacity(requests.len());
    let mut statuses: Vec<(String, u16)> = Vec::with_capacity(requests.len());
    for request in &requests {
        let failed_dependency = request.depends_on.iter().any(|dependency| {
            statuses
                .iter()
                .find(|(id, _)| id.eq_ignore_ascii_case(dependency))
                .is_none_or(|(_, status)| !(200..300).contains(status))
        });
        let reply = if failed_dependency {
            GraphError::new(
                424,
                "FailedDependency",
                "The request was not run because a request it depends on failed.",
            )
            .into_reply(&uuid::Uuid::new_v4().to_string())
        } else {
            lock(&sim.stats).record_prefer(joined_prefer(
                request
                    .headers
                    .get_all("prefer")
                    .iter()
                    .map(HeaderValue::as_bytes),
            ));
            let graph_request = GraphRequest {
                method: &request.method,
                path: &request.path,
                query: &request.query,
                headers: &request.headers,
                body: &request.body,
            };
            run_subrequest(sim, claims, &graph_request)
                .unwrap_or_else(|error| error.into_reply(&uuid::Uuid::new_v4().to_string()))
        };
        statuses.push((request.id.clone(), reply.status));
        responses.push(sub_response(&request.id, reply));
    }
    Ok(GraphReply::json(200, json!({ "responses": responses })))
}

fn sub_response(id: &str, reply: GraphReply) -> Value {
    let mut headers = Map::new();
    if reply.body.is_some() {
        headers.insert("Content-Type".into(), "application/json".into());
    }
    for (name, value) in reply.headers {
        headers.insert(name, value.into());
    }
    let mut out = Map::new();
    out.insert("id".into(), id.into());
    out.insert("status".into(), reply.status.into());
    out.insert("headers".into(), Value::Object(headers));
    if let Some(body) = reply.body {
        out.insert("body".into(), body);
    }
    Value::Object(out)
}

fn parse(version: &str, body: &[u8]) -> Result<Vec<SubRequest>, GraphError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|_| super::translate::invalid_payload())?;
    let list = json
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| GraphError::bad_request("Invalid batch payload format."))?;
    if list.len() > MAX_REQUESTS {
        return Err(GraphError::bad_request(format!(
            "The number of requests in the batch exceeds the maximum of {MAX_REQUESTS}."
        )));
    }
    let mut requests: Vec<SubRequest> = Vec::with_capacity(list.len());
    for entry in list {
        let text = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| {
                    GraphError::bad_request(format!("A batch request is missing '{name}'."))
                })
        };
        let id = text("id")?.to_string();
        if requests
            .iter()
            .any(|seen| seen.id.eq_ignore_ascii_case(&id))
        {
            return Err(GraphError::bad_request(format!(
                "Batch request ids must be unique; '{id}' is repeated."
            )));
        }
        let method = text("method")?.to_ascii_uppercase();
        let url = text("url")?;
        if url.contains("://") {
            return Err(GraphError::bad_request(format!(
                "Request id '{id}': the url must be relative."
            )));
        }
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let headers = parse_headers(&id, entry.get("headers"))?;
        let body = match entry.get("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(body) => {
                if !headers.contains_key("content-type") {
                    return Err(GraphError::bad_request(format!(
                        "Write request id : {id} does not contain Content-Type header or body."
                    )));
                }
                match body {
                    Value::String(text) => text.clone().into_bytes(),
                    other => other.to_string().into_bytes(),
                }
            }
        };
        let depends_on = match entry.get("dependsOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) => ids
                .iter()
                .map(|dependency| dependency.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| GraphError::bad_request("dependsOn must list request ids."))?,
            Some(_) => return Err(GraphError::bad_request("dependsOn must be an array.")),
        };
        // Requests run in order, so a dependency must be an earlier request.
        if let Some(unknown) = depends_on.iter().find(|dependency| {
            !requests
                .iter()
                .any(|seen| seen.id.eq_ignore_ascii_case(dependency))
        }) {
            return Err(GraphError::bad_request(format!(
                "Request id '{id}' depends on '{unknown}', which is not an earlier request in the batch."
            )));
        }
        requests.push(SubRequest {
            id,
            method,
            path: format!("/{version}/{}", path.trim_start_matches('/')),
            query: query.to_string(),
            headers,
            body,
            depends_on,
        });
    }
    Ok(requests)
}

fn parse_headers(id: &str, headers: Option<&Value>) -> Result<HeaderMap, GraphError> {
    let mut map = HeaderMap::new();
    let Some(headers) = headers.filter(|h| !h.is_null()) else {
        return Ok(map);
    };
    let object = headers.as_object().ok_or_else(|| {
        GraphError::bad_request(format!("Request id '{id}': headers must be an object."))
    })?;
    for (name, value) in object {
        let value = value.as_str().ok_or_else(|| {
            GraphError::bad_request(format!(
                "Request id '{id}': header '{name}' must be a string."
            ))
        })?;
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            GraphError::bad_request(format!("Request id '{id}': invalid header name."))
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            GraphError::bad_request(format!("Request id '{id}': invalid header value."))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{ids, token, SEED_USERS};

    fn claims() -> Claims {
        let seed = SEED_USERS[0];
        token::parse_authorization(&format!(
            "Bearer {}",
            token::mint(seed.tenant_id, seed.user_id, "app", false)
        ))
        .unwrap()
    }

    fn batch(sim: &Simulator, body: Value) -> Result<Value, GraphError> {
        handle(sim, &claims(), "v1.0", body.to_string().as_bytes()).map(|reply| reply.body.unwrap())
    }

    #[test]
    fn sub_requests_use_their_own_prefer_and_relative_urls_with_or_without_slash() {
        let sim = Simulator::new();
        let answer = batch(
            &sim,
            json!({"requests": [
                {"id": "1", "method": "GET", "url": "/me/messages?$top=1", "headers": {"Prefer": "IdType=\"ImmutableId\""}},
                {"id": "2", "method": "GET", "url": "me/messages?$top=1"},
            ]}),
        )
        .unwrap();
        let first = &answer["responses"][0];
        assert_eq!(first["status"], 200);
        assert_eq!(
            first["headers"]["Preference-Applied"],
            "IdType=\"ImmutableId\""
        );
        assert!(first["body"]["value"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with(ids::IMMUTABLE_REST_PREFIX));
        let second = &answer["responses"][1];
        assert_eq!(
            second["body"]["value"][0]["id"].as_str().unwrap().len(),
            152
        );
        assert_eq!(lock(&sim.stats).batch_subrequests, 2);
    }

    #[test]
    fn failed_dependency_gets_424_and_independent_requests_still_run() {
        let sim = Simulator::new();
        let answer = batch(
            &sim,
            json!({"requests": [
                {"id": "a", "method": "GET", "url": "/me/messages/bogus"},
                {"id": "b", "method": "GET", "url": "/me/mailFolders/inbox", "dependsOn": ["A"]},
                {"id": "c", "method": "GET", "url": "/me/mailFolders/inbox"},
                {"id": "d", "method": "GET", "url": "/me", "dependsOn": ["c"]},
            ]}),
        )
        .unwrap();
        let statuses: Vec<u64> = (0..4)
            .map(|i| answer["responses"][i]["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses, [400, 424, 200, 200]);
        assert_eq!(
            answer["responses"][1]["body"]["error"]["code"],
            "FailedDependency"
        );
    }

    #[test]
    fn malformed_batches_are_refused_whole() {
        let sim = Simulator::new();
        let too_many: Vec<Value> = (0..21)
            .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
            .collect();
        assert_eq!(
            batch(&sim, json!({"requests": too_many}))
                .err()
                .unwrap()
                .status,
            400
        );
        let duplicate = json!({"requests": [
            {"id": "x", "method": "GET", "url": "/me"},
            {"id": "X", "method": "GET", "url": "/me"},
        ]});
        assert!(batch(&sim, duplicate)
            .err()
            .unwrap()
            .message
            .contains("unique"));
        let absolute = json!({"requests": [{"id": "1", "method": "GET", "url": "https://graph.microsoft.com/v1.0/me"}]});
        assert_eq!(batch(&sim, absolute).err().unwrap().status, 400);
        let no_type =
            json!({"requests": [{"id": "1", "method": "POST", "url": "/me/messages", "body": {}}]});
        assert!(batch(&sim, no_type)
            .err()
            .unwrap()
            .message
            .contains("Content-Type"));
        let forward = json!({"requests": [{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["2"]}, {"id": "2", "method": "GET", "url": "/me"}]});
        assert_eq!(batch(&sim, forward).err().unwrap().status, 400);
        assert_eq!(
            handle(&sim, &claims(), "v1.0", b"[").err().unwrap().status,
            400
        );
        assert_eq!(lock(&sim.stats).batch_subrequests, 0);
    }

    #[test]
    fn sub_requests_are_throttled_per_mailbox() {
        let sim = Simulator::new();
        lock(&sim.switches)
            .apply(&json!({"throttle": {"budget": 2, "window_ms": 600000, "retry_after_s": 9}}))
            .unwrap();
        let requests: Vec<Value> = (0..3)
            .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
            .collect();
        let answer = batch(&sim, json!({"requests": requests})).unwrap();
        let third = &answer["responses"][2];
        assert_eq!(third["status"], 429);
        assert_eq!(third["headers"]["Retry-After"], "9");
        assert_eq!(third["body"]["error"]["code"], "TooManyRequests");
    }

    #[test]
    fn a_post_with_content_type_creates_and_nested_batch_is_refused() {
        let sim = Simulator::new();
        let answer = batch(
            &sim,
            json!({"requests": [
                {"id": "1", "method": "POST", "url": "/me/messages", "headers": {"Content-Type": "application/json"}, "body": {"subject": "batched"}},
                {"id": "2", "method": "POST", "url": "/$batch", "headers": {"Content-Type": "application/json"}, "body": {"requests": []}},
            ]}),
        )
        .unwrap();
        assert_eq!(answer["responses"][0]["status"], 201);
        assert_eq!(answer["responses"][0]["body"]["subject"], "batched");
        assert!(answer["responses"][0]["headers"]["Location"]
            .as_str()
            .unwrap()
            .starts_with("https://graph.microsoft.com/v1.0/users/"));
        assert_eq!(answer["responses"][1]["status"], 400);
    }
}
