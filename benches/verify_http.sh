#!/usr/bin/env bash
# The local verify API under a real load generator: wrk against
# `POST /v1/verify` of a verifier served by the verify benchmark
# (`cargo bench -p lapse-benches --bench verify -- --serve ADDRESS`: the
# same loaded verifier as the per-core benchmark, 100,000 revoked indices,
# 2,000 rules, fresh, its signature memory on), over loopback.
#
#   bash benches/verify_http.sh [--connections 16] [--threads 2] [--seconds 10]
#
# Two loads, each `--seconds` long after a 2 s warm-up: one credential
# repeated (its signature from memory, every other check run each time),
# then 1,024 distinct credentials in turn (the first pass verifies their
# signatures, later passes find them in memory too). wrk is installed from
# Debian's packages if missing. The server's per-IP rate limit is raised
# so that it does not cap the load; the first answer is checked to be 200,
# and wrk reports any other (Non-2xx).
set -euo pipefail

connections=16
threads=2
seconds=10
port=17931
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) connections=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$out"
}
trap cleanup EXIT

# LAPSE_VERIFY_BENCH names an already built verify benchmark to use.
bench=${LAPSE_VERIFY_BENCH:-}
[ -n "$bench" ] || bench=$(cargo bench --manifest-path "$root/Cargo.toml" -p lapse-benches --bench verify \
  --no-run --message-format=json -q | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "verify" and m.get("executable"):
        print(m["executable"])
')
[ -x "$bench" ] || { echo "the verify benchmark did not build" >&2; exit 1; }

# The server outlives both loads and then stops by itself.
"$bench" --serve "127.0.0.1:$port" --tokens-out "$out/tokens" \
  --seconds $((2 * seconds + 30)) >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  grep -q "serving on" "$out/server.log" 2>/dev/null && break
  sleep 0.2
done
grep -q "serving on" "$out/server.log" || { cat "$out/server.log" >&2; exit 1; }
url="http://127.0.0.1:$port/v1/verify"
first=$(head -n 1 "$out/tokens")
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $first" "$url")
[ "$status" = 200 ] || { echo "the verify API answered $status" >&2; exit 1; }

# One credential, repeated.
cat >"$out/repeated.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $first"
LUA
# 1,024 distinct credentials, each connection in turn through them.
cat >"$out/distinct.lua" <<LUA
local tokens = {}
for line in io.lines("$out/tokens") do tokens[#tokens + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, {["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1]}, "")
end
LUA

for load in repeated distinct; do
  wrk -t"$threads" -c"$connections" -d2s -s "$out/$load.lua" "$url" >/dev/null
  echo "== $load credentials: $connections connections, $threads wrk threads, ${seconds} s"
  wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$out/$load.lua" "$url" \
    | grep -E "Requests/sec|Non-2xx|Socket errors|^ +(50|75|90|99)%|Latency "
done
