"""ONNX Runtime-native graphs for the decoder's sub-blocks, a whole step of them (the ``blocks`` unit) and ``advance``.

At batch 1 ONNX Runtime's CPU cost is per graph node (~1.5-2 µs each), not per FLOP. The exporters write a
self-attention block as ~22 nodes (head reshapes and transposes, the boolean mask's IsNaN/Where guard,
3-D MatMul + Add projections) that ran ~70 µs a call here. Written with ONNX Runtime's contrib kernels,
``com.microsoft.Attention`` (QKV projection and masked attention in one node) for self-attention and
``com.microsoft.MultiHeadAttention`` on the precomputed per-head keys/values for cross-attention, and 2-D
``Gemm`` projections, a block is 5-10 nodes and a self-attention call ~40 µs. The graphs are built from the
same weights and implement the same functions (tested against eager); the boolean masks become additive
biases (0 or the dtype's lowest value, so a masked score's softmax weight is exactly 0 as in SDPA).

``advance`` (head, scheduler update, embedding; 100 calls a chunk) is 17 nodes instead of the exporter's 22: the
update's four weighted terms as one MatMul, the embedding's bias and positional embedding as one Gemm constant
(33 against 40 µs a call, loaded machine).

The CPU and CUDA execution providers implement these contrib ops; the TensorRT provider does not, so the
onnxruntime backend exports units with ``torch.onnx`` when TensorRT leads its provider list.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from onnx import ModelProto, TensorProto, helper, numpy_helper
from torch import nn

from sag_ros.engine.base import ADVANCE, BLOCKS, Unit
from sag_ros.policy.blocks import BlockKind
from sag_ros.policy.scheduler import STEP_COEFFICIENTS

OPSETS = (helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1))
ELEMENT_TYPES = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16}


def supports(unit: Unit) -> bool:
    """Whether :func:`native_model` writes this unit (sub-blocks, the fused step, advance; others are exported)."""
    return unit.kind is not None or unit.name in (BLOCKS, ADVANCE)


class _GraphBuilder:
    """Nodes and initializers of one graph; every tensor gets a fresh name."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.nodes: list = []
        self.initializers: list[TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: torch.Tensor | np.ndarray, hint: str = "c") -> str:
        array = value.detach().cpu().to(self.dtype).numpy() if isinstance(value, torch.Tensor) else value
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d scalars
        return name

    def shape(self, dims: Sequence[int]) -> str:
        return self.const(np.array(dims, dtype=np.int64), "shape")

    def op(self, op_type: str, inputs: Sequence[str], output: str | None = None, domain: str = "",
           **attributes: object) -> str:
        output = output or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], domain=domain or None, **attributes))
        return output

    def split(self, x: str, sizes: Sequence[int]) -> list[str]:
        """x cut along its first axis into pieces of ``sizes``."""
        outputs = [self._name("part") for _ in sizes]
        self.nodes.append(helper.make_node("Split", [x, self.const(np.array(sizes, dtype=np.int64), "sizes")], outputs))
        return outputs

    def take(self, x: str, index: int) -> str:
        """x[index] along the first axis (which the result drops)."""
        return self.op("Gather", [x, self.const(np.array(index, dtype=np.int64), "index")], axis=0)

    def layer_norm(self, x: str, norm: nn.LayerNorm) -> str:
        return self.op("LayerNormalization", [x, self.const(norm.weight), self.const(norm.bias)], axis=-1,
                       epsilon=norm.eps)

    def linear(self, x2d: str, linear: nn.Linear) -> str:
        """y = x W^T + b on a 2-D input (Gemm: one node, faster here than 3-D MatMul + Add)."""
        return self.op("Gemm", [x2d, self.const(linear.weight), self.const(linear.bias)], transB=1)

    def attention_bias(self, mask: torch.Tensor | None) -> str:
        """Boolean may-attend mask [T, S] -> additive bias [1, 1, T, S]; '' (input omitted) when unmasked."""
        if mask is None:
            return ""
        bias = torch.zeros(mask.shape, dtype=self.dtype).masked_fill(~mask, torch.finfo(self.dtype).min)
        return self.const(bias[None, None], "attn_bias")


class _BlockWriter:
    """Writes sub-blocks as (h [B, T, d] -> delta [B, T, d]) pieces of a graph under construction."""

    def __init__(self, g: _GraphBuilder, batch: int, horizon: int, d_model: int) -> None:
        self.g = g
        self.flat = g.shape([batch * horizon, d_model])
        self.tokens = g.shape([batch, horizon, d_model])

    def self_attention(self, h: str, unit: nn.Module) -> str:
        block, g = unit.block, self.g
        attended = g.op("Attention", [g.layer_norm(h, block.norm), g.const(block.in_proj.weight.T),
                                      g.const(block.in_proj.bias), "", "", g.attention_bias(unit.mask)],
                        domain="com.microsoft", num_heads=block.n_heads)
        return self._project_out(attended, block.out_proj)

    def cross_attention(self, h: str, key: str, value: str, unit: nn.Module) -> str:
        """``key``/``value``: per-head [B, nh, S, hs], as the condition path computes them."""
        block, g = unit.block, self.g
        query = g.op("Reshape", [g.linear(g.op("Reshape", [g.layer_norm(h, block.norm), self.flat]), block.q_proj),
                                 self.tokens])
        attended = g.op("MultiHeadAttention", [query, key, value, "", "", g.attention_bias(unit.mask)],
                        domain="com.microsoft", num_heads=block.n_heads)
        return self._project_out(attended, block.out_proj)

    def feed_forward(self, h: str, unit: nn.Module) -> str:
        block, g = unit.block, self.g
        hidden = g.linear(g.layer_norm(g.op("Reshape", [h, self.flat]), block.norm), block.linear1)
        out = g.linear(g.op("Gelu", [hidden], domain="com.microsoft"), block.linear2)  # exact (erf) GELU
        return g.op("Reshape", [out, self.tokens])

    def _project_out(self, attended: str, out_proj: nn.Linear) -> str:
        g = self.g
        return g.op("Reshape", [g.linear(g.op("Reshape", [attended, self.flat]), out_proj), self.tokens])

    def block(self, h: str, unit: nn.Module, kind: BlockKind, kv_pair: tuple[str, str] | None) -> str:
        if kind is BlockKind.SA:
            return self.self_attention(h, unit)
        if kind is BlockKind.CA:
            assert kv_pair is not None
            return self.cross_attention(h, *kv_pair, unit)
        return self.feed_forward(h, unit)


def native_model(unit: Unit) -> ModelProto:
    """The unit as an ONNX Runtime-native graph: same inputs and output (``out``) as its export."""
    if not supports(unit):
        raise ValueError(f"unit {unit.name!r} has no native graph; export it with torch.onnx")
    h_example = unit.example_inputs[0]
    batch, horizon, d_model = h_example.shape
    g = _GraphBuilder(h_example.dtype)
    writer = _BlockWriter(g, batch, horizon, d_model)
    elem = ELEMENT_TYPES[h_example.dtype]
    inputs = [helper.make_tensor_value_info(name, elem, list(x.shape))
              for name, x in zip(unit.input_names, unit.example_inputs)]
    if unit.name == BLOCKS:
        _write_step(g, writer, unit)
    elif unit.name == ADVANCE:
        _write_advance(g, unit)
    else:
        kv_pair = None
        if unit.kind is BlockKind.CA:
            kv_pair = (g.take("kv", 0), g.take("kv", 1))
        writer.block("h", unit.module, unit.kind, kv_pair)
        g.nodes[-1].output[0] = "out"  # the block's last node computes the delta: name it the graph output
    graph = helper.make_graph(g.nodes, unit.name, inputs,
                              [helper.make_tensor_value_info("out", elem, list(unit.output_shape))], g.initializers)
    # the lowest IR version these opsets allow, not the installed onnx's newest: an older onnxruntime refuses a
    # newer IR (onnx 1.23 writes 14, onnxruntime 1.30 reads up to 13: seen on the GPU machine)
    return helper.make_model(graph, opset_imports=list(OPSETS),
                             ir_version=helper.find_min_ir_version_for(list(OPSETS), ignore_unknown=True))


def _write_step(g: _GraphBuilder, writer: _BlockWriter, unit: Unit) -> None:
    """Every sub-block in order with residual adds; out = stack(final h, delta_0, ..., delta_{3L-1})."""
    kv = unit.example_inputs[1]  # [L, 2, B, nh, S, hs]
    pairs = g.op("Reshape", ["kv", g.shape([2 * kv.shape[0], *kv.shape[2:]])])  # [2L, B, nh, S, hs]
    h, deltas = "h", []
    for j, (module, kind) in enumerate(zip(unit.module.blocks, unit.module.kinds)):
        kv_pair = None
        if kind is BlockKind.CA:
            kv_pair = (g.take(pairs, 2 * (j // 3)), g.take(pairs, 2 * (j // 3) + 1))  # layer j // 3: keys, values
        delta = writer.block(h, module, kind, kv_pair)
        deltas.append(delta)
        h = g.op("Add", [h, delta])
    stacked = g.op("Concat", [h, *deltas], axis=0)  # [(1 + 3L) B, T, d]
    g.op("Reshape", [stacked, g.shape(unit.output_shape)], "out")


def _write_advance(g: _GraphBuilder, unit: Unit) -> None:
    """out = concat(embed(x').flatten(), x'.flatten()), x' = reverse_update(x, output(h), noise, coefficients)."""
    h, x, _, _ = unit.example_inputs
    (b, t, d), a = h.shape, x.shape[-1]
    embed, output = unit.module.embed, unit.module.output
    eps = g.op("Gemm", [g.layer_norm(g.op("Reshape", ["h", g.shape([b * t, d])]), output.ln_f),
                        g.const(output.head.weight), g.const(output.head.bias)], transB=1)
    eps = g.op("Reshape", [eps, g.shape([b, t, a])])
    assert len(STEP_COEFFICIENTS) == 6, "the split below follows reverse_update's coefficient layout"
    from_x, from_eps, weights, low, high = g.split("coefficients", [1, 1, 4, 1, 1])  # weights of the 4 terms
    x0 = g.op("Sub", [g.op("Mul", ["x", from_x]), g.op("Mul", [eps, from_eps])])
    x0 = g.op("Min", [g.op("Max", [x0, low]), high])  # torch.clamp's order
    terms = g.op("Reshape", [g.op("Concat", [x0, "x", eps, "noise"], axis=0), g.shape([4, b * t * a])])
    x_next = g.op("MatMul", [weights, terms])  # [B*T*A]: x0*c_x0 + x*c_x + eps*c_eps + noise*c_noise
    bias = (embed.input_emb.bias + embed.pos_emb).expand(b, t, d).reshape(b * t, d)
    h_next = g.op("Gemm", [g.op("Reshape", [x_next, g.shape([b * t, a])]), g.const(embed.input_emb.weight),
                           g.const(bias)], transB=1)
    g.op("Concat", [g.op("Reshape", [h_next, g.shape([-1])]), x_next], "out", axis=0)
