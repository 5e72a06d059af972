"""tools/gpu_train.sh, run here on the CPU: it trains from the image cache for its steps (or as many as fit its
time), resumes, packs; without the cache it refuses before any work, naming the command that makes it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sag_ros.policy.checkpoint import load_policy
from sag_ros.policy.data import hash_file
from sag_ros.resources import default_policy_path
from sag_ros.sim.datagen import generate_demos
from sag_ros.sim.dataset import load_demos
from sag_ros.sim.image_cache import demo_images
from sag_ros.sim.task import get_task

REPO = Path(__file__).resolve().parents[1]


def _run(out: Path, data: Path, steps: int | str, minutes: float = 7) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "DATA": str(data), "STEPS": str(steps),
           "MINUTES": str(minutes)}
    return subprocess.run(["bash", "tools/gpu_train.sh", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    return generate_demos(get_task("pusht"), 1, 7, tmp_path_factory.mktemp("demos") / "demos.npz", workers=1)


@pytest.fixture
def data(demo_file, tmp_path):
    """A copy of the demo file in the test's own folder, with no image cache yet."""
    copy = tmp_path / "data" / "demos.npz"
    copy.parent.mkdir()
    copy.write_bytes(demo_file.read_bytes())
    return copy


def test_the_script_trains_from_the_image_cache_resumes_and_packs(data, tmp_path):
    missing = _run(tmp_path / "out", data, 2)
    assert missing.returncode == 2 and f"run 'sag render --data {data}'" in missing.stderr
    demo_images(load_demos(data), get_task("pusht"), data, hash_file(data))
    first = _run(tmp_path / "out", data, 2)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"warm start from {default_policy_path()}" in first.stdout
    again = _run(tmp_path / "out", data, 3)  # a longer run of the same name resumes it
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout and "at step 2" in again.stdout
    policy, meta = load_policy(tmp_path / "out" / "policy_fp16.pt")
    assert meta["extra"]["train_step"] == 3 and meta["data_hash"] == hash_file(data)


def test_auto_steps_fit_the_time_and_the_run_ends_its_schedule(data, tmp_path):
    """STEPS=auto: a probe's rate sets the run's length, so the cosine schedule ends inside MINUTES (not cut)."""
    demo_images(load_demos(data), get_task("pusht"), data, hash_file(data))
    done = _run(tmp_path / "out", data, "auto", minutes=0.5)  # a 3 s probe: a rate from more than one step
    assert done.returncode == 0, done.stderr[-2000:]
    probe = [line for line in done.stdout.splitlines() if line.startswith("[gpu-train] probe: ")]
    assert probe and not (tmp_path / "out" / "probe").exists()
    steps = int(probe[0].split("training ")[1].split()[0])
    assert steps > 1 and "stopped by the" not in done.stdout, done.stdout
    assert load_policy(tmp_path / "out" / "policy_fp16.pt")[1]["extra"]["train_step"] == steps
