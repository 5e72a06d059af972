"""Min-max normalization to [-1, 1], fitted on the data set and saved inside the checkpoint.

A module with buffers rather than a dict of numbers: ``state_dict`` carries the statistics, so a
checkpoint can never be paired with the wrong normalization.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

_MIN_RANGE = 1e-4  # a (near-)constant dimension is centred, not blown up


class RangeNormalizer(nn.Module):
    """Maps one named quantity (actions, proprioception, keypoints) between data units and [-1, 1]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("offset", torch.zeros(dim))

    @torch.no_grad()
    def fit(self, data: np.ndarray | torch.Tensor) -> "RangeNormalizer":
        data = torch.as_tensor(np.asarray(data), dtype=torch.float32).reshape(-1, self.scale.shape[0])
        lo, hi = data.min(dim=0).values, data.max(dim=0).values
        span = hi - lo
        constant = span < _MIN_RANGE
        scale = torch.where(constant, torch.ones_like(span), 2.0 / span.clamp(min=_MIN_RANGE))
        offset = torch.where(constant, -lo, -1.0 - lo * scale)
        self.scale.copy_(scale)
        self.offset.copy_(offset)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.offset) / self.scale


class Normalizer(nn.ModuleDict):
    """A named set of :class:`RangeNormalizer` (e.g. ``action``, ``state``, ``keypoints``)."""

    @classmethod
    def create(cls, dims: Mapping[str, int]) -> "Normalizer":
        return cls({name: RangeNormalizer(dim) for name, dim in dims.items()})

    def fit(self, data: Mapping[str, np.ndarray]) -> "Normalizer":
        for name, norm in self.items():
            norm.fit(data[name])
        return self
