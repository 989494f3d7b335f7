"""CCA: compressed convolutional attention (ZAYA1), numerically equivalent to transformers' ZayaAttention.

Per block, on the RMS-normed input x [B, S, d]:
  1. one fused projection x -> [q | k | v_current | v_delayed] (no bias);
  2. qk-mean skip terms from the pre-conv q, k (GQA groups);
  3. two causal convolutions over time on [q | k]: depthwise (kernel cca_time0) then per-head grouped (cca_time1),
     both with bias; written as shifted taps so they can restart at document boundaries (`doc_reset`);
  4. value shift: half of the value channels come from the previous token;
  5. QK-norm to sqrt(head_dim) with a LINEAR per-kv-head key temperature; 6. partial RoPE after the norm;
  7. causal (optionally document-causal: trainer/attention_backends.py) attention with GQA; 8. output projection.
With a decoding cache (trainer/decode_cache.py) the convs and the value shift continue from the cached tails.
Everything up to the attention runs in fp32 when the input is fp32; under autocast the matmuls run in bf16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reasonpipe.trainer.attention_backends import AttnMask, attend
from reasonpipe.trainer.config import ModelConfig
from reasonpipe.trainer.decode_cache import LayerCache
from reasonpipe.trainer.layers import apply_partial_rope


def shift_time(
    x: torch.Tensor,
    s: int,
    valid: torch.Tensor | None,
    fill: torch.Tensor | None,
    hist: torch.Tensor | None = None,
) -> torch.Tensor:
    """y[:, t] = x[:, t - s] where `valid[:, t]` (None: everywhere), else `fill` (zeros when None).

    x: [B, S, C]; valid: [B, S, 1] bool or None. Positions before the chunk (t - s < 0) come from `hist` [B, >= s, C]
    (the inputs that preceded it, decoding) or, without it, are a sequence start (`fill`).
    """
    if s == 0:
        return x
    n = x.shape[1]
    if hist is not None:
        y = torch.cat([hist[:, hist.shape[1] - s :].to(x.dtype), x], dim=1)[:, :n]
    else:
        y = F.pad(x, (0, 0, s, 0))[:, :n]  # also right when s > n (a kernel longer than the sequence)
        if fill is not None and valid is None:
            start = torch.arange(n, device=x.device)[None, :, None] < s
            y = torch.where(start, fill.to(y.dtype), y)
    if valid is None:
        return y
    return torch.where(valid, y, torch.zeros((), dtype=y.dtype, device=y.device) if fill is None else fill.to(y.dtype))


def same_doc_masks(doc_ids: torch.Tensor | None, max_shift: int) -> list[torch.Tensor | None]:
    """valid[s][:, t] = position t - s exists and belongs to the same document as t; [None] * n without doc_ids."""
    if doc_ids is None:
        return [None] * (max_shift + 1)
    n = doc_ids.shape[1]
    masks: list[torch.Tensor | None] = [None]
    for s in range(1, max_shift + 1):
        prev = F.pad(doc_ids, (s, 0), value=-1)[:, :n]
        masks.append((prev == doc_ids)[..., None])
    return masks


def chunk_masks(real: torch.Tensor, max_shift: int) -> list[torch.Tensor | None]:
    """valid[s][:, t] of a decoding chunk: position t - s is a token, or lies before the chunk (the cache's tails
    already hold padding as a sequence start). real: [B, n] bool, False = left padding."""
    n = real.shape[1]
    return [None] + [F.pad(real, (s, 0), value=True)[:, :n, None] for s in range(1, max_shift + 1)]


class CCAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, hk, dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.n_q, self.n_kv, self.head_dim, self.groups = h, hk, dh, h // hk
        self.q_size, self.kv_size = h * dh, hk * dh
        self.v_half = self.kv_size // 2
        # fused [q_proj; k_proj; v_proj_current; v_proj_delayed] (split apart for HF export)
        self.qkv_weight = nn.Parameter(torch.empty(self.q_size + self.kv_size + self.kv_size, cfg.hidden_size))
        c = self.q_size + self.kv_size
        self.conv_dw_weight = nn.Parameter(torch.empty(c, 1, cfg.cca_time0))  # nn.Conv1d(c, c, k0, groups=c)
        self.conv_dw_bias = nn.Parameter(torch.zeros(c))
        self.conv_gr_weight = nn.Parameter(torch.empty(c, dh, cfg.cca_time1))  # nn.Conv1d(c, c, k1, groups=h+hk)
        self.conv_gr_bias = nn.Parameter(torch.zeros(c))
        self.temp = nn.Parameter(torch.full((hk,), float(cfg.key_temp_init)))  # linear key temperature
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.cfg.initializer_range
        nn.init.normal_(self.qkv_weight, std=std)
        nn.init.normal_(self.o_proj.weight, std=std / math.sqrt(2 * self.cfg.num_layers))
        # conv taps (init unpublished): identity on the current token plus small noise, so q~/k~ start as
        # projections of the current token (plus the qk-mean term); the HF loader overwrites all of this
        nn.init.normal_(self.conv_dw_weight, std=std)
        self.conv_dw_weight[:, :, -1] += 1.0
        nn.init.normal_(self.conv_gr_weight, std=std)
        eye = torch.eye(self.head_dim, device=self.conv_gr_weight.device)
        self.conv_gr_weight[:, :, -1] += eye.repeat(self.n_q + self.n_kv, 1)
        self.conv_dw_bias.zero_()
        self.conv_gr_bias.zero_()
        self.temp.fill_(float(self.cfg.key_temp_init))

    def _convs(
        self,
        qk: torch.Tensor,
        valid: list[torch.Tensor | None],
        hist_qk: torch.Tensor | None = None,
        hist_d: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Depthwise then per-head grouped causal conv over time: qk [B, S, C] -> (output, depthwise output d)."""
        k0, k1 = self.cfg.cca_time0, self.cfg.cca_time1
        w_dw = self.conv_dw_weight[:, 0, :]  # [C, k0]; tap j multiplies x[t - (k0 - 1 - j)]
        d = self.conv_dw_bias + sum(
            shift_time(qk, k0 - 1 - j, valid[k0 - 1 - j], None, hist_qk) * w_dw[:, j] for j in range(k0)
        )
        # grouped conv: its input before a boundary is the depthwise output of all-zero (padded) inputs = its bias
        taps = [shift_time(d, k1 - 1 - j, valid[k1 - 1 - j], self.conv_dw_bias, hist_d) for j in range(k1)]
        b, s, c = qk.shape
        g = self.n_q + self.n_kv
        taps = torch.stack(taps, dim=2).view(b, s, k1, g, self.head_dim)  # [B, S, k1, G, Din]
        w = self.conv_gr_weight.view(g, self.head_dim, self.head_dim, k1)  # [G, Dout, Din, k1]
        out = torch.einsum("bsjgi,goij->bsgo", taps, w)
        return out.reshape(b, s, c) + self.conv_gr_bias, d

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        valid: list[torch.Tensor | None],
        mask: AttnMask,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """x [B, S, d] normed; cos/sin [B, S, rotary]; valid: same_doc_masks / chunk_masks (Nones = no reset);
        mask: how queries see keys (attention_backends); cache: this layer's decoding state, extended in place."""
        b, s, _ = x.shape
        h, hk, dh = self.n_q, self.n_kv, self.head_dim
        proj = F.linear(x, self.qkv_weight)
        q, k, v_cur, v_del = proj.split([self.q_size, self.kv_size, self.v_half, self.v_half], dim=-1)

        # qk-mean skip terms (pre-conv): mean_q[h] = (q[h] + k[h // groups]) / 2, mean_k[j] = mean over its group
        q4 = q.view(b, s, h, dh)
        mean_q = (q4 + k.view(b, s, hk, 1, dh).expand(b, s, hk, self.groups, dh).reshape(b, s, h, dh)) * 0.5
        mean_k = mean_q.view(b, s, hk, self.groups, dh).mean(dim=-2)

        qk = torch.cat([q, k], dim=-1)
        hist_qk = hist_d = hist_v = None
        if cache is not None:
            hist_qk, hist_d, hist_v = cache.tails(qk, v_del, self.conv_dw_bias, self.cfg.cca_time0, self.cfg.cca_time1)
        conv, d = self._convs(qk, valid, hist_qk, hist_d)
        q = conv[..., : self.q_size].view(b, s, h, dh).float() + mean_q.float()
        k = conv[..., self.q_size :].view(b, s, hk, dh).float() + mean_k.float()

        # value shift: kv channels [v_current(t) | v_delayed(t - 1)], zero before the (document) start
        v = torch.cat([v_cur, shift_time(v_del, 1, valid[1], None, hist_v)], dim=-1).view(b, s, hk, dh)
        if cache is not None:
            cache.set_tails(qk, d, v_del, self.conv_dw_bias)

        # QK-norm (fp32) with linear key temperature, then partial RoPE
        eps = torch.finfo(q.dtype).eps
        q = q * (math.sqrt(dh) / q.norm(dim=-1, keepdim=True).clamp_min(eps))
        k = k * (math.sqrt(dh) / k.norm(dim=-1, keepdim=True).clamp_min(eps)) * self.temp.float()[:, None]
        q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)

        dt = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else v.dtype
        q, k, v = (t.to(dt).transpose(1, 2) for t in (q, k, v))  # [B, heads, S, dh]
        if cache is not None:
            k, v = cache.append_kv(k, v)
        o = attend(q, k, v, mask)
        return self.o_proj(o.transpose(1, 2).reshape(b, s, self.q_size))
