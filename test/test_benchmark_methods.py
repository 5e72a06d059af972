"""The method list of ``sag bench``: names, specs and order (the first method is the reference)."""

from sag_ros.benchmark import _speedup_ticks, plot_results, standard_methods


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
    assert (tmp_path / "bench.png").stat().st_size > 0
