#!/usr/bin/env bash
# bench/syscalls.sh: system calls per request (keep-alive) and per connection (a new connection
# per request) of ringway's three relay modes and HAProxy, counted with `strace -f -c`.
#
# Counts, not timings: strace slows every process it traces, so only the calls per unit of
# work mean anything here (bench/README.md, "System calls"). io_uring operations submitted
# through the ring do not show up as system calls; each `io_uring_enter` does, however many
# operations it submits or reaps.
#
# Usage: bench/syscalls.sh [N]   N requests per case (default 20000)
# Environment: RINGWAY_BIN [target/release/ringway]  PROXIES ["ringway ringway-buffered
#   ringway-splice haproxy"]
# Needs: strace, nginx, wrk, haproxy (for the haproxy row), python3. Loopback only; every
# process it starts is stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-20000}
RINGWAY_BIN=${RINGWAY_BIN:-$PWD/target/release/ringway}
PROXIES=${PROXIES:-ringway ringway-buffered ringway-splice haproxy}
TMP=$(mktemp -d /tmp/ringway-syscalls.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

for t in strace nginx wrk python3; do
    command -v "$t" >/dev/null || { echo "syscalls.sh: $t is missing" >&2; exit 1; }
done
[[ -x $RINGWAY_BIN ]] || { echo "syscalls.sh: build first: cargo build --release" >&2; exit 1; }

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "syscalls.sh: nothing listens on $1" >&2
    exit 1
}

ORIGIN=$(port)
mkdir -p "$TMP/origin"
cat >"$TMP/origin/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/origin/nginx.pid;
error_log $TMP/origin/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/origin/body;
    proxy_temp_path $TMP/origin/proxy;
    fastcgi_temp_path $TMP/origin/fastcgi;
    uwsgi_temp_path $TMP/origin/uwsgi;
    scgi_temp_path $TMP/origin/scgi;
    server { listen 127.0.0.1:$ORIGIN; location / { return 200 "ok"; } }
}
EOF
nginx -c "$TMP/origin/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN"

start_proxy() {   # start_proxy NAME PORT: sets PROXY_PID
    local name=$1 listen=$2 splice
    case $name in
        ringway | ringway-buffered | ringway-splice)
            splice='"auto"'
            [[ $name == ringway-splice ]] && splice=true
            [[ $name == ringway-buffered ]] && splice=false
            cat >"$TMP/$name.toml" <<EOF
[runtime]
workers = 1
pin = false
splice = $splice
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:0"
token = "syscalls-token-0123456789"
[state]
file = "$TMP/$name-state.json"
[[route]]
name = "bench"
listen = ["127.0.0.1:$listen"]
backends = ["127.0.0.1:$ORIGIN"]
EOF
            "$RINGWAY_BIN" run -c "$TMP/$name.toml" >"$TMP/$name.log" 2>&1 &
            ;;
        haproxy)
            cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1m
    timeout server 1m
frontend f
    bind 127.0.0.1:$listen
    default_backend b
backend b
    server o 127.0.0.1:$ORIGIN
EOF
            haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
            ;;
        *) echo "syscalls.sh: unknown proxy $name" >&2; exit 64 ;;
    esac
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$listen"
}

# Runs N requests through the proxy under strace; prints "calls-per-unit top-calls".
count() {   # count NAME PORT MODE(keepalive|close)
    local name=$1 listen=$2 mode=$3 out=$TMP/$1-$3.strace spid
    local conns=10 hdr=()
    [[ $mode == close ]] && hdr=(-H "Connection: close")
    strace -f -c -o "$out" -p "$PROXY_PID" 2>/dev/null &
    spid=$!
    sleep 0.5
    # wrk runs for a fixed time; the request count it reports is the unit.
    local reqs
    reqs=$(wrk -t1 -c"$conns" -d"$(( N / 2000 + 1 ))s" "${hdr[@]}" "http://127.0.0.1:$listen/" |
        awk '/requests in/ {print $1}')
    sleep 0.3
    kill -INT "$spid"
    wait "$spid" 2>/dev/null || true
    python3 - "$out" "$reqs" "$name" "$mode" <<'EOF'
import sys
path, reqs, name, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = []
for line in open(path):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
        calls = int(parts[3])
        rows.append((calls, parts[-1]))
rows.sort(reverse=True)
total = sum(c for c, _ in rows)
unit = "request" if mode == "keepalive" else "connection"
top = ", ".join(f"{n} {c / reqs:.2f}" for c, n in rows[:8] if c / reqs >= 0.01)
print(f"| {name} | {unit} | {reqs} | {total / reqs:.2f} | {top} |")
EOF
}

echo "| proxy | per | units | system calls per unit | top calls per unit |"
echo "|---|---|---|---|---|"
for p in $PROXIES; do
    if [[ $p == haproxy ]] && ! command -v haproxy >/dev/null; then continue; fi
    listen=$(port)
    start_proxy "$p" "$listen"
    count "$p" "$listen" keepalive
    count "$p" "$listen" close
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
done
echo
echo "$(date -u +%F) $(uname -r) $(nproc) CPUs; N≈$N requests per case (wrk -t1 -c10); RINGWAY_BIN=$RINGWAY_BIN"
