//! Prometheus metrics: one `Metrics` value registers every family of DESIGN.md at start-up
//! and holds typed handles, so the hot path only touches atomics.
//!
//! No label takes its values from a request: status codes are a fixed range, and every other
//! label has a closed set of values. Tenants, paths and IDs never become labels.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Latency buckets in seconds: fine below 10 ms where the proxy's own cost lives, coarse
/// above where Graph's does.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last slot is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// A counter labelled by a fixed set of values, given at registration.
pub struct LabeledCounter {
    label: &'static str,
    values: &'static [&'static str],
    counts: Vec<AtomicU64>,
}

impl LabeledCounter {
    fn new(label: &'static str, values: &'static [&'static str]) -> Self {
        LabeledCounter {
            label,
            values,
            counts: values.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// `value` must be one of the registered values; anything else is ignored rather than
    /// creating a new series.
    pub fn inc(&self, value: &str) {
        if let Some(i) = self.values.iter().position(|v| *v == value) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, value: &str) -> u64 {
        self.values
            .iter()
            .position(|v| *v == value)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (value, count) in self.values.iter().zip(&self.counts) {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{{}=\"{value}\"}} {count}", self.label);
        }
    }
}

/// Requests by HTTP status: one slot per code 100..=599, only codes seen are printed.
pub struct StatusCounter([AtomicU64; 500]);

impl Default for StatusCounter {
    fn default() -> Self {
        StatusCounter(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl StatusCounter {
    pub fn inc(&self, status: u16) {
        if (100..600).contains(&status) {
            self.0[usize::from(status - 100)].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, status: u16) -> u64 {
        if (100..600).contains(&status) {
            self.0[usize::from(status - 100)].load(Ordering::Relaxed)
        } else {
            0
        }
    }
}

pub struct Metrics {
    pub requests: StatusCounter,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub upstream_retries: Counter,
    pub rate_limited: LabeledCounter,
    pub queue_wait: Histogram,
    /// Requests waiting in the limiter right now.
    pub queue_depth: Gauge,
    pub translate_calls: Counter,
    pub translate_ids: LabeledCounter,
    pub id_cache_hits: Counter,
    pub id_cache_misses: Counter,
    pub id_cache_entries: Gauge,
    pub tunnels: LabeledCounter,
    pub prefer_applied: LabeledCounter,
    pub prefer_skipped: Counter,
    pub penalty_box: Counter,
    pub limiter_keys: Gauge,
    pub redis_fallback: Counter,
    pub redis_up: Gauge,
    /// Client connections open on the proxy and forward-proxy listeners (a CONNECT stops
    /// counting once its tunnel is up). Shared with the accept loops, which know nothing
    /// else of `Metrics`.
    pub client_connections: Arc<Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            requests: StatusCounter::default(),
            request_duration: Histogram::default(),
            upstream_duration: Histogram::default(),
            upstream_retries: Counter::default(),
            rate_limited: LabeledCounter::new("action", &["queued", "rejected"]),
            queue_wait: Histogram::default(),
            queue_depth: Gauge::default(),
            translate_calls: Counter::default(),
            translate_ids: LabeledCounter::new("result", &["ok", "error", "cached"]),
            id_cache_hits: Counter::default(),
            id_cache_misses: Counter::default(),
            id_cache_entries: Gauge::default(),
            tunnels: LabeledCounter::new("kind", &["intercepted", "tunneled", "refused"]),
            prefer_applied: LabeledCounter::new("result", &["immutable", "not_applied"]),
            prefer_skipped: Counter::default(),
            penalty_box: Counter::default(),
            limiter_keys: Gauge::default(),
            redis_fallback: Counter::default(),
            redis_up: Gauge::default(),
            client_connections: Arc::new(Gauge::default()),
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let name = "idproxy_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests answered, by HTTP status.\n# TYPE {name} counter"
        );
        for (i, count) in self.requests.0.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let _ = writeln!(out, "{name}{{status=\"{}\"}} {count}", i + 100);
            }
        }
        self.request_duration.render(
            &mut out,
            "idproxy_request_duration_seconds",
            "Time from request head to response head, proxy included.",
        );
        self.upstream_duration.render(
            &mut out,
            "idproxy_upstream_duration_seconds",
            "Time Graph took to answer each upstream attempt.",
        );
        counter(
            &mut out,
            "idproxy_upstream_retries_total",
            "Upstream attempts repeated after 429/503/504.",
            &self.upstream_retries,
        );
        self.rate_limited.render(
            &mut out,
            "idproxy_rate_limited_total",
            "Requests held back by the proxy's own limits.",
        );
        self.queue_wait.render(
            &mut out,
            "idproxy_queue_wait_seconds",
            "Time requests waited in the limiter queue.",
        );
        gauge(
            &mut out,
            "idproxy_queue_depth",
            "Requests waiting in the limiter queue now.",
            &self.queue_depth,
        );
        counter(
            &mut out,
            "idproxy_translate_calls_total",
            "translateExchangeIds calls made.",
            &self.translate_calls,
        );
        self.translate_ids.render(
            &mut out,
            "idproxy_translate_ids_total",
            "IDs looked up, by outcome.",
        );
        counter(
            &mut out,
            "idproxy_id_cache_hits_total",
            "ID look-ups answered from memory.",
            &self.id_cache_hits,
        );
        counter(
            &mut out,
            "idproxy_id_cache_misses_total",
            "ID look-ups not in memory.",
            &self.id_cache_misses,
        );
        gauge(
            &mut out,
            "idproxy_id_cache_entries",
            "Entries in the in-memory ID cache.",
            &self.id_cache_entries,
        );
        self.tunnels.render(
            &mut out,
            "idproxy_tunnels_total",
            "Forward-proxy CONNECTs, by outcome.",
        );
        self.prefer_applied.render(
            &mut out,
            "idproxy_prefer_applied_total",
            "Graph's Preference-Applied answer to our IdType preference.",
        );
        counter(
            &mut out,
            "idproxy_prefer_skipped_total",
            "Requests sent without the IdType preference because a skip pattern matched.",
            &self.prefer_skipped,
        );
        counter(
            &mut out,
            "idproxy_penalty_box_total",
            "Times Graph's Retry-After held a key back.",
            &self.penalty_box,
        );
        gauge(
            &mut out,
            "idproxy_limiter_keys",
            "Tenant and mailbox keys the limiters hold.",
            &self.limiter_keys,
        );
        counter(
            &mut out,
            "idproxy_redis_fallback_total",
            "Times a replica fell back to local state.",
            &self.redis_fallback,
        );
        gauge(
            &mut out,
            "idproxy_redis_up",
            "1 while the shared Redis backend answers.",
            &self.redis_up,
        );
        gauge(
            &mut out,
            "idproxy_client_connections",
            "Client connections open now on the proxy and forward-proxy listeners (a CONNECT tunnel counts until it is established).",
            &self.client_connections,
        );
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, c: &Counter) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
        c.get()
    );
}

fn gauge(out: &mut String, name: &str, help: &str, g: &Gauge) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
        g.get()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_exposition() {
        let m = Metrics::new();
        m.request_duration.observe(Duration::from_micros(300));
        m.request_duration.observe(Duration::from_millis(20));
        let text = m.render();
        assert!(text.contains("idproxy_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("idproxy_request_duration_seconds_bucket{le=\"0.025\"} 2"));
        assert!(text.contains("idproxy_request_duration_seconds_count 2"));
    }

    #[test]
    fn unknown_label_values_do_not_create_series() {
        let m = Metrics::new();
        m.tunnels.inc("intercepted");
        m.tunnels.inc("somebody-elses-host");
        let text = m.render();
        assert!(text.contains("idproxy_tunnels_total{kind=\"intercepted\"} 1"));
        assert!(!text.contains("somebody"));
    }

    #[test]
    fn the_client_connection_gauge_is_exported_with_its_value() {
        let m = Metrics::new();
        m.client_connections.add(3);
        m.client_connections.add(-1);
        assert!(m.render().contains("\nidproxy_client_connections 2\n"));
    }

    #[test]
    fn only_seen_statuses_are_printed() {
        let m = Metrics::new();
        m.requests.inc(200);
        m.requests.inc(200);
        m.requests.inc(999);
        let text = m.render();
        assert!(text.contains("idproxy_requests_total{status=\"200\"} 2"));
        assert!(!text.contains("status=\"404\""));
    }
}
