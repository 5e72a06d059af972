"""The whole command line on a tiny model: datagen -> train -> train-pruner -> eval -> bench."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from sag_ros.benchmark import report_episodes
from sag_ros.cli import main

TINY_EXPERIMENT = """
policy:
  task: pusht
  encoder: {kind: small_cnn, image_size: 96, crop_size: 84, num_keypoints: 8, image_feature_dim: 16, state_dim: 2,
            cnn_channels: [8, 16]}
  denoiser: {action_dim: 2, horizon: 16, n_obs_steps: 2, n_action_steps: 8, n_layers: 2, d_model: 32, n_heads: 2}
  scheduler: {num_train_steps: 10, kind: ddpm, num_inference_steps: 10}
train: {num_steps: 4, batch_size: 4, warmup_steps: 1, checkpoint_every: 2, threads: 1}
"""


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path, capsys):
    config, data, run = tmp_path / "tiny.yaml", tmp_path / "demos.npz", tmp_path / "run"
    config.write_text(TINY_EXPERIMENT)
    main(["datagen", "--episodes", "2", "--seed", "7", "--out", str(data), "--workers", "1"])
    main(["train", "--config", str(config), "--data", str(data), "--out", str(run)])
    policy = run / "policy.pt"
    pruner = tmp_path / "pruner.pt"
    main(["train-pruner", "--policy", str(policy), "--data", str(data), "--out", str(pruner), "--iterations", "2",
          "--batch-size", "2", "--steps", "10", "--rho", "0.5", "--threads", "1"])
    _check_pruner_resume_and_warm_start(policy, data, pruner, tmp_path, capsys)
    report = tmp_path / "eval.json"
    # In a process of its own, so what it prints at exit is checked too: a worker that showed a progress bar (ONNX
    # Runtime's export does) and was killed rather than let exit left its lock to be reported as a leaked semaphore.
    backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "eager"
    done = subprocess.run([sys.executable, "-c", "from sag_ros.cli import main; main()", "eval", "--policy", str(policy),
                           "--pruner", str(pruner), "--episodes", "1", "--workers", "1", "--steps", "10",
                           "--backend", backend, "--json", str(report)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "leaked" not in done.stderr, done.stderr
    summary = json.loads(report.read_text())["summary"]
    assert summary["episodes"] == 1 and 0.0 <= summary["score"] <= 1.0
    main(["eval", "--policy", str(policy), "--interval", "2", "--hold-x0", "--episodes", "1", "--workers", "1",
          "--steps", "10", "--json", str(report)])
    held = json.loads(report.read_text())
    assert held["interval"] == [2, 0] and held["hold_x0"] is True and held["summary"]["episodes"] == 1
    main(["eval", "--policy", str(policy), "--steps", "10", "--episodes", "1", "--workers", "1", "--latency-ms", "250",
          "--param", "sag_inference.execution_offset_s=0.1", "--json", str(report)])
    replayed = json.loads(report.read_text())  # the graph's timing: a chunk every third tick, 15 actions cover the wait
    assert replayed["graph_timing"]["latency_s"] == 0.25 and replayed["graph_timing"]["execution_offset_s"] == 0.1
    assert replayed["summary"]["held_steps"] == 0
    measured = tmp_path / "bench_ros.json"  # latencies as `sag bench-ros` records them, drawn per chunk
    measured.write_text(json.dumps({"methods": {"dense": {"obs_to_action_samples_ms": [40.0, 250.0, 90.0]}}}))
    main(["eval", "--policy", str(policy), "--steps", "10", "--episodes", "1", "--workers", "1",
          "--latency-from", f"{measured}::dense", "--json", str(report)])
    assert json.loads(report.read_text())["graph_timing"]["latency_s"] == [0.04, 0.09, 0.25]
    with pytest.raises(SystemExit, match="trained on 'pusht'"):
        main(["eval", "--policy", str(policy), "--task", "mw-drawer-open", "--episodes", "1"])
    with pytest.raises(SystemExit, match="demonstrations come from"):  # seed 7 made the demonstrations
        main(["eval", "--policy", str(policy), "--steps", "10", "--episodes", "1", "--seed-start", "7"])
    bench_json, bench_png = tmp_path / "bench.json", tmp_path / "bench.png"
    main(["bench", "--policy", str(policy), "--pruner", f"sag={pruner}", "--episodes", "1", "--noise-seeds", "2",
          "--latency-obs", "1", "--repeats", "1", "--intervals", "2", "--ddim", "5", "--workers", "1",
          "--hold-x0", "off", "on", "--seed-start", "100003", "--json", str(bench_json), "--plot", str(bench_png)])
    bench = json.loads(bench_json.read_text())
    assert bench["seeds"] == [100003, 100004]
    assert list(bench["methods"]) == ["dense", "ddim-5", "interval n=2", "interval n=2 hold-x0", "sag", "sag hold-x0"]
    assert bench["methods"]["sag hold-x0"]["spec"]["hold_x0"] is True
    dense, interval = bench["methods"]["dense"], bench["methods"]["interval n=2"]
    assert dense["executed_fraction"] == 1.0 and dense["speedup"] == 1.0
    assert interval["executed_fraction"] == pytest.approx(0.5)
    assert dense["distinct_masks"] is None and interval["distinct_masks"] == 1  # a schedule: one mask for all
    assert 1 <= bench["methods"]["sag"]["distinct_masks"] <= bench["latency_observations"] == 3
    assert interval["gflops_per_chunk"] < dense["gflops_per_chunk"]
    assert dense["l1_to_dense"] == 0.0 and bench["methods"]["ddim-5"]["l1_to_dense"] > 0.0
    assert len(dense["episode_scores"]) == len(dense["episode_successes"]) == 2  # [noise seed][env seed]
    assert dense["score_mean"] == pytest.approx(np.mean(dense["episode_scores"]))
    # `sag eval --noise-seed 1` plays the bench's noise seed 1 episodes, so the two pair
    main(["eval", "--policy", str(policy), "--episodes", "1", "--seed-start", "100003", "--noise-seed", "1",
          "--workers", "1", "--json", str(report)])
    assert report_episodes(json.loads(report.read_text())) == {
        (1, 100003): (pytest.approx(dense["episode_scores"][1][0]), dense["episode_successes"][1][0])}
    assert bench_png.stat().st_size > 10_000
    assert "speed-up" in capsys.readouterr().out

    # speed only (no episodes), dense and SAG on a second backend
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install -e .[engine])")
    main(["bench", "--policy", str(policy), "--pruner", f"sag={pruner}", "--episodes", "0", "--latency-obs", "1",
          "--repeats", "1", "--intervals", "--ddim", "--backends", "eager", "onnxruntime",
          "--json", str(bench_json), "--plot", str(bench_png)])
    speed = json.loads(bench_json.read_text())["methods"]
    assert list(speed) == ["dense", "sag", "dense [onnxruntime]", "sag [onnxruntime]"]
    assert speed["sag [onnxruntime]"]["score_mean"] is None and speed["sag [onnxruntime]"]["p50_ms"] > 0
    assert speed["sag [onnxruntime]"]["episode_scores"] == []
    assert speed["dense [onnxruntime]"]["l1_to_dense"] < 1e-2  # the same actions (action units: pixels)


def _check_pruner_resume_and_warm_start(policy, data, pruner, tmp_path, capsys):
    """A longer run continues from the saved state; other settings are refused; --init warm-starts."""
    from conftest import random_observation
    from sag_ros.policy.checkpoint import load_policy
    from sag_ros.predictor import PredictorSpec
    from sag_ros.sparse.artifact import load_pruner

    args = ["train-pruner", "--policy", str(policy), "--data", str(data), "--batch-size", "2", "--steps", "10",
            "--threads", "1"]
    capsys.readouterr()
    main(args + ["--out", str(pruner), "--iterations", "3", "--rho", "0.5"])
    assert "resumed from" in capsys.readouterr().out
    dense, _ = load_policy(policy)
    dense.use_sampler("ddpm", 10)
    assert load_pruner(pruner, dense)[1]["train_step"] == 3
    with pytest.raises(SystemExit, match="sag train-pruner: .*other settings"):  # a message, not a traceback
        main(args + ["--out", str(pruner), "--iterations", "4", "--rho", "0.6"])
    held = tmp_path / "pruner_held.pt"
    main(args + ["--out", str(held), "--iterations", "1", "--granularity", "step", "--hold-x0"])
    assert load_pruner(held, dense)[1]["hold_x0"] is True
    predictor = PredictorSpec(str(policy), sampler="ddpm", num_steps=10, pruner_path=str(held))()
    runner, _ = predictor.planner.plan(dense.encode_observation(random_observation(dense.config)))
    assert runner.held_steps is not None  # a pruner trained for held steps runs with them unless told otherwise
    nested = tmp_path / "pruner_hierarchical.pt"  # hold decisions over block decisions: from the file to a plan
    main(args + ["--out", str(nested), "--iterations", "1", "--granularity", "hierarchical", "--hold-x0",
                 "--step-cost", "2.5", "--init-interval", "3"])
    predictor = PredictorSpec(str(policy), sampler="ddpm", num_steps=10, pruner_path=str(nested))()
    runner, _ = predictor.planner.plan(dense.encode_observation(random_observation(dense.config)))
    assert predictor.planner.pruner.config.granularity == "hierarchical" and any(runner.held_steps)
    budgeted = tmp_path / "pruner_budget.pt"  # a fixed number of computed steps, placed per observation
    main(args + ["--out", str(budgeted), "--iterations", "1", "--granularity", "hierarchical", "--hold-x0",
                 "--step-budget", "2", "--init-interval", "3"])
    predictor = PredictorSpec(str(policy), sampler="ddpm", num_steps=10, pruner_path=str(budgeted))()
    for seed in range(3):
        runner, _ = predictor.planner.plan(dense.encode_observation(random_observation(dense.config, seed=seed)))
        assert list(runner.held_steps).count(False) == 2
    finetuned = tmp_path / "pruner_rho0.6.pt"
    main(args + ["--out", str(finetuned), "--iterations", "1", "--rho", "0.6", "--init", str(pruner)])
    assert load_pruner(finetuned, dense)[1]["init_from"] == str(pruner)
    cooler = tmp_path / "pruner_noise0.5.pt"  # trained on chunks drawn at the temperature it will run at
    main(args + ["--out", str(cooler), "--iterations", "1", "--noise-scale", "0.5"])
    assert load_pruner(cooler, dense)[1]["noise_scale"] == 0.5
