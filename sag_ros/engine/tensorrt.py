"""TensorRT through torch-tensorrt's dynamo path: ``torch.export`` each unit, build an fp16 engine, save it.

:func:`export_units` is the torch-only half (what the dynamo frontend consumes) and runs anywhere.
:class:`TensorRTBackend` needs ``torch_tensorrt`` and a CUDA device; engines are serialized as
ExportedPrograms under ``cache_dir`` keyed like the ONNX artifacts, so a restart loads instead of rebuilding.

Not exercised on this project's CPU machines (TensorRT is not installable there): the compile/save/load
calls follow the torch-tensorrt 2.x documentation (``dynamo.compile(exported_program, arg_inputs=...)``,
``torch_tensorrt.save(..., output_format="exported_program")``, ``torch.export.load(...).module()``).
"""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sag_ros.engine.artifacts import ArtifactDir, key_fields
from sag_ros.engine.base import Backend, UnitFn, build_units, require
from sag_ros.policy.denoiser import TransformerDenoiser
from sag_ros.policy.encoder import ObservationEncoder

log = logging.getLogger(__name__)


def export_units(denoiser: TransformerDenoiser, batch_size: int = 1, fuse: bool = True,
                 encoder: ObservationEncoder | None = None) -> dict[str, torch.export.ExportedProgram]:
    """``torch.export.export`` of every unit (``embed``, ``layer{i}.{sa,ca,ffn}``, ``blocks``, ``output``,
    ``advance``, ``condition``, ``encoder``)."""
    return {unit.name: torch.export.export(unit.module, unit.example_inputs)
            for unit in build_units(denoiser, batch_size, fuse, encoder)}


def _fp16_settings(compile_fn: Any) -> dict[str, Any]:
    """fp16 engines across torch-tensorrt versions: autocast where it exists, else ``enabled_precisions``."""
    params = inspect.signature(compile_fn).parameters
    if "enable_autocast" in params:  # newer releases: explicit typing is the default, enabled_precisions deprecated
        return {"enable_autocast": True, "autocast_low_precision_type": torch.float16}
    return {"enabled_precisions": {torch.float16, torch.float32}}


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, denoiser: TransformerDenoiser, batch_size: int = 1, cache_dir: Path | None = None,
                 fp16: bool = True, fuse: bool = True, encoder: ObservationEncoder | None = None) -> None:
        self.trt = require("torch_tensorrt")
        super().__init__(denoiser, batch_size, fuse, encoder)
        device = denoiser.pos_emb.device
        if device.type != "cuda":
            raise ValueError(f"the tensorrt backend needs the denoiser on a CUDA device, not {device}")
        self._tmp = None if cache_dir is not None else tempfile.mkdtemp(prefix="sag_trt_")
        fields = key_fields(denoiser, batch_size, {"torch_tensorrt": self.trt.__version__},
                            {"fp16": fp16, "gpu": torch.cuda.get_device_name(device)}, encoder)
        self.artifacts = ArtifactDir(Path(cache_dir or self._tmp), self.name, fields)
        self.fp16 = fp16
        self.built: list[str] = []
        self._fns: dict[str, UnitFn] = {}
        settings = _fp16_settings(self.trt.dynamo.compile) if fp16 else {}
        missing = [unit for unit in self.units if not self.artifacts.file(unit.name, ".ep").exists()]
        for unit in tqdm(missing, desc="tensorrt: build", unit="unit", disable=not missing):
            path = self.artifacts.file(unit.name, ".ep")
            program = torch.export.export(unit.module, unit.example_inputs)
            engine = self.trt.dynamo.compile(program, arg_inputs=list(unit.example_inputs), device=device, **settings)
            tmp = path.with_suffix(".ep.tmp")
            self.trt.save(engine, str(tmp), output_format="exported_program", arg_inputs=list(unit.example_inputs))
            tmp.replace(path)
            self.built.append(unit.name)
        for unit in self.units:
            self._fns[unit.name] = torch.export.load(str(self.artifacts.file(unit.name, ".ep"))).module()
        self.artifacts.write_manifest({u.name: {"input_shapes": [list(x.shape) for x in u.example_inputs]}
                                       for u in self.units})
        log.info("tensorrt engines in %s (built %d of %d)", self.artifacts.path, len(self.built), len(self.units))
        self._bind(self._fns)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "torch_tensorrt": self.trt.__version__, "fp16": self.fp16,
                "artifact_dir": str(self.artifacts.path), "built_units": list(self.built)}

    def close(self) -> None:
        self._fns.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
