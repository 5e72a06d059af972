"""The reference backend: the denoiser's own eager modules, exactly what ``policy.sample`` runs by default."""

from __future__ import annotations

from sag_ros.engine.base import Backend
from sag_ros.policy.denoiser import TransformerDenoiser
from sag_ros.policy.encoder import ObservationEncoder
from sag_ros.policy.sampling import eager_kernels


class EagerBackend(Backend):
    name = "eager"

    def __init__(self, denoiser: TransformerDenoiser, batch_size: int = 1,
                 encoder: ObservationEncoder | None = None) -> None:
        super().__init__(denoiser, batch_size, encoder=encoder)
        self._bind({unit.name: unit.module for unit in self.units}, eager_kernels(denoiser))
