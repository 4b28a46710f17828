#!/usr/bin/env bash
# make bench: inbound-call load benchmark of maskpbx on this machine, all on
# loopback. A SIPp trunk (testdata/sipp/bench_trunk.xml) calls the company
# number as one of the manager's known clients; the PBX rings the manager's
# one registered SIPp phone (bench_phone.xml), which answers at once.
#
#   1. Media (on the freshly started PBX, so idle memory is idle): 100, 500
#      and 1000 concurrent calls (BENCH_RTP_CALLS) with PCMU streamed both
#      ways by SIPp through the relay. Loss and added delay come from a
#      loopback capture: every RTP packet into a relay port is matched with
#      the packet the relay sends on (deploy/bench/rtpcap). CPU, RSS, Go heap
#      and goroutine stacks are read from /proc and /metrics meanwhile.
#   2. Signalling: 2 s calls at rising rates (BENCH_CPS_STEPS), BENCH_CPS_SECONDS
#      of calls per step. A step passes when everything keeps up: < 0.1%
#      failed calls at >= 95% of the target rate, every successful call with
#      its finished CDR and (recording on) its complete recording within 10 s
#      of the step's end (BENCH_CDR_DRAIN_S). A failing step is run once
#      more, and stepping stops at the first step that fails twice; the
#      summary names the binding limit (calls/SIP, CDRs, recordings, CPU).
#      BENCH_PROFILE=1 saves a 5 s CPU profile and a heap profile of the PBX
#      from each step (--pprof-listen).
#   3. Soak (BENCH_SOAK_SECONDS, off by default): BENCH_SOAK_CPS calls/s for
#      that long, PBX RSS sampled every 10 s. It passes when RSS at the end is
#      within 20% of RSS after the first minute, calls keep up and no CDR (or
#      recording) is behind at the end.
#
# Calls are recorded as shipped (the recorder inside serve); BENCH_RECORDER=off
# benchmarks without recording. deploy/bench/README.md lists every knob.
#
# Prints one table and writes it to $BENCH_OUT/bench-results.txt (default
# var/bench), next to the PBX log, SIPp statistics and the capture analyses.
# Needs root for the capture (tcpdump, installed if missing) and runs its own
# Postgres with deploy/pg.sh. Every wait is bounded; on exit or Ctrl-C it
# stops SIPp, tcpdump, maskpbx and Postgres and removes its temp dir.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/bin/maskpbx}
OUT=${BENCH_OUT:-$ROOT/var/bench}

PBX_IP=${BENCH_PBX_IP:-127.0.0.30}
TRUNK_IP=${BENCH_TRUNK_IP:-127.0.0.31}
PHONE_IP=${BENCH_PHONE_IP:-127.0.0.32}
SIP_PORT=15060 # not 5060: `make run` listens on *:5060
PHONE_SIP_PORT=5070
TRUNK_SIP_PORT=5080
MEDIA_PORT=6000 # SIPp's RTP port on the trunk and the phone IP (3.6.1 uses one for all calls)
HTTP=$PBX_IP:18080
PG_PORT=${BENCH_PG_PORT:-55440}
# Two port pairs per call: 1000 calls/s of 2 s calls keep ~2,200 calls (8,800
# ports) busy. Below the kernel's ephemeral range (32768-) so nothing else
# takes them.
RTP_PORTS=${BENCH_RTP_PORTS:-16000-31999}
COMPANY=+74950000000
DOMAIN=bench.maskpbx.local
TOKEN=bench-admin-token
SIP_USER=bench
SIP_PASS=bench-secret-1
CLIENTS=${BENCH_CLIENTS:-20}
# Extra active managers who never register: the router looks up every active
# manager's registrations for each call, so this is how a bigger office costs.
EXTRA_MANAGERS=${BENCH_EXTRA_MANAGERS:-0}
# --recorder: empty = the recorder inside serve records every answered call
# (the shipped default); "off" measures the calls without recording.
RECORDER=${BENCH_RECORDER:-}

RTP_CALLS=${BENCH_RTP_CALLS-"100 500 1000"}
RTP_SETTLE=2 # s after the last call is up before measuring
RTP_CPU_S=4  # s of CPU and memory measurement, nothing else running
RTP_CAP_S=6  # s of packet capture
CPS_STEPS=${BENCH_CPS_STEPS-"50 100 200 300 400 500 600 800 1000 1200 1500"}
CPS_SECONDS=${BENCH_CPS_SECONDS:-10}
HOLD_MS=${BENCH_HOLD_MS:-2000}
# A step fails unless every successful call has its finished CDR and (with
# recording on) its complete recording this long after the step's end.
CDR_DRAIN_S=${BENCH_CDR_DRAIN_S:-10}
SETTLE_S=60 # at most this long for a failed step's leftovers before the next step
SOAK_S=${BENCH_SOAK_SECONDS:-0}
SOAK_CPS=${BENCH_SOAK_CPS:-300}
SOAK_SAMPLE_S=10
PROFILE=${BENCH_PROFILE:-0}
PPROF=$PBX_IP:16060 # --pprof-listen when BENCH_PROFILE=1
RECORDING=$([ "$RECORDER" = off ] && echo no || echo yes)

API=http://$HTTP
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# --- tools --------------------------------------------------------------------------
[ -x "$BIN" ] || die "$BIN not built (make build)"
need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v sox >/dev/null || need+=(sox)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v curl >/dev/null || need+=(curl)
command -v psql >/dev/null || need+=(postgresql-client)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need[*]}: apt-get install ${need[*]}"
  log "installing ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null
fi
[ "$(id -u)" = 0 ] || log "not root: tcpdump on lo may be refused"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- workspace and cleanup ------------------------------------------------------------
WORK=$(mktemp -d /tmp/maskpbx-bench.XXXXXX)
mkdir -p "$OUT"
rm -f "$OUT"/*.csv "$OUT"/*.log "$OUT"/*.out "$OUT"/*.txt "$OUT"/*.pcap "$OUT"/*.pprof
PBX_PID= PHONE_PID= TRUNK_PID= CAP_PID= PROF_PID=

stop_pid() { # stop_pid PID [seconds]: TERM, wait, KILL
  local pid=$1 n=$((${2:-5} * 10))
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while [ $n -gt 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; n=$((n - 1)); done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  trap - EXIT INT TERM
  set +e
  stop_pid "$CAP_PID" 2
  stop_pid "$PROF_PID" 2
  stop_pid "$TRUNK_PID" 2
  stop_pid "$PHONE_PID" 2
  stop_pid "$PBX_PID" 15
  "$ROOT/deploy/pg.sh" stop "$WORK/pg" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "stopped by a failing command (line $LINENO): $BASH_COMMAND"' ERR
trap 'log "interrupted"; exit 130' INT TERM

# --- measuring helpers ----------------------------------------------------------------
# Every helper below prints a number, 0 when there is nothing to read: under
# set -e a failing command substitution would end the benchmark.
cpu_ticks() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { [ -n "$1" ] && [ -r "/proc/$1/status" ] && awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# pg_ticks: CPU ticks of our Postgres: the postmaster (with its children
# that have exited: a backend whose query timed out goes away) and the
# children still running.
pg_ticks() {
  local pm
  pm=$(head -n 1 "$WORK/pg/postmaster.pid" 2>/dev/null || true)
  [ -n "$pm" ] || { echo 0; return; }
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v pm="$pm" '{ pid = $1; sub(/^.*\) /, ""); split($0, f, " ");
    if (pid == pm) t += f[12] + f[13] + f[14] + f[15]; else if (f[2] == pm) t += f[12] + f[13] } END { print t + 0 }'
}
host_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; } # "busy total"
now_ns() { date +%s%N; }
# pct_cpu TICKS_BEFORE TICKS_AFTER NS_BEFORE NS_AFTER: % of one core.
pct_cpu() {
  awk -v a="$1" -v b="$2" -v t0="$3" -v t1="$4" -v hz="$HZ" \
    'BEGIN { w = (t1 - t0) / 1e9; if (w <= 0) w = 1; c = 100 * (b - a) / hz / w; printf "%.0f", c < 0 ? 0 : c }'
}
# host_pct "BUSY TOTAL" "BUSY TOTAL": the machine's busy time, % of one core.
host_pct() { awk -v a="$1" -v b="$2" -v n="$NCPU" 'BEGIN { split(a, x, " "); split(b, y, " ");
  t = y[2] - x[2]; if (t <= 0) t = 1; printf "%.0f", 100 * n * (y[1] - x[1]) / t }'; }
# metric NAME: a value from /metrics, 0 if the PBX does not answer in time.
metric() { { curl -s --max-time 5 "$API/metrics" || true; } | awk -v m="$1" '$1 == m {v = $2} END {printf "%d\n", v}'; }
# cdr_stats: the CDR writer's own view from /metrics, "BACKLOG_EVENTS BATCHES
# BATCHED_EVENTS BATCH_MS" (the last three cumulative; -1 0 0 0 if absent).
cdr_stats() {
  { curl -s --max-time 5 "$API/metrics" || true; } | awk 'BEGIN {b = -1} $1 == "maskpbx_cdr_backlog_events" {b = $2}
    $1 == "maskpbx_cdr_batch_events_count" {n = $2} $1 == "maskpbx_cdr_batch_events_sum" {e = $2}
    $1 == "maskpbx_cdr_batch_seconds_sum" {s = $2} END {printf "%d %d %d %d\n", b, n, e, s * 1000}'
}
# batch_note "STATS_BEFORE" "STATS_AFTER": the writer's batches in between, in words.
batch_note() {
  local b0 n0 e0 m0 b1 n1 e1 m1
  read -r b0 n0 e0 m0 <<<"$1"
  read -r b1 n1 e1 m1 <<<"$2"
  awk -v n=$((n1 - n0)) -v e=$((e1 - e0)) -v m=$((m1 - m0)) -v b="$b1" 'BEGIN { k = n > 0 ? n : 1;
    if (b < 0) printf "no writer metrics"; else printf "%d batches of %.0f events, %.0f ms each, %d events waiting", n, e / k, m / k, b }'
}
api() { # api METHOD PATH [JSON]
  local args=(-s --max-time 10 -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json')
  [ $# -ge 3 ] && args+=(-d "$3")
  curl "${args[@]}" "$API$2" || true
}
json_id() { grep -o '"id":"[^"]*"' | head -n 1 | cut -d'"' -f4; }
sql() { psql "$PSQL_URL" -Atqc "$1" 2>/dev/null || echo 0; }
cdrs_done() { sql "SELECT count(*) FROM cdrs WHERE ended_at IS NOT NULL AND disposition = 'answered'"; }
recs_done() { sql "SELECT count(*) FROM recordings WHERE status = 'complete'"; }
if_recording() { if [ "$RECORDING" = yes ]; then echo "$1"; fi; } # if_recording TEXT: TEXT when calls are recorded

# stat_field CSV NAME: the named column of the last line of a SIPp -trace_stat file.
stat_field() {
  awk -F';' -v n="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == n) c = i; next }
    { last = $c } END { print (c && last != "") ? last : 0 }' "$1" 2>/dev/null || echo 0
}
# stat_ms VALUE: SIPp's HH:MM:SS:usec as milliseconds.
stat_ms() { awk -F: '{ s = ($1*3600 + $2*60 + $3)*1000; if (NF == 4) s += $4/1000; printf "%.0f", s }' <<<"$1"; }
# created_rate CSV N: the rate at which SIPp created its N calls, from its
# per-second rows, interpolated to when the N-th call was created.
created_rate() {
  awk -F';' -v n="$2" '
    function epoch(f,   a) { split(f, a, "\t"); return a[3] + 0 }
    NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "TotalCallCreated") c = i; if ($i == "CurrentTime") t = i; if ($i == "StartTime") s = i }; next }
    start == "" { start = epoch($s); prev_t = start; prev_m = 0 }
    { now = epoch($t); made = $c + 0
      if (made >= n && !done) { at = prev_t + (now - prev_t) * (n - prev_m) / (made - prev_m); done = 1 }
      prev_t = now; prev_m = made }
    END { if (!done || at <= start) print 0; else printf "%.0f", n / (at - start) }' "$1" 2>/dev/null || echo 0
}
log_lines() { wc -l <"$OUT/maskpbx.log" 2>/dev/null || echo 0; }
# log_problems FROM_LINE: warnings and errors the PBX logged after that line.
log_problems() { tail -n +"$(($1 + 1))" "$OUT/maskpbx.log" | grep -c -E '"level":"(warn|error|dpanic|panic|fatal)"' || true; }
# relay_drops: receive-buffer drops summed over the PBX's open relay sockets.
relay_drops() {
  local ip_hex lo hi
  ip_hex=$(printf '%02X%02X%02X%02X' $(tr '.' ' ' <<<"$PBX_IP" | awk '{print $4, $3, $2, $1}'))
  lo=$(printf '%04X' "${RTP_PORTS%-*}") hi=$(printf '%04X' "${RTP_PORTS#*-}")
  # Fixed-width upper-case hex compares as text the way the numbers do.
  awk -v ip="$ip_hex" -v lo="$lo" -v hi="$hi" 'NR > 1 { split($2, a, ":");
    if (a[1] == ip && a[2] >= lo && a[2] <= hi) d += $NF } END { print d + 0 }' /proc/net/udp
}

# --- Postgres, PBX, SIPp ----------------------------------------------------------------
DB_URL=$("$ROOT/deploy/pg.sh" url "$WORK/pg" "$PG_PORT")
PSQL_URL=$DB_URL
# BENCH_PG_POOL=N sets pgx's pool size (its default: max(4, cores)).
[ -z "${BENCH_PG_POOL:-}" ] || DB_URL="$DB_URL&pool_max_conns=$BENCH_PG_POOL"
# Fixed keys: the clients stay readable whatever the data dir holds.
ENC_KEY=$(head -c 32 /dev/urandom | base64)
IDX_KEY=$(head -c 32 /dev/urandom | base64)

# The one SIPp phone answers every call of the benchmark, thousands of
# datagrams a second from one address: its per-source rate limit is off
# (MASKPBX_SIP_RATE_LIMIT_PHONE=0); the trunk's (20,000/s) is left as shipped.
start_pbx() {
  MASKPBX_DATABASE_URL=$DB_URL \
  MASKPBX_DATA_DIR=$WORK/data \
  MASKPBX_ENCRYPTION_KEY=$ENC_KEY \
  MASKPBX_INDEX_KEY=$IDX_KEY \
  MASKPBX_SIP_LISTEN=$PBX_IP:$SIP_PORT \
  MASKPBX_SIP_DOMAIN=$DOMAIN \
  MASKPBX_HTTP_LISTEN=$HTTP \
  MASKPBX_NATS_LISTEN=$PBX_IP:14222 \
  MASKPBX_COMPANY_NUMBER=$COMPANY \
  MASKPBX_REGION=RU \
  MASKPBX_TRUNK=$TRUNK_IP:$TRUNK_SIP_PORT \
  MASKPBX_TRUNK_ALLOW=$TRUNK_IP \
  MASKPBX_RTP_PORTS=$RTP_PORTS \
  MASKPBX_RING_TIMEOUT=5s \
  MASKPBX_DIGEST_ALGORITHMS=MD5 \
  MASKPBX_SIP_RATE_LIMIT_PHONE=0 \
  MASKPBX_LOG_FORMAT=json \
  MASKPBX_ADMIN_TOKEN=$TOKEN \
  MASKPBX_RECORDER=$RECORDER \
  MASKPBX_PPROF_LISTEN=$([ "$PROFILE" = 1 ] && echo "$PPROF") \
    "$BIN" serve >>"$OUT/maskpbx.log" 2>&1 &
  PBX_PID=$!
  local i
  for i in $(seq 1 120); do
    curl -sf --max-time 1 "$API/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$PBX_PID" 2>/dev/null || { tail -n 20 "$OUT/maskpbx.log" >&2; die "maskpbx exited at start"; }
    sleep 0.5
  done
  die "maskpbx did not answer /healthz within 60 s"
}

register_phone() {
  sipp "$PBX_IP:$SIP_PORT" -sf "$ROOT/testdata/sipp/register_auth.xml" -m 1 -nostdin \
    -i "$PHONE_IP" -p "$PHONE_SIP_PORT" -timeout 10s -timeout_error \
    -key sip_user "$SIP_USER" -key sip_domain "$DOMAIN" -key reg_expires 3600 \
    -au "$SIP_USER" -ap "$SIP_PASS" -auth_uri "$DOMAIN" >"$OUT/register.out" 2>&1 \
    || die "the phone could not register (see $OUT/register.out)"
  api GET /api/v1/managers | grep -q '"registered":true' || die "the phone registered but the API says it is not"
}

start_phone() { # start_phone yes|no TAG: the answering phone, with or without RTP
  (cd "$WORK" && exec sipp "$PBX_IP:$SIP_PORT" -sf "$ROOT/testdata/sipp/bench_phone.xml" -nostdin \
    -i "$PHONE_IP" -p "$PHONE_SIP_PORT" -mi "$PHONE_IP" -mp "$MEDIA_PORT" -set rtp "$1" \
    -trace_stat -stf "$OUT/phone-$2.csv" -fd 1 -trace_err -error_file "$OUT/phone-$2-errors.log" \
    >"$OUT/phone-$2.out" 2>&1) &
  PHONE_PID=$!
  sleep 0.5
  kill -0 "$PHONE_PID" 2>/dev/null || die "the SIPp phone did not start (see $OUT/phone-$2.out)"
}

# start_trunk TAG RTP RATE CALLS LIMIT HOLD_MS TIMEOUT_S: the SIPp trunk, in the background.
start_trunk() {
  (cd "$WORK" && exec sipp "$PBX_IP:$SIP_PORT" -sf "$ROOT/testdata/sipp/bench_trunk.xml" -nostdin \
    -inf "$WORK/callers.csv" -key company "${COMPANY#+}" -set rtp "$2" \
    -i "$TRUNK_IP" -p "$TRUNK_SIP_PORT" -mi "$TRUNK_IP" -mp "$MEDIA_PORT" \
    -r "$3" -rp 1000 -m "$4" -l "$5" -d "$6" -recv_timeout 10000 -timeout "${7}s" \
    -trace_stat -stf "$OUT/trunk-$1.csv" -fd 1 -trace_err -error_file "$OUT/trunk-$1-errors.log" \
    >"$OUT/trunk-$1.out" 2>&1) &
  TRUNK_PID=$!
}

wait_trunk() { # wait_trunk SECONDS: until the trunk SIPp exits, then make sure it has
  local i
  for i in $(seq 1 "$1"); do kill -0 "$TRUNK_PID" 2>/dev/null || break; sleep 1; done
  kill -0 "$TRUNK_PID" 2>/dev/null && log "the SIPp trunk did not finish in ${1}s; stopping it"
  stop_pid "$TRUNK_PID" 2
  TRUNK_PID=
}

wait_idle() { # wait_idle SECONDS: until the PBX has no call
  local i
  for i in $(seq 1 $(($1 * 4))); do
    [ "$(metric maskpbx_calls_active)" = 0 ] && return 0
    sleep 0.25
  done
  log "the PBX still has $(metric maskpbx_calls_active) calls after ${1}s"
}

CALLS_OK=0 # successful calls so far: each must end up as a finished CDR and, recorded, a complete recording
cdr_backlog() { local d; d=$(cdrs_done); echo $((CALLS_OK > d ? CALLS_OK - d : 0)); }
rec_backlog() {
  [ "$RECORDING" = yes ] || { echo 0; return; }
  local d; d=$(recs_done); echo $((CALLS_OK > d ? CALLS_OK - d : 0))
}
# wait_caught_up SECONDS: until every successful call has its finished CDR
# and its complete recording (recording on), polled every 0.25 s; prints the
# seconds it took.
wait_caught_up() {
  local t0 end
  t0=$(now_ns) end=$(($(now_ns) + $1 * 1000000000))
  while [ "$(now_ns)" -lt "$end" ]; do
    [ "$(cdr_backlog)" = 0 ] && [ "$(rec_backlog)" = 0 ] && break
    sleep 0.25
  done
  awk -v a="$t0" -v b="$(now_ns)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'
}
# per_s COUNT NS_BEFORE NS_AFTER: a count per second over that time.
per_s() { awk -v n="$1" -v t0="$2" -v t1="$3" 'BEGIN { w = (t1 - t0) / 1e9; printf "%.0f", (w > 0 ? n / w : 0) }'; }
# capture_profiles TAG DELAY_S: after DELAY_S, a 5 s CPU profile and then a
# heap profile of the PBX into $OUT (BENCH_PROFILE=1).
capture_profiles() {
  sleep "$2"
  curl -sf --max-time 20 -o "$OUT/cpu-$1.pprof" "http://$PPROF/debug/pprof/profile?seconds=5" \
    || log "  no CPU profile for $1 (is --pprof-listen $PPROF served?)"
  curl -sf --max-time 20 -o "$OUT/heap-$1.pprof" "http://$PPROF/debug/pprof/heap" || log "  no heap profile for $1"
}

# --- setup ------------------------------------------------------------------------------
log "workspace $WORK, results in $OUT"
# Other work on the machine skews every number: wait up to a minute for it
# to go quiet, and say in the results how busy it was.
for _ in $(seq 1 30); do
  h0=$(host_ticks); sleep 2; BACKGROUND=$(host_pct "$h0" "$(host_ticks)")
  [ "$BACKGROUND" -le 20 ] && break
  log "the machine is ${BACKGROUND}% busy (of $((NCPU * 100))%) with other work; waiting for it to settle"
done
[ "$BACKGROUND" -gt 20 ] && log "WARNING: starting anyway on a busy machine"
"$ROOT/deploy/pg.sh" start "$WORK/pg" "$PG_PORT"
sox -n -r 8000 -c 1 -e mu-law -b 8 "$WORK/bench_pcmu.wav" synth 1 sine 1000 vol 0.5 # looped by the streams
go build -o "$WORK/rtpcap" ./deploy/bench/rtpcap
start_pbx
log "maskpbx up (pid $PBX_PID)"

MANAGER_ID=$(api POST /api/v1/managers "{\"name\":\"Bench Manager\",\"sip_username\":\"$SIP_USER\",\"sip_password\":\"$SIP_PASS\",\"team\":\"sales\",\"role\":\"manager\"}" | json_id)
[ -n "$MANAGER_ID" ] || die "could not create the manager"
# Known clients of that manager, called in turn: every call is routed sticky
# to his phone through the blind-index lookup. (An unknown number would make
# the PBX create a client per call: a different, write-heavy benchmark.)
echo SEQUENTIAL >"$WORK/callers.csv"
for i in $(seq 1 "$CLIENTS"); do
  number=$(printf '+7916555%04d' "$i")
  id=$(api POST /api/v1/clients "{\"name\":\"Bench client $i\",\"phones\":[\"$number\"],\"manager_id\":\"$MANAGER_ID\",\"partner_ids\":[]}" | json_id)
  [ -n "$id" ] || die "could not create client $i"
  echo "$number;" >>"$WORK/callers.csv"
done
for i in $(seq 1 "$EXTRA_MANAGERS"); do
  api POST /api/v1/managers "{\"name\":\"Idle Manager $i\",\"sip_username\":\"idle$i\",\"sip_password\":\"idle-secret-$i\",\"team\":\"sales\",\"role\":\"manager\"}" | json_id | grep -q . \
    || die "could not create idle manager $i"
done
register_phone
log "manager, $CLIENTS clients and the phone registered ($EXTRA_MANAGERS more managers, not registered)"
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
HEADER="maskpbx inbound-call benchmark  $(date -u '+%Y-%m-%d %H:%M UTC')  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo '+changes')$([ "$BIN" = "$ROOT/bin/maskpbx" ] || echo "  binary $BIN")
machine: $NCPU cores ($CPU_MODEL), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo) RAM; all on loopback: trunk $TRUNK_IP -> PBX $PBX_IP -> phone $PHONE_IP, SIP/UDP, PCMU
PBX: one process (maskpbx serve: SIP, relay, embedded NATS, CDR writer), Postgres (fsync ${PG_FSYNC:-on}, pgx pool ${BENCH_PG_POOL:-default}) and both SIPp on the same $NCPU cores
before the run the machine was ${BACKGROUND}% busy (of $((NCPU * 100))%) with other work$([ "$BACKGROUND" -le 20 ] || echo ': NUMBERS ARE LOW, rerun on a quiet machine')
recording: $([ -z "$RECORDER" ] && echo "every answered call, by the recorder inside serve (stereo WAV under the data dir)" || echo "--recorder $RECORDER")
checks: a CPS step passes with < 0.1% failed calls at >= 95% of the rate and every successful call's finished CDR$(if_recording " and complete recording") within ${CDR_DRAIN_S} s of the step's end
data: 1 registered manager + $EXTRA_MANAGERS unregistered, $CLIENTS known clients calling in turn; ring timeout 5 s; relay ports $RTP_PORTS"

# --- 1. media: concurrent relayed calls -----------------------------------------------------
start_phone yes rtp
sleep 2
# Idle memory: RSS as it is; Go heap as its lowest sample (closest to live
# data: a sample right before a GC includes garbage).
IDLE_RSS=0 IDLE_HEAP=$((1 << 62)) IDLE_STACK=0
for _ in 1 2 3 4 5 6; do
  r=$(rss_kb "$PBX_PID"); [ "$r" -gt "$IDLE_RSS" ] && IDLE_RSS=$r
  hp=$(metric go_memstats_heap_inuse_bytes); [ "$hp" -lt "$IDLE_HEAP" ] && IDLE_HEAP=$hp
  IDLE_STACK=$(metric go_memstats_stack_inuse_bytes)
  sleep 0.5
done
log "idle PBX: RSS $((IDLE_RSS / 1024)) MB, Go heap $((IDLE_HEAP / 1048576)) MB, $(metric go_goroutines) goroutines"
RTP_ROWS=() RTP_NOTES=() MEM_UP=() MEM_RSS=() MEM_HEAP=() MEM_STACK=()
best_relayed=0 largest_kb=? largest_n=0 largest_p99=?
for n in $RTP_CALLS; do
  rate=$((n >= 500 ? 100 : 50))
  ramp=$(((n + rate - 1) / rate))
  hold_s=$((ramp + RTP_SETTLE + RTP_CPU_S + RTP_CAP_S + 2))
  log "RTP run: $n calls at $rate calls/s, each ${hold_s} s, PCMU both ways"
  wait_idle 20
  l0=$(log_lines)
  start_trunk "rtp-$n" yes "$rate" "$n" "$n" "$((hold_s * 1000))" "$((hold_s + ramp + 60))"
  sleep "$((ramp + RTP_SETTLE))"
  deadline=$(($(date +%s) + 5))
  while [ "$(metric maskpbx_calls_active)" -lt "$n" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.25; done
  up=$(metric maskpbx_calls_active)
  ports=$(metric maskpbx_rtp_ports_in_use)
  # CPU and memory while the calls talk, with nothing measuring packets.
  c0=$(cpu_ticks "$PBX_PID") h0=$(host_ticks) g0=$(pg_ticks) s0=$(($(cpu_ticks "$TRUNK_PID") + $(cpu_ticks "$PHONE_PID"))) t0=$(now_ns)
  peak_rss=0 live_heap=$((1 << 62)) stack=0
  for _ in $(seq 1 $((RTP_CPU_S * 2))); do
    r=$(rss_kb "$PBX_PID"); [ "$r" -gt "$peak_rss" ] && peak_rss=$r
    hp=$(metric go_memstats_heap_inuse_bytes); [ "$hp" -lt "$live_heap" ] && live_heap=$hp
    st=$(metric go_memstats_stack_inuse_bytes); [ "$st" -gt "$stack" ] && stack=$st
    sleep 0.5
  done
  c1=$(cpu_ticks "$PBX_PID") h1=$(host_ticks) g1=$(pg_ticks) s1=$(($(cpu_ticks "$TRUNK_PID") + $(cpu_ticks "$PHONE_PID"))) t1=$(now_ns)
  gor=$(metric go_goroutines)
  cpu=$(pct_cpu "$c0" "$c1" "$t0" "$t1") sipp_cpu=$(pct_cpu "$s0" "$s1" "$t0" "$t1") host=$(host_pct "$h0" "$h1")
  pg_cpu=$(pct_cpu "$g0" "$g1" "$t0" "$t1")
  # Loss and delay: capture the relay's traffic on loopback.
  pcap=$WORK/rtp-$n.pcap
  drops0=$(relay_drops)
  tcpdump -i lo -nn -s 64 -B 131072 --time-stamp-precision=nano -w "$pcap" \
    "udp and ((dst host $PBX_IP and dst portrange $RTP_PORTS) or (src host $PBX_IP and src portrange $RTP_PORTS))" \
    2>"$OUT/tcpdump-$n.log" &
  CAP_PID=$!
  sleep "$RTP_CAP_S"
  kill -INT "$CAP_PID" 2>/dev/null || true
  wait "$CAP_PID" 2>/dev/null || true
  CAP_PID=
  drops=$(($(relay_drops) - drops0))
  cap_dropped=$(awk '/dropped by kernel/ {print $1}' "$OUT/tcpdump-$n.log")
  wait_trunk "$((hold_s + 60))"
  csv=$OUT/trunk-rtp-$n.csv
  ok=$(stat_field "$csv" 'SuccessfulCall(C)')
  CALLS_OK=$((CALLS_OK + ok))
  failed=$((n - ok))
  problems=$(log_problems "$l0")
  streams=? counted=? lost=? loss=? p50=? p99=? dmax=? pps=? gaps=? fp99=? qp99=?
  if "$WORK/rtpcap" -pcap "$pcap" -relay "$PBX_IP" -ports "$RTP_PORTS" >"$OUT/rtpcap-$n.txt" 2>&1; then
    v() { awk -F= -v k="$1" '$1 == k {print $2}' "$OUT/rtpcap-$n.txt"; }
    ms() { awk -v u="$(v "$1")" -v d="$2" 'BEGIN {printf "%.*f", d, u / 1000}'; }
    streams=$(v streams) counted=$(v counted) lost=$(v lost) loss=$(v loss_pct)
    p50=$(ms delay_p50_us 2) p99=$(ms delay_p99_us 2) dmax=$(ms delay_max_us 1)
    pps=$(v stream_pps_median) gaps=$(v in_gaps)
    fp99=$(ms first_delay_p99_us 2) qp99=$(ms burst_queue_p99_us 2)
  else
    log "  rtpcap failed: $(head -c 300 "$OUT/rtpcap-$n.txt")"
  fi
  if [ "${BENCH_KEEP_PCAP:-0}" = 1 ]; then cp "$pcap" "$OUT/"; fi
  rm -f "$pcap"
  kb_call=$(awk -v p="$peak_rss" -v i="$IDLE_RSS" -v n="$up" 'BEGIN { if (n > 0) printf "%.0f", (p - i) / n; else print "?" }')
  stack_kb=$(awk -v p="$stack" -v i="$IDLE_STACK" -v n="$up" 'BEGIN { if (n > 0) printf "%.0f", (p - i) / 1024 / n; else print "?" }')
  RTP_ROWS+=("$(printf '%-6s %-5s %-5s %-6s %-8s %-8s %-5s %-8s %-7s %-7s %-7s %-5s %-5s %-4s %-5s %-5s %-5s %-7s %-7s %-6s %s' \
    "$n" "$up" "$ok" "$failed" "$streams" "$counted" "$lost" "$loss%" "$p50" "$p99" "$dmax" \
    "$cpu" "$sipp_cpu" "$pg_cpu" "$host" "$((IDLE_RSS / 1024))" "$((peak_rss / 1024))" "$kb_call" "$stack_kb" "$gor" "$problems")")
  MEM_UP+=("$up") MEM_RSS+=("$peak_rss") MEM_HEAP+=("$live_heap") MEM_STACK+=("$stack")
  RTP_NOTES+=("$n calls: $ports relay ports open; SIPp sent a median $pps pkt/s per stream (50 = on time); $gaps packets missing before the relay; delay p99 of each burst's first packet (the relay's own) $fp99 ms, queueing behind the burst p99 $qp99 ms; relay socket-buffer drops ${drops}; capture drops ${cap_dropped:-?}$([ "$lost" = 0 ] || echo "; lost packets: rtpcap-$n.txt")")
  log "  -> up $up, ok $ok/$n, loss $loss% ($lost of $counted), delay p50 $p50 ms p99 $p99 ms, PBX CPU $cpu%, host $host%, RSS $((peak_rss / 1024)) MB ($kb_call KB/call)"
  if [ "$up" -ge "$n" ] && [ "$failed" -eq 0 ] && awk -v l="$loss" 'BEGIN { exit !(l != "?" && l + 0 < 0.1) }'; then
    best_relayed=$n
  fi
  if [ "$n" -gt "$largest_n" ]; then largest_n=$n largest_kb=$kb_call largest_p99=$p99; fi
done
stop_pid "$PHONE_PID" 3
PHONE_PID=

# --- 2. signalling: calls per second ------------------------------------------------------
CPS_ROWS=() CDR_PACE=()
best_rate=0 first_fail= best_fast=0 prev_rate=0
FAIL_WHY= FAIL_HOST=0 FAIL_PCT= FAIL_SETUP= FAIL_LEFT=0 FAIL_RLEFT=0 FAIL_PACE=- FAIL_WAITING=0
CDR_OK_RATE=0 CDR_FAILED_AT= CDR_MAX_PACE=0 # highest step whose CDRs kept up; first step whose did not; fastest catch-up
start_phone no cps
# cps_step RATE TAG LABEL: one signalling step; sets verdict and why (the
# checks that failed, |-separated) and adds a table row.
cps_step() {
  local rate=$1 tag=$2 calls a r tt csv d0 d1 d2 v0 v2 w0 w1 w2 waiting1 waiting2 t2 lag rlag left rleft drain cdr_rate events_rate pace why
  calls=$((rate * CPS_SECONDS))
  wait_idle 20
  # A failed step's leftovers are not this step's: give them time to clear.
  wait_caught_up "$SETTLE_S" >/dev/null
  a=$(cdr_backlog) r=$(rec_backlog)
  if [ "$a" != 0 ] || [ "$r" != 0 ]; then
    log "  still behind from before: $a CDRs, $r recordings (they count against this step)"
  fi
  log "CPS step: $rate calls/s, $calls calls of $HOLD_MS ms"
  l0=$(log_lines)
  d0=$(cdrs_done) v0=$(metric maskpbx_cdr_events_applied_total) w0=$(cdr_stats)
  c0=$(cpu_ticks "$PBX_PID") h0=$(host_ticks) g0=$(pg_ticks) p0=$(cpu_ticks "$PHONE_PID") t0=$(now_ns)
  start_trunk "$tag" no "$rate" "$calls" "$((rate * 10))" "$HOLD_MS" "$((CPS_SECONDS + HOLD_MS / 1000 + 40))"
  if [ "$PROFILE" = 1 ]; then # mid-step, while the calls are up
    capture_profiles "$tag" "$((CPS_SECONDS > 7 ? CPS_SECONDS / 2 - 2 : 1))" &
    PROF_PID=$!
  fi
  peak_calls=0 peak_rss=0 trunk_ticks=0
  while kill -0 "$TRUNK_PID" 2>/dev/null; do
    a=$(metric maskpbx_calls_active); [ "$a" -gt "$peak_calls" ] && peak_calls=$a
    r=$(rss_kb "$PBX_PID"); [ "$r" -gt "$peak_rss" ] && peak_rss=$r
    tt=$(cpu_ticks "$TRUNK_PID"); [ "$tt" -gt "$trunk_ticks" ] && trunk_ticks=$tt
    sleep 0.5
  done
  wait_trunk 5
  c1=$(cpu_ticks "$PBX_PID") h1=$(host_ticks) g1=$(pg_ticks) p1=$(cpu_ticks "$PHONE_PID") t1=$(now_ns)
  d1=$(cdrs_done) w1=$(cdr_stats)
  csv=$OUT/trunk-$tag.csv
  ok=$(stat_field "$csv" 'SuccessfulCall(C)')
  CALLS_OK=$((CALLS_OK + ok))
  failed=$((calls - ok)) # a call not completed counts as failed
  fail_pct=$(awk -v f="$failed" -v n="$calls" 'BEGIN { printf "%.3f", 100 * f / n }')
  achieved=$(created_rate "$csv" "$calls")
  setup=$(stat_ms "$(stat_field "$csv" 'ResponseTimesetup(C)')")
  retrans=$(stat_field "$csv" 'Retransmissions(C)')
  cpu=$(pct_cpu "$c0" "$c1" "$t0" "$t1")
  sipp_cpu=$(pct_cpu "$p0" "$((p1 + trunk_ticks))" "$t0" "$t1")
  host=$(host_pct "$h0" "$h1")
  pg_cpu=$(pct_cpu "$g0" "$g1" "$t0" "$t1")
  lag=$(cdr_backlog) rlag=$(rec_backlog)
  problems=$(log_problems "$l0")
  # The step is over: its CDRs and recordings have CDR_DRAIN_S to catch up.
  drain=$(wait_caught_up "$CDR_DRAIN_S")
  t2=$(now_ns) d2=$(cdrs_done) v2=$(metric maskpbx_cdr_events_applied_total) w2=$(cdr_stats)
  left=$(cdr_backlog) rleft=$(rec_backlog)
  if [ "$left" -gt 0 ] || [ "$rleft" -gt 0 ]; then drain=">$CDR_DRAIN_S"; fi
  if [ -n "$PROF_PID" ]; then
    wait "$PROF_PID" 2>/dev/null || true
    PROF_PID=
  fi
  # The CDR writer's pace: finished CDRs per second while the calls came,
  # call events per second over the step and its catch-up, and (only a
  # backlog shows what it can do) finished CDRs per second while it caught
  # up alone. CDRs whose events have not reached the writer (none waiting
  # for it: -1 = a PBX without its metrics) are not the writer's lag.
  cdr_rate=$(per_s $((d1 - d0)) "$t0" "$t1")
  events_rate=$(per_s $((v2 - v0)) "$t0" "$t2")
  waiting1=${w1%% *} waiting2=${w2%% *}
  pace=-
  if [ "$lag" -gt 200 ] && { [ "$waiting1" -gt 200 ] || [ "$waiting1" = -1 ]; }; then
    pace=$(per_s $((d2 - d1)) "$t1" "$t2")
    CDR_PACE+=("$pace")
    if [ "$pace" -gt "$CDR_MAX_PACE" ]; then CDR_MAX_PACE=$pace; fi
  fi
  if [ "$left" = 0 ] && [ "$rate" -gt "$CDR_OK_RATE" ]; then CDR_OK_RATE=$rate; fi
  if [ "$left" -gt 0 ] && [ "$waiting2" != 0 ] && [ -z "$CDR_FAILED_AT" ]; then CDR_FAILED_AT=$rate; fi
  why=
  if [ $((failed * 1000)) -ge "$calls" ]; then why+="|calls failed"; fi
  if awk -v a="$achieved" -v r="$rate" 'BEGIN { exit !(a < 0.95 * r) }'; then why+="|rate not offered"; fi
  if [ "$left" -gt 0 ]; then why+="|CDRs behind"; fi
  if [ "$rleft" -gt 0 ]; then why+="|recordings behind"; fi
  if ! kill -0 "$PBX_PID" 2>/dev/null; then why+="|maskpbx died"; fi
  why=${why#|}
  verdict=pass
  if [ -n "$why" ]; then verdict="FAIL (${why//|/, })"; fi
  STEP_WHY=$why STEP_HOST=$host STEP_PCT=$fail_pct STEP_SETUP=$setup STEP_LEFT=$left STEP_RLEFT=$rleft STEP_PACE=$pace
  STEP_WAITING=$waiting2 # call events waiting for the CDR writer at the check
  CPS_ROWS+=("$(printf '%-6s %-8s %-6s %-6s %-6s %-7s %-6s %-7s %-5s %-6s %-5s %-5s %-4s %-5s %-6s %-7s %-7s %-7s %-7s %-7s %s' \
    "$3" "$achieved" "$calls" "$ok" "$failed" "$fail_pct" "$setup" "$retrans" "$peak_calls" "$((peak_rss / 1024))" \
    "$cpu" "$sipp_cpu" "$pg_cpu" "$host" "$cdr_rate" "$pace" "$lag" "$([ "$RECORDING" = yes ] && echo "$rlag" || echo -)" \
    "$drain" "$problems" "$verdict")")
  log "  -> ok $ok/$calls, failed $failed ($fail_pct%), $achieved calls/s, setup $setup ms, PBX CPU $cpu%, host $host%;" \
    "CDR writer $cdr_rate calls/s ($events_rate events/s; $(batch_note "$w0" "$w2")), $lag CDRs and $rlag recordings behind at the end, caught up in ${drain}s: $verdict"
}

for rate in $CPS_STEPS; do
  cps_step "$rate" "cps-$rate" "$rate"
  if [ "$verdict" != pass ]; then
    # One more try: a step can fail because of other work on the machine.
    log "  running the step once more"
    cps_step "$rate" "cps-$rate-again" "$rate*"
  fi
  if [ "$verdict" != pass ]; then
    first_fail=$rate
    FAIL_WHY=$STEP_WHY FAIL_HOST=$STEP_HOST FAIL_PCT=$STEP_PCT FAIL_SETUP=$STEP_SETUP
    FAIL_LEFT=$STEP_LEFT FAIL_RLEFT=$STEP_RLEFT FAIL_PACE=$STEP_PACE FAIL_WAITING=$STEP_WAITING
    break
  fi
  best_rate=$rate
  [ "$setup" -lt 200 ] && [ "$best_fast" = "$prev_rate" ] && best_fast=$rate
  prev_rate=$rate
done
# Overload: one step at twice the highest passing rate. The node must answer
# what it can't take with 503 at once (counted as shed in /metrics and as
# "overload" CDRs), not with 500s or time-outs, and still connect >= 90% of
# the highest passing rate.
OVERLOAD_LINE="not run (BENCH_OVERLOAD=0, or no step passed)"
overload_verdict="not shown"
if [ "${BENCH_OVERLOAD:-1}" = 1 ] && [ "$best_rate" -gt 0 ]; then
  orate=$((best_rate * 2))
  saved=("$CDR_OK_RATE" "$CDR_FAILED_AT" "$CDR_MAX_PACE" "${#CDR_PACE[@]}")
  s0=$(metric maskpbx_calls_shed_total)
  o0=$(sql "SELECT count(*) FROM cdrs WHERE disposition = 'overload'")
  f0=$(sql "SELECT count(*) FROM cdrs WHERE disposition = 'failed'")
  cps_step "$orate" "overload-$orate" "${orate}!"
  CDR_OK_RATE=${saved[0]} CDR_FAILED_AT=${saved[1]} CDR_MAX_PACE=${saved[2]}
  CDR_PACE=("${CDR_PACE[@]:0:${saved[3]}}")
  shed=$(($(metric maskpbx_calls_shed_total) - s0))
  shed_cdrs=$(($(sql "SELECT count(*) FROM cdrs WHERE disposition = 'overload'") - o0))
  failed_cdrs=$(($(sql "SELECT count(*) FROM cdrs WHERE disposition = 'failed'") - f0))
  other=$((failed > shed ? failed - shed : 0))
  goodput=$(awk -v ok="$ok" -v s="$CPS_SECONDS" 'BEGIN { printf "%.0f", ok / s }')
  overload_verdict="NOT met"
  if [ $((goodput * 10)) -ge $((best_rate * 9)) ] && [ $((other * 1000)) -lt $((orate * CPS_SECONDS)) ] && [ "$shed" -gt 0 ]; then
    overload_verdict=met
  fi
  OVERLOAD_LINE="at $orate calls/s (2x $best_rate): $ok connected ($goodput calls/s, $((goodput * 100 / best_rate))% of the highest passing rate), $shed answered 503 at once ($shed_cdrs overload CDRs), $other other failures (time-outs or errors; $failed_cdrs failed CDRs), mean setup $setup ms"
  log "  overload: $OVERLOAD_LINE"
fi

# Every call should end by itself; one still up after this is stuck.
wait_idle 20
left_calls=$(metric maskpbx_calls_active)
stop_pid "$PHONE_PID" 3
PHONE_PID=

# binding_limit: what stopped the stepping, in words.
binding_limit() {
  if [ -z "$first_fail" ]; then
    echo "none found: every step passed, up to $best_rate calls/s (add steps with BENCH_CPS_STEPS)"
    return
  fi
  local parts=() reasons w t limit
  IFS='|' read -r -a reasons <<<"$FAIL_WHY"
  for w in "${reasons[@]}"; do
    case $w in
    "calls failed") parts+=("calls/SIP: $FAIL_PCT% of the calls failed, mean setup $FAIL_SETUP ms") ;;
    "rate not offered") parts+=("SIPp could not offer the rate") ;;
    "CDRs behind")
      # Events waiting in JetStream mean the writer is behind; none mean
      # the calls' events had not been published yet.
      t="CDRs: $FAIL_LEFT answered calls without a finished CDR ${CDR_DRAIN_S} s after the step (writer pace while catching up: $FAIL_PACE calls/s"
      case $FAIL_WAITING in
      -1) t+=")" ;;
      0) t+="; no call event waiting for the writer: the missing events had not reached it)" ;;
      *) t+="; $FAIL_WAITING call events waiting for the writer)" ;;
      esac
      parts+=("$t")
      ;;
    "recordings behind") parts+=("recordings: $FAIL_RLEFT answered calls without a complete recording ${CDR_DRAIN_S} s after the step") ;;
    *) parts+=("$w") ;;
    esac
  done
  # The first check that failed names the limit, unless the machine had no
  # CPU left: then every check suffers from that.
  limit=${reasons[0]}
  case $limit in
  "calls failed") limit=calls/SIP ;;
  "CDRs behind") limit=CDRs ;;
  "recordings behind") limit=recordings ;;
  "rate not offered") limit=CPU ;;
  esac
  if [ "$FAIL_HOST" -ge $((NCPU * 90)) ]; then limit=CPU; fi
  printf '%s at %s calls/s (machine %s%% busy of %s%%): %s\n' "$limit" "$first_fail" "$FAIL_HOST" "$((NCPU * 100))" \
    "$(IFS=';'; echo "${parts[*]}" | sed 's/;/; /g')"
}

# cdr_target: met when the CDRs kept up at a step of 1500 calls/s or more, or
# the writer caught up that fast alone; NOT met when the writer itself fell
# behind (events waiting for it) at a lower step; else not shown.
cdr_target() {
  if [ "$CDR_OK_RATE" -ge 1500 ] || [ "$CDR_MAX_PACE" -ge 1500 ]; then
    echo met
  elif [ -n "$CDR_FAILED_AT" ]; then
    echo "NOT met"
  else
    echo "not shown"
  fi
}

# --- 3. soak: a steady rate for a long time -----------------------------------------------
SOAK_LINES=() soak_verdict="not run (BENCH_SOAK_SECONDS)"
if [ "$SOAK_S" -gt 0 ]; then
  start_phone no soak
  wait_idle 20
  wait_caught_up "$SETTLE_S" >/dev/null
  calls=$((SOAK_CPS * SOAK_S))
  # RSS "after the first minute" is the reference; a short soak takes its middle.
  ref_at=$((SOAK_S >= 120 ? 60 : (SOAK_S / 2 / SOAK_SAMPLE_S) * SOAK_SAMPLE_S))
  [ "$ref_at" -ge "$SOAK_SAMPLE_S" ] || ref_at=$SOAK_SAMPLE_S
  log "soak: $SOAK_CPS calls/s for $SOAK_S s ($calls calls of $HOLD_MS ms, recording $RECORDING), PBX RSS every $SOAK_SAMPLE_S s"
  l0=$(log_lines) ok0=$CALLS_OK
  csv=$OUT/trunk-soak.csv
  echo "t_s;rss_kb;calls_up;go_heap_inuse_bytes;goroutines;cdr_backlog;rec_backlog;writer_backlog_events;writer_batches;writer_batched_events;writer_batch_ms" >"$OUT/soak-samples.csv"
  w0=$(cdr_stats)
  c0=$(cpu_ticks "$PBX_PID") h0=$(host_ticks) t0=$(now_ns)
  start_trunk soak no "$SOAK_CPS" "$calls" "$((SOAK_CPS * 10))" "$HOLD_MS" "$((SOAK_S + HOLD_MS / 1000 + 60))"
  next=$SOAK_SAMPLE_S ref_rss=0 end_rss=0 end_t=0 min_rss=0 max_rss=0 max_lag=0 max_rlag=0 samples=0
  while kill -0 "$TRUNK_PID" 2>/dev/null; do
    el=$((($(now_ns) - t0) / 1000000000))
    if [ "$el" -ge "$next" ] && [ "$el" -le "$SOAK_S" ]; then
      r=$(rss_kb "$PBX_PID")
      # Backlogs against the calls SIPp completed so far.
      done_now=$((ok0 + $(stat_field "$csv" 'SuccessfulCall(C)')))
      d=$(cdrs_done) rlag=0
      lag=$((done_now > d ? done_now - d : 0))
      if [ "$RECORDING" = yes ]; then d=$(recs_done); rlag=$((done_now > d ? done_now - d : 0)); fi
      echo "$el;$r;$(metric maskpbx_calls_active);$(metric go_memstats_heap_inuse_bytes);$(metric go_goroutines);$lag;$rlag;$(cdr_stats | tr ' ' ';')" >>"$OUT/soak-samples.csv"
      samples=$((samples + 1)) end_rss=$r end_t=$el
      if [ "$ref_rss" = 0 ] && [ "$el" -ge "$ref_at" ]; then
        ref_rss=$r ref_at=$el
        if [ "$PROFILE" = 1 ]; then curl -sf --max-time 20 -o "$OUT/heap-soak-ref.pprof" "http://$PPROF/debug/pprof/heap" || true; fi
      fi
      if [ "$min_rss" = 0 ] || [ "$r" -lt "$min_rss" ]; then min_rss=$r; fi
      if [ "$r" -gt "$max_rss" ]; then max_rss=$r; fi
      if [ "$lag" -gt "$max_lag" ]; then max_lag=$lag; fi
      if [ "$rlag" -gt "$max_rlag" ]; then max_rlag=$rlag; fi
      next=$((next + SOAK_SAMPLE_S))
      if [ "$PROFILE" = 1 ] && [ "$next" -gt "$SOAK_S" ]; then
        curl -sf --max-time 20 -o "$OUT/heap-soak-end.pprof" "http://$PPROF/debug/pprof/heap" || true
      fi
    fi
    sleep 1
  done
  wait_trunk 5
  c1=$(cpu_ticks "$PBX_PID") h1=$(host_ticks) t1=$(now_ns)
  ok=$(stat_field "$csv" 'SuccessfulCall(C)')
  CALLS_OK=$((CALLS_OK + ok))
  failed=$((calls - ok))
  fail_pct=$(awk -v f="$failed" -v n="$calls" 'BEGIN { printf "%.3f", 100 * f / n }')
  achieved=$(created_rate "$csv" "$calls")
  setup=$(stat_ms "$(stat_field "$csv" 'ResponseTimesetup(C)')")
  drain=$(wait_caught_up "$CDR_DRAIN_S")
  left=$(cdr_backlog) rleft=$(rec_backlog)
  after_rss=$(rss_kb "$PBX_PID")
  growth=$(awk -v a="$ref_rss" -v b="$end_rss" 'BEGIN { printf "%+.1f", (a > 0 ? 100 * (b - a) / a : 0) }')
  why=
  if [ "$ref_rss" = 0 ] || awk -v a="$ref_rss" -v b="$end_rss" 'BEGIN { exit !(b > 1.2 * a) }'; then why+="|RSS grew more than 20%"; fi
  if [ "$left" -gt 0 ]; then why+="|CDRs behind"; fi
  if [ "$rleft" -gt 0 ]; then why+="|recordings behind"; fi
  if [ $((failed * 1000)) -ge "$calls" ]; then why+="|calls failed"; fi
  if awk -v a="$achieved" -v r="$SOAK_CPS" 'BEGIN { exit !(a < 0.95 * r) }'; then why+="|rate not offered"; fi
  if ! kill -0 "$PBX_PID" 2>/dev/null; then why+="|maskpbx died"; fi
  why=${why#|}
  soak_verdict=pass
  if [ -n "$why" ]; then soak_verdict="FAIL (${why//|/, })"; fi
  SOAK_LINES+=("$SOAK_CPS calls/s for $SOAK_S s ($achieved achieved), $HOLD_MS ms calls, recording $RECORDING: $ok of $calls ok, $failed failed ($fail_pct%), mean setup $setup ms")
  SOAK_LINES+=("PBX RSS over $samples samples: $((ref_rss / 1024)) MB at ${ref_at} s (reference), $((end_rss / 1024)) MB at ${end_t} s ($growth%); min $((min_rss / 1024)) MB, max $((max_rss / 1024)) MB; $((after_rss / 1024)) MB once the calls ended")
  SOAK_LINES+=("CDRs behind: at most $max_lag during the soak, $left ${CDR_DRAIN_S} s after it (CDR writer: $(batch_note "$w0" "$(cdr_stats)"))$(if_recording "; recordings behind: at most $max_rlag, $rleft ${CDR_DRAIN_S} s after it")")
  SOAK_LINES+=("PBX CPU $(pct_cpu "$c0" "$c1" "$t0" "$t1")%, machine $(host_pct "$h0" "$h1")% busy; $(log_problems "$l0") warnings/errors in the PBX log; samples: soak-samples.csv")
  log "  -> soak: RSS $((ref_rss / 1024)) MB at ${ref_at} s, $((end_rss / 1024)) MB at ${end_t} s ($growth%), CDRs behind at the end $left: $soak_verdict"
  stop_pid "$PHONE_PID" 3
  PHONE_PID=
fi
final_backlog=$(cdr_backlog) final_rec_backlog=$(rec_backlog)
# What the CDRs say themselves: a call whose end never arrived, and calls
# that ended otherwise than answered (SIPp may count one of those as a
# success when the PBX did not).
final_unended=$(sql "SELECT count(*) FROM cdrs WHERE ended_at IS NULL")
final_other=$(sql "SELECT count(*) FROM cdrs WHERE ended_at IS NOT NULL AND disposition IS DISTINCT FROM 'answered'")

# --- the table --------------------------------------------------------------------------------
RESULTS=$OUT/bench-results.txt
{
  echo "$HEADER"
  echo
  echo "1) Concurrent calls, PCMU 20 ms both ways through the relay (CPU/RSS over ${RTP_CPU_S} s; loss and delay from a ${RTP_CAP_S} s loopback capture)"
  printf '%-6s %-5s %-5s %-6s %-8s %-8s %-5s %-8s %-7s %-7s %-7s %-5s %-5s %-4s %-5s %-5s %-5s %-7s %-7s %-6s %s\n' \
    calls up ok failed streams packets lost loss p50-ms p99-ms max-ms pbx% sipp% pg% host% idle peak KB/call stackKB gorout log-w/e
  if [ ${#RTP_ROWS[@]} -gt 0 ]; then printf '%s\n' "${RTP_ROWS[@]}"; else echo "(not run: BENCH_RTP_CALLS is empty)"; fi
  k=$((${#MEM_UP[@]} - 1))
  if [ "$k" -ge 1 ] && [ "${MEM_UP[k]}" -gt "${MEM_UP[k - 1]}" ]; then
    awk -v n0="${MEM_UP[k - 1]}" -v n1="${MEM_UP[k]}" -v r0="${MEM_RSS[k - 1]}" -v r1="${MEM_RSS[k]}" \
      -v h0="${MEM_HEAP[k - 1]}" -v h1="${MEM_HEAP[k]}" -v s0="${MEM_STACK[k - 1]}" -v s1="${MEM_STACK[k]}" \
      'BEGIN { n = n1 - n0; printf "  from %d to %d calls, each added call took %.0f KB of RSS, %.0f KB of Go heap in use, %.0f KB of goroutine stacks\n",
        n0, n1, (r1 - r0) / n, (h1 - h0) / 1024 / n, (s1 - s0) / 1024 / n }'
  fi
  if [ ${#RTP_NOTES[@]} -gt 0 ]; then printf '  %s\n' "${RTP_NOTES[@]}"; fi
  echo
  echo "2) Signalling only: INVITE/200/ACK, $HOLD_MS ms, BYE; $CPS_SECONDS s of calls per step; pass = < 0.1% failed at >= 95% of the rate,"
  echo "   every successful call's finished CDR$(if_recording " and complete recording") within $CDR_DRAIN_S s of the step's end"
  printf '%-6s %-8s %-6s %-6s %-6s %-7s %-6s %-7s %-5s %-6s %-5s %-5s %-4s %-5s %-6s %-7s %-7s %-7s %-7s %-7s %s\n' \
    cps achieved calls ok failed fail% setup retrans peak rss-MB pbx% sipp% pg% host% cdr/s drain/s cdr-lag rec-lag catchup log-w/e result
  if [ ${#CPS_ROWS[@]} -gt 0 ]; then printf '%s\n' "${CPS_ROWS[@]}"; fi
  if [ -n "$first_fail" ]; then
    echo "highest passing rate: $best_rate calls/s (first failing step: $first_fail calls/s)"
  else
    echo "highest passing rate: $best_rate calls/s (every step passed; add steps with BENCH_CPS_STEPS)"
  fi
  echo "binding limit: $(binding_limit)"
  echo "highest rate passing with a mean setup time under 200 ms at every step up to it: $best_fast calls/s"
  echo "overload (row marked !): $OVERLOAD_LINE"
  if [ ${#CDR_PACE[@]} -gt 0 ]; then
    echo "CDR writer pace while catching up alone (steps that left it > 200 CDRs and events behind): $(printf '%s ' "${CDR_PACE[@]}")calls/s"
  fi
  if [ "$PROFILE" = 1 ]; then
    echo "profiles: cpu-<step>.pprof (5 s, mid-step) and heap-<step>.pprof in $OUT (go tool pprof -top bin/maskpbx $OUT/cpu-cps-400.pprof)"
  fi
  if [ "$SOAK_S" -gt 0 ]; then
    echo
    echo "3) Soak: a steady rate for $SOAK_S s; pass = PBX RSS at the end within 20% of RSS after the first minute, no CDR$(if_recording " or recording") behind ${CDR_DRAIN_S} s after it, < 0.1% failed"
    printf '  %s\n' "${SOAK_LINES[@]}"
    echo "  result: $soak_verdict"
  fi
  echo "at the end: $left_calls calls still up in the PBX, $final_backlog answered calls without a finished CDR$(if_recording ", $final_rec_backlog without a complete recording");"
  echo "  in cdrs: $final_unended calls without an end, $final_other ended otherwise than answered"
  echo
  echo "targets:"
  kb_target=$([ "$RECORDING" = yes ] && echo 100 || echo 60)
  echo "  (issue 9 targets; calls $([ "$RECORDING" = yes ] && echo recorded || echo "not recorded") in this run)"
  echo "  800 calls/s, < 0.1% failed, setup < 200 ms: $([ "$best_fast" -ge 800 ] && echo met || echo 'NOT met') (highest such step: $best_fast calls/s; highest passing: $best_rate calls/s)"
  echo "  1000 relayed calls with < 0.1% loss: $([ "$best_relayed" -ge 1000 ] && echo met || echo 'NOT met') (largest clean run: $best_relayed calls)"
  echo "  <= $kb_target KB of RSS per call:         $(awk -v k="$largest_kb" -v t="$kb_target" 'BEGIN { print (k != "?" && k + 0 <= t) ? "met" : "NOT met" }') ($largest_kb KB of RSS per call at $largest_n calls)"
  echo "  relay p99 added delay <= 5 ms:       $(awk -v d="$largest_p99" 'BEGIN { print (d != "?" && d + 0 <= 5) ? "met" : "NOT met" }') ($largest_p99 ms at $largest_n calls; SIPp sends each 20 ms as one burst, see the capture analysis for the first-in-burst delay)"
  echo "  CDR writer >= 1500 calls/s:          $(cdr_target) (CDRs kept up at every step to $CDR_OK_RATE calls/s; fastest catch-up alone: $CDR_MAX_PACE calls/s)"
  echo "  soak: RSS within 20%, no backlog:    $soak_verdict"
  echo "  2x overload: 503s, >= 90% goodput:   $overload_verdict"
  echo
  echo "columns: pbx%/sipp%/pg%/host% = CPU of maskpbx / both SIPp / Postgres / the whole machine, in % of one core (machine: $((NCPU * 100))%)."
  echo "  packets = RTP packets into relay ports during the capture; lost = of those, never sent on by the relay; p50/p99/max ="
  echo "  time from a packet reaching a relay port to the relay sending it on. idle/peak = PBX RSS in MB, fresh and with the calls"
  echo "  up; KB/call = (peak - idle) / calls up (at 100 calls mostly one-off growth); stackKB = goroutine stacks per call;"
  echo "  gorout = goroutines. setup = mean INVITE -> 200 at the trunk in ms; peak = most calls in the PBX; cdr/s = CDRs"
  echo "  finished per second during the step (the CDR writer's pace); drain/s = its pace catching up alone after a step that"
  echo "  left it > 200 CDRs and call events behind; cdr-lag / rec-lag = successful calls without a finished CDR / a complete recording when the step"
  echo "  ended; catchup = seconds until none was behind (a step fails at > $CDR_DRAIN_S)."
  echo "  'rate not offered': SIPp made the calls slower than asked (the machine was saturated), so the rate was not shown."
  echo "  A failing step is run once more (marked *); the second result decides."
  echo "  log-w/e = warnings and errors in the PBX log. Logs, SIPp statistics, capture analyses: $OUT"
} | tee "$RESULTS"
