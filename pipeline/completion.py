"""Chat completions of a trained model: prompts rendered by the pipeline's own template, outputs split in token space.

    prompt  <bos> [<system> S <end_turn>] { <role> content <end_turn> }* <assistant> [<think>]
    output  [<think>] reasoning </think> answer <end_turn>        (a model trained on reasoning samples)
            answer <end_turn>                                      (one trained on plain chat)

A prompt is a training sample's own prefix: the conversation is rendered by `ChatTemplate` (every text piece
normalised as ingest normalises it, then encoded on its own), its closing `<eos>` replaced by the assistant marker
(`think="open"` also opens the think block for the model; the default lets the model open it, as it learned to).
`split_output` cuts a generation at its template ids: reasoning (between `<think>` and the first `</think>`), answer
(after it) and how it ended; nothing is re-tokenised, so the RSA harness carries tails forward token for token.
`complete` batches prompts through `trainer.generate` (sorted by length so batches pad little; each batch seeded
from (seed, batch number), so one seed reproduces a run with the same prompts and batch size).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reasonpipe.pipeline.generation_args import Sampling, Think
from reasonpipe.pipeline.load_model import LoadedModel
from reasonpipe.pipeline.steps import normalize_text
from reasonpipe.segments import Segment
from reasonpipe.tokenizer.template import ChatTemplate, segments_ids
from reasonpipe.tokenizer.vocab import TemplateTokens
from reasonpipe.trainer.generate import generate


class PromptError(ValueError):
    """A conversation that cannot be rendered as a generation prompt (the message says what is wrong)."""


def conversation(messages: Sequence[Mapping[str, Any]], system: str | None = None) -> list[dict[str, Any]]:
    """Turns for the template: roles checked, texts normalised as ingest does; a system prompt goes first."""
    turns: list[dict[str, Any]] = []
    if system is not None and not any(m.get("role") == "system" for m in messages):
        turns.append({"role": "system", "content": normalize_text(system.strip())})
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise PromptError(f"message {i}: role {role!r}; allowed: system, user, assistant")
        if not isinstance(content, str):
            raise PromptError(f"message {i}: content must be a string, got {type(content).__name__}")
        turn = {"role": role, "content": normalize_text(content.strip())}
        if role == "assistant" and isinstance(m.get("reasoning"), str):
            turn["reasoning"] = normalize_text(m["reasoning"].strip())
        turns.append(turn)
    if not turns or turns[-1]["role"] != "user":
        raise PromptError("the conversation must end with a user message (the model answers it)")
    return turns


def render_turns(template: ChatTemplate, turns: list[dict[str, Any]]) -> list[Segment]:
    """The segments of a conversation as a training sample renders it: `<bos> ... <end_turn> <eos>`."""
    return template.encode({"kind": "chat", "turns": turns})


def generation_prompt(segments: Sequence[Segment], tokens: TemplateTokens, think: Think = "model") -> np.ndarray:
    """A rendered conversation's ids with the closing `<eos>` replaced by the assistant marker (and `<think>`)."""
    ids = segments_ids(segments)
    if not len(ids) or int(ids[-1]) != tokens.eos:
        raise PromptError("a rendered conversation must end with <eos>")
    tail = [tokens.assistant] + ([tokens.think_open] if think == "open" else [])
    return np.concatenate([ids[:-1], np.asarray(tail, dtype=np.uint32)])


@dataclass(frozen=True)
class Completion:
    ids: tuple[int, ...]  # the generated ids (the stop id last when it stopped)
    reasoning: np.ndarray | None  # ids inside the think block (None: no think block was opened)
    answer: np.ndarray  # ids after </think> (all of the output when no think block was opened)
    closed: bool | None  # whether the think block was closed (None: none was opened)
    stop: str  # "end_turn", "eos" or "length" (max_new_tokens reached)

    @property
    def stopped(self) -> bool:
        return self.stop != "length"

    def candidate_reasoning(self) -> np.ndarray:
        """What the RSA harness shows of this trace: its reasoning, or its whole output when it opened none."""
        return self.reasoning if self.reasoning is not None else self.answer


def split_output(ids: Sequence[int], tokens: TemplateTokens, think_opened: bool = False) -> Completion:
    """Reasoning, answer and ending of a generation (module doc); `think_opened`: the prompt ended with <think>."""
    ids = tuple(int(i) for i in ids)
    stop = {tokens.end_turn: "end_turn", tokens.eos: "eos"}.get(ids[-1], "length") if ids else "length"
    body = np.asarray(ids[:-1] if stop != "length" else ids, dtype=np.uint32)
    start = 0 if think_opened else 1 if len(body) and body[0] == tokens.think_open else None
    if start is None:
        return Completion(ids, None, body, None, stop)
    close = np.flatnonzero(body[start:] == tokens.think_close)
    if not len(close):
        return Completion(ids, body[start:], body[:0], False, stop)
    end = start + int(close[0])
    return Completion(ids, body[start:end], body[end + 1 :], True, stop)


@dataclass
class Throughput:
    """Tokens generated and seconds spent by `complete` calls (prefill included)."""

    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def batch_seed(seed: int, *parts: int) -> int:
    """A generator seed for one batch from the run's seed and the batch's coordinates (stable across runs)."""
    digest = hashlib.blake2b(":".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def complete(
    loaded: LoadedModel,
    prompts: Sequence[np.ndarray],
    sampling: Sampling,
    stream: int = 0,
    throughput: Throughput | None = None,
) -> list[Completion]:
    """One completion per prompt (ids), batched; `stream` separates the seeds of calls with the same sampling."""
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    out: list[Completion | None] = [None] * len(prompts)
    stops = (loaded.tokens.end_turn, loaded.tokens.eos)
    t0 = time.perf_counter()
    for b in range(0, len(order), sampling.batch_size):
        chunk = order[b : b + sampling.batch_size]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=loaded.bf16):
            new = generate(
                loaded.model, [prompts[i] for i in chunk], sampling.max_new_tokens, temperature=sampling.temperature,
                top_p=sampling.top_p, stop_ids=stops, seed=batch_seed(sampling.seed, stream, b),
            )  # fmt: skip
        for i, ids in zip(chunk, new):
            out[i] = split_output(ids, loaded.tokens, sampling.think == "open")
    if throughput is not None:
        throughput.tokens += sum(len(c.ids) for c in out)
        throughput.seconds += time.perf_counter() - t0
    return out  # type: ignore[return-value]


def decode(template: ChatTemplate, ids: np.ndarray | Sequence[int] | None, specials: bool = False) -> str | None:
    """Text of some ids (None stays None); `specials` keeps template tokens as their strings."""
    return None if ids is None else template.decode(ids, skip_special_tokens=not specials)


def completion_record(template: ChatTemplate, c: Completion) -> dict[str, Any]:
    """The output fields of a completion (README: Generating and evaluating)."""
    return {
        "output": decode(template, c.ids, specials=True),
        "reasoning": decode(template, c.reasoning),
        "answer": decode(template, c.answer),
        "closed_reasoning": c.closed,
        "tokens": len(c.ids),
        "stopped": c.stopped,
        "stop": c.stop,
    }
