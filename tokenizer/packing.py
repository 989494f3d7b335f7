"""Streaming packing of tokenised samples into fixed-length training windows.

Atomic items (chat / reasoning samples, already AP-trimmed) are never split: they are placed best-fit-decreasing
into a bounded buffer of open windows (items are collected in small batches, sorted by decreasing length, and each
goes into the open window with the least remaining space that still holds it). When an item fits no open window and
the buffer is full, the fullest window is closed. Plain documents (web, code, math prose) are splittable: they queue
up and fill the gaps of windows being closed, split across windows as needed; plain text beyond what the open windows
could ever need is emitted as windows of plain text only. Everything is bounded in memory and depends only on the
insertion order, so the output is deterministic.

Copies never share a window: items with the same `origin` (a mixture copy and its original, see `PackItem`) are
never placed in one window. An atomic item skips the open windows that hold its origin; a plain piece whose origin
is already in the window being filled ends that window's filling (the gap is padded). `_emit` re-checks it.

In a window the atomic items come first, then plain-text pieces, then padding (pad_id, loss 0, segment 0) at the end.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from reasonpipe.segments import SEG_ANSWER, SEG_PAD, SEG_REASONING, SEG_TEMPLATE


class PackConfig(BaseModel):
    """`pack:` section of a manifest."""

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(default=4096, ge=8, strict=True, description="tokens per training window")
    buffer_windows: int = Field(default=64, ge=1, strict=True, description="open windows kept for best-fit")
    loss_mask: Literal["all", "assistant"] = Field(default="all", description="which real tokens carry loss")
    min_fill_chunk: int = Field(default=1, ge=1, strict=True, description="smallest plain piece split into a gap")

    @model_validator(mode="after")
    def _chunk_fits(self) -> "PackConfig":
        if self.min_fill_chunk > self.seq_len:
            raise ValueError(
                f"pack.min_fill_chunk: got {self.min_fill_chunk}, must be <= pack.seq_len ({self.seq_len})"
            )
        return self


@dataclass(frozen=True)
class PackItem:
    sample_id: str
    ids: np.ndarray  # uint32 tokens
    segment: np.ndarray  # uint8 segment code per token
    loss_mask: np.ndarray  # uint8 per token
    atomic: bool  # chat/reasoning samples: never split; plain documents: splittable
    origin: str | None = None  # the sample this one is a copy of (mixture up-sampling); None: itself

    @property
    def key(self) -> str:
        """What copies share: two items with the same key never sit in one window."""
        return self.origin or self.sample_id


@dataclass
class Window:
    input_ids: np.ndarray  # uint32[seq_len]
    loss_mask: np.ndarray  # uint8[seq_len]
    segment: np.ndarray  # uint8[seq_len]
    doc_offsets: list[int]  # start of each document (piece) in the window; first is 0
    sample_ids: list[str]  # one per document (piece)
    ordinal: int = -1  # emission order of the window in this packer, from 0


def loss_mask_for(
    segment: np.ndarray, policy: Literal["all", "assistant"], assistant: np.ndarray | None = None
) -> np.ndarray:
    """Per-token loss mask (uint8) of one sample.

    "all": 1 on every real (non-pad) token. "assistant": 1 on reasoning and answer tokens, plus the template tokens
    flagged in `assistant` (bool per token). Segment codes alone cannot tell whose turn a template token belongs to
    (`<end_turn><user>` is one template run), so the chat template that emits the tokens flags the assistant-side
    ones: what the model must learn to produce (think tags, end of turn), not the role header a generation prompt
    supplies.
    """
    segment = np.asarray(segment)
    if policy == "all":
        return (segment != SEG_PAD).astype(np.uint8)
    if policy != "assistant":
        raise ValueError(f"loss mask policy: got {policy!r}, allowed: 'all', 'assistant'")
    mask = (segment == SEG_REASONING) | (segment == SEG_ANSWER)
    if assistant is not None:
        if len(assistant) != len(segment):
            raise ValueError(f"loss mask: assistant flags have {len(assistant)} entries for {len(segment)} tokens")
        mask |= (segment == SEG_TEMPLATE) & np.asarray(assistant, dtype=bool)
    return mask.astype(np.uint8)


@dataclass
class _Open:
    """A window being filled: (sample_id, ids, segment, loss_mask, offset in the window, piece starts a doc), and the
    keys (`PackItem.key`) of the samples it holds."""

    parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, int, bool]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    used: int = 0

    def put(self, item: PackItem, sl: slice, first: bool) -> None:
        ids = item.ids[sl]
        self.parts.append((item.sample_id, ids, item.segment[sl], item.loss_mask[sl], self.used, first))
        self.keys.add(item.key)
        self.used += len(ids)


class Packer:
    """Streaming best-fit-decreasing packer; see the module doc. Not thread-safe.

    `placements` maps each sample id to (window ordinal, offset) of its first token (first occurrence of an id wins;
    it grows with the stream: drain it with `take_placements()` after each `add`/`flush` on large corpora); the
    counters `windows`, `real_tokens`, `pad_tokens`, `split_documents` feed the index's packing summary.
    """

    def __init__(self, seq_len: int, pad_id: int, buffer_windows: int = 64, min_fill_chunk: int = 1) -> None:
        if seq_len <= 0 or buffer_windows <= 0 or not 0 < min_fill_chunk <= seq_len:
            raise ValueError(
                f"Packer: seq_len={seq_len}, buffer_windows={buffer_windows}, "
                f"min_fill_chunk={min_fill_chunk}; all must be > 0, min_fill_chunk <= seq_len"
            )
        self.seq_len, self.pad_id = seq_len, pad_id
        self.buffer_windows, self.min_fill_chunk = buffer_windows, min_fill_chunk
        self._open: list[_Open] = []
        self._pending: list[PackItem] = []  # atomic items waiting to be placed in decreasing-length order
        self._pending_tokens = 0
        self._batch_tokens = max(seq_len, buffer_windows * seq_len // 2)
        self._plain: deque[list] = deque()  # [item, next position] of plain documents not yet fully placed
        self._plain_tokens = 0
        self._plain_reserve = buffer_windows * seq_len  # enough plain text to fill every open window's gap
        self.placements: dict[str, tuple[int, int]] = {}
        self.windows = self.real_tokens = self.pad_tokens = self.split_documents = 0

    @property
    def efficiency(self) -> float:
        """Real tokens / all tokens of the windows emitted so far (1.0 before any window)."""
        total = self.windows * self.seq_len
        return self.real_tokens / total if total else 1.0

    def take_placements(self) -> dict[str, tuple[int, int]]:
        """Return the placements recorded so far and forget them (keeps memory bounded on long streams)."""
        out, self.placements = self.placements, {}
        return out

    def add(self, item: PackItem) -> list[Window]:
        """Queue one sample; returns the windows completed by it (often none)."""
        n = len(item.ids)
        if n == 0:
            raise ValueError(f"Packer: sample {item.sample_id!r} has no tokens")
        if len(item.segment) != n or len(item.loss_mask) != n:
            raise ValueError(
                f"Packer: sample {item.sample_id!r} has {n} ids, {len(item.segment)} segment codes, "
                f"{len(item.loss_mask)} loss-mask entries; they must match"
            )
        out: list[Window] = []
        if item.atomic:
            if n > self.seq_len:
                raise ValueError(
                    f"Packer: atomic sample {item.sample_id!r} has {n} tokens > seq_len "
                    f"{self.seq_len}; trim it to the context first"
                )
            self._pending.append(item)
            self._pending_tokens += n
            if self._pending_tokens >= self._batch_tokens:
                self._place_pending(out)
        else:
            self._plain.append([item, 0])
            self._plain_tokens += n
            while self._plain_tokens >= self._plain_reserve + self.seq_len:
                out.append(self._emit(self._fill(_Open())))
        return out

    def flush(self) -> list[Window]:
        """Place everything still buffered; returns the last windows (the final plain one padded)."""
        out = self.close_open()
        while self._plain:
            out.append(self._emit(self._fill(_Open())))
        return out

    def close_open(self) -> list[Window]:
        """Place the pending atomic items and close every open window (gaps filled from the plain-text queue, which
        stays): what comes next starts in new windows. Mixture passes end with it, so copy c of a sample always
        lands in a later window than copy c-1."""
        out: list[Window] = []
        self._place_pending(out)
        while self._open:
            out.append(self._close_fullest())
        return out

    # -- internals --

    def _place_pending(self, out: list[Window]) -> None:
        # decreasing length; sorted() is stable, so ties keep insertion order
        for item in sorted(self._pending, key=lambda it: -len(it.ids)):
            n, best = len(item.ids), None
            for w in self._open:  # best fit: least remaining space that still holds the item (and no copy of it)
                if self.seq_len - w.used >= n and (best is None or w.used > best.used) and item.key not in w.keys:
                    best = w
            if best is None:
                if len(self._open) >= self.buffer_windows:
                    out.append(self._close_fullest())
                best = _Open()
                self._open.append(best)
            best.put(item, slice(None), True)
        self._pending.clear()
        self._pending_tokens = 0

    def _close_fullest(self) -> Window:
        i = max(range(len(self._open)), key=lambda j: (self._open[j].used, -j))  # fullest, earliest on ties
        return self._emit(self._fill(self._open.pop(i)))

    def _fill(self, w: _Open) -> _Open:
        """Fill the gap of `w` with plain-text pieces from the front of the queue."""
        while self._plain and w.used < self.seq_len:
            entry = self._plain[0]
            item, pos = entry
            if pos == 0 and item.key in w.keys:
                break  # a copy of a sample already in this window: pad instead
            gap, left = self.seq_len - w.used, len(item.ids) - pos
            take = min(gap, left)
            if take < left and take < self.min_fill_chunk:
                break  # too small a piece to split off: pad instead
            if pos == 0 and take < left:
                self.split_documents += 1
            w.put(item, slice(pos, pos + take), pos == 0)
            self._plain_tokens -= take
            if take == left:
                self._plain.popleft()
            else:
                entry[1] = pos + take
        return w

    def _emit(self, w: _Open) -> Window:
        if len(w.keys) != len(w.parts):  # each part is a different sample; two with one key are copies
            raise RuntimeError(f"Packer: a window holds two copies of one sample: {[p[0] for p in w.parts]}")
        ordinal, L = self.windows, self.seq_len
        ids = np.full(L, self.pad_id, dtype=np.uint32)
        mask = np.zeros(L, dtype=np.uint8)
        seg = np.zeros(L, dtype=np.uint8)
        offsets, sample_ids = [], []
        for sample_id, p_ids, p_seg, p_mask, off, first in w.parts:
            end = off + len(p_ids)
            ids[off:end], seg[off:end], mask[off:end] = p_ids, p_seg, p_mask
            offsets.append(off)
            sample_ids.append(sample_id)
            if first:
                self.placements.setdefault(sample_id, (ordinal, off))
        self.windows += 1
        self.real_tokens += w.used
        self.pad_tokens += L - w.used
        return Window(ids, mask, seg, offsets, sample_ids, ordinal)
