#!/usr/bin/env bash
# The propagation benchmark, in one run: Lapse and etcd 3.4 measured back to
# back on the same machine, alternating, three rounds each, then medians and
# ratios.
#
# Lapse: the `propagation` benchmark of the lapse-benches package
# (benches/benches/propagation.rs) — a local three-broker cluster and N
# verifiers; per revocation, the time from the revoke call returning to
# each verifier applying it, and to the last of them.
# etcd: `benches/etcd/run-etcd.sh` — a three-member etcd 3.4 cluster (Debian's
# etcd-server, installed if missing) and N watchers; per put, the time from
# the put returning to each watcher seeing it, and to the last of them.
#
#   bash benches/propagation.sh [--watchers 1000] [--events 200] [--rounds 3] [--tls | --tls-only]
#
# Without an option both systems run in plaintext. --tls: each round runs
# both systems in plaintext and with TLS (Lapse: mutual TLS, heartbeats
# signed by the brokers and checked by every verifier; etcd: client and
# peer TLS with client-certificate auth), so the cost of TLS on each side
# comes from the same session; odd rounds start with plaintext, even
# rounds with TLS. --tls-only: both systems with TLS, nothing else.
set -euo pipefail

watchers=1000
events=200
rounds=3
transports="plaintext"
while [ $# -gt 0 ]; do
  case "$1" in
    --watchers) watchers=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --tls) transports="plaintext tls"; shift ;;
    --tls-only) transports="tls"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Build the benchmark once (bench profile: release settings) and run its
# program directly, so that `timeout` bounds the benchmark itself.
lapse=$(cargo bench --manifest-path "$root/Cargo.toml" -p lapse-benches --bench propagation \
  --no-run --message-format=json -q | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "propagation" and m.get("executable"):
        print(m["executable"])
')
[ -x "$lapse" ] || { echo "the propagation benchmark did not build" >&2; exit 1; }

for round in $(seq 1 "$rounds"); do
  order=$transports
  if [ $((round % 2)) -eq 0 ]; then
    order=$(printf '%s\n' $transports | tac | tr '\n' ' ')
  fi
  for transport in $order; do
    etcd_tls=()
    [ "$transport" = tls ] && etcd_tls=(--tls)
    echo "round $round: lapse, $transport" >&2
    timeout 900 "$lapse" --transports "$transport" --verifiers "$watchers" --revocations "$events" --json \
      > "$out/lapse-$transport-$round.json" 2> "$out/lapse-$transport-$round.log" \
      || { tail -n 20 "$out/lapse-$transport-$round.log" >&2; exit 1; }
    echo "round $round: etcd, $transport" >&2
    timeout 900 bash "$root/benches/etcd/run-etcd.sh" "${etcd_tls[@]}" --watchers "$watchers" --puts "$events" --json \
      > "$out/etcd-$transport-$round.json" 2> "$out/etcd-$transport-$round.log" \
      || { tail -n 20 "$out/etcd-$transport-$round.log" >&2; exit 1; }
  done
done

python3 - "$out" "$rounds" "$watchers" $transports <<'PY'
import json, statistics, sys
out, rounds, watchers, transports = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def load(system, transport):
    runs = []
    for r in range(1, rounds + 1):
        run = json.load(open(f"{out}/{system}-{transport}-{r}.json"))
        # The Lapse benchmark prints {"runs": [one per transport], ...}.
        runs.append(run["runs"][0] if "runs" in run else run)
    return runs
fields = ["last_p50_ms", "last_p99_ms", "last_max_ms", "each_p50_ms", "each_p99_ms", "each_max_ms"]
def ratio(a, b):
    return a / b if b else float("nan")
def row(name, values):
    print(f"{name:>22}" + "".join(f"{v:>13.2f}" for v in values))
print(f"{watchers} subscribers, {rounds} rounds, alternating; medians (ms):")
print(f"{'':>22}" + "".join(f"{f[:-3]:>13}" for f in fields))
med = {}
for transport in transports:
    for system in ["lapse", "etcd"]:
        rs = load(system, transport)
        med[system, transport] = {f: statistics.median(r[f] for r in rs) for f in fields}
        row(f"{system} {transport}", [med[system, transport][f] for f in fields])
        for i, r in enumerate(rs, 1):
            extra = ""
            if system == "lapse" and "heartbeats_applied" in r:
                extra = (f"   heartbeats {r['heartbeats_applied']}"
                         f"{' signed' if r['signed_heartbeats'] else ''}, fresh {r['fresh_verifiers']}")
            print(f"{'  round ' + str(i):>22}" + "".join(f"{r[f]:>13.2f}" for f in fields) + extra)
for transport in transports:
    row(f"lapse/etcd {transport}",
        [ratio(med["lapse", transport][f], med["etcd", transport][f]) for f in fields])
if "tls" in transports and "plaintext" in transports:
    for system in ["lapse", "etcd"]:
        row(f"{system} tls/plaintext",
            [ratio(med[system, "tls"][f], med[system, "plaintext"][f]) for f in fields])
context = ["rpc_p50_ms", "rpc_p99_ms", "sent_last_p50_ms", "sent_last_p99_ms"]
print("For context, medians (ms): the revoke/put call, and from sending it to the last subscriber")
print(f"{'':>22}" + "".join(f"{f[:-3]:>17}" for f in context))
cmed = {}
for transport in transports:
    for system in ["lapse", "etcd"]:
        rs = load(system, transport)
        if all(f in r for r in rs for f in context):
            cmed[system, transport] = {f: statistics.median(r[f] for r in rs) for f in context}
            print(f"{system + ' ' + transport:>22}" + "".join(f"{cmed[system, transport][f]:>17.2f}" for f in context))
for transport in transports:
    if ("lapse", transport) in cmed and ("etcd", transport) in cmed:
        print(f"{'lapse/etcd ' + transport:>22}" + "".join(
            f"{ratio(cmed['lapse', transport][f], cmed['etcd', transport][f]):>17.2f}" for f in context))
for system in ["lapse", "etcd"]:
    if (system, "tls") in cmed and (system, "plaintext") in cmed:
        print(f"{system + ' tls/plaintext':>22}" + "".join(
            f"{ratio(cmed[system, 'tls'][f], cmed[system, 'plaintext'][f]):>17.2f}" for f in context))
if "tls" in transports:
    print("Lapse's signed heartbeats, one thread, µs each (per round):")
    for r in range(1, rounds + 1):
        c = json.load(open(f"{out}/lapse-tls-{r}.json")).get("heartbeat_costs_us")
        if c:
            print(f"  round {r}: broker signs {c['broker_sign']:.1f}; verifier checks "
                  f"{c['verifier_check_first']:.1f} (first) / {c['verifier_check_again']:.1f} (again), "
                  f"digests {c['verifier_digest_new_epoch']:.1f} (new epoch) / "
                  f"{c['verifier_digest_same_epoch']:.1f} (same epoch); "
                  f"{c['statement_bytes']}-byte statement, {c['revoked_in_state']} revoked")
PY
