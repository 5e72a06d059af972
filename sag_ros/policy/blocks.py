"""The three residual sub-blocks of a DP-T decoder layer, each a module that returns its residual delta.

A norm-first ``nn.TransformerDecoderLayer`` computes ``x + SA(x)``, ``x + CA(x, memory)``, ``x + FFN(x)``.
SAG gates each of those three deltas per denoising step, so each is its own module and returns only the
delta; the caller adds it (or a cached delta) to the residual stream. Weights are laid out like
``nn.MultiheadAttention`` so a decoder layer's weights load one to one (tested).

Cross-attention keys/values depend only on the condition memory, which is fixed within a denoising
step, so :meth:`CrossAttentionBlock.project_memory` runs once per (step, layer) outside the block and
the block itself does the query side only.
"""

from __future__ import annotations

from enum import IntEnum

import torch
import torch.nn.functional as F
from torch import nn


class BlockKind(IntEnum):
    """Block types in their order inside a layer; the index is the column offset within a layer."""

    SA = 0
    CA = 1
    FFN = 2


def _split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)  # (B, nh, T, hs)


def _dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout that costs nothing at inference (p = 0), where every microsecond per block call counts."""
    return F.dropout(x, p, True) if p > 0 else x


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, nh, t, hs = x.shape
    return x.transpose(1, 2).reshape(b, t, nh * hs)  # (B, T, d)


class SelfAttentionBlock(nn.Module):
    """LayerNorm -> causal multi-head self-attention over the action tokens -> dropout."""

    kind = BlockKind.SA

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self.in_proj(self.norm(x)).chunk(3, dim=-1)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            _split_heads(q, self.n_heads), _split_heads(k, self.n_heads), _split_heads(v, self.n_heads),
            attn_mask=attn_mask, dropout_p=p)
        return _dropout(self.out_proj(_merge_heads(out)), p)


class CrossAttentionBlock(nn.Module):
    """LayerNorm -> attention from action tokens to the condition tokens -> dropout."""

    kind = BlockKind.CA

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        """Condition tokens (B, S, d) -> stacked per-head keys and values (2, B, nh, S, hs)."""
        k, v = self.kv_proj(memory).chunk(2, dim=-1)
        return torch.stack((_split_heads(k, self.n_heads), _split_heads(v, self.n_heads)))

    def forward(self, x: torch.Tensor, memory_kv: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        q = _split_heads(self.q_proj(self.norm(x)), self.n_heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, memory_kv[0], memory_kv[1], attn_mask=attn_mask, dropout_p=p)
        return _dropout(self.out_proj(_merge_heads(out)), p)


class FeedForwardBlock(nn.Module):
    """LayerNorm -> Linear(4d) -> GELU -> Linear(d) -> dropout."""

    kind = BlockKind.FFN

    def __init__(self, d_model: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, mult * d_model)
        self.linear2 = nn.Linear(mult * d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        return _dropout(self.linear2(_dropout(F.gelu(self.linear1(self.norm(x))), p)), p)


class DecoderLayer(nn.Module):
    """One norm-first decoder layer = SA, CA, FFN sub-blocks applied in order with residual adds."""

    def __init__(self, d_model: int, n_heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = SelfAttentionBlock(d_model, n_heads, dropout)
        self.cross_attn = CrossAttentionBlock(d_model, n_heads, dropout)
        self.ffn = FeedForwardBlock(d_model, ffn_mult, dropout)

    def forward(self, x: torch.Tensor, memory_kv: torch.Tensor, self_mask: torch.Tensor | None,
                memory_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(x, self_mask)
        x = x + self.cross_attn(x, memory_kv, memory_mask)
        return x + self.ffn(x)

    @torch.no_grad()
    def load_from_torch_layer(self, layer: nn.TransformerDecoderLayer) -> None:
        """Copy the weights of a norm-first ``nn.TransformerDecoderLayer`` (used by the tests)."""
        d = self.self_attn.out_proj.in_features
        self.self_attn.norm.load_state_dict(layer.norm1.state_dict())
        self.self_attn.in_proj.weight.copy_(layer.self_attn.in_proj_weight)
        self.self_attn.in_proj.bias.copy_(layer.self_attn.in_proj_bias)
        self.self_attn.out_proj.load_state_dict(layer.self_attn.out_proj.state_dict())
        ca = layer.multihead_attn
        self.cross_attn.norm.load_state_dict(layer.norm2.state_dict())
        self.cross_attn.q_proj.weight.copy_(ca.in_proj_weight[:d])
        self.cross_attn.q_proj.bias.copy_(ca.in_proj_bias[:d])
        self.cross_attn.kv_proj.weight.copy_(ca.in_proj_weight[d:])
        self.cross_attn.kv_proj.bias.copy_(ca.in_proj_bias[d:])
        self.cross_attn.out_proj.load_state_dict(ca.out_proj.state_dict())
        self.ffn.norm.load_state_dict(layer.norm3.state_dict())
        self.ffn.linear1.load_state_dict(layer.linear1.state_dict())
        self.ffn.linear2.load_state_dict(layer.linear2.state_dict())
