#!/usr/bin/env bash
# bench/profile.sh: where a proxy's CPU goes, as flame graphs (SVG) and a top-symbols list.
#
# Runs scenario A (keep-alive, wrk -c50) and B (a new connection per request, wrk -c50 with
# `Connection: close`) through each proxy (1 worker / 1 thread, alone on PROXY_CPU; origin and
# wrk on LOAD_CPU) while `perf record` samples the proxy (software cpu-clock events, which work
# in a VM; call graphs by DWARF unwinding), then folds the stacks with inferno
# (`cargo install inferno`) into OUT/flame-PROXY-SCEN.svg and prints the top symbols.
#
# Usage: bench/profile.sh OUT_DIR
# Environment: RINGWAY_BIN [target/release/ringway]  PROXIES ["ringway haproxy"]
#   SCENARIOS ["A B"]  DUR [5] s of sampling  FREQ [999] Hz  PROXY_CPU [1]  LOAD_CPU [0]
# Needs: perf (Debian: linux-perf), inferno-collapse-perf and inferno-flamegraph, nginx, wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:?usage: bench/profile.sh OUT_DIR}
RINGWAY_BIN=${RINGWAY_BIN:-$PWD/target/release/ringway}
PROXIES=${PROXIES:-ringway haproxy}
SCENARIOS=${SCENARIOS:-A B}
DUR=${DUR:-5} FREQ=${FREQ:-999} PROXY_CPU=${PROXY_CPU:-1} LOAD_CPU=${LOAD_CPU:-0}
# shellcheck source=bench/lib.sh
. bench/lib.sh
need perf inferno-collapse-perf inferno-flamegraph nginx wrk python3 taskset
mkdir -p "$OUT"
start_origin 1 "$LOAD_CPU"

for p in $PROXIES; do
    [[ $p == haproxy ]] && ! command -v haproxy >/dev/null && continue
    for scen in $SCENARIOS; do
        hdr=()
        [[ $scen == B ]] && hdr=(-H "Connection: close")
        listen=$(port)
        start_proxy "$p" 1 "$listen" "$PROXY_CPU"
        taskset -c "$LOAD_CPU" wrk -t1 -c50 -d$((DUR + 3))s "${hdr[@]}" "http://127.0.0.1:$listen/" >"$TMP/wrk.txt" &
        wrk_pid=$!
        PIDS+=("$wrk_pid")
        sleep 1
        perf record -q -e cpu-clock -F "$FREQ" --call-graph dwarf,16384 -p "$PROXY_PID" \
            -o "$TMP/perf.data" -- sleep "$DUR" 2>/dev/null
        wait "$wrk_pid" || true
        perf script -i "$TMP/perf.data" 2>/dev/null | inferno-collapse-perf >"$TMP/folded"
        inferno-flamegraph --title "$p, scenario $scen ($(date -u +%F), $(uname -r))" \
            <"$TMP/folded" >"$OUT/flame-$p-$scen.svg"
        echo "== $p, scenario $scen: $(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.txt") req/s under perf; samples by object:"
        perf report -i "$TMP/perf.data" --no-children --sort dso --stdio 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -4 || true
        echo "   top self symbols (% of samples):"
        perf report -i "$TMP/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -15 || true   # head closes the pipe early
        stop_proxy
    done
done
echo "flame graphs in $OUT"
