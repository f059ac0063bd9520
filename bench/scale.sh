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
# shellcheck source=bench/lib.sh
. bench/lib.sh
need nginx wrk python3 taskset
[[ -x $RINGWAY_BIN ]] || { echo "scale.sh: build first: cargo build --release" >&2; exit 1; }

HZ=$(getconf CLK_TCK)
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
    start_origin "$w" "$LOAD_CPUS"
    for p in $PROXIES; do
        [[ $p == haproxy ]] && ! command -v haproxy >/dev/null && continue
        listen=$(port)
        start_proxy "$p" "$w" "$listen" "0-$((w - 1))"
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
        stop_proxy
    done
    kill "$ORIGIN_PID" 2>/dev/null || true
    wait "$ORIGIN_PID" 2>/dev/null || true
done
echo
echo "$(date -u +%F) $(uname -r) $NCPU CPUs; wrk -t W -c $CONNS_PER_WORKER×W, ${DUR}s; RINGWAY_BIN=$RINGWAY_BIN"
