//! What the simulator received, for tests to assert on: request and `$batch` sub-request
//! counts, translateExchangeIds calls and their sizes, `Prefer` values, and the last 200
//! requests with their headers exactly as they arrived.
//!
//! Bookkeeping only; it never changes an answer.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Value};

/// How many requests `GET /sim/requests` remembers.
pub const LOGGED_REQUESTS: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub uri: String,
    /// "HTTP/1.1" or "HTTP/2.0": lets tests see which protocol a client negotiated.
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub batch_subrequests: u64,
    pub translate_ids_per_call: Vec<usize>,
    /// Whole `Prefer` values (several lines joined with ", ") and how often each came.
    pub prefer_seen: BTreeMap<String, u64>,
    pub log: VecDeque<LoggedRequest>,
}

impl Stats {
    pub fn record_prefer(&mut self, value: Option<String>) {
        if let Some(value) = value {
            *self.prefer_seen.entry(value).or_insert(0) += 1;
        }
    }

    pub fn record_translate(&mut self, ids: usize) {
        self.translate_ids_per_call.push(ids);
    }

    pub fn log(&mut self, request: LoggedRequest) {
        if self.log.len() == LOGGED_REQUESTS {
            self.log.pop_front();
        }
        self.log.push_back(request);
    }

    pub fn to_json(&self, max_concurrency: &HashMap<String, usize>) -> Value {
        let max: BTreeMap<_, _> = max_concurrency.iter().collect();
        json!({
            "requests": self.requests,
            "translate_calls": self.translate_ids_per_call.len(),
            "translate_ids_per_call": self.translate_ids_per_call,
            "prefer_seen": self.prefer_seen,
            "max_concurrency": max,
            "batch_subrequests": self.batch_subrequests,
        })
    }

    pub fn log_json(&self) -> Value {
        let requests: Vec<Value> = self
            .log
            .iter()
            .map(|r| {
                json!({
                    "method": r.method,
                    "uri": r.uri,
                    "version": r.version,
                    "headers": r.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
                    "body_len": r.body_len,
                })
            })
            .collect();
        json!({ "requests": requests })
    }
}

/// Several `Prefer` lines are one list (RFC 7240), so they are counted as one value.
pub fn joined_prefer<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let parts: Vec<String> = values
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keeps_only_the_last_200_requests() {
        let mut stats = Stats::default();
        for n in 0..250 {
            stats.log(LoggedRequest {
                method: "GET".into(),
                uri: format!("/{n}"),
                version: "HTTP/1.1".into(),
                headers: vec![],
                body_len: 0,
            });
        }
        assert_eq!(stats.log.len(), LOGGED_REQUESTS);
        assert_eq!(stats.log[0].uri, "/50");
        assert_eq!(stats.log_json()["requests"][199]["uri"], "/249");
    }

    #[test]
    fn stats_json_reports_counts_and_prefer_values() {
        let mut stats = Stats {
            requests: 3,
            ..Stats::default()
        };
        stats.record_translate(5);
        stats.record_translate(1000);
        stats.record_prefer(joined_prefer(
            [
                b"IdType=\"ImmutableId\"".as_slice(),
                b"return=minimal".as_slice(),
            ]
            .into_iter(),
        ));
        stats.record_prefer(None);
        let max = HashMap::from([("adelev@contoso.onmicrosoft.com".to_string(), 2)]);
        let json = stats.to_json(&max);
        assert_eq!(json["translate_calls"], 2);
        assert_eq!(json["translate_ids_per_call"], json!([5, 1000]));
        assert_eq!(
            json["prefer_seen"]["IdType=\"ImmutableId\", return=minimal"],
            1
        );
        assert_eq!(json["max_concurrency"]["adelev@contoso.onmicrosoft.com"], 2);
    }
}
