"""The ZAYA1 language model: embeddings -> N x (CCA attention + MoE) with learned residual scaling -> tied head.

Residual stream in fp32; norms, QK-norm, router softmax and (by default) LM head + cross-entropy in fp32; matmuls
follow the ambient autocast dtype (bf16 in training). Numerically equivalent to transformers' ZayaForCausalLM in fp32
(tests/test_model_parity.py) with the default flags.

Forward contract (the trainer codes against it):
    model(input_ids, position_ids=None, doc_ids=None, labels=None, loss_mask=None) -> ZayaOutput
`labels` are ALREADY SHIFTED by the caller: labels[:, t] is the target of position t (-100 = ignored). With labels the
head + cross-entropy run chunk-wise (never materialising [B, S, vocab]) and `.logits` is None.
Generation (trainer/generate.py) adds `attention_mask` (left padding), `cache` (a DecodeCache, extended in place)
and `logits_to_keep` (logits of the last n positions only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from reasonpipe.trainer import hf_interop
from reasonpipe.trainer.attention import CCAttention, chunk_masks, same_doc_masks
from reasonpipe.trainer.attention_backends import ALL, CAUSAL, AttnMask, doc_causal_mask
from reasonpipe.trainer.config import ModelConfig
from reasonpipe.trainer.decode_cache import DecodeCache, LayerCache
from reasonpipe.trainer.layers import ResidualScaling, RMSNorm, rope_cos_sin
from reasonpipe.trainer.moe import MoE, Router


@dataclass
class ZayaOutput:
    logits: torch.Tensor | None  # [B, S, vocab]; None when labels are given (chunked loss path)
    loss: torch.Tensor | None = None  # mean over counted tokens (labels != -100 and loss_mask != 0)
    token_loss: torch.Tensor | None = None  # [B, S] fp32 per-token loss, 0 where not counted
    expert_counts: torch.Tensor | None = None  # [n_moe_layers, num_experts] tokens routed per expert (skip excluded)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = CCAttention(cfg)
        self.post_attention_residual_scale = ResidualScaling(cfg.hidden_size)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg, use_eda=layer_idx > 0)
        self.post_mlp_residual_scale = ResidualScaling(cfg.hidden_size)

    def forward(
        self,
        h: torch.Tensor,
        prev_r: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        valid: list[torch.Tensor | None],
        mask: AttnMask,
        cache: LayerCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h: fp32 residual [B, S, d] -> (h, router state for the next block, expert counts [E])."""
        a = self.self_attn(self.input_layernorm(h), cos, sin, valid, mask, cache)
        h = self.post_attention_residual_scale(a, h)
        m, r, counts = self.mlp(self.post_attention_layernorm(h), prev_r)
        return self.post_mlp_residual_scale(m, h), r, counts


def _head_ce(h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, fp32: bool) -> torch.Tensor:
    """Per-token cross-entropy of one chunk: h [n, d], w [V, d], labels [n] (-100 ignored -> 0)."""
    if fp32:
        with torch.autocast(h.device.type, enabled=False):
            logits = F.linear(h.float(), w.float())
    else:
        logits = F.linear(h, w)
    return F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="none")


def chunked_linear_cross_entropy(
    h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, chunk: int, fp32: bool = True
) -> torch.Tensor:
    """Per-token CE of softmax(h @ w.T) without keeping [N, V] logits: each chunk's logits are recomputed in
    backward (activation checkpoint), so peak memory is one chunk of logits. h [N, d], labels [N] -> [N] fp32."""
    out = []
    for i in range(0, h.shape[0], chunk):
        hc, lc = h[i : i + chunk], labels[i : i + chunk]
        if torch.is_grad_enabled() and (hc.requires_grad or w.requires_grad):
            out.append(checkpoint(_head_ce, hc, w, lc, fp32, use_reentrant=False))
        else:
            out.append(_head_ce(hc, w, lc, fp32))
    return torch.cat(out)


class ZayaLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # as the reference: the pad row gets no gradient through the lookup (it still does through the tied head)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.input_hidden_states_scale = nn.Parameter(torch.ones(cfg.hidden_size))
        self.input_hidden_states_bias = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.layers = nn.ModuleList([Block(cfg, i) for i in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        std = self.cfg.initializer_range
        nn.init.normal_(self.embed_tokens.weight, std=std)
        self.embed_tokens.weight[self.cfg.pad_token_id].zero_()
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=std)
        for router in self.routers():
            for lin in (router.down_proj, router.router_mlp.fc1, router.router_mlp.fc2):
                nn.init.normal_(lin.weight, std=std)
                nn.init.zeros_(lin.bias)
            nn.init.normal_(router.router_mlp.out_proj.weight, std=std)

    # --- public helpers ------------------------------------------------------------------------------------------
    @property
    def head_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def routers(self) -> list[Router]:
        """The MoE routers in depth order (one per block)."""
        return [blk.mlp.gate for blk in self.layers]

    def balance_state(self) -> list[dict[str, torch.Tensor]]:
        """Per MoE layer: the balancing bias and its Adam moments (fp32 buffers, updated in place)."""
        return [
            {"bias": r.balancing_biases, "exp_avg": r.bias_exp_avg, "exp_avg_sq": r.bias_exp_avg_sq}
            for r in self.routers()
        ]

    def set_grouped_mm(self, enabled: bool) -> None:
        for blk in self.layers:
            blk.mlp.experts.use_grouped_mm = enabled

    @classmethod
    def from_hf(cls, src: str | Path | nn.Module, **overrides: Any) -> ZayaLM:
        """Our model with the weights of a transformers ZayaForCausalLM (instance or saved folder); `overrides` change
        ModelConfig fields that do not affect weight shapes (e.g. doc_reset, fp32_head)."""
        cfg, state = hf_interop.read_hf(src, **overrides)
        model = cls(cfg)
        hf_interop.check_loaded(*model.load_state_dict(state, strict=False))
        return model

    def save_hf(self, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write config.json + model.safetensors loadable by `ZayaForCausalLM.from_pretrained(out_dir)`."""
        return hf_interop.write_hf(self.state_dict(), self.cfg, out_dir, dtype or self.head_weight.dtype)

    # --- forward ---------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: DecodeCache | None = None,
        logits_to_keep: int = 0,
    ) -> ZayaOutput:
        """input_ids [B, S] long; position_ids [B, S] (restart per document when given, else 0..S-1);
        doc_ids [B, S] int (document index within the window; used by doc_causal / doc_reset);
        labels [B, S] already shifted (labels[t] = target of position t, -100 ignored); loss_mask [B, S] (0 = skip).
        Generation: attention_mask [B, S] (1 = token, 0 = left padding, which nothing attends to and the convs /
        value shift treat as before the sequence start), cache (positions, tails and keys continue from it),
        logits_to_keep (> 0: logits of the last positions only)."""
        cfg = self.cfg
        b, s = input_ids.shape
        dev = input_ids.device
        x = self.embed_tokens(input_ids)
        h = ((x + self.input_hidden_states_bias) * self.input_hidden_states_scale).float()
        if (cache is not None or attention_mask is not None) and (labels is not None or doc_ids is not None):
            raise ValueError("attention_mask / cache are for generation; pass labels and doc_ids without them")
        position_ids, valid, mask = self._attention_inputs(b, s, dev, position_ids, doc_ids, attention_mask, cache)
        cos, sin = rope_cos_sin(position_ids, cfg.rotary_dim, cfg.rope_theta)

        ckpt = cfg.activation_checkpointing and self.training and torch.is_grad_enabled() and cache is None
        prev_r: torch.Tensor | None = None
        counts = []
        for i, blk in enumerate(self.layers):
            if ckpt:
                h, prev_r, c = checkpoint(blk, h, prev_r, cos, sin, valid, mask, use_reentrant=False)
            else:
                h, prev_r, c = blk(h, prev_r, cos, sin, valid, mask, None if cache is None else cache.layers[i])
            counts.append(c)  # returned values: a checkpoint recompute never adds to them
        if cache is not None:
            cache.end(s)
        h = self.norm(h)
        expert_counts = torch.stack(counts)

        if labels is None:
            if logits_to_keep > 0:
                h = h[:, -logits_to_keep:]
            if cfg.fp32_head:
                with torch.autocast(h.device.type, enabled=False):
                    logits = F.linear(h, self.head_weight.float())
            else:
                logits = F.linear(h, self.head_weight)
            return ZayaOutput(logits=logits, expert_counts=expert_counts)

        labels = labels.long()
        if loss_mask is not None:
            labels = labels.masked_fill(loss_mask == 0, -100)
        token_loss = chunked_linear_cross_entropy(
            h.reshape(b * s, -1), self.head_weight, labels.reshape(-1), cfg.ce_chunk_tokens, cfg.fp32_head
        ).view(b, s)
        n = (labels != -100).sum()
        loss = token_loss.sum() / n.clamp_min(1)
        return ZayaOutput(logits=None, loss=loss, token_loss=token_loss, expert_counts=expert_counts)

    def _attention_inputs(
        self,
        b: int,
        s: int,
        dev: torch.device,
        position_ids: torch.Tensor | None,
        doc_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        cache: DecodeCache | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor | None], AttnMask]:
        """(positions, conv/value-shift validity masks, attention mask) of one forward, shared by every layer."""
        cfg = self.cfg
        max_shift = max(cfg.cca_time0 - 1, cfg.cca_time1 - 1, 1)
        dt = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else self.head_weight.dtype
        if cache is not None:
            if position_ids is not None:
                raise ValueError("with a cache the positions come from it; pass no position_ids")
            positions = cache.begin(attention_mask, b, s, dev)
            return positions, chunk_masks(cache.chunk_real, max_shift), self._cached_mask(cache, dt)
        if attention_mask is not None:  # padding = a document of its own, nothing else of it matters
            seg = attention_mask.to(device=dev, dtype=torch.long)
            if position_ids is None:
                position_ids = (seg.cumsum(1) - 1).clamp_min(0)
            padded = not bool(seg.all())
            mask = doc_causal_mask(seg, cfg.attention_backend, dev, dt) if padded else CAUSAL
            return position_ids, same_doc_masks(seg if padded else None, max_shift), mask
        if position_ids is None:
            position_ids = torch.arange(s, device=dev)[None]
        valid = same_doc_masks(doc_ids if cfg.doc_reset else None, max_shift)
        doc_causal = cfg.doc_causal and doc_ids is not None
        return position_ids, valid, doc_causal_mask(doc_ids, cfg.attention_backend, dev, dt) if doc_causal else CAUSAL

    def _cached_mask(self, cache: DecodeCache, dt: torch.dtype) -> AttnMask:
        """Attention of a chunk appended to `cache` (after cache.begin): tokens see earlier tokens, never padding."""
        real, keys = cache.chunk_real, cache.real_keys
        n, start = real.shape[1], cache.length
        if start == 0:  # prefill: left padding is a document of its own
            padded = not bool(real.all())
            return doc_causal_mask(real.long(), self.cfg.attention_backend, real.device, dt) if padded else CAUSAL
        if n == 1 and bool(keys.all()):
            return ALL
        pos = torch.arange(start + n, device=real.device)
        allowed = (pos[None, :] <= start + pos[:n, None]) & (keys[:, None, :] == real[:, :, None])
        return AttnMask("sdpa", dense=allowed[:, None])

    # --- sizes -----------------------------------------------------------------------------------------------
    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if embeddings else n - self.embed_tokens.weight.numel()
