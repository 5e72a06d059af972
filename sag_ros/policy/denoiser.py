"""DP-T noise-prediction transformer (Chi et al. 2023), split into the pieces a sparse sampler drives.

Tensors in, tensors out; no normalizer, no scheduler. The forward pass is

    memory = condition(timestep, obs_features)         # [step token, one token per obs step] -> MLP
    h = embed(noisy_action)                            # action tokens + learned positions
    for each of the 3L sub-blocks: h = h + block(h)    # SA, CA, FFN of layer 0, then layer 1, ...
    eps = head(h)                                      # LayerNorm + Linear

The condition encoder is a per-token MLP, so a memory token depends on its own input only: the step token's
cross-attention keys/values depend on the diffusion step alone (the same for every chunk) and the observation
tokens' on the observation alone (the same for every step). :meth:`chunk_memory_kv` uses that: per chunk it
encodes To tokens, not K x (1 + To), and takes the step tokens' keys/values from a cache.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from sag_ros.policy.blocks import DecoderLayer
from sag_ros.policy.config import DenoiserConfig

BlockFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Uniform block signature ``(h, memory_kv_of_its_layer) -> residual delta`` used by samplers/backends."""


def sinusoidal_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal embedding of (possibly fractional) positions: [N] -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=positions.device) / (half - 1))
    angles = positions.float()[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


def causal_masks(horizon: int, n_cond_tokens: int, causal: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Boolean attention masks (True = may attend) of DP-T.

    Self-attention: action token t sees tokens <= t. Cross-attention: token t sees condition token s
    when t >= s - 1; token 0 of the memory is the diffusion-step token, so every action token sees it.
    """
    if not causal:
        return None, None
    t = torch.arange(horizon)
    self_mask = t[:, None] >= t[None, :]
    s = torch.arange(n_cond_tokens)
    memory_mask = t[:, None] >= (s[None, :] - 1)
    return self_mask, memory_mask


class TransformerDenoiser(nn.Module):
    """Predicts the noise of an action chunk given a diffusion step and observation features."""

    def __init__(self, config: DenoiserConfig, obs_feature_dim: int) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        n_cond = 1 + config.n_obs_steps
        self.input_emb = nn.Linear(config.action_dim, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.horizon, d))
        self.cond_obs_emb = nn.Linear(obs_feature_dim, d)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, n_cond, d))
        self.cond_encoder = nn.Sequential(nn.Linear(d, 4 * d), nn.Mish(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(config.p_drop_emb)
        self.layers = nn.ModuleList(
            DecoderLayer(d, config.n_heads, config.ffn_mult, config.p_drop_attn) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.action_dim)
        self_mask, memory_mask = causal_masks(config.horizon, n_cond, config.causal_attn)
        self.register_buffer("self_mask", self_mask, persistent=False)
        self.register_buffer("memory_mask", memory_mask, persistent=False)
        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)
        self._step_kv_cache: dict[tuple, torch.Tensor] = {}
        self._step_kv_params = self._step_path_parameters()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # -- the pieces a sampler drives -------------------------------------------------------------

    def condition(self, timesteps: torch.Tensor, obs_features: torch.Tensor) -> torch.Tensor:
        """Condition tokens, one diffusion step per row: timesteps [N], features [N, To, F] -> [N, 1+To, d]."""
        step_tok = sinusoidal_embedding(timesteps, self.config.d_model)[:, None, :]
        tokens = torch.cat((step_tok, self.cond_obs_emb(obs_features)), dim=1) + self.cond_pos_emb
        return self.cond_encoder(self.drop(tokens))

    def memory_kv(self, memory: torch.Tensor) -> torch.Tensor:
        """Cross-attention keys/values of every layer: memory [N, S, d] -> [L, 2, N, nh, S, hs]."""
        return torch.stack([layer.cross_attn.project_memory(memory) for layer in self.layers])

    def step_memory_kv(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Keys/values of the diffusion-step token of each step: [K] -> [L, 2, K, nh, 1, hs].

        Observation-independent, so in eval mode it is cached per (steps, device, dtype, weight versions): an
        in-place change of the weights (load_state_dict, an EMA update) bumps their versions and misses the cache.
        """
        key = (tuple(timesteps.tolist()), timesteps.device, self.cond_pos_emb.dtype,
               tuple(p._version for p in self._step_kv_params))
        if not self.training and key in self._step_kv_cache:
            return self._step_kv_cache[key]
        token = sinusoidal_embedding(timesteps, self.config.d_model)[:, None, :] + self.cond_pos_emb[:, :1]
        kv = self.memory_kv(self.cond_encoder(self.drop(token.to(self.cond_pos_emb.dtype))))
        if not self.training:
            self._step_kv_cache = {key: kv.detach()}  # one sampler at a time: keep the latest only
        return kv

    def observation_kv(self, obs_features: torch.Tensor) -> torch.Tensor:
        """Keys/values of the To observation tokens in every layer: [B, To, F] -> [L, 2, B, nh, To, hs]."""
        obs_tokens = self.cond_obs_emb(obs_features) + self.cond_pos_emb[:, 1:]
        return self.memory_kv(self.cond_encoder(self.drop(obs_tokens)))

    def chunk_memory_kv(self, timesteps: torch.Tensor, obs_kv: torch.Tensor) -> torch.Tensor:
        """Keys/values of every step and layer for one chunk: [K], :meth:`observation_kv` ->
        [K, L, 2, B, nh, 1 + To, hs].

        Equals ``memory_kv(condition(steps, features))`` over all (step, sample) pairs, at the cost of To tokens.
        """
        step_kv = self.step_memory_kv(timesteps)  # [L, 2, K, nh, 1, hs]
        k, b = step_kv.shape[2], obs_kv.shape[2]
        step_part = step_kv.permute(2, 0, 1, 3, 4, 5)[:, :, :, None].expand(-1, -1, -1, b, -1, -1, -1)
        obs_part = obs_kv[None].expand(k, *obs_kv.shape)
        return torch.cat((step_part, obs_part), dim=-2)

    def _step_path_parameters(self) -> tuple[nn.Parameter, ...]:
        """What the step tokens' keys/values depend on; listed once, since walking the modules for them took half
        of a :meth:`step_memory_kv` cache hit (85 µs)."""
        return (self.cond_pos_emb, *self.cond_encoder.parameters(),
                *(p for layer in self.layers for p in layer.cross_attn.kv_proj.parameters()))

    def _apply(self, fn, recurse=True):  # .to()/.half(): cached keys/values must follow the weights
        self._step_kv_cache = {}
        module = super()._apply(fn, recurse)
        self._step_kv_params = self._step_path_parameters()  # a conversion may swap the parameter objects
        return module

    def embed(self, noisy_action: torch.Tensor) -> torch.Tensor:
        """Noisy action chunk [B, Tp, A] -> action tokens [B, Tp, d]."""
        return self.drop(self.input_emb(noisy_action) + self.pos_emb)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """Residual stream [B, Tp, d] -> predicted noise [B, Tp, A]."""
        return self.head(self.ln_f(h))

    def block_fns(self) -> list[BlockFn]:
        """The 3L sub-blocks in execution order, all with the signature ``(h, memory_kv) -> delta``."""
        fns: list[BlockFn] = []
        for layer in self.layers:
            sa, ca, ffn = layer.self_attn, layer.cross_attn, layer.ffn
            fns.append(lambda h, kv, sa=sa: sa(h, self.self_mask))
            fns.append(lambda h, kv, ca=ca: ca(h, kv, self.memory_mask))
            fns.append(lambda h, kv, ffn=ffn: ffn(h))
        return fns

    # -- dense forward, used in training ---------------------------------------------------------

    def forward(self, noisy_action: torch.Tensor, timesteps: torch.Tensor, obs_features: torch.Tensor) -> torch.Tensor:
        """Dense noise prediction, one timestep per batch element: [B, Tp, A], [B], [B, To, F] -> [B, Tp, A]."""
        memory = self.condition(timesteps, obs_features)
        h = self.embed(noisy_action)
        for layer in self.layers:
            h = layer(h, layer.cross_attn.project_memory(memory), self.self_mask, self.memory_mask)
        return self.output(h)
