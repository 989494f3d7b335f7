"""Numerical parity with the reference implementation, transformers' ZayaForCausalLM (fp32, CPU, tiny random)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers.models.zaya")
from transformers import ZayaConfig, ZayaForCausalLM  # noqa: E402

from reasonpipe.trainer.config import tiny  # noqa: E402
from reasonpipe.trainer.decode_cache import DecodeCache  # noqa: E402
from reasonpipe.trainer.generate import generate, left_pad  # noqa: E402
from reasonpipe.trainer.hf_interop import rename_to_hf  # noqa: E402
from reasonpipe.trainer.model import ZayaLM  # noqa: E402

VOCAB = 128
SHAPES = {
    "gqa2": {},
    "mqa_k3_untied": {
        "num_key_value_heads": 1,
        "cca_time0": 3,
        "num_layers": 3,
        "rope_theta": 5e6,
        "tie_word_embeddings": False,
    },
}


def reference(seed: int, **kw: object) -> ZayaForCausalLM:
    torch.manual_seed(seed)
    ref = ZayaForCausalLM(ZayaConfig(**tiny(vocab_size=VOCAB, **kw).to_hf_dict())).eval()
    with torch.no_grad():  # perturb everything, including ones/zeros inits (temperature, scales, biases, EDA)
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for layer in ref.model.layers:  # token-dependent routing (init logits are near-uniform), small biases
            layer.mlp.gate.router_mlp.out_proj.weight.normal_(0, 1.0)
            layer.mlp.gate.balancing_biases[:-1].normal_(0, 0.01)
    return ref


@pytest.fixture(scope="module", params=sorted(SHAPES))
def pair(request: pytest.FixtureRequest) -> tuple[ZayaForCausalLM, ZayaLM]:
    ref = reference(0, **SHAPES[request.param])
    return ref, ZayaLM.from_hf(ref).eval()


def test_logits_match_reference(pair: tuple[ZayaForCausalLM, ZayaLM]) -> None:
    ref, ours = pair
    ids = torch.randint(0, VOCAB, (2, 29))
    with torch.no_grad():
        want = ref(ids).logits
        got = ours(ids)
    torch.testing.assert_close(got.logits, want, atol=1e-4, rtol=1e-4)
    assert (got.expert_counts > 0).sum() > got.expert_counts.shape[0]  # routing is not degenerate


def test_position_ids_match_reference(pair: tuple[ZayaForCausalLM, ZayaLM]) -> None:
    ref, ours = pair
    ids = torch.randint(0, VOCAB, (1, 20))
    pos = torch.cat([torch.arange(8), torch.arange(12)])[None] + 3
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, position_ids=pos).logits, ref(ids, position_ids=pos).logits, atol=1e-4,
                                   rtol=1e-4)  # fmt: skip


def test_loss_and_gradients_match_reference() -> None:
    ref = reference(1).train()
    ours = ZayaLM.from_hf(ref).train()
    ids = torch.randint(0, VOCAB, (2, 24))
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]  # ours takes shifted labels; the reference shifts internally
    out = ours(ids, labels=labels)
    want = ref(ids, labels=ids)
    torch.testing.assert_close(out.loss, want.loss, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    want.loss.backward()
    got = rename_to_hf({n: p.grad for n, p in ours.named_parameters()}, ours.cfg)
    ref_grads = dict(ref.named_parameters())
    assert set(got) == set(ref_grads) - {"lm_head.weight"} or set(got) == set(ref_grads)
    for k, g in got.items():
        torch.testing.assert_close(g, ref_grads[k].grad, atol=1e-5, rtol=1e-4, msg=k)


def test_save_hf_loads_in_transformers(tmp_path, pair: tuple[ZayaForCausalLM, ZayaLM]) -> None:
    _, ours = pair
    ours.save_hf(tmp_path)
    loaded = ZayaForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, VOCAB, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, ours(ids).logits, atol=1e-4, rtol=1e-4)
    for a, b in zip(loaded.model.layers, ours.routers()):
        torch.testing.assert_close(a.mlp.gate.balancing_biases, b.balancing_biases)
    assert ZayaLM.from_hf(tmp_path).cfg == ours.cfg


def test_save_pretrained_folder_loads_into_ours(tmp_path) -> None:
    ref = reference(2)
    ref.save_pretrained(tmp_path)
    ours = ZayaLM.from_hf(tmp_path, doc_reset=True).eval()
    assert ours.cfg.doc_reset and ours.cfg.key_temp_init == 0.0
    ids = torch.randint(0, VOCAB, (1, 15))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-4, rtol=1e-4)


def test_cached_decoding_matches_reference_generate() -> None:
    """A left-padded batch, greedy: our prefill + cached steps give the reference generate's tokens and logits."""
    ref = reference(3, cca_time0=3, cca_time1=2)
    ours = ZayaLM.from_hf(ref).eval()
    prompts = [[5, 9, 17, 3, 8, 1, 44], [7, 2], [11, 12, 13, 14]]
    ids, mask = left_pad(prompts, ours.cfg.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        kw = dict(do_sample=False, eos_token_id=None, pad_token_id=ours.cfg.pad_token_id)
        want = ref.generate(
            ids, attention_mask=mask, max_new_tokens=6, return_dict_in_generate=True, output_logits=True, **kw
        )
        cache = DecodeCache(ours.cfg, len(prompts), ids.shape[1] + 6)
        logits = [ours(ids, attention_mask=mask, cache=cache, logits_to_keep=1).logits[:, -1]]
        for t in range(5):
            logits.append(ours(want.sequences[:, ids.shape[1] + t, None], cache=cache).logits[:, -1])
    for step, (got, exp) in enumerate(zip(logits, want.logits)):
        torch.testing.assert_close(got, exp, atol=1e-4, rtol=1e-4, msg=f"step {step}")
    assert generate(ours, prompts, 6) == want.sequences[:, ids.shape[1] :].tolist()
