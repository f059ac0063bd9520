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
# shellcheck source=bench/lib.sh
. bench/lib.sh
need strace nginx wrk python3
[[ -x $RINGWAY_BIN ]] || { echo "syscalls.sh: build first: cargo build --release" >&2; exit 1; }
start_origin 1

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
    start_proxy "$p" 1 "$listen"
    count "$p" "$listen" keepalive
    count "$p" "$listen" close
    stop_proxy
done
echo
echo "$(date -u +%F) $(uname -r) $(nproc) CPUs; N≈$N requests per case (wrk -t1 -c10); RINGWAY_BIN=$RINGWAY_BIN"
