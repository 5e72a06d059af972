"""On-disk cache of exported units, keyed by everything that changes what an export contains.

A key hashes the denoiser's weights and buffers, its config, the batch size, dtype, device type and the
library versions (torch, the exporter, the runtime), so a retrained checkpoint or an upgrade never loads a
stale file. Files are written atomically (temp file + rename); a ``manifest.json`` beside them records what
the key was made of, so an artifact folder can be inspected on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from sag_ros.policy.config import to_plain

FORMAT_VERSION = 4  # bump when the unit wrappers or the export recipe change
MANIFEST = "manifest.json"


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (persistent or not): name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def key_fields(denoiser: nn.Module, batch_size: int, versions: Mapping[str, str],
               extra: Mapping[str, Any] | None = None, encoder: nn.Module | None = None) -> dict[str, Any]:
    """Everything an exported unit depends on, as plain JSON values (the encoder's too, when it is compiled)."""
    param = next(denoiser.parameters())
    return {
        "format": FORMAT_VERSION,
        "weights": weights_digest(denoiser),
        "config": to_plain(getattr(denoiser, "config", None)),
        "encoder": None if encoder is None else {"weights": weights_digest(encoder),
                                                 "config": to_plain(getattr(encoder, "config", None))},
        "batch_size": batch_size,
        "dtype": str(param.dtype),
        "device": param.device.type,
        "versions": {"torch": torch.__version__, **versions},
        **(extra or {}),
    }


def default_cache_dir(model_path: Path) -> Path:
    """Where a model's exported units go when no folder is given: ``<model>.engines/`` beside the checkpoint,
    unless that place is read-only (a package installed under /opt/ros, a read-only container image), then
    ``$XDG_CACHE_HOME/sag_ros/<model>.engines/`` (default ``~/.cache``): a node with a compiled backend must
    still start there. Entries are keyed by the weights, so one user cache safely serves several installs."""
    beside = Path(model_path).with_suffix(".engines")
    if os.access(beside if beside.exists() else beside.parent, os.W_OK):
        return beside
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return user_cache / "sag_ros" / beside.name


def cache_key(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


class ArtifactDir:
    """One cache entry: ``<root>/<backend>-<key>/`` holding one file per unit and the manifest."""

    def __init__(self, root: Path, backend: str, fields: Mapping[str, Any]) -> None:
        self.fields = dict(fields)
        self.key = cache_key(fields)
        self.path = Path(root) / f"{backend}-{self.key}"
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, unit_name: str, suffix: str) -> Path:
        return self.path / f"{unit_name}{suffix}"

    def write_bytes(self, target: Path, data: bytes) -> None:
        """Atomic write: readers never see a half-written file, concurrent writers both succeed."""
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_manifest(self, units: Mapping[str, Any]) -> None:
        manifest = {"key": self.key, "fields": self.fields, "units": dict(units)}
        self.write_bytes(self.path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.path / MANIFEST
        return json.loads(path.read_text()) if path.exists() else None
