"""Per-call cost of the units (embed, SA/CA/FFN of layer 0, output, advance, fused step) per backend, shipped size,
batch 1.

With most blocks pruned a SAG step is a handful of tiny calls, so the fixed cost of a call (guards,
binding, allocation) matters as much as the math. Run ``python -m sag_ros.engine.overhead``; it prints
medians and p95 in microseconds, one thread everywhere (torch and onnxruntime). Takes well under a minute.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
import torch

from sag_ros.engine import make_backend
from sag_ros.engine.base import Backend, MissingDependencyError, time_calls
from sag_ros.policy.config import DenoiserConfig
from sag_ros.policy.denoiser import TransformerDenoiser

UNITS = ("embed", "layer0.sa", "layer0.ca", "layer0.ffn", "output", "advance", "blocks")


def shipped_denoiser() -> TransformerDenoiser:
    cfg = DenoiserConfig(d_model=128, n_layers=8, horizon=16, n_heads=4, n_obs_steps=2)
    torch.manual_seed(0)
    return TransformerDenoiser(cfg, obs_feature_dim=66).eval()


def measure(backend: Backend, calls: int) -> dict[str, tuple[float, float]]:
    """Unit name -> (median, p95) microseconds per call on random inputs of its static shapes, each unit called as
    the sampling loop calls it (on numpy arrays where the backend's loop runs on them).

    ``blocks`` (a whole step's 3L blocks in one call) is measured only where the backend fuses.
    """
    fns = backend.loop_fns()
    out = {}
    with torch.no_grad():
        for unit in backend.units:
            if unit.name not in UNITS:
                continue
            inputs = backend.loop_inputs(*(torch.randn(x.shape) for x in unit.example_inputs))
            samples = sorted(time_calls(lambda: fns[unit.name](*inputs), calls))
            out[unit.name] = (statistics.median(samples), samples[int(0.95 * (len(samples) - 1))])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--backends", nargs="+", default=["eager", "compile", "onnxruntime", "onnxruntime-iobinding"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    denoiser = shipped_denoiser()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for label in args.backends:
            name, options = label, {}
            if label == "onnxruntime-iobinding":  # IO binding on CPU (the default there is session.run)
                name, options = "onnxruntime", {"io_binding": True}
            start = time.perf_counter()
            try:
                # warmup=False: only the measured units get called (compile builds just their graphs)
                backend = make_backend(name, denoiser, 1, Path(cache) if name == "onnxruntime" else None,
                                       warmup=False, keep_faster=False, **options)
            except MissingDependencyError as exc:
                print(f"{label}: skipped ({exc})")
                continue
            with backend:
                result = measure(backend, args.calls)
            rows.append((label, time.perf_counter() - start, result))
    print(f"\nper-call µs, batch 1, 1 thread, d_model 128, 8 layers, horizon 16, 4 heads, obs steps 2 "
          f"(median / p95 of {args.calls} calls)")
    print(f"{'backend':<22}" + "".join(f"{n.split('.')[-1].upper():>16}" for n in UNITS) + f"{'setup s':>10}")
    for label, setup, result in rows:
        cells = "".join(f"{f'{result[n][0]:.1f} / {result[n][1]:.1f}' if n in result else '-':>16}" for n in UNITS)
        print(f"{label:<22}{cells}{setup:>10.1f}")


if __name__ == "__main__":
    main()
