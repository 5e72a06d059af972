"""The torch device a training run asks for, checked before any data is loaded or rendered.

Training defaults to the CPU (what every machine has); ``cuda`` or ``cuda:N`` trains on a GPU when torch sees one.
A device that cannot be used is refused with a ``ValueError`` naming why, rather than failing minutes later at the
first tensor moved to it.
"""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``'cpu'``, ``'cuda'`` or ``'cuda:N'`` -> a usable :class:`torch.device`."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {name!r}: training runs on 'cpu' or 'cuda[:N]'")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch {torch.__version__} sees no CUDA device "
                         f"(a CPU build of torch, or no GPU driver); train with --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """An observation batch (name -> tensor), drawn on the CPU, on ``device``."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
