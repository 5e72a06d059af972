"""TensorRT: the torch.export half runs everywhere; engine building needs torch_tensorrt and a GPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import tiny_config
from sag_ros.engine import make_backend
from sag_ros.engine.base import build_units
from sag_ros.engine.tensorrt import export_units
from sag_ros.policy.policy import DiffusionPolicy
from test_engine_backends import RTOL, rel_err

HAS_TRT = importlib.util.find_spec("torch_tensorrt") is not None


def test_export_units_at_static_shapes(policy):
    programs = export_units(policy.denoiser, batch_size=1, encoder=policy.encoder)
    units = build_units(policy.denoiser, batch_size=1, fuse=True, encoder=policy.encoder)
    assert {"blocks", "advance", "condition", "encoder"} <= set(programs)
    assert list(programs) == [u.name for u in units]
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for unit in units:
            inputs = tuple(torch.randn(x.shape, generator=g) for x in unit.example_inputs)
            err = rel_err(programs[unit.name].module()(*inputs), unit.module(*inputs))
            assert err < RTOL, f"exported {unit.name}: relative error {err:.2e} vs eager"
    # static shapes: the exported program refuses another batch size
    with pytest.raises(AssertionError, match=r"Guard failed: .*size\(\)\[0\] == 1"):
        programs["layer0.ffn"].module()(torch.zeros(2, *units[1].example_inputs[0].shape[1:]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tensorrt backend needs a CUDA GPU")
@pytest.mark.skipif(not HAS_TRT, reason="torch_tensorrt is not installed (not installable on CPU machines)")
def test_tensorrt_backend_matches_eager_fp16(tmp_path):
    torch.manual_seed(0)
    policy = DiffusionPolicy(tiny_config()).eval().cuda()
    with make_backend("tensorrt", policy.denoiser, cache_dir=tmp_path) as backend:
        h = torch.randn(backend.units[1].example_inputs[0].shape, device="cuda")
        err = rel_err(backend.kernels.block_fns[2](h, None), policy.denoiser.block_fns()[2](h, None))
        assert err < 1e-2, f"tensorrt fp16 FFN: relative error {err:.2e} vs eager"
    with make_backend("tensorrt", policy.denoiser, cache_dir=tmp_path) as again:
        assert again.built == [], "engines were rebuilt although cached"


@pytest.mark.skipif(HAS_TRT, reason="torch_tensorrt is installed")
def test_tensorrt_backend_names_missing_package(policy):
    with pytest.raises(ImportError, match="torch_tensorrt"):
        make_backend("tensorrt", policy.denoiser)
