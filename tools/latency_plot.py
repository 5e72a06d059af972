"""Plot closed-loop score against the loop's latency, from `sag eval --latency-ms` runs (graph timing replayed).

Each JSON is one `sag eval` report; runs of one method (the pruner file, or dense) with the same graph timing but
for the latency form one curve, with ± one standard error of the episode mean (runs whose latencies were drawn from
measurements, `--latency-from`, form their own, placed at the median); a lockstep run of the method (no
--latency-ms) is drawn as a dashed line at its score. ``--mark NAME=MS`` draws a method's measured latency (e.g.
`sag bench-ros`'s observation-to-action p50) as a vertical line: where that method runs on the robot.

    python tools/latency_plot.py runs/replay/mw_*.json --mark dense=94 --mark sag=18 --out docs/replay/latency.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from sag_ros.benchmark import _pyplot, _save_figure


def method_name(report: dict, names: dict[str, str]) -> str:
    """'dense', or the pruner file's stem (interval caching: 'interval n'), renamed by ``names``."""
    name = "dense"
    if report.get("pruner"):
        name = Path(report["pruner"]).stem
    elif report.get("interval"):
        name = f"interval {report['interval'][0]}"
    return names.get(name, name)


def variant_label(report: dict) -> str:
    """What sets a replayed run apart from the shipped timing at a constant latency (its runs make a curve of their
    own): an execution offset other than 0, latencies drawn from measurements (`sag eval --latency-from`)."""
    timing = report["graph_timing"]
    offset = timing.get("execution_offset_s", 0.0)
    parts = [f"offset {offset * 1e3:g} ms"] if offset else []
    if isinstance(timing["latency_s"], list):
        parts.append("measured latencies, at their median")
    return ", ".join(parts)


def score_and_error(report: dict) -> tuple[float, float]:
    scores = np.array([episode["score"] for episode in report["episodes"]])
    return float(scores.mean()), float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else 0.0


Point = tuple[float, float, float, int]
"""(latency ms, mean score, its standard error, episodes)"""


def collect(reports: list[dict], names: dict[str, str]) -> tuple[dict[tuple[str, str], list[Point]],
                                                                   dict[str, tuple[float, float, int]]]:
    """Replayed runs grouped into curves by (method, variant), each sorted by latency; lockstep runs by method."""
    curves: dict[tuple[str, str], list[Point]] = defaultdict(list)
    lockstep: dict[str, tuple[float, float, int]] = {}
    for report in reports:
        score, error = score_and_error(report)
        count, method = len(report["episodes"]), method_name(report, names)
        if report.get("graph_timing"):
            latency_ms = float(np.median(report["graph_timing"]["latency_s"])) * 1e3
            curves[method, variant_label(report)].append((latency_ms, score, error, count))
        else:
            lockstep[method] = (score, error, count)
    return {key: sorted(points) for key, points in curves.items()}, lockstep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="`sag eval --json` reports, with and without --latency-ms")
    parser.add_argument("--name", action="append", default=[], metavar="STEM=NAME",
                        help="show the method of pruner file STEM (or 'dense') as NAME")
    parser.add_argument("--mark", action="append", default=[], metavar="NAME=MS",
                        help="a method's measured latency: a vertical line (NAME as in the legend)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="closed loop through the graph's timing, replayed")
    args = parser.parse_args(argv)
    names = dict(entry.rsplit("=", 1) for entry in args.name)
    curves, lockstep = collect([json.loads(Path(path).read_text()) for path in args.reports], names)

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {}
    for (method, variant), points in sorted(curves.items()):
        latency, score, error, count = map(np.array, zip(*points))
        episodes = f"{min(count)}" if min(count) == max(count) else f"{min(count)}-{max(count)}"
        label = f"{method}, {variant or 'shipped timing'} ({episodes} episodes a point)"
        marker = {(False, False): "o", (True, False): "s", (False, True): "D", (True, True): "^"}[
            "offset" in variant, "measured" in variant]
        line = ax.errorbar(latency, score, yerr=error, capsize=3, label=label, color=colors.get(method),
                           marker=marker, linestyle="-." if variant else "-")
        colors.setdefault(method, line[0].get_color())
    for method, (score, error, count) in sorted(lockstep.items()):
        ax.axhline(score, linestyle="--", linewidth=1, color=colors.get(method, "gray"),
                   label=f"{method}, lockstep (sag eval, {count} episodes)")
    for mark in args.mark:
        name, ms = mark.rsplit("=", 1)
        ax.axvline(float(ms), linestyle=":", color=colors.get(name, "black"))
        ax.annotate(f"{name}: {float(ms):g} ms", (float(ms), ax.get_ylim()[1]), rotation=90, va="top", ha="right",
                    fontsize=8)
    ax.set_xlabel("latency from frame to chunk (ms)")
    ax.set_ylabel("score (Meta-World: success rate)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    _save_figure(fig, Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
