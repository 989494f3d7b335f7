"""The ZAYA1 trainer model on CPU: forward contract, chunked loss, document handling, expert dispatch, balancing,
parameter counts, torch.compile-friendliness and checkpoint export (no transformers needed here)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonpipe.trainer.attention import same_doc_masks
from reasonpipe.trainer.attention_backends import AttnMask, dense_doc_mask
from reasonpipe.trainer.balancing import balance_metrics, update_bias, update_model_biases
from reasonpipe.trainer.config import ModelConfig, preset, tiny
from reasonpipe.trainer.layers import rope_cos_sin
from reasonpipe.trainer.model import ZayaLM, chunked_linear_cross_entropy
from reasonpipe.trainer.moe import grouped_mm
from reasonpipe.trainer.params import count_params

VOCAB = 97


def make(seed: int = 0, **kw: object) -> ZayaLM:
    torch.manual_seed(seed)
    model = ZayaLM(tiny(vocab_size=VOCAB, **kw))
    with torch.no_grad():  # move constant-init parameters off their init so every path matters
        for name, p in model.named_parameters():
            if "scale" in name or "bias" in name or "norm" in name or name.endswith("temp"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def shifted(ids: torch.Tensor) -> torch.Tensor:
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]
    return labels


@pytest.fixture(scope="module")
def model() -> ZayaLM:
    return make().eval()


def test_forward_shapes_and_counts(model: ZayaLM) -> None:
    ids = torch.randint(0, VOCAB, (3, 20))
    out = model(ids)
    assert out.logits.shape == (3, 20, VOCAB) and out.logits.dtype == torch.float32
    assert out.loss is None and out.token_loss is None
    cfg = model.cfg
    assert out.expert_counts.shape == (cfg.num_layers, cfg.num_experts)
    assert out.expert_counts.dtype == torch.long
    # every token goes to one expert or (rarely) the skip class, which is excluded from the counts
    assert (out.expert_counts.sum(-1) <= 60).all() and (out.expert_counts.sum(-1) >= 55).all()


def test_chunked_loss_equals_full_cross_entropy(model: ZayaLM) -> None:
    ids = torch.randint(0, VOCAB, (2, 37))
    labels = shifted(ids)
    loss_mask = (torch.rand(2, 37) > 0.3).long()
    full = model(ids).logits
    out = model(ids, labels=labels, loss_mask=loss_mask)
    assert out.logits is None
    counted = (labels != -100) & (loss_mask == 1)
    ref = F.cross_entropy(full.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100, reduction="none").view(2, 37)
    torch.testing.assert_close(out.token_loss, torch.where(counted, ref, 0.0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref[counted].mean(), atol=1e-5, rtol=1e-5)


@given(n=st.integers(1, 50), chunk=st.integers(1, 64), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_chunked_ce_gradients_match_full(n: int, chunk: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 8, generator=g, requires_grad=True)
    w = torch.randn(11, 8, generator=g, requires_grad=True)
    labels = torch.randint(-1, 11, (n,), generator=g).masked_fill_(torch.rand(n, generator=g) < 0.2, -100)
    labels[labels == -1] = 3
    weights = torch.rand(n, generator=g)
    (chunked_linear_cross_entropy(h, w, labels, chunk) * weights).sum().backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    (F.cross_entropy(h @ w.T, labels, ignore_index=-100, reduction="none") * weights).sum().backward()
    torch.testing.assert_close(gh, h.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, w.grad, atol=1e-5, rtol=1e-5)


def test_causal(model: ZayaLM) -> None:
    ids = torch.randint(0, VOCAB, (2, 24))
    other = ids.clone()
    other[:, 15:] = torch.randint(0, VOCAB, (2, 9))
    torch.testing.assert_close(model(ids).logits[:, :15], model(other).logits[:, :15])


@pytest.mark.parametrize("doc_flags", [False, True])
def test_conv_kernel_longer_than_the_sequence(doc_flags: bool) -> None:
    """S < kernel - 1 used to crash (a shift past the sequence start): a short sequence is the prefix of a long one."""
    m = make(7, cca_time0=4, cca_time1=4, doc_causal=doc_flags, doc_reset=doc_flags).eval()
    ids = torch.randint(0, VOCAB, (2, 9))
    doc = torch.zeros_like(ids) if doc_flags else None
    long = m(ids, doc_ids=doc).logits
    for s in (1, 2, 3):
        short = m(ids[:, :s], doc_ids=None if doc is None else doc[:, :s]).logits
        torch.testing.assert_close(short, long[:, :s], atol=1e-5, rtol=1e-5)


def test_packed_documents_equal_separate_runs() -> None:
    """doc_causal + doc_reset + restarted positions: each packed document behaves as if run alone."""
    m = make(1, doc_causal=True, doc_reset=True).eval()
    a, b = torch.randint(0, VOCAB, (1, 11)), torch.randint(0, VOCAB, (1, 14))
    packed = torch.cat([a, b], dim=1)
    doc_ids = torch.tensor([[0] * 11 + [1] * 14])
    pos = torch.cat([torch.arange(11), torch.arange(14)])[None]
    out = m(packed, position_ids=pos, doc_ids=doc_ids).logits
    torch.testing.assert_close(out[:, :11], m(a).logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 11:], m(b).logits, atol=1e-5, rtol=1e-5)
    # without the conv/value-shift reset the second document sees the tail of the first one
    m.cfg.doc_reset = False
    leaky = m(packed, position_ids=pos, doc_ids=doc_ids).logits
    assert not torch.allclose(leaky[:, 11:], m(b).logits, atol=1e-4)


def test_same_doc_masks_and_mask() -> None:
    doc = torch.tensor([[0, 0, 1, 1, 1, 2]])
    v1 = same_doc_masks(doc, 2)[1][0, :, 0].tolist()
    assert v1 == [False, True, False, True, True, False]
    mask = dense_doc_mask(doc)[0, 0]
    assert mask[4].tolist() == [False, False, True, True, True, False]
    assert not mask.triu(1).any()


def test_grouped_mm_and_loop_paths_agree() -> None:
    m = make(2).train()
    ids = torch.randint(0, VOCAB, (2, 30))
    grads = []
    for fast in (True, False):
        m.zero_grad()
        m.set_grouped_mm(fast)
        out = m(ids, labels=shifted(ids))
        out.loss.backward()
        grads.append((out.loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if "experts" in n}))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for k, v in grads[0][1].items():
        torch.testing.assert_close(v, grads[1][1][k], atol=1e-6, rtol=1e-5)


@given(sizes=st.lists(st.integers(0, 9), min_size=1, max_size=6), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_batched_expert_matmul_equals_grouped_mm(sizes: list[int], seed: int) -> None:
    """The no-loop fallback (sorted tokens, one zero-padded bmm) and torch._grouped_mm: same values and gradients
    for any group sizes, empty groups included."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x = torch.randn(n, 8, generator=g, requires_grad=True)
    w = torch.randn(len(sizes), 8, 4, generator=g, requires_grad=True)
    offs = torch.cumsum(torch.tensor(sizes), 0).to(torch.int32)
    w_out = torch.randn(n, 4, generator=g)
    results = []
    for fast in (True, False):
        y = grouped_mm(x, w, offs, fast=fast)
        results.append((y, *torch.autograd.grad((y * w_out).sum(), (x, w))))
    per_group = torch.cat([x[lo:hi] @ w[e] for e, (lo, hi) in enumerate(zip([0, *offs[:-1].tolist()], offs.tolist()))])
    torch.testing.assert_close(results[1][0], per_group, atol=1e-5, rtol=1e-5)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_activation_checkpointing_same_grads_and_counts() -> None:
    ids = torch.randint(0, VOCAB, (2, 16))
    results = []
    for ckpt in (False, True):
        m = make(3, activation_checkpointing=ckpt).train()
        out = m(ids, labels=shifted(ids))
        out.loss.backward()
        results.append((out.expert_counts, {n: p.grad for n, p in m.named_parameters()}))
    assert torch.equal(results[0][0], results[1][0])  # recompute does not add to the counts
    for k, v in results[0][1].items():
        torch.testing.assert_close(v, results[1][1][k], atol=1e-6, rtol=1e-5)


def test_bf16_autocast_close_to_fp32(model: ZayaLM) -> None:
    ids = torch.randint(0, VOCAB, (2, 16))
    labels = shifted(ids)
    ref = model(ids, labels=labels).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=labels)
    assert out.token_loss.dtype == torch.float32
    assert abs(out.loss.item() - ref.item()) < 0.05 * ref.item()


def test_tiny_model_learns() -> None:
    torch.manual_seed(0)
    m = ZayaLM(tiny(vocab_size=VOCAB).from_scratch()).train()
    opt = torch.optim.AdamW(m.parameters(), lr=5e-3)
    ids = torch.randint(0, VOCAB, (2, 32))
    doc = torch.zeros_like(ids)
    losses = []
    for _ in range(8):
        out = m(ids, doc_ids=doc, labels=shifted(ids))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < 0.8 * losses[0]  # memorising one batch: ~4.6 -> ~3.2 in 8 steps


def test_block_has_no_graph_breaks() -> None:
    cfg = tiny(vocab_size=VOCAB)
    blk = ZayaLM(cfg).layers[1]
    h, prev = torch.randn(2, 12, cfg.hidden_size), torch.randn(2, 12, cfg.router_hidden_size)
    cos, sin = rope_cos_sin(torch.arange(12)[None], cfg.rotary_dim, cfg.rope_theta)
    doc = torch.tensor([[0] * 5 + [1] * 7] * 2)
    mask = AttnMask("sdpa", dense=dense_doc_mask(doc))
    explain = torch._dynamo.explain(blk)(h, prev, cos, sin, same_doc_masks(doc, 1), mask)
    assert explain.graph_break_count == 0 and explain.graph_count == 1, explain.break_reasons


# --- balancing -----------------------------------------------------------------------------------------------


def test_pid_update_is_recentred_adamw_on_load_error() -> None:
    n_exp, steps = 4, 5
    bias = torch.zeros(n_exp + 1)
    bias[-1] = -1.0
    m, v = torch.zeros(n_exp + 1), torch.zeros(n_exp + 1)
    ref = torch.zeros(n_exp, requires_grad=True)
    opt = torch.optim.AdamW([ref], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        counts = torch.randint(0, 100, (n_exp,), generator=g)
        update_bias(bias, m, v, step, counts, mode="pid", lr=1e-2, betas=(0.9, 0.99))
        ref.grad = counts.float() / counts.sum() - 1 / n_exp
        opt.step()
    # AdamW with g as gradient, re-centred each step (from a zero start: AdamW's biases minus their mean)
    torch.testing.assert_close(bias[:n_exp], ref.detach() - ref.detach().mean())
    assert bias[-1].item() == -1.0 and m[-1].item() == 0.0


@given(seed=st.integers(0, 2**16), mode=st.sampled_from(["pid", "sign"]), start=st.floats(-0.5, 0.5))
@settings(max_examples=20, deadline=None)
def test_bias_updates_do_not_drift_against_the_skip_class(seed: int, mode: str, start: float) -> None:
    """Per-expert AdamW normalisation and sign() do not sum to zero: without re-centring the expert biases drift
    together against the frozen skip bias. Their mean stays where it started (e.g. a loaded checkpoint's)."""
    g = torch.Generator().manual_seed(seed)
    n_exp = 6
    bias = torch.cat([start + 0.01 * torch.randn(n_exp, generator=g), torch.tensor([-1.0])])
    mean0 = bias[:n_exp].mean().item()
    m, v = torch.zeros_like(bias), torch.zeros_like(bias)
    skew = torch.linspace(1, 4, n_exp)
    for step in range(1, 101):
        counts = (torch.rand(n_exp, generator=g) * 100 * skew).long()
        update_bias(bias, m, v, step, counts, mode=mode, lr=1e-2)  # type: ignore[arg-type]
    assert bias[:n_exp].mean().item() == pytest.approx(mean0, abs=1e-5)
    assert bias[-1].item() == -1.0
    assert bias[0] > bias[-2]  # the underloaded expert was pushed up relative to the overloaded one


def test_sign_and_off_modes() -> None:
    bias, m, v = torch.zeros(3), torch.zeros(3), torch.zeros(3)
    update_bias(bias, m, v, 1, torch.tensor([10, 30, 20]), mode="off")
    assert bias.tolist() == [0.0, 0.0, 0.0]
    update_bias(bias, m, v, 1, torch.tensor([10, 30, 20]), mode="sign", lr=0.5)
    assert bias.tolist() == [0.5, -0.5, 0.0]
    with pytest.raises(ValueError, match="mode"):
        update_bias(bias, m, v, 1, torch.tensor([1, 1, 1]), mode="bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["pid", "sign"])
def test_bias_balancing_closes_the_loop(mode: str) -> None:
    """Biased top-1 selection over skewed router probabilities: balancing drives the loads toward uniform."""
    g = torch.Generator().manual_seed(0)
    n_exp = 8
    probs = torch.softmax(torch.randn(4096, n_exp + 1, generator=g) + torch.linspace(0, 2, n_exp + 1), -1)
    bias = torch.zeros(n_exp + 1)
    bias[-1] = -1.0
    m, v = torch.zeros_like(bias), torch.zeros_like(bias)

    def loads() -> torch.Tensor:
        choice = torch.argmax(probs + bias, -1)
        return torch.bincount(choice, minlength=n_exp + 1)[:n_exp]

    before = balance_metrics(loads())["max_violation"]
    for step in range(1, 301):
        update_bias(bias, m, v, step, loads(), mode=mode, lr=2e-3)  # type: ignore[arg-type]
    after = balance_metrics(loads())
    assert after["max_violation"] < 0.25 * before and after["dead_experts"] == 0
    assert bias[-1].item() == -1.0


def test_update_model_biases_touches_every_router(model: ZayaLM) -> None:
    m = make(4)
    counts = torch.tensor([[5, 1, 1, 1]] * m.cfg.num_layers)
    update_model_biases(m.balance_state(), counts, step=1)
    for state in m.balance_state():
        assert state["bias"][0] < 0 and (state["bias"][1:4] > 0).all() and state["bias"][4] == -1.0
    with pytest.raises(ValueError, match="layers"):
        update_model_biases(m.balance_state(), counts[:1], step=1)


def test_balance_metrics_extremes() -> None:
    uniform = balance_metrics(torch.full((3, 4), 25))
    assert uniform["max_violation"] == 0 and uniform["cv"] == 0 and uniform["dead_experts"] == 0
    assert uniform["entropy"] == pytest.approx(1.0)
    collapsed = balance_metrics(torch.tensor([[100, 0, 0, 0]]))
    assert collapsed["max_violation"] == pytest.approx(3.0) and collapsed["dead_experts"] == 3
    assert collapsed["entropy"] == pytest.approx(0.0, abs=1e-9)


# --- config, parameters, export ------------------------------------------------------------------------------


def test_param_counts() -> None:
    for cfg in (tiny(), tiny(tie_word_embeddings=False, cca_time0=3, num_key_value_heads=1)):
        assert count_params(cfg)["total"] == ZayaLM(cfg).num_params()
    big = count_params(preset("zaya1-8b"))  # published: ~0.76B active / ~8.3B total without the 0.54B embedding
    assert 8.2e9 < big["total_no_embedding"] < 8.4e9
    assert 0.74e9 < big["active_no_embedding"] < 0.77e9
    assert 0.53e9 < big["embedding"] < 0.55e9
    assert 1.0e8 < count_params(preset("small"))["total"] < 2.0e8


def test_long_context_presets() -> None:
    base = preset("zaya1-8b")
    for name, theta, positions in [
        ("zaya1-8b", 1e4, 4096),
        ("zaya1-8b-32k", 1e6, 32_768),
        ("zaya1-8b-131k", 5e6, 131_072),
    ]:
        cfg = preset(name)
        assert (cfg.rope_theta, cfg.seq_len) == (theta, positions)
        assert cfg.replace(rope_theta=base.rope_theta, seq_len=base.seq_len) == base  # same shape and init
        assert cfg.to_hf_dict()["max_position_embeddings"] == positions


def test_config_round_trip_and_errors() -> None:
    cfg = preset("small", doc_reset=True)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"hidden_sise": 3})
    with pytest.raises(ValueError, match="preset"):
        preset("huge")
    with pytest.raises(ValueError, match="multiple"):
        tiny(num_attention_heads=3)
