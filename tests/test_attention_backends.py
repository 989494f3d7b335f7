"""Document-causal attention backends (trainer/attention_backends.py): the flex BlockMask against torch's own
builder, flex vs the dense reference (logits and gradients of the whole model) on random packed windows, no
influence across a document boundary for every available backend, and which backend `auto` picks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.flex_attention import create_block_mask

from reasonpipe.trainer import attention as attention_mod
from reasonpipe.trainer import attention_backends as ab
from reasonpipe.trainer.config import tiny
from reasonpipe.trainer.model import ZayaLM
from reasonpipe.trainer.trainconfig import RunConfig

VOCAB = 61


pytestmark = pytest.mark.usefixtures("one_thread")


def packed_doc_ids(lengths: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))


def windows(draw: st.DrawFn, s: int) -> torch.Tensor:
    """doc ids [S] of a packed window: many short documents (incl. length 1) and sometimes a long one."""
    lengths: list[int] = []
    while sum(lengths) < s:
        lengths.append(draw(st.one_of(st.integers(1, 3), st.integers(1, 40), st.integers(100, 300))))
    lengths[-1] -= sum(lengths) - s
    return packed_doc_ids(lengths)


@st.composite
def doc_batches(draw: st.DrawFn, max_len: int = 400) -> torch.Tensor:
    s = draw(st.integers(1, max_len))
    rows = [windows(draw, s) for _ in range(draw(st.integers(1, 2)))]
    if draw(st.booleans()):
        rows[0] = torch.zeros(s, dtype=torch.long)  # a window that is one document
    return torch.stack(rows)


def tile_sets(bm) -> tuple[list, list]:
    """Per (row, q tile): the set of partial and of full kv tiles of a BlockMask (order within a row is free)."""
    out = []
    for num, idx in ((bm.kv_num_blocks, bm.kv_indices), (bm.full_kv_num_blocks, bm.full_kv_indices)):
        out.append([[set(idx[b, 0, i, : num[b, 0, i]].tolist()) for i in range(num.shape[-1])]
                    for b in range(num.shape[0])])  # fmt: skip
    return out[0], out[1]


@given(doc=doc_batches())
@settings(max_examples=8, deadline=None)
def test_block_mask_equals_torch_create_block_mask(doc: torch.Tensor) -> None:
    """Ours is built from per-tile id ranges (no S x S); torch's evaluates the mask_mod everywhere: same tiles."""
    b, s = doc.shape
    ours = ab.doc_block_mask(doc)
    ref = create_block_mask(ab.doc_mask_mod(doc), b, None, s, s, device="cpu")
    assert tile_sets(ours) == tile_sets(ref)
    assert ours.seq_lengths == (s, s)


def test_block_mask_at_131k_is_small() -> None:
    """The dense reference mask of one 131K window is 17 GB; the flex BlockMask is a few MB of tile indices."""
    s = 131_072
    doc = packed_doc_ids([s // 20] * 19 + [s - 19 * (s // 20)])[None]
    bm = ab.doc_block_mask(doc)
    nbytes = sum(t.numel() * t.element_size() for t in bm.as_tuple() if isinstance(t, torch.Tensor))
    assert nbytes < 64 * 2**20, nbytes
    kept = int(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum())
    assert kept < 1024 * 1024 / 10  # ~20 documents: a few percent of the 1024 x 1024 tiles hold work


@given(doc=doc_batches(max_len=300), rows=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**16))
@settings(max_examples=12, deadline=None)
def test_flex_equals_dense_attention(doc: torch.Tensor, rows: int, seed: int) -> None:
    """Values and gradients; rows = q tiles per CPU slab (1 and 2 make several slabs per window here)."""
    g = torch.Generator().manual_seed(seed)
    b, s = doc.shape
    q = torch.randn(b, 4, s, 8, generator=g, requires_grad=True)
    k, v = (torch.randn(b, 2, s, 8, generator=g, requires_grad=True) for _ in range(2))
    w = torch.randn(b, 4, s, 8, generator=g)
    dense = ab.attend(q, k, v, ab.AttnMask("sdpa", dense=ab.dense_doc_mask(doc)))
    flex = ab.flex_blockwise(q, k, v, ab.doc_block_mask(doc), rows=rows)
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)
    grads_flex = torch.autograd.grad((flex * w).sum(), (q, k, v))
    grads_dense = torch.autograd.grad((dense * w).sum(), (q, k, v))
    for gf, gd in zip(grads_flex, grads_dense):
        torch.testing.assert_close(gf, gd, atol=1e-5, rtol=1e-5)


def perturbed(backend: str, seed: int = 0) -> ZayaLM:
    torch.manual_seed(seed)
    m = ZayaLM(tiny(vocab_size=VOCAB, cca_time0=3, attention_backend=backend).from_scratch())
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "scale" in name or "bias" in name or "norm" in name or name.endswith("temp"):
                p.add_(0.1 * torch.randn_like(p))
    return m


def model_grads(m: ZayaLM, ids: torch.Tensor, doc: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    m.zero_grad()
    pos = torch.cat([torch.arange(int(n)) for n in torch.unique_consecutive(doc[0], return_counts=True)[1]])
    logits = m(ids, position_ids=pos[None].expand_as(ids), doc_ids=doc).logits
    (logits * torch.linspace(-1, 1, VOCAB)).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lengths", [[1] * 5 + [60, 1, 2, 1, 100, 30, 1, 99], [300], [130, 1, 169]])
def test_flex_model_equals_dense_model(lengths: list[int]) -> None:
    """Whole model, doc_causal + doc_reset: flex logits and every parameter gradient equal the dense reference."""
    doc = packed_doc_ids(lengths)[None].expand(2, -1)
    ids = torch.randint(0, VOCAB, doc.shape, generator=torch.Generator().manual_seed(len(lengths)))
    dense, flex = perturbed("sdpa").train(), perturbed("flex").train()
    flex.load_state_dict(dense.state_dict())
    (ld, gd), (lf, gf) = model_grads(dense, ids, doc), model_grads(flex, ids, doc)
    torch.testing.assert_close(lf, ld, atol=1e-5, rtol=1e-5)
    assert gd.keys() == gf.keys()
    for name, g in gd.items():
        torch.testing.assert_close(gf[name], g, atol=1e-5, rtol=1e-4, msg=name)


AVAILABLE = ["sdpa", "flex"] + (["flash"] if ab.flash_available() and torch.cuda.is_available() else [])


@pytest.mark.parametrize("backend", ["sdpa", "flex", "flash"])
def test_no_token_influences_another_document(backend: str) -> None:
    """d(outputs of document j) / d(embeddings of document i != j) is exactly zero: attention, convolutions and
    value shift all stop at the boundary."""
    if backend not in AVAILABLE:
        pytest.skip("flash-attn is not installed or no GPU")
    device = torch.device("cuda" if backend == "flash" else "cpu")
    m = perturbed(backend).to(device).train()
    lengths = [40, 1, 150, 2, 67]
    doc = packed_doc_ids(lengths)[None].to(device)
    ids = torch.randint(0, VOCAB, doc.shape, device=device)
    seen = {}
    hook = m.embed_tokens.register_forward_hook(lambda mod, inp, out: seen.setdefault("emb", out))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=backend == "flash"):
        logits = m(ids, doc_ids=doc).logits
    hook.remove()
    for j in range(len(lengths)):
        (grad,) = torch.autograd.grad(logits[doc == j].sum(), seen["emb"], retain_graph=True)
        per_token = grad[0].abs().sum(-1)
        assert per_token[doc[0] != j].max() == 0, f"document {j} depends on another document"
        assert per_token[doc[0] == j].min() > 0  # and on each of its own tokens


def test_auto_never_picks_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert ab.resolve_backend("auto", cpu, torch.float32) == "flex"
    assert ab.resolve_backend("auto", gpu, torch.bfloat16) == ("flash" if ab.flash_available() else "flex")
    monkeypatch.setattr(ab, "flash_available", lambda: True)
    assert ab.resolve_backend("auto", gpu, torch.bfloat16) == "flash"
    assert ab.resolve_backend("auto", gpu, torch.float32) == "flex"  # flash-attn needs half precision
    assert ab.resolve_backend("auto", cpu, torch.bfloat16) == "flex"
    # the model with doc_causal + auto never builds the S x S mask
    monkeypatch.setattr(ab, "dense_doc_mask", lambda doc: pytest.fail("dense S x S mask built"))
    m = perturbed("auto").eval()
    doc = packed_doc_ids([7, 1, 12])[None]
    with torch.no_grad():
        m(torch.randint(0, VOCAB, doc.shape), doc_ids=doc)


def test_plain_causal_keeps_fused_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = []
    real = attention_mod.attend
    monkeypatch.setattr(attention_mod, "attend", lambda q, k, v, mask: kinds.append(mask.kind) or real(q, k, v, mask))
    m = perturbed("flex").eval()
    ids = torch.randint(0, VOCAB, (1, 20))
    with torch.no_grad():
        m(ids)  # no doc_ids
        m.cfg.doc_causal = False
        m(ids, doc_ids=packed_doc_ids([10, 10])[None])  # doc_causal off
    assert set(kinds) == {"causal"}


def test_doc_cu_seqlens_are_document_starts() -> None:
    doc = torch.tensor([[0, 0, 0, 1, 2, 2], [0, 1, 1, 1, 1, 1]])
    cu, longest = ab.doc_cu_seqlens(doc)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 4, 6, 7, 12] and longest == 5


def test_backend_errors_are_precise(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="attention_backend 'flexx'; allowed: 'auto', 'sdpa', 'flex', 'flash'"):
        tiny(attention_backend="flexx")
    for value, msg in [("flesh", "model: attention_backend 'flesh'; allowed"), (3, "model.attention_backend: Input")]:
        with pytest.raises(ValueError, match=msg):  # the training config names the key
            RunConfig.model_validate({"model": {"preset": "tiny", "attention_backend": value}})
    monkeypatch.setattr(ab, "flash_available", lambda: False)
    m = perturbed("flash").eval()
    with pytest.raises(ValueError, match="needs the flash-attn package"):
        m(torch.zeros(1, 4, dtype=torch.long), doc_ids=torch.zeros(1, 4, dtype=torch.long))
