"""Attention kernels of the trainer: plain causal, and document-causal without an S x S mask.

`ModelConfig.attention_backend` picks how a document-causal window (query t sees key u iff u <= t and both are in
the same document) is computed:
  sdpa   a dense [B, 1, S, S] bool mask + SDPA: S^2 bytes per row (17 GB at 131K); the test reference.
  flex   a flex-attention `BlockMask` built from the document ids in O((S / 128)^2) integers: 128 x 128 tiles that
         hold no same-document pair are skipped, tiles inside one document run unmasked. On CUDA it runs torch's
         compiled flex_attention kernel (forward and backward, memory O(S)). torch 2.13 has no flex backward on
         CPU and its eager CPU path materialises every score, so on CPU the same BlockMask is evaluated slab by
         slab (4 q tiles) with SDPA, each slab recomputed in backward (memory O(S)).
  flash  flash-attn's varlen kernel (`flash_attn_varlen_func`, cu_seqlens = document starts); CUDA/ROCm, fp16/bf16,
         only when the optional `flash-attn` package is installed.
  auto   flash when installed, on CUDA, in half precision; otherwise flex. Never the dense mask.
Plain causal attention (no document ids, or doc_causal off) always uses SDPA's fused causal kernel.

An `AttnMask` is built once per forward from the document ids and shared by every layer. Documents are the runs
of equal ids for flash; sdpa and flex compare ids (packed windows number their documents in order, so both agree).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from torch.utils.checkpoint import checkpoint

from reasonpipe.trainer.config import ATTENTION_BACKENDS as BACKENDS

Kind = Literal["causal", "all", "sdpa", "flex", "flash"]
FLEX_BLOCK = 128  # flex-attention tile (torch's default sparse block size)


@dataclass(frozen=True)
class AttnMask:
    """How queries see keys in one forward. kind: causal (SDPA is_causal, S_q == S_k), all (every key: one decode
    step), sdpa (`dense` bool [B, 1, S_q, S_k], True = attend), flex (`block_mask`), flash (`cu_seqlens`)."""

    kind: Kind
    dense: torch.Tensor | None = None
    block_mask: BlockMask | None = None
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0


CAUSAL = AttnMask("causal")
ALL = AttnMask("all")


@functools.cache
def flash_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """The concrete backend ("sdpa" | "flex" | "flash") of a config value for document-causal attention."""
    if name not in BACKENDS:
        raise ValueError(f"attention_backend {name!r}; allowed: {', '.join(map(repr, BACKENDS))}")
    if name != "auto":
        return name
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and flash_available():
        return "flash"
    return "flex"


def doc_causal_mask(doc_ids: torch.Tensor, backend: str, device: torch.device, dtype: torch.dtype) -> AttnMask:
    """The AttnMask of document-causal attention over doc_ids [B, S] with a config's backend name.

    dtype: the dtype attention will run in (auto picks flash only for fp16/bf16)."""
    backend = resolve_backend(backend, device, dtype)
    if backend == "sdpa":
        return AttnMask("sdpa", dense=dense_doc_mask(doc_ids))
    if backend == "flex":
        return AttnMask("flex", block_mask=doc_block_mask(doc_ids))
    if not flash_available():
        raise ValueError("attention_backend 'flash' needs the flash-attn package (pip install flash-attn); "
                         "use 'flex' or 'auto' without it")  # fmt: skip
    cu, longest = doc_cu_seqlens(doc_ids)
    return AttnMask("flash", cu_seqlens=cu, max_seqlen=longest)


# --- mask builders (pure tensor functions) ---------------------------------------------------------------------


def dense_doc_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Bool [B, 1, S, S], True where query t may attend key u: u <= t and same document (the reference)."""
    s = doc_ids.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=doc_ids.device).tril()
    return (causal & (doc_ids[:, :, None] == doc_ids[:, None, :]))[:, None]


def doc_mask_mod(doc_ids: torch.Tensor, block: int = FLEX_BLOCK) -> Callable[..., torch.Tensor]:
    """flex-attention mask_mod of document-causal attention (ids padded to whole tiles, the pad as its own id)."""
    s = doc_ids.shape[1]
    doc = F.pad(doc_ids, (0, -s % block), value=-1)

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return (doc[b, q] == doc[b, kv]) & (q >= kv)

    return mask_mod


def doc_block_mask(doc_ids: torch.Tensor, block: int = FLEX_BLOCK) -> BlockMask:
    """The BlockMask of document-causal attention over doc_ids [B, S], built from per-tile id ranges: memory
    O(B (S / block)^2), never S x S. A tile (q block i, kv block j <= i) is kept when the id ranges of the two blocks
    overlap, and "full" (no mask_mod needed) when j < i and both blocks are complete and hold one same id."""
    b, s = doc_ids.shape
    n = -(-s // block)
    pad = n * block - s
    ids = torch.cat([doc_ids, doc_ids[:, -1:].expand(b, pad)], dim=1).view(b, n, block)  # tail: repeat the last id
    lo, hi = ids.amin(-1), ids.amax(-1)
    idx = torch.arange(n, device=doc_ids.device)
    causal = idx[:, None] >= idx[None, :]
    keep = causal & (lo[:, :, None] <= hi[:, None, :]) & (lo[:, None, :] <= hi[:, :, None])
    one_doc = (lo == hi) & (idx < s // block)  # complete block, one document
    full = keep & (idx[:, None] > idx[None, :]) & one_doc[:, :, None] & one_doc[:, None, :]
    full &= lo[:, :, None] == lo[:, None, :]
    partial = keep & ~full

    def tiles(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True)  # kept tiles first, ascending
        return m.sum(-1).to(torch.int32)[:, None], order.to(torch.int32)[:, None]

    return BlockMask.from_kv_blocks(*tiles(partial), *tiles(full), BLOCK_SIZE=block,
                                    mask_mod=doc_mask_mod(doc_ids, block), seq_lengths=(s, s))  # fmt: skip


def doc_cu_seqlens(doc_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """flash-attn varlen metadata of doc_ids [B, S]: int32 cumulative starts of every run of equal ids over the
    flattened batch (a row start is always a document start), and the longest run (one host sync)."""
    b, s = doc_ids.shape
    start = torch.ones(b, s, dtype=torch.bool, device=doc_ids.device)
    start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    starts = start.flatten().nonzero()[:, 0]
    cu = torch.cat([starts, starts.new_tensor([b * s])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


# --- kernels -----------------------------------------------------------------------------------------------------


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask) -> torch.Tensor:
    """Softmax attention, scale 1/sqrt(head_dim), GQA: q [B, H, S_q, D], k/v [B, H_kv, S_k, D] -> [B, H, S_q, D]."""
    gqa = q.shape[1] != k.shape[1]
    if mask.kind in ("causal", "all"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=mask.kind == "causal", enable_gqa=gqa)
    if mask.kind == "sdpa":
        if gqa and q.device.type != "cpu":  # CUDA's masked (mem-efficient) kernel does not take enable_gqa
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense, enable_gqa=gqa and q.device.type == "cpu")
    if mask.kind == "flex":
        if q.device.type == "cpu":
            return flex_blockwise(q, k, v, mask.block_mask)
        return _compiled_flex()(q, k, v, block_mask=mask.block_mask, enable_gqa=gqa)
    return flash_varlen(q, k, v, mask.cu_seqlens, mask.max_seqlen)


@functools.cache
def _compiled_flex() -> Callable[..., torch.Tensor]:
    return torch.compile(flex_attention)  # a new length (e.g. a generation prompt) recompiles once, then dynamic


def flex_blockwise(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bm: BlockMask, rows: int = 4) -> torch.Tensor:
    """flex_attention's result for BlockMask `bm`, computed with SDPA on slabs of `rows` q tiles, each over the
    union of its kept kv tiles (the mask_mod evaluated on the slab). Under autograd each slab is recomputed in
    backward, so only q/k/v and the output stay alive: memory O(S), not O(S^2). (Each slab's k/v gradient is a
    full-length tensor: taller slabs cost less bookkeeping, at the price of a wider union.)"""
    bq, bk = bm.BLOCK_SIZE
    groups = q.shape[1] // k.shape[1]
    n_q = bm.kv_num_blocks.shape[-1]
    n_part, n_full = bm.kv_num_blocks.tolist(), bm.full_kv_num_blocks.tolist()  # [B][1][n_q]
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    offsets = torch.arange(bk, device=q.device)
    out = []
    for b in range(q.shape[0]):
        qb, kb, vb = (t[b : b + 1] for t in (q, k, v))
        slabs = []
        for r, q_slab in enumerate(qb.split(bq * rows, dim=2)):
            first = r * rows
            tiles = torch.cat([t for i in range(first, min(first + rows, n_q))
                               for t in (bm.kv_indices[b, 0, i, : n_part[b][0][i]],
                                         bm.full_kv_indices[b, 0, i, : n_full[b][0][i]])])  # fmt: skip
            kv_pos = (tiles.unique().long()[:, None] * bk + offsets).flatten()
            kv_pos = kv_pos[kv_pos < k.shape[2]]
            q_pos = torch.arange(first * bq, first * bq + q_slab.shape[2], device=q.device)
            fn = functools.partial(_slab, bm.mask_mod, b, groups)
            args = (q_slab, kb, vb, q_pos, kv_pos)
            slabs.append(checkpoint(fn, *args, use_reentrant=False) if grad else fn(*args))
        out.append(torch.cat(slabs, dim=2))
    return torch.cat(out)


def _slab(mask_mod: Callable[..., torch.Tensor], b: int, groups: int, q: torch.Tensor, k: torch.Tensor,
          v: torch.Tensor, q_pos: torch.Tensor, kv_pos: torch.Tensor) -> torch.Tensor:  # fmt: skip
    zero = torch.zeros((), dtype=torch.long, device=q.device)
    allowed = mask_mod(zero + b, zero, q_pos[:, None], kv_pos[None, :])
    ks, vs = k.index_select(2, kv_pos), v.index_select(2, kv_pos)
    ks, vs = ks.repeat_interleave(groups, dim=1), vs.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, ks, vs, attn_mask=allowed[None, None])


def flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, longest: int) -> torch.Tensor:
    """flash-attn varlen over the batch flattened to one packed sequence; documents = cu_seqlens."""
    from flash_attn import flash_attn_varlen_func

    if q.dtype not in (torch.float16, torch.bfloat16) or q.device.type != "cuda":
        raise ValueError(f"attention_backend 'flash' needs fp16/bf16 on a GPU (got {q.dtype} on {q.device.type}); "
                         "train under bf16 autocast or use attention_backend 'flex'")  # fmt: skip
    b, h, s, d = q.shape
    flat = [t.transpose(1, 2).reshape(b * s, t.shape[1], d) for t in (q, k, v)]  # [tokens, heads, D]
    out = flash_attn_varlen_func(*flat, cu, cu, longest, longest, causal=True)
    return out.view(b, s, h, d).transpose(1, 2)
