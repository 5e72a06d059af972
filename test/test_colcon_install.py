"""The package as a ROS 2 robot builds it: `colcon build` (ament_python) of a clean copy of the sources, then the
installed package, with only the workspace's environment, finds its shared files (config, models, launch) and wires
the graph from them. What `ros2 run sag_ros sag_inference` and `ros2 launch sag_ros bringup.launch.py` rely on."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sag_ros.resources import SHIPPED_POLICY, SHIPPED_PRUNER

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
COLCON = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")
EXECUTABLES = ("sag_camera", "sag_inference", "sag_sim", "sag-bringup", "sag-dashboard", "sag")

# Run in the installed package's environment: which module was imported, where its share folder is, and the graph
# that the launch file would start with no arguments (the default parameter file, policy and pruner).
PROBE = """
import json, sag_ros
from sag_ros.nodes.graph import describe_graph
from sag_ros.resources import default_pruner_for, share_dir
graph = {d.name: dict(d.parameters) for d in describe_graph(pruner_path=default_pruner_for(""))}
print(json.dumps({"module": sag_ros.__file__, "share": str(share_dir()), "graph": graph}))
"""


def _tracked_sources(dest: Path) -> Path:
    """The files git tracks, copied: a robot's workspace holds a clean checkout, not this one's build outputs."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


@pytest.mark.skipif(COLCON is None, reason="colcon absent: pip install -e .[test]")
def test_colcon_build_installs_a_package_that_finds_its_files(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are not known")
    src = _tracked_sources(tmp_path / "src" / "sag_ros")
    build = subprocess.run([COLCON, "build", "--packages-select", "sag_ros", "--base-paths", str(tmp_path / "src"),
                            "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    prefix = tmp_path / "install" / "sag_ros"
    for name in EXECUTABLES:  # where `ros2 run sag_ros <name>` looks
        assert (prefix / "lib" / "sag_ros" / name).is_file(), name
    share = prefix / "share" / "sag_ros"
    for name in ("package.xml", "plugin.xml", "launch/bringup.launch.py", "config/sag_nodes.yaml",
                 f"models/{SHIPPED_POLICY}", f"models/{SHIPPED_PRUNER}"):
        assert (share / name).is_file(), name
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "sag_ros").is_file()

    site = next(prefix.glob("lib/python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": str(prefix)}  # what setup.bash exports
    shutil.rmtree(src)  # nothing may still come from the sources
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(found["module"]).is_relative_to(site)
    assert Path(found["share"]) == share
    inference = found["graph"]["sag_inference"]
    assert Path(inference["model_path"]) == share / "models" / SHIPPED_POLICY
    assert Path(inference["pruner_path"]) == share / "models" / SHIPPED_PRUNER
    assert inference["backend"] == "onnxruntime"  # from the installed parameter file
    assert set(found["graph"]) == {"sag_camera", "sag_inference", "sag_sim"}
