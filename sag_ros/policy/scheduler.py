"""DDPM / DDIM noise schedules with every per-step coefficient precomputed as a tensor.

Both samplers reduce to one update per step k (epsilon prediction, x0 clipped to [-1, 1]):

    x0   = clip(x * sqrt(1 / abar_t) - eps * sqrt(1 / abar_t - 1))
    x'   = a[k] * x0 + b[k] * x + c[k] * eps + d[k] * z_k

DDPM (posterior mean, "fixed_small" variance): a, b from the posterior, c = 0, d = sigma_t (0 at the end), times
the config's ``noise_scale`` (1 by default: the sampler as trained).
DDIM (eta = 0): a = sqrt(abar_prev), b = 0, c = sqrt(1 - abar_prev), d = 0.
The coefficients match ``diffusers`` DDPMScheduler / DDIMScheduler (tested against them), but nothing in
the hot loop calls into Python-side scheduler logic: :meth:`NoiseSchedule.step` is four fused tensor ops.
Compiled backends run the same update as data instead (:func:`reverse_update` with a step's row of
:meth:`NoiseSchedule.step_coefficients`), so one graph serves every step of either sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sag_ros.policy.config import SchedulerConfig, SchedulerKind

Array = torch.Tensor | np.ndarray
"""What the sampling loop's arrays are: tensors, or numpy arrays for kernels that run the loop on the host."""


def squared_cosine_betas(num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule ("squaredcos_cap_v2"), as float32."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float32)


STEP_COEFFICIENTS = ("x0_from_x", "x0_from_eps", "coef_x0", "coef_x", "coef_eps", "coef_noise")


def reverse_update(x: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """:meth:`NoiseSchedule.step` with the step's coefficients as a tensor [8] (``STEP_COEFFICIENTS``, then the
    clip bounds); every term is computed, so the graph is the same for DDPM and DDIM (DDIM passes zero noise).
    ``split`` rather than ``unbind``: one Split node in an exported graph instead of eight Slice/Squeeze pairs
    (at batch 1 ONNX Runtime pays per node)."""
    from_x, from_eps, c_x0, c_x, c_eps, c_noise, low, high = coefficients.split(1)
    x0 = torch.clamp(x * from_x - eps * from_eps, low, high)
    return x0 * c_x0 + x * c_x + eps * c_eps + noise * c_noise


@dataclass
class NoiseSchedule:
    """Training-time noising plus an inference sampler with K precomputed steps."""

    alphas_cumprod: torch.Tensor  # [T_train]
    timesteps: torch.Tensor  # [K] int64, descending
    x0_from_x: torch.Tensor  # [K] sqrt(1/abar_t)
    x0_from_eps: torch.Tensor  # [K] sqrt(1/abar_t - 1)
    coef_x0: torch.Tensor  # [K]
    coef_x: torch.Tensor  # [K]
    coef_eps: torch.Tensor  # [K]
    coef_noise: torch.Tensor  # [K]
    clip_sample: bool
    kind: SchedulerKind

    @classmethod
    def from_config(cls, config: SchedulerConfig) -> "NoiseSchedule":
        betas = squared_cosine_betas(config.num_train_steps)
        abar = torch.cumprod(1.0 - betas, dim=0)
        k = config.num_inference_steps
        ratio = config.num_train_steps // k
        timesteps = (torch.arange(k) * ratio).flip(0).long()
        prev = timesteps - ratio
        abar_t = abar[timesteps]
        abar_prev = torch.where(prev >= 0, abar[prev.clamp(min=0)], torch.ones(()))
        if config.kind is SchedulerKind.DDPM:
            beta_t = 1 - abar_t / abar_prev
            coef_x0 = abar_prev.sqrt() * beta_t / (1 - abar_t)
            coef_x = (1 - beta_t).sqrt() * (1 - abar_prev) / (1 - abar_t)
            variance = ((1 - abar_prev) / (1 - abar_t) * beta_t).clamp(min=1e-20)
            coef_noise = torch.where(timesteps > 0, variance.sqrt() * config.noise_scale, torch.zeros(()))
            coef_eps = torch.zeros(k)
        else:
            coef_x0 = abar_prev.sqrt()
            coef_x = torch.zeros(k)
            coef_eps = (1 - abar_prev).sqrt()
            coef_noise = torch.zeros(k)
        return cls(
            alphas_cumprod=abar, timesteps=timesteps,
            x0_from_x=(1.0 / abar_t).sqrt(), x0_from_eps=(1.0 / abar_t - 1).sqrt(),
            coef_x0=coef_x0, coef_x=coef_x, coef_eps=coef_eps, coef_noise=coef_noise,
            clip_sample=config.clip_sample, kind=config.kind)

    @property
    def needs_noise(self) -> bool:
        """DDPM draws fresh noise every step; DDIM (eta = 0) is deterministic after the initial sample."""
        return self.kind is SchedulerKind.DDPM

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def num_train_steps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x_0) for a batch of training timesteps t [B]."""
        abar = self.alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def __post_init__(self) -> None:
        # Plain floats per step, so the reverse step does no tensor indexing or host syncs.
        self._coefs = [tuple(float(getattr(self, name)[k]) for name in STEP_COEFFICIENTS)
                       for k in range(self.num_steps)]
        self._coefficient_rows: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}

    def step_coefficients(self, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """Per step k, the tensor [8] that :func:`reverse_update` takes (built once per device and dtype)."""
        rows = self._coefficient_rows.get((device, dtype))
        if rows is None:
            bound = 1.0 if self.clip_sample else math.inf
            table = torch.tensor([[*c, -bound, bound] for c in self._coefs], dtype=dtype, device=device)
            rows = self._coefficient_rows[(device, dtype)] = list(table.unbind(0))
        return rows

    def predict_x0(self, k: int, x: Array, eps: Array) -> Array:
        """The clean sample implied at step k by the noise prediction (clipped like the sampler clips it)."""
        from_x, from_eps = self._coefs[k][:2]
        x0 = x * from_x - eps * from_eps
        if not self.clip_sample:
            return x0
        return np.clip(x0, -1.0, 1.0) if isinstance(x0, np.ndarray) else x0.clamp(-1.0, 1.0)

    def update(self, k: int, x: Array, x0: Array, eps: Array | None, noise: Array | None) -> Array:
        """The reverse step at index k given both predictions, x0 (clipped) and the noise ``eps`` (read only by
        DDIM; None where the sampler does not need it); tensors or numpy arrays alike (only products and sums)."""
        _, _, c_x0, c_x, c_eps, c_noise = self._coefs[k]
        out = x0 * c_x0
        if c_x:
            out = out + x * c_x
        if c_eps:
            out = out + eps * c_eps
        if c_noise and noise is not None:
            out = out + noise * c_noise
        return out

    def step_from_x0(self, k: int, x: Array, x0: Array, noise: Array | None) -> Array:
        """One reverse step at index k that trusts a given clean-chunk prediction ``x0`` (already clipped) instead
        of a noise prediction: the update with the noise that ``x0`` implies at this step. DDPM's update reads only
        x0, x and the fresh noise (its weight on the noise prediction is 0), so this is the posterior
        q(x_{t-1} | x_t, x0)."""
        from_x, from_eps, _, _, c_eps, _ = self._coefs[k]
        return self.update(k, x, x0, (x * from_x - x0) / from_eps if c_eps else None, noise)

    def step(self, k: int, x: Array, eps: Array, noise: Array | None) -> Array:
        """One reverse step at inference index k (0 = noisiest) from the noise prediction."""
        return self.update(k, x, self.predict_x0(k, x, eps), eps, noise)
