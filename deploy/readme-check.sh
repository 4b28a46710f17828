#!/usr/bin/env bash
# Runs the README's commands against a `make run` of its own (make test
# calls it; so can you, with no make run up):
#
#   1. `make run` with a throwaway Postgres cluster and data directory, on the
#      demo's addresses; its banner must appear (only once /healthz answers),
#      its log must hold no colour codes, and every SIPp command it prints
#      must be one of the README's.
#   2. Every README code block whose info string is `sh check` runs, in
#      order, in one bash (variables carry from block to block) with -euo
#      pipefail; a `sh check-bg` block (one you would run in a terminal of
#      its own: a phone or a trunk waiting for a call) starts in the
#      background, and must have succeeded once the next `sh check` block
#      is done. curl fails on an HTTP status >= 400 (--fail-with-body).
#
# On failure it names the block that failed, shows the end of its output
# and the end of make run's log.
set -euo pipefail
cd "$(dirname "$0")/.."
readme=${README:-README.md}

for tool in sipp curl jq; do
  command -v "$tool" >/dev/null || { echo "readme-check: $tool is missing (make deps installs it)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/maskpbx-readme.XXXXXX)
chmod 755 "$work"
run_pid=
cleanup() {
  status=$?
  if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
    # make run's process group: make, run.sh and serve (TERM: a graceful stop).
    kill -TERM -- "-$run_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 -- "-$run_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$run_pid" 2>/dev/null || true
  fi
  make --no-print-directory pg-stop VAR="$work" >/dev/null 2>&1 || true
  if [ "$status" != 0 ]; then
    echo "readme-check: FAILED; make run's log ends:" >&2
    tail -n 40 "$work/run.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# --- 1. make run --------------------------------------------------------
pg_port=$((41000 + RANDOM % 2000))
while (exec 3<>"/dev/tcp/127.0.0.1/$pg_port") 2>/dev/null; do pg_port=$((pg_port + 1)); done
echo "readme-check: make run (Postgres on 127.0.0.1:$pg_port, data in $work)" >&2
set -m # make run gets a process group of its own, stopped as one
MASKPBX_DATA_DIR=$work/data MASKPBX_SIP_LISTEN=127.0.0.1:5060 MASKPBX_NATS_LISTEN=127.0.0.1:0 \
  make --no-print-directory run VAR="$work" PG_PORT="$pg_port" >"$work/banner.txt" 2>"$work/run.log" </dev/null &
run_pid=$!
set +m
deadline=$((SECONDS + 180))
until grep -q "maskpbx demo is up" "$work/banner.txt"; do
  kill -0 "$run_pid" 2>/dev/null || { echo "readme-check: make run exited before its banner" >&2; exit 1; }
  ((SECONDS < deadline)) || { echo "readme-check: no banner from make run in 180 s" >&2; exit 1; }
  sleep 0.2
done
curl -fsS -o /dev/null http://127.0.0.1:8080/healthz ||
  { echo "readme-check: make run printed its banner before /healthz answered" >&2; exit 1; }
if grep -q $'\x1b\[' "$work/run.log"; then
  echo "readme-check: make run's log holds ANSI escape codes" >&2
  exit 1
fi
grep -q "demo-anna-token" "$work/banner.txt" ||
  { echo "readme-check: make run's banner shows no manager token" >&2; exit 1; }

# joined prints each command of its input with continuation lines joined
# and runs of blanks squeezed, so the banner and the README compare.
joined() { sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | tr -s ' \t' ' ' | sed 's/^ //'; }
readme_cmds=$(awk '/^```/ { inblock = !inblock; next } inblock' "$readme" | joined)
while IFS= read -r cmd; do
  grep -qxF -- "$cmd" <<<"$readme_cmds" ||
    { echo "readme-check: make run prints a command the README lacks: $cmd" >&2; exit 1; }
done < <(joined <"$work/banner.txt" | grep '^sipp ')

# --- 2. the README's blocks ---------------------------------------------
# The blocks become one script; between them it starts background blocks,
# waits until they listen (their -i/-p address) and waits for them.
script=$work/readme.sh
cat >"$script" <<'PRELUDE'
set -euo pipefail
# Each block writes to a log of its own; the script's own output (fd 3)
# names the blocks as they run and, if one fails, shows its log.
exec 3>&1
block=
blocklog=/dev/null
start_block() {
  block=$1 blocklog=$2
  echo "readme-check: $block" >&3
  exec >"$blocklog" 2>&1
}
trap 'status=$?; if [ "$status" != 0 ]; then echo "readme-check: FAILED: $block (exit $status); its output ends:" >&3; tail -n 30 "$blocklog" >&3; fi' EXIT
curl() { command curl --fail-with-body "$@"; }
# bound IP PORT waits until a UDP socket is bound there (/proc/net/udp).
bound() {
  local o hex
  IFS=. read -ra o <<<"$1"
  hex=$(printf '%02X%02X%02X%02X:%04X' "${o[3]}" "${o[2]}" "${o[1]}" "${o[0]}" "$2")
  for _ in $(seq 100); do
    grep -q " $hex " /proc/net/udp && return 0
    sleep 0.1
  done
  echo "nothing listens on $1:$2" >&2
  return 1
}
# waitbg waits for the background blocks started so far; each must succeed.
bg_pids=() bg_blocks=() bg_logs=()
started_bg() { bg_pids+=("$1") bg_blocks+=("$block") bg_logs+=("$blocklog"); }
waitbg() {
  local i
  for i in "${!bg_pids[@]}"; do
    wait "${bg_pids[i]}" || { block=${bg_blocks[i]} blocklog=${bg_logs[i]}; return 1; }
  done
  bg_pids=() bg_blocks=() bg_logs=()
}
PRELUDE
awk -v bgdir="$work" '
  /^```sh check(-bg)?$/ { kind = $2; start = NR; body = ""; next }
  /^```/ && kind != "" {
    n++
    printf "start_block \"%s:%d (%s)\" %s/block%d.log\n", FILENAME, start, kind, bgdir, n
    if (kind == "check-bg") {
      printf "{\n%s} </dev/null &\nstarted_bg $!\n", body
      if (match(body, /-i [0-9.]+ -p [0-9]+/)) {
        split(substr(body, RSTART, RLENGTH), a, " ")
        printf "bound %s %s\n", a[2], a[4]
      }
    } else {
      printf "{\n%s} </dev/null\nwaitbg\n", body
    }
    kind = ""
    next
  }
  kind != "" { body = body $0 "\n" }
  END { print "waitbg" }
' "$readme" >>"$script"
blocks=$(grep -c '^start_block ' "$script")
echo "readme-check: running $blocks blocks of $readme" >&2
# The script runs in a process group of its own: whatever it leaves
# running (a phone or trunk still waiting for a call when a block failed) is
# stopped with it.
set -m
timeout 150 bash "$script" >"$work/readme.out" 2>&1 </dev/null &
script_pid=$!
set +m
script_status=0
wait "$script_pid" || script_status=$?
kill -TERM -- "-$script_pid" 2>/dev/null || true
cat "$work/readme.out" >&2
[ "$script_status" = 0 ] || exit 1
echo "readme-check: ok, $blocks README blocks ran" >&2
