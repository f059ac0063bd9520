# bench/lib.sh: what bench/syscalls.sh, bench/scale.sh and bench/profile.sh share (sourced).
# Loopback only; every process started here is recorded in PIDS for the caller's cleanup.
# shellcheck shell=bash

PIDS=()
TMP=$(mktemp -d "/tmp/ringway-${0##*/}.XXXXXX")
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

need() {   # need TOOL...: exit 1 naming the first one missing
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "${0##*/}: $t is missing" >&2; exit 1; }
    done
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "${0##*/}: nothing listens on $1" >&2
    exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime+stime of a whole process

# HAProxy refuses to start when 2*maxconn fds are not available.
MAXCONN=$((($(ulimit -n) - 200) / 2))
((MAXCONN < 20000)) || MAXCONN=20000

start_origin() {   # start_origin PROCESSES [CPUS]: nginx `return 200 "ok"`; sets ORIGIN, ORIGIN_PID
    local n=$1 cpus=${2:-} d=$TMP/origin-$1 master=off
    ((n == 1)) || master=on
    ORIGIN=$(port)
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<CONF
daemon off;
master_process $master;
worker_processes $n;
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
CONF
    if [[ -n $cpus ]]; then
        taskset -c "$cpus" nginx -c "$d/nginx.conf" >/dev/null 2>&1 &
    else
        nginx -c "$d/nginx.conf" >/dev/null 2>&1 &
    fi
    ORIGIN_PID=$!
    PIDS+=("$ORIGIN_PID")
    wait_port "$ORIGIN"
}

# start_proxy NAME WORKERS LISTEN [CPUS]: ringway (NAME ringway = splice "auto",
# ringway-buffered = false, ringway-splice = true) or haproxy, forwarding LISTEN to $ORIGIN,
# pinned to CPUS when given; sets PROXY_PID.
start_proxy() {
    local name=$1 w=$2 listen=$3 cpus=${4:-} splice pin=false run=()
    [[ -n $cpus ]] && run=(taskset -c "$cpus")
    case $name in
        ringway | ringway-buffered | ringway-splice)
            splice='"auto"'
            [[ $name == ringway-splice ]] && splice=true
            [[ $name == ringway-buffered ]] && splice=false
            [[ -n $cpus ]] && pin=true
            cat >"$TMP/$name.toml" <<CONF
[runtime]
workers = $w
pin = $pin
splice = $splice
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:0"
token = "bench-token-0123456789"
[state]
file = "$TMP/$name-state.json"
[[route]]
name = "bench"
listen = ["127.0.0.1:$listen"]
backends = ["127.0.0.1:$ORIGIN"]
CONF
            rm -f "$TMP/$name-state.json"
            "${run[@]}" "$RINGWAY_BIN" run -c "$TMP/$name.toml" >"$TMP/$name.log" 2>&1 &
            ;;
        haproxy)
            local map=""
            [[ -n $cpus ]] && map="    cpu-map auto:1/1-$w $cpus"
            cat >"$TMP/haproxy.cfg" <<CONF
global
    nbthread $w
$map
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
CONF
            "${run[@]}" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
            ;;
        *) echo "${0##*/}: unknown proxy $name" >&2; exit 64 ;;
    esac
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$listen"
}

stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}
