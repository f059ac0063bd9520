#!/usr/bin/env bash
# bench/scale.sh: how ringway and HAProxy scale with workers (threads), keep-alive requests.
#
# For each worker count W (WORKERS, default "1 2 4 8"): the proxy runs W workers pinned to
# CPUs 0..W-1 (ringway: workers = W, pin; HAProxy: nbthread W, cpu-map), the origin (nginx,
# `return 200`) and wrk run on the CPUs after those. Reported per proxy and W: requests per
# second, the proxy's CPU per 100k requests (utime+stime of the whole process from
# /proc/PID/stat over the timed run), and the scaling efficiency rps(W) / (W × rps(1)).
# The load side must not be the bottleneck: the script refuses a W that leaves fewer than W
# CPUs for it, and prints the load side's CPU use so a saturated generator shows.
#
# Usage: bench/scale.sh            (needs nginx, wrk, haproxy; a machine with >= 2*max(W) CPUs)
# Environment: WORKERS ["1 2 4 8"]  DUR [10] s per run  CONNS_PER_WORKER [50]
#   RINGWAY_BIN [target/release/ringway]  PROXIES ["ringway haproxy"]
# Loopback only; everything it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=${WORKERS:-1 2 4 8}
DUR=${DUR:-10}
CONNS_PER_WORKER=${CONNS_PER_WORKER:-50}
RINGWAY_BIN=${RINGWAY_BIN:-$PWD/target/release/ringway}
PROXIES=${PROXIES:-ringway haproxy}
NCPU=$(nproc)
TMP=$(mktemp -d /tmp/ringway-scale.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

for t in nginx wrk python3 taskset; do
    command -v "$t" >/dev/null || { echo "scale.sh: $t is missing" >&2; exit 1; }
done
[[ -x $RINGWAY_BIN ]] || { echo "scale.sh: build first: cargo build --release" >&2; exit 1; }

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "scale.sh: nothing listens on $1" >&2
    exit 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime+stime of a whole process

start_origin() {   # start_origin W: nginx with W processes on the load CPUs
    local w=$1 d=$TMP/origin-$1
    ORIGIN=$(port)
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes $w;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    server { listen 127.0.0.1:$ORIGIN; location / { return 200 "ok"; } }
}
EOF
    taskset -c "$LOAD_CPUS" nginx -c "$d/nginx.conf" >/dev/null 2>&1 &
    ORIGIN_PID=$!
    PIDS+=("$ORIGIN_PID")
    wait_port "$ORIGIN"
}

start_proxy() {   # start_proxy NAME W LISTEN: sets PROXY_PID
    local name=$1 w=$2 listen=$3 last=$(($2 - 1))
    case $name in
        ringway)
            cat >"$TMP/ringway.toml" <<EOF
[runtime]
workers = $w
pin = true
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:0"
token = "scale-token-0123456789"
[state]
file = "$TMP/ringway-state-$w.json"
[[route]]
name = "bench"
listen = ["127.0.0.1:$listen"]
backends = ["127.0.0.1:$ORIGIN"]
EOF
            taskset -c "0-$last" "$RINGWAY_BIN" run -c "$TMP/ringway.toml" >"$TMP/ringway-$w.log" 2>&1 &
            ;;
        haproxy)
            cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $w
    cpu-map auto:1/1-$w 0-$last
    maxconn $MAXCONN
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
            taskset -c "0-$last" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy-$w.log" 2>&1 &
            ;;
        *) echo "scale.sh: unknown proxy $name" >&2; exit 64 ;;
    esac
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$listen"
}

HZ=$(getconf CLK_TCK)
# HAProxy refuses to start when 2*maxconn fds are not available.
MAXCONN=$((($(ulimit -n) - 200) / 2))
((MAXCONN < 20000)) || MAXCONN=20000
# CPU ticks of a process and its children (nginx's workers).
tree_ticks() {
    local t=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        t=$((t + $(cpu_ticks "$p" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
declare -A BASE
printf '%-8s %3s %12s %16s %10s %12s\n' proxy W "req/s" "CPU-s/100k req" efficiency "load CPU %"
for w in $WORKERS; do
    if ((2 * w > NCPU)); then
        echo "scale.sh: W=$w needs $((2 * w)) CPUs ($w for the proxy, $w for the load side); this machine has $NCPU: skipped" >&2
        continue
    fi
    LOAD_CPUS="$w-$((NCPU - 1))"
    start_origin "$w"
    for p in $PROXIES; do
        [[ $p == haproxy ]] && ! command -v haproxy >/dev/null && continue
        listen=$(port)
        start_proxy "$p" "$w" "$listen"
        # warm-up, then the timed run
        taskset -c "$LOAD_CPUS" wrk -t"$w" -c$((w * CONNS_PER_WORKER)) -d2s "http://127.0.0.1:$listen/" >/dev/null
        c0=$(cpu_ticks "$PROXY_PID")
        l0=$(tree_ticks "$ORIGIN_PID")
        out=$(taskset -c "$LOAD_CPUS" wrk -t"$w" -c$((w * CONNS_PER_WORKER)) -d"${DUR}s" "http://127.0.0.1:$listen/")
        c1=$(cpu_ticks "$PROXY_PID")
        l1=$(tree_ticks "$ORIGIN_PID")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        read -r cpu eff origin_pct < <(python3 - "$c0" "$c1" "$HZ" "$reqs" "$rps" "$w" "${BASE[$p]:-}" "$l0" "$l1" "$DUR" "$NCPU" <<'EOF'
import sys
c0, c1, hz, reqs, rps, w = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
base = float(sys.argv[7]) if sys.argv[7] else rps
l0, l1, dur, ncpu = int(sys.argv[8]), int(sys.argv[9]), float(sys.argv[10]), int(sys.argv[11])
cpu = (c1 - c0) / hz / reqs * 100_000
eff = rps / (w * base)
origin = (l1 - l0) / hz / dur / (ncpu - w) * 100
print(f"{cpu:.2f} {eff:.2f} {origin:.0f}")
EOF
)
        [[ -n ${BASE[$p]:-} ]] || BASE[$p]=$rps
        printf '%-8s %3s %12s %16s %10s %12s\n' "$p" "$w" "$rps" "$cpu" "$eff" "${origin_pct} (origin)"
        kill "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
    done
    kill "$ORIGIN_PID" 2>/dev/null || true
    wait "$ORIGIN_PID" 2>/dev/null || true
done
echo
echo "$(date -u +%F) $(uname -r) $NCPU CPUs; wrk -t W -c $CONNS_PER_WORKER×W, ${DUR}s; RINGWAY_BIN=$RINGWAY_BIN"
