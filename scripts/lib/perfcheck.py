#!/usr/bin/env python3
"""Compares a bench.sh results.json with bench/baseline.json (used by scripts/perf-check).

Every check is a ratio measured inside one run — ringway's CPU per unit of work divided by a
peer's (HAProxy) in the same repetition, or ringway's rate divided by the direct rate — so the
speed of the machine cancels out. The value of a check is the median over repetitions of the
per-repetition ratio.

  perfcheck.py compare BASELINE RESULTS     print the table; exit 1 on a regression
  perfcheck.py update BASELINE RESULTS      rewrite the baselines' values from RESULTS
"""

import json
import statistics
import sys


def per_rep(runs, scenario, proxy, field):
    out = {}
    for r in runs:
        if r.get("scenario") == scenario and r.get("proxy") == proxy and r.get("exit_code") == 0:
            v = r.get(field)
            if isinstance(v, (int, float)) and v > 0:
                out[r["rep"]] = v
    return out


def value(check, runs):
    field = "proxy_cpu_per_unit" if check["metric"] == "cpu_vs" else check.get("field", "rps")
    mine = per_rep(runs, check["scenario"], check["proxy"], field)
    peer = per_rep(runs, check["scenario"], check["peer"], field)
    pairs = [mine[k] / peer[k] for k in sorted(mine) if k in peer]
    return (statistics.median(pairs) if pairs else None), pairs


def limit(check):
    b, tol = check["baseline"], check["tolerance"]
    return b * (1 + tol) if check["worse"] == "higher" else b * (1 - tol)


def compare(base, res):
    runs = res.get("runs", [])
    failed = 0
    print(f"{'check':<50} {'baseline':>8} {'limit':>7} {'now':>7}  per rep            result")
    for c in base["checks"]:
        v, pairs = value(c, runs)
        lim = limit(c)
        gate = c.get("gate", True)
        if v is None:
            verdict = "FAIL (no data)" if gate else "info (no data)"
            failed += gate
            now = "-"
        else:
            bad = v > lim if c["worse"] == "higher" else v < lim
            verdict = ("FAIL" if gate else "info: worse") if bad else ("ok" if gate else "info")
            failed += bool(bad and gate)
            now = f"{v:.3f}"
        reps = " ".join(f"{p:.3f}" for p in pairs)
        print(f"{c['name']:<50} {c['baseline']:>8.3f} {lim:>7.3f} {now:>7}  {reps:<18} {verdict}")
    return failed


def update(base, res, path):
    runs = res.get("runs", [])
    for c in base["checks"]:
        v, _ = value(c, runs)
        if v is None:
            sys.exit(f"perfcheck: no data for '{c['name']}': baseline not updated")
        c["baseline"] = round(v, 3)
    meta = res.get("meta", {})
    base["recorded"] = {k: meta.get(k) for k in ("date", "host", "kernel", "dur_s", "reps")}
    with open(path, "w") as f:
        json.dump(base, f, indent=2)
        f.write("\n")
    print(f"perfcheck: wrote {path}; review and commit it deliberately")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("compare", "update"):
        sys.exit(__doc__)
    with open(sys.argv[2]) as f:
        base = json.load(f)
    with open(sys.argv[3]) as f:
        res = json.load(f)
    if base.get("version") != 1:
        sys.exit(f"perfcheck: {sys.argv[2]}: unknown baseline version {base.get('version')}")
    if sys.argv[1] == "update":
        update(base, res, sys.argv[2])
        return
    failed = compare(base, res)
    if failed:
        print(f"perfcheck: {failed} check(s) regressed beyond tolerance")
        sys.exit(1)
    print("perfcheck: no regression")


if __name__ == "__main__":
    main()
