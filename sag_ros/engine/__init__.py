"""Inference backends for the denoiser's units: one interface, chosen by name at start.

    backend = make_backend("onnxruntime", policy.denoiser, batch_size=1, cache_dir=Path("~/.cache/sag"))
    chunk = policy.sample(features, generator, kernels=backend.kernels)

Names: ``eager`` (reference), ``compile`` (torch.compile/inductor), ``onnxruntime``, ``tensorrt``
(torch-tensorrt). Optional libraries are imported only when their backend is chosen.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from sag_ros.engine.base import Backend, MissingDependencyError, stop_progress_monitor
from sag_ros.policy.denoiser import TransformerDenoiser
from sag_ros.policy.encoder import ObservationEncoder

# name -> (module, class); modules are imported on demand so optional libraries stay optional
BACKENDS: dict[str, tuple[str, str]] = {
    "eager": ("sag_ros.engine.eager", "EagerBackend"),
    "compile": ("sag_ros.engine.compiled", "CompiledBackend"),
    "onnxruntime": ("sag_ros.engine.onnxrt", "OnnxRuntimeBackend"),
    "tensorrt": ("sag_ros.engine.tensorrt", "TensorRTBackend"),
}
_USES_CACHE = {"onnxruntime", "tensorrt"}


def make_backend(name: str, denoiser: TransformerDenoiser, batch_size: int = 1, cache_dir: Path | None = None,
                 warmup: bool = True, keep_faster: bool = True, encoder: ObservationEncoder | None = None,
                 **options: Any) -> Backend:
    """Build backend ``name`` for ``denoiser`` (eval mode) at a fixed batch size, warmed up unless told not to.

    ``keep_faster`` (CPU denoisers): unit groups whose compiled call is slower than eager run eager
    (:meth:`Backend.keep_faster_units`; about a second at start).

    ``encoder``: the policy's observation encoder, compiled too (:attr:`Backend.encode`).
    ``cache_dir`` holds exported artifacts (onnxruntime, tensorrt; ``None`` = a temporary folder removed on
    ``close``); ``compile`` ignores it and relies on inductor's own on-disk cache.
    ``options`` go to the backend class (e.g. ``intra_op_num_threads`` for onnxruntime, ``mode`` for compile).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown inference backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name]
    backend_cls = getattr(importlib.import_module(module), cls)
    if name in _USES_CACHE:
        options["cache_dir"] = Path(cache_dir).expanduser() if cache_dir is not None else None
    backend = backend_cls(denoiser, batch_size, encoder=encoder, **options)
    if warmup:
        backend.warmup()
    if keep_faster and name != "eager" and backend.device.type == "cpu":
        backend.keep_faster_units()
    stop_progress_monitor()  # the builds' progress bars (ours, torch's exporters) started tqdm's monitor thread
    return backend


__all__ = ["BACKENDS", "Backend", "MissingDependencyError", "make_backend"]
