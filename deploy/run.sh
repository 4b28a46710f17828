#!/usr/bin/env bash
# Starts maskpbx serve for `make run`: local Postgres (already started by the
# Makefile), embedded NATS, demo data, console logs. Prints how to use the
# demo once the server answers /healthz. Ctrl-C stops it.
set -euo pipefail
bin=${1:-bin/maskpbx}
pg_port=${2:-55432}

export MASKPBX_DATABASE_URL=${MASKPBX_DATABASE_URL:-postgres://maskpbx@127.0.0.1:$pg_port/postgres?sslmode=disable}
export MASKPBX_DATA_DIR=${MASKPBX_DATA_DIR:-./var}
export MASKPBX_SIP_DOMAIN=${MASKPBX_SIP_DOMAIN:-maskpbx.local}
export MASKPBX_SIP_LISTEN=${MASKPBX_SIP_LISTEN:-0.0.0.0:5060}
export MASKPBX_HTTP_LISTEN=${MASKPBX_HTTP_LISTEN:-127.0.0.1:8080}
export MASKPBX_COMPANY_NUMBER=${MASKPBX_COMPANY_NUMBER:-+74950000000}
export MASKPBX_REGION=${MASKPBX_REGION:-RU}
export MASKPBX_ADMIN_TOKEN=${MASKPBX_ADMIN_TOKEN:-demo-admin-token}
export MASKPBX_LOG_FORMAT=${MASKPBX_LOG_FORMAT:-console}
export MASKPBX_TRUNK=${MASKPBX_TRUNK:-127.0.0.1:5080}
export MASKPBX_TRUNK_ALLOW=${MASKPBX_TRUNK_ALLOW:-127.0.0.1}
export MASKPBX_RTP_PORTS=${MASKPBX_RTP_PORTS:-20000-20999}

sip_port=${MASKPBX_SIP_LISTEN##*:}
http=$MASKPBX_HTTP_LISTEN
trunk=$MASKPBX_TRUNK
# The API as reached from this machine: a wildcard listen address answers
# on loopback.
http_host=${http%:*}
http_port=${http##*:}
case $http_host in "" | 0.0.0.0 | "[::]") http_host=127.0.0.1 ;; esac
http_host=${http_host#[}
http_host=${http_host%]}
api="http://$http_host:$http_port"
[[ $http_host == *:* ]] && api="http://[$http_host]:$http_port"

# healthy asks GET /healthz with bash alone (no curl on a fresh machine).
healthy() {
  (
    exec 3<>"/dev/tcp/$http_host/$http_port" || exit 1
    printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$http_host" >&3
    read -r -t 2 status <&3 || exit 1
    [[ $status == *" 200 "* ]]
  ) 2>/dev/null
}

echo "make run: starting maskpbx serve (its log follows; the demo's instructions once it answers $api/healthz)" >&2
"$bin" serve --demo &
pid=$!
# Ctrl-C (or a TERM) stops serve gracefully; its exit status is ours.
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  status=0
  wait "$pid" || status=$?
  exit "$status"
}
trap stop INT TERM

deadline=$((SECONDS + ${MASKPBX_START_TIMEOUT:-120}))
until healthy; do
  if ! kill -0 "$pid" 2>/dev/null; then
    status=0
    wait "$pid" || status=$?
    echo "make run: maskpbx serve exited with status $status (its error is above)" >&2
    exit "$status"
  fi
  if ((SECONDS > deadline)); then
    echo "make run: maskpbx serve did not answer $api/healthz in ${MASKPBX_START_TIMEOUT:-120} s; stopping it" >&2
    stop
  fi
  sleep 0.2
done

cat <<MSG

  maskpbx demo is up
  ------------------
  Company number : $MASKPBX_COMPANY_NUMBER
  SIP domain     : $MASKPBX_SIP_DOMAIN  (registrar on UDP/TCP port $sip_port)
  Trunk          : calls out to clients go to the demo trunk at $trunk (--trunk);
                   calls in are taken from $MASKPBX_TRUNK_ALLOW (--trunk-allow)
  API            : $api   admin token: $MASKPBX_ADMIN_TOKEN
                   manager tokens: anna demo-anna-token, boris demo-boris-token
                   supervisor token: sveta demo-sveta-token

  Web console    : $api/
    manager     anna  / anna-demo-1     (also boris / boris-demo-1)
    supervisor  sveta / sveta-demo-1
    admin       admin / admin-demo-1    (or the admin token above: "Sign in with the bootstrap admin token")

  Register a softphone (e.g. Linphone, MicroSIP, Zoiper):
    username anna   password anna-demo-1    domain $MASKPBX_SIP_DOMAIN
    username boris  password boris-demo-1   domain $MASKPBX_SIP_DOMAIN
    proxy/outbound: <this machine's IP>:$sip_port   (UDP or TCP)
    or over TLS with SRTP: <this machine's IP>:5061;transport=tls (a self-signed certificate:
    its fingerprint is in the log; --sip-tls-cert/--sip-tls-key for your own)
    baresip's accounts line, for instance:
      <sip:anna@$MASKPBX_SIP_DOMAIN>;auth_pass=anna-demo-1;outbound="sip:127.0.0.1:$sip_port"

  Or with SIPp, from this directory (README.md, "Try the demo", has the same):
  1. anna's phone registers, then waits to answer the next call (run it again for each call):
    sipp 127.0.0.1:$sip_port -sf testdata/sipp/register_auth.xml -m 1 -i 127.0.0.5 -p 5070 \\
      -key sip_user anna -key sip_domain $MASKPBX_SIP_DOMAIN -key reg_expires 3600 \\
      -au anna -ap anna-demo-1 -auth_uri $MASKPBX_SIP_DOMAIN
    sipp 127.0.0.1:$sip_port -sf testdata/sipp/phone_answer.xml -m 1 -i 127.0.0.5 -p 5070 \\
      -key rtp_ip 127.0.0.5 -key rtp_port 40002 -set hangup no -set rings 1 -d 5000

  2. A call in, as the trunk (from ${trunk%:*}, port ${trunk##*:}), from the demo client
     Romashka LLC (+7 916 555-01-01, anna's client): anna's phone rings
    sipp 127.0.0.1:$sip_port -sf testdata/sipp/trunk_call.xml -m 1 -i ${trunk%:*} -p ${trunk##*:} \\
      -key company ${MASKPBX_COMPANY_NUMBER#+} -key caller 79165550101 \\
      -key rtp_ip ${trunk%:*} -key rtp_port 40000 -set hangup yes -d 5000

  3. Click-to-call: the PBX rings anna's phone, then calls the client through the trunk
     at $trunk. Start a trunk that answers (it hangs up after 5 s), and anna's phone (1.):
    sipp -sf testdata/sipp/trunk_uas.xml -m 1 -i ${trunk%:*} -p ${trunk##*:} \\
      -key rtp_ip ${trunk%:*} -key rtp_port 40004 -set mode answer -set hangup yes -d 5000
     then, as anna (her token; curl and jq):
    client=\$(curl -s -H "Authorization: Bearer demo-anna-token" $api/api/v1/clients | jq -r '.[0].id')
    curl -s -H "Authorization: Bearer demo-anna-token" $api/api/v1/calls -d "{\"client_id\":\"\$client\"}"

  Try the API:
    curl -s -H "Authorization: Bearer $MASKPBX_ADMIN_TOKEN" $api/api/v1/managers
    curl -s -H "Authorization: Bearer demo-anna-token" $api/api/v1/clients
    curl -s $api/api/v1/openapi.json    (the API described, OpenAPI 3)

MSG
status=0
wait "$pid" || status=$?
exit "$status"
