"""Generation with a ZayaLM from token ids: batched, cached, greedy / temperature / top-p, stop ids, seeded.

    from reasonpipe.trainer.generate import generate
    new = generate(model, [prompt_ids_a, prompt_ids_b], max_new_tokens=256, temperature=0.7, top_p=0.95,
                   stop_ids=[end_of_turn_id, eos_id], seed=0)      # -> [[new ids of a], [new ids of b]]

Prompts are token ids (render them with the pipeline's chat template first). They are left-padded into one batch
(`attention_mask`: padding is invisible to attention, positions and the CCA conv/value-shift state), prefilled once
into a DecodeCache, then decoded one token per row per step. A row stops at its first stop id (which ends its
output) or after max_new_tokens; the loop ends when every row has stopped. With one seed the result is
reproducible; sampling draws from one generator for the whole batch, so a prompt's sample depends on its batch.
temperature 0 is greedy (argmax; top_p unused). The model runs in eval mode under torch.inference_mode and is put
back in its previous mode; wrap the call in torch.autocast for bf16 on a GPU.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from reasonpipe.trainer.decode_cache import DecodeCache
from reasonpipe.trainer.model import ZayaLM


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """One token per row of logits [B, V]: argmax when temperature == 0, else a draw from softmax(logits / T)
    restricted to the smallest set of most likely tokens whose probability reaches top_p (nucleus)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the more likely tokens
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)  # the most likely token always stays
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, P], attention_mask [B, P]) with every prompt right-aligned."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor([int(t) for t in p], dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def _check(model: ZayaLM, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float,
           top_p: float) -> None:  # fmt: skip
    vocab = model.cfg.vocab_size
    if not prompts:
        raise ValueError("no prompts given")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty; start it with the tokenizer's bos id")
        bad = [t for t in p if not isinstance(t, numbers.Integral) or not 0 <= t < vocab]  # numpy ints are fine
        if bad:
            raise ValueError(f"prompt {i} holds {bad[:3]}: token ids must be ints in [0, {vocab}) (the model's vocab)")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def generate(
    model: ZayaLM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_ids: Sequence[int] = (),
    seed: int = 0,
    use_cache: bool = True,
) -> list[list[int]]:
    """The new tokens of each prompt (its stop id last when it stopped). use_cache=False recomputes the whole
    sequence every step (same tokens; for benchmarks and tests)."""
    _check(model, prompts, max_new_tokens, temperature, top_p)
    device = model.head_weight.device
    ids, mask = left_pad(prompts, model.cfg.pad_token_id, device)
    b = ids.shape[0]
    gen = torch.Generator(device=device).manual_seed(seed)
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    out = torch.empty(b, 0, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    cache = DecodeCache(model.cfg, b, ids.shape[1] + max_new_tokens) if use_cache else None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            step_ids, step_mask = ids, mask
            for _ in range(max_new_tokens):
                logits = model(step_ids, attention_mask=step_mask, cache=cache, logits_to_keep=1).logits[:, -1]
                nxt = sample_next(logits, temperature, top_p, gen)
                out = torch.cat([out, torch.where(done, -1, nxt)[:, None]], dim=1)  # -1: after the row's stop
                done |= torch.isin(nxt, stops)
                if bool(done.all()):
                    break
                if cache is not None:
                    step_ids, step_mask = nxt[:, None], None
                else:
                    step_ids = torch.cat([step_ids, nxt[:, None]], dim=1)
                    step_mask = torch.cat([step_mask, torch.ones_like(nxt)[:, None]], dim=1)
    finally:
        model.train(was_training)
    return [[t for t in row if t >= 0] for row in out.tolist()]
