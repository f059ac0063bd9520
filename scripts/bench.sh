#!/usr/bin/env bash
# bench-proxy.sh: ringway and HAProxy 2.6 (mode tcp) against a direct baseline, in one run,
# on loopback (127.0.0.1) only.
#
# Method (the one used for the peers in /work/shared/research/perf-peers.md, so that the
# numbers can be compared):
#   * Split layout: the proxy runs alone on PROXY_CPU (default 1, one worker/thread); the load
#     generator and the origin share LOAD_CPU (default 0). Everything is pinned with taskset.
#     So `direct` saturates LOAD_CPU alone, and a proxied/direct ratio near 1 does not mean the
#     proxy is free: compare proxies by the CPU they spend per unit of work.
#   * Origin: nginx, one process, access_log off, `return 200 "ok";` on / and a 1 MiB static
#     file on /1m.bin; iperf3 -s for bulk. Both on free loopback ports.
#   * Proxies: direct (no proxy), ringway splice=true, ringway splice=false, haproxy (mode tcp,
#     nbthread 1, no logging), haproxy with `option splice-auto`. Each is started fresh in every
#     rep, given a 2 s unmeasured wrk warm-up, measured, and stopped with SIGTERM by its PID.
#   * Scenarios (every run bounded by `timeout`):
#       A  wrk -t1 -c50 -d${DUR}s --latency                  keep-alive, 2-byte body: req/s,
#                                                           p50/p99, CPU-s per 100k requests
#       B  the same with -H 'Connection: close'             one connection per request: conn/s,
#                                                           CPU-s per 100k connections
#       C  iperf3 -c ... -t ${DUR} -J (1 stream)             Gbit/s, CPU-s per GiB (bytes from
#                                                           end.sum_received.bytes)
#       L  wrk -t1 -c1 -d${L_DUR}s --latency (L_DUR = 5)     one request in flight: p50/p99
#       E  wrk -t1 -c10 -d${DUR}s .../1m.bin (not run unless SCENARIOS names it)
#     wrk runs with a small Lua `done()` hook that prints its summary as JSON (exact counts and
#     percentiles in µs); the hook adds no per-request Lua work.
#   * Proxy CPU = delta of utime+stime (fields 14 and 15 of /proc/PID/stat, clock ticks /
#     `getconf CLK_TCK`) of the proxy process, which covers all of its threads, sampled right
#     before and right after each timed run. Loopback receive work runs in the sender's context,
#     so this includes the kernel TCP work the proxy's sends cause: what a proxy really costs.
#   * Shared machine: before each timed run a quiet gate waits (up to QUIET_MAX_WAIT s) until
#     both test CPUs are under 10 % busy for 1.5 s; each run records noise % = busy time of the
#     test CPUs (wall time minus idle, iowait and steal from /proc/stat) not used by the proxy,
#     origin, iperf3 server or load generator (cutime+cstime of this shell), as a share of their
#     capacity. Runs above NOISE_MAX % are left out while 2 clean runs remain. It is an estimate
#     (tick sampling makes it ±3 % or so): it flags disturbed runs, nothing more.
#   * Each measurement is repeated REPS times (proxies interleaved within a rep); the report
#     gives the median, spread = (max-min)/median, and ratio to direct = median/median
#     (results.json also has the median of rep-paired ratios).
#
# Output: bench/results/<UTC date>-<hostname>/{results.json,table.md,env.txt}
#   env.txt: date, uname -a, CPU model, nproc, tool versions, settings, the exact commands run
#   and the generated configurations.
#
# Usage: scripts/bench-proxy.sh [--quick]   (--quick: DUR=3 REPS=1, about 2.5 min; the
#   default DUR=10 REPS=3 takes about 12 min, more while the quiet gate waits)
# Environment (defaults in brackets):
#   DUR [10]  REPS [3]  L_DUR [min(5, DUR)]  WARMUP [2]  PROXY_CPU [1]  LOAD_CPU [0]
#   RINGWAY_BIN [target/release/ringway]  SKIP_RINGWAY [0]  (1: leave the ringway rows out)
#   PROXIES ["direct ringway-splice ringway-buffered haproxy haproxy-splice"]
#   SCENARIOS ["A B C L"]  QUIET_MAX_WAIT [60; 10 with --quick; 0 = no gate]  NOISE_MAX [5]
#   RESULTS_ROOT [bench/results]  KEEP_TMP [0] (1: keep the temp dir with logs and configs)
# Needs: haproxy nginx wrk iperf3 python3 taskset timeout
#   (apt-get install -y haproxy nginx-light wrk iperf3)

set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
STAT=(python3 "$SCRIPT_DIR/lib/benchstat.py")

usage() { sed -n '/^# Usage:/,/^#   (apt-get/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
note() { printf 'bench-proxy: %s\n' "$*" >&2; }
die() { note "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------- options
QUICK=0
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 64 ;;
    esac
done
if [[ $QUICK == 1 ]]; then
    DUR=${DUR:-3} REPS=${REPS:-1} QUIET_MAX_WAIT=${QUIET_MAX_WAIT:-10}
fi
DUR=${DUR:-10}
REPS=${REPS:-3}
L_DUR=${L_DUR:-$((DUR < 5 ? DUR : 5))}
WARMUP=${WARMUP:-2}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
RINGWAY_BIN=${RINGWAY_BIN:-$REPO_ROOT/target/release/ringway}
SKIP_RINGWAY=${SKIP_RINGWAY:-0}
PROXIES=${PROXIES:-direct ringway-splice ringway-buffered haproxy haproxy-splice}
SCENARIOS=${SCENARIOS:-A B C L}
QUIET_MAX_WAIT=${QUIET_MAX_WAIT:-60}
NOISE_MAX=${NOISE_MAX:-5}
RESULTS_ROOT=${RESULTS_ROOT:-$REPO_ROOT/bench/results}
KEEP_TMP=${KEEP_TMP:-0}

for v in DUR REPS L_DUR WARMUP PROXY_CPU LOAD_CPU QUIET_MAX_WAIT NOISE_MAX; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((DUR > 0 && REPS > 0 && L_DUR > 0)) || die "DUR, REPS and L_DUR must be at least 1"
for s in $SCENARIOS; do
    [[ $s == [ABCLE] ]] || die "unknown scenario '$s' in SCENARIOS (known: A B C L E)"
done
selected=()
for p in $PROXIES; do
    case $p in
        direct | haproxy | haproxy-splice) selected+=("$p") ;;
        ringway-splice | ringway-buffered) [[ $SKIP_RINGWAY == 1 ]] || selected+=("$p") ;;
        *) die "unknown proxy '$p' in PROXIES" ;;
    esac
done
((${#selected[@]} > 0)) || die "no proxy selected"
PROXIES="${selected[*]}"

# ------------------------------------------------------------------------------ preflight
missing=()
for t in haproxy nginx wrk iperf3 python3 taskset timeout getconf; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if ((${#missing[@]} > 0)); then
    note "missing tools: ${missing[*]}"
    note "install them with: apt-get install -y haproxy nginx-light wrk iperf3"
    exit 1
fi
if [[ " $PROXIES " == *" ringway-"* ]] && [[ ! -x $RINGWAY_BIN ]]; then
    die "no ringway binary at $RINGWAY_BIN: build it (cargo build --release), point RINGWAY_BIN at it, or set SKIP_RINGWAY=1"
fi
for c in "$PROXY_CPU" "$LOAD_CPU"; do
    taskset -c "$c" true 2>/dev/null || die "CPU $c is not available to this process (see nproc, taskset -p $$)"
done
[[ $PROXY_CPU != "$LOAD_CPU" ]] || note "warning: PROXY_CPU = LOAD_CPU = $PROXY_CPU (one-core layout, not the split layout)"
NCPUS=2
[[ $PROXY_CPU != "$LOAD_CPU" ]] || NCPUS=1
CLK_TCK=$(getconf CLK_TCK)
# HAProxy asks for 2 fds per connection; raise the soft limit as far as we may.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE =~ ^[0-9]+$ ]] || NOFILE=1048576   # "unlimited"

START_DATE=$(date -u +%Y-%m-%d)
START_TIME=$(date -u +%Y-%m-%dT%H:%M:%SZ)
HOST=$(hostname -s 2>/dev/null || hostname)

# --------------------------------------------------------------- processes and cleanup
TMP=$(mktemp -d /tmp/bench-proxy.XXXXXX)
PIDS=()             # every background process this script started and has not stopped yet
PROXY_PID=""        # the proxy under test ("" for direct)

stop_pid() {        # SIGTERM one of our processes by PID, wait up to 5 s, then SIGKILL
    local pid=$1 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            note "warning: PID $pid ignored SIGTERM for 5 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    drop_pid "$pid"
}

drop_pid() {        # forget a PID once reaped (PIDs get reused)
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if [[ $KEEP_TMP == 1 || $rc != 0 ]]; then
        note "logs and configs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log_cmd() {         # remember an exact command line for env.txt
    local s
    printf -v s '%q ' "$@"
    printf '%s\n' "${s% }" >>"$TMP/commands.txt"
}

BG_PID=""
start_bg() {        # start_bg LOGFILE CMD...: run CMD in the background, remember its PID
    local log=$1
    shift
    log_cmd "$@"
    "$@" >"$log" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

RC=0
run_tracked() {     # run_tracked OUT ERR CMD...: run CMD to its end, sets RC. CMD runs in the
    local out=$1 err=$2 pid      # background and is waited for, so that a signal reaches our
    shift 2                      # trap at once and the cleanup stops CMD too
    "$@" >"$out" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    RC=0
    wait "$pid" || RC=$?
    drop_pid "$pid"
}

free_ports() { "${STAT[@]}" freeport "$1"; }

listening() {       # true when something listens on 127.0.0.1:$1 (reads /proc/net/tcp)
    local hex
    printf -v hex '%04X' "$1"
    grep -q "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A " /proc/net/tcp
}

http_ok() {         # one HTTP/1.0 GET / to 127.0.0.1:$1; true on status 200
    local line=""
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET / HTTP/1.0\r\nHost: bench\r\n\r\n' >&3
    IFS= read -r -t 5 line <&3 || true
    exec 3<&- 3>&-
    [[ $line == "HTTP/1."?" 200"* ]]
}

wait_ready() {      # wait_ready NAME PID LOG PORT...: ports listening within 10 s, PID alive
    local name=$1 pid=$2 log=$3 i port
    shift 3
    for port in "$@"; do
        for ((i = 0; ; i++)); do
            kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "$name exited during start-up (log above)"; }
            listening "$port" && break
            ((i < 100)) || { tail -n 20 "$log" >&2; die "$name does not listen on 127.0.0.1:$port after 10 s"; }
            sleep 0.1
        done
    done
}

# ----------------------------------------------------------------------- CPU accounting
TICKS=0
proc_ticks() {      # TICKS += utime+stime of PID $1 (all threads), in clock ticks
    local line f
    read -r line 2>/dev/null <"/proc/$1/stat" || return 0
    read -ra f <<<"${line##*) }"     # f[0] is field 3 (state): utime = f[11], stime = f[12]
    TICKS=$((TICKS + f[11] + f[12]))
}
children_ticks() {  # TICKS += cutime+cstime of this shell: the load tools it has waited for
    local line f
    read -r line <"/proc/$$/stat"
    read -ra f <<<"${line##*) }"
    TICKS=$((TICKS + f[13] + f[14]))
}
IDLE=0
cpu_idle() {        # IDLE = idle + iowait + steal ticks of the test CPUs, from /proc/stat
    # (busy time is taken as wall time minus this: on this VM the tick-sampled user/system
    # fields miss up to a third of the busy time of a wakeup-heavy load such as L, while the
    # idle time is measured exactly)
    local name idle iow steal
    IDLE=0
    while read -r name _ _ _ idle iow _ _ steal _; do
        case $name in
            "cpu$PROXY_CPU" | "cpu$LOAD_CPU") IDLE=$((IDLE + idle + iow + steal)) ;;
        esac
    done </proc/stat
}

# ------------------------------------------------------------------------------- origin
setup_origin() {
    local d=$TMP/origin
    mkdir -p "$d/www" "$d/tmp"
    head -c 1048576 /dev/zero >"$d/www/1m.bin"
    read -r ORIGIN_PORT IPERF_PORT < <(free_ports 2 | paste -sd ' ')
    cat >"$d/nginx.conf" <<EOF
# origin for bench-proxy.sh: one nginx process (master_process off = a single worker)
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $d/www;
        location = / { return 200 "ok"; }
        location / { }
    }
}
EOF
    start_bg "$d/nginx.log" taskset -c "$LOAD_CPU" nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf"
    NGINX_PID=$BG_PID
    start_bg "$d/iperf3.log" taskset -c "$LOAD_CPU" iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
    IPERF_PID=$BG_PID
    wait_ready nginx "$NGINX_PID" "$d/nginx.log" "$ORIGIN_PORT"
    wait_ready iperf3 "$IPERF_PID" "$d/iperf3.log" "$IPERF_PORT"
    (http_ok "$ORIGIN_PORT") 2>/dev/null || { cat "$d/error.log" >&2; die "nginx origin does not answer 200 on /"; }
}

# ------------------------------------------------------------------------------ proxies
# start_proxy NAME sets PROXY_PID ("" for direct), HTTP_PORT (to nginx), BULK_PORT (to iperf3)
start_proxy() {
    local name=$1 admin log=$TMP/$1.log
    case $name in
        direct)
            PROXY_PID="" HTTP_PORT=$ORIGIN_PORT BULK_PORT=$IPERF_PORT
            ;;
        ringway-splice | ringway-buffered)
            read -r HTTP_PORT BULK_PORT admin < <(free_ports 3 | paste -sd ' ')
            local splice=true
            [[ $name == ringway-splice ]] || splice=false
            cat >"$TMP/$name.toml" <<EOF
[runtime]
workers = 1
pin = false          # bench-proxy.sh pins the process with taskset
splice = $splice
shutdown_grace = "1s"

[admin]
listen = "127.0.0.1:$admin"

[[route]]
name = "bench"
listen = ["127.0.0.1:$HTTP_PORT"]
backends = ["127.0.0.1:$ORIGIN_PORT"]

[[route]]
name = "bench-bulk"
listen = ["127.0.0.1:$BULK_PORT"]
backends = ["127.0.0.1:$IPERF_PORT"]
EOF
            start_bg "$log" taskset -c "$PROXY_CPU" "$RINGWAY_BIN" run -c "$TMP/$name.toml"
            PROXY_PID=$BG_PID
            ;;
        haproxy | haproxy-splice)
            read -r HTTP_PORT BULK_PORT < <(free_ports 2 | paste -sd ' ')
            # HAProxy needs ~2*maxconn + 2*maxpipes fds and refuses to start if it cannot get
            # them: keep maxconn 20000 where the fd limit allows, lower it where it does not
            # (the benchmark never has more than 50 connections open).
            local maxconn=$(((NOFILE - 2 * 150 - 100) / 2))
            ((maxconn < 20000)) || maxconn=20000
            local splice="    # no option splice-auto: recv/send copies only"
            [[ $name == haproxy ]] || splice="    option splice-auto"
            cat >"$TMP/$name.cfg" <<EOF
global
    nbthread 1
    maxconn $maxconn
    maxpipes 150

defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
$splice

frontend bench
    bind 127.0.0.1:$HTTP_PORT
    default_backend origin

frontend bench-bulk
    bind 127.0.0.1:$BULK_PORT
    default_backend iperf3

backend origin
    server s1 127.0.0.1:$ORIGIN_PORT

backend iperf3
    server s1 127.0.0.1:$IPERF_PORT
EOF
            start_bg "$log" taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/$name.cfg"
            PROXY_PID=$BG_PID
            ;;
    esac
    if [[ -n $PROXY_PID ]]; then
        wait_ready "$name" "$PROXY_PID" "$log" "$HTTP_PORT" "$BULK_PORT"
        local i
        for ((i = 0; ; i++)); do
            (http_ok "$HTTP_PORT") 2>/dev/null && break
            ((i < 50)) || { tail -n 20 "$log" >&2; die "$name: GET / through 127.0.0.1:$HTTP_PORT does not return 200"; }
            sleep 0.1
        done
    fi
    # unmeasured warm-up
    local wcmd=(timeout 30 taskset -c "$LOAD_CPU" wrk -t1 -c50 "-d${WARMUP}s" "http://127.0.0.1:$HTTP_PORT/")
    log_cmd "${wcmd[@]}"
    run_tracked "$TMP/warmup.out" "$TMP/warmup.err" "${wcmd[@]}"
    ((RC == 0)) || { cat "$TMP/warmup.out" "$TMP/warmup.err" >&2; die "$name: warm-up failed"; }
}

# --------------------------------------------------------------------------- measuring
write_lua() {
    cat >"$TMP/report.lua" <<'EOF'
-- Print wrk's summary as one JSON line: exact counts, latency percentiles in microseconds.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"bytes":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.bytes, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
}

# measure REP PROXY SCENARIO: one timed run, appended to $TMP/runs.jsonl
measure() {
    local rep=$1 proxy=$2 scen=$3 tool=wrk cmd
    local url=http://127.0.0.1:$HTTP_PORT/ lim=$((DUR + 30))
    local wrk=(taskset -c "$LOAD_CPU" wrk -t1)
    case $scen in
        A) cmd=("${wrk[@]}" -c50 "-d${DUR}s" --latency -s "$TMP/report.lua" "$url") ;;
        B) cmd=("${wrk[@]}" -c50 "-d${DUR}s" --latency -H 'Connection: close' -s "$TMP/report.lua" "$url") ;;
        L) cmd=("${wrk[@]}" -c1 "-d${L_DUR}s" --latency -s "$TMP/report.lua" "$url")
           lim=$((L_DUR + 30)) ;;
        E) cmd=("${wrk[@]}" -c10 "-d${DUR}s" --latency -s "$TMP/report.lua" "${url}1m.bin") ;;
        C) tool=iperf3
           cmd=(taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$BULK_PORT" -t "$DUR" -J) ;;
    esac
    cmd=(timeout "$lim" "${cmd[@]}")
    log_cmd "${cmd[@]}"

    local qw=""
    if ((QUIET_MAX_WAIT > 0)); then
        run_tracked "$TMP/quiet.out" /dev/null \
            "${STAT[@]}" quiet --cpus "$PROXY_CPU,$LOAD_CPU" --max-wait "$QUIET_MAX_WAIT"
        qw=$(<"$TMP/quiet.out")
    fi

    local out=$TMP/run-$rep-$proxy-$scen.out rc
    local p0=0 p1=0 k0 k1 i0 i1 t0 t1
    # --- sample before (builtins only: no process is forked inside the window)
    TICKS=0; [[ -z $PROXY_PID ]] || proc_ticks "$PROXY_PID"; p0=$TICKS
    proc_ticks "$NGINX_PID"; proc_ticks "$IPERF_PID"; children_ticks; k0=$TICKS
    cpu_idle; i0=$IDLE
    t0=$EPOCHREALTIME
    run_tracked "$out" "$out.err" "${cmd[@]}"
    # --- sample after
    t1=$EPOCHREALTIME
    cpu_idle; i1=$IDLE
    TICKS=0; [[ -z $PROXY_PID ]] || proc_ticks "$PROXY_PID"; p1=$TICKS
    proc_ticks "$NGINX_PID"; proc_ticks "$IPERF_PID"; children_ticks; k1=$TICKS

    rc=$RC
    local proxy_ticks=""
    [[ -z $PROXY_PID ]] || proxy_ticks=$((p1 - p0))
    "${STAT[@]}" record --scenario "$scen" --proxy "$proxy" --rep "$rep" --tool "$tool" \
        --output "$out" --cmd "$(tail -n 1 "$TMP/commands.txt")" --rc "$rc" \
        --t0 "$t0" --t1 "$t1" --clk-tck "$CLK_TCK" --proxy-ticks "$proxy_ticks" \
        --known-ticks "$((k1 - k0))" --idle-ticks "$((i1 - i0))" --ncpus "$NCPUS" \
        --quiet-wait "$qw" >>"$TMP/runs.jsonl"
    if ((rc != 0)) && [[ -s $out.err ]]; then sed 's/^/    /' "$out.err" | tail -n 5 >&2; fi
}

# ---------------------------------------------------------------------------- env.txt
write_env() {
    local envfile=$1 v
    {
        echo "# bench-proxy.sh run"
        echo "date_utc: $START_TIME"
        echo "host: $HOST"
        echo "uname -a: $(uname -a)"
        echo "cpu model: $(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')"
        echo "nproc: $(nproc)"
        echo "layout: proxy on CPU $PROXY_CPU; load generator + origin on CPU $LOAD_CPU"
        echo "settings: DUR=$DUR L_DUR=$L_DUR REPS=$REPS WARMUP=$WARMUP QUIET_MAX_WAIT=$QUIET_MAX_WAIT NOISE_MAX=$NOISE_MAX"
        echo "proxies: $PROXIES"
        echo "scenarios: $SCENARIOS"
        echo "clk_tck: $CLK_TCK"
        echo "ulimit -n: $NOFILE"
        for v in net.ipv4.tcp_congestion_control net.ipv4.tcp_wmem net.ipv4.tcp_rmem \
            net.ipv4.tcp_tw_reuse net.ipv4.ip_local_port_range kernel.io_uring_disabled; do
            echo "sysctl $v: $(tr '\t' ' ' <"/proc/sys/${v//.//}" 2>/dev/null || echo n/a)"
        done
        echo
        echo "## versions"
        echo "haproxy: $(haproxy -v 2>&1 | head -n 1 || true)"
        echo "nginx: $(nginx -v 2>&1 | head -n 1 || true)"
        echo "wrk: $(wrk -v 2>&1 | head -n 1 || true)"
        echo "iperf3: $(iperf3 -v 2>&1 | head -n 1 || true)"
        if [[ " $PROXIES " == *" ringway-"* ]]; then
            echo "ringway binary: $RINGWAY_BIN"
            echo "ringway --version: $(timeout 5 "$RINGWAY_BIN" --version 2>&1 | head -n 1 || true)"
            echo "ringway sha256: $(sha256sum "$RINGWAY_BIN" | cut -d' ' -f1)"
        fi
        echo "repo: $(git -C "$REPO_ROOT" rev-parse -q --verify HEAD || echo 'no commit') $(git --no-optional-locks -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -q . && echo '(working tree modified)')"
        echo
        echo "## commands run, in order (ports are picked fresh for each proxy start)"
        cat "$TMP/commands.txt"
        echo
        echo "## generated configurations (ports from the last rep)"
        for v in "$TMP/origin/nginx.conf" "$TMP"/*.cfg "$TMP"/*.toml "$TMP/report.lua"; do
            [[ -f $v ]] || continue
            echo "### ${v#"$TMP"/}"
            cat "$v"
            echo
        done
    } >"$envfile"
}

# --------------------------------------------------------------------------------- main
note "layout: proxy on CPU $PROXY_CPU, load generator + origin on CPU $LOAD_CPU"
note "proxies: $PROXIES; scenarios: $SCENARIOS; DUR=${DUR}s (L ${L_DUR}s), REPS=$REPS"
: >"$TMP/commands.txt"
: >"$TMP/runs.jsonl"
write_lua
setup_origin
note "origin: nginx 127.0.0.1:$ORIGIN_PORT (PID $NGINX_PID), iperf3 -s 127.0.0.1:$IPERF_PORT (PID $IPERF_PID)"

for ((rep = 1; rep <= REPS; rep++)); do
    for proxy in $PROXIES; do
        note "rep $rep/$REPS: $proxy"
        start_proxy "$proxy"
        for scen in $SCENARIOS; do
            measure "$rep" "$proxy" "$scen"
            if [[ -n $PROXY_PID ]] && ! kill -0 "$PROXY_PID" 2>/dev/null; then
                tail -n 20 "$TMP/$proxy.log" >&2
                note "warning: $proxy died during scenario $scen (log above); skipping its other scenarios in rep $rep"
                break
            fi
        done
        if [[ -n $PROXY_PID ]]; then stop_pid "$PROXY_PID"; fi
        PROXY_PID=""
    done
done

OUT_DIR=$RESULTS_ROOT/$START_DATE-$HOST
n=2
while [[ -e $OUT_DIR ]]; do OUT_DIR=$RESULTS_ROOT/$START_DATE-$HOST.$n; n=$((n + 1)); done
mkdir -p "$OUT_DIR"
write_env "$OUT_DIR/env.txt"
echo
"${STAT[@]}" report --runs "$TMP/runs.jsonl" --outdir "$OUT_DIR" --proxies "$PROXIES" \
    --noise-max "$NOISE_MAX" --meta "date=$START_TIME" --meta "host=$HOST" \
    --meta "proxy_cpu=$PROXY_CPU" --meta "load_cpu=$LOAD_CPU" --meta "dur_s=$DUR" \
    --meta "l_dur_s=$L_DUR" --meta "reps=$REPS" --meta "clk_tck=$CLK_TCK" \
    --meta "proxies=$PROXIES" --meta "scenarios=$SCENARIOS" --meta "kernel=$(uname -r)"
echo
note "results in ${OUT_DIR#"$REPO_ROOT"/}/ (results.json, table.md, env.txt)"
