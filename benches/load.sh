#!/usr/bin/env bash
# Load benchmark of the proxy against nginx doing the same job, on one machine, 127.0.0.1 only.
#
# Starts an upstream (nginx serving a fixed 1 KiB and a 64 KiB Graph-like JSON body, and
# accepting POSTs), an nginx that does our job (`proxy_set_header Prefer`, keep-alive upstream
# pool) and the proxy's release build, checks that each path really adds the header, then runs
# h2load in alternating rounds (direct, nginx, ours) over plaintext and TLS, HTTP/1.1 and h2.
# Prints a Markdown report: req/s, p50 and p99 latency (medians of the rounds) and the ratios
# ours/nginx and ours/direct; then p99 at half of our peak rate; then the rewrite path (a
# 64 KiB POST body with 100 regular IDs, warm cache) against the same body passed through.
#
# Usage: benches/load.sh            (from anywhere; builds the release binary if missing)
# Knobs: BENCH_SECONDS (per round, default 5), BENCH_ROUNDS (default 3),
#        BENCH_CONNECTIONS (HTTP/1.1 connections, default 32), CARGO_TARGET_DIR,
#        BENCH_ONLY (an extended regex: only the scenarios whose name matches run, e.g.
#        BENCH_ONLY='POST' for the rewrite path; the report shows "-" for the others).
# Every process it starts is stopped by its PID on exit; each load run is bounded by timeout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_PER_ROUND=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
# h2: the same number of requests in flight as HTTP/1.1, over fewer connections.
H2_CLIENTS=$(( CONNS / 4 > 0 ? CONNS / 4 : 1 ))
H2_STREAMS=4
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/immutable-id-proxy
UPN=adelev@contoso.onmicrosoft.com
TENANT=6e6e7a6c-6f73-4f6e-9a6f-636f6e746f73
USER_ID=5c7bb4a6-2a8e-4d3a-9a7f-1f0c6a3b8e01
IDS_IN_BODY=100

log() { printf '%s\n' "$*" >&2; }
die() { log "load.sh: $*"; exit 1; }

install_tools() {
  local need=()
  command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
  command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v jq >/dev/null 2>&1 || need+=(jq)
  command -v ss >/dev/null 2>&1 || need+=(iproute2)
  command -v timeout >/dev/null 2>&1 || need+=(coreutils)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

WORK=$(mktemp -d /tmp/idproxy-load.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TAKEN_PORTS=" "
# A loopback port nobody listens on and this script has not handed out (nginx needs fixed
# ports; the proxy itself binds port 0 and prints what it got).
free_port() {
  local port
  while :; do
    port=$(( 20000 + RANDOM % 20000 ))
    case "$TAKEN_PORTS" in *" $port "*) continue ;; esac
    if ! ss -Htln "sport = :$port" | grep -q .; then
      TAKEN_PORTS="$TAKEN_PORTS$port "
      echo "$port"
      return
    fi
  done
}

# Waits until `url` answers (any HTTP status), at most 10 s.
wait_for() {
  local url=$1 i
  for i in $(seq 1 100); do
    if curl -sk -o /dev/null --max-time 1 "$url"; then return 0; fi
    sleep 0.1
  done
  die "nothing answers at $url"
}

# Starts the proxy binary with a config; sets OURS_URL and OURS_ADMIN from what it prints.
start_ours() {
  local name=$1 config=$2 out=$WORK/$1.out
  "$BIN" run --config "$config" >"$out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  local i
  for i in $(seq 1 100); do
    if grep -q '^admin listening on ' "$out" 2>/dev/null; then break; fi
    kill -0 "${PIDS[-1]}" 2>/dev/null || die "$name exited: $(cat "$WORK/$name.err")"
    sleep 0.1
  done
  OURS_URL=$(sed -n 's/^proxy listening on //p' "$out")
  OURS_ADMIN=$(sed -n 's/^admin listening on //p' "$out")
  [ -n "$OURS_URL" ] || die "$name printed no address"
}

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

install_tools
if [ ! -x "$BIN" ]; then
  log "building the release binary"
  (cd "$ROOT" && cargo build --release --locked) >&2
fi

# --- fixtures -------------------------------------------------------------------------------
"$BIN" certs init --dir "$WORK/certs" >/dev/null
CA=$WORK/certs/ca.pem
CERT=$WORK/certs/server.pem
KEY=$WORK/certs/server-key.pem
mkdir -p "$WORK/tmp"

# A token with the tenant and user of the simulator's seeded Adele (claims only; the proxy
# reads, never verifies, tokens).
TOKEN="$(printf '{"typ":"JWT","alg":"none"}' | b64url).$(printf '{"aud":"https://graph.microsoft.com","tid":"%s","oid":"%s","appid":"11111111-2222-3333-4444-555555555555","ver":"1.0"}' "$TENANT" "$USER_ID" | b64url).sig"
AUTH="authorization: Bearer $TOKEN"

# 100 real regular message IDs and their immutable IDs, minted by the simulator.
log "minting $IDS_IN_BODY message IDs with the simulator"
"$BIN" sim --listen 127.0.0.1:0 >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
PIDS+=($SIM_PID)
for _ in $(seq 1 100); do grep -q '^sim listening on ' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
SIM=$(sed -n 's/^sim listening on //p' "$WORK/sim.out")
[ -n "$SIM" ] || die "the simulator printed no address"
: >"$WORK/idmap.csv"
REGULARS=()
for n in $(seq 1 $IDS_IN_BODY); do
  regular=$(curl -sf -H "$AUTH" -H 'content-type: application/json' \
    -d "{\"subject\":\"bench $n\"}" "$SIM/v1.0/users/$UPN/messages" | jq -r .id)
  immutable=$(curl -sf -H "$AUTH" -H 'prefer: IdType="ImmutableId"' \
    "$SIM/v1.0/users/$UPN/messages/$(jq -rn --arg id "$regular" '$id|@uri')?\$select=id" | jq -r .id)
  [ -n "$regular" ] && [ -n "$immutable" ] || die "the simulator minted no ID"
  REGULARS+=("$regular")
  printf '%s,%s\n' "$regular" "$immutable" >>"$WORK/idmap.csv"
done
kill -TERM $SIM_PID; wait $SIM_PID 2>/dev/null || true

# Graph-like bodies: a 1 KiB message and a 64 KiB message list (with a nextLink, as Graph's
# pages have); the 64 KiB POST body carries the 100 regular IDs.
pad() { head -c "$1" /dev/zero | tr '\0' 'x'; }
small_prefix='{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users('"'"'adelev%40contoso.onmicrosoft.com'"'"')/messages/$entity","id":"'"${REGULARS[0]}"'","subject":"Quarterly numbers","isRead":false,"bodyPreview":"'
printf '%s%s"}' "$small_prefix" "$(pad $(( 1024 - ${#small_prefix} - 2 )))" >"$WORK/small.json"
jq -cn --arg pad "$(pad 400)" --args '{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users(\u0027adelev%40contoso.onmicrosoft.com\u0027)/messages","value":[$ARGS.positional[]|{id:.,subject:"Quarterly numbers",isRead:false,bodyPreview:$pad}],"@odata.nextLink":"https://graph.microsoft.com/v1.0/users/adelev@contoso.onmicrosoft.com/messages?$skip=100"}' "${REGULARS[@]}" >"$WORK/list.json"
fill=$(( 65536 - $(stat -c %s "$WORK/list.json") ))
[ $fill -ge 0 ] || die "the 100-ID list is over 64 KiB"
jq -c --arg more "$(pad $(( fill - 12 )))" '. + {"x":$more}' "$WORK/list.json" >"$WORK/big.json"
cp "$WORK/big.json" "$WORK/post.json"
log "bodies: $(stat -c %s "$WORK/small.json") B, $(stat -c %s "$WORK/big.json") B (POST body with $IDS_IN_BODY IDs)"

# --- upstream nginx -------------------------------------------------------------------------
UP_H1=$(free_port); UP_H2C=$(free_port); UP_TLS=$(free_port)
NG_H1=$(free_port); NG_H2C=$(free_port); NG_TLS=$(free_port)
common_http="access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $WORK/tmp/body; proxy_temp_path $WORK/tmp/proxy;
  fastcgi_temp_path $WORK/tmp/fcgi; uwsgi_temp_path $WORK/tmp/uwsgi; scgi_temp_path $WORK/tmp/scgi;
  client_max_body_size 1m; client_body_buffer_size 128k;
  ssl_certificate $CERT; ssl_certificate_key $KEY;"
# The lines every nginx of this script starts with: NAME WORKERS.
nginx_head() {
  printf 'worker_processes %s;\ndaemon off;\npid %s;\nerror_log %s warn;\nuser root;\n' \
    "$2" "$WORK/$1.pid" "$WORK/$1.err"
  printf 'events { worker_connections 20000; }\n'
}
{ nginx_head upstream 1; cat <<EOF
http {
  $common_http
  server {
    listen 127.0.0.1:$UP_H1;
    listen 127.0.0.1:$UP_H2C http2;
    listen 127.0.0.1:$UP_TLS ssl http2;
    default_type application/json;
    # Lets the check below see which Prefer the upstream received.
    add_header X-Upstream-Saw-Prefer \$http_prefer always;
    location = /v1.0/users/$UPN/messages/small { alias $WORK/small.json; }
    location = /v1.0/users/$UPN/messages { alias $WORK/big.json; }
    location = /v1.0/users/$UPN/bulk { return 200 '{"ok":true}'; }
  }
}
EOF
} >"$WORK/upstream.conf"
{ nginx_head nginx 2; cat <<EOF
http {
  $common_http
  upstream graph { server 127.0.0.1:$UP_H1; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NG_H1;
    listen 127.0.0.1:$NG_H2C http2;
    listen 127.0.0.1:$NG_TLS ssl http2;
    location / {
      proxy_pass http://graph;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Prefer 'IdType="ImmutableId"';
      # Enough buffer for a 64 KiB answer in memory, no temp files.
      proxy_buffers 32 8k;
    }
  }
}
EOF
} >"$WORK/nginx.conf"
nginx -t -q -c "$WORK/upstream.conf" -p "$WORK" 2>"$WORK/nginx-t.err" || die "upstream config: $(cat "$WORK/nginx-t.err")"
nginx -t -q -c "$WORK/nginx.conf" -p "$WORK" 2>"$WORK/nginx-t.err" || die "nginx config: $(cat "$WORK/nginx-t.err")"
nginx -c "$WORK/upstream.conf" -p "$WORK" &
PIDS+=($!)
nginx -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=($!)
wait_for "http://127.0.0.1:$UP_H1/"
wait_for "http://127.0.0.1:$NG_H1/"

# --- our proxies ----------------------------------------------------------------------------
# Rate limits off and logs at warn, like nginx without access_log or limit_req: this measures
# the proxying, not the limiter or log output.
ours_config() {
  local tls=$1 rewrite=$2
  cat <<EOF
[listen]
addr = "127.0.0.1:0"
tls_cert = "$( [ "$tls" = yes ] && echo "$CERT" )"
tls_key = "$( [ "$tls" = yes ] && echo "$KEY" )"
[upstream]
url = "http://127.0.0.1:$UP_H1"
max_retries = 0
[rate_limit]
enabled = false
[rewrite]
enabled = $( [ "$rewrite" = yes ] && echo true || echo false )
store = "$WORK/idmap-$tls-$rewrite.redb"
[admin]
addr = "127.0.0.1:0"
[log]
level = "warn"
EOF
}
ours_config no no >"$WORK/ours.toml"
ours_config yes no >"$WORK/ours-tls.toml"
ours_config no yes >"$WORK/ours-rewrite.toml"
start_ours ours "$WORK/ours.toml"; OURS=$OURS_URL
start_ours ours-tls "$WORK/ours-tls.toml"; OURS_TLS=$OURS_URL
start_ours ours-rewrite "$WORK/ours-rewrite.toml"; OURS_RW=$OURS_URL; OURS_RW_ADMIN=$OURS_ADMIN
curl -sf -X POST --data-binary @"$WORK/idmap.csv" "$OURS_RW_ADMIN/idmap?tenant=$TENANT" >/dev/null \
  || die "importing the ID map failed"

declare -A URL
URL[direct,plain]=http://127.0.0.1:$UP_H1
URL[direct,h2c]=http://127.0.0.1:$UP_H2C
URL[direct,tls]=https://127.0.0.1:$UP_TLS
URL[nginx,plain]=http://127.0.0.1:$NG_H1
URL[nginx,h2c]=http://127.0.0.1:$NG_H2C
URL[nginx,tls]=https://127.0.0.1:$NG_TLS
URL[ours,plain]=$OURS
URL[ours,h2c]=$OURS
URL[ours,tls]=$OURS_TLS
URL[ours-rewrite,plain]=$OURS_RW

# --- checks: each path adds the header, the rewrite path rewrites ---------------------------
saw_prefer() {  # target listener curl-flags...
  local base=${URL[$1,$2]}; shift 2
  curl -sf --cacert "$CA" -o /dev/null -D - "$@" "$base/v1.0/users/$UPN/messages/small" \
    | tr -d '\r' | sed -n 's/^[Xx]-[Uu]pstream-[Ss]aw-[Pp]refer: //p'
}
for target in nginx ours; do
  for variant in "plain --http1.1" "h2c --http2-prior-knowledge" "tls --http1.1" "tls --http2"; do
    set -- $variant
    seen=$(saw_prefer "$target" "$1" "$2")
    [ "$seen" = 'IdType="ImmutableId"' ] || die "$target ($variant) did not add the header: '$seen'"
  done
done
[ -z "$(saw_prefer direct plain --http1.1)" ] || die "the upstream invents a Prefer header"
# The import fills the store, not the memory cache: the first request reads the 100 IDs from
# the store into the cache (one read), the second must find all of them in memory.
post_once() {
  curl -sf -o /dev/null -H "$AUTH" -H 'content-type: application/json' --data-binary @"$WORK/post.json" \
    "$OURS_RW/v1.0/users/$UPN/bulk" || die "the rewrite path refused the POST"
}
cache_hits() { curl -sf "$OURS_RW_ADMIN/metrics" | awk '/^idproxy_id_cache_hits_total/ {print $2}'; }
post_once
hits_before=$(cache_hits)
post_once
hits_after=$(cache_hits)
hits=$(( ${hits_after%.*} - ${hits_before%.*} ))
[ "$hits" -eq $IDS_IN_BODY ] || die "the rewrite path found $hits of $IDS_IN_BODY IDs in the cache"
log "checks passed: nginx and ours add Prefer on h1, h2c, TLS h1, TLS h2; $hits IDs rewritten from the warm cache"

# --- load -----------------------------------------------------------------------------------
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# run SCENARIO TARGET LISTENER PROTO PATH [RATE] [h2load args...]: one round, one line of results.
run() {
  local scenario=$1 target=$2 listener=$3 proto=$4 path=$5 rate=$6; shift 6
  local url=${URL[$target,$listener]}$path out=$WORK/h2load.out lat=$WORK/h2load.log
  local args=(-D "$SECONDS_PER_ROUND" --warm-up-time 1 --log-file "$lat")
  if [ "$proto" = h1 ]; then
    args+=(--h1 -c "$CONNS")
    [ "$rate" = - ] || args+=(--rps $(( rate / CONNS > 0 ? rate / CONNS : 1 )))
  else
    args+=(-c "$H2_CLIENTS" -m "$H2_STREAMS")
    [ "$rate" = - ] || args+=(--rps $(( rate / H2_CLIENTS > 0 ? rate / H2_CLIENTS : 1 )))
  fi
  rm -f "$lat"
  timeout $(( SECONDS_PER_ROUND + 30 )) h2load "${args[@]}" "$@" "$url" >"$out" 2>&1 \
    || die "h2load failed for $scenario/$target: $(tail -5 "$out")"
  local rps done bad
  rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")
  done=$(sed -n 's/^requests: .* \([0-9]*\) done.*/\1/p' "$out")
  # Failed or errored requests, and any answer other than 2xx (warm-up ones included).
  bad=$(awk '/^requests:/ {n += $10 + $12} /^status codes:/ {n += $5 + $7 + $9} END {print n + 0}' "$out")
  [ -n "$rps" ] && [ "${done:-0}" -gt 0 ] && [ "${bad:-1}" -eq 0 ] \
    || die "$scenario/$target: not every request succeeded: $(grep -E '^(requests|status codes)' "$out")"
  # Column 3 of the log: microseconds from start to end of response.
  read -r p50 p99 < <(cut -f3 "$lat" | sort -n | awk '{v[NR]=$1} END {
      i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1;
      printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }')
  printf '%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$rps" "$p50" "$p99" >>"$RESULTS"
  log "$(printf '%-22s %-13s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms' "$scenario" "$target" "$rps" "$p50" "$p99")"
}

median() { sort -g | awk '{v[NR]=$1} END { if (NR == 0) print 0; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2] + v[NR/2+1]) / 2 }'; }
# stat SCENARIO TARGET COLUMN(3 rps, 4 p50, 5 p99): the median over the rounds.
stat() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t {print $c}' "$RESULTS" | median; }

# scenario NAME LISTENER PROTO PATH RATE TARGETS... -- h2load args: rounds alternate targets.
scenario() {
  local name=$1 listener=$2 proto=$3 path=$4 rate=$5; shift 5
  if [ -n "${BENCH_ONLY:-}" ] && ! grep -Eq -- "$BENCH_ONLY" <<<"$name"; then return 0; fi
  local targets=() round target
  while [ $# -gt 0 ] && [ "$1" != -- ]; do targets+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  for round in $(seq 1 "$ROUNDS"); do
    for target in "${targets[@]}"; do
      local l=$listener
      [ "$target" = ours-rewrite ] && l=plain
      run "$name" "$target" "$l" "$proto" "$path" "$rate" "$@"
    done
  done
}

SMALL=/v1.0/users/$UPN/messages/small
BIG=/v1.0/users/$UPN/messages
POST_ARGS=(-d "$WORK/post.json" -H 'content-type: application/json' -H "$AUTH")

log "peak load: $ROUNDS rounds of ${SECONDS_PER_ROUND}s, $CONNS HTTP/1.1 connections or $H2_CLIENTS h2 connections x $H2_STREAMS streams"
scenario "h1 plain 1KiB" plain h1 "$SMALL" - direct nginx ours -- -H "$AUTH"
scenario "h2c plain 1KiB" h2c h2 "$SMALL" - direct nginx ours -- -H "$AUTH"
scenario "h1 TLS 1KiB" tls h1 "$SMALL" - direct nginx ours -- -H "$AUTH"
scenario "h2 TLS 1KiB" tls h2 "$SMALL" - direct nginx ours -- -H "$AUTH"
scenario "h1 plain 64KiB" plain h1 "$BIG" - direct nginx ours -- -H "$AUTH"
scenario "h1 POST 64KiB 100 IDs" plain h1 "/v1.0/users/$UPN/bulk" - direct nginx ours ours-rewrite -- "${POST_ARGS[@]}"

log "latency at half of our peak rate"
for s in "h1 plain 1KiB|plain|h1" "h2c plain 1KiB|h2c|h2" "h1 TLS 1KiB|tls|h1" "h2 TLS 1KiB|tls|h2"; do
  IFS='|' read -r name listener proto <<<"$s"
  half=$(stat "$name" ours 3 | awk '{printf "%d", $1 / 2}')
  [ "$half" -gt 0 ] || continue
  scenario "$name @half" "$listener" "$proto" "$SMALL" "$half" direct nginx ours -- -H "$AUTH"
done

# --- report ---------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo "### Throughput and latency at peak (medians of $ROUNDS rounds)"
echo
echo "| scenario | direct req/s | nginx req/s | ours req/s | ours/nginx | ours/direct | p50 direct / nginx / ours (ms) | p99 direct / nginx / ours (ms) |"
echo "|---|---:|---:|---:|---:|---:|---|---|"
for name in "h1 plain 1KiB" "h2c plain 1KiB" "h1 TLS 1KiB" "h2 TLS 1KiB" "h1 plain 64KiB" "h1 POST 64KiB 100 IDs"; do
  d=$(stat "$name" direct 3); n=$(stat "$name" nginx 3); o=$(stat "$name" ours 3)
  printf '| %s | %.0f | %.0f | %.0f | %s | %s | %s / %s / %s | %s / %s / %s |\n' "$name" "$d" "$n" "$o" \
    "$(ratio "$o" "$n")" "$(ratio "$o" "$d")" \
    "$(stat "$name" direct 4)" "$(stat "$name" nginx 4)" "$(stat "$name" ours 4)" \
    "$(stat "$name" direct 5)" "$(stat "$name" nginx 5)" "$(stat "$name" ours 5)"
done
echo
echo "### p99 at half of our peak rate (same rate for all three; added = ours - direct)"
echo
echo "| scenario | rate (req/s) | p99 direct (ms) | p99 nginx (ms) | p99 ours (ms) | added by ours (ms) | added by nginx (ms) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for name in "h1 plain 1KiB" "h2c plain 1KiB" "h1 TLS 1KiB" "h2 TLS 1KiB"; do
  d=$(stat "$name @half" direct 5); n=$(stat "$name @half" nginx 5); o=$(stat "$name @half" ours 5)
  printf '| %s | %.0f | %s | %s | %s | %s | %s |\n' "$name" "$(stat "$name @half" ours 3)" "$d" "$n" "$o" \
    "$(awk -v a="$o" -v b="$d" 'BEGIN {printf "%.3f", a - b}')" \
    "$(awk -v a="$n" -v b="$d" 'BEGIN {printf "%.3f", a - b}')"
done
echo
echo "### Rewrite path: 64 KiB JSON POST body with $IDS_IN_BODY regular IDs, warm cache"
echo
pass=$(stat "h1 POST 64KiB 100 IDs" ours 3); rw=$(stat "h1 POST 64KiB 100 IDs" ours-rewrite 3)
echo "| ours, rewrite off (req/s) | ours, $IDS_IN_BODY IDs rewritten (req/s) | rewrite/pass-through | p99 off / on (ms) |"
echo "|---:|---:|---:|---|"
printf '| %.0f | %.0f | %s | %s / %s |\n' "$pass" "$rw" "$(ratio "$rw" "$pass")" \
  "$(stat "h1 POST 64KiB 100 IDs" ours 5)" "$(stat "h1 POST 64KiB 100 IDs" ours-rewrite 5)"
echo
echo "Raw rounds (scenario, target, req/s, p50 ms, p99 ms):"
echo
echo '```'
cat "$RESULTS"
echo '```'
