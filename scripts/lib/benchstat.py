#!/usr/bin/env python3
"""Helpers for scripts/bench.sh (standard library only).

Subcommands:
  freeport [N] [--outside-ephemeral]
                      print N distinct free TCP ports on 127.0.0.1 (one per line); with
                      --outside-ephemeral below net.ipv4.ip_local_port_range, so that no
                      client socket of the load can hold the port meanwhile
  quiet ...           wait until the test CPUs are idle (the "quiet gate"); print seconds waited
  route-phase ...     scenario R's route changes during the load: at --add-at-ms run the add
                      command, then probe the new address until a GET / answers 200; at
                      --remove-at-ms run the remove command, then check that a connect to the
                      address is refused; then read the listener's queue resets from the
                      metrics command; print one JSON object
  record ...          parse one wrk / iperf3 / autocannon / ringway-load output (for S with the
                      switch's timings and exit code, for R with route-phase's JSON, for U
                      with the operations bench.sh made), print one JSON line (a "run")
  report ...          read the runs, write results.json and table.md, print the table

Method (see the header of bench.sh and /work/shared/research/perf-peers.md): per
(scenario, proxy) the median over the runs is reported, with spread = (max-min)/median;
runs whose noise (CPU used by processes outside the test) is above --noise-max are left out
when at least two clean runs remain; ratio to direct = median(proxied) / median(direct).

results.json keeps the schema of the first runs (meta, summary, runs; summary rows with
scenario, proxy, figure, ratio_to_direct, proxy_cpu_per_unit, ...) and only adds to it:
summary rows gain layout, tool, figure_min/max, proxy_cpu_min/max (and for D rss_*/threads,
for A1 the target, for S failed_requests/failed_pct/exchanges/outcomes/switch_s, for R the
same load figures and add_s/ready_s/remove_s/refused_after_remove/listener_queue_resets, for U
the same load figures and ops/op_s/op_s_min/op_s_max/pid_changed/old_exited), and a
top-level "skipped" list names what did not run and why.
"""

import argparse
import json
import os
import random
import re
import shlex
import socket
import statistics
import subprocess
import sys
import time

# scenario id -> how it is reported. work: the run field the proxy's CPU is divided by.
SCENARIOS = {
    "A": {"title": "A keep-alive, wrk -c50", "figure": "rps", "unit": "req/s",
          "cpu_unit": "CPU-s/100k req", "work": "requests", "scale": 1e5},
    "A-ac": {"title": "A-ac keep-alive, autocannon -c50", "figure": "rps", "unit": "req/s",
             "cpu_unit": "CPU-s/100k req", "work": "requests", "scale": 1e5},
    "A1": {"title": "A1 keep-alive, all on one core", "figure": "rps", "unit": "req/s",
           "cpu_unit": "CPU-s/100k req", "work": "requests", "scale": 1e5},
    "B": {"title": "B new conn per request, wrk -c50", "figure": "rps", "unit": "conn/s",
          "cpu_unit": "CPU-s/100k conn", "work": "requests", "scale": 1e5},
    # B-sni: a TLS ClientHello per new connection (ringway-load --exchange hello); the -sni
    # proxies route by its server name, the plain ones do not look at it
    "B-sni": {"title": "B-sni new conn per ClientHello, ringway-load -c50", "figure": "rps",
              "unit": "conn/s", "cpu_unit": "CPU-s/100k conn", "work": "requests",
              "scale": 1e5},
    "C": {"title": "C bulk, iperf3 1 stream", "figure": "gbps", "unit": "Gbit/s",
          "cpu_unit": "CPU-s/GiB", "work": "bytes", "scale": 2 ** 30},
    "C-http": {"title": "C-http 1 MiB responses, wrk -c10", "figure": "gbps", "unit": "Gbit/s",
               "cpu_unit": "CPU-s/GiB", "work": "bytes", "scale": 2 ** 30},
    "D": {"title": "D idle connections held", "figure": "rss_per_conn_b", "unit": "B RSS/conn",
          "cpu_unit": "CPU-s/100k conn", "work": "connections", "scale": 1e5},
    "L": {"title": "L one connection, wrk -c1", "figure": "p50_us", "unit": "µs p50",
          "cpu_unit": "CPU-s/100k req", "work": "requests", "scale": 1e5},
    # no proxy CPU for S (bench.sh passes no proxy ticks: HAProxy's process is replaced)
    "S": {"title": "S backend switch under load", "figure": "failed_requests",
          "unit": "failed", "cpu_unit": "-", "work": "exchanges", "scale": 1},
    # R: the same load as S on route bench while a route is added and removed beside it
    # (ringway only); no proxy CPU either, like S
    "R": {"title": "R route added and removed under load", "figure": "failed_requests",
          "unit": "failed", "cpu_unit": "-", "work": "exchanges", "scale": 1},
    # U: the same load while the proxy is upgraded (ringway), reloaded (HAProxy master-worker)
    # or restarted (ringway-restart) UPGRADES times; no proxy CPU (the process is replaced)
    "U": {"title": "U upgrade / reload / restart under load", "figure": "failed_requests",
          "unit": "failed", "cpu_unit": "-", "work": "exchanges", "scale": 1},
}
SCENARIO_ORDER = ["A", "A-ac", "A1", "B", "B-sni", "C", "C-http", "D", "L", "S", "R", "U"]
# A1: everything on one core; the goal for ringway there (ratio of req/s to direct)
A1_TARGET = 0.6


def ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def cmd_freeport(args):
    socks = []
    try:
        if args.outside_ephemeral:
            # random ports from 10000 up to the ephemeral range: the kernel never gives one
            # of them to a connecting socket, so a port stays free between this check and
            # the bind of whoever gets it (the load opens thousands of connections meanwhile)
            top = min(ephemeral_range()[0], 65536)
            cands = list(range(10000, top)) if top > 10000 else list(range(1024, top))
            random.shuffle(cands)
            for port in cands:
                if len(socks) == args.n:
                    break
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    s.close()
                    continue
                socks.append(s)
            if len(socks) < args.n:
                sys.exit(f"freeport: only {len(socks)} free ports below the ephemeral range")
        for _ in range(args.n - len(socks)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        for s in socks:
            print(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()


def cpu_idle_ticks():
    """{cpu: idle + iowait + steal ticks} from /proc/stat (idle is measured exactly, unlike
    the tick-sampled user/system fields)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in vals[:8]]
                out[int(name[3:])] = v[3] + v[4] + v[7]
    return out


def cmd_quiet(args):
    """Wait until every test CPU is below --threshold % busy for --window seconds."""
    cpus = {int(c) for c in args.cpus.split(",")}
    tck = os.sysconf("SC_CLK_TCK")
    start = time.monotonic()
    while True:
        i0, t0 = cpu_idle_ticks(), time.monotonic()
        time.sleep(args.window)
        i1, t1 = cpu_idle_ticks(), time.monotonic()
        busiest = max(100.0 * (1 - (i1[c] - i0[c]) / tck / (t1 - t0)) for c in cpus)
        waited = time.monotonic() - start
        if busiest < args.threshold or waited >= args.max_wait:
            print(f"{waited:.1f}s {'quiet' if busiest < args.threshold else 'busy'}"
                  f" ({busiest:.0f}% on the busiest test CPU)")
            return


# --------------------------------------------------------------------------- route-phase
def read_cmd(path):
    """A command line bench.sh wrote as NUL-terminated arguments (exact, no quoting)."""
    with open(path, "rb") as f:
        return [a.decode() for a in f.read().split(b"\0")[:-1]]


def run_cmd(cmd, limit):
    """Runs cmd to its end (killed after `limit` s): (rc, output, start, end) in epoch s."""
    t0 = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=limit)
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        rc, out = 124, e.stdout or b""
    return rc, out.decode(errors="replace").strip(), t0, time.time()


def http_get(host, port, timeout):
    """One HTTP/1.0 GET / within `timeout` s: "ok" (status 200), "refused", "timeout",
    "reset", "closed", "status ..." or "error: ..."."""
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            s.settimeout(left)
            chunk = s.recv(4096)
            if not chunk:
                return "closed" if not data else f"status {data[:40]!r}"
            data += chunk
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        return "ok" if re.match(r"HTTP/1\.[01] 200\b", line) else f"status {line[:40]}"
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return f"error: {e}"
    finally:
        s.close()


def connect_check(host, port, timeout):
    """How a connect to host:port ends within `timeout` s: "refused", "accepted" (the
    handshake completed: something still listens), "timeout" (no answer to the SYN) or
    "error: ..."."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((host, port))
        return "accepted"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return f"error: {e}"
    finally:
        s.close()


def sleep_until(t):
    while True:
        left = t - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def cmd_route_phase(args):
    """Scenario R, while the load runs on another route (see the module docstring)."""
    host, _, port = args.listen.rpartition(":")
    port = int(port)
    load_t0 = float(args.load_t0)
    add_cmd, remove_cmd, metrics_cmd = (read_cmd(args.add_cmd), read_cmd(args.remove_cmd),
                                        read_cmd(args.metrics_cmd))
    out = {"listen": args.listen, "add_cmd": shlex.join(add_cmd),
           "remove_cmd": shlex.join(remove_cmd), "metrics_cmd": shlex.join(metrics_cmd)}

    def emit():
        print(json.dumps(out, sort_keys=True))

    # --- add, then probe the new address until a GET / answers 200
    sleep_until(load_t0 + args.add_at_ms / 1000)
    rc, text, t0, t1 = run_cmd(add_cmd, 30)
    out.update({"add_rc": rc, "add_output": text, "add_s": round(t1 - t0, 4),
                "add_at_s": round(t0 - load_t0, 3)})
    if rc != 0:
        return emit()
    probes, outcomes, first = 0, {}, None
    deadline = t1 + args.probe_max
    while time.time() < deadline:
        res = http_get(host, port, max(0.01, min(1.0, deadline - time.time())))
        probes += 1
        first = first or res
        if res == "ok":
            out["ready_s"] = round(time.time() - t1, 4)
            break
        outcomes[res] = outcomes.get(res, 0) + 1
        time.sleep(0.001)
    out.update({"probes": probes, "first_probe": first, "probe_failures": outcomes,
                "ready": "ready_s" in out})

    # --- remove, then a connect to the address must be refused at once
    sleep_until(load_t0 + args.remove_at_ms / 1000)
    rc, text, t0, t1 = run_cmd(remove_cmd, 30)
    out.update({"remove_rc": rc, "remove_output": text, "remove_s": round(t1 - t0, 4),
                "remove_at_s": round(t0 - load_t0, 3)})
    if rc != 0:
        return emit()
    first = connect_check(host, port, 1.0)
    out["after_remove"] = first
    out["refused_after_remove"] = "yes" if first == "refused" else "no"
    if first != "refused":
        # what a client gets there, and when (if within 2 s) connects start to be refused
        out["after_remove_get"] = http_get(host, port, 1.0)
        end = time.time() + 2.0
        while time.time() < end:
            if connect_check(host, port, 0.2) == "refused":
                out["refused_later_s"] = round(time.time() - t1, 4)
                break
            time.sleep(0.01)

    # --- the listeners' queue resets (one total; this ringway was started fresh and only
    # this route's listeners were retired): workers send their metrics every second, so read
    # it 1.1 s after the removal, retry for 3 s more
    t_removed = t1
    pat = re.compile(r'^ringway_listener_queue_resets_total (\d+)\s*$', re.M)
    sleep_until(t_removed + 1.1)
    end = time.time() + 3.0
    while True:
        rc, text, t0, _ = run_cmd(metrics_cmd, 10)
        m = pat.search(text) if rc == 0 else None
        if m or time.time() >= end:
            break
        time.sleep(0.5)
    out["metrics_rc"] = rc
    out["metrics_read_after_remove_s"] = round(t0 - t_removed, 3)
    out["listener_queue_resets"] = int(m.group(1)) if m else None
    if rc != 0:
        out["metrics_output"] = text[-300:]
    emit()


# ------------------------------------------------------------------------------- parsers
def parse_wrk(text, _args):
    """wrk output with our Lua done() hook: a line 'BENCHJSON {...}'."""
    for line in text.splitlines():
        if line.startswith("BENCHJSON "):
            d = json.loads(line[len("BENCHJSON "):])
            dur = d["duration_us"] / 1e6
            errors = {k[4:]: v for k, v in d.items() if k.startswith("err_")}
            out = {
                "requests": d["requests"],
                "bytes": d["bytes"],
                "duration_s": dur,
                "rps": d["requests"] / dur if dur > 0 else 0.0,
                "gbps": d["bytes"] * 8 / dur / 1e9 if dur > 0 else 0.0,
                "p50_us": d["p50_us"],
                "p99_us": d["p99_us"],
                "errors": errors,
            }
            if d["requests"] == 0:
                out["failed"] = "no requests completed"
            return out
    return {"failed": "no BENCHJSON line in wrk output"}


def parse_iperf3(text, _args):
    try:
        d = json.loads(text)
    except ValueError as e:
        return {"failed": f"iperf3 output is not JSON: {e}"}
    if d.get("error"):
        return {"failed": f"iperf3: {d['error']}"}
    try:
        r = d["end"]["sum_received"]
        out = {"bytes": int(r["bytes"]), "duration_s": float(r["seconds"]),
               "gbps": float(r["bits_per_second"]) / 1e9,
               "retransmits": d["end"].get("sum_sent", {}).get("retransmits")}
    except (KeyError, TypeError, ValueError) as e:
        return {"failed": f"iperf3 JSON lacks end.sum_received: {e}"}
    if out["bytes"] == 0:
        out["failed"] = "iperf3 received 0 bytes"
    return out


def json_report(text, tool):
    """The JSON object a tool printed (after any leading noise): (object, None), or
    (None, {"failed": reason})."""
    start = text.find("{")
    try:
        d = json.loads(text[start:]) if start >= 0 else None
    except ValueError as e:
        return None, {"failed": f"{tool} output is not JSON: {e}"}
    if not isinstance(d, dict):
        return None, {"failed": f"no JSON object in {tool} output"}
    return d, None


def parse_autocannon(text, _args):
    """autocannon -j: one JSON object. Its latencies are whole milliseconds."""
    d, failed = json_report(text, "autocannon")
    if failed:
        return failed
    try:
        dur = float(d["duration"])
        req = int(d["requests"]["total"])
        out = {
            "requests": req,
            "bytes": int(d["throughput"]["total"]),
            "duration_s": dur,
            "rps": req / dur if dur > 0 else 0.0,
            "p50_us": float(d["latency"]["p50"]) * 1000,
            "p99_us": float(d["latency"]["p99"]) * 1000,
            "latency_resolution_us": 1000,
            "errors": {k: int(d.get(k) or 0)
                       for k in ("errors", "timeouts", "non2xx", "resets", "mismatches")},
        }
    except (KeyError, TypeError, ValueError) as e:
        return {"failed": f"autocannon JSON lacks a field: {e}"}
    if req == 0:
        out["failed"] = "no requests completed"
    return out


def parse_idle(text, args):
    """ringway-load --mode idle JSON report, plus the proxy's VmRSS/threads the script read
    before the connections were opened and while they were held."""
    d, failed = json_report(text, "ringway-load")
    if failed:
        return failed
    held = int(d.get("held") or 0)
    out = {"connections": held, "connections_wanted": int(d.get("connections") or 0),
           "connections_opened": int(d.get("connections_opened") or 0),
           "outcomes": d.get("outcomes"), "duration_s": d.get("duration_s")}
    if args.held_seen == "":
        out["failed"] = "ringway-load never reported holding its connections"
        return out
    seen = int(args.held_seen)
    out["connections_seen_held"] = seen
    if args.rss_before_kb == "" or args.rss_held_kb == "":
        out["failed"] = "could not read the proxy's VmRSS"
        return out
    before, during = int(args.rss_before_kb), int(args.rss_held_kb)
    out.update({"rss_before_kb": before, "rss_held_kb": during,
                "threads": int(args.threads) if args.threads != "" else None})
    if seen <= 0:
        out["failed"] = "no connection was held"
    else:
        out["rss_per_conn_b"] = (during - before) * 1024 / seen
        if held < out["connections_wanted"]:
            out["warning"] = f"only {held} of {out['connections_wanted']} connections held"
    return out


def parse_conn_load(text):
    """ringway-load --mode conn JSON report (scenarios S and R): (run fields, None), or
    (None, {"failed": reason})."""
    d, failed = json_report(text, "ringway-load")
    if failed:
        return None, failed
    try:
        oc = {k: int(v) for k, v in d["outcomes"].items()}
        lat, svc = d["latency_us"], d["service_us"]
        exchanges = int(d["exchanges"])
        out = {
            "exchanges": exchanges, "ok": oc.get("ok", 0),
            "failed_requests": int(d["failed"]),
            "failed_pct": 100.0 * int(d["failed"]) / exchanges if exchanges else None,
            "outcomes": oc, "duration_s": float(d["duration_s"]),
            "rps": float(d.get("per_second") or 0.0), "rate": d.get("rate"),
            "p50_us": int(lat["p50"]), "p99_us": int(lat["p99"]),
            "p999_us": int(lat["p999"]), "max_us": int(lat["max"]),
            "service_p99_us": int(svc["p99"]),
            "max_dispatch_lag_us": d.get("max_dispatch_lag_us"),
        }
    except (KeyError, TypeError, ValueError) as e:
        return None, {"failed": f"ringway-load JSON lacks a field: {e}"}
    if exchanges == 0:
        out["failed"] = "no exchange was made"
    if oc.get("dropped"):
        out["warning"] = (f"{oc['dropped']} exchanges dropped by ringway-load itself "
                          "(the load tool was overloaded; counted as failed)")
    return out, None


def parse_switch(text, args):
    """Scenario S: ringway-load --mode conn JSON report, plus the switch the script made
    half-way (its exit code and timestamps)."""
    out, failed = parse_conn_load(text)
    if failed:
        return failed
    out.update({"switch_how": args.switch_how, "switch_cmd": args.switch_cmd,
                "switch_rc": int(args.switch_rc) if args.switch_rc != "" else None})
    if args.switch_msg:
        out["switch_output"] = args.switch_msg.strip()
    if args.switch_t0 and args.switch_t1:
        t0, t1 = float(args.switch_t0), float(args.switch_t1)
        out["switch_s"] = round(t1 - t0, 4)
        if args.load_t0:
            out["switch_at_s"] = round(t0 - float(args.load_t0), 3)
        if args.switch_stopped:      # HAProxy: SIGTERM -> exit, exit -> new one listening
            stopped = float(args.switch_stopped)
            out["switch_stop_s"] = round(stopped - t0, 4)
            out["switch_start_s"] = round(t1 - stopped, 4)
    if "failed" in out:
        pass
    elif out["switch_rc"] is None:
        out["failed"] = "no switch was made"
    elif out["switch_rc"] != 0:
        out["failed"] = (f"the switch failed (exit {out['switch_rc']}): "
                         f"{out.get('switch_output', '')[-300:]}")
    return out


def parse_hello(text, args):
    """Scenario B-sni: ringway-load --mode conn --closed-loop --exchange hello JSON report;
    for ringway-sni also how ringway routed the address's connections ("sni=N default=M",
    ringway_listen_routed_total since the start, warm-up included)."""
    out, failed = parse_conn_load(text)
    if failed:
        return failed
    out["requests"] = out["ok"]          # the work the proxy's CPU is divided by
    warn = [out["warning"]] if out.get("warning") else []
    if out.get("failed_requests"):
        warn.append(f"{out['failed_requests']:,} of {out['exchanges']:,} exchanges failed "
                    f"({outcomes_text(out['outcomes'])})")
    if args.proxy == "ringway-sni":
        routed = dict((k, int(v)) for k, _, v in
                      (x.partition("=") for x in (args.routed or "").split()) if v.isdigit())
        out["routed"] = routed
        if not routed:
            warn.append("no ringway_listen_routed_total for the address: routing not checked")
        elif routed.get("sni", 0) < out["exchanges"] or \
                sum(v for k, v in routed.items() if k != "sni") > 10:
            warn.append(f"not all routed by sni: {args.routed.strip()} for "
                        f"{out['exchanges']:,} exchanges (+ warm-up)")
    if warn:
        out["warning"] = "; ".join(warn)
    return out


# what scenario R keeps of route-phase's JSON
ROUTE_KEYS = ("listen", "add_cmd", "add_rc", "add_output", "add_s", "add_at_s", "ready_s",
              "ready", "probes", "first_probe", "probe_failures", "remove_cmd", "remove_rc",
              "remove_output", "remove_s", "remove_at_s", "after_remove",
              "refused_after_remove", "after_remove_get", "refused_later_s", "metrics_cmd",
              "metrics_rc", "metrics_read_after_remove_s", "metrics_output",
              "listener_queue_resets")


def parse_route(text, args):
    """Scenario R: ringway-load --mode conn JSON report (the load on route bench), plus
    route-phase's JSON (route extra added, probed, removed, checked; its queue resets)."""
    out, failed = parse_conn_load(text)
    if failed:
        return failed
    phase = None
    try:
        with open(args.route_json, errors="replace") as f:
            phase, _ = json_report(f.read(), "route-phase")
    except (OSError, TypeError):
        pass
    if phase is None:
        rc = args.route_rc or "?"
        out.setdefault("failed", f"the route phase printed no JSON (exit {rc})")
        return out
    out.update({k: phase[k] for k in ROUTE_KEYS if k in phase})
    warn = [out["warning"]] if out.get("warning") else []
    if "failed" in out:
        pass
    elif phase.get("add_rc") != 0:
        out["failed"] = (f"route add failed (exit {phase.get('add_rc')}): "
                         f"{(phase.get('add_output') or '')[-300:]}")
    elif phase.get("remove_rc") != 0:
        out["failed"] = (f"route remove failed (exit {phase.get('remove_rc')}): "
                         f"{(phase.get('remove_output') or '')[-300:]}")
    # ringway's behaviour, not the benchmark's: the run stays, the row shows it
    if out.get("ready") is False:
        warn.append(f"the added address never answered 200 in {out.get('probes')} probes "
                    f"({out.get('probe_failures')})")
    elif out.get("first_probe") not in (None, "ok"):
        warn.append(f"the first probe after `route add` returned got {out['first_probe']}")
    if out.get("refused_after_remove") == "no":
        warn.append(f"after `route remove` returned a connect was {out.get('after_remove')} "
                    f"(GET: {out.get('after_remove_get')}; refused "
                    + (f"{out['refused_later_s']} s later)" if out.get("refused_later_s")
                       is not None else "not within 2 s)"))
    if out.get("listener_queue_resets"):
        warn.append(f"{out['listener_queue_resets']} connections reset in the removed "
                    "listener's queue")
    elif out.get("remove_rc") == 0 and out.get("listener_queue_resets") is None:
        warn.append("no ringway_listener_queue_resets_total line after the removal")
    if warn:
        out["warning"] = "; ".join(warn)
    return out


OP_FIELDS = ("n", "rc", "t0", "t1", "old_pid", "new_pid", "pid_changed", "old_exited",
             "sessions_moved", "output")


def parse_upgrade(text, args):
    """Scenario U: ringway-load --mode conn JSON report, plus the operations bench.sh made
    during it (one tab-separated line each, OP_FIELDS)."""
    out, failed = parse_conn_load(text)
    if failed:
        return failed
    ops = []
    try:
        with open(args.upgrade_ops, errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                v = dict(zip(OP_FIELDS, line.rstrip("\n").split("\t")))
                op = {"n": int(v["n"]), "rc": int(v["rc"]) if v.get("rc") else None,
                      "pid_changed": v.get("pid_changed") or None,
                      "old_exited": v.get("old_exited") or None,
                      "old_pid": int(v["old_pid"]) if v.get("old_pid") else None,
                      "new_pid": int(v["new_pid"]) if v.get("new_pid") else None}
                if v.get("t0") and v.get("t1"):
                    op["op_s"] = round(float(v["t1"]) - float(v["t0"]), 4)
                    if args.load_t0:
                        op["at_s"] = round(float(v["t0"]) - float(args.load_t0), 3)
                if v.get("sessions_moved"):
                    op["sessions_moved"] = int(v["sessions_moved"])
                if (v.get("output") or "").strip():
                    op["output"] = v["output"].strip()[-400:]
                ops.append(op)
    except (OSError, TypeError, ValueError) as e:
        out.setdefault("failed", f"cannot read the operations: {e}")
        return out
    times = [op["op_s"] for op in ops if op.get("op_s") is not None]
    out.update({"upgrade_how": args.upgrade_how, "ops": ops, "ops_made": len(ops),
                "ops_failed": sum(op["rc"] != 0 for op in ops),
                "op_s_mean": round(statistics.mean(times), 4) if times else None,
                "pid_changed_ops": sum(op["pid_changed"] == "yes" for op in ops),
                "old_exited_ops": sum(op["old_exited"] == "yes" for op in ops
                                      if op.get("old_pid"))})
    warn = [out["warning"]] if out.get("warning") else []
    if "failed" in out:
        pass
    elif not ops:
        out["failed"] = "no operation was made"
    # the proxy's behaviour, not the benchmark's: the run stays, the row shows it
    for op in ops:
        if op["rc"] != 0:
            warn.append(f"operation {op['n']} failed (exit {op['rc']}): "
                        f"{(op.get('output') or '')[-200:]}")
        elif op["pid_changed"] != "yes":
            warn.append(f"operation {op['n']}: the pid did not change")
        if op.get("old_pid") and op["old_exited"] != "yes":
            warn.append(f"operation {op['n']}: the replaced process {op['old_pid']} had not "
                        "exited 5 s after the load")
        # HAProxy's master logs how the old worker ended
        m = re.search(r"Former worker \(\d+\) exited with code (\d+) \(([^)]*)\)",
                      op.get("output") or "")
        if m:
            op["old_exit_code"] = int(m.group(1))
            if m.group(1) != "0":
                warn.append(f"operation {op['n']}: the old worker exited with code "
                            f"{m.group(1)} ({m.group(2)})")
    if warn:
        out["warning"] = "; ".join(warn)
    return out


PARSERS = {"wrk": parse_wrk, "iperf3": parse_iperf3, "autocannon": parse_autocannon,
           "idle": parse_idle, "switch": parse_switch, "route": parse_route,
           "hello": parse_hello, "upgrade": parse_upgrade}


def cmd_record(args):
    with open(args.output, errors="replace") as f:
        text = f.read()
    wall = float(args.t1) - float(args.t0)
    run = {"scenario": args.scenario, "proxy": args.proxy, "rep": args.rep,
           "cmd": args.cmd, "exit_code": args.rc, "wall_s": round(wall, 3),
           "tool": args.tool, "layout": args.layout}
    run.update(PARSERS[args.tool](text, args))
    if args.rc != 0 and "failed" not in run:
        run["failed"] = f"load tool exited with {args.rc}"
    tck = float(args.clk_tck)
    if args.proxy_ticks != "":
        cpu_s = int(args.proxy_ticks) / tck
        run["proxy_cpu_s"] = cpu_s
        run["proxy_core_pct"] = round(100.0 * cpu_s / wall, 1) if wall > 0 else None
        sc = SCENARIOS[args.scenario]
        work = run.get(sc["work"])
        if work:
            run["proxy_cpu_per_unit"] = cpu_s / work * sc["scale"]
    known = int(args.known_ticks) / tck
    busy = args.ncpus * wall - int(args.idle_ticks) / tck
    run["test_cpu_s"] = round(known, 3)
    run["noise_pct"] = round(100.0 * (busy - known) / (args.ncpus * wall), 1) \
        if wall > 0 else None
    run["quiet_wait"] = args.quiet_wait
    print(json.dumps(run, sort_keys=True))
    sys.stderr.write(progress_line(run) + "\n")


def progress_line(run):
    sc = SCENARIOS[run["scenario"]]
    head = f"  rep {run['rep']} {run['scenario']:<6} {run['proxy']:<16}"
    if "failed" in run:
        return f"{head} FAILED: {run['failed']}"
    if run["scenario"] in ("S", "R", "U"):
        parts = [s_figure(run), f"p50 {run['p50_us']:,.0f} µs", outcomes_text(run["outcomes"])]
        if run.get("warning"):
            parts.append(run["warning"])
        parts.append(f"noise {run['noise_pct']} %")
        return head + " " + ", ".join(parts)
    parts = [] if sc["figure"] == "p50_us" else [f"{fnum(run[sc['figure']])} {sc['unit']}"]
    if "p99_us" in run:
        parts.append(f"p50 {run['p50_us']:,.0f} µs p99 {run['p99_us']:,.0f} µs")
    if "threads" in run:
        parts.append(f"{run['connections_seen_held']} held, VmRSS {run['rss_before_kb']:,} -> "
                     f"{run['rss_held_kb']:,} kB, threads {run['threads']}")
    if run.get("proxy_cpu_per_unit") is not None:
        parts.append(f"proxy {fnum(run['proxy_cpu_per_unit'])} {sc['cpu_unit']} "
                     f"({run['proxy_core_pct']} % of a core)")
    errs = sum((run.get("errors") or {}).values())
    if errs:
        parts.append(f"{errs} errors")
    if run.get("warning"):
        parts.append(run["warning"])
    parts.append(f"noise {run['noise_pct']} %")
    if "busy" in (run.get("quiet_wait") or ""):
        parts.append(f"quiet gate gave up: {run['quiet_wait']}")
    return head + " " + ", ".join(parts)


def s_figure(r):
    """S: "0 failed / 10,000 (0.00 %), p99 1,234 µs, switch 0.05 s" (a run or a summary row)."""
    fr, ex = r.get("failed_requests"), r.get("exchanges")
    if fr is None:
        return "failed"
    text = f"{fr:,.0f} failed / {fnum(ex)}"
    if r.get("failed_pct") is not None:
        text += f" ({r['failed_pct']:.2f} %)"
    if r.get("p99_us") is not None:
        text += f", p99 {r['p99_us']:,.0f} µs"
    if r.get("switch_s") is not None:
        text += f", {'downtime' if r['proxy'].startswith('haproxy') else 'switch'} " \
                f"{r['switch_s']:.3f} s"
    if r["scenario"] == "R":
        text += ", " + r_figure(r)
    if r["scenario"] == "U":
        text += ", " + u_figure(r)
    return text


U_OP = {"ringway": "upgrade", "haproxy": "reload", "ringway-restart": "restart (downtime)"}


def u_figure(r):
    """U's operation figures (a run or a summary row): "upgrade 0.052 s mean of 3, pid
    changed 3/3, old exited 3/3"."""
    name = U_OP.get(r["proxy"], "op")
    n = r.get("ops_made")
    text = f"{name} {fsec(r.get('op_s_mean'))} mean of {'-' if n is None else f'{n:g}'}"
    if r.get("ops_failed"):
        text += f", {r['ops_failed']:g} failed"
    if r["proxy"] != "ringway-restart":
        text += f", pid changed {r.get('pid_changed_ops', 0):g}/{'-' if n is None else f'{n:g}'}"
        if r.get("old_exited_ops") is not None:
            text += f", old exited {r['old_exited_ops']:g}/{'-' if n is None else f'{n:g}'}"
        bad = [c for c in r.get("old_exit_codes") or [] if c != 0]
        if bad:
            text += f" ({len(bad)} with exit code {'/'.join(sorted({str(c) for c in bad}))})"
    return text


def fsec(x):
    return "-" if x is None else f"{x:.3f} s"


def r_figure(r):
    """R's route figures (a run or a summary row): "add 0.012 s, ready 0.001 s, remove
    0.020 s, refused yes, queue resets 0"."""
    resets = r.get("listener_queue_resets")
    return (f"add {fsec(r.get('add_s'))}, ready {fsec(r.get('ready_s'))}, "
            f"remove {fsec(r.get('remove_s'))}, refused {r.get('refused_after_remove') or '-'}, "
            f"queue resets {'-' if resets is None else f'{resets:,.0f}'}")


def outcomes_text(oc):
    """The failed outcomes that happened, e.g. "refused 41, reset 3" ("" when none)."""
    bad = [f"{k} {v:,.0f}" for k, v in (oc or {}).items() if k != "ok" and v]
    return ", ".join(bad) if bad else "no failures"


# ------------------------------------------------------------------------------- summary
def med(xs):
    return statistics.median(xs) if xs else None


def spread(xs):
    m = med(xs)
    if len(xs) < 2 or not m:
        return None
    return (max(xs) - min(xs)) / m


def summarize(runs, noise_max):
    groups = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["proxy"]), []).append(r)
    rows = []
    for (scen, proxy), rs in groups.items():
        ok = [r for r in rs if "failed" not in r]
        clean = [r for r in ok if r.get("noise_pct") is None or r["noise_pct"] <= noise_max]
        used = clean if len(clean) >= 2 or len(clean) == len(ok) else ok
        sc = SCENARIOS[scen]
        fig = [r[sc["figure"]] for r in used]
        cpu = [r["proxy_cpu_per_unit"] for r in used if r.get("proxy_cpu_per_unit") is not None]
        row = {
            "scenario": scen, "proxy": proxy, "title": sc["title"],
            "layout": rs[0].get("layout", "split"), "tool": rs[0].get("tool"),
            "figure_name": sc["figure"], "figure_unit": sc["unit"],
            "figure": med(fig), "figure_spread": spread(fig),
            "figure_min": min(fig) if fig else None, "figure_max": max(fig) if fig else None,
            "p50_us": med([r["p50_us"] for r in used if "p50_us" in r]),
            "p99_us": med([r["p99_us"] for r in used if "p99_us" in r]),
            "proxy_cpu_per_unit": med(cpu), "proxy_cpu_unit": sc["cpu_unit"],
            "proxy_cpu_spread": spread(cpu),
            "proxy_cpu_min": min(cpu) if cpu else None, "proxy_cpu_max": max(cpu) if cpu else None,
            "proxy_core_pct": med([r["proxy_core_pct"] for r in used
                                   if r.get("proxy_core_pct") is not None]),
            "noise_pct": med([r["noise_pct"] for r in used if r.get("noise_pct") is not None]),
            "runs_used": len(used), "runs_total": len(rs), "runs_failed": len(rs) - len(ok),
            "reps_used": sorted(r["rep"] for r in used),
        }
        if sc["figure"] in ("rps", "p50_us"):
            row["rps"] = med([r["rps"] for r in used])
        if scen == "S":
            for k in ("exchanges", "failed_pct", "switch_s", "switch_stop_s", "switch_start_s",
                      "switch_at_s", "p999_us", "max_us", "service_p99_us"):
                row[k] = med([r[k] for r in used if r.get(k) is not None])
            row["failed_requests"] = row["figure"]
            keys = sorted({k for r in used for k in (r.get("outcomes") or {})})
            row["outcomes"] = {k: med([(r.get("outcomes") or {}).get(k, 0) for r in used])
                               for k in keys} if used else None
            sw = [r["switch_s"] for r in used if r.get("switch_s") is not None]
            row["switch_s_min"] = min(sw) if sw else None
            row["switch_s_max"] = max(sw) if sw else None
            row["switch_how"] = used[0].get("switch_how") if used else None
        if scen == "R":
            for k in ("exchanges", "failed_pct", "p999_us", "max_us", "service_p99_us",
                      "add_at_s", "remove_at_s", "probes"):
                row[k] = med([r[k] for r in used if r.get(k) is not None])
            row["failed_requests"] = row["figure"]
            keys = sorted({k for r in used for k in (r.get("outcomes") or {})})
            row["outcomes"] = {k: med([(r.get("outcomes") or {}).get(k, 0) for r in used])
                               for k in keys} if used else None
            for k in ("add_s", "ready_s", "remove_s"):
                xs = [r[k] for r in used if r.get(k) is not None]
                row[k], row[k + "_min"], row[k + "_max"] = \
                    med(xs), min(xs) if xs else None, max(xs) if xs else None
            # what must hold in every run: "yes" only if it did; the runs' values are kept
            ref = [r.get("refused_after_remove") for r in used]
            row["refused_after_remove_runs"] = ref
            row["refused_after_remove"] = None if not ref else \
                "yes" if all(x == "yes" for x in ref) else \
                f"no ({sum(x != 'yes' for x in ref)} of {len(ref)} runs)"
            row["ready_runs"] = [r.get("ready") for r in used]
            row["first_probe_runs"] = [r.get("first_probe") for r in used]
            resets = [r.get("listener_queue_resets") for r in used]
            row["listener_queue_resets_runs"] = resets
            # the most any run saw (a reset is the thing to notice); None: never reported
            known = [x for x in resets if x is not None]
            row["listener_queue_resets"] = max(known) if known else None
            row["route_note"] = (
                "route extra added on a fresh port at S_DUR/3 and removed at 2*S_DUR/3 while "
                "the load runs on route bench; add_s/remove_s = how long `ringway route "
                "add/remove` took; ready_s = from the add's return until a GET / on the new "
                "port answered 200; refused_after_remove = a connect right after the remove "
                "returned was refused; listener_queue_resets = "
                "ringway_listener_queue_resets_total for the removed port (max over runs)")
        if scen == "U":
            for k in ("exchanges", "failed_pct", "p999_us", "max_us", "service_p99_us"):
                row[k] = med([r[k] for r in used if r.get(k) is not None])
            row["failed_requests"] = row["figure"]
            keys = sorted({k for r in used for k in (r.get("outcomes") or {})})
            row["outcomes"] = {k: med([(r.get("outcomes") or {}).get(k, 0) for r in used])
                               for k in keys} if used else None
            # the operations of every run used, pooled: the mean and the extremes
            ops = [op for r in used for op in r.get("ops") or []]
            times = [op["op_s"] for op in ops if op.get("op_s") is not None]
            row["ops_made"] = len(ops)
            row["ops_failed"] = sum(op.get("rc") != 0 for op in ops)
            row["op_s_mean"] = statistics.mean(times) if times else None
            row["op_s_median"] = med(times)
            row["op_s_min"] = min(times) if times else None
            row["op_s_max"] = max(times) if times else None
            row["pid_changed_ops"] = sum(op.get("pid_changed") == "yes" for op in ops)
            olds = [op for op in ops if op.get("old_pid")]
            row["old_exited_ops"] = sum(op.get("old_exited") == "yes" for op in olds) \
                if olds else None
            codes = [op["old_exit_code"] for op in ops if op.get("old_exit_code") is not None]
            row["old_exit_codes"] = codes or None
            row["sessions_moved"] = [op.get("sessions_moved") for op in ops] \
                if any(op.get("sessions_moved") is not None for op in ops) else None
            row["failed_requests_runs"] = [r["failed_requests"] for r in used]
            row["upgrade_how"] = used[0].get("upgrade_how") if used else None
        if scen == "D":
            row["rss_per_conn_b"] = row["figure"]
            for k in ("rss_before_kb", "rss_held_kb", "threads", "connections_seen_held"):
                row[k] = med([r[k] for r in used if r.get(k) is not None])
            row["rss_note"] = ("VmRSS growth of the proxy process from before the connections "
                               "were opened to while they were held: user-space memory only "
                               "(kernel socket buffers, and for ringway the io_uring kernel "
                               "state, are not in it)")
        rows.append(row)
    # ratios to direct: median/median, and the median of rep-paired ratios
    by = {(r["scenario"], r["proxy"]): r for r in rows}
    for row in rows:
        d = by.get((row["scenario"], "direct"))
        row["ratio_to_direct"] = None
        row["ratio_to_direct_paired"] = None
        if d is None or row["proxy"] == "direct" or not d["figure"] or row["figure"] is None:
            continue
        row["ratio_to_direct"] = row["figure"] / d["figure"]
        fig = SCENARIOS[row["scenario"]]["figure"]
        direct_by_rep = {r["rep"]: r[fig] for r in runs
                         if r["scenario"] == row["scenario"] and r["proxy"] == "direct"
                         and "failed" not in r and r["rep"] in d["reps_used"]}
        paired = [r[fig] / direct_by_rep[r["rep"]] for r in runs
                  if r["scenario"] == row["scenario"] and r["proxy"] == row["proxy"]
                  and "failed" not in r and r["rep"] in row["reps_used"]
                  and direct_by_rep.get(r["rep"])]
        row["ratio_to_direct_paired"] = med(paired)
    for row in rows:
        if row["scenario"] == "B-sni" and row["proxy"].endswith("-sni"):
            peek_added(row, by.get(("B-sni", row["proxy"][:-len("-sni")])), runs)
        if row["proxy"] in VARIANT_OF:
            cpu_vs_base(row, by.get((row["scenario"], VARIANT_OF[row["proxy"]])), runs)
        if row["scenario"] == "A1" and row["proxy"].startswith("ringway"):
            row["target_ratio_to_direct"] = A1_TARGET
            row["target_met"] = None if row["ratio_to_direct"] is None \
                else row["ratio_to_direct"] >= A1_TARGET
    return rows


def peek_added(row, base, runs):
    """B-sni: the CPU the SNI peek adds per connection, PROXY-sni over PROXY (same load, same
    origin): peek_us_per_conn = median of the rep-paired differences of CPU-s per 100k
    connections, in µs per connection (x 10); peek_us_per_conn_medians = the difference of
    the medians; peek_pct = the paired difference over the plain proxy's median."""
    row["peek_base"] = base["proxy"] if base else None
    row["peek_us_per_conn"] = row["peek_us_per_conn_medians"] = row["peek_pct"] = None
    if not base or row["proxy_cpu_per_unit"] is None or base["proxy_cpu_per_unit"] is None:
        return
    to_us = 1e6 / SCENARIOS["B-sni"]["scale"]      # CPU-s per 100k conn -> µs per conn
    row["peek_us_per_conn_medians"] = \
        (row["proxy_cpu_per_unit"] - base["proxy_cpu_per_unit"]) * to_us
    cpu = {}
    for r in runs:
        if r["scenario"] == "B-sni" and "failed" not in r and \
                r.get("proxy_cpu_per_unit") is not None:
            cpu[(r["proxy"], r["rep"])] = r["proxy_cpu_per_unit"]
    paired = [(cpu[(row["proxy"], rep)] - cpu[(base["proxy"], rep)]) * to_us
              for rep in row["reps_used"] if rep in base["reps_used"]
              and (row["proxy"], rep) in cpu and (base["proxy"], rep) in cpu]
    row["peek_us_per_conn_paired"] = paired
    row["peek_us_per_conn"] = med(paired) if paired else row["peek_us_per_conn_medians"]
    row["peek_pct"] = 100.0 * row["peek_us_per_conn"] / (base["proxy_cpu_per_unit"] * to_us)


# variants measured against a base on the same load: the balance strategies against round
# robin on the same two backends, ringway without keepalive against the default
VARIANT_OF = {"ringway-lc": "ringway-rr", "ringway-hash": "ringway-rr", "ringway-noka": "ringway"}


def cpu_vs_base(row, base, runs):
    """A variant's proxy CPU per unit against its base (VARIANT_OF) in the same scenario:
    vs_base_pct = median of the rep-paired differences, in % of the base's CPU in that rep;
    vs_base_pct_medians = the same from the two medians. (Balance strategies: the issue's
    target is within 5 % of round robin.)"""
    row["vs_base"] = base["proxy"] if base else None
    row["vs_base_pct"] = row["vs_base_pct_medians"] = None
    if not base or row["proxy_cpu_per_unit"] is None or not base["proxy_cpu_per_unit"]:
        return
    row["vs_base_pct_medians"] = \
        100.0 * (row["proxy_cpu_per_unit"] / base["proxy_cpu_per_unit"] - 1.0)
    cpu = {}
    for r in runs:
        if r["scenario"] == row["scenario"] and "failed" not in r and \
                r.get("proxy_cpu_per_unit") is not None:
            cpu[(r["proxy"], r["rep"])] = r["proxy_cpu_per_unit"]
    paired = [100.0 * (cpu[(row["proxy"], rep)] / cpu[(base["proxy"], rep)] - 1.0)
              for rep in row["reps_used"] if rep in base["reps_used"]
              and (row["proxy"], rep) in cpu and cpu.get((base["proxy"], rep))]
    row["vs_base_pct_paired"] = paired
    row["vs_base_pct"] = med(paired) if paired else row["vs_base_pct_medians"]


def order_rows(rows, proxies):
    rank = {p: i for i, p in enumerate(proxies)}
    return sorted(rows, key=lambda r: (SCENARIO_ORDER.index(r["scenario"]),
                                       rank.get(r["proxy"], 99)))


# ------------------------------------------------------------------------------- output
def fnum(x, digits=3):
    """A number with about `digits` significant digits, thousands separated."""
    if x is None:
        return "-"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:,.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}g}"


def fpct(x):
    return "-" if x is None else f"±{100 * x:.0f}%"


def cells(r):
    """The table's cells for one summary row."""
    fig = f"{fnum(r['figure'])} {r['figure_unit']}" if r["figure"] is not None else "failed"
    if r["scenario"] in ("S", "R", "U") and r["figure"] is not None:
        fig = s_figure(r)
    if r["scenario"] == "D" and r.get("threads") is not None:
        fig += f", {r['threads']:g} thr"
    cpu = "-" if r["proxy_cpu_per_unit"] is None else \
        f"{fnum(r['proxy_cpu_per_unit'])} {r['proxy_cpu_unit']}"
    if r.get("peek_us_per_conn") is not None:     # B-sni: what the peek adds
        cpu += f" (peek {r['peek_us_per_conn']:+.2f} µs/conn, {r['peek_pct']:+.0f}% " \
               f"vs {r['peek_base']})"
    if r.get("vs_base_pct") is not None:          # a variant against its base
        cpu += f" ({r['vs_base_pct']:+.1f}% vs {r['vs_base']})"
    ratio = "-" if r["ratio_to_direct"] is None else f"{r['ratio_to_direct']:.2f}"
    if r.get("target_met") is not None:   # 3 digits, so that 0.597 does not read as 0.60
        ratio = f"{r['ratio_to_direct']:.3f}" + (" ok" if r["target_met"] else " (<0.6)")
    spr = fpct(r["figure_spread"])
    if r["proxy_cpu_spread"] is not None:
        spr += f" / {fpct(r['proxy_cpu_spread'])}"
    p50 = "-" if r["p50_us"] is None else f"{r['p50_us']:,.0f}"
    p99 = "-" if r["p99_us"] is None else f"{r['p99_us']:,.0f}"
    noise = "-" if r["noise_pct"] is None else f"{r['noise_pct']:.1f}"
    return [r["title"], r["proxy"], fig, ratio, p50, p99, cpu, spr,
            f"{r['runs_used']}/{r['runs_total']}", noise]


HEADER = ["scenario", "proxy", "figure", "ratio to direct", "p50 µs", "p99 µs",
          "proxy CPU-s per unit", "spread (figure / CPU)", "runs used", "noise %"]


def table_md(rows):
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        out.append("| " + " | ".join(cells(r)) + " |")
    return "\n".join(out) + "\n"


def table_text(rows):
    """The same table, aligned for a terminal; a blank line between scenarios."""
    head = ["scen", "proxy", "figure", "ratio", "p50 µs", "p99 µs", "proxy CPU per unit",
            "spread fig/CPU", "runs", "noise%"]
    body = []
    for r in rows:
        c = cells(r)
        c[0] = r["scenario"]
        body.append(c)
    width = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    right = {2, 3, 4, 5, 8, 9}

    def line(c):
        return "  ".join(x.rjust(width[i]) if i in right else x.ljust(width[i])
                         for i, x in enumerate(c)).rstrip()

    out = [line(head), line(["-" * w for w in width])]
    prev = None
    for r, c in zip(rows, body):
        if prev is not None and r["scenario"] != prev:
            out.append("")
        prev = r["scenario"]
        out.append(line(c))
    return "\n".join(out) + "\n"


def notes_text(meta, rows, skipped, noise_max):
    used = [s for s in SCENARIO_ORDER if any(r["scenario"] == s for r in rows)]
    lines = [
        f"Layout: proxy alone on CPU {meta.get('proxy_cpu', '?')}, load generator + origin on "
        f"CPU {meta.get('load_cpu', '?')} (A1: all three on CPU {meta.get('load_cpu', '?')}); "
        f"{meta.get('reps', '?')} rep(s) of {meta.get('dur_s', '?')} s "
        f"(L: {meta.get('l_dur_s', '?')} s), medians.",
        "Scenarios: " + "; ".join(SCENARIOS[s]["title"] for s in used) + ".",
        "figure = median req/s (A, A-ac, A1), conn/s (B, B-sni), Gbit/s received (C, C-http), VmRSS "
        "bytes per held connection (D), p50 latency (L) or failed requests (S, R, U); ratio to direct = median(proxied) / "
        "median(direct) of the figure (for L a latency ratio: above 1 is slower; D has no "
        "direct row); proxy CPU = utime+stime of the proxy process (all threads) from "
        "/proc/PID/stat over the timed run, per 100k requests / 100k connections / GiB; "
        "spread = (max-min)/median; noise % = CPU used on the test CPUs by processes outside "
        f"the test, as a share of their capacity (runs above {noise_max:g} % are left out "
        "while two clean runs remain).",
    ]
    if any(r["scenario"] == "A-ac" for r in rows):
        lines.append("A-ac: autocannon reports latency in whole milliseconds.")
    if any(r["scenario"] == "A1" for r in rows):
        lines.append(f"A1 target: ringway >= {A1_TARGET} x direct req/s with proxy, wrk and "
                     "origin on one core ('ok' / '(<0.6)' next to the ratio).")
    if any(r["scenario"] == "B-sni" for r in rows):
        lines.append(
            "B-sni (peek cost): ringway-load --mode conn --closed-loop -c 50 --exchange hello: "
            "a new connection per exchange carrying one fixed TLS ClientHello (server name "
            f"{meta.get('sni_name', '?')}); the origin (nginx, plain HTTP) answers its bytes "
            "with a 400 and closes; no handshake is made. ringway and haproxy do not look at "
            "the bytes (one route / default_backend); ringway-sni shares the address between a "
            "route with [route.match] sni and a default route, haproxy-sni routes by "
            "req.ssl_sni after `tcp-request content accept if { req_ssl_hello_type 1 }`: both "
            "read and parse the ClientHello before they connect to the backend. Each proxy is "
            "started fresh and warmed up with the same load. 'peek +x µs/conn' = the CPU the "
            "peek adds per connection over the plain proxy (median of the rep-paired "
            "differences of CPU-s per 100k conn, x 10), and as a share of the plain proxy's "
            "CPU per connection.")
    if any(r["proxy"] in VARIANT_OF for r in rows):
        lines.append(
            "Variants: ringway-rr, ringway-lc and ringway-hash run one route with two backends "
            "(the origin's two ports, one nginx) and balance = round_robin, least_connections "
            "and hash_source; ringway-noka is ringway with TCP keepalive and TCP_USER_TIMEOUT "
            "off ([route.keepalive] idle = user_timeout = \"0s\"). '(+x% vs BASE)' = the median "
            "of the rep-paired differences of proxy CPU per unit over BASE's, in % (balance "
            "target: within 5 % of round robin).")
    if any(r["scenario"] == "S" for r in rows):
        lines.append(
            f"S: ringway-load --mode conn at {meta.get('s_rate', '?')} new connections/s for "
            f"{meta.get('s_dur_s', '?')} s (one HTTP GET each, 2 s timeout) through a proxy "
            "started fresh; half-way the route moves from the origin's first port to its "
            "second (same content). ringway: `ringway switch` over the admin API "
            "(health-gated, old sessions drain), 'switch' = how long the command took while "
            "traffic kept flowing. HAProxy: stop/start with a new config (SIGTERM, wait for "
            "the exit, start haproxy with the new cfg on the same ports), 'downtime' = from "
            "the SIGTERM until the new process listens. figure = failed requests (refused, "
            "reset, timeout, wrong bytes, error, dropped) of all sent, medians over the reps; "
            "p50/p99 = latency of the ok requests measured from their scheduled start "
            "(stalls count). Not run for direct and nginx-stream; no proxy CPU figure.")
    if any(r["scenario"] == "R" for r in rows):
        s_dur = meta.get("s_dur_s", "?")
        lines.append(
            f"R: the same load as S ({meta.get('s_rate', '?')} new connections/s for {s_dur} s "
            "on route bench, a proxy started fresh) while a second route, extra, is added on a "
            "fresh loopback port with the origin as backend at a third of the run (`ringway "
            "route add`) and removed at two thirds (`ringway route remove`). figure = failed "
            "requests of the load on bench (must be 0: the other route's changes must not "
            "touch it); add / remove = how long the command took (it returns once every "
            "worker applied the change); ready = from the add's return until a GET / on the "
            "new port answered 200 (0.00x s: it listened when the command returned; the time "
            "is that of the first request); refused = a connect right after the remove "
            "returned was refused ('no (k of n runs)' otherwise, see the runs in "
            "results.json); queue resets = ringway_listener_queue_resets_total for the "
            "removed port (connections still queued when its listener closed; the most of "
            "any run, '-' if never reported). Medians over the reps. ringway only: HAProxy "
            "(and nginx) cannot add a listener at runtime without a reload, which is a "
            "different operation (S measures HAProxy's stop/start); not run for direct.")
    if any(r["scenario"] == "U" for r in rows):
        lines.append(
            f"U: the same load as S ({meta.get('s_rate', '?')} new connections/s for "
            f"{meta.get('s_dur_s', '?')} s, a proxy started fresh) while the proxy is replaced "
            f"{meta.get('upgrades', '?')} times, evenly spaced. ringway: `ringway upgrade` "
            "over the admin API (the same binary; listening sockets and quiet sessions handed "
            "to the new process), 'upgrade' = how long the command took; 'pid changed' = "
            "`ringway status --json` then named the new pid; 'old exited' = the replaced "
            "process had exited within 5 s of the load's end. haproxy: HAProxy 2.6 in "
            "master-worker mode (-W, `stats socket ... expose-fd listeners`) reloaded with "
            "SIGUSR2 to the master (its seamless reload: the new worker gets the listening "
            "sockets with -x sockpair@, the old one finishes its sessions), 'reload' = from "
            "the signal until the master had a new worker. ringway-restart: SIGTERM, wait "
            "for the exit, start again with the same file, 'restart (downtime)' = from the "
            "SIGTERM until the new process listened. figure = failed requests (refused, reset, "
            "timeout, wrong bytes, error, dropped) of all sent, medians over the reps; p50/p99 "
            "as in S; the operation time is the mean over every operation of the runs used. "
            "No proxy CPU figure.")
    if any(r["scenario"] == "D" for r in rows):
        lines.append(f"D: {meta.get('idle_conns', '?')} idle connections through the proxy "
                     "(ringway-load --mode idle), proxy started fresh without warm-up; figure = "
                     "VmRSS growth / connections held, thr = the proxy's thread count while "
                     "held. VmRSS is user-space memory: kernel socket buffers (and for ringway "
                     "the io_uring kernel state) are not in it.")
    for s in skipped:
        lines.append(f"Skipped: {s.get('scenario') or s.get('proxy') or s.get('what')}: "
                     f"{s['reason']}")
    return "\n".join(lines) + "\n"


def cmd_report(args):
    runs = []
    with open(args.runs) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    meta = {}
    for kv in args.meta:
        k, _, v = kv.partition("=")
        meta[k] = v
    skipped = []
    for s in args.skipped:   # KIND:NAME:REASON, KIND = scenario | proxy | what
        kind, name, reason = s.split(":", 2)
        skipped.append({kind: name, "reason": reason})
    proxies = args.proxies.split()
    rows = order_rows(summarize(runs, args.noise_max), proxies)
    notes = notes_text(meta, rows, skipped, args.noise_max)
    with open(os.path.join(args.outdir, "table.md"), "w") as f:
        f.write(f"# Proxy benchmark {meta.get('date', '')} on {meta.get('host', '')}\n\n")
        f.write(table_md(rows))
        f.write("\n" + notes.replace("\n", "\n\n"))
    with open(os.path.join(args.outdir, "results.json"), "w") as f:
        json.dump({"meta": meta, "summary": rows, "runs": runs, "skipped": skipped}, f,
                  indent=1, sort_keys=True)
        f.write("\n")
    sys.stdout.write(table_text(rows))
    sys.stdout.write("\n" + notes)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("freeport")
    s.add_argument("n", nargs="?", type=int, default=1)
    s.add_argument("--outside-ephemeral", action="store_true",
                   help="below net.ipv4.ip_local_port_range")
    s.set_defaults(fn=cmd_freeport)

    s = sub.add_parser("quiet")
    s.add_argument("--cpus", required=True, help="comma-separated CPU numbers")
    s.add_argument("--threshold", type=float, default=10.0, help="busy %% per CPU")
    s.add_argument("--window", type=float, default=1.5, help="seconds")
    s.add_argument("--max-wait", type=float, default=60.0, help="seconds")
    s.set_defaults(fn=cmd_quiet)

    s = sub.add_parser("route-phase")
    s.add_argument("--listen", required=True, help="HOST:PORT the route is added on")
    for a in ("--add-cmd", "--remove-cmd", "--metrics-cmd"):
        s.add_argument(a, required=True, help="file: the command, NUL-terminated arguments")
    s.add_argument("--load-t0", required=True, help="start of the load, seconds since the epoch")
    s.add_argument("--add-at-ms", type=int, required=True, help="after the load's start")
    s.add_argument("--remove-at-ms", type=int, required=True, help="after the load's start")
    s.add_argument("--probe-max", type=float, default=5.0,
                   help="seconds to wait for the first 200 on the new address")
    s.set_defaults(fn=cmd_route_phase)

    s = sub.add_parser("record")
    for a in ("--scenario", "--proxy", "--output", "--cmd", "--clk-tck",
              "--proxy-ticks", "--known-ticks", "--idle-ticks"):
        s.add_argument(a, required=True)
    s.add_argument("--tool", required=True, choices=sorted(PARSERS))
    s.add_argument("--layout", default="split", help="split | one-core")
    s.add_argument("--rep", type=int, required=True)
    s.add_argument("--rc", type=int, required=True)
    s.add_argument("--t0", required=True, help="start, seconds since the epoch")
    s.add_argument("--t1", required=True, help="end, seconds since the epoch")
    s.add_argument("--ncpus", type=int, required=True)
    s.add_argument("--quiet-wait", default="")
    # idle (scenario D) only: read by the script from /proc/PID/status
    s.add_argument("--rss-before-kb", default="")
    s.add_argument("--rss-held-kb", default="")
    s.add_argument("--threads", default="")
    s.add_argument("--held-seen", default="", help="N from 'holding N connections'")
    # switch (scenario S) only: the switch made half-way through the load
    s.add_argument("--switch-rc", default="", help="exit code of the switch (0: done)")
    s.add_argument("--switch-t0", default="", help="switch start, seconds since the epoch")
    s.add_argument("--switch-t1", default="", help="switch end, seconds since the epoch")
    s.add_argument("--switch-stopped", default="",
                   help="HAProxy: when the old process had exited, seconds since the epoch")
    s.add_argument("--switch-how", default="")
    s.add_argument("--switch-cmd", default="")
    s.add_argument("--switch-msg", default="", help="what the switch printed")
    s.add_argument("--load-t0", default="", help="start of the load, seconds since the epoch")
    # hello (scenario B-sni) on ringway-sni only: "sni=N default=M" from ringway's metrics
    s.add_argument("--routed", default="", help="ringway_listen_routed_total by 'by' label")
    # route (scenario R) only: what route-phase printed, and its exit code
    s.add_argument("--route-json", default="", help="file: route-phase's output")
    s.add_argument("--route-rc", default="", help="exit code of route-phase")
    # upgrade (scenario U) only: the operations made during the load
    s.add_argument("--upgrade-ops", default="",
                   help="file: one tab-separated line per operation (OP_FIELDS)")
    s.add_argument("--upgrade-how", default="")
    s.set_defaults(fn=cmd_record)

    s = sub.add_parser("report")
    s.add_argument("--runs", required=True)
    s.add_argument("--outdir", required=True)
    s.add_argument("--proxies", required=True, help="space-separated, in table order")
    s.add_argument("--noise-max", type=float, default=5.0)
    s.add_argument("--meta", action="append", default=[], help="KEY=VALUE")
    s.add_argument("--skipped", action="append", default=[],
                   help="KIND:NAME:REASON (KIND: scenario, proxy or what)")
    s.set_defaults(fn=cmd_report)

    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
