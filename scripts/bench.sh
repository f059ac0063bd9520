#!/usr/bin/env bash
# bench.sh: ringway against HAProxy 2.6 (mode tcp), nginx (stream) and a direct baseline, in
# one run, on loopback (127.0.0.1) only.
#
# Method (the one used for the peers in /work/shared/research/perf-peers.md, so that the
# numbers can be compared):
#   * Split layout: the proxy runs alone on PROXY_CPU (default 1, one worker/thread/process);
#     the load generator and the origin share LOAD_CPU (default 0). Everything is pinned with
#     taskset. So `direct` saturates LOAD_CPU alone, and a proxied/direct ratio near 1 does not
#     mean the proxy is free: compare proxies by the CPU they spend per unit of work.
#     A1 is the exception: proxy, wrk and origin all on LOAD_CPU.
#   * Origin: nginx, one process, access_log off, `return 200 "ok";` on / and a 1 MiB static
#     file on /1m.bin, on two ports (the second one is the "new version" scenario S switches
#     to, same content); iperf3 -s for bulk. All on free loopback ports.
#   * Proxies (PROXIES), each on its own fresh loopback ports:
#       direct            no proxy
#       ringway           ringway, default relay: splice = "auto" (1 worker)
#       ringway-buffered  ringway, splice = false: copy only (1 worker)
#       ringway-splice    ringway, splice = true: splice from the first byte (1 worker)
#       ringway-busy      ringway, default relay with busy_poll = "50us" (1 worker; not in the
#                         default list: name it in PROXIES)
#       haproxy           HAProxy mode tcp, nbthread 1, no logging
#       haproxy-splice    the same with `option splice-auto`
#       ringway-sni       B-sni only: ringway whose address is shared by two routes, one with
#                         `[route.match] sni = ["bench.test"]` to the origin and a default one
#                         to the origin's second port, so every connection is peeked
#       haproxy-sni       B-sni only: HAProxy routing by req.ssl_sni (inspect-delay 5s, accept
#                         on req_ssl_hello_type 1, use_backend if req.ssl_sni -i bench.test,
#                         default_backend the origin's second port)
#       ringway-restart   U only: ringway (as `ringway`) restarted the plain way during the load
#     B-sni adds ringway-sni right after ringway and haproxy-sni right after haproxy when they
#     are not named in PROXIES; U adds ringway-restart right after ringway when not named.
#       ringway-rr        balance comparison (not in the default list: name them in PROXIES):
#       ringway-lc        ringway whose route has two backends, the origin's two ports (one
#       ringway-hash      nginx), with balance = "round_robin", "least_connections" and
#                         "hash_source". Each of ringway-lc and ringway-hash gets a
#                         "vs ringway-rr" figure: the median of the rep-paired differences of
#                         proxy CPU per unit, in % of ringway-rr's (the target: within 5 %).
#                         e.g. SCENARIOS="A B" PROXIES="direct ringway-rr ringway-lc
#                         ringway-hash haproxy"
#       ringway-noka      ringway with TCP keepalive and TCP_USER_TIMEOUT off on both routes
#                         ([route.keepalive] idle = user_timeout = "0s"): what the default
#                         keepalive's setsockopt calls cost; gets a "vs ringway" figure like
#                         the above (not in the default list)
#       nginx-stream      nginx `stream {}` proxy_pass, one process (worker_processes 1,
#                         master_process off, so that the process measured is the one working);
#                         the stream module is loaded with load_module when not built in
#     A proxy is started fresh for each group of scenarios in every rep, given a WARMUP s
#     unmeasured wrk warm-up (not for D, S, R and U), measured, and stopped with SIGTERM by its
#     PID.
#     ringway and ringway-load run from copies taken at start: a rebuild meanwhile changes
#     nothing, and env.txt has the sha256 of what ran. ringway's configurations have their
#     admin API on a fresh loopback port, a token generated for this run and their state file
#     in the temp dir (nothing is written outside it).
#   * Scenarios (SCENARIOS; every run bounded by `timeout`):
#       A       wrk -t1 -c50 -d${DUR}s --latency         keep-alive, 2-byte body: req/s,
#                                                       p50/p99, CPU-s per 100k requests
#       A-ac    autocannon -c 50 -d ${DUR} -j             the same load from autocannon (node;
#                                                       latency in whole ms); optional tool
#       A1      as A, proxy + wrk + origin all on LOAD_CPU: req/s; the goal is
#               ringway >= 0.6 x direct there
#       B       as A with -H 'Connection: close'         one connection per request: conn/s,
#                                                       CPU-s per 100k connections
#       B-sni   peek cost: ringway-load --mode conn --closed-loop -c 50 --exchange hello
#               -d ${DUR}s: a new connection per exchange, each sending one fixed TLS
#               ClientHello (server name bench.test) and reading the origin's answer to its
#               close (nginx answers TLS bytes with a 400 and closes; no handshake is made).
#               Proxies: direct, ringway (one route, no match: no peek), ringway-sni (the
#               address shared by an sni route and a default route: every connection is
#               peeked and its ClientHello parsed before the backend is picked), haproxy
#               (plain) and haproxy-sni (req.ssl_sni routing); each on a fresh start whose
#               warm-up is WARMUP s of the same load. Figures: conn/s, CPU-s per 100k
#               connections, and for ringway-sni / haproxy-sni the added CPU per connection
#               over ringway / haproxy (µs; median of the rep-paired differences). For
#               ringway-sni, ringway's ringway_listen_routed_total is read after each run: the
#               connections must have been routed by sni. Not in the default list (5 more
#               proxy starts per rep, about 2 min more in a full run): SCENARIOS="... B-sni".
#       C       iperf3 -c ... -t ${DUR} -J (1 stream)    Gbit/s, CPU-s per GiB (bytes from
#                                                       end.sum_received.bytes)
#       C-http  wrk -t1 -c10 -d${DUR}s .../1m.bin        1 MiB HTTP responses: Gbit/s, CPU-s/GiB
#       D       ringway-load --mode idle -c ${IDLE_CONNS} -d ${D_HOLD}s: N idle connections
#               held through the proxy (fresh start, no warm-up). Figure: growth of the
#               proxy's VmRSS (/proc/PID/status) from before the connections are opened to
#               D_SETTLE s after ringway-load says `holding N connections`, per connection,
#               in bytes; also the proxy's thread count while held and CPU-s per 100k
#               connections. VmRSS is user-space memory only: kernel socket buffers (and for
#               ringway the io_uring kernel state) are not in it. Not run for direct.
#       L       wrk -t1 -c1 -d${L_DUR}s --latency         one request in flight: p50/p99
#       S       switch of backends under load: ringway-load --mode conn --rate ${S_RATE}
#               -d ${S_DUR}s --exchange http --timeout 2s (a new connection per request, open
#               loop) through a fresh proxy (no warm-up); at S_DUR/2 the route moves from the
#               origin's first port to its second one. ringway: `ringway switch bench
#               127.0.0.1:PORT2` over the admin API (health-gated, old sessions drain);
#               HAProxy: the "stop/start with a new config" way: a cfg whose backend is PORT2
#               is written, the running haproxy is stopped (SIGTERM by PID, waited for) and a
#               new one started on the same ports. Figures: failed requests (every outcome but
#               ok: refused, reset, timeout, ...) of all sent, p50/p99 latency of the ok ones
#               (from the schedule, so stalls count), and the switch time: how long `ringway
#               switch` took (traffic flows meanwhile), or for HAProxy the downtime from
#               SIGTERM to the new process listening. Not run for direct and nginx-stream; no
#               proxy CPU figure.
#       R       route added and removed under load, ringway only: the load of S on route
#               bench through a fresh ringway (no warm-up); at S_DUR/3 `ringway route add
#               extra --listen 127.0.0.1:PORT --backend ORIGIN` (PORT fresh, below the
#               ephemeral range; PUT /routes/extra, answered once every worker applied it),
#               then GET / on PORT is probed (bounded: 1 s per try, 5 s in all) until it
#               answers 200; at 2*S_DUR/3 `ringway route remove extra` (DELETE, answered once
#               every worker closed the port's listener), then one connect to PORT (1 s
#               timeout) must be refused; 1.1 s later `ringway metrics` is read for
#               ringway_listener_queue_resets_total (a total: only this port retires). The changes are
#               made and timed by `benchstat.py route-phase` (a Python process started with
#               the load, so nothing is forked between the add's return and the first probe).
#               Figures: failed requests of the load on bench (of all sent; must be 0), p50/p99
#               as in S, add_s and remove_s (how long the commands took), ready_s (from the
#               add's return until the first 200 on PORT, that request included),
#               refused_after_remove (yes/no) and the removed port's queue resets. Not run
#               for HAProxy or nginx: neither can add a listener at runtime without a reload
#               (a different operation: S measures HAProxy's stop/start), so there is no
#               peer to compare with; not for direct; no proxy CPU figure.
#       U       binary upgrade / reload / restart under load: the load of S (ringway-load --mode
#               conn --rate ${S_RATE} -d ${S_DUR}s --exchange http --timeout 2s) through a fresh
#               proxy (no warm-up); UPGRADES (3) operations spaced evenly, at k*S_DUR/(UPGRADES+1)
#               for k = 1..UPGRADES, each one after the previous returned. Three peers:
#                 ringway          `ringway upgrade --admin ... --token ...` (the same binary:
#                                  the mechanism is what is measured): the running ringway
#                                  starts a new process, hands it its listening sockets and
#                                  quiet sessions over SCM_RIGHTS, and the command returns once
#                                  the new one serves; op_s = how long the command took.
#                                  After each, `ringway status --json` must name a new pid (the
#                                  one the command printed): "pid changed". The old process
#                                  exits once its last session ends (checked after the load:
#                                  "old exited", waited for up to 5 s).
#                 haproxy          HAProxy 2.6 in master-worker mode (haproxy -W -db -S
#                                  MASTER.sock -f CFG, `stats socket ... expose-fd listeners`
#                                  in the cfg), reloaded by `kill -USR2 MASTER_PID`: HAProxy
#                                  2.6's documented seamless reload (management.txt: in
#                                  master-worker mode the master re-executes itself and passes
#                                  -x sockpair@ so that the new worker takes the listening
#                                  sockets over from the old one; the old worker gets SIGUSR1
#                                  and finishes its sessions, as -sf does). op_s = from the
#                                  signal until the master has a new worker process (polled
#                                  every 10 ms in /proc/MASTER/task/MASTER/children);
#                                  "pid changed" = the worker's pid changed.
#                 ringway-restart  ringway restarted the plain way: SIGTERM by pid, wait for
#                                  the exit (shutdown_grace = "1s"), `ringway run -c` the same
#                                  file again; op_s = downtime from the SIGTERM until the new
#                                  process listens (as HAProxy's in S).
#               Figures: failed requests (every outcome but ok: refused, reset, timeout, ...) of
#               all sent, p50/p99 of the ok ones (from the schedule, so stalls count), the mean
#               op_s over every operation of the runs used (and min/max), and for ringway and
#               haproxy how many operations changed the pid. Run for ringway, ringway-restart
#               and haproxy only (not direct, the ringway variants, haproxy-splice or
#               nginx-stream); no proxy CPU figure (the process is replaced). In the default
#               list: it adds 3 proxies x (S_DUR + ~3 s) per rep, about as much as S.
#       W       per-worker balance, ringway only, not in the default list (SCENARIOS=W): a
#               fresh ringway with W_WORKERS (2) workers pinned one per CPU of W_CPUS
#               (PROXY_CPU,LOAD_CPU) relays iperf3 -P W_STREAMS (3) -t W_DUR (DUR) to the
#               origin's iperf3 -s. SO_REUSEPORT hashes each connection to a worker, so with
#               more long heavy streams than workers some worker carries two or more. From
#               ringway's /metrics (`ringway metrics`): ringway_worker_imbalance and each
#               worker's open sessions half-way, each worker's ringway_worker_cpu_seconds_total
#               and ringway_worker_bytes_total increase over the run (read 1.1 s after it, for
#               the last snapshot). Figures: imbalance, sessions / CPU-s / GiB per worker, the
#               busiest worker's share of the workers' CPU, Gbit/s; in workers.json and a W
#               section of table.md (not in results.json). No quiet gate, no noise figure.
#     (E, the old name of C-http, is still accepted.) wrk runs with a small Lua `done()` hook
#     that prints its summary as JSON (exact counts and percentiles in µs); the hook adds no
#     per-request Lua work.
#   * Proxy CPU = delta of utime+stime (fields 14 and 15 of /proc/PID/stat, clock ticks /
#     `getconf CLK_TCK`) of the proxy process, which covers all of its threads, sampled right
#     before and right after each timed run, per 100k requests (A, A-ac, A1, L), per 100k
#     connections (B, B-sni, D) or per GiB (C, C-http); none for S and R. Loopback receive work runs in
#     the sender's context, so this includes the kernel TCP work the proxy's sends cause: what
#     a proxy really costs.
#   * Shared machine: before each timed run a quiet gate waits (up to QUIET_MAX_WAIT s, and
#     QUIET_BUDGET s over the whole run) until the test CPUs are under 10 % busy for
#     QUIET_WINDOW s; each run records noise % = busy
#     time of the test CPUs (wall time minus idle, iowait and steal from /proc/stat) not used
#     by the proxy, origin, iperf3 server or load generator (cutime+cstime of this shell), as
#     a share of their capacity (A1: LOAD_CPU only). Runs above NOISE_MAX % are left out while
#     2 clean runs remain. It is an estimate (tick sampling makes it ±3 % or so): it flags
#     disturbed runs, nothing more.
#   * Each measurement is repeated REPS times (proxies interleaved within a rep); the report
#     gives the median, spread = (max-min)/median, and ratio to direct = median/median
#     (results.json also has the median of rep-paired ratios).
#
# Output: bench/results/<UTC date>-<hostname>[.N]/ (under RESULTS_ROOT):
#   results.json  meta, summary (one row per scenario and proxy: figure, ratio_to_direct,
#                 proxy_cpu_per_unit, spread, noise, ...), runs (every timed run), skipped
#   table.md      the table and how to read it (also printed on stdout)
#   env.txt       date, uname -a, CPU model, nproc, tool versions, settings, the exact
#                 commands run and the generated configurations
#   workers.json  scenario W's runs (only when W ran)
#   plot-<scenario>.png  per scenario: proxy CPU per unit and ratio to direct (for D: bytes
#                 per connection; for S: failed requests, p99 and switch time; for R:
#                 failed requests, p99 and the route add / ready / remove times; for U:
#                 failed requests, p99 and the mean operation time), ringway vs peers;
#                 needs matplotlib (skipped with a note)
#
# Usage: scripts/bench.sh [--quick] [--install | --install-only]
#   --quick         smoke run: DUR=2 REPS=1 WARMUP=1 IDLE_CONNS=500 D_HOLD=2 S_DUR=4, a 0.3 s
#                   quiet window, gates waiting 3 s at most each and 20 s in all
#                   (QUIET_BUDGET). Measured on the 2-vCPU VM (quiet): 2 min 22 s without S,
#                   S alone 22 s (4 proxies x (S_DUR + ~1.5 s)), R alone about 13 s (2
#                   ringway proxies x (S_DUR + ~2.5 s)) and U about 21 s (estimated: 3
#                   proxies x (S_DUR + ~3 s)): about 3.5 min.
#   (no option)     DUR=5 REPS=3: about 17 min on the 2-vCPU VM without S, R, U (one rep with
#                   these settings measured 5 min 30 s), more while the quiet gate waits; S adds
#                   4 proxies x (S_DUR + ~2 s) per rep (measured: 49 s per rep with S_DUR=10),
#                   R 2 ringway proxies x (S_DUR + ~2 s) per rep, U 3 proxies x (S_DUR +
#                   ~3.7 s) per rep (measured: about 41 s per rep
#                   without the quiet gates' waits), so about 22.5 min in all
#   --install       first install what is missing (apt-get update + install, with sudo when
#                   not root; autocannon with npm into bench/.tools), then run
#   --install-only  install, then exit
#   Without --install it says what is missing and how to install it, then runs what it can:
#   haproxy, nginx, wrk, iperf3 (and python3, taskset, timeout) are required; without
#   autocannon A-ac is skipped, without matplotlib the plots, without the nginx stream module
#   the nginx-stream proxy, without target/release/ringway-load scenarios D, S, R, U and B-sni.
# Environment (defaults in brackets):
#   DUR [5]  REPS [3]  L_DUR [min(5, DUR)]  WARMUP [2]  PROXY_CPU [1]  LOAD_CPU [0]
#   PROXIES ["direct ringway ringway-buffered ringway-splice haproxy haproxy-splice nginx-stream"]
#   SCENARIOS ["A A-ac A1 B C C-http D L S R U"; W and B-sni only when named]
#   SNI_NAME [bench.test] (B-sni: the server name sent and matched)
#   W_WORKERS [2]  W_STREAMS [3]  W_DUR [DUR]  W_CPUS [PROXY_CPU,LOAD_CPU] (W)
#   IDLE_CONNS [1000] (D)  D_HOLD [4] (s, ringway-load -d)  D_SETTLE [0.5] (s)
#   S_RATE [1000] (S, R, U: new connections per second)  S_DUR [10; 4 with --quick] (s, S, R
#   and U, at least 2)  UPGRADES [3] (U: operations per run, at least 1)
#   QUIET_MAX_WAIT [60; 0 = no gate]  QUIET_WINDOW [1]  NOISE_MAX [5]  PLOTS [1]
#   QUIET_BUDGET [none; 20 with --quick] (s the gates may wait in all; past it they only
#   sample the window, and noisy runs are still flagged by their noise %)
#   RINGWAY_BIN [target/release/ringway]  RINGWAY_LOAD_BIN [target/release/ringway-load]
#   SKIP_RINGWAY [0] (1: leave the ringway rows out)  AUTOCANNON [bench/.tools/.../autocannon]
#   PYTHON [python3; for the plots the first of PYTHON, python3, /usr/bin/python3 that has
#   matplotlib]  RESULTS_ROOT [bench/results]  KEEP_TMP [0] (1: keep the temp dir)
#   Build first: cargo build --release --workspace (ringway and ringway-load).
# Debian packages: wrk iperf3 haproxy nginx-light libnginx-mod-stream python3-matplotlib
#   (nodejs npm for autocannon)

set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
PYTHON=${PYTHON:-python3}
STAT=("$PYTHON" "$SCRIPT_DIR/lib/benchstat.py")
TOOLS_DIR=$REPO_ROOT/bench/.tools
AUTOCANNON_PKG=autocannon@9
SCRIPT_T0=$EPOCHREALTIME

usage() { sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }
note() { printf 'bench: %s\n' "$*" >&2; }
die() { note "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------- options
QUICK=0 INSTALL=0 INSTALL_ONLY=0
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        --install) INSTALL=1 ;;
        --install-only) INSTALL=1 INSTALL_ONLY=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 64 ;;
    esac
done
if [[ $QUICK == 1 ]]; then
    DUR=${DUR:-2} REPS=${REPS:-1} WARMUP=${WARMUP:-1} IDLE_CONNS=${IDLE_CONNS:-500}
    D_HOLD=${D_HOLD:-2} QUIET_MAX_WAIT=${QUIET_MAX_WAIT:-3} QUIET_WINDOW=${QUIET_WINDOW:-0.3}
    S_DUR=${S_DUR:-4}
    QUIET_BUDGET=${QUIET_BUDGET:-20}
fi
DUR=${DUR:-5}
REPS=${REPS:-3}
L_DUR=${L_DUR:-$((DUR < 5 ? DUR : 5))}
WARMUP=${WARMUP:-2}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
IDLE_CONNS=${IDLE_CONNS:-1000}
D_HOLD=${D_HOLD:-4}
D_SETTLE=${D_SETTLE:-0.5}
S_RATE=${S_RATE:-1000}
S_DUR=${S_DUR:-10}
RINGWAY_BIN=${RINGWAY_BIN:-$REPO_ROOT/target/release/ringway}
RINGWAY_LOAD_BIN=${RINGWAY_LOAD_BIN:-$REPO_ROOT/target/release/ringway-load}
SKIP_RINGWAY=${SKIP_RINGWAY:-0}
PROXIES=${PROXIES:-direct ringway ringway-buffered ringway-splice haproxy haproxy-splice nginx-stream}
SCENARIOS=${SCENARIOS:-A A-ac A1 B C C-http D L S R U}
UPGRADES=${UPGRADES:-3}
QUIET_MAX_WAIT=${QUIET_MAX_WAIT:-60}
QUIET_BUDGET=${QUIET_BUDGET:-}
QUIET_WINDOW=${QUIET_WINDOW:-1}
NOISE_MAX=${NOISE_MAX:-5}
PLOTS=${PLOTS:-1}
RESULTS_ROOT=${RESULTS_ROOT:-$REPO_ROOT/bench/results}
KEEP_TMP=${KEEP_TMP:-0}
SNI_NAME=${SNI_NAME:-bench.test}
[[ $SNI_NAME =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ ]] || die "SNI_NAME must be a DNS name, got '$SNI_NAME'"

for v in DUR REPS L_DUR WARMUP PROXY_CPU LOAD_CPU IDLE_CONNS D_HOLD S_RATE S_DUR UPGRADES QUIET_MAX_WAIT NOISE_MAX; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
[[ -z $QUIET_BUDGET || $QUIET_BUDGET =~ ^[0-9]+$ ]] || die "QUIET_BUDGET must be empty or a whole number of seconds"
for v in QUIET_WINDOW D_SETTLE; do
    [[ ${!v} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$v must be a number of seconds, got '${!v}'"
done
((DUR > 0 && REPS > 0 && L_DUR > 0)) || die "DUR, REPS and L_DUR must be at least 1"
((IDLE_CONNS > 0 && D_HOLD >= 2)) || die "IDLE_CONNS must be at least 1 and D_HOLD at least 2"
((S_RATE > 0 && S_DUR >= 2)) || die "S_RATE must be at least 1 and S_DUR at least 2"
((UPGRADES > 0)) || die "UPGRADES must be at least 1"

# scenario ids, in run order
RUN_SCENS=()
for s in $SCENARIOS; do
    [[ $s != E ]] || { note "scenario E is now called C-http"; s=C-http; }
    case $s in
        A | A-ac | A1 | B | B-sni | C | C-http | D | L | S | R | U | W) [[ " ${RUN_SCENS[*]} " == *" $s "* ]] || RUN_SCENS+=("$s") ;;
        *) die "unknown scenario '$s' in SCENARIOS (known: A A-ac A1 B B-sni C C-http D L S R U W)" ;;
    esac
done
SCENARIOS="${RUN_SCENS[*]}"
has_scen() { [[ " $SCENARIOS " == *" $1 "* ]]; }
selected=()
for p in $PROXIES; do
    [[ " ${selected[*]} " != *" $p "* ]] || continue
    case $p in
        direct | haproxy | haproxy-splice | haproxy-sni | nginx-stream) selected+=("$p") ;;
        ringway | ringway-splice | ringway-buffered | ringway-busy | ringway-sni | ringway-rr | ringway-lc | ringway-hash | ringway-noka | ringway-restart) [[ $SKIP_RINGWAY == 1 ]] || selected+=("$p") ;;
        *) die "unknown proxy '$p' in PROXIES (known: direct ringway ringway-buffered ringway-splice ringway-busy ringway-sni ringway-rr ringway-lc ringway-hash ringway-noka ringway-restart haproxy haproxy-splice haproxy-sni nginx-stream)" ;;
    esac
    # B-sni: the peeking peer right after its plain one, unless PROXIES names it
    if has_scen B-sni && [[ $p == ringway || $p == haproxy ]] && [[ " $PROXIES " != *" $p-sni "* ]] &&
        [[ " ${selected[*]} " == *" $p "* ]]; then
        selected+=("$p-sni")
    fi
    # U: the plain restart right after ringway, unless PROXIES names it
    if has_scen U && [[ $p == ringway && " $PROXIES " != *" ringway-restart "* ]] &&
        [[ " ${selected[*]} " == *" ringway "* ]]; then
        selected+=(ringway-restart)
    fi
done
PROXIES="${selected[*]}"
has_proxy() { [[ " $PROXIES " == *" $1 "* ]]; }
SKIPPED=()          # KIND:NAME:REASON for the report
skip() { SKIPPED+=("$1:$2:$3"); note "$2 skipped: $3"; }

# ------------------------------------------------------------------- tools: check, install
# find_tools sets FATAL (missing required commands), APT_PKGS (Debian packages that would
# provide what is missing), NEED_NPM, AUTOCANNON, PLOT_PY, NGX_STREAM_LOAD, NGX_STREAM_OK.
pkg_of() {
    case $1 in
        nginx) echo nginx-light ;;
        taskset) echo util-linux ;;
        timeout) echo coreutils ;;
        getconf) echo libc-bin ;;
        *) echo "$1" ;;
    esac
}
find_tools() {
    local t py mods
    FATAL=() APT_PKGS=() NEED_NPM=0 PLOT_PY="" NGX_STREAM_OK=0 NGX_STREAM_LOAD=""
    for t in haproxy nginx wrk iperf3 "$PYTHON" taskset timeout getconf; do
        command -v "$t" >/dev/null 2>&1 || { FATAL+=("$t"); APT_PKGS+=("$(pkg_of "$t")"); }
    done
    if command -v nginx >/dev/null 2>&1; then
        mods=$(nginx -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2 || true)
        mods=${mods:-/usr/lib/nginx/modules}
        if nginx -V 2>&1 | grep -qE -- '(^| )--with-stream( |$)'; then
            NGX_STREAM_OK=1                                 # built in
        elif [[ -f $mods/ngx_stream_module.so ]]; then
            NGX_STREAM_OK=1 NGX_STREAM_LOAD="load_module $mods/ngx_stream_module.so;"
        else
            APT_PKGS+=(libnginx-mod-stream)
        fi
    else
        APT_PKGS+=(libnginx-mod-stream)   # Debian's nginx-light has stream as a module only
    fi
    if [[ -n ${AUTOCANNON_SET:-} ]]; then
        command -v "$AUTOCANNON" >/dev/null 2>&1 || AUTOCANNON=""
    else
        AUTOCANNON=""
        if [[ -x $TOOLS_DIR/node_modules/.bin/autocannon ]]; then
            AUTOCANNON=$TOOLS_DIR/node_modules/.bin/autocannon
        elif command -v autocannon >/dev/null 2>&1; then
            AUTOCANNON=$(command -v autocannon)
        fi
    fi
    command -v node >/dev/null 2>&1 || { APT_PKGS+=(nodejs); AUTOCANNON=""; }
    if [[ -z $AUTOCANNON ]]; then
        NEED_NPM=1
        command -v npm >/dev/null 2>&1 || APT_PKGS+=(npm)
    fi
    for py in "$PYTHON" python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import matplotlib' 2>/dev/null; then
            PLOT_PY=$py
            break
        fi
    done
    [[ -n $PLOT_PY ]] || APT_PKGS+=(python3-matplotlib)
}

install_tools() {
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "--install needs root or sudo"
        sudo=(sudo)
    fi
    if ((${#APT_PKGS[@]} > 0)); then
        note "installing: ${APT_PKGS[*]}"
        timeout 600 "${sudo[@]}" apt-get update -q || die "apt-get update failed"
        timeout 1200 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${APT_PKGS[@]}" || die "apt-get install failed"
    fi
    if [[ $NEED_NPM == 1 ]]; then
        note "installing $AUTOCANNON_PKG into ${TOOLS_DIR#"$REPO_ROOT"/} (npm install --prefix)"
        mkdir -p "$TOOLS_DIR"
        timeout 600 npm install --prefix "$TOOLS_DIR" --no-audit --no-fund --loglevel=error \
            "$AUTOCANNON_PKG" || note "warning: npm install $AUTOCANNON_PKG failed; A-ac will be skipped"
    fi
}

[[ -z ${AUTOCANNON:-} ]] || AUTOCANNON_SET=1
find_tools
if [[ $INSTALL == 1 ]]; then
    install_tools
    find_tools
    ((${#FATAL[@]} == 0)) || die "still missing after --install: ${FATAL[*]}"
    note "tools: all present${APT_PKGS:+, except packages: ${APT_PKGS[*]}}"
    [[ $INSTALL_ONLY == 0 ]] || exit 0
elif ((${#APT_PKGS[@]} > 0 || NEED_NPM)); then
    how=()
    if ((${#APT_PKGS[@]} > 0)); then
        note "missing Debian packages: ${APT_PKGS[*]}"
        how+=("apt-get install -y ${APT_PKGS[*]}")
    fi
    if ((NEED_NPM)); then
        note "missing: autocannon (npm)"
        how+=("npm install --prefix bench/.tools $AUTOCANNON_PKG")
    fi
    joined=$(printf '%s; ' "${how[@]}")
    note "to install: scripts/bench.sh --install-only (or by hand: ${joined%; })"
fi
if ((${#FATAL[@]} > 0)); then
    die "required tools missing: ${FATAL[*]} (see the install line above)"
fi
if [[ " $PROXIES " == *" ringway"* ]] && [[ ! -x $RINGWAY_BIN ]]; then
    die "no ringway binary at $RINGWAY_BIN: build it (cargo build --release --workspace), point RINGWAY_BIN at it, or set SKIP_RINGWAY=1"
fi
# the optional parts
if has_scen A-ac && [[ -z $AUTOCANNON ]]; then
    skip scenario A-ac "autocannon not found (scripts/bench.sh --install, or npm install --prefix bench/.tools $AUTOCANNON_PKG)"
    SCENARIOS=$(tr ' ' '\n' <<<"$SCENARIOS" | grep -vx A-ac | paste -sd ' ' || true)
fi
if has_scen R && [[ " $PROXIES " != *" ringway"* ]]; then
    skip scenario R "no ringway proxy selected (R is ringway only: HAProxy has no runtime route add without a reload)"
    SCENARIOS=$(tr ' ' '\n' <<<"$SCENARIOS" | grep -vx R | paste -sd ' ' || true)
fi
for s in D S R U B-sni; do
    if has_scen "$s" && [[ ! -x $RINGWAY_LOAD_BIN ]]; then
        skip scenario "$s" "no ringway-load at $RINGWAY_LOAD_BIN (cargo build --release --workspace)"
        SCENARIOS=$(tr ' ' '\n' <<<"$SCENARIOS" | grep -vx "$s" | paste -sd ' ' || true)
    fi
done
if has_proxy nginx-stream && [[ $NGX_STREAM_OK == 0 ]]; then
    skip proxy nginx-stream "nginx has no stream module (apt-get install libnginx-mod-stream)"
    PROXIES=$(tr ' ' '\n' <<<"$PROXIES" | grep -vx nginx-stream | paste -sd ' ' || true)
fi
if [[ $PLOTS == 1 && -z $PLOT_PY ]]; then
    skip what plots "matplotlib not found for $PYTHON or /usr/bin/python3 (apt-get install python3-matplotlib)"
fi
[[ -n $PROXIES ]] || die "no proxy selected"
[[ -n $SCENARIOS ]] || die "no scenario left to run"

for c in "$PROXY_CPU" "$LOAD_CPU"; do
    taskset -c "$c" true 2>/dev/null || die "CPU $c is not available to this process (see nproc, taskset -p $$)"
done
[[ $PROXY_CPU != "$LOAD_CPU" ]] || note "warning: PROXY_CPU = LOAD_CPU = $PROXY_CPU (one-core layout, not the split layout)"
SPLIT_CPUS=("$PROXY_CPU")
[[ $PROXY_CPU == "$LOAD_CPU" ]] || SPLIT_CPUS+=("$LOAD_CPU")
CLK_TCK=$(getconf CLK_TCK)
# HAProxy asks for 2 fds per connection; raise the soft limit as far as we may.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE =~ ^[0-9]+$ ]] || NOFILE=1048576   # "unlimited"
if has_scen D && ((2 * IDLE_CONNS + 200 > NOFILE)); then
    die "IDLE_CONNS=$IDLE_CONNS needs ~$((2 * IDLE_CONNS + 200)) fds in the proxy; ulimit -n is $NOFILE"
fi
# nginx (origin and nginx-stream) connection slots: the idle connections and some margin
NGX_CONNS=$((2 * IDLE_CONNS + 1000))
((NGX_CONNS > 4096)) || NGX_CONNS=4096

START_DATE=$(date -u +%Y-%m-%d)
START_TIME=$(date -u +%Y-%m-%dT%H:%M:%SZ)
HOST=$(hostname -s 2>/dev/null || hostname)

# --------------------------------------------------------------- processes and cleanup
TMP=$(mktemp -d /tmp/bench.XXXXXX)
PIDS=()             # every background process this script started and has not stopped yet
PROXY_PID=""        # the proxy under test ("" for direct)
PROXY_CPU_NOW=""    # the CPU it is pinned to
ADMIN_PORT=""       # ringway's admin API
# ringway's admin token for this run (16+ printable characters), in its configurations
printf -v RW_TOKEN 'bench-%s-%04x%04x%04x%04x' "$$" "$RANDOM" "$RANDOM" "$RANDOM" "$RANDOM"

alive() {           # alive PID: the process exists and has not exited (a process that is not
    local line      # our child, such as the one `ringway upgrade` started, may stay a zombie
    kill -0 "$1" 2>/dev/null || return 1        # until whoever adopted it reaps it)
    read -r line 2>/dev/null <"/proc/$1/stat" || return 1
    line=${line##*) }
    [[ ${line%% *} != Z ]]
}

stop_pid() {        # stop_pid PID [POLL_MS]: SIGTERM one of our processes, wait up to 5 s
    local pid=$1 poll=${2:-100} i   # (checking every POLL_MS ms), then SIGKILL
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 5000 / poll; i++)); do
            alive "$pid" || break
            sleep "0.$(printf '%03d' "$poll")"
        done
        if alive "$pid"; then
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

# Run copies of the binaries, so that a rebuild during the run cannot change what is measured.
mkdir "$TMP/bin"
RINGWAY_RUN="" RINGWAY_LOAD_RUN="" RINGWAY_MTIME=""
if [[ " $PROXIES " == *" ringway"* ]]; then
    RINGWAY_RUN=$TMP/bin/ringway
    cp "$RINGWAY_BIN" "$RINGWAY_RUN"
    RINGWAY_MTIME=$(date -u -r "$RINGWAY_BIN" +%Y-%m-%dT%H:%M:%SZ)
fi
if has_scen D || has_scen S || has_scen R || has_scen U || has_scen B-sni; then
    RINGWAY_LOAD_RUN=$TMP/bin/ringway-load
    cp "$RINGWAY_LOAD_BIN" "$RINGWAY_LOAD_RUN"
fi

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

HAVE_SS=0
command -v ss >/dev/null 2>&1 && HAVE_SS=1
listening() {       # true when something listens on 127.0.0.1:$1: asks ss (netlink, only the
    local hex       # listening sockets) where there is one, else reads /proc/net/tcp, which
    if ((HAVE_SS)); then        # lists every TIME_WAIT socket too (tens of ms after B or S)
        [[ -n $(ss -Hltn src "127.0.0.1:$1" 2>/dev/null) ]]
        return
    fi
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

# ------------------------------------------------------------ CPU and memory accounting
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
QUIET_SPENT=0       # tenths of a second the quiet gates have waited beyond their window
[[ $QUIET_WINDOW =~ ^([0-9]+)(\.([0-9]))? ]]
WINDOW_DS=$((10#${BASH_REMATCH[1]} * 10 + ${BASH_REMATCH[3]:-0}))
IDLE=0
NOISE_CPUS=()       # the test CPUs of the current run
cpu_idle() {        # IDLE = idle + iowait + steal ticks of NOISE_CPUS, from /proc/stat
    # (busy time is taken as wall time minus this: on this VM the tick-sampled user/system
    # fields miss up to a third of the busy time of a wakeup-heavy load such as L, while the
    # idle time is measured exactly)
    local name idle iow steal c
    IDLE=0
    while read -r name _ _ _ idle iow _ _ steal _; do
        for c in "${NOISE_CPUS[@]}"; do
            [[ $name != "cpu$c" ]] || IDLE=$((IDLE + idle + iow + steal))
        done
    done </proc/stat
}
RSS_KB="" THREADS=""
proc_mem() {        # RSS_KB, THREADS of PID $1 from /proc/PID/status ("" if unreadable)
    local key val _unit
    RSS_KB="" THREADS=""
    while read -r key val _unit; do
        case $key in
            VmRSS:) RSS_KB=$val ;;
            Threads:) THREADS=$val ;;
        esac
    done 2>/dev/null <"/proc/$1/status" || true
}

# ------------------------------------------------------------------------------- origin
# nginx_head DIR: the lines both nginx configurations (origin, stream proxy) start with: one
# process in the foreground, pid and error log in DIR.
nginx_head() {
    printf '%s\n' "daemon off;" "master_process off;" "worker_processes 1;" \
        "pid $1/nginx.pid;" "error_log $1/error.log warn;" \
        "events { worker_connections $NGX_CONNS; }"
}

setup_origin() {
    local d=$TMP/origin port
    mkdir -p "$d/www" "$d/tmp"
    head -c 1048576 /dev/zero >"$d/www/1m.bin"
    read -r ORIGIN_PORT ORIGIN2_PORT IPERF_PORT < <(free_ports 3 | paste -sd ' ')
    cat >"$d/nginx.conf" <<EOF
# origin for bench.sh: one nginx process (master_process off = a single worker)
$(nginx_head "$d")
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
        # the "new version on a fresh port" that scenario S switches to: the same content
        listen 127.0.0.1:$ORIGIN2_PORT;
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
    wait_ready nginx "$NGINX_PID" "$d/nginx.log" "$ORIGIN_PORT" "$ORIGIN2_PORT"
    wait_ready iperf3 "$IPERF_PID" "$d/iperf3.log" "$IPERF_PORT"
    for port in "$ORIGIN_PORT" "$ORIGIN2_PORT"; do
        (http_ok "$port") 2>/dev/null || { cat "$d/error.log" >&2; die "nginx origin does not answer 200 on / at port $port"; }
    done
}

# ------------------------------------------------------------------------------ proxies
# haproxy_cfg NAME ORIGIN: HAProxy's configuration for proxy NAME (haproxy or haproxy-splice)
# with the HTTP frontend on HTTP_PORT relaying to 127.0.0.1:ORIGIN, the bulk one on BULK_PORT
haproxy_cfg() {
    # HAProxy needs ~2*maxconn + 2*maxpipes fds and refuses to start if it cannot get
    # them: keep maxconn 20000 where the fd limit allows, lower it where it does not
    # (the benchmark has at most IDLE_CONNS connections open).
    local maxconn=$(((NOFILE - 2 * 150 - 100) / 2))
    ((maxconn < 20000)) || maxconn=20000
    local splice="    # no option splice-auto: recv/send copies only"
    if [[ $1 == haproxy-splice ]]; then splice="    option splice-auto"; fi
    # haproxy-sni (B-sni): the frontend waits for a ClientHello and routes by its server name;
    # anything else (the readiness GET) goes to the origin's second port
    local route="    default_backend origin"
    if [[ $1 == haproxy-sni ]]; then
        route="    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend origin if { req.ssl_sni -i $SNI_NAME }
    default_backend origin-default"
    fi
    # U (HAPROXY_MW=1): master-worker mode, reloaded seamlessly; the stats socket lends the
    # listening sockets to the next process (-x; the master passes it by itself)
    local stats=""
    if [[ $HAPROXY_MW == 1 ]]; then
        stats="    stats socket $TMP/$1-stats.sock mode 600 level admin expose-fd listeners"
    fi
    cat <<EOF
global
    nbthread 1
    maxconn $maxconn
    maxpipes 150
$stats

defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
$splice

frontend bench
    bind 127.0.0.1:$HTTP_PORT
$route

frontend bench-bulk
    bind 127.0.0.1:$BULK_PORT
    default_backend iperf3

backend origin
    server s1 127.0.0.1:$2

backend origin-default
    server s1 127.0.0.1:$ORIGIN2_PORT

backend iperf3
    server s1 127.0.0.1:$IPERF_PORT
EOF
}

# ringway_config NAME WORKERS PIN SPLICE BUSY_POLL: writes $TMP/NAME.toml's [runtime], [admin]
# and [state] (the state file in the temp dir, removed before each start: every start begins
# on the configured backends); the caller appends its routes. PIN false: bench.sh pins the
# process with taskset.
ringway_config() {
    cat >"$TMP/$1.toml" <<EOF
[runtime]
workers = $2
pin = $3
splice = $4
busy_poll = $5
shutdown_grace = "1s"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "$RW_TOKEN"

[state]
file = "$TMP/$1-state.json"

EOF
}

WARM_WITH=wrk       # the warm-up load: wrk, or hello (B-sni's ringway-load)
HAPROXY_MW=0        # 1 (U): HAProxy in master-worker mode; PROXY_PID is then the master's
# start_proxy NAME CPU WARMUP_S: sets PROXY_PID ("" for direct), HTTP_PORT (to nginx),
# BULK_PORT (to iperf3), ADMIN_PORT (ringway's admin API), PROXY_CPU_NOW; the proxy is
# pinned to CPU
start_proxy() {
    local name=$1 cpu=$2 warm=$3 log=$TMP/$1.log
    PROXY_CPU_NOW=$cpu ADMIN_PORT=""
    case $name in
        direct)
            PROXY_PID="" HTTP_PORT=$ORIGIN_PORT BULK_PORT=$IPERF_PORT
            ;;
        ringway | ringway-splice | ringway-buffered | ringway-busy | ringway-sni | ringway-rr | ringway-lc | ringway-hash | ringway-noka | ringway-restart)
            read -r HTTP_PORT BULK_PORT ADMIN_PORT < <(free_ports 3 | paste -sd ' ')
            local splice='"auto"' busy='"0us"'
            [[ $name == ringway-splice ]] && splice=true
            [[ $name == ringway-buffered ]] && splice=false
            [[ $name == ringway-busy ]] && busy='"50us"'
            ringway_config "$name" 1 false "$splice" "$busy"
            if [[ $name == ringway-sni ]]; then
                # B-sni: the address is shared; a ClientHello for SNI_NAME goes to the origin,
                # anything else to the default route (the origin's second port)
                cat >>"$TMP/$name.toml" <<EOF
[[route]]
name = "bench-sni"
listen = ["127.0.0.1:$HTTP_PORT"]
backends = ["127.0.0.1:$ORIGIN_PORT"]

[route.match]
sni = ["$SNI_NAME"]

[[route]]
name = "bench"
listen = ["127.0.0.1:$HTTP_PORT"]
backends = ["127.0.0.1:$ORIGIN2_PORT"]

[[route]]
name = "bench-bulk"
listen = ["127.0.0.1:$BULK_PORT"]
backends = ["127.0.0.1:$IPERF_PORT"]
EOF
            elif [[ $name == ringway-rr || $name == ringway-lc || $name == ringway-hash ]]; then
                # balance comparison: two backends (the origin's two ports), one strategy each
                local balance=round_robin
                [[ $name == ringway-lc ]] && balance=least_connections
                [[ $name == ringway-hash ]] && balance=hash_source
                cat >>"$TMP/$name.toml" <<EOF
[[route]]
name = "bench"
listen = ["127.0.0.1:$HTTP_PORT"]
backends = ["127.0.0.1:$ORIGIN_PORT", "127.0.0.1:$ORIGIN2_PORT"]
balance = "$balance"

[[route]]
name = "bench-bulk"
listen = ["127.0.0.1:$BULK_PORT"]
backends = ["127.0.0.1:$IPERF_PORT"]
EOF
            else
                # ringway-noka: keepalive and TCP_USER_TIMEOUT off (no setsockopt per socket)
                local ka=""
                [[ $name == ringway-noka ]] && ka=$'\n[route.keepalive]\nidle = "0s"\nuser_timeout = "0s"\n'
                cat >>"$TMP/$name.toml" <<EOF
[[route]]
name = "bench"
listen = ["127.0.0.1:$HTTP_PORT"]
backends = ["127.0.0.1:$ORIGIN_PORT"]
$ka
[[route]]
name = "bench-bulk"
listen = ["127.0.0.1:$BULK_PORT"]
backends = ["127.0.0.1:$IPERF_PORT"]
$ka
EOF
            fi
            rm -f "$TMP/$name-state.json"
            start_bg "$log" taskset -c "$cpu" "$RINGWAY_RUN" run -c "$TMP/$name.toml"
            PROXY_PID=$BG_PID
            ;;
        haproxy | haproxy-splice | haproxy-sni)
            read -r HTTP_PORT BULK_PORT < <(free_ports 2 | paste -sd ' ')
            haproxy_cfg "$name" "$ORIGIN_PORT" >"$TMP/$name.cfg"
            if [[ $HAPROXY_MW == 1 ]]; then
                # U: master-worker, in the foreground, with a master CLI; SIGUSR2 reloads
                rm -f "$TMP/$name-master.sock" "$TMP/$name-stats.sock"
                start_bg "$log" taskset -c "$cpu" haproxy -W -db -S "$TMP/$name-master.sock" \
                    -f "$TMP/$name.cfg"
            else
                start_bg "$log" taskset -c "$cpu" haproxy -db -f "$TMP/$name.cfg"
            fi
            PROXY_PID=$BG_PID
            ;;
        nginx-stream)
            read -r HTTP_PORT BULK_PORT < <(free_ports 2 | paste -sd ' ')
            local d=$TMP/nginx-stream
            mkdir -p "$d"
            cat >"$TMP/nginx-stream.conf" <<EOF
# nginx stream proxy for bench.sh: worker_processes 1 and master_process off, so that the one
# process measured (CPU, VmRSS) is the one doing the work; no logging
${NGX_STREAM_LOAD:-# stream module built in}
$(nginx_head "$d")
stream {
    server {
        listen 127.0.0.1:$HTTP_PORT;
        proxy_pass 127.0.0.1:$ORIGIN_PORT;
    }
    server {
        listen 127.0.0.1:$BULK_PORT;
        proxy_pass 127.0.0.1:$IPERF_PORT;
    }
}
EOF
            start_bg "$log" taskset -c "$cpu" nginx -p "$d/" -e "$d/error.log" -c "$TMP/nginx-stream.conf"
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
    ((warm > 0)) || return 0
    # unmeasured warm-up (B-sni: its own load, so that the peek path is the one warmed)
    local wcmd=(timeout 30 taskset -c "$LOAD_CPU" wrk -t1 -c50 "-d${warm}s" "http://127.0.0.1:$HTTP_PORT/")
    if [[ $WARM_WITH == hello ]]; then
        wcmd=(timeout 30 taskset -c "$LOAD_CPU" "$RINGWAY_LOAD_RUN" -t "127.0.0.1:$HTTP_PORT"
            -m conn --closed-loop -c 50 -x hello --hello-sni "$SNI_NAME" -d "${warm}s")
    fi
    log_cmd "${wcmd[@]}"
    run_tracked "$TMP/warmup.out" "$TMP/warmup.err" "${wcmd[@]}"
    ((RC == 0)) || { cat "$TMP/warmup.out" "$TMP/warmup.err" >&2; die "$name: warm-up failed"; }
}

stop_proxy() {
    if [[ -n $PROXY_PID ]]; then stop_pid "$PROXY_PID"; fi
    PROXY_PID=""
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

# run_idle OUT ERR CMD...: scenario D. Runs ringway-load in the background, waits for its
# "holding N connections" line, lets the proxy settle, reads its VmRSS and thread count, then
# waits for the end of the hold. Sets RC, HELD_SEEN, RSS_HELD, THREADS_HELD.
HELD_SEEN="" RSS_HELD="" THREADS_HELD=""
run_idle() {
    local out=$1 err=$2 pid i line
    shift 2
    HELD_SEEN="" RSS_HELD="" THREADS_HELD=""
    : >"$err"
    "$@" >"$out" 2>>"$err" &
    pid=$!
    PIDS+=("$pid")
    for ((i = 0; i < (D_HOLD + 20) * 20; i++)); do     # bounded: the run's own time limit
        while IFS= read -r line; do
            if [[ $line =~ ^ringway-load:\ holding\ ([0-9]+)\ connections ]]; then
                HELD_SEEN=${BASH_REMATCH[1]}
            fi
        done <"$err"
        [[ -z $HELD_SEEN ]] || break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [[ -n $HELD_SEEN ]]; then
        sleep "$D_SETTLE"
        proc_mem "$PROXY_PID"
        RSS_HELD=$RSS_KB THREADS_HELD=$THREADS
    fi
    RC=0
    wait "$pid" || RC=$?
    drop_pid "$pid"
}

# run_switch OUT ERR PROXY CMD...: scenario S. Runs the load (CMD) in the background, at
# S_DUR/2 moves PROXY's route to the origin's second port (switch_ringway, restart_haproxy),
# then waits for the end of the load. Sets RC (the load's exit code) and the SWITCH_* below.
SWITCH_RC="" SWITCH_T0="" SWITCH_T1="" SWITCH_STOPPED="" SWITCH_HOW="" SWITCH_CMD="" SWITCH_MSG=""
run_switch() {
    local out=$1 err=$2 proxy=$3 pid
    shift 3
    SWITCH_RC="" SWITCH_T0="" SWITCH_T1="" SWITCH_STOPPED="" SWITCH_HOW="" SWITCH_CMD="" SWITCH_MSG=""
    "$@" >"$out" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    sleep "$((S_DUR / 2)).$((S_DUR % 2 * 5))"
    case $proxy in
        ringway | ringway-*) switch_ringway ;;
        haproxy*) restart_haproxy "$proxy" ;;
    esac
    RC=0
    wait "$pid" || RC=$?
    drop_pid "$pid"
}

# switch_ringway: `ringway switch` of route bench to the origin's second port, over the admin
# API; it returns once every worker applied the change (or the health gate refused it)
switch_ringway() {
    local cmd=(timeout 30 taskset -c "$LOAD_CPU" "$RINGWAY_RUN" switch bench
        "127.0.0.1:$ORIGIN2_PORT" --admin "127.0.0.1:$ADMIN_PORT" --token "$RW_TOKEN")
    log_cmd "${cmd[@]}"
    SWITCH_CMD=$(tail -n 1 "$TMP/commands.txt")
    SWITCH_HOW="ringway switch: health-gated switch over the admin API; switch_s = how long the command took"
    SWITCH_T0=$EPOCHREALTIME
    run_tracked "$TMP/switch.out" "$TMP/switch.err" "${cmd[@]}"
    SWITCH_T1=$EPOCHREALTIME
    SWITCH_RC=$RC
    SWITCH_MSG=$(cat "$TMP/switch.out" "$TMP/switch.err")
}

# run_route OUT ERR CMD...: scenario R. Runs the load (CMD, on route bench) in the background
# and beside it benchstat.py route-phase, which at S_DUR/3 adds route extra on
# 127.0.0.1:ROUTE_PORT (backend: the origin's first port) with `ringway route add` and probes
# the new port until a GET / answers 200, at 2*S_DUR/3 removes the route with `ringway route
# remove` and checks that a connect to the port is refused at once, then reads the removed
# listener's ringway_listener_queue_resets_total (a total) with `ringway metrics` (the workers report
# every second: it reads 1.1 s after the removal); then waits for the end of the load. The
# route changes are timed inside route-phase (no shell between the command's return and the
# first probe). Sets RC (the load's exit code), ROUTE_RC (route-phase's) and ROUTE_JSON (the
# file with its JSON).
ROUTE_PORT="" ROUTE_RC="" ROUTE_JSON=""
run_route() {
    local out=$1 err=$2 pid t0
    shift 2
    local admin=(--admin "127.0.0.1:$ADMIN_PORT" --token "$RW_TOKEN") phase
    local rw=(timeout 30 taskset -c "$LOAD_CPU" "$RINGWAY_RUN")
    local add=("${rw[@]}" route add extra --listen "127.0.0.1:$ROUTE_PORT"
        --backend "127.0.0.1:$ORIGIN_PORT" "${admin[@]}")
    local remove=("${rw[@]}" route remove extra "${admin[@]}")
    local metrics=(timeout 10 taskset -c "$LOAD_CPU" "$RINGWAY_RUN" metrics "${admin[@]}")
    # the commands go to route-phase as NUL-terminated arguments: exact, no quoting
    printf '%s\0' "${add[@]}" >"$TMP/route-add.cmd"
    printf '%s\0' "${remove[@]}" >"$TMP/route-remove.cmd"
    printf '%s\0' "${metrics[@]}" >"$TMP/route-metrics.cmd"
    ROUTE_RC="" ROUTE_JSON=$TMP/route.json
    t0=$EPOCHREALTIME
    "$@" >"$out" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    phase=(timeout "$((S_DUR + 60))" taskset -c "$LOAD_CPU" "${STAT[@]}" route-phase
        --listen "127.0.0.1:$ROUTE_PORT" --add-cmd "$TMP/route-add.cmd"
        --remove-cmd "$TMP/route-remove.cmd" --metrics-cmd "$TMP/route-metrics.cmd"
        --load-t0 "$t0" --add-at-ms "$((S_DUR * 1000 / 3))" --remove-at-ms "$((S_DUR * 2000 / 3))")
    log_cmd "${phase[@]}"
    log_cmd "${add[@]}"             # run by route-phase, in this order
    log_cmd "${remove[@]}"
    log_cmd "${metrics[@]}"
    run_tracked "$ROUTE_JSON" "$TMP/route.err" "${phase[@]}"
    ROUTE_RC=$RC
    RC=0
    wait "$pid" || RC=$?
    drop_pid "$pid"
}

# restart_haproxy NAME: the "stop/start with a new config" way: a cfg with the origin backend
# on the second port is written (beforehand: not part of the downtime), the running haproxy
# gets SIGTERM and is waited for, and a new one is started on the same ports (PROXY_PID); the
# downtime runs from the SIGTERM until the new one listens
restart_haproxy() {
    local name=$1 old=$PROXY_PID cfg=$TMP/$1-switched.cfg i
    haproxy_cfg "$name" "$ORIGIN2_PORT" >"$cfg"
    SWITCH_HOW="HAProxy stop/start with a new config: SIGTERM, wait for the exit, start haproxy -db -f NEW.cfg on the same ports; switch_s = downtime from the SIGTERM until the new process listens"
    log_cmd kill -TERM "$old"
    SWITCH_T0=$EPOCHREALTIME
    stop_pid "$old" 10                      # polled every 10 ms: the downtime counts
    SWITCH_STOPPED=$EPOCHREALTIME
    start_bg "$TMP/$name-switched.log" taskset -c "$PROXY_CPU_NOW" haproxy -db -f "$cfg"
    PROXY_PID=$BG_PID
    SWITCH_CMD="kill -TERM $old; $(tail -n 1 "$TMP/commands.txt")"
    SWITCH_RC=1
    for ((i = 0; i < 1000; i++)); do        # 10 s at most, as wait_ready
        if listening "$HTTP_PORT"; then SWITCH_RC=0; break; fi
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.01
    done
    SWITCH_T1=$EPOCHREALTIME
    ((SWITCH_RC == 0)) || SWITCH_MSG=$(tail -n 5 "$TMP/$name-switched.log")
}

# ------------------------------------------------------------- scenario U: upgrade under load
# run_upgrade OUT ERR PROXY CMD...: scenario U. Runs the load (CMD) in the background and
# makes UPGRADES operations on PROXY, the k-th at k*S_DUR/(UPGRADES+1) after the load's start
# (or right after the previous one, if that ran late): upgrade_ringway, reload_haproxy or
# restart_ringway. Then waits for the end of the load, and for up to 5 s more for the
# processes the operations replaced to exit. Sets RC (the load's exit code) and writes one
# tab-separated line per operation to UPGRADE_OPS: n, rc, t0, t1, old pid, new pid, pid
# changed (yes/no), old exited (yes/no), sessions moved (ringway; "" otherwise), what it
# printed (tabs and newlines as spaces).
UPGRADE_OPS="" UPGRADE_HOW=""
OP_RC="" OP_T0="" OP_T1="" OP_OLD="" OP_NEW="" OP_CHANGED="" OP_MOVED="" OP_MSG=""
now_us() { local t=$EPOCHREALTIME; NOW_US=$((${t%.*} * 1000000 + 10#${t#*.})); }
run_upgrade() {
    local out=$1 err=$2 proxy=$3 pid k t0_us d i line
    shift 3
    local num=() rc=() t0=() t1=() old=() new=() changed=() moved=() msg=()
    UPGRADE_OPS=$TMP/upgrade-ops.tsv
    : >"$UPGRADE_OPS"
    now_us
    t0_us=$NOW_US
    "$@" >"$out" 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    for ((k = 1; k <= UPGRADES; k++)); do
        now_us
        d=$((t0_us + k * S_DUR * 1000000 / (UPGRADES + 1) - NOW_US))
        if ((d > 0)); then sleep "$((d / 1000000)).$(printf '%06d' $((d % 1000000)))"; fi
        case $proxy in
            ringway) upgrade_ringway ;;
            ringway-restart) restart_ringway "$proxy" ;;
            haproxy) reload_haproxy ;;
        esac
        num+=("$k") rc+=("$OP_RC") t0+=("$OP_T0") t1+=("$OP_T1") old+=("$OP_OLD") new+=("$OP_NEW")
        changed+=("$OP_CHANGED") moved+=("$OP_MOVED") msg+=("$(tr '\t\n' '  ' <<<"$OP_MSG")")
    done
    RC=0
    wait "$pid" || RC=$?
    drop_pid "$pid"
    # the replaced processes: they finish their last sessions, then exit (5 s at most in all)
    for ((i = 0; i < 50; i++)); do
        line=0
        for k in "${old[@]}"; do [[ -z $k ]] || ! alive "$k" || line=1; done
        ((line)) || break
        sleep 0.1
    done
    for ((k = 0; k < ${#num[@]}; k++)); do
        line=""                             # no old process to wait for (restart: waited)
        if [[ -n ${old[k]} ]]; then line=no; alive "${old[k]}" || line=yes; fi
        # HAProxy: how the old worker ended, as its master logged it
        if [[ $proxy == haproxy && -n ${old[k]} ]]; then
            i=$(grep -m1 -o "Former worker (${old[k]}) exited with code [0-9]* ([^)]*)" \
                "$TMP/haproxy.log" || true)
            [[ -z $i ]] || msg[k]+="${msg[k]:+ }$i"
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${num[k]}" "${rc[k]}" "${t0[k]}" \
            "${t1[k]}" "${old[k]}" "${new[k]}" "${changed[k]}" "$line" "${moved[k]}" \
            "${msg[k]}" >>"$UPGRADE_OPS"
        # still running 5 s after the load: stopped here (the row says "old exited: no")
        if [[ -n ${old[k]} ]] && alive "${old[k]}"; then
            note "warning: $proxy: the process replaced by operation ${num[k]} (PID ${old[k]}) is still running 5 s after the load"
            stop_pid "${old[k]}"
        elif [[ -n ${old[k]} ]]; then
            wait "${old[k]}" 2>/dev/null || true    # ours only when it was the first one
            drop_pid "${old[k]}"
        fi
    done
}

# upgrade_ringway: `ringway upgrade` over the admin API (the same binary); it returns once
# the new process serves. Then `ringway status --json` must give the new pid. The new process
# (started by the old one, not by this script) becomes PROXY_PID.
upgrade_ringway() {
    local admin=(--admin "127.0.0.1:$ADMIN_PORT" --token "$RW_TOKEN") st=""
    local cmd=(timeout 60 taskset -c "$LOAD_CPU" "$RINGWAY_RUN" upgrade "${admin[@]}")
    UPGRADE_HOW="ringway upgrade over the admin API (same binary); op_s = how long the command took"
    log_cmd "${cmd[@]}"
    OP_OLD=$PROXY_PID OP_NEW="" OP_CHANGED=no OP_MOVED=""
    OP_T0=$EPOCHREALTIME
    run_tracked "$TMP/upgrade.out" "$TMP/upgrade.err" "${cmd[@]}"
    OP_T1=$EPOCHREALTIME
    OP_RC=$RC
    OP_MSG=$(cat "$TMP/upgrade.out" "$TMP/upgrade.err")
    [[ ! $OP_MSG =~ upgraded:\ pid\ ([0-9]+) ]] || OP_NEW=${BASH_REMATCH[1]}
    [[ ! $OP_MSG =~ sessions\ moved:\ ([0-9]+) ]] || OP_MOVED=${BASH_REMATCH[1]}
    run_tracked "$TMP/status.json" "$TMP/status.err" timeout 10 taskset -c "$LOAD_CPU" \
        "$RINGWAY_RUN" status --json "${admin[@]}"
    [[ ! $(<"$TMP/status.json") =~ \"pid\":\ *([0-9]+) ]] || st=${BASH_REMATCH[1]}
    if [[ -n $st && $st != "$OP_OLD" && $st == "$OP_NEW" ]]; then OP_CHANGED=yes; fi
    [[ -n $st ]] || OP_MSG+=" (ringway status --json: no pid: $(tail -c 200 "$TMP/status.err"))"
    if [[ $OP_RC == 0 && -n $OP_NEW ]]; then
        PROXY_PID=$OP_NEW
        PIDS+=("$OP_NEW")
    fi
}

# restart_ringway NAME: the plain restart: SIGTERM by pid, wait for the exit, start `ringway
# run` with the same file again; op_s = downtime from the SIGTERM until the new one listens
restart_ringway() {
    local name=$1 i
    UPGRADE_HOW="ringway restart: SIGTERM, wait for the exit, ringway run -c the same file; op_s = downtime from the SIGTERM until the new process listens"
    OP_OLD=$PROXY_PID OP_MOVED="" OP_MSG=""
    log_cmd kill -TERM "$OP_OLD"
    OP_T0=$EPOCHREALTIME
    stop_pid "$OP_OLD" 10                   # polled every 10 ms: the downtime counts
    start_bg "$TMP/$name-restarted.log" taskset -c "$PROXY_CPU_NOW" "$RINGWAY_RUN" run -c "$TMP/$name.toml"
    PROXY_PID=$BG_PID OP_NEW=$BG_PID
    OP_RC=1
    for ((i = 0; i < 1000; i++)); do        # 10 s at most, as wait_ready
        if listening "$HTTP_PORT"; then OP_RC=0; break; fi
        alive "$PROXY_PID" || break
        sleep 0.01
    done
    OP_T1=$EPOCHREALTIME
    OP_CHANGED=no
    [[ $OP_NEW == "$OP_OLD" ]] || OP_CHANGED=yes
    ((OP_RC == 0)) || OP_MSG=$(tail -n 5 "$TMP/$name-restarted.log")
    OP_OLD=""                               # waited for already
}

# haproxy_workers MASTER: WORKERS = the master's child processes (its workers, current and
# leaving), from /proc (no fork)
WORKERS=""
haproxy_workers() {
    WORKERS=""
    read -r WORKERS 2>/dev/null <"/proc/$1/task/$1/children" || true
}

# reload_haproxy: HAProxy 2.6's seamless reload in master-worker mode: SIGUSR2 to the master,
# which re-executes itself with -x sockpair@ (the new worker takes the listening sockets over
# from the old one) and sends the old worker SIGUSR1 (finish the sessions, then exit); op_s =
# from the signal until the master has a new worker
reload_haproxy() {
    local master=$PROXY_PID i w before
    UPGRADE_HOW="HAProxy 2.6 master-worker reload (kill -USR2 MASTER; listeners passed with -x sockpair@, expose-fd listeners): op_s = from the signal until the master has a new worker process"
    haproxy_workers "$master"
    before=" $WORKERS "
    OP_OLD=${WORKERS%% *} OP_NEW="" OP_MOVED="" OP_MSG="" OP_RC=1 OP_CHANGED=no
    log_cmd kill -USR2 "$master"
    OP_T0=$EPOCHREALTIME
    kill -USR2 "$master"
    for ((i = 0; i < 1000; i++)); do        # 10 s at most
        haproxy_workers "$master"
        for w in $WORKERS; do
            [[ $before == *" $w "* ]] || OP_NEW=$w
        done
        [[ -z $OP_NEW ]] || break
        alive "$master" || break
        sleep 0.01
    done
    OP_T1=$EPOCHREALTIME
    if [[ -n $OP_NEW ]]; then
        OP_RC=0 OP_CHANGED=yes
    else
        OP_MSG="no new worker within 10 s: $(tail -n 5 "$TMP/haproxy.log" | tr '\n' ' ')"
    fi
    # the old worker is the master's child: the master reaps it; alive() sees it leave
}

# routed_counts: B-sni on ringway-sni. Sets ROUTED to "BY=N ..." from ringway's
# ringway_listen_routed_total for the shared address since the start, summed over its routes
# ("" when the metrics could not be read), read 1.1 s after the run (the workers report every
# second).
ROUTED=""
routed_counts() {
    local m=$TMP/routed.prom
    ROUTED=""
    sleep 1.1
    run_tracked "$m" "$m.err" timeout 10 "$RINGWAY_RUN" metrics \
        --admin "127.0.0.1:$ADMIN_PORT" --token "$RW_TOKEN"
    ((RC == 0)) || return 0
    ROUTED=$(awk -v l="listen=\"127.0.0.1:$HTTP_PORT\"" '
        /^ringway_listen_routed_total[{]/ && index($0, l) {
            if (match($0, /by="[a-z]+"/)) n[substr($0, RSTART + 4, RLENGTH - 5)] += $NF
        }
        END { for (k in n) printf "%s=%d ", k, n[k] }' "$m") || ROUTED=""
    return 0
}

# measure REP PROXY SCENARIO: one timed run, appended to $TMP/runs.jsonl
measure() {
    local rep=$1 proxy=$2 scen=$3 tool=wrk cmd layout=split
    local url=http://127.0.0.1:$HTTP_PORT/ lim=$((DUR + 30))
    local wrk=(taskset -c "$LOAD_CPU" wrk -t1)
    NOISE_CPUS=("${SPLIT_CPUS[@]}")
    case $scen in
        A) cmd=("${wrk[@]}" -c50 "-d${DUR}s" --latency -s "$TMP/report.lua" "$url") ;;
        A1) cmd=("${wrk[@]}" -c50 "-d${DUR}s" --latency -s "$TMP/report.lua" "$url")
            layout=one-core
            NOISE_CPUS=("$LOAD_CPU") ;;
        A-ac) tool=autocannon
              cmd=(taskset -c "$LOAD_CPU" "$AUTOCANNON" -c 50 -d "$DUR" -j "$url") ;;
        B) cmd=("${wrk[@]}" -c50 "-d${DUR}s" --latency -H 'Connection: close' -s "$TMP/report.lua" "$url") ;;
        B-sni) tool=hello
               cmd=(taskset -c "$LOAD_CPU" "$RINGWAY_LOAD_RUN" --target "127.0.0.1:$HTTP_PORT"
                   --mode conn --closed-loop --connections 50 --exchange hello
                   --hello-sni "$SNI_NAME" --duration "${DUR}s" --timeout 2s) ;;
        C) tool=iperf3
           cmd=(taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$BULK_PORT" -t "$DUR" -J) ;;
        C-http) cmd=("${wrk[@]}" -c10 "-d${DUR}s" --latency -s "$TMP/report.lua" "${url}1m.bin") ;;
        D) tool=idle lim=$((D_HOLD + 30))
           cmd=(taskset -c "$LOAD_CPU" "$RINGWAY_LOAD_RUN" -t "127.0.0.1:$HTTP_PORT" -m idle
               -c "$IDLE_CONNS" -d "${D_HOLD}s" --timeout 10s) ;;
        L) cmd=("${wrk[@]}" -c1 "-d${L_DUR}s" --latency -s "$TMP/report.lua" "$url")
           lim=$((L_DUR + 30)) ;;
        S) tool=switch lim=$((S_DUR + 30))
           cmd=(taskset -c "$LOAD_CPU" "$RINGWAY_LOAD_RUN" --target "127.0.0.1:$HTTP_PORT"
               --mode conn --rate "$S_RATE" --duration "${S_DUR}s" --exchange http
               --timeout 2s) ;;
        R) tool=route lim=$((S_DUR + 30))   # the load of S, on route bench
           cmd=(taskset -c "$LOAD_CPU" "$RINGWAY_LOAD_RUN" --target "127.0.0.1:$HTTP_PORT"
               --mode conn --rate "$S_RATE" --duration "${S_DUR}s" --exchange http
               --timeout 2s)
           # route extra's port, below the ephemeral range: none of the load's thousands of
           # client sockets can be holding it when ringway binds it
           ROUTE_PORT=$("${STAT[@]}" freeport --outside-ephemeral 1) ;;
        U) tool=upgrade lim=$((S_DUR + 30))  # the load of S
           cmd=(taskset -c "$LOAD_CPU" "$RINGWAY_LOAD_RUN" --target "127.0.0.1:$HTTP_PORT"
               --mode conn --rate "$S_RATE" --duration "${S_DUR}s" --exchange http
               --timeout 2s) ;;
    esac
    cmd=(timeout "$lim" "${cmd[@]}")
    log_cmd "${cmd[@]}"
    local cmdline
    cmdline=$(tail -n 1 "$TMP/commands.txt")

    local qw="" cpus max=$QUIET_MAX_WAIT left waited
    if ((QUIET_MAX_WAIT > 0)); then
        if [[ -n $QUIET_BUDGET ]]; then         # in tenths of a second
            left=$((QUIET_BUDGET * 10 - QUIET_SPENT))
            ((left > 0)) || left=0              # budget spent: sample one window only
            ((left >= QUIET_MAX_WAIT * 10)) || max=$((left / 10)).$((left % 10))
        fi
        cpus=${NOISE_CPUS[*]}
        run_tracked "$TMP/quiet.out" /dev/null "${STAT[@]}" quiet --cpus "${cpus// /,}" \
            --window "$QUIET_WINDOW" --max-wait "$max"
        qw=$(<"$TMP/quiet.out")
        waited=${qw%%s *}                       # "12.3s quiet (...)": count the tenths
        if [[ $waited =~ ^([0-9]+)\.([0-9])$ ]]; then   # beyond the first window
            waited=$((10#${BASH_REMATCH[1]} * 10 + BASH_REMATCH[2] - WINDOW_DS))
            ((waited <= 0)) || QUIET_SPENT=$((QUIET_SPENT + waited))
        fi
    fi

    local out=$TMP/run-$rep-$proxy-$scen.out rc rss0=""
    local p0=0 p1=0 k0 k1 i0 i1 t0 t1
    if [[ $scen == D ]]; then proc_mem "$PROXY_PID"; rss0=$RSS_KB; fi
    # --- sample before (builtins only: no process is forked inside the window)
    TICKS=0; [[ -z $PROXY_PID ]] || proc_ticks "$PROXY_PID"; p0=$TICKS
    proc_ticks "$NGINX_PID"; proc_ticks "$IPERF_PID"; children_ticks; k0=$TICKS
    cpu_idle; i0=$IDLE
    t0=$EPOCHREALTIME
    if [[ $scen == D ]]; then
        run_idle "$out" "$out.err" "${cmd[@]}"
    elif [[ $scen == S ]]; then
        run_switch "$out" "$out.err" "$proxy" "${cmd[@]}"
    elif [[ $scen == R ]]; then
        run_route "$out" "$out.err" "${cmd[@]}"
    elif [[ $scen == U ]]; then
        run_upgrade "$out" "$out.err" "$proxy" "${cmd[@]}"
    else
        run_tracked "$out" "$out.err" "${cmd[@]}"
    fi
    # --- sample after
    t1=$EPOCHREALTIME
    cpu_idle; i1=$IDLE
    TICKS=0; [[ -z $PROXY_PID ]] || proc_ticks "$PROXY_PID"; p1=$TICKS
    proc_ticks "$NGINX_PID"; proc_ticks "$IPERF_PID"; children_ticks; k1=$TICKS

    rc=$RC
    local proxy_ticks="" extra=()
    # B-sni on ringway-sni: how ringway routed the connections (read after the CPU sample)
    [[ $scen != B-sni || $proxy != ringway-sni ]] || routed_counts
    # S: no proxy CPU figure (HAProxy's process is replaced during the run); R and U as S
    [[ -z $PROXY_PID || $scen == S || $scen == R || $scen == U ]] || proxy_ticks=$((p1 - p0))
    [[ $scen != D ]] || extra=(--rss-before-kb "$rss0" --rss-held-kb "$RSS_HELD"
        --threads "$THREADS_HELD" --held-seen "$HELD_SEEN")
    [[ $scen != S ]] || extra=(--switch-rc "$SWITCH_RC" --switch-t0 "$SWITCH_T0"
        --switch-t1 "$SWITCH_T1" --switch-stopped "$SWITCH_STOPPED" --switch-how "$SWITCH_HOW"
        --switch-cmd "$SWITCH_CMD" --switch-msg "$SWITCH_MSG" --load-t0 "$t0")
    [[ $scen != R ]] || extra=(--route-json "$ROUTE_JSON" --route-rc "$ROUTE_RC")
    [[ $scen != U ]] || extra=(--upgrade-ops "$UPGRADE_OPS" --upgrade-how "$UPGRADE_HOW"
        --load-t0 "$t0")
    [[ $scen != B-sni || $proxy != ringway-sni ]] || extra=(--routed "$ROUTED")
    "${STAT[@]}" record --scenario "$scen" --proxy "$proxy" --rep "$rep" --tool "$tool" \
        --layout "$layout" --output "$out" --cmd "$cmdline" --rc "$rc" \
        --t0 "$t0" --t1 "$t1" --clk-tck "$CLK_TCK" --proxy-ticks "$proxy_ticks" \
        --known-ticks "$((k1 - k0))" --idle-ticks "$((i1 - i0))" --ncpus "${#NOISE_CPUS[@]}" \
        --quiet-wait "$qw" "${extra[@]}" >>"$TMP/runs.jsonl"
    if ((rc != 0)) && [[ -s $out.err ]]; then sed 's/^/    /' "$out.err" | tail -n 5 >&2; fi
    if [[ $scen == R && $ROUTE_RC != 0 && -s $TMP/route.err ]]; then
        sed 's/^/    route-phase: /' "$TMP/route.err" | tail -n 5 >&2
    fi
}

# run_group REP PROXY CPU WARMUP SCEN...: start the proxy on CPU, run the scenarios, stop it
run_group() {
    local rep=$1 proxy=$2 cpu=$3 warm=$4 scen
    shift 4
    (($# > 0)) || return 0
    start_proxy "$proxy" "$cpu" "$warm"
    for scen in "$@"; do
        measure "$rep" "$proxy" "$scen"
        if [[ -n $PROXY_PID ]] && ! alive "$PROXY_PID"; then
            tail -n 20 "$TMP/$proxy.log" >&2
            note "warning: $proxy died during scenario $scen (log above); skipping its other scenarios of this group in rep $rep"
            break
        fi
    done
    stop_proxy
}

# -------------------------------------------------------- scenario W: per-worker balance
# W is ringway only and not in the default SCENARIOS (run it with SCENARIOS=W): a fresh
# ringway with W_WORKERS workers, pinned one per CPU of W_CPUS, relays W_STREAMS iperf3
# streams (-P) for W_DUR s through route bulk to the origin's iperf3 -s. SO_REUSEPORT hashes
# each connection to a worker, so with more streams than workers some worker carries two or
# more of them: the long heavy connections land unevenly, as they do in production. Read
# from ringway's /metrics (`ringway metrics`, Prometheus text): ringway_worker_imbalance
# and each worker's open sessions half-way through, each worker's
# ringway_worker_cpu_seconds_total and ringway_worker_bytes_total before and after (1.1 s
# after, for the workers' last snapshot). No quiet gate and no noise figure: W measures how
# the work is split, not how fast it goes.
W_WORKERS=${W_WORKERS:-2}
W_STREAMS=${W_STREAMS:-3}
W_DUR=${W_DUR:-$DUR}
W_CPUS=${W_CPUS:-$PROXY_CPU,$LOAD_CPU}
if has_scen W && [[ -z $RINGWAY_RUN ]]; then      # set when a ringway proxy is selected
    skip scenario W "no ringway proxy selected (W reads ringway's per-worker metrics)"
    SCENARIOS=$(tr ' ' '\n' <<<"$SCENARIOS" | grep -vx W | paste -sd ' ' || true)
    [[ -n $SCENARIOS ]] || die "no scenario left to run"
fi
if has_scen W; then
    if ! [[ $W_WORKERS =~ ^[1-9][0-9]*$ && $W_STREAMS =~ ^[1-9][0-9]*$ && $W_DUR =~ ^[0-9]+$ ]] ||
        ((W_DUR < 2)); then
        die "W_WORKERS and W_STREAMS must be at least 1, W_DUR at least 2"
    fi
fi

w_metrics() {       # w_metrics FILE: ringway's /metrics (Prometheus text) into FILE
    run_tracked "$1" "$1.err" timeout 10 "$RINGWAY_RUN" metrics \
        --admin "127.0.0.1:$ADMIN_PORT" --token "$RW_TOKEN"
    ((RC == 0)) || { cat "$1.err" >&2; die "W: ringway metrics failed"; }
}

# measure_workers REP: one W run; its JSON line goes to $TMP/workers.jsonl
measure_workers() {
    local rep=$1 name=ringway-workers d=$TMP/w-$1 pid iperf_pid iperf_rc bulk
    local log=$TMP/ringway-workers.log
    mkdir -p "$d"
    read -r bulk ADMIN_PORT < <(free_ports 2 | paste -sd ' ')
    # pin: worker i on the i-th CPU that taskset allows (W_CPUS)
    ringway_config "$name" "$W_WORKERS" true '"auto"' '"0us"'
    cat >>"$TMP/$name.toml" <<EOF
[[route]]
name = "bulk"
listen = ["127.0.0.1:$bulk"]
backends = ["127.0.0.1:$IPERF_PORT"]
EOF
    rm -f "$TMP/$name-state.json"
    start_bg "$log" taskset -c "$W_CPUS" "$RINGWAY_RUN" run -c "$TMP/$name.toml"
    pid=$BG_PID
    wait_ready "$name" "$pid" "$log" "$bulk"
    sleep 1.1                                   # the first snapshot: the CPU baseline
    w_metrics "$d/before.prom"
    local cmd=(timeout "$((W_DUR + 30))" taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$bulk"
        -P "$W_STREAMS" -t "$W_DUR" -J)
    log_cmd "${cmd[@]}"
    "${cmd[@]}" >"$d/iperf3.json" 2>"$d/iperf3.err" &
    iperf_pid=$!
    PIDS+=("$iperf_pid")
    sleep "$((W_DUR / 2)).$((W_DUR % 2 * 5))"
    w_metrics "$d/mid.prom"
    iperf_rc=0
    wait "$iperf_pid" || iperf_rc=$?
    drop_pid "$iperf_pid"
    sleep 1.1                                   # the workers' last snapshot
    w_metrics "$d/after.prom"
    stop_pid "$pid"
    ((iperf_rc == 0)) || { sed 's/^/    /' "$d/iperf3.err" | tail -n 5 >&2; note "W rep $rep: iperf3 exited $iperf_rc"; }
    "$PYTHON" - "$d" "$rep" "$W_WORKERS" "$W_STREAMS" "$W_DUR" "$iperf_rc" >>"$TMP/workers.jsonl" <<'PY'
import json, re, sys
d, rep, workers, streams, dur, rc = sys.argv[1:]
def load(name):
    out = {}
    for line in open(f"{d}/{name}.prom"):
        m = re.match(r'([A-Za-z_:][\w:]*)(\{[^}]*\})? (\S+)$', line.strip())
        if m and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out
def per_worker(x, name):  # {worker: value}, summed over the other labels
    r = {}
    for labels, v in x.get(name, []):
        r[labels["worker"]] = r.get(labels["worker"], 0.0) + v
    return r
before, mid, after = load("before"), load("mid"), load("after")
ids = sorted(per_worker(after, "ringway_worker_connections_active"), key=int)
def delta(name):
    b, a = per_worker(before, name), per_worker(after, name)
    return [round(a.get(w, 0.0) - b.get(w, 0.0), 3) for w in ids]
cpu, nbytes = delta("ringway_worker_cpu_seconds_total"), delta("ringway_worker_bytes_total")
active = per_worker(mid, "ringway_worker_connections_active")
gauge = mid.get("ringway_worker_imbalance", [({}, None)])[0][1]
gbps = None
try:
    gbps = json.load(open(f"{d}/iperf3.json"))["end"]["sum_received"]["bits_per_second"] / 1e9
except (OSError, ValueError, KeyError, TypeError):
    pass
total_cpu = sum(cpu)
print(json.dumps({
    "scenario": "W", "rep": int(rep), "workers": int(workers), "streams": int(streams),
    "dur_s": int(dur), "iperf3_rc": int(rc),
    "imbalance": gauge,                              # ringway_worker_imbalance, half-way
    "sessions": [int(active.get(w, 0)) for w in ids],  # open sessions per worker, half-way
    "cpu_s": cpu,                                    # CPU-s per worker over the run
    "gib": [round(b / 2**30, 3) for b in nbytes],    # GiB relayed per worker (both ways)
    "busiest_cpu_share": round(max(cpu) / total_cpu, 3) if total_cpu > 0 else None,
    "cpu_imbalance": round(max(cpu) * len(cpu) / total_cpu, 3) if total_cpu > 0 else None,
    "gbit_s": round(gbps, 3) if gbps is not None else None,
}))
PY
    note "W rep $rep: $(tail -n 1 "$TMP/workers.jsonl")"
}

# workers_report OUT_DIR: workers.json (every W run) and a W section appended to table.md
# (also printed)
workers_report() {
    [[ -s $TMP/workers.jsonl ]] || return 0
    "$PYTHON" - "$TMP/workers.jsonl" "$1" "$W_CPUS" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out, cpus = sys.argv[2], sys.argv[3]
json.dump({"scenario": "W", "cpus": cpus, "runs": runs}, open(f"{out}/workers.json", "w"), indent=2)
f = lambda v, fmt="{:.2f}": "-" if v is None else fmt.format(v)
j = lambda xs, fmt="{:.2f}": " / ".join(f(x, fmt) for x in xs)
r0 = runs[0]
lines = [
    "", f"## W: per-worker balance (ringway, {r0['workers']} workers pinned on CPUs {cpus}, "
    f"iperf3 -P {r0['streams']} for {r0['dur_s']} s)", "",
    "| rep | imbalance | sessions per worker | CPU-s per worker | busiest worker's CPU share | CPU max/mean | GiB per worker | Gbit/s |",
    "|---|---|---|---|---|---|---|---|",
]
for r in runs:
    lines.append(f"| {r['rep']} | {f(r['imbalance'])} | {j(r['sessions'], '{:.0f}')} | {j(r['cpu_s'])} | "
                 f"{f(r['busiest_cpu_share'], '{:.0%}')} | {f(r['cpu_imbalance'])} | {j(r['gib'])} | {f(r['gbit_s'])} |")
lines += ["", "imbalance = ringway_worker_imbalance half-way (busiest worker's open sessions / mean; "
          "iperf3's control connection is a session too); CPU-s = increase of "
          "ringway_worker_cpu_seconds_total over the run; GiB = increase of ringway_worker_bytes_total "
          "(both directions). Every run: workers.json.", ""]
text = "\n".join(lines)
open(f"{out}/table.md", "a").write(text)
print(text)
PY
}

# ---------------------------------------------------------------------------- env.txt
version_of() { timeout 10 "$@" 2>&1 | head -n 1 || true; }
write_env() {
    local envfile=$1 v
    {
        echo "# bench.sh run"
        echo "date_utc: $START_TIME"
        echo "host: $HOST"
        echo "uname -a: $(uname -a)"
        echo "cpu model: $(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')"
        echo "nproc: $(nproc)"
        echo "layout: proxy on CPU $PROXY_CPU; load generator + origin on CPU $LOAD_CPU; A1: all on CPU $LOAD_CPU"
        echo "settings: DUR=$DUR L_DUR=$L_DUR REPS=$REPS WARMUP=$WARMUP IDLE_CONNS=$IDLE_CONNS D_HOLD=$D_HOLD D_SETTLE=$D_SETTLE S_RATE=$S_RATE S_DUR=$S_DUR UPGRADES=$UPGRADES SNI_NAME=$SNI_NAME QUIET_MAX_WAIT=$QUIET_MAX_WAIT QUIET_WINDOW=$QUIET_WINDOW QUIET_BUDGET=${QUIET_BUDGET:-none} (waited $((QUIET_SPENT / 10))s in all) NOISE_MAX=$NOISE_MAX quick=$QUICK"
        echo "proxies: $PROXIES"
        echo "scenarios: $SCENARIOS"
        for v in "${SKIPPED[@]}"; do v=${v#*:}; echo "skipped: ${v/:/: }"; done
        echo "clk_tck: $CLK_TCK"
        echo "ulimit -n: $NOFILE"
        echo "wall time: ${WALL_S}s"
        for v in net.ipv4.tcp_congestion_control net.ipv4.tcp_wmem net.ipv4.tcp_rmem \
            net.ipv4.tcp_tw_reuse net.ipv4.ip_local_port_range kernel.io_uring_disabled; do
            echo "sysctl $v: $(tr '\t' ' ' <"/proc/sys/${v//.//}" 2>/dev/null || echo n/a)"
        done
        echo
        echo "## versions"
        echo "haproxy: $(version_of haproxy -v)"
        echo "nginx: $(version_of nginx -v)"
        echo "nginx stream module: ${NGX_STREAM_LOAD:-built in or not used}"
        echo "wrk: $(version_of wrk -v)"
        echo "iperf3: $(version_of iperf3 -v)"
        if [[ -n $AUTOCANNON ]]; then
            echo "autocannon: $AUTOCANNON $(version_of "$AUTOCANNON" --version) (node $(version_of node --version))"
        fi
        echo "python: $(version_of "$PYTHON" --version); plots: ${PLOT_PY:-none} $([[ -z $PLOT_PY ]] || version_of "$PLOT_PY" -c 'import matplotlib; print("matplotlib", matplotlib.__version__)')"
        if [[ " $PROXIES " == *" ringway"* ]]; then
            echo "ringway binary: $RINGWAY_BIN (copied at start; modified $RINGWAY_MTIME)"
            echo "ringway --version: $(version_of "$RINGWAY_RUN" --version)"
            echo "ringway sha256: $(sha256sum "$RINGWAY_RUN" | cut -d' ' -f1)"
        fi
        if [[ -n $RINGWAY_LOAD_RUN ]]; then
            echo "ringway-load: $RINGWAY_LOAD_BIN (copied at start) $(version_of "$RINGWAY_LOAD_RUN" --version)"
        fi
        echo "repo: $(git -C "$REPO_ROOT" rev-parse -q --verify HEAD || echo 'no commit') $(git --no-optional-locks -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -q . && echo '(working tree modified)')"
        echo
        echo "## commands run, in order (ports are picked fresh for each proxy start)"
        cat "$TMP/commands.txt"
        echo
        echo "## generated configurations (ports from the last rep)"
        for v in "$TMP/origin/nginx.conf" "$TMP"/*.cfg "$TMP"/*.toml "$TMP"/nginx-stream.conf "$TMP/report.lua"; do
            [[ -f $v ]] || continue
            echo "### ${v#"$TMP"/}"
            cat "$v"
            echo
        done
    } >"$envfile"
}

# --------------------------------------------------------------------------------- main
note "CPU layout: proxy on CPU $PROXY_CPU, load generator + origin on CPU $LOAD_CPU (A1: all on CPU $LOAD_CPU); set PROXY_CPU / LOAD_CPU to change"
note "proxies: $PROXIES"
note "scenarios: $SCENARIOS; DUR=${DUR}s (L ${L_DUR}s), REPS=$REPS, WARMUP=${WARMUP}s$(has_scen D && echo ", D: $IDLE_CONNS idle conns held ${D_HOLD}s")$(has_scen S && echo ", S: $S_RATE conn/s for ${S_DUR}s, switch at half time (ringway and HAProxy only)")$(has_scen R && echo ", R: the same load, route added at 1/3 and removed at 2/3 (ringway only)")$(has_scen U && echo ", U: the same load, $UPGRADES upgrades/reloads/restarts (ringway, ringway-restart, haproxy)")"
: >"$TMP/commands.txt"
: >"$TMP/runs.jsonl"
write_lua
setup_origin
note "origin: nginx 127.0.0.1:$ORIGIN_PORT (PID $NGINX_PID), iperf3 -s 127.0.0.1:$IPERF_PORT (PID $IPERF_PID)"

split=()            # the scenarios of the split layout, on one proxy start
for s in $SCENARIOS; do
    case $s in A | A-ac | B | C | C-http | L) split+=("$s") ;; esac
done
sni_peer() {        # sni_peer NAME: true when NAME takes part in B-sni
    case $1 in direct | ringway | ringway-sni | haproxy | haproxy-sni) return 0 ;; esac
    return 1
}
u_peer() {          # u_peer NAME: true when NAME takes part in U
    case $1 in ringway | ringway-restart | haproxy) return 0 ;; esac
    return 1
}
proxy_has_work() {  # proxy_has_work NAME: true when NAME runs a scenario of this selection
    if has_scen B-sni && sni_peer "$1"; then return 0; fi
    if has_scen U && u_peer "$1"; then return 0; fi
    [[ $1 != ringway-restart ]] || return 1     # it runs U only
    [[ $1 != *-sni ]] || return 1               # the -sni proxies run B-sni only
    if ((${#split[@]} > 0)) || has_scen A1; then return 0; fi
    [[ $1 != direct ]] || return 1              # D, S and R need a proxy process
    if has_scen D; then return 0; fi
    case $1 in
        ringway | ringway-*) has_scen S || has_scen R ;;
        haproxy*) has_scen S ;;
        *) return 1 ;;
    esac
}
for ((rep = 1; rep <= REPS; rep++)); do
    for proxy in $PROXIES; do
        proxy_has_work "$proxy" || continue
        note "rep $rep/$REPS: $proxy"
        # B-sni: a fresh start warmed up with its own load, for the plain proxies as for the
        # peeking ones (the -sni proxies run nothing else)
        if has_scen B-sni && sni_peer "$proxy"; then
            WARM_WITH=hello
            run_group "$rep" "$proxy" "$PROXY_CPU" "$WARMUP" B-sni
            WARM_WITH=wrk
        fi
        # U's plain restart runs nothing else
        if [[ $proxy == ringway-restart ]]; then
            run_group "$rep" "$proxy" "$PROXY_CPU" 0 U
            continue
        fi
        [[ $proxy != *-sni ]] || continue
        run_group "$rep" "$proxy" "$PROXY_CPU" "$WARMUP" "${split[@]}"
        if has_scen A1; then run_group "$rep" "$proxy" "$LOAD_CPU" "$WARMUP" A1; fi
        # D: a fresh start without warm-up, so that memory freed by earlier connections does
        # not hide the growth; not for direct (no proxy process)
        if has_scen D && [[ $proxy != direct ]]; then run_group "$rep" "$proxy" "$PROXY_CPU" 0 D; fi
        # S: a fresh start without warm-up (the route is moved during the run); ringway and
        # HAProxy only
        if has_scen S; then
            case $proxy in
                ringway | ringway-* | haproxy*) run_group "$rep" "$proxy" "$PROXY_CPU" 0 S ;;
            esac
        fi
        # R: a fresh start without warm-up (a route is added and removed during the run);
        # ringway only: HAProxy has no runtime route (listener) add without a reload
        if has_scen R; then
            case $proxy in
                ringway | ringway-*) run_group "$rep" "$proxy" "$PROXY_CPU" 0 R ;;
            esac
        fi
        # U: a fresh start without warm-up (the process is upgraded / reloaded during the
        # run); ringway (upgrade) and haproxy (master-worker reload) only; ringway-restart
        # above
        if has_scen U; then
            case $proxy in
                ringway) run_group "$rep" "$proxy" "$PROXY_CPU" 0 U ;;
                haproxy) HAPROXY_MW=1
                         run_group "$rep" "$proxy" "$PROXY_CPU" 0 U
                         HAPROXY_MW=0 ;;
            esac
        fi
    done
    # W: ringway only, its own fresh start with W_WORKERS workers (not one per proxy)
    if has_scen W; then note "rep $rep/$REPS: ringway, W_WORKERS=$W_WORKERS"; measure_workers "$rep"; fi
done

OUT_DIR=$RESULTS_ROOT/$START_DATE-$HOST
n=2
while [[ -e $OUT_DIR ]]; do OUT_DIR=$RESULTS_ROOT/$START_DATE-$HOST.$n; n=$((n + 1)); done
mkdir -p "$OUT_DIR"
WALL_S=$(( ${EPOCHREALTIME%.*} - ${SCRIPT_T0%.*} ))
write_env "$OUT_DIR/env.txt"
echo
skipped_args=()
for v in "${SKIPPED[@]}"; do skipped_args+=(--skipped "$v"); done
"${STAT[@]}" report --runs "$TMP/runs.jsonl" --outdir "$OUT_DIR" --proxies "$PROXIES" \
    --noise-max "$NOISE_MAX" --meta "date=$START_TIME" --meta "host=$HOST" \
    --meta "proxy_cpu=$PROXY_CPU" --meta "load_cpu=$LOAD_CPU" --meta "dur_s=$DUR" \
    --meta "l_dur_s=$L_DUR" --meta "reps=$REPS" --meta "clk_tck=$CLK_TCK" \
    --meta "proxies=$PROXIES" --meta "scenarios=$SCENARIOS" --meta "kernel=$(uname -r)" \
    --meta "idle_conns=$IDLE_CONNS" --meta "warmup_s=$WARMUP" --meta "quick=$QUICK" \
    --meta "s_rate=$S_RATE" --meta "s_dur_s=$S_DUR" --meta "sni_name=$SNI_NAME" \
    --meta "upgrades=$UPGRADES" \
    --meta "wall_s_before_report=$WALL_S" "${skipped_args[@]}"
if has_scen W; then workers_report "$OUT_DIR"; fi
if [[ $PLOTS == 1 && -n $PLOT_PY ]]; then
    if plots=$("$PLOT_PY" "$SCRIPT_DIR/lib/benchplot.py" "$OUT_DIR/results.json" "$OUT_DIR" 2>"$TMP/plot.err"); then
        note "plots: $(paste -sd ' ' <<<"$plots")"
    else
        note "warning: plotting failed: $(tail -n 3 "$TMP/plot.err")"
    fi
fi
echo
note "results in ${OUT_DIR#"$REPO_ROOT"/}/ (results.json, table.md, env.txt, plot-*.png)"
note "wall time: $(( ${EPOCHREALTIME%.*} - ${SCRIPT_T0%.*} ))s"
