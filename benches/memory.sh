#!/usr/bin/env bash
# Memory and coalescing measurements (tests/performance.rs, #[ignore]d there), against the
# release binary: RSS per idle keep-alive connection (plain and TLS, 10,000 each), RSS with
# 1,000,000 cached IDs, RSS with 1,000,000 limiter keys (500,000 mailboxes), and the translateExchangeIds
# calls for 10,000 concurrent misses on one mailbox. Prints a Markdown table.
#
# Usage: benches/memory.sh        Knobs: CARGO_TARGET_DIR, and the counts
# IDPROXY_BENCH_IDLE_CONNECTIONS, IDPROXY_BENCH_CACHED_IDS, IDPROXY_BENCH_LIMITER_MAILBOXES,
# IDPROXY_BENCH_MISSES (defaults: the figures above).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export IDPROXY_BENCH_BIN=$TARGET_DIR/release/immutable-id-proxy
cd "$ROOT"
if [ ! -x "$IDPROXY_BENCH_BIN" ]; then
  echo "building the release binary" >&2
  cargo build --release --locked >&2
fi
# 10,000 client sockets in the test process, 10,000 in the proxy (a child inherits the limit),
# plus upstream sockets: each process needs a little over 10,000.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 11000 ] || echo "warning: file limit $(ulimit -n) is below the 11,000 the idle-connection test needs" >&2

OUT=$(mktemp /tmp/idproxy-memory.XXXXXX)
trap 'rm -f "$OUT"' EXIT
failed=0
for test in an_idle_keep_alive_connection_costs_at_most_20_kib \
            an_idle_tls_keep_alive_connection_costs_at_most_20_kib \
            a_million_cached_ids_fit_in_256_mib \
            a_million_limiter_keys_are_measured \
            ten_thousand_concurrent_misses_for_one_mailbox_cost_at_most_12_translate_calls \
            wide_window:ten_thousand_concurrent_misses_for_one_mailbox_cost_at_most_12_translate_calls; do
  # "wide_window:" runs the coalescing test again with rewrite.batch_window_ms = 250.
  PREFIX=
  unset IDPROXY_BENCH_BATCH_WINDOW_MS
  case "$test" in
    wide_window:*) test=${test#wide_window:}; PREFIX=wide_; export IDPROXY_BENCH_BATCH_WINDOW_MS=250 ;;
  esac
  echo "running $test${IDPROXY_BENCH_BATCH_WINDOW_MS:+ (batch_window_ms = $IDPROXY_BENCH_BATCH_WINDOW_MS)}" >&2
  # One test per process, so each RSS figure is its own; bounded at 15 minutes.
  if ! timeout 900 cargo test --locked --test performance -- --ignored --exact "$test" \
       --nocapture --test-threads=1 >"$OUT.log" 2>&1; then
    failed=1
    echo "FAILED: $test" >&2
    grep -A2 "panicked" "$OUT.log" >&2 || tail -20 "$OUT.log" >&2
  fi
  # libtest may print a RESULT line right after "test name ... ", so cut from RESULT on.
  grep -o 'RESULT .*' "$OUT.log" | sed "s/^RESULT /RESULT ${PREFIX:-}/" >>"$OUT" || true
done
rm -f "$OUT.log"

get() { awk -v k="$1" '$1 == "RESULT" && $2 == k {print $3}' "$OUT"; }
mib() { awk -v k="$1" 'BEGIN { if (k == "") print "-"; else printf "%.1f", k / 1024 }'; }
echo "### Memory and coalescing"
echo
echo "| measurement | figure | target |"
echo "|---|---|---|"
for kind in plain tls; do
  echo "| idle keep-alive connections ($kind HTTP/1.1): $(get idle_connections_$kind) | $(get idle_bytes_per_connection_$kind) bytes each (RSS $(mib "$(get idle_rss_before_kib_$kind)") -> $(mib "$(get idle_rss_after_kib_$kind)") MiB) | <= 20 KiB (20480 bytes) |"
done
echo "| cached IDs: $(get cached_ids_entries) in memory of $(get cached_ids_imported) imported and requested | RSS $(mib "$(get cached_ids_rss_after_kib)") MiB in all, +$(mib "$(get cached_ids_rss_delta_kib)") MiB, $(get cached_ids_bytes_per_entry) bytes per entry | <= 256 MiB |"
echo "| limiter keys: $(get limiter_keys) for $(get limiter_mailboxes) mailboxes in 1,000 tenants (in-process) | +$(mib "$(get limiter_rss_delta_kib)") MiB, $(get limiter_bytes_per_key) bytes per key | (none) |"
for p in "" wide_; do
  echo "| coalescing: $(get ${p}coalescing_requests) concurrent misses, one mailbox, batch_window_ms = $(get ${p}coalescing_batch_window_ms) | $(get ${p}coalescing_translate_calls) translateExchangeIds calls for $(get ${p}coalescing_ids_translated) IDs; IDs per call: $(get ${p}coalescing_ids_per_call | cut -c1-300) | <= 12 calls |"
done
exit $failed
