"""sag_ros: an ament_python package that is also a plain pip package."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sag_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "plugin.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/models", glob("models/*.pt") + glob("models/*.json")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "torch==2.13.0",
        "numpy",
        "pyyaml",
        "tqdm",
        "gymnasium",
        "gym-pusht==0.1.8",
        "imageio",
        "matplotlib",
    ],
    extras_require={
        # colcon: test/test_colcon_install.py builds the package as a ROS 2 workspace does
        "test": ["pytest", "diffusers==0.42.1", "colcon-common-extensions"],
        # numba: the per-step advance kernel on the CPU loop (sag_ros/engine/host_advance.py)
        "engine": ["onnx", "onnxruntime", "onnxscript", "numba"],
        # sag-dashboard / the rqt plugin (under rqt, its python_qt_binding provides Qt and qtpy follows it).
        # PySide6 6.12.0 drops a reference to None on every call that returns nothing: under Python 3.11 (where None
        # is still reference-counted) the dashboard aborts within seconds of live data ("deallocating None")
        "dashboard": ["qtpy", "PySide6-Essentials>=6.5,<6.12", "pyqtgraph"],
        # the Meta-World task suite (MuJoCo; headless images need the system's EGL, see .ci/run)
        "metaworld": ["metaworld==3.1.1"],
        "ros": [
            "ros-jazzy-rclpy[fastrtps]",
            "ros-jazzy-std-msgs",
            "ros-jazzy-sensor-msgs",
            "ros-jazzy-diagnostic-msgs",
            "ros-jazzy-std-srvs",
            "ros-jazzy-trajectory-msgs",
            "ros-jazzy-geometry-msgs",
        ],
    },
    zip_safe=True,
    maintainer="sag_ros developers",
    maintainer_email="sag-ros@example.org",
    description="Real-time ROS 2 Diffusion Policy control node accelerated by Sparse ActionGen (SAG).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sag = sag_ros.cli:main",
            "sag_camera = sag_ros.nodes.camera_node:main",
            "sag_inference = sag_ros.nodes.inference_node:main",
            "sag_sim = sag_ros.nodes.sim_node:main",
            "sag-bringup = sag_ros.nodes.bringup:entry_point",
            "sag-dashboard = sag_ros.dashboard.main:entry_point",
        ],
    },
)
