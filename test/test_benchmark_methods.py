"""The method list of ``sag bench``: names, specs and order (the first method is the reference)."""

import json

import numpy as np
import pytest

from sag_ros.benchmark import (_speedup_ticks, exact_mcnemar, format_results, paired_comparisons, paired_difference,
                               plot_results, results_figure, standard_methods)
from sag_ros.cli import main


def test_interval_baselines_get_a_row_per_reuse_policy():
    methods = standard_methods("policy.pt", {}, intervals=((10, 0),), ddim_steps=(),
                               interval_reuse=("per_block", "one_for_all"))
    assert [m.name for m in methods] == ["dense", "interval n=10", "interval n=10 one-for-all"]
    assert [(m.spec.interval, m.spec.reuse) for m in methods[1:]] == [(10, "per_block"), (10, "one_for_all")]
    assert methods[0].spec.interval is None and methods[0].spec.pruner_path is None


def test_a_late_start_interval_schedule_is_named_and_specified():
    methods = standard_methods("policy.pt", {}, intervals=((10, 0), (5, 50)), ddim_steps=())
    assert [m.name for m in methods] == ["dense", "interval n=10", "interval n=5 from 50"]
    assert [(m.spec.interval, m.spec.interval_start) for m in methods[1:]] == [(10, 0), (5, 50)]


def test_score_plot_labels_round_speedups(tmp_path):
    assert _speedup_ticks(1.0, 6.5) == [1, 1.5, 2, 3, 4, 6]
    report = {"task": "pusht", "methods": {
        "dense": {"speedup": 1.0, "score_mean": 0.30, "score_std": 0.01},
        "sag": {"speedup": 6.1, "score_mean": 0.27, "score_std": 0.02},
        "speed only": {"speedup": 9.0, "score_mean": None, "score_std": None}}}
    plot_results(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_plot_draws_each_scored_method_and_marks_where_masks_differ():
    masks = np.zeros((2, 4, 6), dtype=bool)
    masks[:, 1:, :] = True
    masks[1, 2, :3] = False  # obs 1 computes three more blocks at step 2
    report = {"task": "pusht", "masks": {"masks": masks.tolist()}, "methods": {
        "dense": {"speedup": 1.0, "score_mean": 0.70, "score_std": 0.01},
        "sag": {"speedup": 8.2, "score_mean": 0.67, "score_std": 0.02},
        "speed only": {"speedup": 9.0, "score_mean": None, "score_std": None}}}
    fig = results_figure(report)
    score_ax, *mask_axes = fig.axes
    points = [c.lines[0].get_xydata().tolist() for c in score_ax.containers]
    assert points == [[[1.0, 0.70]], [[8.2, 0.67]]]  # the speed-only row has no score to plot
    assert [t.get_text() for t in score_ax.get_legend().get_texts()] == ["dense", "sag"]
    assert [tick.get_text() for tick in score_ax.get_xticklabels()] == ["1x", "1.5x", "2x", "3x", "4x", "6x", "8x"]
    assert len(mask_axes) == 2
    assert mask_axes[0].get_title() == "obs 0: 75% pruned (grey)"
    assert mask_axes[1].get_title().endswith("3 cells differ from obs 0 (red)")
    image = mask_axes[1].get_images()[0].get_array()
    assert image.shape == (4, 6, 3)
    assert np.allclose(image[2, :3], (0.85, 0.1, 0.1)) and np.allclose(image[0, 0], 1.0)
    assert np.allclose(image[3, 0], 0.35)


def test_paired_difference_to_dense_is_per_episode_and_shown_in_the_table():
    dense = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]  # [noise seed][env seed]
    other = [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]
    paired = paired_difference(other, dense)
    diffs = np.array([0.0, 1.0, 0.0, 0.0, 0.0, -1.0])
    assert paired["episodes"] == 6 and paired["mean"] == 0.0
    assert np.isclose(paired["sem"], diffs.std(ddof=1) / np.sqrt(6))
    assert paired_difference([], []) is None  # a speed-only run
    row = {"score_mean": 0.5, "score_std": 0.0, "success_mean": 0.5, "success_std": 0.0, "l1_to_dense": 1.0,
           "executed_fraction": 0.1, "gflops_per_chunk": 0.7, "p50_ms": 10.0, "p95_ms": 11.0, "p99_ms": 12.0,
           "plan_ms": 1.0, "speedup": 5.0}
    table = format_results({"latency_observations": 12,
                            "methods": {"dense": {**row, "paired_vs_dense": paired_difference(dense, dense)},
                                        "sag": {**row, "paired_vs_dense": paired, "distinct_masks": 3},
                                        "speed-only": {**row, "score_mean": None, "paired_vs_dense": None}}})
    assert "vs dense (paired)" in table.splitlines()[0]
    assert f"+0.000±{paired['sem']:.3f}" in table.splitlines()[3] and table.splitlines()[4].split()[3] == "-"
    masks_end = table.splitlines()[0].index("masks") + len("masks")  # columns are right-aligned
    assert [line[:masks_end].split()[-1] for line in table.splitlines()[2:5]] == ["-", "3/12", "-"]


def test_paired_comparisons_count_discordant_episodes(tmp_path, capsys):
    def method(scores):
        return {"episode_scores": scores, "episode_successes": [[score > 0.5 for score in run] for run in scores]}

    report = {"seeds": [0, 4], "methods": {"dense": method([[1.0, 1.0, 0.0, 1.0]]), "sag": method([[1.0, 0.0, 0.0, 0.0]]),
                          "speed-only": {"episode_scores": []}}}
    (row,) = paired_comparisons(report)  # the speed-only row has no episodes to pair
    assert (row["a"], row["b"], row["only_a"], row["only_b"]) == ("dense", "sag", 2, 0)
    assert row["mcnemar_p"] == 0.5 and exact_mcnemar(0, 0) == 1.0 and exact_mcnemar(8, 3) == 2 * (1 + 11 + 55 + 165) / 2 ** 11
    assert row["score"]["mean"] == 0.5
    (tmp_path / "bench.json").write_text(json.dumps(report))
    main(["paired", str(tmp_path / "bench.json"), "--methods", "sag", "dense", "--plot", str(tmp_path / "pairs.png")])
    assert "-0.500±" in capsys.readouterr().out.splitlines()[2]
    assert (tmp_path / "pairs.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no method"):
        main(["paired", str(tmp_path / "bench.json"), "--methods", "nope"])


def test_paired_compares_one_component_of_a_multi_task_report(tmp_path, capsys):
    """Task 'x+y': env seeds 10 and 12 play x, 11 and 13 play y; --component pairs only that component's episodes."""
    def method(scores):
        return {"episode_scores": scores, "episode_successes": [[score > 0.5 for score in run] for run in scores]}

    report = {"task": "x+y", "seeds": [10, 14],
              "methods": {"dense": method([[1.0, 0.0, 1.0, 0.0]]), "sag": method([[0.0, 1.0, 1.0, 1.0]])}}
    (x_row,) = paired_comparisons(report, component="x")
    (y_row,) = paired_comparisons(report, component="y")
    assert (x_row["score"]["mean"], x_row["score"]["episodes"], x_row["only_a"], x_row["success_b"]) == (0.5, 2, 1, 0.5)
    assert (y_row["score"]["mean"], y_row["only_b"], y_row["success_a"], y_row["success_b"]) == (-1.0, 2, 0.0, 1.0)
    (tmp_path / "bench.json").write_text(json.dumps(report))
    main(["paired", str(tmp_path / "bench.json"), "--component", "y"])
    assert capsys.readouterr().out.splitlines()[2].split()[-3:] == ["0.000", "/", "1.000"]
    with pytest.raises(SystemExit, match="'z' is not a component of the report's task 'x\\+y'"):
        main(["paired", str(tmp_path / "bench.json"), "--component", "z"])
    # pooled runs: each run's episodes of the component, by that run's own task
    other = {"task": "x+y", "seeds": [20, 22], "methods": {"dense": method([[0.0, 0.0]]), "sag": method([[1.0, 1.0]])}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    capsys.readouterr()
    main(["paired", "--pool", f"a={tmp_path / 'bench.json'}::dense,{tmp_path / 'other.json'}::dense",
          "--pool", f"b={tmp_path / 'bench.json'}::sag,{tmp_path / 'other.json'}::sag", "--component", "x"])
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[2:4] == ["+0.000±0.577", "3"]  # env seeds 10, 12 and 20: x's only; differences +1, 0, -1
    (tmp_path / "eval.json").write_text(json.dumps({"episodes": [{"seed": 10, "score": 1.0, "success": True}]}))
    with pytest.raises(SystemExit, match="not a component of the report's task ''"):
        main(["paired", "--pool", f"a={tmp_path / 'eval.json'}", "--pool", f"b={tmp_path / 'bench.json'}::sag",
              "--component", "x"])


def test_paired_pools_bench_and_eval_runs_by_episode(tmp_path, capsys):
    """A method pooled from a `sag bench` run (two noise seeds of env seeds 10-11) and a `sag eval` run (env seeds
    20-21, noise seed 0) pairs with another pooled the same way, episode by episode."""
    def bench(scores):  # [noise seed][env seed]
        return {"episode_scores": scores, "episode_successes": [[score > 0.5 for score in run] for run in scores]}

    def evaluation(scores):
        return {"episodes": [{"seed": 20 + i, "score": score, "success": score > 0.5}
                             for i, score in enumerate(scores)]}

    (tmp_path / "bench.json").write_text(json.dumps({"seeds": [10, 12], "methods": {
        "dense": bench([[0.9, 0.2], [0.8, 0.6]]), "interval n=10": bench([[0.7, 0.2], [0.8, 0.1]])}}))
    (tmp_path / "dense.json").write_text(json.dumps(evaluation([0.6, 1.0])))
    (tmp_path / "sparse.json").write_text(json.dumps(evaluation([0.4, 0.3])))
    main(["paired", "--pool", f"dense={tmp_path / 'bench.json'}::dense,{tmp_path / 'dense.json'}",
          "--pool", f"interval={tmp_path / 'bench.json'}::interval n=10,{tmp_path / 'sparse.json'}"])
    row = capsys.readouterr().out.splitlines()[2].split()
    diffs = np.array([0.9 - 0.7, 0.2 - 0.2, 0.8 - 0.8, 0.6 - 0.1, 0.6 - 0.4, 1.0 - 0.3])
    assert row[:4] == ["dense", "interval", f"{diffs.mean():+.3f}±{diffs.std(ddof=1) / np.sqrt(6):.3f}", "6"]
    assert row[4:6] == ["3", "0"]  # solved by dense only: (1, 11), (0, 20) and (0, 21)
    # a `sag eval --noise-seed 1` run of env seeds 10-11 pairs with the bench's noise seed 1 episodes, not noise seed 0's
    (tmp_path / "noise1.json").write_text(json.dumps({"noise_seed": 1, "episodes": [
        {"seed": 10, "score": 0.5, "success": False}, {"seed": 11, "score": 0.6, "success": True}]}))
    main(["paired", "--pool", f"dense={tmp_path / 'bench.json'}::dense", "--pool", f"eval={tmp_path / 'noise1.json'}"])
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[2:4] == [f"{np.mean([0.8 - 0.5, 0.6 - 0.6]):+.3f}±{np.std([0.3, 0.0], ddof=1) / np.sqrt(2):.3f}", "2"]
    with pytest.raises(SystemExit, match="appear in two"):
        main(["paired", "--pool", f"a={tmp_path / 'dense.json'},{tmp_path / 'dense.json'}",
              "--pool", f"b={tmp_path / 'sparse.json'}"])
    with pytest.raises(SystemExit, match="share no episode"):
        main(["paired", "--pool", f"a={tmp_path / 'bench.json'}::dense", "--pool", f"b={tmp_path / 'sparse.json'}"])
    with pytest.raises(SystemExit, match="not a `sag eval` report"):
        main(["paired", "--pool", f"a={tmp_path / 'bench.json'}", "--pool", f"b={tmp_path / 'sparse.json'}"])
    with pytest.raises(SystemExit, match="either one"):
        main(["paired", str(tmp_path / "bench.json"), "--pool", f"a={tmp_path / 'sparse.json'}"])
    with pytest.raises(SystemExit, match="two or more methods"):  # one pooled method has nothing to pair with
        main(["paired", "--pool", f"a={tmp_path / 'sparse.json'}"])
