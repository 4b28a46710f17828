#!/usr/bin/env bash
# Starts maskpbx serve for `make run`: local Postgres (already started by the
# Makefile), embedded NATS, demo data, console logs. Ctrl-C stops it.
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
cat <<MSG

  maskpbx demo
  ------------
  Company number : $MASKPBX_COMPANY_NUMBER
  SIP domain     : $MASKPBX_SIP_DOMAIN  (registrar on UDP/TCP port $sip_port)
  API            : http://$MASKPBX_HTTP_LISTEN   admin token: $MASKPBX_ADMIN_TOKEN

  Web console    : http://$MASKPBX_HTTP_LISTEN/
    manager     anna  / anna-demo-1     (also boris / boris-demo-1)
    supervisor  sveta / sveta-demo-1
    admin       admin / admin-demo-1    (or the admin token above: "Sign in with the bootstrap admin token")

  Register a softphone (e.g. Linphone, MicroSIP, Zoiper):
    username anna   password anna-demo-1    domain $MASKPBX_SIP_DOMAIN
    username boris  password boris-demo-1   domain $MASKPBX_SIP_DOMAIN
    proxy/outbound: <this machine's IP>:$sip_port

  Or with SIPp (answers the next call):
    sipp 127.0.0.1:$sip_port -sf testdata/sipp/register_auth.xml -m 1 -i 127.0.0.5 -p 5070 \\
      -key sip_user anna -key sip_domain $MASKPBX_SIP_DOMAIN -key reg_expires 3600 \\
      -au anna -ap anna-demo-1 -auth_uri $MASKPBX_SIP_DOMAIN
    sipp 127.0.0.1:$sip_port -sf testdata/sipp/phone_answer.xml -m 1 -i 127.0.0.5 -p 5070 \\
      -key rtp_ip 127.0.0.5 -key rtp_port 40002 -set hangup no -set rings 1 -d 5000

  Make a test call as the trunk (from 127.0.0.1, the demo's --trunk-allow) from
  the demo client Romashka LLC (+7 916 555-01-01, anna's client):
    sipp 127.0.0.1:$sip_port -sf testdata/sipp/trunk_call.xml -m 1 -i 127.0.0.1 -p 5080 \\
      -key company ${MASKPBX_COMPANY_NUMBER#+} -key caller 79165550101 \\
      -key rtp_ip 127.0.0.1 -key rtp_port 40000 -set hangup yes -d 5000

  Try the API:
    curl -s -H "Authorization: Bearer $MASKPBX_ADMIN_TOKEN" http://$MASKPBX_HTTP_LISTEN/api/v1/managers
    curl -s -H "Authorization: Bearer $MASKPBX_ADMIN_TOKEN" http://$MASKPBX_HTTP_LISTEN/api/v1/clients

MSG
exec "$bin" serve --demo
