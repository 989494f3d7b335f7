"""Markovian chunking of a long reasoning trace (Delethink-style bounded context), in token space. Pure.

A trace longer than the context C becomes a chain of samples, each at most C tokens. With P the tokens before the
reasoning (template, prompt, `<think>`; earlier turns included), R the reasoning of the last think block and S the
tokens after it (`</think>`, answer, end of turn):

    sample 0:  P  R[0:e0]
    sample k:  P  R[0:h] R[s-m:s]  R[s:e]            (s = start of chunk k; P and R[..:s] are context, loss 0)
    last:      P  R[0:h] R[s-m:s]  R[s:]  S           (ends with the answer)

The reasoning context of chunk k > 0 is the first h = `head` tokens of the reasoning and the last m = `carry` tokens
before the chunk; the two never overlap (chunk 0 alone is longer than head + carry). In chunks k > 0, all of P and
that reasoning context are marked `context=True`: packing gives them loss 0 whatever the loss-mask policy, so
every token of the trace is trained on at most once in the chain, and with `loss_mask: all` exactly once: the
loss-1 tokens of the chain, concatenated, are the trace. Each chunk takes as many tokens as fit; the last one also
holds S.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from reasonpipe.segments import SEG_REASONING, Segment


@dataclass(frozen=True)
class Chunk:
    segments: list[Segment]
    index: int  # position in the chain, from 0
    start: int  # the chunk's target reasoning tokens are R[start:end]
    end: int
    context_tokens: int  # tokens shown as context only (loss 0): P, head and carry in chunks k > 0; 0 in chunk 0


def _length(segments: Sequence[Segment]) -> int:
    return sum(len(s.ids) for s in segments)


def chunk_trace(segments: Sequence[Segment], context: int, carry: int, head: int) -> tuple[list[Chunk], str | None]:
    """(the chain, None) for a trace longer than `context`; ([], reason) otherwise.

    Reasons: "fits" (the sample is at most `context` tokens), "no_reasoning", "no_room" (P + head + carry + S leave
    no room for a chunk).
    """
    if context <= 0 or carry < 0 or head < 0:
        raise ValueError(f"chunk_trace: context {context} must be > 0, carry {carry} and head {head} >= 0")
    if _length(segments) <= context:
        return [], "fits"
    thinks = [s.think for s in segments if s.kind == SEG_REASONING and s.think >= 0 and len(s.ids)]
    if not thinks:
        return [], "no_reasoning"
    last = max(thinks)
    where = [i for i, s in enumerate(segments) if s.kind == SEG_REASONING and s.think == last]
    prefix, suffix = list(segments[: where[0]]), list(segments[where[-1] + 1 :])
    if any(s.kind == SEG_REASONING and s.think == last for s in suffix) or len(where) != where[-1] - where[0] + 1:
        return [], "no_reasoning"  # its reasoning is interleaved with other segments: not a plain think block
    reasoning = np.concatenate([segments[i].ids for i in where])
    n, p, tail_len = len(reasoning), _length(prefix), _length(suffix)
    if p + min(head, n) + carry + tail_len >= context:
        return [], "no_room"

    def seg(a: int, b: int, ctx: bool = False) -> Segment:
        return Segment(SEG_REASONING, reasoning[a:b], last, ctx)

    shown_prefix = [replace(s, context=True) for s in prefix]  # what chunks k > 0 repeat of the trace's start

    chunks: list[Chunk] = []
    start = 0
    while True:
        h = min(head, start)
        c0 = start - carry if start else 0  # chunk 0 holds C - P > head + carry tokens: carry never reaches the head
        assert c0 >= h, (start, carry, head)
        shown = (shown_prefix if start else prefix) + ([seg(0, h, True)] if h else [])
        shown += [seg(c0, start, True)] if c0 < start else []
        room = context - p - h - (start - c0)
        context_tokens = p + h + start - c0 if start else 0
        if n - start + tail_len <= room:  # the rest and the answer fit: the last chunk
            body = [seg(start, n)] if start < n else []
            chunks.append(Chunk(shown + body + suffix, len(chunks), start, n, context_tokens))
            return chunks, None
        end = min(n, start + room)  # room > 0: the no_room check above leaves at least one token
        chunks.append(Chunk(shown + [seg(start, end)], len(chunks), start, end, context_tokens))
        start = end
