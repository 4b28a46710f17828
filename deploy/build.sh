#!/usr/bin/env bash
# Builds bin/maskpbx for `make run`, showing progress: the first build on a
# fresh machine fetches modules and compiles a few hundred packages, which
# takes minutes and would otherwise print nothing.
#
#   deploy/build.sh [OUTPUT]
set -euo pipefail
out=${1:-bin/maskpbx}
go=${GO:-go}

echo "make run: fetching Go modules (quiet while it downloads; only the first time)..." >&2
"$go" mod download
total=$("$go" list -deps ./cmd/maskpbx | wc -l)
echo "make run: building $out ($total packages, cached ones are skipped)..." >&2

# progress reads go build -v: a line that is a package path is one package
# compiled (a counter on a terminal, every 25th otherwise); anything else is
# a compiler message and is shown as it is.
progress() {
  local n=0 line
  while IFS= read -r line; do
    if [[ $line =~ ^[A-Za-z0-9._~/-]+$ ]]; then
      n=$((n + 1))
      if [ -t 2 ]; then
        printf '\r\033[K  compiled %d/%d  %s' "$n" "$total" "$line" >&2
      elif ((n % 25 == 0)); then
        echo "  compiled $n/$total" >&2
      fi
    else
      if [ -t 2 ]; then printf '\r\033[K' >&2; fi
      echo "$line" >&2
    fi
  done
  if [ -t 2 ]; then printf '\r\033[K' >&2; fi
  echo "  compiled $n packages" >&2
}

if ! "$go" build -v -o "$out" ./cmd/maskpbx 2>&1 | progress; then
  echo "make run: building $out failed" >&2
  exit 1
fi
