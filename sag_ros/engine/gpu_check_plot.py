"""A picture of GPU-check reports: every method's dense and SAG time (p50), side by side for each report.

    python -m sag_ros.engine.gpu_check_plot docs/gpu/gpu_check_h200_run1.json docs/gpu/gpu_check_h200_run2.json \
        --out docs/gpu/gpu_check_h200.png

Reports from repeated runs go in one figure, so that the spread between runs is seen next to the differences
between methods (on a launch-bound GPU the whole-chunk times moved by up to 1.8x between two runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sag_ros.benchmark import _pyplot, _save_figure


def timings(report: dict) -> dict[str, tuple[float, float]]:
    """{method: (dense p50 ms, SAG p50 ms)}: each timed backend's whole chunk, then each CUDA-graph replay's
    denoising loop."""
    rows = {name + (" (on the CPU)" if r["device"] == "cpu" != report["device"] else ""):
            (r["timing"]["dense"]["p50_ms"], r["timing"]["sag"]["p50_ms"])
            for name, r in report["backends"].items() if "timing" in r}
    graphs = {"eager": report["cuda_graphs"],
              **{name: r["cuda_graphs"] for name, r in report["backends"].items() if "cuda_graphs" in r}}
    for blocks, g in graphs.items():
        if g["status"] == "ok":
            rows[f"CUDA graphs of {blocks} blocks\n(denoising loop only)"] = (g["dense"]["replay"]["p50_ms"],
                                                                               g["sag"]["replay"]["p50_ms"])
    return rows


def plot_reports(reports: list[dict], labels: list[str], path: Path) -> None:
    """Horizontal bars, one group per method: dense and SAG for each report."""
    plt = _pyplot()
    per_report = [timings(r) for r in reports]
    methods = [m for m in per_report[0] if all(m in t for t in per_report)]
    bar = 0.8 / (2 * len(reports))
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.75 * len(methods)))
    y = np.arange(len(methods))
    for i, (rows, label) in enumerate(zip(per_report, labels)):
        for j, (kind, color) in enumerate((("dense", "tab:gray"), ("SAG", "tab:blue"))):
            offset = (2 * i + j) * bar - 0.4 + bar / 2
            ax.barh(y + offset, [rows[m][j] for m in methods], height=bar, color=color,
                    alpha=1.0 if i == 0 else 0.55, label=f"{kind}, {label}")
    ax.set_yticks(y, methods)
    ax.invert_yaxis()
    ax.set_xlabel("p50 per chunk (ms)")
    device = reports[0].get("gpu") or reports[0]["device"]
    mask = reports[0].get("mask", {})
    ax.set_title(f"{device}, torch {reports[0]['torch']}: SAG = {mask.get('source', 'random mask')}, "
                 f"{mask.get('pruned_fraction', float('nan')):.0%} pruned", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    _save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check_plot", description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", type=Path, help="gpu_check JSON reports (e.g. repeated runs)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    reports = [json.loads(path.read_text()) for path in args.reports]
    plot_reports(reports, [path.stem for path in args.reports], args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
