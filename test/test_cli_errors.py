"""`sag` on bad input: argparse refuses bad counts; what the layers refuse is one line naming the command."""

import pytest
import torch

from sag_ros.cli import BACKEND_NAMES, GRANULARITIES, main


@pytest.mark.parametrize("argv", [
    ["eval", "--episodes", "0"],
    ["eval", "--interval", "0"],
    ["eval", "--interval", "5@-1"],
    ["eval", "--noise-scale", "-0.5"],
    ["eval", "--noise-scale", "inf"],
    ["eval", "--latency-ms", "-5"],
    ["eval", "--latency-ms", "5", "--param", "execution_offset_s=0.0125"],
    ["eval", "--latency-ms", "5", "--latency-from", "bench_ros.json::dense"],
    ["bench", "--backends", "tensorflow"],
    ["bench", "--noise-seeds", "-1"],
    ["bench-ros", "--rate", "nan"],
    ["train-pruner", "--policy", "p.pt", "--data", "d.npz", "--out", "o.pt", "--batch-size", "0"],
    ["train", "--config", "c.yaml", "--data", "d.npz", "--out", "run", "--max-minutes", "0"],
])
def test_bad_counts_and_names_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2  # argparse's usage error, before any work starts
    assert "error: argument" in capsys.readouterr().err


def test_a_missing_checkpoint_is_one_line_naming_the_command(tmp_path):
    with pytest.raises(SystemExit, match=r"^sag eval: .*nope\.pt: no such file$"):
        main(["eval", "--policy", str(tmp_path / "nope.pt"), "--episodes", "1"])


def test_a_value_the_layers_refuse_is_one_line_too(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    with pytest.raises(SystemExit, match=r"^sag pack: .*notes\.txt: not a readable checkpoint"):
        main(["pack", "--policy", str(notes), "--out", str(tmp_path / "out.pt")])


@pytest.mark.skipif(torch.cuda.is_available(), reason="refuses CUDA only where torch has none")
@pytest.mark.parametrize("command", [["train", "--config", "config/pusht_image.yaml", "--data", "missing.npz"],
                                     ["train-pruner", "--policy", "missing.pt", "--data", "missing.npz"]])
def test_training_on_cuda_without_it_is_refused_before_anything_loads(command, tmp_path):
    with pytest.raises(SystemExit, match=rf"^sag {command[0]}: device 'cuda': torch .* sees no CUDA device"):
        main(command + ["--out", str(tmp_path / "out"), "--device", "cuda"])


def test_graph_parameters_without_a_latency_are_refused():
    with pytest.raises(SystemExit, match="--params-file and --param are the replayed graph's: they need --latency-ms"):
        main(["eval", "--params-file", "config/sag_nodes.yaml", "--episodes", "1"])
    with pytest.raises(SystemExit, match="need --latency-ms"):
        main(["eval", "--param", "sag_inference.execution_offset_s=0.0125", "--episodes", "1"])


def test_latencies_from_a_report_that_lacks_them_are_refused_naming_it(tmp_path):
    report = tmp_path / "bench_ros.json"
    report.write_text('{"methods": {"dense": {"obs_to_action": {"p50_ms": 94.0}}}}')  # a report from before stop 45
    (tmp_path / "eval.json").write_text('{"episodes": []}')
    for reference, message in [(f"{report}::dense", "'dense' has no per-chunk latencies"),
                               (f"{report}::sag", r"no method 'sag'; it has \['dense'\]"),
                               (str(report), "name the method as REPORT.json::METHOD"),
                               (f"{tmp_path / 'nope.json'}::dense", "nope.json: no such file"),
                               (f"{tmp_path / 'eval.json'}::dense", "not a `sag bench-ros` report")]:
        with pytest.raises(SystemExit, match=f"^sag eval: .*{message}"):
            main(["eval", "--latency-from", reference, "--episodes", "1"])


def test_traceback_on_request(tmp_path, monkeypatch):
    from sag_ros.policy.checkpoint import CheckpointError

    monkeypatch.setenv("SAG_TRACEBACK", "1")
    with pytest.raises(CheckpointError, match="no such file"):
        main(["eval", "--policy", str(tmp_path / "nope.pt"), "--episodes", "1"])


def test_backend_names_are_the_engines():
    from sag_ros.engine import BACKENDS

    assert BACKEND_NAMES == tuple(BACKENDS)


def test_granularity_choices_are_the_pruners():
    from sag_ros.sparse.pruner import GRANULARITIES as PRUNER_GRANULARITIES

    assert GRANULARITIES == PRUNER_GRANULARITIES
