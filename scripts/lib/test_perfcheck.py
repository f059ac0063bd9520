#!/usr/bin/env python3
"""Tests of scripts/lib/perfcheck.py and scripts/perf-check's reproduce-before-fail rule, on
synthetic results.json data (no benchmark runs: perf-check is given a stand-in bench.sh).

    python3 -m unittest discover -s scripts/lib -p 'test_perfcheck.py'
"""

import copy
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import perfcheck  # noqa: E402

SPLICE_A = "A keep-alive: CPU/request, splice vs HAProxy"
BASE = {
    "version": 1,
    "checks": [
        {"name": "A keep-alive: CPU/request, buffered vs HAProxy", "scenario": "A",
         "proxy": "ringway-buffered", "peer": "haproxy", "metric": "cpu_vs", "worse": "higher",
         "baseline": 0.929, "tolerance": 0.15},
        {"name": SPLICE_A, "scenario": "A", "proxy": "ringway-splice", "peer": "haproxy",
         "metric": "cpu_vs", "worse": "higher", "baseline": 1.018, "tolerance": 0.15},
        {"name": "C bulk: CPU/GiB, splice vs HAProxy", "scenario": "C",
         "proxy": "ringway-splice", "peer": "haproxy", "metric": "cpu_vs", "worse": "higher",
         "baseline": 0.361, "tolerance": 0.3},
        {"name": "A keep-alive: req/s, buffered vs direct", "scenario": "A",
         "proxy": "ringway-buffered", "peer": "direct", "metric": "rate_vs", "field": "rps",
         "worse": "lower", "baseline": 0.948, "tolerance": 0.15, "gate": False},
    ],
}
PROXIES = ["direct", "ringway-buffered", "ringway-splice", "haproxy"]
SCENARIOS = ["A", "B", "C"]
# ringway's CPU per unit over HAProxy's, per rep, on a run where nothing is wrong
GOOD = {("A", "ringway-buffered"): [0.93, 0.92, 0.95], ("A", "ringway-splice"): [1.02, 0.99, 1.01],
        ("C", "ringway-splice"): [0.36, 0.35, 0.37], ("C", "ringway-buffered"): [0.8, 0.8, 0.8],
        ("B", "ringway-buffered"): [0.99, 0.98, 1.0], ("B", "ringway-splice"): [1.0, 1.0, 1.0]}


def results(ratios=None, proxies=PROXIES, scenarios=SCENARIOS, haproxy_cpu=(2.0, 3.0, 4.0)):
    """A results.json as bench.sh writes it (the fields perfcheck reads). ratios: overrides of
    GOOD. HAProxy's CPU differs per rep so a ratio taken across reps would show."""
    ratios = {**GOOD, **(ratios or {})}
    runs = []
    for s in scenarios:
        for p in proxies:
            for i, rep in enumerate((1, 2, 3)):
                run = {"scenario": s, "proxy": p, "rep": rep, "exit_code": 0,
                       "rps": 1000.0, "gbps": 10.0, "noise_pct": 1.0}
                if p == "haproxy":
                    run["proxy_cpu_per_unit"] = haproxy_cpu[i]
                elif p.startswith("ringway-"):
                    run["proxy_cpu_per_unit"] = ratios[(s, p)][i] * haproxy_cpu[i]
                    run["rps"] = 950.0
                runs.append(run)
    return {"meta": {"proxies": " ".join(proxies), "scenarios": " ".join(scenarios),
                     "reps": "3"}, "runs": runs, "skipped": []}


# the CI run that prompted the rule: 1.512 1.204 1.007 (median 1.204, limit 1.171)
NOISY = {("A", "ringway-splice"): [1.512, 1.204, 1.007]}


def quiet(fn, *a, **kw):
    buf = io.StringIO()
    return fn(*a, out=buf, **kw), buf.getvalue()


class Compare(unittest.TestCase):
    def test_pass_first_time(self):
        failed, text = quiet(perfcheck.compare, BASE, results())
        self.assertEqual(failed, 0)
        self.assertNotIn("FAIL", text)
        self.assertEqual(perfcheck.retry_plan(BASE, results())["retry"], 0)

    def test_noisy_first_run_fails_and_plans_a_small_retry(self):
        failed, text = quiet(perfcheck.compare, BASE, results(NOISY))
        self.assertEqual(failed, 1)
        self.assertIn("1.204", text)
        plan = perfcheck.retry_plan(BASE, results(NOISY))
        self.assertEqual(plan, {"failed": 1, "retry": 1, "checks": [SPLICE_A],
                                "proxies": ["ringway-splice", "haproxy"], "scenarios": ["A"]})

    def test_fail_then_pass_pooled(self):
        run2 = results(proxies=["ringway-splice", "haproxy"], scenarios=["A"])
        failed, text = quiet(perfcheck.compare, BASE, results(NOISY), run2)
        # pooled 1.512 1.204 1.007 1.02 0.99 1.01 -> median (1.01 + 1.02) / 2
        self.assertEqual(failed, 0)
        self.assertIn("1.015", text)
        self.assertIn("did not reproduce", text)

    def test_fail_then_still_fail(self):
        run2 = results({("A", "ringway-splice"): [1.30, 1.25, 1.35]},
                       proxies=["ringway-splice", "haproxy"], scenarios=["A"])
        failed, text = quiet(perfcheck.compare, BASE, results(NOISY), run2)
        self.assertEqual(failed, 1)  # pooled median (1.25 + 1.30) / 2 = 1.275 > 1.171
        self.assertIn("1.275", text)
        self.assertIn("FAIL: reproduced", text)

    def test_pooling_pairs_within_one_run_only(self):
        # run 2's HAProxy CPU is 10x run 1's: pairing run 1's ringway rep k with run 2's
        # HAProxy rep k (same rep number) would give ratios near 0.1
        run2 = results(proxies=["ringway-splice", "haproxy"], scenarios=["A"],
                       haproxy_cpu=(20.0, 30.0, 40.0))
        v, per_run = perfcheck.pooled(BASE["checks"][1], [results(NOISY)["runs"], run2["runs"]])
        self.assertEqual(len(per_run[0]) + len(per_run[1]), 6)
        for got, want in zip(per_run[0] + per_run[1], [1.512, 1.204, 1.007, 1.02, 0.99, 1.01]):
            self.assertAlmostEqual(got, want)
        self.assertAlmostEqual(v, 1.015)

    def test_only_failing_gated_checks_are_rejudged(self):
        # the info check (rate vs direct) is worse too, but does not gate and is not retried
        res = results(NOISY)
        for r in res["runs"]:
            if r["proxy"] == "ringway-buffered":
                r["rps"] = 100.0
        plan = perfcheck.retry_plan(BASE, res)
        self.assertEqual(plan["checks"], [SPLICE_A])
        self.assertNotIn("direct", plan["proxies"])

    def test_absent_proxy_is_no_data_and_not_retried(self):
        base = copy.deepcopy(BASE)
        base["checks"].append({"name": "A: nginx", "scenario": "A", "proxy": "nginx-stream",
                               "peer": "haproxy", "metric": "cpu_vs", "worse": "higher",
                               "baseline": 1.0, "tolerance": 0.2})
        failed, text = quiet(perfcheck.compare, base, results())
        self.assertEqual(failed, 1)
        self.assertIn("FAIL (no data)", text)
        plan = perfcheck.retry_plan(base, results())
        self.assertEqual((plan["failed"], plan["retry"], plan["proxies"]), (1, 0, []))

    def test_failed_reps_are_left_out_and_a_no_data_check_is_retried(self):
        res = results()
        for r in res["runs"]:
            if r["proxy"] == "ringway-splice" and r["scenario"] == "C":
                r["exit_code"] = 1
        base = BASE
        plan = perfcheck.retry_plan(base, res)
        self.assertEqual((plan["retry"], plan["scenarios"]), (1, ["C"]))
        run2 = results(proxies=["ringway-splice", "haproxy"], scenarios=["C"])
        failed, _ = quiet(perfcheck.compare, base, res, run2)
        self.assertEqual(failed, 0)

    def test_check_missing_keys_reports_no_data(self):
        base = copy.deepcopy(BASE)
        base["checks"].append({"name": "broken", "scenario": "A", "proxy": "ringway-splice",
                               "metric": "cpu_vs", "worse": "higher", "baseline": 1.0,
                               "tolerance": 0.2, "gate": False})
        failed, text = quiet(perfcheck.compare, base, results())
        self.assertEqual(failed, 0)
        self.assertIn("info (no data)", text)


class Cli(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="perfcheck-test.")
        self.addCleanup(shutil.rmtree, self.dir)

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            json.dump(data, f)
        return path

    def run_py(self, *args):
        p = subprocess.run([sys.executable, os.path.join(HERE, "perfcheck.py"), *args],
                           capture_output=True, text=True)
        return p.returncode, p.stdout

    def test_cli(self):
        b = self.write("baseline.json", BASE)
        ok, noisy = self.write("ok.json", results()), self.write("noisy.json", results(NOISY))
        self.assertEqual(self.run_py("compare", b, ok)[0], 0)
        rc, out = self.run_py("compare", b, noisy)
        self.assertEqual(rc, 1)
        self.assertIn("regressed", out)
        rc, out = self.run_py("compare", "--first-run", b, noisy)
        self.assertEqual(rc, 1)
        self.assertNotIn("regressed", out)
        rc, out = self.run_py("failing", b, noisy)
        self.assertEqual(rc, 0)
        self.assertEqual(out.splitlines(), ["FAILED=1", "RETRY=1", "CHECKS=" + SPLICE_A,
                                            "PROXIES=ringway-splice haproxy", "SCENARIOS=A"])
        self.assertEqual(self.run_py("compare", b, noisy, ok)[0], 0)
        self.assertEqual(self.run_py("compare", b)[0], 64)


FAKE_BENCH = r'''#!/usr/bin/env bash
# stand-in for scripts/bench.sh: copies the next canned results.json, logs its environment
set -euo pipefail
n=$(($(cat "$FAKE_DIR/count" 2>/dev/null || echo 0) + 1))
echo "$n" >"$FAKE_DIR/count"
echo "run $n PROXIES=$PROXIES SCENARIOS=$SCENARIOS" >>"$FAKE_DIR/log"
[[ -f $FAKE_DIR/run$n.json ]] || exit 3
mkdir -p "$RESULTS_ROOT/x"
cp "$FAKE_DIR/run$n.json" "$RESULTS_ROOT/x/results.json"
'''


class PerfCheckScript(unittest.TestCase):
    """scripts/perf-check end to end, in a copy of the tree with a stand-in bench.sh."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="perfcheck-test.")
        self.addCleanup(shutil.rmtree, self.dir)
        os.makedirs(os.path.join(self.dir, "scripts", "lib"))
        os.makedirs(os.path.join(self.dir, "bench"))
        self.fake = os.path.join(self.dir, "fake")
        os.makedirs(self.fake)
        shutil.copy(os.path.join(REPO, "scripts", "perf-check"), os.path.join(self.dir, "scripts"))
        shutil.copy(os.path.join(HERE, "perfcheck.py"), os.path.join(self.dir, "scripts", "lib"))
        with open(os.path.join(self.dir, "scripts", "bench.sh"), "w") as f:
            f.write(FAKE_BENCH)
        with open(os.path.join(self.dir, "bench", "baseline.json"), "w") as f:
            json.dump(BASE, f)

    def perf_check(self, *runs):
        for i, r in enumerate(runs, 1):
            with open(os.path.join(self.fake, f"run{i}.json"), "w") as f:
                json.dump(r, f)
        env = {**os.environ, "RINGWAY_BIN": "/bin/true", "FAKE_DIR": self.fake}
        p = subprocess.run(["bash", os.path.join(self.dir, "scripts", "perf-check")],
                           capture_output=True, text=True, env=env)
        log_path = os.path.join(self.fake, "log")
        log = []
        if os.path.exists(log_path):
            with open(log_path) as f:
                log = f.read().splitlines()
        return p.returncode, p.stdout + p.stderr, log

    def test_pass_first_time_runs_once(self):
        rc, out, log = self.perf_check(results())
        self.assertEqual(rc, 0, out)
        self.assertEqual(len(log), 1)
        self.assertIn("no regression", out)

    def test_fail_then_pass_pooled(self):
        rc, out, log = self.perf_check(
            results(NOISY), results(proxies=["ringway-splice", "haproxy"], scenarios=["A"]))
        self.assertEqual(rc, 0, out)
        self.assertEqual(log[1], "run 2 PROXIES=ringway-splice haproxy SCENARIOS=A")
        self.assertIn("1 check(s) beyond tolerance on the first run; re-measuring " + SPLICE_A,
                      out)
        self.assertIn("did not reproduce", out)

    def test_fail_then_still_fail(self):
        rc, out, log = self.perf_check(
            results(NOISY), results({("A", "ringway-splice"): [1.30, 1.25, 1.35]},
                                    proxies=["ringway-splice", "haproxy"], scenarios=["A"]))
        self.assertEqual(rc, 1, out)
        self.assertEqual(len(log), 2)
        self.assertIn("1 check(s) regressed beyond tolerance", out)

    def test_second_benchmark_failing_is_exit_1(self):
        rc, out, log = self.perf_check(results(NOISY))  # no canned run 2: bench.sh exits 3
        self.assertEqual(rc, 1, out)
        self.assertIn("scripts/bench.sh failed (run 2)", out)


if __name__ == "__main__":
    unittest.main()
