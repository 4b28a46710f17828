#!/usr/bin/env bash
# Installs the Debian packages maskpbx's tests and tools need, if missing:
# SIPp (sip-tester), sox, espeak-ng, curl, jq, PostgreSQL's server, Chromium, tcpdump
# and the softphones the phone tests drive (baresip, linphonec).
set -euo pipefail
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v sox >/dev/null 2>&1 || need+=(sox)
# The prompt clips (deploy/prompts.sh speaks them, sox resamples them).
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
# A real softphone, driven headless (ctrl_tcp, audio from files, srtp, TLS).
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
# The capture that shows a TLS+SRTP call carries nothing in clear.
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
# The README's commands (deploy/readme-check.sh runs them) use curl and jq.
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v jq >/dev/null 2>&1 || need+=(jq)
# The web console's browser tests drive Debian's Chromium (headless).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# ...and a font, so that its screenshots show text and not empty boxes.
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
# A real softphone as the manager's phone (linphonec, headless).
command -v linphonec >/dev/null 2>&1 || need+=(linphone-cli)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
echo "deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
