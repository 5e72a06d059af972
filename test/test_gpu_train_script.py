"""tools/gpu_train.sh, run here on the CPU: it trains from the image cache for its steps, resumes, packs; without
the cache it refuses before any work, naming the command that makes it."""

import os
import subprocess
import sys
from pathlib import Path

from sag_ros.policy.checkpoint import load_policy
from sag_ros.policy.data import hash_file
from sag_ros.sim.datagen import generate_demos
from sag_ros.sim.dataset import load_demos
from sag_ros.sim.image_cache import demo_images
from sag_ros.sim.task import get_task

REPO = Path(__file__).resolve().parents[1]


def _run(out: Path, data: Path, steps: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "DATA": str(data), "STEPS": str(steps)}
    return subprocess.run(["bash", "tools/gpu_train.sh", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_script_trains_from_the_image_cache_resumes_and_packs(tmp_path):
    data = generate_demos(get_task("pusht"), 1, 7, tmp_path / "demos.npz", workers=1)
    missing = _run(tmp_path / "out", data, 2)
    assert missing.returncode == 2 and f"run 'sag render --data {data}'" in missing.stderr
    demo_images(load_demos(data), get_task("pusht"), data, hash_file(data))
    first = _run(tmp_path / "out", data, 2)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "warm start from models/pusht_image_long3.pt" in first.stdout
    again = _run(tmp_path / "out", data, 3)  # a longer run of the same name resumes it
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout and "at step 2" in again.stdout
    policy, meta = load_policy(tmp_path / "out" / "policy_fp16.pt")
    assert meta["extra"]["train_step"] == 3 and meta["data_hash"] == hash_file(data)
