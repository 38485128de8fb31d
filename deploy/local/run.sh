#!/usr/bin/env bash
# A real Lapse cluster on one machine, on loopback, every link mutual TLS:
# three voting brokers in region "eu", a fourth broker joining as a learner
# in region "us" on ports of its own, and verifier processes in both
# regions. It issues a credential, checks that the verifiers accept it,
# revokes it with `--wait all`, checks that every verifier refuses it, saves
# a scrape of each process's /metrics, and stops everything it started on
# exit, on success or failure.
#
#   deploy/local/run.sh [--base-port N] [--stay] WORKDIR
#
# LAPSE_BIN names the lapse binary (default: `lapse` on PATH). Ports N to
# N+23 on 127.0.0.1 must be free (default N = 27400). --stay keeps the
# cluster running after the checks until Ctrl-C. Needs bash, curl and the
# usual coreutils. See deploy/local/README.md.
set -euo pipefail

usage() {
  echo "usage: $0 [--base-port N] [--stay] WORKDIR" >&2
  exit 2
}

BASE=27400
STAY=0
WORKDIR=
while [ $# -gt 0 ]; do
  case "$1" in
    --base-port) [ $# -ge 2 ] || usage; BASE=$2; shift 2 ;;
    --stay) STAY=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) usage ;;
    *) [ -z "$WORKDIR" ] || usage; WORKDIR=$1; shift ;;
  esac
done
[ -n "$WORKDIR" ] || usage
case "$BASE" in ''|*[!0-9]*) echo "--base-port must be a number" >&2; exit 2 ;; esac
if [ "$BASE" -lt 1024 ] || [ "$BASE" -gt 65500 ]; then
  echo "--base-port must be between 1024 and 65500" >&2
  exit 2
fi

LAPSE_BIN=${LAPSE_BIN:-lapse}
if ! command -v "$LAPSE_BIN" >/dev/null 2>&1; then
  echo "no lapse binary: set LAPSE_BIN or put lapse on PATH" >&2
  exit 2
fi
LAPSE_BIN=$(command -v "$LAPSE_BIN")
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 2; }

mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
CERTS=$WORKDIR/certs
LOGS=$WORKDIR/logs
SCRAPES=$WORKDIR/scrapes
rm -rf "$CERTS" "$WORKDIR/brokers" "$LOGS" "$SCRAPES"
mkdir -p "$CERTS" "$WORKDIR/brokers" "$LOGS" "$SCRAPES"

# Ports: brokers 1-3 gRPC N..N+2 and HTTPS N+3..N+5 (region eu); broker 4
# gRPC N+10 and HTTPS N+11 (region us); verifier APIs N+20 (eu), N+21 (us).
HOST=127.0.0.1
grpc_port() { if [ "$1" -eq 4 ]; then echo $((BASE + 10)); else echo $((BASE + $1 - 1)); fi; }
http_port() { if [ "$1" -eq 4 ]; then echo $((BASE + 11)); else echo $((BASE + $1 + 2)); fi; }
EU_API=$HOST:$((BASE + 20))
US_API=$HOST:$((BASE + 21))
VOTERS="$HOST:$(grpc_port 1),$HOST:$(grpc_port 2),$HOST:$(grpc_port 3)"
LEARNER=$HOST:$(grpc_port 4)

step() { printf '\n== %s\n' "$*"; }
fail() {
  echo "FAILED: $*" >&2
  exit 1
}

# Everything started here, stopped on any exit: TERM, then KILL after 10 s.
PIDS=()
teardown() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${#PIDS[@]}" -gt 0 ]; then
    step "stopping ${#PIDS[@]} processes"
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + 10)) pid
    for pid in "${PIDS[@]}"; do
      while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
  fi
  if [ "$status" -ne 0 ]; then
    echo "--- last lines of each log (all in $LOGS) ---" >&2
    for log in "$LOGS"/*.log; do
      [ -f "$log" ] || continue
      echo "--- $log" >&2
      tail -n 15 "$log" >&2
    done
  fi
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Poll until a command succeeds, at most $1 seconds.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within ${limit}s"
    sleep 0.2
  done
}

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
for port in $(seq "$BASE" $((BASE + 23))); do
  port_free "$port" || fail "port $port is in use: choose another --base-port"
done

# The CLI as the operator "admin", trusting only the cluster CA.
export LAPSE_CA=$CERTS/ca.pem
export LAPSE_CERT=$CERTS/operator-admin.pem
export LAPSE_KEY=$CERTS/operator-admin.key
export LAPSE_BROKER=$HOST:$(grpc_port 1)
unset LAPSE_TOKEN LAPSE_INSECURE_PLAINTEXT
# Plain log files, without terminal colours.
export NO_COLOR=1
lapse() { "$LAPSE_BIN" "$@"; }

step "certificates in $CERTS"
lapse certs init --trust-domain local.lapse.example --dir "$CERTS" >/dev/null
for id in 1 2 3 4; do
  lapse certs broker --id "$id" --address "$HOST" --dir "$CERTS" >/dev/null
done
for name in edge-eu edge-us; do
  lapse certs verifier --name "$name" --dir "$CERTS" >/dev/null
done
lapse certs operator --name admin --dir "$CERTS" >/dev/null
ls "$CERTS"

step "broker configurations"
config() {
  local id=$1 file=$WORKDIR/brokers/node-$1.toml
  (
    umask 077
    cat >"$file" <<EOF
node_id = $id
listen = "$HOST:$(grpc_port "$id")"
data_dir = "$WORKDIR/brokers/data-$id"

[tls]
ca = "$CERTS/ca.pem"
cert = "$CERTS/broker-$id.pem"
key = "$CERTS/broker-$id.key"

[auth]
cluster_admins = ["operator:admin"]

[issuance]
http_listen = "$HOST:$(http_port "$id")"
EOF
    if [ "$id" -le 3 ]; then
      cat >>"$file" <<EOF

[cluster]
members = [
  { id = 1, address = "$HOST:$(grpc_port 1)" },
  { id = 2, address = "$HOST:$(grpc_port 2)" },
  { id = 3, address = "$HOST:$(grpc_port 3)" },
]
EOF
    fi
  )
  echo "$file"
}
for id in 1 2 3 4; do config "$id"; done

step "three voting brokers (region eu)"
for id in 1 2 3; do
  "$LAPSE_BIN" broker --config "$WORKDIR/brokers/node-$id.toml" >"$LOGS/broker-$id.log" 2>&1 &
  PIDS+=($!)
  echo "broker $id: gRPC $HOST:$(grpc_port "$id"), HTTPS $HOST:$(http_port "$id"), pid $!"
done

has_leader() { lapse status --json --timeout 2s | grep -q '"role": "leader"'; }
wait_for 60 "a leader elected" has_leader
lapse status

step "broker 4 joins as a learner (region us)"
(
  umask 077
  lapse join-token create --for-broker --address "$LEARNER" --ttl 10m >"$WORKDIR/brokers/join-4.token" 2>/dev/null
)
"$LAPSE_BIN" broker --config "$WORKDIR/brokers/node-4.toml" \
  --join "$HOST:$(grpc_port 1)" --join-token-file "$WORKDIR/brokers/join-4.token" \
  >"$LOGS/broker-4.log" 2>&1 &
PIDS+=($!)
echo "broker 4: gRPC $LEARNER, HTTPS $HOST:$(http_port 4), pid $!"
learner_listed() { lapse status --timeout 2s | grep -Eq '^ +4 +[^ ]+ +learner '; }
wait_for 60 "broker 4 serving as a learner" learner_listed
lapse status

step "verifiers: two in eu following the voters, one in us following broker 4 first"
"$LAPSE_BIN" verifier --brokers "$VOTERS" --id edge-eu --count 2 --region eu --audience billing \
  --http "$EU_API" --cert "$CERTS/verifier-edge-eu.pem" --key "$CERTS/verifier-edge-eu.key" \
  >"$LOGS/verifier-eu.log" 2>&1 &
PIDS+=($!)
"$LAPSE_BIN" verifier --brokers "$LEARNER,$VOTERS" --id edge-us --region us --audience billing \
  --http "$US_API" --cert "$CERTS/verifier-edge-us.pem" --key "$CERTS/verifier-edge-us.key" \
  >"$LOGS/verifier-us.log" 2>&1 &
PIDS+=($!)
healthy() { curl -sf --max-time 2 "http://$1/healthz"; }
wait_for 60 "the eu verifiers fresh" healthy "$EU_API"
wait_for 60 "the us verifier fresh" healthy "$US_API"
echo "eu: http://$EU_API   us: http://$US_API"

step "a tenant policy, a join token, a credential"
cat >"$WORKDIR/acme.cedar" <<'POLICY'
permit(principal == Workload::"spiffe://example.org/payments",
       action == Action::"issue", resource == Tenant::"acme")
when { ["payments:read"].containsAll(context.scopes)
       && ["billing"].containsAll(context.audiences)
       && context.ttl_seconds <= 900 };
POLICY
lapse policy set --tenant acme --file "$WORKDIR/acme.cedar"
(
  umask 077
  lapse join-token create --tenant acme --workload spiffe://example.org/payments \
    >"$WORKDIR/workload.token" 2>/dev/null
  lapse issue --join-token-file "$WORKDIR/workload.token" --audience billing \
    --scope payments:read --ttl 10m >"$WORKDIR/credential.jwt"
)
CREDENTIAL=$(cat "$WORKDIR/credential.jwt")
[ -n "$CREDENTIAL" ] || fail "no credential issued"
echo "issued a credential of ${#CREDENTIAL} bytes"
# A request the policy refuses, counted on /metrics as reason "policy".
(
  umask 077
  lapse join-token create --tenant acme --workload spiffe://example.org/payments \
    >"$WORKDIR/refused.token" 2>/dev/null
)
if lapse issue --join-token-file "$WORKDIR/refused.token" --audience billing \
  --scope payments:write --ttl 10m >/dev/null 2>&1; then
  fail "a scope the policy does not allow was granted"
fi

verify() {
  curl -s --max-time 5 -o "$WORKDIR/verify.json" -w '%{http_code}' \
    -H 'content-type: application/json' \
    -d "{\"token\": \"$CREDENTIAL\"}" "http://$1/v1/verify"
}
verify_is() { [ "$(verify "$1")" = "$2" ]; }
for api in "$EU_API" "$US_API"; do
  # A verifier accepts a credential once it holds the key that signed it.
  wait_for 30 "$api accepting the credential" verify_is "$api" 200
  echo "$api: 200 $(cat "$WORKDIR/verify.json")"
done

step "revoke it and wait until every verifier has applied it"
lapse revoke credential "$WORKDIR/credential.jwt" --wait all --reason "deploy/local smoke test"
for api in "$EU_API" "$US_API"; do
  code=$(verify "$api")
  [ "$code" = 403 ] || fail "$api answered $code to a revoked credential: $(cat "$WORKDIR/verify.json")"
  echo "$api: 403 $(cat "$WORKDIR/verify.json")"
done
lapse propagation

step "metrics scrapes in $SCRAPES"
scrape_broker() {
  curl -sf --max-time 5 --cacert "$CERTS/ca.pem" --cert "$LAPSE_CERT" --key "$LAPSE_KEY" \
    "https://$HOST:$(http_port "$1")/metrics" >"$SCRAPES/broker-$1.prom"
}
# Every broker: issuance metrics (latency, lifetimes per tenant) are the
# issuing broker's own.
for id in 1 2 3 4; do
  scrape_broker "$id" || fail "broker $id's /metrics"
done
curl -sf --max-time 5 "http://$EU_API/metrics" >"$SCRAPES/verifier-eu.prom" || fail "eu verifier /metrics"
curl -sf --max-time 5 "http://$US_API/metrics" >"$SCRAPES/verifier-us.prom" || fail "us verifier /metrics"
wc -l "$SCRAPES"/*.prom
grep -Eq '^lapse_verifier_heartbeat_broker\{[^}]*\} 4$' "$SCRAPES/verifier-us.prom" \
  || fail "the us verifier does not follow broker 4"
grep -q 'region="us"' "$SCRAPES/broker-4.prom" "$SCRAPES/broker-1.prom" \
  || fail "no propagation reported for region us"

step "smoke test passed"
if [ "$STAY" -eq 1 ]; then
  echo "The cluster keeps running; Ctrl-C stops it. In another shell:"
  echo "  export LAPSE_CA=$LAPSE_CA LAPSE_CERT=$LAPSE_CERT LAPSE_KEY=$LAPSE_KEY LAPSE_BROKER=$LAPSE_BROKER"
  echo "  $LAPSE_BIN status"
  while :; do sleep 1; done
fi
