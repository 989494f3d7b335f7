"""Incremental-decoding state of a ZAYA1 model: per layer, the CCA keys/values and the convolution / value-shift tails.

What a CCA layer needs from the past to process new tokens exactly as a full forward would:
  k, v     the compressed keys (QK-normed, rotated) and values: [B, n_kv, capacity, head_dim] each, preallocated;
  qk_tail  the last cca_time0 - 1 inputs of the depthwise conv (the packed pre-conv [q | k], C channels);
  d_tail   the last cca_time1 - 1 inputs of the grouped conv (= depthwise outputs);
  v_tail   the previous token's delayed value projection (value shift), [B, 1, n_kv * head_dim / 2].
Tails hold *effective* inputs: a padding position is stored as what a sequence start looks like (zeros for qk and
v, the depthwise bias for d), so padding never reaches a real token. The MoE sub-block has no state across time.

Padded batches are LEFT-padded (every row ends at the same column): `real_keys` marks which cached positions are
tokens, `n_real` counts each row's tokens so far (its next rotary position).
"""

from __future__ import annotations

import torch

from reasonpipe.trainer.config import ModelConfig


class LayerCache:
    """One CCA layer's state; buffers are allocated on first use with the dtype/device of the layer's tensors."""

    def __init__(self, parent: DecodeCache) -> None:
        self.parent = parent
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.qk_tail: torch.Tensor | None = None
        self.d_tail: torch.Tensor | None = None
        self.v_tail: torch.Tensor | None = None

    def tails(
        self, qk: torch.Tensor, v_del: torch.Tensor, dw_bias: torch.Tensor, k0: int, k1: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(qk_tail, d_tail, v_tail) before this chunk; a fresh cache starts from a sequence start."""
        if self.qk_tail is None:
            b, _, c = qk.shape
            self.qk_tail = qk.new_zeros(b, k0 - 1, c)
            self.d_tail = dw_bias.to(qk.dtype).expand(b, k1 - 1, c)
            self.v_tail = v_del.new_zeros(b, 1, v_del.shape[-1])
        return self.qk_tail, self.d_tail, self.v_tail

    def set_tails(self, qk: torch.Tensor, d: torch.Tensor, v_del: torch.Tensor, dw_bias: torch.Tensor) -> None:
        """Keep the last inputs of each conv and the last delayed value (padding stored as a sequence start)."""
        real = self.parent.chunk_real[..., None]
        qk = torch.where(real, qk, 0.0)
        d = torch.where(real, d, dw_bias.to(d.dtype))
        v_del = torch.where(real, v_del, 0.0)
        self.qk_tail = _last(torch.cat([self.qk_tail, qk], 1), self.qk_tail.shape[1])
        self.d_tail = _last(torch.cat([self.d_tail, d], 1), self.d_tail.shape[1])
        self.v_tail = _last(torch.cat([self.v_tail, v_del], 1), 1)

    def append_kv(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the chunk's k/v [B, n_kv, n, D] at the cache end; return every cached k/v so far."""
        start, n = self.parent.length, k.shape[2]
        if self.k is None:
            shape = (k.shape[0], k.shape[1], self.parent.capacity, k.shape[3])
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        self.k[:, :, start : start + n] = k
        self.v[:, :, start : start + n] = v
        return self.k[:, :, : start + n], self.v[:, :, : start + n]


def _last(x: torch.Tensor, m: int) -> torch.Tensor:
    return x[:, x.shape[1] - m :]


class DecodeCache:
    """Decoding state of a whole model for a batch of `batch` rows and at most `capacity` positions.

    Pass it to `ZayaLM.forward(ids, attention_mask=..., cache=cache)`: the first call (prefill) and every later one
    (one or more new tokens per row) extend it in place. `attention_mask` (1 = token, 0 = padding) is needed only
    for left-padded prompts."""

    def __init__(self, cfg: ModelConfig, batch: int, capacity: int) -> None:
        self.batch, self.capacity = batch, capacity
        self.layers = [LayerCache(self) for _ in range(cfg.num_layers)]
        self.length = 0  # positions cached (padding included)
        self.real_keys: torch.Tensor | None = None  # [B, length] bool
        self.n_real: torch.Tensor | None = None  # [B] tokens per row so far
        self.chunk_real: torch.Tensor | None = None  # [B, n] of the chunk being processed

    def begin(self, attention_mask: torch.Tensor | None, batch: int, n: int, device: torch.device) -> torch.Tensor:
        """Register a chunk of n positions per row; returns their rotary positions [B, n]."""
        if batch != self.batch:
            raise ValueError(f"cache was made for batch {self.batch}, got input of batch {batch}")
        if self.length + n > self.capacity:
            raise ValueError(f"cache capacity {self.capacity} exceeded: {self.length} cached + {n} new positions; "
                             "make the DecodeCache with a larger capacity")  # fmt: skip
        if attention_mask is None:
            real = torch.ones(batch, n, dtype=torch.bool, device=device)
        else:
            real = attention_mask.to(device=device, dtype=torch.bool)
            if real.shape != (batch, n):
                raise ValueError(f"attention_mask has shape {tuple(real.shape)}; expected {(batch, n)}")
        if self.n_real is None:
            self.n_real = torch.zeros(batch, dtype=torch.long, device=device)
            self.real_keys = real[:, :0]
        seen = self.real_keys.any(1, keepdim=True)
        if bool((real[:, :-1] & ~real[:, 1:]).any() or (seen & ~real).any()):  # a token before a pad
            raise ValueError("attention_mask must be left padding only: zeros before the first token of a row, "
                             "ones after it (right-align the prompts)")  # fmt: skip
        self.chunk_real = real
        positions = (self.n_real[:, None] + real.cumsum(1) - 1).clamp_min(0)
        self.real_keys = torch.cat([self.real_keys, real], 1)
        self.n_real = self.n_real + real.sum(1)
        return positions

    def end(self, n: int) -> None:
        self.length += n
        self.chunk_real = None


def cache_bytes_per_token(cfg: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Bytes of decoding state per cached token and per sequence, vs a standard attention cache of the same model.

    cca: L x 2 x n_kv x head_dim (the compressed keys and values). Per sequence (independent of its length) CCA adds
    the conv tails L x ((cca_time0 - 1) + (cca_time1 - 1)) x (n_q + n_kv) x head_dim and the value-shift state
    L x n_kv x head_dim / 2. Baselines without CCA's latent compression, at the model width d: MHA caches
    L x 2 x d per token; GQA with the model's n_q : n_kv ratio caches L x 2 x d x n_kv / n_q."""
    e = torch.empty((), dtype=dtype).element_size()
    L, d, dh = cfg.num_layers, cfg.hidden_size, cfg.head_dim
    nq, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    conv = (cfg.cca_time0 - 1 + cfg.cca_time1 - 1) * (nq + nkv) * dh + nkv * dh // 2
    return {
        "cca_per_token": L * 2 * nkv * dh * e,
        "cca_per_sequence": L * conv * e,
        "mha_per_token": L * 2 * d * e,
        "gqa_per_token": L * 2 * d * nkv // nq * e,
    }
