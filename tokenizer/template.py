"""The chat template: a canonical sample rendered as token segments.

    chat:  <bos> { <role> content <end_turn> }* <eos>
           assistant content = [<think> reasoning </think>] answer
    plain: <bos> text <eos>

Each text piece is encoded on its own (no prefix space, specials inside text encoded as text), so the sample's
tokens are exactly the concatenation of its segments and trimming can cut in token space. Adjacent template tokens
that belong to the same think block are merged into one SEG_TEMPLATE segment; empty texts give no segment.
"""

from __future__ import annotations

import copy
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from reasonpipe.segments import SEG_ANSWER, SEG_PROMPT, SEG_REASONING, SEG_TEMPLATE, SEG_TEXT, Segment
from reasonpipe.tokenizer.backends import (
    Backend,
    GigatokenEncoder,
    TokenizersEncoder,
    first_difference,
    log_warning,
    make_fast_encoder,
    parity_sample,
    readonly,
)
from reasonpipe.tokenizer.cache import EncodedBatch
from reasonpipe.tokenizer.vocab import TemplateTokens, prepared_spec

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
    """Renders samples (Documents, metadata dicts or plain strings) into segments with one tokenizer.

    `backend` picks the encoder of text pieces (see backends.py): "tokenizers" (default here), "gigatoken", or
    "auto" (gigatoken when installed). With gigatoken, `encode_batch_checked` also encodes a hash-chosen ~1/64 of
    the texts with tokenizers and reports the first difference; `encode_ahead` then falls back to tokenizers.
    """

    REGEX_ABOVE = 16  # with more special tokens than this, texts are scanned for them with one regex

    def __init__(self, tokenizer: Tokenizer, tokens: TemplateTokens, backend: Backend = "tokenizers") -> None:
        self.tokenizer = tokenizer
        self.tokens = tokens
        # Texts that contain a special token's string must encode it as text (`encode_special_tokens`), which costs
        # ~7% of encoding time; they are rare, so only they go through a second instance with that switch on.
        self._spec = prepared_spec(tokenizer)  # a loaded tokenizer is prepared already: no rebuild
        self._plain = Tokenizer.from_str(self._spec)
        self._plain.encode_special_tokens = False
        self._reference, self._literal = TokenizersEncoder(self._plain), None  # the second instance: on first use
        specials = sorted({t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special})
        self._specials = specials
        many = len(specials) > self.REGEX_ABOVE
        self._special_re = re.compile("|".join(map(re.escape, specials))) if many else None
        # fast encoders not in use: a thread takes one for a call (gigatoken's is not thread-safe) and puts it back,
        # so the encoding threads of all the tasks a process runs share a few (each costs ~0.2 s to build)
        first = make_fast_encoder(self._plain, backend)
        self.backend = first.name if first else "tokenizers"
        self._idle: list[GigatokenEncoder] = [first] if first else []
        self.stats: Counter = Counter()  # batches per backend, parity checks and failures (filled by encode_ahead)

    def fresh(self) -> ChatTemplate:
        """A template sharing this one's loaded tokenizers (the costly part: ~1 s for a 32k vocabulary) and fast
        encoders, with counts of its own."""
        new = copy.copy(self)
        new.stats = Counter()
        return new

    def _take_fast(self) -> GigatokenEncoder:
        try:
            return self._idle.pop()  # atomic: two threads never take the same one
        except IndexError:
            return make_fast_encoder(self._plain, "gigatoken")

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

    def _encode_flat(self, texts: list[str], fast: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All texts encoded independently: (their ids back to back, read-only uint32; tokens per text).

        Texts holding a special token's string go to the literal tokenizers instance; the others to the fast
        encoder when there is one and `fast`, else to tokenizers."""
        return self._encode_checked(texts, fast, check=False)[0]

    def _encode_checked(
        self, texts: list[str], fast: bool, check: bool
    ) -> tuple[tuple[np.ndarray, np.ndarray], int, str | None]:
        """(`_encode_flat` result, texts checked against tokenizers, the first difference found or None)."""
        if not texts:
            return (readonly(np.zeros(0, np.uint32)), np.zeros(0, np.int64)), 0, None
        if not fast or self.backend == "tokenizers":
            return self._encode_with(self._reference, texts, check)
        encoder = self._take_fast()
        try:
            return self._encode_with(encoder, texts, check)
        finally:
            self._idle.append(encoder)

    def _encode_with(
        self, encoder, texts: list[str], check: bool
    ) -> tuple[tuple[np.ndarray, np.ndarray], int, str | None]:
        if not self._any_special(texts):
            out, plain = encoder.encode_flat(texts), list(range(len(texts)))
        else:
            literal = [self._has_special(text) for text in texts]
            plain = [i for i, f in enumerate(literal) if not f]
            parts = [(plain, encoder), ([i for i, f in enumerate(literal) if f], self._literal_encoder())]
            out = _merge(len(texts), [(where, enc.encode_flat([texts[i] for i in where])) for where, enc in parts])
        if not check or encoder is self._reference:
            return out, 0, None
        picked = [plain[j] for j in parity_sample([texts[i] for i in plain])]
        got, want = _take(out, picked), self._reference.encode_flat([texts[i] for i in picked])
        bad = first_difference(want, got)
        if bad is None:
            return out, len(picked), None
        i = picked[bad]
        return out, len(picked), f"text {texts[i][:60]!r}: tokenizers {_take(want, [bad])[0][:8].tolist()}..."

    def _literal_encoder(self) -> TokenizersEncoder:
        """The instance that encodes special-token strings as text, built when a text first has one (~0.1 s; two
        threads may both build it, harmlessly)."""
        if self._literal is None:
            tok = Tokenizer.from_str(self._spec)
            tok.encode_special_tokens = True
            self._literal = TokenizersEncoder(tok)
        return self._literal

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

    def encode_batch(self, samples: Sequence[Any], fast: bool = True) -> EncodedBatch:
        """Many samples encoded as cache columns, all their texts in one batch call of the encoder.

        Empty texts give no segment; adjacent template tokens of the same sample and think block are merged into one
        SEG_TEMPLATE segment. All of it is done on whole columns (numpy), not per segment.
        """
        return self.encode_batch_checked(samples, fast, check=False)[0]

    def encode_batch_checked(
        self, samples: Sequence[Any], fast: bool = True, check: bool = True
    ) -> tuple[EncodedBatch, str, int, str | None]:
        """(`encode_batch` result, the backend that encoded it, texts checked, the first parity difference or None).

        With the gigatoken backend and `check`, the texts of the batch whose content hash picks them (~1/64) are
        also encoded with tokenizers and compared."""
        plan = _Plan()
        for sample in samples:
            self._plan_sample(plan, sample)
        (text_ids, text_lens), checked, problem = self._encode_checked(plan.texts, fast, check)
        backend = self.backend if fast else "tokenizers"
        return _columns(plan, text_ids, text_lens), backend, checked, problem

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
    return EncodedBatch(readonly(ids), kind[starts], seg_len.astype(np.uint32), think[starts], doc_segs, n_tokens)


def _merge(n: int, parts: list[tuple[list[int], tuple[np.ndarray, np.ndarray]]]) -> tuple[np.ndarray, np.ndarray]:
    """Flat (ids, lens) of n texts from flat results of disjoint index subsets, back in text order."""
    lens = np.zeros(n, np.int64)
    for where, (_, part_lens) in parts:
        lens[where] = part_lens
    ends = np.cumsum(lens)
    flat = np.empty(int(ends[-1]) if n else 0, np.uint32)
    for where, (ids, part_lens) in parts:
        if where:  # scatter each text's ids to its place: a token-level index built with numpy
            starts = np.repeat(ends[where] - lens[where], part_lens)
            within = np.arange(len(ids)) - np.repeat(np.cumsum(part_lens) - part_lens, part_lens)
            flat[starts + within] = ids
    return readonly(flat), lens


def _take(flat: tuple[np.ndarray, np.ndarray], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The texts `rows` of a flat (ids, lens) result, as another flat result."""
    ids, lens = flat
    ends = np.cumsum(lens)
    pieces = [ids[ends[r] - lens[r] : ends[r]] for r in rows]
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.uint32)), lens[rows]


def encode_ahead(
    template: ChatTemplate, batches: Iterable[Sequence[Any]], ahead: int = 2
) -> Iterator[tuple[Sequence[Any], EncodedBatch]]:
    """(batch, its `EncodedBatch`) in order, with the next `ahead` batches encoding in background threads meanwhile.

    The encoders release the GIL while they encode, so the caller's work on one batch (and pulling the next ones from
    upstream) overlaps the encoding of the next. Two encoding threads (`ahead=2`) also keep the tokenizer's thread
    pool busy while one of them runs the Python parts of a batch (planning, converting ids to arrays). Errors surface
    in order, when their batch is reached.

    With a fast backend every batch is parity-checked; at the first difference (logged) that batch and every later
    one are encoded with tokenizers. The switch is decided here, in batch order, so the output does not depend on
    thread timing. Counts go to `template.stats`.
    """
    fallen = False
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="encode") as pool:
        pending: deque[tuple[Sequence[Any], Future]] = deque()

        def take() -> tuple[Sequence[Any], EncodedBatch]:
            nonlocal fallen
            done, future = pending.popleft()
            encoded, backend, checked, problem = future.result()
            template.stats["parity_texts"] += checked
            if problem is not None and not fallen:
                fallen = True
                template.stats["parity_failures"] += 1
                log_warning(
                    f"{template.backend} differs from tokenizers ({problem}); encoding with tokenizers from here"
                )
            if fallen and backend != "tokenizers":
                encoded, backend = template.encode_batch(done, fast=False), "tokenizers"
            template.stats[f"batches_{backend}"] += 1
            return done, encoded

        for batch in batches:
            pending.append((batch, pool.submit(template.encode_batch_checked, batch, not fallen)))
            if len(pending) > ahead:
                yield take()
        while pending:
            yield take()


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
