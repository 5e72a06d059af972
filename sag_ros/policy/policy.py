"""Diffusion Policy: normalizer + observation encoder + DP-T denoiser + noise schedule.

The model (:mod:`denoiser`) takes and returns tensors; this class owns normalization, the training loss,
the sampling loop and the slicing of the executed actions, like Diffusion Policy's policy classes.

Observation contract (raw units, batch-first, To observation steps):
- ``image``: uint8 [B, To, H, W, 3] RGB (image encoders),
- ``state``: float [B, To, state_dim] proprioception (image encoders),
- ``keypoints``: float [B, To, lowdim_dim] privileged low-dim state (``lowdim`` encoder).
Actions come back in raw units: ``action`` [B, Ta, A] is what to execute, ``action_pred`` [B, Tp, A] the
whole predicted chunk (its first To - 1 entries lie in the past).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sag_ros.policy.config import EncoderKind, PolicyConfig, SchedulerKind
from sag_ros.policy.denoiser import TransformerDenoiser
from sag_ros.policy.encoder import ObservationEncoder
from sag_ros.policy.normalizer import Normalizer
from sag_ros.policy.sampling import (BlockRunner, DenoiserKernels, dense_runner, eager_kernels, prepare_chunk,
                                    randn, reverse_diffusion)
from sag_ros.policy.scheduler import NoiseSchedule

Observation = dict[str, torch.Tensor]
ImageEncoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A compiled image encoder: (image [B, To, 3, H, W] in [0, 1], normalized state [B, To, S]) -> features."""


class DiffusionPolicy(nn.Module):
    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        enc = config.encoder
        dims = {"action": config.denoiser.action_dim}
        if enc.kind is EncoderKind.LOWDIM:
            dims["keypoints"] = enc.lowdim_dim
        else:
            dims["state"] = enc.state_dim
        self.normalizer = Normalizer.create(dims)
        self.encoder = ObservationEncoder(enc)
        self.denoiser = TransformerDenoiser(config.denoiser, enc.feature_dim)
        self.schedule = NoiseSchedule.from_config(config.scheduler)

    def use_sampler(self, kind: SchedulerKind | str, num_steps: int, noise_scale: float = 1.0) -> None:
        """Switch the inference sampler (e.g. DDIM with 10 steps, or DDPM at a lower ``noise_scale``); training
        noise is unchanged."""
        cfg = dataclasses.replace(self.config.scheduler, kind=SchedulerKind(kind), num_inference_steps=num_steps,
                                  noise_scale=noise_scale)
        self.schedule = NoiseSchedule.from_config(cfg)

    def use_noise_scale(self, noise_scale: float) -> None:
        """Keep the inference sampler and its steps, at another sampling temperature (:meth:`use_sampler`)."""
        self.use_sampler(self.schedule.kind, self.schedule.num_steps, noise_scale)

    # -- observations ------------------------------------------------------------------------------

    @property
    def obs_keys(self) -> tuple[str, ...]:
        """Observation entries this policy reads."""
        return ("keypoints",) if self.config.encoder.kind is EncoderKind.LOWDIM else ("image", "state")

    def validate_observation(self, obs: Observation) -> None:
        """Refuse wrong keys, shapes, dtypes or non-finite values with a message naming the entry."""
        enc, to = self.config.encoder, self.config.denoiser.n_obs_steps
        expected = {"keypoints": (to, enc.lowdim_dim), "state": (to, enc.state_dim),
                    "image": (to, enc.image_size, enc.image_size, 3)}
        for key in self.obs_keys:
            if key not in obs:
                raise ValueError(f"observation is missing {key!r}; this policy reads {list(self.obs_keys)}")
            value = obs[key]
            if tuple(value.shape[1:]) != expected[key]:
                raise ValueError(f"observation {key!r} has shape {tuple(value.shape)}; expected [B, {', '.join(map(str, expected[key]))}]")
            if key == "image":
                if value.dtype != torch.uint8:
                    raise ValueError(f"observation 'image' must be uint8 RGB, got {value.dtype}")
            elif not torch.isfinite(value).all():
                raise ValueError(f"observation {key!r} contains NaN or inf")

    def encode_observation(self, obs: Observation, image_encoder: ImageEncoder | None = None) -> torch.Tensor:
        """Raw observation dict -> condition features [B, To, F].

        ``image_encoder``: a backend's compiled encoder, ``(image [B, To, 3, H, W] in [0, 1], normalized state)
        -> features``, used instead of :attr:`encoder` for image policies."""
        normalized = {}
        for key in self.obs_keys:
            value = obs[key]
            if key == "image":
                normalized[key] = value.permute(0, 1, 4, 2, 3).float() / 255.0  # [B, To, 3, H, W]
            else:
                normalized[key] = self.normalizer[key].normalize(value.float())
        if image_encoder is not None and "image" in normalized:
            return image_encoder(normalized["image"], normalized["state"])
        return self.encoder(normalized)

    # -- training ------------------------------------------------------------------------------------

    def compute_loss(self, obs: Observation, action: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Epsilon-prediction MSE on a batch: obs [B, To, ...], raw action chunk [B, Tp, A]."""
        features = self.encode_observation(obs)
        target = self.normalizer["action"].normalize(action)
        noise = randn(tuple(target.shape), generator, target.device)
        source = generator.device if generator is not None else target.device
        t = torch.randint(0, self.schedule.num_train_steps, (target.shape[0],), generator=generator,
                          device=source).to(target.device)
        noisy = self.schedule.add_noise(target, noise, t)
        return F.mse_loss(self.denoiser(noisy, t, features), noise)

    # -- inference -----------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, features: torch.Tensor, generator: torch.Generator | None = None,
               run_blocks: BlockRunner | None = None, kernels: DenoiserKernels | None = None) -> torch.Tensor:
        """Reverse diffusion from features [B, To, F] -> normalized chunk [B, Tp, A].

        Dense eager blocks unless a (sparse) ``run_blocks`` strategy or compiled ``kernels`` are given.
        """
        kernels = kernels or eager_kernels(self.denoiser)
        inputs = prepare_chunk(self.denoiser, self.schedule, features, generator, kernels.observation_kv)
        return reverse_diffusion(self.schedule, inputs, kernels, run_blocks or dense_runner(kernels))

    def executed_slice(self, num_actions: int | None = None) -> slice:
        """Horizon indices of the actions that get executed: from the current observation step (To - 1) on, Ta of
        them unless ``num_actions`` says how many (at most :meth:`actions_from_now`)."""
        d = self.config.denoiser
        return slice(d.n_obs_steps - 1, d.n_obs_steps - 1 + (num_actions or d.n_action_steps))

    def actions_from_now(self) -> int:
        """How many predicted actions lie from the current observation step to the end of the horizon."""
        d = self.config.denoiser
        return d.horizon - d.n_obs_steps + 1

    def to_actions(self, normalized_chunk: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unnormalize a sampled chunk and slice the Ta actions to execute."""
        action_pred = self.normalizer["action"].unnormalize(normalized_chunk)
        return {"action": action_pred[:, self.executed_slice()], "action_pred": action_pred}

    @torch.no_grad()
    def predict_action(self, obs: Observation, generator: torch.Generator | None = None,
                       run_blocks: BlockRunner | None = None) -> dict[str, torch.Tensor]:
        """Observation -> actions to execute, dense DP-T sampling by default."""
        self.validate_observation(obs)
        return self.to_actions(self.sample(self.encode_observation(obs), generator, run_blocks))
