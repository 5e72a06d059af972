"""The method list of ``sag bench``: names, specs and order (the first method is the reference)."""

from sag_ros.benchmark import standard_methods


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
