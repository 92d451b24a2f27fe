//! What a simulated Graph route answers: a status, headers and a JSON body, or a Graph
//! error in Graph's exact shape (`{"error":{"code","message","innerError":{...}}}`).
//!
//! Builds values only; turning them into HTTP (request-id header, compression) is the
//! server's job, so `$batch` can embed the same values in its sub-responses.

use serde_json::{json, Value};

/// A successful (or deliberately failing) Graph answer before it becomes HTTP.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl GraphReply {
    pub fn json(status: u16, body: Value) -> GraphReply {
        GraphReply {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub fn empty(status: u16) -> GraphReply {
        GraphReply {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> GraphReply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// A Graph error answer: status, machine code, message, and a `Retry-After` when throttled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub retry_after: Option<String>,
}

impl GraphError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> GraphError {
        GraphError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> GraphError {
        GraphError::new(400, "BadRequest", message)
    }

    pub fn unknown_segment(segment: &str) -> GraphError {
        GraphError::bad_request(format!("Resource not found for the segment '{segment}'."))
    }

    pub fn malformed_id() -> GraphError {
        GraphError::new(400, "ErrorInvalidIdMalformed", "Id is malformed.")
    }

    pub fn item_not_found() -> GraphError {
        GraphError::new(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    }

    pub fn unauthenticated(message: &str) -> GraphError {
        GraphError::new(401, "InvalidAuthenticationToken", message)
    }

    pub fn method_not_allowed() -> GraphError {
        GraphError::new(
            405,
            "Request_BadRequest",
            "The HTTP method is not allowed on this resource.",
        )
    }

    pub fn with_retry_after(mut self, seconds: impl Into<String>) -> GraphError {
        self.retry_after = Some(seconds.into());
        self
    }

    /// The error body; `request_id` also goes in the `request-id` response header.
    pub fn body(&self, request_id: &str) -> Value {
        json!({"error": {
            "code": self.code,
            "message": self.message,
            "innerError": {"request-id": request_id, "date": rfc3339_now()},
        }})
    }

    /// The same error as a reply, for `$batch` sub-responses.
    pub fn into_reply(self, request_id: &str) -> GraphReply {
        let mut reply = GraphReply::json(self.status, self.body(request_id));
        if let Some(seconds) = &self.retry_after {
            reply.headers.push(("Retry-After".into(), seconds.clone()));
        }
        reply
    }
}

pub fn rfc3339_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    rfc3339(i64::try_from(seconds).unwrap_or(0))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (Howard Hinnant's civil-from-days).
pub fn rfc3339(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let in_day = unix_seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_714_550_400), "2024-05-01T08:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn error_body_has_graphs_shape() {
        let body = GraphError::malformed_id().body("rid");
        assert_eq!(body["error"]["code"], "ErrorInvalidIdMalformed");
        assert_eq!(body["error"]["innerError"]["request-id"], "rid");
        assert!(body["error"]["innerError"]["date"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
    }

    #[test]
    fn throttled_error_reply_carries_retry_after() {
        let reply = GraphError::new(429, "TooManyRequests", "x")
            .with_retry_after("3")
            .into_reply("r");
        assert_eq!(reply.status, 429);
        assert_eq!(
            reply.headers,
            vec![("Retry-After".to_string(), "3".to_string())]
        );
    }
}
