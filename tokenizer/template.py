"""The chat template: a canonical sample rendered as token segments.

    chat:  <bos> { <role> content <end_turn> }* <eos>
           assistant content = [<think> reasoning </think>] answer
    plain: <bos> text <eos>

Each text piece is encoded on its own (no prefix space, specials inside text encoded as text), so the sample's
tokens are exactly the concatenation of its segments and trimming can cut in token space. Adjacent template tokens
that belong to the same think block are merged into one SEG_TEMPLATE segment; empty texts give no segment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from tokenizer.vocab import TemplateTokens, prepare
from trimming.core import SEG_ANSWER, SEG_PROMPT, SEG_REASONING, SEG_TEMPLATE, SEG_TEXT, Segment

ROLES = ("system", "user", "assistant")

# a sample's plan: (kind, think, payload) where payload is a text (to encode) or a tuple of template ids
_Piece = tuple[int, int, str | tuple[int, ...]]


def _ids(xs: Sequence[int]) -> np.ndarray:
    arr = np.asarray(xs, dtype=np.uint32)
    arr.flags.writeable = False
    return arr


class ChatTemplate:
    """Renders samples (Documents, metadata dicts or plain strings) into `Segment` lists with one tokenizer."""

    REGEX_ABOVE = 16  # with more special tokens than this, texts are scanned for them with one regex

    def __init__(self, tokenizer: Tokenizer, tokens: TemplateTokens) -> None:
        self.tokenizer = tokenizer
        self.tokens = tokens
        self._runs: dict[tuple[int, ...], np.ndarray] = {}  # template token runs, shared read-only arrays
        # Texts that contain a special token's string must encode it as text (`encode_special_tokens`), which costs
        # ~7% of encoding time; they are rare, so only they go through a second instance with that switch on.
        spec = prepare(tokenizer).to_str()  # idempotent on loaded or trained tokenizers
        self._plain, self._literal = Tokenizer.from_str(spec), Tokenizer.from_str(spec)
        self._plain.encode_special_tokens, self._literal.encode_special_tokens = False, True
        specials = sorted({t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special})
        self._specials = specials
        many = len(specials) > self.REGEX_ABOVE
        self._special_re = re.compile("|".join(map(re.escape, specials))) if many else None

    # planning: what to encode, without encoding ----------------------------------------------------------------
    def _plan(self, sample: Any) -> list[_Piece]:
        t = self.tokens
        kind, turns, text = _unpack(sample)
        if kind != "chat":
            return [(SEG_TEMPLATE, -1, (t.bos,)), (SEG_TEXT, -1, text), (SEG_TEMPLATE, -1, (t.eos,))]
        plan: list[_Piece] = [(SEG_TEMPLATE, -1, (t.bos,))]
        assistant = 0
        for n, turn in enumerate(turns):
            role = turn.get("role")
            if role not in ROLES:
                raise ValueError(f"turn {n}: role {role!r}; allowed: {', '.join(ROLES)}")
            plan.append((SEG_TEMPLATE, -1, (t.role(role),)))
            content = turn.get("content") or ""
            if role != "assistant":
                plan.append((SEG_PROMPT, -1, content))
            else:
                reasoning = turn.get("reasoning")
                if reasoning:
                    a = assistant
                    plan += [(SEG_TEMPLATE, a, (t.think_open,)), (SEG_REASONING, a, reasoning)]
                    plan.append((SEG_TEMPLATE, a, (t.think_close,)))
                plan.append((SEG_ANSWER, -1, content))
                assistant += 1
            plan.append((SEG_TEMPLATE, -1, (t.end_turn,)))
        plan.append((SEG_TEMPLATE, -1, (t.eos,)))
        return plan

    def _run(self, ids: list[int]) -> np.ndarray:
        key = tuple(ids)
        arr = self._runs.get(key)
        if arr is None:
            arr = self._runs[key] = _ids(ids)
        return arr

    def _assemble(self, plan: list[_Piece], encoded: Iterator[np.ndarray]) -> list[Segment]:
        """Segments from a plan, its texts taken in order from `encoded`; merges adjacent template tokens."""
        out: list[Segment] = []
        pending: list[int] = []  # template ids waiting to be merged
        pending_think = -1
        for kind, think, payload in plan:
            if isinstance(payload, tuple):
                if pending and think != pending_think:
                    out.append(Segment(SEG_TEMPLATE, self._run(pending), pending_think))
                    pending = []
                pending += payload
                pending_think = think
                continue
            ids = next(encoded)
            if len(ids) == 0:
                continue
            if pending:
                out.append(Segment(SEG_TEMPLATE, self._run(pending), pending_think))
                pending = []
            out.append(Segment(kind, ids, think))
        if pending:
            out.append(Segment(SEG_TEMPLATE, self._run(pending), pending_think))
        return out

    # encoding ----------------------------------------------------------------------------------------------------
    def encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        """Encode texts independently (batched, no specials added) to read-only uint32 arrays."""
        if not texts:
            return []
        # encode_batch, not encode_batch_fast: in tokenizers 0.23 the latter is ~15% slower (measured)
        literal = [self._has_special(text) for text in texts]
        if not any(literal):
            encs = self._plain.encode_batch(texts, add_special_tokens=False)
        else:
            encs = [None] * len(texts)
            for instance, flag in ((self._plain, False), (self._literal, True)):
                where = [i for i, f in enumerate(literal) if f == flag]
                for i, e in zip(where, instance.encode_batch([texts[i] for i in where], add_special_tokens=False)):
                    encs[i] = e
        # one array for the whole batch, then read-only views: far cheaper than an array per text
        ends = np.cumsum([len(e) for e in encs]).tolist()
        flat = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.uint32, count=ends[-1])
        flat.flags.writeable = False
        return [flat[a:b] for a, b in zip([0, *ends[:-1]], ends)]

    def _has_special(self, text: str) -> bool:
        if self._special_re is not None:
            return self._special_re.search(text) is not None
        return any(s in text for s in self._specials)

    def encode(self, sample: Any) -> list[Segment]:
        return self.encode_many([sample])[0]

    def encode_many(self, samples: Sequence[Any]) -> list[list[Segment]]:
        """Segments of many samples, all their texts encoded in one `encode_batch` call."""
        plans = [self._plan(s) for s in samples]
        texts = [p for plan in plans for _, _, p in plan if isinstance(p, str)]
        encoded = iter(self.encode_texts(texts))  # consumed in order by the plans
        return [self._assemble(plan, encoded) for plan in plans]

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def _unpack(sample: Any) -> tuple[str, list[Mapping[str, Any]], str]:
    """(kind, turns, text) of a Document, a metadata/record dict or a plain string."""
    if isinstance(sample, str):
        return "text", [], sample
    if isinstance(sample, Mapping):
        meta, text = sample, sample.get("text", "")
    else:  # a datatrove Document (duck-typed: this module must not need datatrove)
        meta, text = sample.metadata, sample.text
    if meta.get("kind") == "chat" or (meta.get("kind") is None and meta.get("turns")):
        turns = meta.get("turns")
        if not isinstance(turns, list):
            raise ValueError(f"chat sample: metadata['turns'] must be a list, got {type(turns).__name__}")
        return "chat", turns, ""
    if not isinstance(text, str):
        raise ValueError(f"plain sample: text must be a string, got {type(text).__name__}")
    return "text", [], text


def segments_ids(segments: Sequence[Segment]) -> np.ndarray:
    """The token sequence of a sample (its segments concatenated)."""
    return np.concatenate([s.ids for s in segments]) if segments else np.zeros(0, np.uint32)


def assistant_flags(segments: Sequence[Segment], tokens: TemplateTokens) -> np.ndarray:
    """Per-token flags of the assistant-side template tokens (for the "assistant" loss-mask policy).

    Flagged: template tokens inside a think block (`<think>`, `</think>`, a trim marker) and the `<end_turn>` that
    closes an assistant turn: what the model must learn to produce. Not flagged: BOS/EOS and role headers.
    """
    flags = [np.zeros(len(s.ids), dtype=bool) for s in segments]
    role = -1
    for s, f in zip(segments, flags):
        if s.kind != SEG_TEMPLATE:
            continue
        if s.think >= 0:
            f[:] = True
            continue
        for j, tid in enumerate(s.ids):
            if tid == tokens.end_turn and role == tokens.assistant:
                f[j] = True
            elif tid in (tokens.system, tokens.user, tokens.assistant):
                role = int(tid)
    return np.concatenate(flags) if flags else np.zeros(0, dtype=bool)
