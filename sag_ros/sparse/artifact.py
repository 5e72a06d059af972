"""Pruner checkpoints, bound to one policy: the fingerprint of its weights and its sampler are stored and
checked, so a pruner can never silently run against another policy or another number of steps."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sag_ros.policy.checkpoint import CheckpointError, atomic_torch_save, fingerprint, load_artifact
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.sparse.pruner import Pruner, PrunerConfig

FORMAT = "sag_ros.pruner"
VERSION = 1


def sampler_signature(policy: DiffusionPolicy) -> dict[str, Any]:
    """What a mask's rows mean: the inference sampler and its steps."""
    return {"kind": policy.schedule.kind.value, "num_steps": policy.schedule.num_steps}


def pruner_sampler(path: Path) -> tuple[str, int]:
    """The sampler kind and step count a pruner's masks are for (set the policy's sampler to it before loading)."""
    sampler = load_artifact(path, FORMAT, VERSION, required=("sampler",))["sampler"]
    return sampler["kind"], sampler["num_steps"]


def pruner_grid(policy: DiffusionPolicy) -> tuple[int, int, int]:
    """(denoising steps, blocks a step, observation features): the shapes a pruner for ``policy`` has."""
    d = policy.config.denoiser
    return policy.schedule.num_steps, d.num_blocks, d.n_obs_steps * policy.config.encoder.feature_dim


def save_pruner(pruner: Pruner, policy: DiffusionPolicy, path: Path, extra: dict[str, Any]) -> None:
    atomic_torch_save({
        "format": FORMAT, "version": VERSION, "config": asdict(pruner.config),
        "state_dict": {k: v.cpu() for k, v in pruner.state_dict().items()},
        "policy_fingerprint": fingerprint(policy.state_dict()), "sampler": sampler_signature(policy),
        "extra": extra,
    }, path)


def load_pruner(path: Path, policy: DiffusionPolicy, *, transfer: bool = False) -> tuple[Pruner, dict[str, Any]]:
    """Load a pruner for ``policy`` (whose sampler must already be the one the pruner was trained for).

    ``transfer``: accept a pruner trained for another policy with the same observation features and grid, as
    the starting point of training (e.g. for the same policy trained further); never for inference.
    """
    payload = load_artifact(path, FORMAT, VERSION,
                            required=("config", "policy_fingerprint", "sampler", "state_dict", "extra"))
    try:
        config = PrunerConfig(**payload["config"])
    except (TypeError, ValueError) as exc:  # e.g. a field this sag_ros does not know: another version's file
        raise CheckpointError(f"{path}: invalid stored pruner config: {exc}") from exc
    if transfer:
        grid, expected_grid = (config.num_steps, config.num_blocks, config.obs_feature_dim), pruner_grid(policy)
        if grid != expected_grid:
            raise CheckpointError(f"{path}: pruner for (steps, blocks, observation features) {grid}, "
                                  f"the policy has {expected_grid}")
    elif payload["policy_fingerprint"] != (expected := fingerprint(policy.state_dict())):
        raise CheckpointError(f"{path}: pruner was trained for policy {payload['policy_fingerprint']}, "
                              f"not for the loaded policy {expected}")
    if payload["sampler"] != sampler_signature(policy):
        raise CheckpointError(f"{path}: pruner masks are for sampler {payload['sampler']}, "
                              f"the policy samples with {sampler_signature(policy)}")
    pruner = Pruner(config)
    try:
        pruner.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored pruner config: {exc}") from exc
    return pruner.eval(), payload["extra"]
