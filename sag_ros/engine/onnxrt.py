"""ONNX Runtime: one static-shape ONNX graph and one ``InferenceSession`` per unit.

- Graphs: the sub-blocks and the fused step are written as ONNX Runtime-native graphs with its contrib
  attention kernels (:mod:`sag_ros.engine.ort_graphs`: 5-10 nodes a block instead of 21-25, self-attention
  ~40 µs a call instead of ~70) unless TensorRT leads the providers (it has no such kernels); ``native=False``
  exports them too. Every other unit is exported: ``torch.onnx.export(dynamo=True)`` (the torch.export-based
  exporter, the default since torch 2.9). ``dynamo=False`` selects the legacy TorchScript exporter, ~10x
  faster to export and still correct for these units, but deprecated upstream.
- Files are cached under ``cache_dir`` (:mod:`sag_ros.engine.artifacts`); a second backend on the same
  weights/shapes/versions loads them without exporting (``exported`` lists what this instance exported).
- Providers: TensorRT EP, CUDA EP, CPU EP in that order, filtered by ``get_available_providers()``; the
  providers each session really got are logged and reported by :meth:`describe`.
- Threads are explicit: ``intra_op_num_threads`` (default 1: at batch 1 a single block is too small to split)
  and ``fused_threads`` for the whole-step ``blocks`` unit (default: torch's thread count, the caller's budget),
  one inter-op thread, sequential execution.
- Calls: on CUDA, IO binding on the torch tensors' memory (no host round trip). On CPU, ``session.run``
  with zero-copy numpy views: measured 59 µs vs 62 µs per FFN call for IO binding, whose per-call
  ``bind_input``/``bind_output``/``run_with_iobinding`` cost more than one small feed dict
  (``python -m sag_ros.engine.overhead``). Either way each call returns a fresh output: SAG caches keep
  deltas across steps, so output buffers are never reused.
- Loop on numpy (CPU, the default there): the sampler's kernels take and return numpy arrays
  (:attr:`DenoiserKernels.numpy_loop`), so a sparse chunk's ~500 small additions, cache sums and result wraps
  cost numpy's ~1.5 µs instead of torch's ~4; a SAG chunk (rho = 0.9) took 22 % less time (README).
- ``advance`` on a numpy loop: a numba kernel when numba is installed (:mod:`sag_ros.engine.host_advance`,
  4-6 µs a call against the 17-node graph's ~33 µs; 100 calls a chunk, dense and sparse alike).
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from sag_ros.engine.artifacts import ArtifactDir, key_fields
from sag_ros.engine import host_advance
from sag_ros.engine.base import ADVANCE, BLOCKS, Backend, Unit, UnitFn, require
from sag_ros.policy.denoiser import TransformerDenoiser
from sag_ros.policy.encoder import ObservationEncoder

log = logging.getLogger(__name__)

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
OUTPUT_NAME = "out"
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}


def export_onnx(unit: Unit, dynamo: bool = True, opset: int | None = None) -> bytes:
    """Serialized ONNX model of one unit at its example (static) shapes."""
    kwargs: dict[str, Any] = {"input_names": list(unit.input_names), "output_names": [OUTPUT_NAME],
                              "dynamo": dynamo}
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice; dynamo's tracing chatter
        if dynamo:
            program = torch.onnx.export(unit.module, unit.example_inputs, verbose=False, **kwargs)
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        torch.onnx.export(unit.module, unit.example_inputs, buffer, **kwargs)
        return buffer.getvalue()


class _BoundSession:
    """Runs one session on torch tensors via IO binding; allocates only the returned output tensor."""

    def __init__(self, session: Any, unit: Unit, device: torch.device) -> None:
        self.session = session
        self.binding = session.io_binding()
        self.input_names = unit.input_names
        self.dtype = unit.example_inputs[0].dtype
        self.np_dtype = _NUMPY_DTYPES[self.dtype]
        self.device = device
        self.device_type, self.device_id = device.type, device.index or 0
        self.output_shape = unit.output_shape

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        binding = self.binding
        for name, x in zip(self.input_names, inputs):
            if x.dtype != self.dtype or not x.is_contiguous():
                if x.dtype != self.dtype:
                    raise TypeError(f"onnxruntime unit input {name!r} is {x.dtype}; this backend was built for {self.dtype}")
                x = x.contiguous()  # kept alive by `inputs`/locals until run returns
            binding.bind_input(name, self.device_type, self.device_id, self.np_dtype, x.shape, x.data_ptr())
        out = torch.empty(self.output_shape, dtype=self.dtype, device=self.device)
        binding.bind_output(OUTPUT_NAME, self.device_type, self.device_id, self.np_dtype, self.output_shape,
                            out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out


class _FeedSession:
    """A CPU session run on numpy arrays (:meth:`arrays`, what the numpy loop calls), or on zero-copy numpy views
    of CPU tensors (``__call__``); ORT allocates the output.

    The call goes to the C++ session under ``InferenceSession.run``: the Python ``run`` re-checks on every call
    that the feed's names are the graph's, that no WebGPU graph capture is active and who owns OrtValue inputs,
    3-5 µs of a 10-70 µs call here. The feed is built from the graph's own input names and holds numpy arrays
    only, so those checks cannot fail; its only other job, retrying on a GPU provider's failure, does not apply
    on the CPU. Falls back to the public ``run`` if a future onnxruntime renames the attribute."""

    def __init__(self, session: Any, unit: Unit) -> None:
        self.session, self.input_names, self.outputs = session, unit.input_names, [OUTPUT_NAME]
        native = getattr(session, "_sess", None)
        self._run = native.run if native is not None else session.run

    def arrays(self, *inputs: np.ndarray) -> np.ndarray:
        return self._run(self.outputs, dict(zip(self.input_names, inputs)), None)[0]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.arrays(*(x.numpy() for x in inputs)))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, denoiser: TransformerDenoiser, batch_size: int = 1, cache_dir: Path | None = None,
                 providers: Sequence[str] | None = None, intra_op_num_threads: int = 1,
                 fused_threads: int | None = None, dynamo: bool = True,
                 opset: int | None = None, io_binding: bool | None = None, trt_fp16: bool = False,
                 fuse: bool = True, encoder: ObservationEncoder | None = None, native: bool | None = None,
                 numpy_loop: bool | None = None, numba_advance: bool | None = None) -> None:
        """``providers``: preference order (default TensorRT, CUDA, CPU), filtered by what is installed.

        ``cache_dir=None`` exports into a temporary folder removed by :meth:`close`.
        ``io_binding``: None = IO binding on CUDA, plain ``run`` on CPU (the faster one for each).
        ``fuse``: also export a whole step's blocks as one graph (used for steps that compute every block).
        ``native``: write the blocks as ONNX Runtime-native graphs (None: unless TensorRT is the first provider).
        ``numpy_loop``: the sampler's kernels take numpy arrays (:attr:`DenoiserKernels.numpy_loop`; None: when
        calls go through ``session.run``, i.e. without IO binding).
        ``numba_advance``: run the ``advance`` unit as a numba kernel instead of a session
        (:mod:`sag_ros.engine.host_advance`; None: when the loop runs on numpy arrays and numba is installed).
        """
        self.ort = require("onnxruntime")
        require("onnx")
        from sag_ros.engine import ort_graphs  # needs onnx: imported once it is known to be there

        if dynamo:
            require("onnxscript")
        super().__init__(denoiser, batch_size, fuse, encoder)
        self._export_options = (dynamo, opset)
        provider_names = self._provider_names(providers)
        self.native = provider_names[0] != "TensorrtExecutionProvider" if native is None else native
        self._tmp = None if cache_dir is not None else tempfile.mkdtemp(prefix="sag_onnx_")
        versions = {"onnxruntime": self.ort.__version__, "onnx": _version("onnx"),
                    "onnxscript": _version("onnxscript") if dynamo else "n/a"}
        fields = key_fields(denoiser, batch_size, versions, {"exporter": "dynamo" if dynamo else "torchscript",
                                                             "opset": opset, "native_blocks": self.native}, encoder)
        self.artifacts = ArtifactDir(Path(cache_dir or self._tmp), self.name, fields)
        self.exported: list[str] = []
        missing = [unit for unit in self.units if not self.artifacts.file(unit.name, ".onnx").exists()]
        for unit in tqdm(missing, desc="onnxruntime: export", unit="unit", disable=not missing):
            if self.native and ort_graphs.supports(unit):
                model = ort_graphs.native_model(unit).SerializeToString()
            else:
                model = export_onnx(unit, dynamo, opset)
            self.artifacts.write_bytes(self.artifacts.file(unit.name, ".onnx"), model)
            self.exported.append(unit.name)
        if self.exported or self.artifacts.read_manifest() is None:
            self.artifacts.write_manifest({u.name: {"inputs": list(u.input_names), "output": OUTPUT_NAME,
                                                     "input_shapes": [list(x.shape) for x in u.example_inputs],
                                                     "output_shape": list(u.output_shape)} for u in self.units})
        log.info("onnxruntime artifacts in %s (exported %d of %d units)", self.artifacts.path, len(self.exported),
                 len(self.units))

        self.intra_op_num_threads = intra_op_num_threads
        self.fused_threads = fused_threads or torch.get_num_threads()
        self.providers_requested = self._provider_options(provider_names, trt_fp16)
        self.io_binding = self.device.type != "cpu" if io_binding is None else io_binding
        self.numpy_loop = not self.io_binding if numpy_loop is None else numpy_loop
        if self.numpy_loop and self.io_binding:
            raise ValueError("numpy_loop runs sessions on numpy arrays; it cannot be combined with io_binding")
        self.numba_advance = self.numpy_loop and host_advance.available() if numba_advance is None else numba_advance
        if self.numba_advance and not self.numpy_loop:
            raise ValueError("numba_advance runs on numpy arrays; it needs the numpy loop (no io_binding)")
        self.sessions: dict[str, Any] = {}
        self._fns: dict[str, UnitFn] = {}
        for unit in self.units:
            if unit.name == ADVANCE and self.numba_advance:
                self._fns[unit.name] = host_advance.NumbaAdvance.from_unit(unit.module)
                continue
            threads = self.fused_threads if unit.name == BLOCKS else self.intra_op_num_threads
            session = self.ort.InferenceSession(str(self.artifacts.file(unit.name, ".onnx")),
                                                sess_options=self._session_options(threads),
                                                providers=self.providers_requested)
            log.debug("onnxruntime unit %s runs on %s", unit.name, session.get_providers())
            self.sessions[unit.name] = session
            if self.io_binding:
                self._fns[unit.name] = _BoundSession(session, unit, self.device)
            elif self.device.type == "cpu":
                self._fns[unit.name] = _FeedSession(session, unit)
            else:
                raise ValueError("io_binding=False is only supported on CPU")
        used = sorted({p for s in self.sessions.values() for p in s.get_providers()})
        log.info("onnxruntime %s sessions use providers %s", len(self.sessions), used)
        self._bind(self._fns)

    def _provider_names(self, preference: Sequence[str] | None) -> list[str]:
        available = set(self.ort.get_available_providers())
        wanted = [p for p in (preference or PROVIDER_PREFERENCE) if p in available]
        if self.device.type == "cuda":
            wanted = [p for p in wanted if p != "CPUExecutionProvider"] + ["CPUExecutionProvider"]
            if wanted[0] == "CPUExecutionProvider":
                raise ValueError(f"the denoiser is on {self.device} but onnxruntime offers only {sorted(available)}: "
                                 "install onnxruntime-gpu or move the denoiser to the CPU")
        elif self.device.type != "cpu":
            raise ValueError(f"onnxruntime backend supports cpu and cuda denoisers, not {self.device}")
        else:
            wanted = ["CPUExecutionProvider"]  # CPU tensors: a GPU provider would copy every call
        if not wanted:
            raise ValueError(f"none of the providers {list(preference or PROVIDER_PREFERENCE)} is available "
                             f"(available: {sorted(available)})")
        return wanted

    def _provider_options(self, wanted: Sequence[str], trt_fp16: bool) -> list[Any]:
        device_id = self.device.index or 0
        options = {
            "TensorrtExecutionProvider": {"device_id": device_id, "trt_fp16_enable": trt_fp16,
                                          "trt_engine_cache_enable": True,
                                          "trt_engine_cache_path": str(self.artifacts.path / "trt")},
            "CUDAExecutionProvider": {"device_id": device_id},
        }
        return [(p, options[p]) if p in options else p for p in wanted]

    def _session_options(self, threads: int) -> Any:
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Without its per-session memory arena a session's intermediates come from malloc, whose recently freed
        # blocks are shared by all ~30 sessions and still in cache; each arena's own blocks are cold by the time
        # a SAG chunk calls that block again. Measured side by side: a SAG chunk 0.5 ms (3 %) faster, dense not slower.
        so.enable_cpu_mem_arena = False
        so.log_severity_level = 3  # warnings from every one of the 3L+2 sessions drown the real ones
        return so

    def describe(self) -> dict[str, Any]:
        providers = {name: s.get_providers()[0] for name, s in self.sessions.items()}
        return {**super().describe(), "onnxruntime": self.ort.__version__,
                "providers_available": self.ort.get_available_providers(),
                "providers_requested": [p if isinstance(p, str) else p[0] for p in self.providers_requested],
                "providers_used": sorted(set(providers.values())), "provider_per_unit": providers,
                "intra_op_num_threads": self.intra_op_num_threads, "fused_threads": self.fused_threads if self.fuse else None,
                "io_binding": self.io_binding, "numpy_loop": self.numpy_loop, "native_blocks": self.native,
                "advance": "numba" if self.numba_advance else "onnxruntime",
                "artifact_dir": str(self.artifacts.path),
                "artifact_key": self.artifacts.key, "exported_units": list(self.exported)}

    def close(self) -> None:
        self._fns.clear()
        self.sessions.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _version(module: str) -> str:
    try:
        return require(module).__version__
    except ImportError:
        return "absent"
