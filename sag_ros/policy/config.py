"""Typed, self-validating configuration of the dense policy.

Each dataclass names the bad field and value in ``__post_init__`` so a wrong YAML file fails at load
time with a message, not deep inside a forward pass. Paper symbols: K = ``num_train_steps`` /
``num_inference_steps``, L = ``n_layers``, To = ``n_obs_steps``, Tp = ``horizon``, Ta = ``n_action_steps``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, Mapping


class EncoderKind(str, Enum):
    """Observation encoders. ``resnet18`` is the paper's; ``small_cnn`` trains on a CPU; ``lowdim``
    reads privileged keypoints instead of pixels."""

    RESNET18 = "resnet18"
    SMALL_CNN = "small_cnn"
    LOWDIM = "lowdim"


class SchedulerKind(str, Enum):
    DDPM = "ddpm"
    DDIM = "ddim"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class EncoderConfig:
    """Observation encoder: image (+ proprioception) or keypoints, one feature vector per obs step."""

    kind: EncoderKind = EncoderKind.SMALL_CNN
    image_size: int = 96
    crop_size: int = 84
    num_keypoints: int = 32  # spatial-softmax keypoints of the image head
    image_feature_dim: int = 64
    state_dim: int = 2  # proprioception concatenated to the image feature (Push-T: agent xy)
    lowdim_dim: int = 18  # privileged keypoint observation size for the lowdim path
    cnn_channels: tuple[int, ...] = (32, 32, 64, 64)

    def __post_init__(self) -> None:
        self.kind = EncoderKind(self.kind)
        self.cnn_channels = tuple(self.cnn_channels)
        _require(0 < self.crop_size <= self.image_size,
                 f"encoder.crop_size={self.crop_size} must be in (0, image_size={self.image_size}]")
        _require(self.num_keypoints > 0, f"encoder.num_keypoints={self.num_keypoints} must be > 0")
        _require(self.state_dim >= 0, f"encoder.state_dim={self.state_dim} must be >= 0")
        _require(len(self.cnn_channels) > 0, "encoder.cnn_channels must not be empty")

    @property
    def feature_dim(self) -> int:
        """Size of one observation step's feature, the input of the condition tokens."""
        if self.kind is EncoderKind.LOWDIM:
            return self.lowdim_dim
        return self.image_feature_dim + self.state_dim


@dataclass
class DenoiserConfig:
    """DP-T denoiser: L norm-first decoder layers of three residual sub-blocks each (SA, CA, FFN)."""

    action_dim: int = 2
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    n_layers: int = 8
    d_model: int = 256
    n_heads: int = 4
    ffn_mult: int = 4
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.1
    causal_attn: bool = True

    def __post_init__(self) -> None:
        _require(self.d_model % self.n_heads == 0,
                 f"denoiser.d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        _require(1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1,
                 f"denoiser.n_action_steps={self.n_action_steps} must be in "
                 f"[1, horizon - n_obs_steps + 1 = {self.horizon - self.n_obs_steps + 1}]")
        _require(self.n_layers >= 1, f"denoiser.n_layers={self.n_layers} must be >= 1")
        _require(self.n_obs_steps >= 1, f"denoiser.n_obs_steps={self.n_obs_steps} must be >= 1")

    @property
    def num_blocks(self) -> int:
        """3L residual sub-blocks per denoising step: the columns of a SAG mask."""
        return 3 * self.n_layers


@dataclass
class SchedulerConfig:
    """Noise schedule (training) and sampler (inference)."""

    num_train_steps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    kind: SchedulerKind = SchedulerKind.DDPM
    num_inference_steps: int = 100
    noise_scale: float = 1.0
    """DDPM's fresh noise per step is multiplied by this (1: the sampler the policy was trained for; below 1 samples
    lie closer to the modes of the action distribution, a lower sampling temperature). Sparse schedules with held
    steps spread their samples less than dense does, and on the two-task Meta-World policy closed-loop success
    follows that spread (docs/results.md, stop 42): this knob gives dense the same lever."""

    def __post_init__(self) -> None:
        self.kind = SchedulerKind(self.kind)
        _require(self.noise_scale >= 0, f"scheduler.noise_scale={self.noise_scale} must be >= 0")
        _require(self.kind is SchedulerKind.DDPM or self.noise_scale == 1.0,
                 f"scheduler.noise_scale={self.noise_scale} scales DDPM's fresh noise; DDIM (eta = 0) draws none "
                 "after the initial sample")
        _require(self.beta_schedule == "squaredcos_cap_v2",
                 f"scheduler.beta_schedule={self.beta_schedule!r}: only 'squaredcos_cap_v2' is supported")
        _require(1 <= self.num_inference_steps <= self.num_train_steps,
                 f"scheduler.num_inference_steps={self.num_inference_steps} must be in "
                 f"[1, num_train_steps={self.num_train_steps}]")
        _require(self.kind is SchedulerKind.DDIM or self.num_train_steps % self.num_inference_steps == 0,
                 "scheduler: DDPM needs num_inference_steps to divide num_train_steps")


@dataclass
class PolicyConfig:
    """Everything that defines a policy's weights and outputs; stored inside every checkpoint."""

    task: str = "pusht"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PolicyConfig":
        return from_plain(cls, data)


def to_plain(obj: Any) -> Any:
    """Dataclasses/enums/tuples -> plain YAML/JSON-friendly values."""
    if is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple):
        return [to_plain(v) for v in obj]
    return obj


def from_plain(cls: type, data: Mapping[str, Any]) -> Any:
    """Build a (nested) dataclass from a mapping, refusing unknown keys by name."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(known)}")
    hints = _nested_types(cls)
    kwargs = {}
    for name, value in data.items():
        nested = hints.get(name)
        kwargs[name] = from_plain(nested, value) if nested is not None else value
    return cls(**kwargs)


def _nested_types(cls: type) -> dict[str, type]:
    """Fields whose declared type is itself a dataclass, so nested mappings can be rebuilt."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if is_dataclass(hints[f.name])}
