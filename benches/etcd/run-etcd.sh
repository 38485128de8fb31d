#!/usr/bin/env bash
# Runs the etcd half of the propagation benchmark: installs etcd 3.4 from
# Debian if it is missing, starts a three-member cluster on loopback (fsync
# on, as shipped), waits until every member is healthy, runs
# etcd-propagation against it with this script's arguments, and tears the
# cluster down on exit, whatever happened.
#
#   bash benches/etcd/run-etcd.sh [--tls] --watchers 1000 --puts 200 [--json]
#
# --tls: client and peer TLS with client-certificate auth on both
# (--client-cert-auth, --peer-client-cert-auth), certificates made for the
# run with the openssl command line (a CA, one ECDSA P-256 certificate per
# member naming 127.0.0.1, one for the benchmark's client), and the tool
# dials https:// with its client certificate. Every other argument goes to
# etcd-propagation.
#
# Environment:
#   PROTOC       protoc to build etcd-client's generated code with; default:
#                the one on PATH, else the vendored one from protoc-bin-vendored
#   RUN_TIMEOUT  outer bound on the tool in seconds [default: 3600]
#   KEEP_LOGS    if set, copy the members' logs to this directory on exit
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'run-etcd: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

tls=""
tool_args=()
for arg in "$@"; do
  case "$arg" in
    --tls) tls=yes ;;
    *) tool_args+=("$arg") ;;
  esac
done
if [ -n "$tls" ]; then
  command -v openssl >/dev/null || die "--tls needs the openssl command line (apt-get install openssl)"
fi

# --- etcd ------------------------------------------------------------------
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "etcd is missing and this is not root (no sudo)"
    sudo="sudo"
  fi
  log "installing etcd-server and etcd-client from Debian"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y etcd-server etcd-client >&2; then
    $sudo apt-get update >&2
    $sudo apt-get install -y etcd-server etcd-client >&2
  fi
  # The package may enable and start a system etcd service (on systemd
  # hosts; in a container without an init it does not). It listens on the
  # default ports 2379/2380 with its own data dir, so it does not collide
  # with the cluster below; it is left as it is.
fi
command -v etcd >/dev/null || die "etcd not found after install"
if [ "$(uname -m)" != "x86_64" ]; then
  # etcd 3.4 refuses to start on architectures other than amd64 without this.
  export ETCD_UNSUPPORTED_ARCH="${ETCD_UNSUPPORTED_ARCH:-$(dpkg --print-architecture 2>/dev/null || uname -m)}"
fi
# (no `| head`: with pipefail, head closing the pipe early can fail the line)
etcd_version=$(etcd --version 2>/dev/null || true)
etcd_version=${etcd_version%%$'\n'*}
log "using $(command -v etcd): $etcd_version"
if pgrep -x etcd >/dev/null 2>&1; then
  log "note: an etcd process is already running on this machine (e.g. the packaged service); it is not touched"
fi

# --- the tool ----------------------------------------------------------------
# etcd-client's build script runs prost-build, which runs the protoc named by
# $PROTOC (or `protoc` on PATH). A dependency's build script does not see
# variables set by our own build script, so it is exported here.
if [ -z "${PROTOC:-}" ]; then
  if command -v protoc >/dev/null; then
    PROTOC=$(command -v protoc)
  else
    case "$(uname -s)-$(uname -m)" in
      Linux-x86_64) platform=linux-x86_64 ;;
      Linux-aarch64) platform=linux-aarch_64 ;;
      Linux-i?86) platform=linux-x86_32 ;;
      Linux-ppc64le) platform=linux-ppcle_64 ;;
      Linux-s390x) platform=linux-s390_64 ;;
      Darwin-x86_64) platform=macos-x86_64 ;;
      Darwin-arm64) platform=macos-aarch_64 ;;
      *) die "no vendored protoc for $(uname -s)-$(uname -m); set PROTOC" ;;
    esac
    cargo fetch --manifest-path "$here/Cargo.toml" >&2
    manifest=$(cargo metadata --format-version 1 --manifest-path "$here/Cargo.toml" \
      | grep -o "\"manifest_path\":\"[^\"]*/protoc-bin-vendored-$platform-[^\"]*/Cargo.toml\"" \
      | sed -n '1{s/^"manifest_path":"//; s/"$//; p}')
    [ -n "$manifest" ] || die "protoc-bin-vendored-$platform not found in cargo metadata"
    PROTOC="$(dirname "$manifest")/bin/protoc"
  fi
fi
[ -x "$PROTOC" ] || die "PROTOC=$PROTOC is not executable"
export PROTOC
log "building etcd-propagation (PROTOC=$PROTOC)"
cargo build --release --manifest-path "$here/Cargo.toml" --target-dir "$here/target" >&2
bin="$here/target/release/etcd-propagation"

# --- the cluster -------------------------------------------------------------
tmp=$(mktemp -d -t lapse-etcd.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS" && cp "$tmp"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

members=(1 2 3)
scheme=http
client_tls=()
tool_tls=()
if [ -n "$tls" ]; then
  # A CA, and ECDSA P-256 leaves signed by it (as Lapse's certificates
  # are): one per member, for serving clients and peers and for dialling
  # peers, naming 127.0.0.1; one for the benchmark's client.
  certs="$tmp/certs"
  mkdir -p "$certs"
  leaf() { # name, extensions
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$certs/$1.key" -subj "/O=lapse-bench/CN=$1" -out "$certs/$1.csr" 2>/dev/null
    printf '%s\n' "$2" >"$certs/$1.ext"
    openssl x509 -req -in "$certs/$1.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
      -CAcreateserial -days 2 -sha256 -extfile "$certs/$1.ext" -out "$certs/$1.pem" 2>/dev/null
  }
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$certs/ca.key" -subj "/O=lapse-bench/CN=lapse-bench etcd CA" -days 2 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$certs/ca.pem" 2>/dev/null || die "openssl could not make the CA"
  for i in "${members[@]}"; do
    leaf "m$i" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost" || die "openssl could not certify m$i"
  done
  leaf client "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth" || die "openssl could not certify the client"
  scheme=https
  client_tls=(--cacert "$certs/ca.pem" --cert "$certs/client.pem" --key "$certs/client.key")
  tool_tls=("${client_tls[@]}")
  log "TLS: certificates in $certs"
fi
cluster=""
endpoints=""
for i in "${members[@]}"; do
  cluster+="${cluster:+,}m$i=$scheme://127.0.0.1:2380$i"
  endpoints+="${endpoints:+,}$scheme://127.0.0.1:2379$i"
done
for i in "${members[@]}"; do
  for port in "2379$i" "2380$i"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port on 127.0.0.1 is already in use"
    fi
  done
done
for i in "${members[@]}"; do
  member_tls=()
  if [ -n "$tls" ]; then
    member_tls=(
      --cert-file "$certs/m$i.pem" --key-file "$certs/m$i.key"
      --client-cert-auth --trusted-ca-file "$certs/ca.pem"
      --peer-cert-file "$certs/m$i.pem" --peer-key-file "$certs/m$i.key"
      --peer-client-cert-auth --peer-trusted-ca-file "$certs/ca.pem"
    )
  fi
  etcd --name "m$i" \
    --data-dir "$tmp/m$i" \
    --listen-client-urls "$scheme://127.0.0.1:2379$i" \
    --advertise-client-urls "$scheme://127.0.0.1:2379$i" \
    --listen-peer-urls "$scheme://127.0.0.1:2380$i" \
    --initial-advertise-peer-urls "$scheme://127.0.0.1:2380$i" \
    "${member_tls[@]}" \
    --initial-cluster "$cluster" \
    --initial-cluster-token "lapse-bench-$$" \
    --initial-cluster-state new \
    --logger zap --log-outputs stderr \
    >"$tmp/m$i.log" 2>&1 &
  pids+=($!)
done
log "started members ${pids[*]} in $tmp; waiting for health"

healthy=""
for _ in $(seq 60); do
  for idx in "${!pids[@]}"; do
    if ! kill -0 "${pids[$idx]}" 2>/dev/null; then
      log "member m$((idx + 1)) exited; last log lines:"
      tail -n 20 "$tmp/m$((idx + 1)).log" >&2
      exit 1
    fi
  done
  if ETCDCTL_API=3 timeout 5 etcdctl --endpoints="$endpoints" "${client_tls[@]}" --command-timeout=2s \
      endpoint health >"$tmp/health.out" 2>&1; then
    healthy=yes
    break
  fi
  sleep 0.5
done
if [ -z "$healthy" ]; then
  cat "$tmp/health.out" >&2 || true
  die "cluster not healthy after 30 s"
fi
ETCDCTL_API=3 etcdctl --endpoints="$endpoints" "${client_tls[@]}" -w table endpoint status >&2 || true

# --- the run -----------------------------------------------------------------
set +e
timeout --signal=INT --kill-after=10 "${RUN_TIMEOUT:-3600}" \
  "$bin" --endpoints "$endpoints" "${tool_tls[@]}" "${tool_args[@]}"
rc=$?
set -e
[ "$rc" -eq 124 ] && log "etcd-propagation did not finish within ${RUN_TIMEOUT:-3600} s"
exit "$rc"
