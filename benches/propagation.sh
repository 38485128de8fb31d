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
#   bash benches/propagation.sh [--watchers 1000] [--events 200] [--rounds 3]
set -euo pipefail

watchers=1000
events=200
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --watchers) watchers=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
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
  echo "round $round: lapse" >&2
  timeout 900 "$lapse" --verifiers "$watchers" --revocations "$events" --json \
    > "$out/lapse-$round.json" 2> "$out/lapse-$round.log"
  echo "round $round: etcd" >&2
  timeout 900 bash "$root/benches/etcd/run-etcd.sh" --watchers "$watchers" --puts "$events" --json \
    > "$out/etcd-$round.json" 2> "$out/etcd-$round.log"
done

python3 - "$out" "$rounds" "$watchers" <<'PY'
import json, statistics, sys
out, rounds, watchers = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(system):
    return [json.load(open(f"{out}/{system}-{r}.json")) for r in range(1, rounds + 1)]
runs = {"lapse": load("lapse"), "etcd": load("etcd")}
fields = ["last_p50_ms", "last_p99_ms", "last_max_ms", "each_p50_ms", "each_p99_ms", "each_max_ms"]
print(f"{watchers} subscribers, {rounds} rounds each, alternating; medians (ms):")
print(f"{'':>14}" + "".join(f"{f[:-3]:>13}" for f in fields))
med = {}
for system, rs in runs.items():
    med[system] = {f: statistics.median(r[f] for r in rs) for f in fields}
    print(f"{system:>14}" + "".join(f"{med[system][f]:>13.2f}" for f in fields))
    for i, r in enumerate(rs, 1):
        print(f"{'  run ' + str(i):>14}" + "".join(f"{r[f]:>13.2f}" for f in fields))
print(f"{'lapse / etcd':>14}" + "".join(
    f"{(med['lapse'][f] / med['etcd'][f] if med['etcd'][f] else float('nan')):>13.2f}" for f in fields))
PY
