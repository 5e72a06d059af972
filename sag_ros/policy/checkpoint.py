"""Policy checkpoints: self-describing, versioned, written atomically, refused clearly when wrong.

A checkpoint holds the policy's config, its weights (normalizer statistics included), the hash of the
data it was trained on and a fingerprint of its weights that dependent artifacts (a SAG pruner, compiled
engines) record so they can never be paired with another policy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from sag_ros.atomic import atomic_write
from sag_ros.policy.config import PolicyConfig
from sag_ros.policy.policy import DiffusionPolicy

FORMAT = "sag_ros.policy"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, of another kind or version, or does not fit its config."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through :func:`sag_ros.atomic.atomic_write`."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def load_artifact(path: Path, expected_format: str, expected_version: int,
                  required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a torch file written by :func:`atomic_torch_save`; check its format tag, version and ``required`` keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files; its first line says which
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupted or not a torch file): "
                              f"{reason}") from exc
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: expected a {expected_format!r} file, found {found!r}")
    if payload.get("version") != expected_version:
        raise CheckpointError(f"{path}: {expected_format} version {payload.get('version')} is not supported "
                              f"(this sag_ros reads version {expected_version})")
    missing = [key for key in required if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: damaged {expected_format} file: it lacks {missing}")
    return payload


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and float32 bytes of every tensor: identifies a policy's weights."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_policy(policy: DiffusionPolicy, path: Path, *, data_hash: str, half: bool = False,
                extra: dict[str, Any] | None = None) -> None:
    """Write a policy checkpoint; ``half`` stores floating weights as fp16 to keep shipped files small."""
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in policy.state_dict().items()}
    atomic_torch_save({
        "format": FORMAT, "version": VERSION, "config": policy.config.to_dict(), "state_dict": state,
        "data_hash": data_hash, "extra": extra or {},
    }, path)


def load_policy(path: Path, expected_config: PolicyConfig | None = None) -> tuple[DiffusionPolicy, dict[str, Any]]:
    """Load a policy in eval mode, fp32. Returns it with the checkpoint's metadata (hash, fingerprint, extra)."""
    payload = load_artifact(path, FORMAT, VERSION, required=("config", "state_dict"))
    try:
        config = PolicyConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid stored config: {exc}") from exc
    if expected_config is not None and expected_config.to_dict() != config.to_dict():
        raise CheckpointError(f"{path}: checkpoint config does not match the requested config:\n"
                              f"  stored:    {config.to_dict()}\n  requested: {expected_config.to_dict()}")
    policy = DiffusionPolicy(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored config: {exc}") from exc
    policy.eval()
    meta = {k: payload.get(k) for k in ("data_hash", "extra")}
    meta["fingerprint"] = fingerprint(policy.state_dict())
    return policy, meta
