"""Unit tests for benchstat.py's scenario U (upgrade / reload / restart under load):
the operations file bench.sh writes, the run it becomes, the summary row and its cell."""

import json
import os
import tempfile
import types
import unittest

import benchstat

LOAD = {"exchanges": 10000, "failed": 3, "duration_s": 10.0, "per_second": 1000.0,
        "rate": 1000.0,
        "outcomes": {"ok": 9997, "refused": 2, "reset": 1, "timeout": 0, "dropped": 0},
        "latency_us": {"p50": 350, "p99": 4000, "p999": 9000, "max": 12000},
        "service_us": {"p99": 3900}, "max_dispatch_lag_us": 100}


def ops_file(lines):
    f = tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False)
    for fields in lines:
        f.write("\t".join(str(x) for x in fields) + "\n")
    f.close()
    return f.name


def record(proxy, ops, rep=1):
    path = ops_file(ops)
    try:
        args = types.SimpleNamespace(upgrade_ops=path, upgrade_how="how", load_t0="100.0")
        run = benchstat.parse_upgrade(json.dumps(LOAD), args)
    finally:
        os.unlink(path)
    run.update({"scenario": "U", "proxy": proxy, "rep": rep, "noise_pct": 1.0,
                "layout": "split", "tool": "upgrade"})
    return run


OK_OPS = [
    (1, 0, "102.5", "102.55", 10, 11, "yes", "yes", 4, "upgraded: pid 11"),
    (2, 0, "105.0", "105.07", 11, 12, "yes", "yes", 0, "upgraded: pid 12"),
    (3, 0, "107.5", "107.56", 12, 13, "yes", "yes", 2, "upgraded: pid 13"),
]


class UpgradeRuns(unittest.TestCase):
    def test_ops_are_read(self):
        run = record("ringway", OK_OPS)
        self.assertNotIn("failed", run)
        self.assertNotIn("warning", run)
        self.assertEqual(run["failed_requests"], 3)
        self.assertEqual(run["ops_made"], 3)
        self.assertEqual(run["ops_failed"], 0)
        self.assertEqual(run["pid_changed_ops"], 3)
        self.assertEqual(run["old_exited_ops"], 3)
        self.assertAlmostEqual(run["op_s_mean"], 0.06, places=3)
        self.assertEqual(run["ops"][0]["at_s"], 2.5)
        self.assertEqual(run["ops"][0]["sessions_moved"], 4)

    def test_failed_upgrade_warns_and_keeps_the_run(self):
        ops = [OK_OPS[0], (2, 1, "105.0", "105.2", 11, "", "no", "", "", "upgrade failed: x")]
        run = record("ringway", ops)
        self.assertNotIn("failed", run)
        self.assertIn("operation 2 failed (exit 1)", run["warning"])
        self.assertEqual(run["ops_failed"], 1)
        self.assertEqual(run["pid_changed_ops"], 1)

    def test_restart_has_no_old_process_to_wait_for(self):
        ops = [(1, 0, "102.5", "102.9", "", 20, "yes", "no", "", "")]
        run = record("ringway-restart", ops)
        self.assertNotIn("warning", run)
        self.assertEqual(run["old_exited_ops"], 0)

    def test_no_ops_fails_the_run(self):
        self.assertEqual(record("haproxy", [])["failed"], "no operation was made")


class HaproxyWorkerExit(unittest.TestCase):
    def test_old_worker_crash_is_shown(self):
        ops = [(1, 0, "102.5", "102.6", 10, 11, "yes", "yes", "",
                "Former worker (10) exited with code 139 (Segmentation fault)"),
               (2, 0, "105.0", "105.1", 11, 12, "yes", "yes", "",
                "Former worker (11) exited with code 0 (Exit)")]
        run = record("haproxy", ops)
        self.assertIn("old worker exited with code 139 (Segmentation fault)", run["warning"])
        self.assertEqual([op["old_exit_code"] for op in run["ops"]], [139, 0])
        row = benchstat.summarize([run], 5.0)[0]
        self.assertIn("old exited 2/2 (1 with exit code 139)", benchstat.cells(row)[2])


class UpgradeSummary(unittest.TestCase):
    def test_row_and_cell(self):
        runs = [record("ringway", OK_OPS, rep) for rep in (1, 2, 3)]
        rows = benchstat.summarize(runs, 5.0)
        self.assertEqual(len(rows), 1)
        row = rows[0]
        self.assertEqual(row["failed_requests"], 3)
        self.assertEqual(row["ops_made"], 9)
        self.assertEqual(row["pid_changed_ops"], 9)
        self.assertAlmostEqual(row["op_s_min"], 0.05)
        self.assertAlmostEqual(row["op_s_max"], 0.07)
        self.assertEqual(row["outcomes"]["refused"], 2)
        cell = benchstat.cells(row)[2]
        self.assertIn("3 failed / 10,000 (0.03 %)", cell)
        self.assertIn("upgrade 0.060 s mean of 9", cell)
        self.assertIn("pid changed 9/9, old exited 9/9", cell)


if __name__ == "__main__":
    unittest.main()
