"""The GPU check's quick CPU mode end to end on the tiny policy: probes, equivalence, timing, JSON."""

import json

import numpy as np
import pytest
import torch

from sag_ros.engine import gpu_check


@pytest.fixture
def tiny_policy_file(tmp_path):
    from conftest import tiny_config
    from sag_ros.policy.checkpoint import save_policy
    from sag_ros.policy.policy import DiffusionPolicy

    torch.manual_seed(0)
    policy = DiffusionPolicy(tiny_config()).eval()
    corners = np.array([[0.0, 0.0], [512.0, 512.0]])
    policy.normalizer.fit({"action": corners, "state": corners})
    path = tmp_path / "tiny.pt"
    save_policy(policy, path, data_hash="test")
    return path


def test_fixed_mask_prunes_about_ninety_percent_and_computes_the_first_step():
    mask = gpu_check.fixed_mask(100, 24)
    assert mask.dtype == torch.bool and not mask[0].any()
    assert 0.85 < mask[1:].float().mean() < 0.95
    assert torch.equal(mask, gpu_check.fixed_mask(100, 24))


def _check_quick_cpu_report(tiny_policy_file, tmp_path, capsys, backends):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--policy", str(tiny_policy_file), "--out", str(out),
                           "--backends", *backends]) == 0
    assert "dense p50/p95 ms" in capsys.readouterr().out
    report = json.loads(out.read_text())
    for key in ("device", "torch", "cuda_available", "policy", "device_probe", "mask", "backends", "cuda_graphs",
                "all_equivalent", "elapsed_s", "tolerance"):
        assert key in report, key
    assert report["device"] == "cpu" and report["policy"]["source"] == "checkpoint"
    assert report["policy"]["sampler"] == "ddim" and report["policy"]["num_steps"] == 10
    assert all(stage["ok"] for stage in report["device_probe"].values()), report["device_probe"]
    assert 0.8 < report["mask"]["pruned_fraction"] < 1.0
    rows = report["backends"]
    assert list(rows) == backends
    for name in [b for b in backends if b in ("eager", "onnxruntime")]:
        row = rows[name]
        assert row["status"] == "ok", row
        for kind in ("dense", "sag"):
            assert row[kind]["pass"] and row[kind]["rel_error"] <= 1e-4
            assert 0 < row["timing"][kind]["p50_ms"] <= row["timing"][kind]["p95_ms"]
    assert rows["eager"]["dense"]["rel_error"] == 0.0
    assert rows["tensorrt"]["status"] == "skipped" and rows["tensorrt"]["reason"]
    assert rows["eager-fp16"]["status"] == "skipped"
    assert report["cuda_graphs"]["status"] == "skipped"
    assert report["all_equivalent"] is True


def test_quick_cpu_mode_writes_the_report(tiny_policy_file, tmp_path, capsys):
    _check_quick_cpu_report(tiny_policy_file, tmp_path, capsys, ["eager", "tensorrt", "eager-fp16"])


@pytest.mark.slow
def test_quick_cpu_mode_with_onnxruntime(tiny_policy_file, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    _check_quick_cpu_report(tiny_policy_file, tmp_path, capsys, ["eager", "onnxruntime", "tensorrt", "eager-fp16"])


def test_fresh_policy_fallback_when_the_checkpoint_is_missing(tmp_path):
    policy, source = gpu_check.load_check_policy(str(tmp_path / "missing.pt"), gpu_check.REPO / "config" / "pusht_image.yaml")
    assert source["source"] == "fresh" and "does not exist" in source["why"]
    assert policy.config.denoiser.n_layers == 8 and not policy.training


def test_a_run_cut_short_keeps_the_backends_it_finished(tiny_policy_file, tmp_path):
    """The wall-clock limit kills the process mid-backend: the JSON on disk must already hold the finished rows."""
    out = tmp_path / "partial.json"

    def log(line: str) -> None:
        if line.startswith("[gpu-check] backend tensorrt ..."):
            raise KeyboardInterrupt  # stands in for the kill
    with pytest.raises(KeyboardInterrupt):
        gpu_check.run_check("cpu", ["eager", "tensorrt"], 2, 1, str(tiny_policy_file), gpu_check.REPO / "config"
                            / "pusht_image.yaml", "ddim", 10, 60.0, True, log=log, out=out)
    report = json.loads(out.read_text())
    assert report["backends"]["eager"]["status"] == "ok" and "tensorrt" not in report["backends"]
    assert report["cuda_graphs"]["status"] == "skipped" and "all_equivalent" not in report
    summary = gpu_check.backend_summary(report["backends"]["eager"])
    assert "dense err 0.0e+00 pass True" in summary and "sag p50" in summary


def test_a_trained_pruners_mask_runs_with_its_reuse_and_held_steps(tiny_policy_file, tmp_path, capsys):
    from sag_ros.policy.checkpoint import load_policy
    from sag_ros.sparse.artifact import save_pruner
    from sag_ros.sparse.pruner import Pruner
    from sag_ros.sparse.train_pruner import PrunerTrainConfig, pruner_config_for

    policy, _ = load_policy(tiny_policy_file)
    policy.use_sampler("ddim", 10)  # what --quick samples with
    torch.manual_seed(0)
    pruner = Pruner(pruner_config_for(policy, PrunerTrainConfig())).eval()
    with torch.no_grad():  # odd steps prune every block, even steps none
        pruner.cell_bias[1::2] = 20.0
        pruner.cell_bias[0::2] = -20.0
    path = tmp_path / "pruner.pt"
    save_pruner(pruner, policy, path, extra={"reuse": "per_block", "hold_x0": True})
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--policy", str(tiny_policy_file), "--pruner", str(path),
                           "--out", str(out), "--backends", "eager"]) == 0
    capsys.readouterr()
    report = json.loads(out.read_text())
    assert report["mask"]["source"] == f"pruner {path}"
    assert report["mask"]["reuse"] == "per_block" and report["mask"]["hold_x0"] is True
    assert report["mask"]["held_steps"] == 5 and report["mask"]["pruned_fraction"] == 0.5
    eager = report["backends"]["eager"]
    assert eager["status"] == "ok" and eager["sag"]["rel_error"] == 0.0


def test_the_plot_reads_the_recorded_h200_reports(tmp_path):
    from sag_ros.engine import gpu_check_plot

    paths = [gpu_check.REPO / "docs" / "gpu" / f"gpu_check_h200_run{i}.json" for i in (1, 2)]
    reports = [json.loads(path.read_text()) for path in paths]
    rows = gpu_check_plot.timings(reports[0])
    assert list(rows)[:4] == ["eager", "onnxruntime (on the CPU)", "eager-fp16", "compile"]
    assert rows["eager"] == (reports[0]["backends"]["eager"]["timing"]["dense"]["p50_ms"],
                             reports[0]["backends"]["eager"]["timing"]["sag"]["p50_ms"])
    assert sum(name.startswith("CUDA graphs") for name in rows) == 2
    out = tmp_path / "gpu.png"
    assert gpu_check_plot.main([str(p) for p in paths] + ["--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
