#!/usr/bin/env bash
# Soak run of the proxy's release build: tests/soak.rs (#[ignore]d there) drives mixed traffic
# through it for IDPROXY_SOAK_SECS (default 1800 = 30 minutes): pass-through lists, ID rewriting
# with cache hits and misses, $batch, a throttled tenant kept over its limit, and drop-in
# requests through CONNECT tunnels. It samples the proxy's RSS and open descriptors every 10 s
# and fails on any error or on a throttled request that ended as neither 2xx nor 429 with
# Retry-After. This script prints a Markdown table of the RESULT lines; the whole log (every
# sample) is kept in $SOAK_OUT (default $CARGO_TARGET_DIR/soak) and its path printed.
#
# Usage: benches/soak.sh        Knobs: IDPROXY_SOAK_SECS, CARGO_TARGET_DIR, SOAK_OUT,
# IDPROXY_SOAK_BIN (a binary to soak instead of building the release one).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SECS=${IDPROXY_SOAK_SECS:-1800}
OUT_DIR=${SOAK_OUT:-$TARGET_DIR/soak}
cd "$ROOT"

if [ -z "${IDPROXY_SOAK_BIN:-}" ]; then
  echo "building the release binary" >&2
  cargo build --release --locked >&2
  IDPROXY_SOAK_BIN=$TARGET_DIR/release/immutable-id-proxy
fi
[ -x "$IDPROXY_SOAK_BIN" ] || { echo "soak.sh: no binary at $IDPROXY_SOAK_BIN" >&2; exit 1; }
export IDPROXY_SOAK_BIN IDPROXY_SOAK_SECS=$SECS

# The workers need a few dozen descriptors; a higher limit lets a leak show as a slope
# instead of ending the run early.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Compile the test first, so the timeout below bounds the run alone.
cargo test --locked --test soak --no-run >&2
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/soak-$(date -u +%Y%m%dT%H%M%SZ).log
echo "soaking $IDPROXY_SOAK_BIN for $SECS s; log: $LOG" >&2
status=0
# The run itself, plus time for the last requests to finish and the report.
timeout $(( SECS + 300 )) cargo test --locked --test soak -- --ignored --nocapture \
  --test-threads=1 >"$LOG" 2>&1 || status=$?
grep -o 'SAMPLE .*' "$LOG" >&2 || true

# libtest may print a RESULT line right after "test name ... ", so cut from RESULT on.
RESULTS=$(grep -o 'RESULT .*' "$LOG" || true)
get() { awk -v k="$1" '$1 == "RESULT" && $2 == k {print $3}' <<<"$RESULTS"; }

echo "### Soak: $(get soak_seconds) s of mixed traffic against \`$IDPROXY_SOAK_BIN\` ($(get soak_samples) samples, slopes over the $(get soak_steady_samples) after the first 10%)"
echo
echo "| measure | first steady sample | last sample | max | least-squares slope |"
echo "|---|---:|---:|---:|---:|"
echo "| proxy RSS (KiB) | $(get soak_rss_first_steady_kib) | $(get soak_rss_last_kib) | $(get soak_rss_max_kib) | $(get soak_rss_slope_kib_per_min) KiB/min |"
echo "| proxy open descriptors | $(get soak_fds_first_steady) | $(get soak_fds_last) | $(get soak_fds_max) | $(get soak_fd_slope_per_min) /min |"
echo
echo "| traffic | sent | 2xx | 429 with Retry-After | errors |"
echo "|---|---:|---:|---:|---:|"
for kind in pass_through cache_hit cache_miss batch throttled drop_in; do
  echo "| $kind | $(get "${kind}_sent") | $(get "${kind}_2xx") | $(get "${kind}_429_retry_after") | $(get "${kind}_errors") |"
done
echo
echo "Throttled requests that ended as neither 2xx nor 429 with Retry-After: $(get throttled_unaccounted)."
echo "Proxy counters: queued $(get proxy_queued), rejected $(get proxy_rejected), ID cache hits $(get proxy_id_cache_hits), misses $(get proxy_id_cache_misses), translateExchangeIds calls $(get proxy_translate_calls), intercepted tunnels $(get proxy_tunnels_intercepted); proxy log lines at warn: $(get proxy_stderr_lines)."
echo
if [ "$status" -eq 0 ]; then
  echo "Verdict: passed (no errors, nothing vanished). Log: $LOG"
else
  echo "Verdict: FAILED (exit $status). Log: $LOG"
  grep -A12 'panicked' "$LOG" | head -40 || tail -20 "$LOG"
fi
exit "$status"
