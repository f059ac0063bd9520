#!/usr/bin/env python3
"""Helpers for scripts/bench-proxy.sh (standard library only).

Subcommands:
  freeport [N]        print N distinct free TCP ports on 127.0.0.1 (one per line)
  quiet ...           wait until the test CPUs are idle (the "quiet gate"); print seconds waited
  record ...          parse one wrk / iperf3 output, print one JSON line (a "run")
  report ...          read the runs, write results.json and table.md, print the table

Method (see docs in bench-proxy.sh and /work/shared/research/perf-peers.md): per
(scenario, proxy) the median over the runs is reported, with spread = (max-min)/median;
runs whose noise (CPU used by processes outside the test) is above --noise-max are left out
when at least two clean runs remain; ratio to direct = median(proxied) / median(direct).
"""

import argparse
import json
import os
import socket
import statistics
import sys
import time

# scenario id -> how it is reported
SCENARIOS = {
    "A": {"title": "A keep-alive, wrk -c50", "figure": "rps", "unit": "req/s",
          "cpu_unit": "CPU-s/100k req", "work": "requests", "scale": 1e5},
    "B": {"title": "B new conn per request, wrk -c50", "figure": "rps", "unit": "conn/s",
          "cpu_unit": "CPU-s/100k conn", "work": "requests", "scale": 1e5},
    "C": {"title": "C bulk, iperf3 1 stream", "figure": "gbps", "unit": "Gbit/s",
          "cpu_unit": "CPU-s/GiB", "work": "bytes", "scale": 2 ** 30},
    "L": {"title": "L one connection, wrk -c1", "figure": "p50_us", "unit": "µs p50",
          "cpu_unit": "CPU-s/100k req", "work": "requests", "scale": 1e5},
    "E": {"title": "E HTTP 1 MiB bodies, wrk -c10", "figure": "gbps", "unit": "Gbit/s",
          "cpu_unit": "CPU-s/GiB", "work": "bytes", "scale": 2 ** 30},
}
SCENARIO_ORDER = "ABCLE"


def cmd_freeport(args):
    socks = []
    try:
        for _ in range(args.n):
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


def parse_wrk(text):
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


def parse_iperf3(text):
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


def cmd_record(args):
    with open(args.output, errors="replace") as f:
        text = f.read()
    wall = float(args.t1) - float(args.t0)
    run = {"scenario": args.scenario, "proxy": args.proxy, "rep": args.rep,
           "cmd": args.cmd, "exit_code": args.rc, "wall_s": round(wall, 3)}
    run.update(parse_wrk(text) if args.tool == "wrk" else parse_iperf3(text))
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
    head = f"  rep {run['rep']} {run['scenario']} {run['proxy']:<16}"
    if "failed" in run:
        return f"{head} FAILED: {run['failed']}"
    parts = [] if sc["figure"] == "p50_us" else [f"{fnum(run[sc['figure']])} {sc['unit']}"]
    if "p99_us" in run:
        parts.append(f"p50 {run['p50_us']:,} µs p99 {run['p99_us']:,} µs")
    if run.get("proxy_cpu_per_unit") is not None:
        parts.append(f"proxy {fnum(run['proxy_cpu_per_unit'])} {sc['cpu_unit']} "
                     f"({run['proxy_core_pct']} % of a core)")
    errs = sum((run.get("errors") or {}).values())
    if errs:
        parts.append(f"{errs} socket errors")
    parts.append(f"noise {run['noise_pct']} %")
    if "busy" in (run.get("quiet_wait") or ""):
        parts.append(f"quiet gate gave up: {run['quiet_wait']}")
    return head + " " + ", ".join(parts)


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
            "figure_name": sc["figure"], "figure_unit": sc["unit"],
            "figure": med(fig), "figure_spread": spread(fig),
            "p50_us": med([r["p50_us"] for r in used if "p50_us" in r]),
            "p99_us": med([r["p99_us"] for r in used if "p99_us" in r]),
            "proxy_cpu_per_unit": med(cpu), "proxy_cpu_unit": sc["cpu_unit"],
            "proxy_cpu_spread": spread(cpu),
            "proxy_core_pct": med([r["proxy_core_pct"] for r in used
                                   if r.get("proxy_core_pct") is not None]),
            "noise_pct": med([r["noise_pct"] for r in used if r.get("noise_pct") is not None]),
            "runs_used": len(used), "runs_total": len(rs), "runs_failed": len(rs) - len(ok),
            "reps_used": sorted(r["rep"] for r in used),
        }
        if scen in ("A", "B", "L"):
            row["rps"] = med([r["rps"] for r in used])
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
    return rows


def fnum(x, digits=3):
    """A number with about `digits` significant digits, thousands separated."""
    if x is None:
        return "-"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:,.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}g}"


def fpct(x):
    return "-" if x is None else f"±{100 * x:.0f}%"


def table_md(rows, proxies):
    rank = {p: i for i, p in enumerate(proxies)}
    rows = sorted(rows, key=lambda r: (SCENARIO_ORDER.index(r["scenario"]),
                                       rank.get(r["proxy"], 99)))
    out = ["| scenario | proxy | figure | ratio to direct | p50 µs | p99 µs "
           "| proxy CPU-s per unit | spread (figure / CPU) | runs used | noise % |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fig = f"{fnum(r['figure'])} {r['figure_unit']}" if r["figure"] is not None else "failed"
        cpu = "-" if r["proxy_cpu_per_unit"] is None else \
            f"{fnum(r['proxy_cpu_per_unit'])} {r['proxy_cpu_unit']}"
        ratio = "-" if r["ratio_to_direct"] is None else f"{r['ratio_to_direct']:.2f}"
        spr = fpct(r["figure_spread"])
        if r["proxy_cpu_spread"] is not None:
            spr += f" / {fpct(r['proxy_cpu_spread'])}"
        p50 = "-" if r["p50_us"] is None else f"{r['p50_us']:,.0f}"
        p99 = "-" if r["p99_us"] is None else f"{r['p99_us']:,.0f}"
        noise = "-" if r["noise_pct"] is None else f"{r['noise_pct']:.1f}"
        out.append(f"| {r['title']} | {r['proxy']} | {fig} | {ratio} | {p50} | {p99} | {cpu} "
                   f"| {spr} | {r['runs_used']}/{r['runs_total']} | {noise} |")
    return "\n".join(out) + "\n"


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
    proxies = args.proxies.split()
    rows = summarize(runs, args.noise_max)
    table = table_md(rows, proxies)
    notes = (
        f"\nLayout: proxy alone on CPU {meta.get('proxy_cpu', '?')}, load generator + origin on "
        f"CPU {meta.get('load_cpu', '?')}; {meta.get('reps', '?')} rep(s) of "
        f"{meta.get('dur_s', '?')} s (L: {meta.get('l_dur_s', '?')} s), medians.\n"
        "figure = median req/s (A), conn/s (B), Gbit/s received (C, E) or p50 latency (L); "
        "ratio to direct = median(proxied) / median(direct) of the figure (for L a latency ratio: "
        "above 1 is slower); proxy CPU = utime+stime of the proxy process (all threads) from "
        "/proc/PID/stat over the timed run; spread = (max-min)/median; noise % = CPU used on "
        f"the test CPUs by processes outside the test, as a share of their capacity (runs above "
        f"{args.noise_max:g} % are left out while two clean runs remain).\n")
    with open(os.path.join(args.outdir, "table.md"), "w") as f:
        f.write(f"# Proxy benchmark {meta.get('date', '')} on {meta.get('host', '')}\n\n")
        f.write(table)
        f.write(notes)
    with open(os.path.join(args.outdir, "results.json"), "w") as f:
        json.dump({"meta": meta, "summary": rows, "runs": runs}, f, indent=1, sort_keys=True)
        f.write("\n")
    sys.stdout.write(table)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("freeport")
    s.add_argument("n", nargs="?", type=int, default=1)
    s.set_defaults(fn=cmd_freeport)

    s = sub.add_parser("quiet")
    s.add_argument("--cpus", required=True, help="comma-separated CPU numbers")
    s.add_argument("--threshold", type=float, default=10.0, help="busy %% per CPU")
    s.add_argument("--window", type=float, default=1.5, help="seconds")
    s.add_argument("--max-wait", type=float, default=60.0, help="seconds")
    s.set_defaults(fn=cmd_quiet)

    s = sub.add_parser("record")
    for a in ("--scenario", "--proxy", "--tool", "--output", "--cmd", "--clk-tck",
              "--proxy-ticks", "--known-ticks", "--idle-ticks"):
        s.add_argument(a, required=True)
    s.add_argument("--rep", type=int, required=True)
    s.add_argument("--rc", type=int, required=True)
    s.add_argument("--t0", required=True, help="start, seconds since the epoch")
    s.add_argument("--t1", required=True, help="end, seconds since the epoch")
    s.add_argument("--ncpus", type=int, required=True)
    s.add_argument("--quiet-wait", default="")
    s.set_defaults(fn=cmd_record)

    s = sub.add_parser("report")
    s.add_argument("--runs", required=True)
    s.add_argument("--outdir", required=True)
    s.add_argument("--proxies", required=True, help="space-separated, in table order")
    s.add_argument("--noise-max", type=float, default=5.0)
    s.add_argument("--meta", action="append", default=[], help="KEY=VALUE")
    s.set_defaults(fn=cmd_report)

    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
