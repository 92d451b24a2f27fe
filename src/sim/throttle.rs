//! Outlook-like throttling per app+mailbox: a request budget over a fixed window and an
//! in-flight cap, answered like Outlook (429, `Retry-After`, Graph error body).
//!
//! Also counts in-flight requests per mailbox whether or not throttling is on, because
//! tests check that the proxy never sends Graph more than it allows. Holds no lock across
//! an await: a `Slot` only touches the map when it is created and dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;
use super::reply::GraphError;
use super::switches::ThrottleSettings;

#[derive(Default)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    windows: HashMap<(String, String), Window>,
    in_flight: HashMap<(String, String), usize>,
    mailbox_in_flight: HashMap<String, usize>,
    max_seen: HashMap<String, usize>,
}

struct Window {
    started: Instant,
    count: u64,
}

/// One admitted request; dropping it frees the in-flight place.
pub struct Slot<'a> {
    throttle: &'a Throttle,
    key: (String, String),
}

impl Throttle {
    /// Admits one request of `app` on `mailbox`, or says why not.
    pub fn admit(
        &self,
        settings: Option<&ThrottleSettings>,
        app: &str,
        mailbox: &str,
        now: Instant,
    ) -> Result<Slot<'_>, GraphError> {
        let key = (app.to_string(), mailbox.to_string());
        let mut state = lock(&self.state);
        if let Some(settings) = settings {
            let window_length = Duration::from_millis(settings.window_ms);
            let window = state.windows.entry(key.clone()).or_insert(Window {
                started: now,
                count: 0,
            });
            if now.saturating_duration_since(window.started) >= window_length {
                *window = Window {
                    started: now,
                    count: 0,
                };
            }
            // Throttled requests count too: Outlook keeps counting while it refuses.
            window.count += 1;
            if window.count > settings.budget {
                let left =
                    window_length.saturating_sub(now.saturating_duration_since(window.started));
                let seconds = settings
                    .retry_after_s
                    .unwrap_or_else(|| left.as_millis().div_ceil(1000).max(1) as u64);
                return Err(
                    GraphError::new(429, "TooManyRequests", "Please retry again later.")
                        .with_retry_after(seconds.to_string()),
                );
            }
            if state.in_flight.get(&key).copied().unwrap_or(0) >= settings.concurrency {
                let seconds = settings.retry_after_s.unwrap_or(1);
                return Err(GraphError::new(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                )
                .with_retry_after(seconds.to_string()));
            }
        }
        *state.in_flight.entry(key.clone()).or_insert(0) += 1;
        let now_in_mailbox = {
            let count = state
                .mailbox_in_flight
                .entry(mailbox.to_string())
                .or_insert(0);
            *count += 1;
            *count
        };
        let max = state.max_seen.entry(mailbox.to_string()).or_insert(0);
        *max = (*max).max(now_in_mailbox);
        Ok(Slot {
            throttle: self,
            key,
        })
    }

    /// The largest number of requests seen in flight at once, per mailbox.
    pub fn max_seen(&self) -> HashMap<String, usize> {
        lock(&self.state).max_seen.clone()
    }

    /// Forgets windows and maxima; in-flight counts stay, their slots are still out there.
    pub fn reset(&self) {
        let mut state = lock(&self.state);
        state.windows.clear();
        state.max_seen.clear();
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.throttle.state);
        if let Some(count) = state.in_flight.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.in_flight.remove(&self.key);
            }
        }
        if let Some(count) = state.mailbox_in_flight.get_mut(&self.key.1) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.mailbox_in_flight.remove(&self.key.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(budget: u64, concurrency: usize, retry_after_s: Option<u64>) -> ThrottleSettings {
        ThrottleSettings {
            budget,
            window_ms: 10_000,
            concurrency,
            retry_after_s,
        }
    }

    #[test]
    fn fifth_concurrent_request_gets_mailbox_concurrency_429() {
        let throttle = Throttle::default();
        let s = settings(100, 4, None);
        let now = Instant::now();
        let held: Vec<_> = (0..4)
            .map(|_| throttle.admit(Some(&s), "app", "mbx", now).unwrap())
            .collect();
        let refused = throttle.admit(Some(&s), "app", "mbx", now).err().unwrap();
        assert_eq!(refused.status, 429);
        assert_eq!(refused.code, "ApplicationThrottled");
        assert_eq!(
            refused.message,
            "Application is over its MailboxConcurrency limit."
        );
        assert_eq!(refused.retry_after.as_deref(), Some("1"));
        // Another mailbox and another app are unaffected.
        assert!(throttle.admit(Some(&s), "app", "other", now).is_ok());
        assert!(throttle.admit(Some(&s), "app2", "mbx", now).is_ok());
        drop(held);
        assert!(throttle.admit(Some(&s), "app", "mbx", now).is_ok());
        assert_eq!(throttle.max_seen()["mbx"], 5);
    }

    #[test]
    fn budget_runs_out_then_refills_with_the_next_window() {
        let throttle = Throttle::default();
        let s = settings(2, 4, None);
        let start = Instant::now();
        assert!(throttle.admit(Some(&s), "a", "m", start).is_ok());
        assert!(throttle.admit(Some(&s), "a", "m", start).is_ok());
        let refused = throttle
            .admit(Some(&s), "a", "m", start + Duration::from_millis(2500))
            .err()
            .unwrap();
        assert_eq!(refused.code, "TooManyRequests");
        assert_eq!(refused.retry_after.as_deref(), Some("8"));
        assert!(throttle
            .admit(Some(&s), "a", "m", start + Duration::from_millis(10_000))
            .is_ok());
    }

    #[test]
    fn fixed_retry_after_is_used_when_configured() {
        let throttle = Throttle::default();
        let s = settings(0, 4, Some(30));
        let refused = throttle
            .admit(Some(&s), "a", "m", Instant::now())
            .err()
            .unwrap();
        assert_eq!(refused.retry_after.as_deref(), Some("30"));
    }

    #[test]
    fn without_settings_everything_passes_and_concurrency_is_still_measured() {
        let throttle = Throttle::default();
        let now = Instant::now();
        let held: Vec<_> = (0..7)
            .map(|_| throttle.admit(None, "a", "m", now).unwrap())
            .collect();
        assert_eq!(held.len(), 7);
        assert_eq!(throttle.max_seen()["m"], 7);
        throttle.reset();
        assert!(throttle.max_seen().is_empty());
    }
}
