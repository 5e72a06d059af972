"""``sag bench-ros``: dense vs SAG closed loop over real ROS, on the tiny policy and a tiny untrained pruner."""

import json

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy absent: pip install -e .[ros]")
pytestmark = pytest.mark.ros

import torch  # noqa: E402

from ros_fixtures import *  # noqa: E402,F401,F403


@pytest.fixture(scope="module")
def tiny_pruner(tiny_checkpoint, tmp_path_factory):
    from sag_ros.policy.checkpoint import load_policy
    from sag_ros.sparse.artifact import save_pruner
    from sag_ros.sparse.pruner import Pruner
    from sag_ros.sparse.train_pruner import PrunerTrainConfig, pruner_config_for

    policy, _ = load_policy(tiny_checkpoint)
    torch.manual_seed(0)
    pruner = Pruner(pruner_config_for(policy, PrunerTrainConfig())).eval()
    path = tmp_path_factory.mktemp("pruner") / "tiny_sag.pt"
    save_pruner(pruner, policy, path, extra={"reuse": "one_for_all"})
    return path


def test_bench_ros_dense_vs_sag_writes_the_report(tiny_checkpoint, tiny_pruner, tmp_path, capsys):
    from sag_ros.cli import main

    out = tmp_path / "bench_ros.json"
    main(["bench-ros", "--policy", str(tiny_checkpoint), "--pruner", f"sag={tiny_pruner}", "--episodes", "1",
          "--max-steps", "12", "--rate", "5", "--seed", "100000", "--json", str(out)])
    table = capsys.readouterr().out
    assert "dense" in table and "sag" in table and "o2a p95 ms" in table

    report = json.loads(out.read_text())
    assert report["rate_hz"] == 5.0 and report["episodes"] == 1 and report["seeds"] == [100_000, 100_001]
    assert list(report["methods"]) == ["dense", "sag"]
    for name, row in report["methods"].items():
        for key in ("achieved_rate_hz", "target_rate_hz", "obs_to_action", "compute", "deadline_misses",
                    "overruns", "executed_fraction", "mean_score", "success_rate", "chunks", "episodes"):
            assert key in row, (name, key)
        assert row["target_rate_hz"] == row["sim_rate_hz"] == 5.0
        assert row["chunks"] >= 5 and 0.0 < row["achieved_rate_hz"] <= 7.0
        o2a, compute = row["obs_to_action"], row["compute"]
        assert 0.0 < o2a["p50_ms"] <= o2a["p95_ms"] <= o2a["p99_ms"] <= o2a["max_ms"]
        assert o2a["p50_ms"] >= compute["p50_ms"]  # obs age + compute
        assert 0 <= row["deadline_misses"] <= row["chunks"] and row["overruns"] >= 0
        assert 0.0 <= row["mean_score"] <= 1.0 and 0.0 <= row["success_rate"] <= 1.0
        assert [e["seed"] for e in row["episodes"]] == [100_000] and row["episodes"][0]["steps"] == 12
    assert report["methods"]["dense"]["executed_fraction"] == 1.0 and report["methods"]["dense"]["pruner"] is None
    sag = report["methods"]["sag"]
    assert sag["pruner"] == str(tiny_pruner) and sag["sampler"] == "ddpm" and sag["num_steps"] == 10
    assert 0.0 < sag["executed_fraction"] < 1.0  # the untrained pruner (init rate 0.5) prunes some blocks
    assert np.isfinite(sag["obs_to_action"]["p95_ms"])

    # every chunk's latency is kept, for `sag eval --latency-from` to replay
    from sag_ros.nodes.bench_ros import measured_latencies

    samples = sag["obs_to_action_samples_ms"]
    assert len(samples) == sag["chunks"] and max(samples) == pytest.approx(sag["obs_to_action"]["max_ms"], abs=1e-3)
    assert measured_latencies(f"{out}::sag") == pytest.approx([ms / 1e3 for ms in samples])
    assert out.with_suffix(".png").stat().st_size > 10_000  # and their distributions, plotted
