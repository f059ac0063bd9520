#!/usr/bin/env python3
"""Compares bench.sh results.json files with bench/baseline.json (used by scripts/perf-check).

Every check is a ratio measured inside one run — ringway's CPU per unit of work divided by a
peer's (HAProxy) in the same repetition, or ringway's rate divided by the direct rate — so the
speed of the machine cancels out. The value of a check is the median over repetitions of the
per-repetition ratio.

A regression must reproduce: when gated checks fail on a first run, scripts/perf-check runs
the bench subset those checks need once more and judges each of them on the median of the
per-repetition ratios of both runs pooled (a ratio is only ever taken inside one repetition of
one run: the runs' rep numbers collide, so pairs are keyed by (run, rep)).

  perfcheck.py compare BASELINE RESULTS       print the table; exit 1 on a regression
  perfcheck.py compare --first-run BASELINE RESULTS
                                              the same without the verdict line (perf-check
                                              prints what happens next)
  perfcheck.py compare BASELINE RESULTS RESULTS2
                                              judge the checks that fail on RESULTS on the
                                              pooled repetitions of RESULTS and RESULTS2;
                                              exit 1 when one still fails
  perfcheck.py failing BASELINE RESULTS       what a retry must run, as shell-safe lines:
                                              FAILED=<gated checks failing> RETRY=<of them
                                              re-measurable> CHECKS=<their names, "; ">
                                              PROXIES=<...> SCENARIOS=<...>
  perfcheck.py update BASELINE RESULTS        rewrite the baselines' values from RESULTS

A check whose proxy, peer or scenario the run did not include reports "no data" (a gated one
fails) and is not re-measured: a second run of the same subset could not supply it.
"""

import json
import statistics
import sys


def per_rep(runs, scenario, proxy, field, run_no=0):
    """{(run_no, rep): value} of the successful repetitions of (scenario, proxy)."""
    out = {}
    for r in runs:
        if (r.get("scenario") == scenario and r.get("proxy") == proxy
                and r.get("exit_code") == 0 and "failed" not in r):
            v = r.get(field)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
                out[(run_no, r.get("rep"))] = v
    return out


def field_of(check):
    return "proxy_cpu_per_unit" if check.get("metric") == "cpu_vs" else check.get("field", "rps")


def pairs_of(check, runs, run_no=0):
    """Per-repetition ratios of one run (ringway's rep k over the peer's rep k of that run)."""
    f = field_of(check)
    mine = per_rep(runs, check.get("scenario"), check.get("proxy"), f, run_no)
    peer = per_rep(runs, check.get("scenario"), check.get("peer"), f, run_no)
    return [mine[k] / peer[k] for k in sorted(mine, key=lambda k: (k[0], str(type(k[1])), k[1]))
            if k in peer]


def value(check, runs):
    pairs = pairs_of(check, runs)
    return (statistics.median(pairs) if pairs else None), pairs


def pooled(check, runs_list):
    """Median of the per-repetition ratios of several runs; the ratios per run."""
    per_run = [pairs_of(check, runs, i) for i, runs in enumerate(runs_list)]
    allp = [p for ps in per_run for p in ps]
    return (statistics.median(allp) if allp else None), per_run


def limit(check):
    b, tol = check["baseline"], check["tolerance"]
    return b * (1 + tol) if check["worse"] == "higher" else b * (1 - tol)


def is_bad(check, v):
    return v > limit(check) if check["worse"] == "higher" else v < limit(check)


def gated(check):
    return check.get("gate", True)


def failing_checks(base, res):
    """The gated checks that fail on one run (beyond the limit, or no data)."""
    runs = res.get("runs", [])
    out = []
    for c in base["checks"]:
        v, _ = value(c, runs)
        if gated(c) and (v is None or is_bad(c, v)):
            out.append(c)
    return out


def ran(res):
    """(proxies, scenarios) the run included, in its order: meta, else the runs themselves."""
    meta = res.get("meta", {}) or {}
    runs = res.get("runs", [])
    lists = []
    for key in ("proxy", "scenario"):
        names = str(meta.get(key + ("ies" if key == "proxy" else "s"), "") or "").split()
        for r in runs:
            n = r.get(key)
            if isinstance(n, str) and n and n not in names:
                names.append(n)
        lists.append(names)
    return lists[0], lists[1]


def retryable(check, res):
    proxies, scenarios = ran(res)
    return (check.get("proxy") in proxies and check.get("peer") in proxies
            and check.get("scenario") in scenarios)


def retry_plan(base, res):
    """What a second run must measure to re-judge the failing checks."""
    failing = failing_checks(base, res)
    redo = [c for c in failing if retryable(c, res)]
    proxies, scenarios = ran(res)
    need_p = {n for c in redo for n in (c["proxy"], c["peer"])}
    need_s = {c["scenario"] for c in redo}
    return {
        "failed": len(failing),
        "retry": len(redo),
        "checks": [c.get("name", "?") for c in redo],
        "proxies": [p for p in proxies if p in need_p],
        "scenarios": [s for s in scenarios if s in need_s],
    }


def fmt(v):
    return "-" if v is None else f"{v:.3f}"


def compare(base, res, res2=None, out=sys.stdout):
    """Print the table; return the number of gated checks that fail.

    With res2: only the checks that fail on res, each judged on both runs pooled."""
    if res2 is not None:
        return compare_pooled(base, res, res2, out)
    runs = res.get("runs", [])
    failed = 0
    print(f"{'check':<50} {'baseline':>8} {'limit':>7} {'now':>7}  per rep            result",
          file=out)
    for c in base["checks"]:
        v, pairs = value(c, runs)
        lim = limit(c)
        gate = gated(c)
        if v is None:
            verdict = "FAIL (no data)" if gate else "info (no data)"
            failed += gate
        else:
            bad = is_bad(c, v)
            verdict = ("FAIL" if gate else "info: worse") if bad else ("ok" if gate else "info")
            failed += bool(bad and gate)
        reps = " ".join(f"{p:.3f}" for p in pairs)
        print(f"{c.get('name', '?'):<50} {c['baseline']:>8.3f} {lim:>7.3f} {fmt(v):>7}  "
              f"{reps:<18} {verdict}", file=out)
    return failed


def compare_pooled(base, res, res2, out=sys.stdout):
    redo = failing_checks(base, res)
    if not redo:
        return 0
    runs, runs2 = res.get("runs", []), res2.get("runs", [])
    print("re-measured: median of the per-repetition ratios of both runs pooled "
          "(ratios taken within one rep of one run)", file=out)
    print(f"{'check':<50} {'limit':>7} {'run 1':>7} {'run 2':>7} {'pooled':>7}  "
          f"per rep (run 1 | run 2)                 result", file=out)
    still = 0
    for c in redo:
        v1, _ = value(c, runs)
        v2, _ = value(c, runs2)
        v, per_run = pooled(c, [runs, runs2])
        bad = v is None or is_bad(c, v)
        still += bad
        verdict = ("FAIL (no data)" if v is None else "FAIL: reproduced") if bad \
            else "ok: did not reproduce"
        reps = " | ".join(" ".join(f"{p:.3f}" for p in ps) or "-" for ps in per_run)
        print(f"{c.get('name', '?'):<50} {limit(c):>7.3f} {fmt(v1):>7} {fmt(v2):>7} "
              f"{fmt(v):>7}  {reps:<39} {verdict}", file=out)
    return still


def update(base, res, path):
    runs = res.get("runs", [])
    for c in base["checks"]:
        v, _ = value(c, runs)
        if v is None:
            sys.exit(f"perfcheck: no data for '{c.get('name', '?')}': baseline not updated")
        c["baseline"] = round(v, 3)
    meta = res.get("meta", {})
    base["recorded"] = {k: meta.get(k) for k in ("date", "host", "kernel", "dur_s", "reps")}
    with open(path, "w") as f:
        json.dump(base, f, indent=2)
        f.write("\n")
    print(f"perfcheck: wrote {path}; review and commit it deliberately")


def load(path):
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args.pop(0) if args else None
    first_run = False
    if cmd == "compare" and args and args[0] == "--first-run":
        first_run = True
        args.pop(0)
    nfiles = {"compare": (2, 3), "update": (2,), "failing": (2,)}.get(cmd)
    if nfiles is None or len(args) not in nfiles or (first_run and len(args) != 2):
        print(__doc__, file=sys.stderr)
        return 64
    base = load(args[0])
    if base.get("version") != 1:
        sys.exit(f"perfcheck: {args[0]}: unknown baseline version {base.get('version')}")
    res = load(args[1])
    if cmd == "update":
        update(base, res, args[0])
        return 0
    if cmd == "failing":
        plan = retry_plan(base, res)
        print(f"FAILED={plan['failed']}")
        print(f"RETRY={plan['retry']}")
        print("CHECKS=" + "; ".join(n.replace("\n", " ") for n in plan["checks"]))
        print("PROXIES=" + " ".join(plan["proxies"]))
        print("SCENARIOS=" + " ".join(plan["scenarios"]))
        return 0
    res2 = load(args[2]) if len(args) == 3 else None
    failed = compare(base, res, res2)
    if res2 is not None:
        first = len(failing_checks(base, res))
        if failed:
            print(f"perfcheck: {failed} check(s) regressed beyond tolerance "
                  f"(reproduced on both runs pooled; {first - failed} of {first} did not)")
            return 1
        if first:
            print(f"perfcheck: no regression ({first} check(s) beyond tolerance on the first "
                  "run did not reproduce: pooled medians within the limits)")
        else:
            print("perfcheck: no regression")
        return 0
    if failed:
        if not first_run:
            print(f"perfcheck: {failed} check(s) regressed beyond tolerance")
        return 1
    print("perfcheck: no regression")
    return 0


if __name__ == "__main__":
    sys.exit(main())
