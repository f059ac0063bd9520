#!/usr/bin/env python3
"""Plots for scripts/bench.sh: one PNG per scenario from a results.json.

  benchplot.py RESULTS_JSON OUTDIR       writes OUTDIR/plot-<scenario>.png, prints their names

Each PNG has two bar charts, one bar per proxy (ringway's relay paths in colour, the peers in
grey): the proxy's CPU seconds per unit of work (lower is better) and the figure relative to
the direct path (for L a latency ratio: lower is better; for D, which has no direct row, the
VmRSS bytes per held connection). S (switch under load) has three instead: failed requests,
p99 latency and the switch time (ringway) / downtime (HAProxy stop/start); R (route added and
removed under load, ringway only) failed requests, p99 latency and the add / ready / remove
times side by side; U (upgrade / reload / restart under load) failed requests, p99 latency and
the mean operation time (upgrade command, HAProxy reload, restart downtime). Whiskers span the runs used (min..max). Needs matplotlib; uses the Agg backend, so no display is needed.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

RINGWAY = {"ringway": "#c92a2a", "ringway-buffered": "#d9480f", "ringway-splice": "#f08c00", "ringway-busy": "#e64980",
           "ringway-rr": "#a61e4d", "ringway-lc": "#862e9c", "ringway-hash": "#5f3dc4",
           "ringway-restart": "#e8590c"}
PEER = "#868e96"


def whiskers(vals, lows, highs):
    """matplotlib yerr from medians and min/max (None where unknown)."""
    lo = [v - l if None not in (v, l) else 0 for v, l in zip(vals, lows)]
    hi = [h - v if None not in (v, h) else 0 for v, h in zip(vals, highs)]
    return [lo, hi]


def bars(ax, names, vals, lows=None, highs=None, title="", ylabel="", fmt="{:.3g}"):
    x = range(len(names))
    heights = [v if v is not None else 0 for v in vals]
    colors = [RINGWAY.get(n, PEER) for n in names]
    kw = {}
    if lows is not None and any(l is not None and h is not None and l != h
                                for l, h in zip(lows, highs)):
        kw = {"yerr": whiskers(vals, lows, highs), "capsize": 4, "ecolor": "#343a40"}
    b = ax.bar(x, heights, color=colors, **kw)
    for rect, v in zip(b, vals):
        ax.annotate("n/a" if v is None else fmt.format(v),
                    (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                    textcoords="offset points")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def failed_and_p99(ax1, ax2, names, rows):
    """The first two panels of S and U: failed requests of all sent, p99 of the ok ones."""
    bars(ax1, names, [r["figure"] for r in rows],
         [r.get("figure_min") for r in rows], [r.get("figure_max") for r in rows],
         title="failed requests during the run (lower is better)",
         ylabel=f"of ~{fnum_int(rows[0].get('exchanges'))} sent", fmt="{:,.0f}")
    bars(ax2, names, [r.get("p99_us") for r in rows], title="p99 latency of ok requests",
         ylabel="µs", fmt="{:,.0f}")


def plot_switch(rows, meta, outdir):
    """S: failed requests, p99 latency and switch time / downtime per proxy."""
    names = [r["proxy"] for r in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 4.2))
    failed_and_p99(ax1, ax2, names, rows)
    bars(ax3, names, [r.get("switch_s") for r in rows],
         [r.get("switch_s_min") for r in rows], [r.get("switch_s_max") for r in rows],
         title="ringway: switch command; HAProxy: downtime", ylabel="seconds", fmt="{:.3f}")
    for ax in (ax1, ax2, ax3):
        ax.margins(y=0.12)          # room for the value labels under the titles
    fig.suptitle(f"{rows[0]['title']}, {meta.get('s_rate', '?')} conn/s for "
                 f"{meta.get('s_dur_s', '?')} s - {meta.get('host', '')} {meta.get('date', '')}, "
                 f"{meta.get('reps', '?')} rep(s), medians", fontsize=11)
    fig.tight_layout()
    path = os.path.join(outdir, "plot-S.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_route(rows, meta, outdir):
    """R: failed requests on route bench, p99 latency, and the route add / ready / remove
    times per proxy (ringway only)."""
    names = [r["proxy"] for r in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 4.2))
    bars(ax1, names, [r["figure"] for r in rows],
         [r.get("figure_min") for r in rows], [r.get("figure_max") for r in rows],
         title="failed requests on route bench (must be 0)",
         ylabel=f"of ~{fnum_int(rows[0].get('exchanges'))} sent", fmt="{:,.0f}")
    bars(ax2, names, [r.get("p99_us") for r in rows], title="p99 latency of ok requests",
         ylabel="µs", fmt="{:,.0f}")
    width = 0.27
    for i, (key, label, color) in enumerate((("add_s", "add", "#d9480f"),
                                             ("ready_s", "ready after add", "#f08c00"),
                                             ("remove_s", "remove", "#5c7cfa"))):
        vals = [r.get(key) for r in rows]
        lows = [r.get(key + "_min") for r in rows]
        highs = [r.get(key + "_max") for r in rows]
        xs = [j + (i - 1) * width for j in range(len(rows))]
        kw = {}
        if any(None not in (l, h) and l != h for l, h in zip(lows, highs)):
            kw = {"yerr": whiskers(vals, lows, highs), "capsize": 3, "ecolor": "#343a40"}
        b = ax3.bar(xs, [v or 0 for v in vals], width, color=color, label=label, **kw)
        for rect, v in zip(b, vals):
            ax3.annotate("n/a" if v is None else f"{v:.3f}",
                         (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                         ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                         textcoords="offset points")
    ax3.set_xticks(list(range(len(rows))))
    ax3.set_xticklabels([f"{n}\nrefused: {r.get('refused_after_remove') or '-'}, "
                         f"resets: {fnum_int(r.get('listener_queue_resets'))}"
                         for n, r in zip(names, rows)], fontsize=7)
    ax3.set_title("route extra: add, ready, remove", fontsize=10)
    ax3.set_ylabel("seconds", fontsize=9)
    ax3.legend(fontsize=7)
    ax3.grid(axis="y", alpha=0.3)
    ax3.set_axisbelow(True)
    for ax in (ax1, ax2, ax3):
        ax.margins(y=0.12)
    # all zeros (the expected result) would otherwise centre the axis on 0
    ax1.set_ylim(bottom=0, top=max([1] + [r["figure"] or 0 for r in rows]) * 1.15)
    fig.suptitle(f"{rows[0]['title']}, {meta.get('s_rate', '?')} conn/s for "
                 f"{meta.get('s_dur_s', '?')} s - {meta.get('host', '')} {meta.get('date', '')}, "
                 f"{meta.get('reps', '?')} rep(s), medians", fontsize=11)
    fig.tight_layout()
    path = os.path.join(outdir, "plot-R.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_upgrade(rows, meta, outdir):
    """U: failed requests, p99 latency and the mean operation time per proxy."""
    names = [r["proxy"] for r in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 4.2))
    failed_and_p99(ax1, ax2, names, rows)
    bars(ax3, names, [r.get("op_s_mean") for r in rows],
         [r.get("op_s_min") for r in rows], [r.get("op_s_max") for r in rows],
         title="upgrade command / reload / restart downtime", ylabel="seconds (mean)",
         fmt="{:.3f}")
    for ax in (ax1, ax2, ax3):
        ax.margins(y=0.12)
    ax1.set_ylim(bottom=0, top=max([1] + [r.get("figure_max") or r["figure"] or 0
                                           for r in rows]) * 1.15)
    fig.suptitle(f"{rows[0]['title']}, {meta.get('upgrades', '?')} ops in "
                 f"{meta.get('s_dur_s', '?')} s at {meta.get('s_rate', '?')} conn/s - "
                 f"{meta.get('host', '')} {meta.get('date', '')}, "
                 f"{meta.get('reps', '?')} rep(s), medians", fontsize=11)
    fig.tight_layout()
    path = os.path.join(outdir, "plot-U.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fnum_int(x):
    return "?" if x is None else f"{x:,.0f}"


def plot_scenario(scen, rows, meta, outdir):
    rows = [r for r in rows if r["proxy"] != "direct"]
    if not rows:
        return None
    if scen == "S":
        return plot_switch(rows, meta, outdir)
    if scen == "R":
        return plot_route(rows, meta, outdir)
    if scen == "U":
        return plot_upgrade(rows, meta, outdir)
    names = [r["proxy"] for r in rows]
    first = rows[0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    bars(ax1, names, [r["proxy_cpu_per_unit"] for r in rows],
         [r.get("proxy_cpu_min") for r in rows], [r.get("proxy_cpu_max") for r in rows],
         title="proxy CPU per unit (lower is better)", ylabel=first["proxy_cpu_unit"])
    if scen == "D":
        bars(ax2, names, [r["figure"] for r in rows],
             [r.get("figure_min") for r in rows], [r.get("figure_max") for r in rows],
             title="VmRSS growth per held connection", ylabel="bytes", fmt="{:,.0f}")
    else:
        ratios = [r["ratio_to_direct"] for r in rows]
        better = "lower" if scen == "L" else "higher"
        bars(ax2, names, ratios, title=f"{first['figure_unit']} / direct ({better} is better)",
             ylabel="ratio to direct", fmt="{:.2f}")
        ax2.axhline(1.0, color="#343a40", linewidth=0.8, linestyle="--")
        if scen == "A1":
            ax2.axhline(0.6, color=RINGWAY["ringway-buffered"], linewidth=0.8, linestyle=":")
            ax2.annotate("target 0.6", (len(names) - 0.5, 0.6), fontsize=7, ha="right",
                         va="bottom", color=RINGWAY["ringway-buffered"])
    fig.suptitle(f"{first['title']} - {meta.get('host', '')} {meta.get('date', '')}, "
                 f"{meta.get('reps', '?')} rep(s), medians", fontsize=11)
    fig.tight_layout()
    path = os.path.join(outdir, f"plot-{scen}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        res = json.load(f)
    by = {}
    for r in res["summary"]:
        by.setdefault(r["scenario"], []).append(r)
    for scen, rows in by.items():
        path = plot_scenario(scen, rows, res.get("meta", {}), sys.argv[2])
        if path:
            print(os.path.basename(path))


if __name__ == "__main__":
    main()
