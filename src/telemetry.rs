//! Logging set-up and the redacting views that keep secrets out of every log line.
//!
//! Logs go to stderr, as text or JSON lines. Tokens, cookies and bodies are never logged at
//! any level: request headers only reach a log through `RedactedHeaders`, and IDs through
//! `short_path`.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use http::HeaderMap;
use tracing_subscriber::filter::LevelFilter;

use crate::config::{LogFormat, LogLevel};

/// A new request id: a random (version 4) UUID, from a per-thread generator seeded once
/// from the OS (through std's `RandomState` keys). Request ids must be unique, not secret,
/// and asking the kernel for randomness on every request cost 1% of the proxy's CPU.
pub fn new_request_id() -> String {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u8));
    }
    let (high, low) = STATE.with(|state| {
        let high = splitmix64(state);
        (high, splitmix64(state))
    });
    let bytes = ((u128::from(high) << 64) | u128::from(low)).to_be_bytes();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Steele, Lea and Flood's SplitMix64: every state gives a distinct, well-mixed output.
fn splitmix64(state: &Cell<u64>) -> u64 {
    let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    state.set(next);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn init(format: LogFormat, level: LogLevel) {
    let level = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    // try_init: a second call (tests, `demo` running two services) keeps the first logger.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Headers whose values are credentials.
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "set-cookie",
];

/// Debug view of a header map with credential values replaced.
pub struct RedactedHeaders<'a>(pub &'a HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if SECRET_HEADERS.contains(&name.as_str()) {
                map.entry(&name.as_str(), &"[redacted]");
            } else {
                map.entry(&name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
            }
        }
        map.finish()
    }
}

/// Longest path segment logged whole; longer ones (IDs, UPNs in some apps) are shortened.
const SEGMENT_KEEP: usize = 24;

/// The path without its query (search terms and filters are the app's data), with long
/// segments shortened to a prefix and their length: enough to recognise an ID, not to use it.
pub fn short_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(160));
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if segment.len() > SEGMENT_KEEP {
            let cut = segment
                .char_indices()
                .nth(8)
                .map_or(segment.len(), |(at, _)| at);
            out.push_str(&segment[..cut]);
            out.push_str(&format!("…({})", segment.len()));
        } else {
            out.push_str(segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        }
        let other_thread = std::thread::spawn(super::new_request_id)
            .join()
            .expect("the thread ends");
        assert!(!ids.contains(&other_thread));
    }
    use super::*;

    #[test]
    fn authorization_and_cookie_values_never_appear_in_the_debug_view() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer eyJsecret".parse().unwrap());
        h.insert("cookie", "session=secret".parse().unwrap());
        h.insert("prefer", "return=minimal".parse().unwrap());
        let text = format!("{:?}", RedactedHeaders(&h));
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("return=minimal"));
    }

    #[test]
    fn long_id_segments_are_shortened_in_logged_paths() {
        let id = "AAMkADgwNzM0ZDllLTVhYmItNDU2ZC1iMGI4LTFiOTAyOWQ2NDNlOQBGAAAAAADhDq91SSK4QIw9CuwFXFc0BwBmGstC9VnGQYyUCu1kIwJ2AAAAAAEMAABmGstC9VnGQYyUCu1kIwJ2AABM3JaPAAA=";
        let logged = short_path(&format!("/v1.0/me/messages/{id}"));
        assert_eq!(logged, "/v1.0/me/messages/AAMkADgw…(152)");
    }
}
