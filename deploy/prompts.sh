#!/usr/bin/env bash
# Generates maskpbx's prompt clips with Debian's espeak-ng and sox:
# <out>/<lang>/<name>.wav, 8 kHz mono 16-bit PCM, silence trimmed at both
# ends, peaks at -6 dBFS, no dither (the same text gives the same file).
# The default <out> is pbx/ivr/prompts, which the binary embeds; point it
# at another directory to make a --prompts-dir to edit. The wording names
# nobody: the whisper is "Client code 1 2 3 4 5 6 7 8. Press 1 to accept."
# Usage: deploy/prompts.sh [out-dir]
set -euo pipefail
out=${1:-$(cd "$(dirname "$0")/.." && pwd)/pbx/ivr/prompts}
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || { echo "prompts: $tool missing (deploy/deps.sh installs it)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# say LANG VOICE NAME TEXT
say() {
  mkdir -p "$out/$1"
  espeak-ng -v "$2" -s 150 -w "$tmp/raw.wav" "$4"
  sox -D "$tmp/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$out/$1/$3.wav" \
    silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse gain -n -6
}

en=(zero one two three four five six seven eight nine)
ru=(ноль один два три четыре пять шесть семь восемь девять)
for d in 0 1 2 3 4 5 6 7 8 9; do
  say en en "$d" "${en[$d]}"
  say ru ru "$d" "${ru[$d]}"
done

say en en client_code "Client code"
say en en press_1 "Press 1 to accept."
say en en enter_code "Enter the client code, then hash."
say en en wrong_code "Wrong code."
say en en goodbye "Goodbye."
say en en not_in_service "This number is no longer in service."

say ru ru client_code "Код клиента"
say ru ru press_1 "Нажмите 1, чтобы принять."
say ru ru enter_code "Введите код клиента и решётку."
say ru ru wrong_code "Неверный код."
say ru ru goodbye "До свидания."
say ru ru not_in_service "Этот номер больше не обслуживается."
echo "prompts: written to $out" >&2
