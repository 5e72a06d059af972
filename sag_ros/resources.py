"""Where shipped files live, for a pip (editable or not) install and for a colcon install alike."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "sag_ros"
SHIPPED_POLICY = "pusht_image_long7.pt"
SHIPPED_PRUNER = "pusht_image_long7_sag_rho0.9_step_held_from5at50.pt"


def share_dir() -> Path:
    """The folder holding ``config/``, ``models/`` and ``launch/``.

    A source checkout (``pip install -e .``) uses the repository; a colcon/ament or wheel install uses
    ``<prefix>/share/sag_ros`` (found through ament_index when ROS 2 is sourced).
    """
    repo = Path(__file__).resolve().parent.parent
    if (repo / "package.xml").is_file() and (repo / "models").is_dir():
        return repo
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # ament_index absent or package not indexed: fall back to the prefix layout
        return Path(sys.prefix) / "share" / PACKAGE


def default_policy_path() -> Path:
    return share_dir() / "models" / SHIPPED_POLICY


def default_pruner_path() -> Path:
    """The SAG pruner shipped for the default policy."""
    return share_dir() / "models" / SHIPPED_PRUNER


def default_pruner_for(model_path: str, with_interval: bool = False) -> str:
    """Bringup's pruner default: the shipped SAG pruner for the shipped policy (when installed), else
    "none" (dense), since a pruner only ever fits the policy it was trained for; "none" as well when an interval
    schedule (``with_interval``) takes the pruner's place."""
    if with_interval:
        return "none"
    shipped = default_pruner_path()
    uses_shipped_policy = not model_path or Path(model_path).resolve() == default_policy_path().resolve()
    return str(shipped) if uses_shipped_policy and shipped.is_file() else "none"
