"""Incremental decoding (trainer/decode_cache.py) and generation (trainer/generate.py): prefill + steps equal a full
forward for several CCA kernel sizes, left padding is invisible, the cache's size, sampling and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonpipe.trainer.config import preset, tiny
from reasonpipe.trainer.decode_cache import DecodeCache, cache_bytes_per_token
from reasonpipe.trainer.generate import generate, sample_next
from reasonpipe.trainer.model import ZayaLM

VOCAB = 67
CONFIGS = {
    "k1-1": dict(cca_time0=1, cca_time1=1),
    "k2-2": dict(),
    "k3-1": dict(cca_time0=3, cca_time1=1),
    "k4-4_mqa_untied": dict(cca_time0=4, cca_time1=4, num_key_value_heads=1, tie_word_embeddings=False),
    "k1-4_doc_flags": dict(cca_time0=1, cca_time1=4, doc_causal=True, doc_reset=True),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def make(seed: int = 0, **kw: object) -> ZayaLM:
    torch.manual_seed(seed)
    m = ZayaLM(tiny(vocab_size=VOCAB, **kw))
    with torch.no_grad():  # move constant-init parameters (conv biases, temperature, scales) off their init
        for name, p in m.named_parameters():
            if "scale" in name or "bias" in name or "norm" in name or name.endswith("temp"):
                p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def decode_in_chunks(m: ZayaLM, ids: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    cache = DecodeCache(m.cfg, ids.shape[0], ids.shape[1])
    out, t = [], 0
    for n in chunks:
        out.append(m(ids[:, t : t + n], cache=cache).logits)
        t += n
    assert t == ids.shape[1] == cache.length
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("chunks", [[1] * 9, [3, 1, 1, 2, 1, 1], [9]], ids=["steps", "mixed", "prefill"])
@torch.no_grad()
def test_prefill_and_steps_equal_full_forward(name: str, chunks: list[int]) -> None:
    m = make(1, **CONFIGS[name])
    ids = torch.randint(0, VOCAB, (2, sum(chunks)))
    torch.testing.assert_close(decode_in_chunks(m, ids, chunks), m(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("total", [1, 2, 3])
@torch.no_grad()
def test_sequences_shorter_than_the_kernel(total: int) -> None:
    m = make(2, cca_time0=4, cca_time1=4)
    ids = torch.randint(0, VOCAB, (1, total))
    torch.testing.assert_close(decode_in_chunks(m, ids, [1] * total), m(ids).logits, atol=1e-5, rtol=1e-5)


def left_padded(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
    return ids, mask


@pytest.mark.parametrize("backend", ["auto", "sdpa"])
@torch.no_grad()
def test_left_padding_is_invisible(backend: str) -> None:
    """A left-padded batch (prompts of 1, 2 and 6 tokens, kernels 4 and 3) decodes as each prompt alone: the padding
    moves no position, enters no conv / value-shift state and is never attended to."""
    m = make(3, cca_time0=4, cca_time1=3, attention_backend=backend)
    prompts = [torch.randint(0, VOCAB, (n,)) for n in (1, 6, 2)]
    ids, mask = left_padded(prompts, pad=5)
    steps = torch.randint(0, VOCAB, (3, 4))
    cache = DecodeCache(m.cfg, 3, ids.shape[1] + 4)
    prefill = m(ids, attention_mask=mask, cache=cache).logits
    decoded = [m(steps[:, i : i + 1], cache=cache).logits[:, 0] for i in range(4)]
    no_cache = m(ids, attention_mask=mask).logits
    for i, p in enumerate(prompts):
        alone = m(torch.cat([p, steps[i]])[None]).logits[0]
        n = len(p)
        torch.testing.assert_close(prefill[i, -n:], alone[:n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(no_cache[i, -n:], alone[:n], atol=1e-5, rtol=1e-5)
        for j in range(4):
            torch.testing.assert_close(decoded[j][i], alone[n + j], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_cache_size_is_the_compressed_latent() -> None:
    m = make(4, cca_time0=3, cca_time1=2)
    cache = DecodeCache(m.cfg, 2, 16)
    m(torch.randint(0, VOCAB, (2, 5)), cache=cache)
    want = cache_bytes_per_token(m.cfg, torch.float32)
    kv = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.k, layer.v))
    tails = sum(
        t.numel() * t.element_size() for layer in cache.layers for t in (layer.qk_tail, layer.d_tail, layer.v_tail)
    )
    assert kv == want["cca_per_token"] * 2 * 16  # batch 2 x capacity 16
    assert tails == want["cca_per_sequence"] * 2
    big = cache_bytes_per_token(preset("zaya1-8b"))  # 40 layers, kv latent 2 x 128 of d = 2048, bf16
    assert big["cca_per_token"] == 40 * 2 * 256 * 2
    assert big["mha_per_token"] == 8 * big["cca_per_token"] and big["gqa_per_token"] == 2 * big["cca_per_token"]


@torch.no_grad()
def test_cache_misuse_is_a_precise_error() -> None:
    m = make(5)
    cache = DecodeCache(m.cfg, 2, 4)
    with pytest.raises(ValueError, match="left padding only"):
        m(torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]), cache=cache)
    cache = DecodeCache(m.cfg, 2, 4)
    m(torch.zeros(2, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="capacity 4 exceeded: 3 cached \\+ 2 new"):
        m(torch.zeros(2, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="batch 2"):
        m(torch.zeros(1, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="for generation"):
        m(torch.zeros(2, 1, dtype=torch.long), cache=cache, labels=torch.zeros(2, 1, dtype=torch.long))


# --- generation ----------------------------------------------------------------------------------------------


PROMPTS = [[1, 5, 7, 9, 11, 3], [1, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9]]


def test_greedy_generation_cached_uncached_and_alone_agree() -> None:
    m = make(6, cca_time0=3).train()
    batched = generate(m, PROMPTS, 12)
    assert m.training  # mode restored
    assert [len(r) for r in batched] == [12, 12, 12]
    assert batched == generate(m, PROMPTS, 12, use_cache=False)
    assert batched == [generate(m, [p], 12)[0] for p in PROMPTS]
    assert generate(m, [np.array(p) for p in PROMPTS], 12) == batched  # numpy token ids work too


def test_stop_ids_end_each_row() -> None:
    m = make(6, cca_time0=3)
    full = generate(m, PROMPTS, 12)
    stop = full[0][4]  # row 0 stops at its 5th token; the others at their first `stop`, if any
    out = generate(m, PROMPTS, 12, stop_ids=[stop])
    for row, ref in zip(out, full):
        cut = ref.index(stop) + 1 if stop in ref else len(ref)
        assert row == ref[:cut]
    assert generate(m, PROMPTS, 0) == [[], [], []]


def test_sampling_is_seeded_and_top_p_narrows_to_greedy() -> None:
    m = make(7)
    kw = dict(temperature=1.5, top_p=0.9)
    a = generate(m, PROMPTS, 10, seed=1, **kw)
    assert a == generate(m, PROMPTS, 10, seed=1, **kw) == generate(m, PROMPTS, 10, seed=1, use_cache=False, **kw)
    assert a != generate(m, PROMPTS, 10, seed=2, **kw)
    assert generate(m, PROMPTS, 10, temperature=1.0, top_p=1e-6, seed=3) == generate(m, PROMPTS, 10)


@given(seed=st.integers(0, 2**16), top_p=st.floats(0.05, 1.0), temp=st.floats(0.1, 3.0))
@settings(max_examples=40, deadline=None)
def test_nucleus_sampling_stays_in_the_nucleus(seed: int, top_p: float, temp: float) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, 30, generator=g) * 3
    tok = sample_next(logits, temp, top_p, g)
    probs = torch.softmax(logits / temp, -1)
    for row, t in zip(probs, tok.tolist()):
        sorted_p, order = row.sort(descending=True)
        size = int((sorted_p.cumsum(0) - sorted_p < top_p).sum())  # smallest prefix reaching top_p
        assert t in order[:size].tolist()


def test_a_memorised_sequence_is_generated_back() -> None:
    """Train `tiny` to memorise two sequences, then greedy generation from their prefixes reproduces both."""
    torch.manual_seed(0)
    m = ZayaLM(tiny(vocab_size=VOCAB).from_scratch()).train()
    seqs = torch.randint(3, VOCAB, (2, 16))
    labels = torch.cat([seqs[:, 1:], torch.full((2, 1), -100)], 1)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(30):  # loss ~4.2 -> ~0.02
        m(seqs, doc_ids=torch.zeros_like(seqs), labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    out = generate(m, [seqs[0, :3].tolist(), seqs[1, :6].tolist()], 16)
    assert out[0][:13] == seqs[0, 3:].tolist() and out[1][:10] == seqs[1, 6:].tolist()


def test_generate_rejects_bad_arguments() -> None:
    m = make(8)
    for kwargs, msg in [
        (dict(prompts=[[1], []]), "prompt 1 is empty"),
        (dict(prompts=[[1, VOCAB]]), f"prompt 0 holds \\[{VOCAB}\\].*\\[0, {VOCAB}\\)"),
        (dict(prompts=[]), "no prompts"),
        (dict(top_p=0.0), "top_p"),
        (dict(temperature=-1.0), "temperature"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
    ]:
        args = dict(prompts=[[1, 2]], max_new_tokens=2) | kwargs
        with pytest.raises(ValueError, match=msg):
            generate(m, args.pop("prompts"), **args)
