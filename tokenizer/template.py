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
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from reasonpipe.segments import SEG_ANSWER, SEG_PROMPT, SEG_REASONING, SEG_TEMPLATE, SEG_TEXT, Segment
from reasonpipe.tokenizer.cache import EncodedBatch
from reasonpipe.tokenizer.vocab import TemplateTokens, prepare

ROLES = ("system", "user", "assistant")


class _Plan:
    """The pieces of a batch of samples, in order, as columns: what to encode, without encoding.

    A piece is a text (to encode) or one template token; `template` holds -1 for a text piece.
    """

    def __init__(self) -> None:
        self.kind: list[int] = []
        self.think: list[int] = []
        self.template: list[int] = []  # the template token id of each piece, -1 for a text piece
        self.texts: list[str] = []
        self.doc_pieces: list[int] = []  # pieces per sample

    def token(self, think: int, token_id: int) -> None:
        self.kind.append(SEG_TEMPLATE)
        self.think.append(think)
        self.template.append(token_id)

    def text(self, kind: int, think: int, text: str) -> None:
        self.kind.append(kind)
        self.think.append(think)
        self.template.append(-1)
        self.texts.append(text)


class ChatTemplate:
    """Renders samples (Documents, metadata dicts or plain strings) into segments with one tokenizer."""

    REGEX_ABOVE = 16  # with more special tokens than this, texts are scanned for them with one regex

    def __init__(self, tokenizer: Tokenizer, tokens: TemplateTokens) -> None:
        self.tokenizer = tokenizer
        self.tokens = tokens
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
    def _plan_sample(self, plan: _Plan, sample: Any) -> None:
        t, start = self.tokens, len(plan.kind)
        kind, turns, text = _unpack(sample)
        plan.token(-1, t.bos)
        if kind != "chat":
            plan.text(SEG_TEXT, -1, text)
        assistant = 0
        for n, turn in enumerate(turns):
            role = turn.get("role")
            if role not in ROLES:
                raise ValueError(f"turn {n}: role {role!r}; allowed: {', '.join(ROLES)}")
            plan.token(-1, t.role(role))
            content = turn.get("content") or ""
            if role != "assistant":
                plan.text(SEG_PROMPT, -1, content)
            else:
                reasoning = turn.get("reasoning")
                if reasoning:
                    plan.token(assistant, t.think_open)
                    plan.text(SEG_REASONING, assistant, reasoning)
                    plan.token(assistant, t.think_close)
                plan.text(SEG_ANSWER, -1, content)
                assistant += 1
            plan.token(-1, t.end_turn)
        plan.token(-1, t.eos)
        plan.doc_pieces.append(len(plan.kind) - start)

    # encoding ----------------------------------------------------------------------------------------------------
    def encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        """Encode texts independently (batched, no specials added) to read-only uint32 arrays."""
        flat, lens = self._encode_flat(texts)
        ends = np.cumsum(lens).tolist()
        return [flat[a:b] for a, b in zip([0, *ends[:-1]], ends)]

    def _encode_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts encoded independently: (their ids back to back, read-only uint32; tokens per text)."""
        if not texts:
            return _readonly(np.zeros(0, np.uint32)), np.zeros(0, np.int64)
        # encode_batch_fast: the same ids as encode_batch without computing offsets (6-12% less CPU, measured with
        # bench/tokenize_pack.py on tokenizers 0.23)
        if not self._any_special(texts):
            encs = self._plain.encode_batch_fast(texts, add_special_tokens=False)
        else:
            encs = [None] * len(texts)
            literal = [self._has_special(text) for text in texts]
            for instance, flag in ((self._plain, False), (self._literal, True)):
                where = [i for i, f in enumerate(literal) if f == flag]
                encoded = instance.encode_batch_fast([texts[i] for i in where], add_special_tokens=False)
                for i, e in zip(where, encoded):
                    encs[i] = e
        # one array for the whole batch: far cheaper than an array per text
        lens = np.fromiter(map(len, encs), dtype=np.int64, count=len(encs))
        flat = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.uint32, count=int(lens.sum()))
        return _readonly(flat), lens

    def _any_special(self, texts: list[str]) -> bool:
        """Whether some text may contain a special token's string (one scan of all texts; no false negatives)."""
        joined = "\n".join(texts)
        return self._has_special(joined)

    def _has_special(self, text: str) -> bool:
        if self._special_re is not None:
            return self._special_re.search(text) is not None
        return any(s in text for s in self._specials)

    def encode(self, sample: Any) -> list[Segment]:
        return self.encode_many([sample])[0]

    def encode_many(self, samples: Sequence[Any]) -> list[list[Segment]]:
        """Segments of many samples, all their texts encoded in one batch."""
        return self.encode_batch(samples).segments()

    def encode_batch(self, samples: Sequence[Any]) -> EncodedBatch:
        """Many samples encoded as cache columns, all their texts in one `encode_batch_fast` call.

        Empty texts give no segment; adjacent template tokens of the same sample and think block are merged into one
        SEG_TEMPLATE segment. All of it is done on whole columns (numpy), not per segment.
        """
        plan = _Plan()
        for sample in samples:
            self._plan_sample(plan, sample)
        text_ids, text_lens = self._encode_flat(plan.texts)
        return _columns(plan, text_ids, text_lens)

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def _columns(plan: _Plan, text_ids: np.ndarray, text_lens: np.ndarray) -> EncodedBatch:
    """The cache columns of a planned batch, given its texts' ids (back to back) and token counts."""
    template = np.array(plan.template, dtype=np.int64)
    is_text = template < 0
    lens = np.ones(len(template), dtype=np.int64)  # a template piece is one token
    lens[is_text] = text_lens
    doc = np.repeat(np.arange(len(plan.doc_pieces)), plan.doc_pieces)
    keep = lens > 0  # empty texts give no segment
    template, is_text, lens, doc = template[keep], is_text[keep], lens[keep], doc[keep]
    kind, think = np.array(plan.kind, np.uint8)[keep], np.array(plan.think, np.int16)[keep]
    # a template piece merges into the previous piece when that is a template piece of the same sample and think
    merge = np.zeros(len(lens), dtype=bool)
    merge[1:] = ~is_text[1:] & ~is_text[:-1] & (think[1:] == think[:-1]) & (doc[1:] == doc[:-1])
    starts = np.flatnonzero(~merge)  # first piece of each segment
    seg_len = np.add.reduceat(lens, starts) if len(starts) else np.zeros(0, np.int64)
    # the tokens: the texts' ids where text pieces are, the template ids elsewhere
    ids = np.empty(int(lens.sum()), dtype=np.uint32)
    token_is_text = np.repeat(is_text, lens)
    ids[token_is_text] = text_ids
    ids[~token_is_text] = template[~is_text]
    doc_segs = np.bincount(doc[starts], minlength=len(plan.doc_pieces))
    seg_end = np.concatenate([[0], np.cumsum(seg_len)])
    doc_end = np.concatenate([[0], np.cumsum(doc_segs)])
    n_tokens = np.diff(seg_end[doc_end]).astype(np.uint32)
    return EncodedBatch(_readonly(ids), kind[starts], seg_len.astype(np.uint32), think[starts], doc_segs, n_tokens)


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def encode_ahead(
    template: ChatTemplate, batches: Iterable[Sequence[Any]], ahead: int = 2
) -> Iterator[tuple[Sequence[Any], EncodedBatch]]:
    """(batch, its `EncodedBatch`) in order, with the next `ahead` batches encoding in background threads meanwhile.

    The tokenizer releases the GIL while it encodes, so the caller's work on one batch (and pulling the next ones from
    upstream) overlaps the encoding of the next. Two encoding threads (`ahead=2`) also keep the tokenizer's thread
    pool busy while one of them runs the Python parts of a batch (planning, converting ids to arrays). Errors surface
    in order, when their batch is reached.
    """
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="encode") as pool:
        pending: deque[tuple[Sequence[Any], Future[EncodedBatch]]] = deque()
        for batch in batches:
            pending.append((batch, pool.submit(template.encode_batch, batch)))
            if len(pending) > ahead:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


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
