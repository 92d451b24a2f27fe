//! The switches tests flip with `POST /sim/config`: throttling, injected failures, delays,
//! the app-only translate refusal and response compression.
//!
//! Parsing and bookkeeping only; enforcement lives where each switch applies (throttle.rs,
//! routes.rs, server.rs). Unknown keys are refused so a typo cannot silently test nothing.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::reply::GraphError;

/// Outlook-like limits per app+mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Requests allowed per window; the rest get 429.
    pub budget: u64,
    pub window_ms: u64,
    /// In-flight requests allowed; Outlook's own limit is 4.
    pub concurrency: usize,
    /// Fixed `Retry-After`; without it, the time left in the window (at least 1 s).
    pub retry_after_s: Option<u64>,
}

/// One answer to give instead of the real one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFailure {
    pub status: u16,
    pub retry_after: Option<String>,
    /// Only a request (or `$batch` sub-request) whose path and query contain this text.
    pub path_contains: Option<String>,
}

impl InjectedFailure {
    pub fn to_error(&self) -> GraphError {
        let (code, message) = match self.status {
            429 => ("TooManyRequests", "Please retry again later."),
            503 => (
                "ServiceNotAvailable",
                "The service is temporarily unavailable.",
            ),
            504 => ("GatewayTimeout", "The gateway did not receive a response."),
            500 => ("InternalServerError", "An internal server error occurred."),
            _ => ("UnknownError", "Injected failure."),
        };
        let error = GraphError::new(self.status, code, message);
        match &self.retry_after {
            Some(seconds) => error.with_retry_after(seconds.clone()),
            None => error,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Switches {
    pub throttle: Option<ThrottleSettings>,
    pub fail_next: VecDeque<InjectedFailure>,
    pub delay_ms: u64,
    pub app_only_translate_forbidden: bool,
    pub compress: bool,
}

impl Switches {
    /// Applies the keys present in `config`; the others keep their values. All or nothing.
    pub fn apply(&mut self, config: &Value) -> Result<(), String> {
        let object = config
            .as_object()
            .ok_or("the configuration must be a JSON object")?;
        let mut next = self.clone();
        for (key, value) in object {
            match key.as_str() {
                "throttle" => next.throttle = parse_throttle(value)?,
                "fail_next" => next.fail_next = parse_failures(value)?,
                "delay_ms" => next.delay_ms = value.as_u64().ok_or("delay_ms: not a number")?,
                "app_only_translate_forbidden" => {
                    next.app_only_translate_forbidden = value
                        .as_bool()
                        .ok_or("app_only_translate_forbidden: not a bool")?;
                }
                "compress" => next.compress = value.as_bool().ok_or("compress: not a bool")?,
                other => return Err(format!("{other}: unknown switch")),
            }
        }
        *self = next;
        Ok(())
    }

    /// Takes the first injected failure that applies to this path and query.
    pub fn take_failure(&mut self, path_and_query: &str) -> Option<InjectedFailure> {
        let position = self.fail_next.iter().position(|failure| {
            failure
                .path_contains
                .as_deref()
                .is_none_or(|needle| path_and_query.contains(needle))
        })?;
        self.fail_next.remove(position)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "throttle": self.throttle.as_ref().map(|t| json!({
                "budget": t.budget,
                "window_ms": t.window_ms,
                "concurrency": t.concurrency,
                "retry_after_s": t.retry_after_s,
            })),
            "fail_next": self.fail_next.iter().map(|f| json!({
                "status": f.status,
                "retry_after": f.retry_after,
                "path_contains": f.path_contains,
            })).collect::<Vec<_>>(),
            "delay_ms": self.delay_ms,
            "app_only_translate_forbidden": self.app_only_translate_forbidden,
            "compress": self.compress,
        })
    }
}

fn parse_throttle(value: &Value) -> Result<Option<ThrottleSettings>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let object = value.as_object().ok_or("throttle: not an object or null")?;
    let number = |name: &str, default: u64| -> Result<u64, String> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("throttle.{name}: not a number")),
        }
    };
    for key in object.keys() {
        if !["budget", "window_ms", "concurrency", "retry_after_s"].contains(&key.as_str()) {
            return Err(format!("throttle.{key}: unknown key"));
        }
    }
    let window_ms = number("window_ms", 600_000)?;
    if window_ms == 0 {
        return Err("throttle.window_ms: must be above zero".into());
    }
    Ok(Some(ThrottleSettings {
        budget: number("budget", 10_000)?,
        window_ms,
        concurrency: usize::try_from(number("concurrency", 4)?).unwrap_or(usize::MAX),
        retry_after_s: match object.get("retry_after_s") {
            None | Some(Value::Null) => None,
            Some(_) => Some(number("retry_after_s", 1)?),
        },
    }))
}

fn parse_failures(value: &Value) -> Result<VecDeque<InjectedFailure>, String> {
    let list = value.as_array().ok_or("fail_next: not an array")?;
    list.iter()
        .map(|entry| {
            let status = entry
                .get("status")
                .and_then(Value::as_u64)
                .filter(|s| (100..=599).contains(s))
                .ok_or("fail_next[].status: not an HTTP status")?;
            let retry_after = match entry.get("retry_after") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => return Err("fail_next[].retry_after: not a string".to_string()),
            };
            let path_contains = entry
                .get("path_contains")
                .and_then(Value::as_str)
                .map(str::to_string);
            Ok(InjectedFailure {
                // Checked above to be within 100..=599.
                status: u16::try_from(status).unwrap_or(500),
                retry_after,
                path_contains,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_configuration_is_applied() {
        let mut switches = Switches::default();
        switches
            .apply(&json!({
                "throttle": {"budget": 3, "window_ms": 1000, "concurrency": 4, "retry_after_s": 7},
                "fail_next": [{"status": 503, "retry_after": "1"}, {"status": 503}],
                "delay_ms": 5,
                "app_only_translate_forbidden": true,
                "compress": true,
            }))
            .unwrap();
        assert_eq!(
            switches.throttle,
            Some(ThrottleSettings {
                budget: 3,
                window_ms: 1000,
                concurrency: 4,
                retry_after_s: Some(7)
            })
        );
        assert_eq!(switches.fail_next.len(), 2);
        assert_eq!(switches.fail_next[0].retry_after.as_deref(), Some("1"));
        assert!(switches.compress && switches.app_only_translate_forbidden);
        switches.apply(&json!({"throttle": null})).unwrap();
        assert_eq!(switches.throttle, None);
        assert_eq!(switches.delay_ms, 5);
    }

    #[test]
    fn unknown_or_mistyped_keys_change_nothing() {
        let mut switches = Switches::default();
        assert!(switches
            .apply(&json!({"compress": true, "thrtotle": 1}))
            .is_err());
        assert!(switches.apply(&json!({"delay_ms": "5"})).is_err());
        assert!(switches.apply(&json!([1])).is_err());
        assert_eq!(switches, Switches::default());
    }

    #[test]
    fn failures_are_taken_in_order_and_filtered_by_path() {
        let mut switches = Switches::default();
        switches
            .apply(&json!({"fail_next": [
                {"status": 429, "path_contains": "/messages/"},
                {"status": 503},
            ]}))
            .unwrap();
        let first = switches.take_failure("/v1.0/$batch").unwrap();
        assert_eq!(first.status, 503);
        assert_eq!(first.to_error().retry_after, None);
        assert_eq!(switches.take_failure("/v1.0/me"), None);
        let second = switches.take_failure("/v1.0/me/messages/AAMk").unwrap();
        assert_eq!(second.to_error().code, "TooManyRequests");
        assert!(switches.fail_next.is_empty());
    }
}
