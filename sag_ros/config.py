"""YAML experiment files: ``policy:`` (a PolicyConfig) and ``train:`` (a TrainConfig), unknown keys refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sag_ros.policy.config import PolicyConfig, from_plain
from sag_ros.policy.train import TrainConfig


@dataclass
class ExperimentConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_experiment(path: Path) -> ExperimentConfig:
    """Read an experiment YAML file; every error names the file and the offending key."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        return from_plain(ExperimentConfig, data)
    except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
