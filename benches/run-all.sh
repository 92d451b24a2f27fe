#!/usr/bin/env bash
# Every benchmark, in one command: builds the release binary, runs the criterion benchmarks
# of the hot paths, the load benchmark (benches/load.sh) and the memory and coalescing
# measurements (benches/memory.sh). Prints the machine and the reports; with an argument,
# also writes the whole report to that file.
#
# Usage: benches/run-all.sh [report.md]      (about 25 minutes; needs root for apt-get on a
#                                             fresh Debian machine, see BENCHMARKS.md)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPORT=${1:-/dev/null}
{
  echo "## Run of $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  cargo build --release --locked >&2
  echo "### Criterion (cargo bench --bench hot_paths): time per iteration [lower bound, estimate, upper bound]"
  echo
  echo '```'
  cargo bench --locked --bench hot_paths -- --noplot 2>/dev/null | grep -E '^[a-z_]+/|time:|thrpt:' | grep -v '%' || true
  echo '```'
  echo
  benches/load.sh
  echo
  benches/memory.sh || echo "(a memory or coalescing target was missed; see above)"
} | tee "$REPORT"
