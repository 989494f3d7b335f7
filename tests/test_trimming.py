"""AP trimming: property tests of the pure core, hand-written examples, and the datatrove step."""

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasonpipe.segments import SEG_ANSWER, SEG_PROMPT, SEG_REASONING, SEG_TEMPLATE, Segment
from reasonpipe.trimming.config import TrimConfig
from reasonpipe.trimming.core import DROP_REASON, LONG_REASON, TrimRecord, trim

# token ids of a toy chat template (a real tokenizer's special ids play these roles)
BOS, EOS, USER, ASSISTANT, END_TURN, THINK, UNTHINK, NEWLINE, MARK = 1, 2, 3, 4, 5, 6, 7, 10, 11
WORDS = (20, 5000)  # ordinary tokens; NEWLINE is sprinkled in

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "reasoning"
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def u32(*ids: int) -> np.ndarray:
    return np.array(ids, dtype=np.uint32)


def text(rng: np.random.Generator, n: int, newline_rate: float = 0.05) -> np.ndarray:
    ids = rng.integers(*WORDS, size=n, dtype=np.uint32)
    ids[rng.random(n) < newline_rate] = NEWLINE
    return ids


def chat(rng: np.random.Generator, turns: list[tuple[int, int | None, int]], system: int = 0) -> list[Segment]:
    """Render a chat as segments: turns = [(prompt_len, reasoning_len or None for no think block, answer_len)]."""
    segs = [Segment(SEG_TEMPLATE, u32(BOS))]
    if system:
        segs.append(Segment(SEG_PROMPT, text(rng, system)))
    for t, (p, r, a) in enumerate(turns):
        segs += [
            Segment(SEG_TEMPLATE, u32(USER)),
            Segment(SEG_PROMPT, text(rng, p)),
            Segment(SEG_TEMPLATE, u32(END_TURN)),
        ]
        segs.append(Segment(SEG_TEMPLATE, u32(ASSISTANT)))
        if r is not None:
            segs += [
                Segment(SEG_TEMPLATE, u32(THINK), t),
                Segment(SEG_REASONING, text(rng, r), t),
                Segment(SEG_TEMPLATE, u32(UNTHINK), t),
            ]
        segs += [Segment(SEG_ANSWER, text(rng, a)), Segment(SEG_TEMPLATE, u32(END_TURN))]
    segs.append(Segment(SEG_TEMPLATE, u32(EOS)))
    return segs


def flat(segs: list[Segment]) -> np.ndarray:
    return np.concatenate([s.ids for s in segs]) if segs else u32()


def outside_thinks(segs: list[Segment]) -> np.ndarray:
    """Everything that is not in a think block: prompts, answers, role template tokens, BOS/EOS."""
    return flat([s for s in segs if s.think < 0])


def think_of(segs: list[Segment], t: int, kind: int = SEG_REASONING) -> np.ndarray:
    return flat([s for s in segs if s.think == t and s.kind == kind])


def last_think(segs: list[Segment]) -> int:
    return max((s.think for s in segs if s.kind == SEG_REASONING), default=-1)


def oracle(segs: list[Segment], budget: int) -> tuple[bool, int, int]:
    """(dropped, removed think blocks, kept reasoning of the last think turn) computed from the spec directly."""
    total, last = len(flat(segs)), last_think(segs)
    if total <= budget:
        return False, 0, len(think_of(segs, last))
    if last < 0:
        return True, 0, 0
    r = len(think_of(segs, last))
    fixed, removed = total - r, 0
    if fixed > budget:
        earlier = [s for s in segs if 0 <= s.think < last]
        removed = len({s.think for s in earlier})
        fixed -= len(flat(earlier))
        if fixed > budget:
            return True, removed, 0
    return False, removed, min(r, budget - fixed)


@st.composite
def samples(draw: st.DrawFn) -> tuple[list[Segment], int]:
    """A realistic multi-turn reasoning chat (long traces, short prompts/answers) and a budget around its size."""
    n_turns = draw(st.integers(1, 4))
    turns = []
    for _ in range(n_turns):
        has_think = draw(st.booleans()) or n_turns == 1
        turns.append(
            (
                draw(st.integers(1, 60)),
                draw(st.integers(0, 600)) if has_think else None,
                draw(st.integers(1, 40)),
            )
        )
    segs = chat(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), turns, system=draw(st.integers(0, 20)))
    # budgets around the thresholds that matter: answers alone, with earlier thinks, the whole sample; or anywhere
    total, last = len(flat(segs)), last_think(segs)
    with_thinks = total - len(think_of(segs, last))
    bare = with_thinks - len(flat([s for s in segs if 0 <= s.think < last]))
    anchor = draw(st.sampled_from([bare, with_thinks, total, None]))
    if anchor is None:
        budget = draw(st.integers(1, total + 50))
    else:
        budget = max(1, anchor + draw(st.integers(-20, 20)))
    return segs, budget


@SETTINGS
@given(samples(), st.sampled_from(["tail", "middle"]))
def test_trim_invariants(sample: tuple[list[Segment], int], policy: str) -> None:
    segs, budget = sample
    out, rec = trim(segs, budget, policy)
    dropped, removed, kept = oracle(segs, budget)
    assert rec.tokens_before == len(flat(segs))
    assert rec.reasoning_before == sum(len(s.ids) for s in segs if s.kind == SEG_REASONING)
    assert (out is None) == dropped == (rec.status == "dropped")
    if dropped:
        assert rec.reason == DROP_REASON and rec.tokens_after == 0
        return
    assert rec.reason is None
    assert len(flat(out)) == rec.tokens_after <= budget
    assert rec.reasoning_kept == sum(len(s.ids) for s in out if s.kind == SEG_REASONING)
    # prompts, answers and role template tokens are kept exactly
    assert np.array_equal(outside_thinks(out), outside_thinks(segs))
    if rec.tokens_before <= budget:  # fits: untouched
        assert rec.status == "fit" and out == segs
        return
    assert rec.status == "trimmed"
    assert rec.dropped_thinks == removed
    last = last_think(segs)
    for t in {s.think for s in segs if 0 <= s.think < last}:  # earlier think blocks: whole or gone
        want = flat([s for s in segs if s.think == t]) if removed == 0 else u32()
        assert np.array_equal(flat([s for s in out if s.think == t]), want)
    orig, got = think_of(segs, last), think_of(out, last)
    assert np.array_equal(think_of(out, last, SEG_TEMPLATE), u32(THINK, UNTHINK))  # markers of the last block kept
    if policy == "tail":
        assert np.array_equal(got, orig[: len(got)])
    else:
        head = flat([s for s in out if s.think == last and s.kind == SEG_REASONING][:1])
        tail = got[len(head) :]
        assert np.array_equal(head, orig[: len(head)])
        assert len(tail) == 0 or np.array_equal(tail, orig[-len(tail) :])
        assert len(head) >= len(tail)
    # longest possible reasoning: the cut fills the budget exactly
    assert len(got) == kept
    assert len(got) == len(orig) or rec.tokens_after == budget
    # idempotent: a trimmed sample fits and comes back untouched
    again, rec2 = trim(out, budget, policy)
    assert rec2.status == "fit" and again == out


@SETTINGS
@given(samples(), st.integers(1, 40), st.integers(1, 3))
def test_snap_and_marker(sample: tuple[list[Segment], int], snap: int, marker_len: int) -> None:
    segs, budget = sample
    marker = np.full(marker_len, MARK, dtype=np.uint32)
    plain_out, plain_rec = trim(segs, budget)
    out, rec = trim(segs, budget, marker=marker, snap=snap, newline_ids=u32(NEWLINE))
    assert (out is None) == (plain_out is None)  # a marker never causes a drop
    if out is None or rec.tokens_before <= budget:
        return
    last = last_think(segs)
    orig, got, unsnapped = think_of(segs, last), think_of(out, last), think_of(plain_out, last)
    assert len(flat(out)) <= budget
    assert np.array_equal(got, orig[: len(got)])
    block = [s for s in out if s.think == last]
    markers = [s for s in block if s.kind == SEG_TEMPLATE and s.ids[0] == MARK]
    cut = len(unsnapped) < len(orig)
    room = len(unsnapped) - marker_len  # unsnapped cut when the marker takes its room
    if cut and room >= 0:  # marker right after the kept reasoning, before </think>
        assert len(markers) == 1 and np.array_equal(markers[0].ids, marker)
        assert [s.kind for s in block][-3:] == [SEG_REASONING, SEG_TEMPLATE, SEG_TEMPLATE]
        # snap-back: the cut moved back to just after the last newline within `snap` tokens, or stayed put
        k = len(got)
        window = orig[max(0, room - snap) : room]
        if np.any(window == NEWLINE):
            assert got[-1] == NEWLINE and not np.any(orig[k:room] == NEWLINE) and room - k < snap
        else:
            assert k == room
    else:
        assert not markers
        if not cut:
            assert np.array_equal(got, orig)


@SETTINGS
@given(samples())
def test_baseline_policies(sample: tuple[list[Segment], int]) -> None:
    """`truncate` keeps the first `budget` tokens and says when the answer went; `drop` drops whatever does not fit."""
    segs, budget = sample
    total = len(flat(segs))
    out, rec = trim(segs, budget, "truncate")
    assert np.array_equal(flat(out), flat(segs)[:budget])  # a plain prefix, whatever it cuts
    assert [s.kind for s in out] == [s.kind for s in segs][: len(out)]
    assert rec.tokens_after == min(total, budget) and rec.reasoning_kept == sum(
        len(s.ids) for s in out if s.kind == SEG_REASONING
    )
    answer_end = max(
        i + 1 for i, k in enumerate(np.concatenate([[s.kind] * len(s.ids) for s in segs])) if k == SEG_ANSWER
    )
    assert rec.answer_lost == (budget < answer_end)
    assert rec.status == ("fit" if total <= budget else "truncated")

    out, rec = trim(segs, budget, "drop")
    if total <= budget:
        assert rec.status == "fit" and np.array_equal(flat(out), flat(segs))
    else:
        assert out is None and rec.status == "dropped" and rec.reason == LONG_REASON and rec.tokens_after == 0


def test_single_turn_example() -> None:
    # [BOS] prompt <assistant> <think> r0..r9 </think> answer [EOS]: 18 tokens, 10 of reasoning
    reasoning = np.arange(100, 110, dtype=np.uint32)
    segs = [
        Segment(SEG_TEMPLATE, u32(BOS)),
        Segment(SEG_PROMPT, u32(50, 51)),
        Segment(SEG_TEMPLATE, u32(ASSISTANT)),
        Segment(SEG_TEMPLATE, u32(THINK), 0),
        Segment(SEG_REASONING, reasoning, 0),
        Segment(SEG_TEMPLATE, u32(UNTHINK), 0),
        Segment(SEG_ANSWER, u32(60)),
        Segment(SEG_TEMPLATE, u32(EOS)),
    ]
    out, rec = trim(segs, 12)
    assert flat(out).tolist() == [BOS, 50, 51, ASSISTANT, THINK, 100, 101, 102, 103, UNTHINK, 60, EOS]
    assert rec == TrimRecord("trimmed", 18, 12, 10, 4, 0, None)
    assert list(rec.as_dict().items()) == list(dataclasses.asdict(rec).items())
    out, rec = trim(segs, 12, policy="middle", marker=u32(MARK))
    assert flat(out).tolist() == [BOS, 50, 51, ASSISTANT, THINK, 100, 101, MARK, 109, UNTHINK, 60, EOS]
    assert rec.reasoning_kept == 3
    segs[4] = Segment(SEG_REASONING, u32(100, NEWLINE, 102, 103, 104, 105, 106, 107, 108, 109), 0)
    out, rec = trim(segs, 12, snap=3, newline_ids=u32(NEWLINE))  # cut after 4 tokens; newline 3 tokens back
    assert flat(out).tolist() == [BOS, 50, 51, ASSISTANT, THINK, 100, NEWLINE, UNTHINK, 60, EOS]
    out, rec = trim(segs, 12, snap=2, newline_ids=u32(NEWLINE))  # newline out of reach: cut stays
    assert rec.reasoning_kept == 4
    out, rec = trim(segs, 8)  # empty reasoning: think markers and answer stay
    assert flat(out).tolist() == [BOS, 50, 51, ASSISTANT, THINK, UNTHINK, 60, EOS] and rec.reasoning_kept == 0
    assert trim(segs, 7) == (None, TrimRecord("dropped", 18, 0, 10, 0, 0, DROP_REASON))


def test_multi_turn_removes_earlier_thinks() -> None:
    rng = np.random.default_rng(0)
    segs = chat(rng, [(10, 300, 20), (10, 200, 20), (10, 400, 20)])
    total = len(flat(segs))  # 1 + 3 * (1 + 10 + 1 + 1 + 20 + 1) + 3 * 2 + 900 + 1 = 1010
    outside = len(outside_thinks(segs))
    # room for the last turn's think markers and 100 reasoning tokens, but not with earlier think blocks kept
    budget = outside + 2 + 100
    out, rec = trim(segs, budget)
    assert rec.status == "trimmed" and rec.dropped_thinks == 2 and rec.tokens_before == total
    assert [s.think for s in out if s.think >= 0] == [2, 2, 2]
    assert rec.reasoning_kept == 100 and len(flat(out)) == budget
    # with 10 tokens less than the bare answers need, the sample is dropped
    assert trim(segs, outside + 1)[0] is None
    # the last turn without a think block: the last turn *with* one is cut, later ones untouched
    segs = chat(rng, [(10, 300, 20), (10, None, 20)])
    out, rec = trim(segs, len(flat(segs)) - 50)
    assert rec.status == "trimmed" and rec.reasoning_kept == 250 and rec.dropped_thinks == 0


def test_reasoning_in_several_segments_is_cut_as_one() -> None:
    r1, r2 = np.arange(100, 106, dtype=np.uint32), np.arange(200, 206, dtype=np.uint32)
    segs = [
        Segment(SEG_PROMPT, u32(50)),
        Segment(SEG_TEMPLATE, u32(THINK), 0),
        Segment(SEG_REASONING, r1, 0),
        Segment(SEG_REASONING, r2, 0),
        Segment(SEG_TEMPLATE, u32(UNTHINK), 0),
        Segment(SEG_ANSWER, u32(60)),
    ]
    out, rec = trim(segs, 12)  # 4 fixed tokens: keep 8 of 12 reasoning tokens, across the segment boundary
    assert flat(out).tolist() == [50, THINK, *range(100, 106), 200, 201, UNTHINK, 60]
    assert rec.reasoning_kept == 8 and [s.kind for s in out].count(SEG_REASONING) == 1


def test_real_r1_traces_byte_tokens() -> None:
    """DeepSeek-R1 style traces, UTF-8 bytes as tokens (+16, clear of the specials): the answer survives intact,
    the kept reasoning is a prefix of the trace that ends on a line break, the marker sits at the cut."""
    files = sorted(REAL.glob("r1_samples_*.jsonl"))
    if not files:
        pytest.skip("shared real data not available")
    enc = lambda t: np.frombuffer(t.encode(), dtype=np.uint8).astype(np.uint32) + 16  # noqa: E731
    dec = lambda ids: (np.asarray(ids) - 16).astype(np.uint8).tobytes().decode(errors="replace")  # noqa: E731
    marker, newline = enc(" [...]\n"), enc("\n")
    rows = [json.loads(line) for f in files for line in f.open()]
    for row in rows:
        segs = [
            Segment(SEG_TEMPLATE, u32(BOS, USER)),
            Segment(SEG_PROMPT, enc(row["problem"])),
            Segment(SEG_TEMPLATE, u32(END_TURN, ASSISTANT)),
            Segment(SEG_TEMPLATE, u32(THINK), 0),
            Segment(SEG_REASONING, enc(row["message_thinking"]), 0),
            Segment(SEG_TEMPLATE, u32(UNTHINK), 0),
            Segment(SEG_ANSWER, enc(row["message_content"])),
            Segment(SEG_TEMPLATE, u32(END_TURN, EOS)),
        ]
        budget = len(outside_thinks(segs)) + 2 + len(segs[4].ids) // 3
        out, rec = trim(segs, budget, marker=marker, snap=400, newline_ids=newline)
        assert rec.status == "trimmed" and len(flat(out)) <= budget
        assert dec(flat([s for s in out if s.kind == SEG_ANSWER])) == row["message_content"]
        kept = dec(think_of(out, 0))
        assert row["message_thinking"].startswith(kept) and kept.endswith("\n")
        assert dec(think_of(out, 0, SEG_TEMPLATE)[1:-1]) == " [...]\n"


def test_no_reasoning_too_long_is_dropped() -> None:
    segs = chat(np.random.default_rng(1), [(100, None, 100)])
    out, rec = trim(segs, 50)
    assert out is None and rec.status == "dropped" and rec.reason == DROP_REASON


def test_bad_arguments() -> None:
    segs = chat(np.random.default_rng(2), [(5, 5, 5)])
    with pytest.raises(ValueError, match="policy"):
        trim(segs, 10, policy="head")
    with pytest.raises(ValueError, match="budget"):
        trim(segs, 0)


def test_config_validation() -> None:
    assert TrimConfig().policy == "tail" and TrimConfig().context is None
    assert TrimConfig(context=4096, policy="middle", marker="[...]", snap_newline=32).snap_newline == 32
    for bad, key in [
        ({"context": 0}, "context"),
        ({"context": True}, "context"),
        ({"policy": "head"}, "policy"),
        ({"policy": "truncated"}, "policy"),
        ({"marker": ""}, "marker"),
        ({"snap_newline": -1}, "snap_newline"),
        ({"budget": 3}, "budget"),
    ]:
        with pytest.raises(ValueError, match=key):
            TrimConfig(**bad)


def test_step_trims_forwards_and_counts(tmp_path) -> None:
    from datatrove.data import Document
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    from reasonpipe.trimming.step import APTrim

    rng = np.random.default_rng(3)
    long_chat = chat(rng, [(20, 500, 20)])
    docs = [
        Document(text="fits", id="a", metadata={"kind": "chat", "segments": chat(rng, [(20, 30, 20)])}),
        Document(text="long", id="b", metadata={"kind": "chat", "segments": long_chat}),
        Document(text="huge answer", id="c", metadata={"kind": "chat", "segments": chat(rng, [(20, 50, 400)])}),
        Document(text="plain", id="d", metadata={"kind": "text", "segments": [Segment(1, text(rng, 900))]}),
    ]
    step = APTrim(
        budget=256, marker_ids=[MARK], snap=8, newline_ids=[NEWLINE], exclusion_writer=JsonlWriter(str(tmp_path))
    )
    out = list(step(iter(docs)))
    assert [d.id for d in out] == ["a", "b", "d"]
    assert [d.metadata["trim"]["status"] for d in out] == ["fit", "trimmed", "plain"]
    assert len(flat(out[1].metadata["segments"])) <= 256
    assert np.array_equal(outside_thinks(out[1].metadata["segments"]), outside_thinks(long_chat))
    assert out[2].metadata["trim"]["tokens_after"] == 900  # plain text is not trimmed (the packer splits it)
    stats = step.stats
    assert stats["total"].total == 4 and stats["forwarded"].total == 3 and stats["dropped"].total == 1
    assert stats[f"dropped_{DROP_REASON}"].total == 1
    assert stats["fit"].total == 1 and stats["trimmed"].total == 1 and stats["plain"].total == 1
    (excluded,) = tmp_path.glob("*.jsonl.gz")
    rows = [json.loads(line) for line in gzip.open(excluded, "rt")]
    assert [r["id"] for r in rows] == ["c"]
    assert rows[0]["metadata"]["trim"]["reason"] == DROP_REASON
    with pytest.raises(ValueError, match="kind"):
        list(APTrim(budget=10)(iter([Document(text="x", id="e", metadata={"kind": "image", "segments": []})])))
