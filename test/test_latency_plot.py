"""The latency plot (tools/latency_plot.py): replayed runs make one curve per method and offset, lockstep runs a
reference line each."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("latency_plot", Path(__file__).parents[1] / "tools" / "latency_plot.py")
latency_plot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(latency_plot)


def _report(scores: list[float], pruner: str | None = None, latency_s: float | list[float] | None = None,
            offset_s: float = 0.0) -> dict:
    timing = None if latency_s is None else {"latency_s": latency_s, "execution_offset_s": offset_s}
    return {"pruner": pruner, "interval": None, "graph_timing": timing,
            "episodes": [{"score": s} for s in scores]}


def test_runs_group_by_method_and_offset_and_sort_by_latency():
    reports = [_report([1, 0], "models/p.pt", 0.094), _report([1, 1], "models/p.pt", 0.018),
               _report([0, 0], "models/p.pt", 0.018, offset_s=0.0125), _report([1, 0, 1]), _report([0, 1], None, 0.0)]
    curves, lockstep = latency_plot.collect(reports, {"p": "SAG"})
    assert sorted(curves) == [("SAG", ""), ("SAG", "offset 12.5 ms"), ("dense", "")]
    assert [(ms, score) for ms, score, _, _ in curves["SAG", ""]] == [(18.0, 1.0), (94.0, 0.5)]
    assert curves["SAG", ""][1][2] == pytest.approx(0.5)  # standard error of [1, 0]
    assert lockstep == {"dense": (pytest.approx(2 / 3), pytest.approx(1 / 3), 3)}


def test_runs_with_measured_latencies_make_their_own_curve_at_their_median():
    reports = [_report([1, 1], "models/p.pt", 0.018), _report([1, 0], "models/p.pt", [0.01, 0.02, 0.05])]
    curves, _ = latency_plot.collect(reports, {"p": "SAG"})
    assert curves["SAG", "measured latencies, at their median"] == [(20.0, 0.5, pytest.approx(0.5), 2)]
    assert curves["SAG", ""] == [(18.0, 1.0, 0.0, 2)]


def test_the_plot_is_written(tmp_path):
    paths = []
    for i, report in enumerate([_report([1, 0], None, 0.0), _report([0, 0], None, 0.05), _report([1, 1])]):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(report))
    out = tmp_path / "latency.png"
    latency_plot.main([*map(str, paths), "--mark", "dense=50", "--out", str(out)])
    assert out.stat().st_size > 10_000
