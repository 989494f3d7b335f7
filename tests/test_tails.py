"""Pure cores of the test-time-compute builders: tails, the aggregation prompt, RSA choices, Markovian chunks.

Property tests (hypothesis) on toy token ids; the round trip through a real tokenizer is in test_ttc_builders.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasonpipe.segments import SEG_ANSWER, SEG_PROMPT, SEG_REASONING, SEG_TEMPLATE, Segment
from reasonpipe.trimming.markovian import chunk_trace
from reasonpipe.trimming.rsa import Trace, aggregate, plan_aggregations, trace_parts
from reasonpipe.trimming.tails import DEFAULT_PROMPT, Candidate, PromptTemplate, render_prompt, tail

BOS, EOS, SYSTEM, USER, ASSISTANT, END, THINK, UNTHINK = 1, 2, 3, 4, 5, 6, 7, 8
SPACE = np.arange(100, 200, dtype=np.uint32)  # toy "word start" tokens
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def u32(*ids: int) -> np.ndarray:
    return np.array(ids, dtype=np.uint32)


def words(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(20, 300, size=n, dtype=np.uint32)


def chat(prompt: np.ndarray, reasoning: np.ndarray, answer: np.ndarray, system: np.ndarray | None = None) -> list:
    """A tokenised single-turn trace, laid out as the chat template lays it out (template segments merged)."""
    segs = [Segment(SEG_TEMPLATE, u32(BOS, SYSTEM) if system is not None else u32(BOS, USER))]
    if system is not None:
        segs += [Segment(SEG_PROMPT, system), Segment(SEG_TEMPLATE, u32(END, USER))]
    segs += [Segment(SEG_PROMPT, prompt), Segment(SEG_TEMPLATE, u32(END, ASSISTANT))]
    if len(reasoning):
        segs += [Segment(SEG_TEMPLATE, u32(THINK), 0), Segment(SEG_REASONING, reasoning, 0)]
        segs += [Segment(SEG_TEMPLATE, u32(UNTHINK), 0)]
    return segs + [Segment(SEG_ANSWER, answer), Segment(SEG_TEMPLATE, u32(END, EOS))]


def flat(segs) -> np.ndarray:
    return np.concatenate([s.ids for s in segs]) if segs else u32()


def toy_encode(text: str) -> list[int]:
    """A deterministic toy 'tokenizer' for templates: one id per character."""
    return [1000 + ord(c) % 500 for c in text]


# ------------------------------------------------------------------------------------------------------- tails
@SETTINGS
@given(n=st.integers(0, 300), tau=st.integers(1, 400), seed=st.integers(0, 2**16))
def test_token_tail_is_the_exact_suffix(n, tau, seed):
    ids = words(np.random.default_rng(seed), n)
    kept, cut = tail(ids, tau)
    assert len(kept) == min(n, tau) and cut == (n > tau)
    assert np.array_equal(kept, ids[n - len(kept) :])


@SETTINGS
@given(n=st.integers(0, 300), tau=st.integers(1, 60), rate=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_word_tail_is_a_suffix_starting_at_a_word(n, tau, rate, seed):
    rng = np.random.default_rng(seed)
    ids = words(rng, n)
    starts = rng.random(n) < rate
    ids[starts] = rng.choice(SPACE, size=int(starts.sum()))
    kept, cut = tail(ids, tau, SPACE)
    assert np.array_equal(kept, ids[n - len(kept) :])
    start = n - len(kept)
    in_kept = np.flatnonzero(np.isin(kept, SPACE))
    n_words = len(in_kept) + (0 if len(in_kept) and in_kept[0] == 0 else 1) if len(kept) else 0
    all_words = np.flatnonzero(np.isin(ids, SPACE))
    total = len(all_words) + (0 if len(all_words) and all_words[0] == 0 else 1) if n else 0
    assert n_words == min(tau, total) and cut == (start > 0)
    if cut:
        assert ids[start] in SPACE


def test_tail_rejects_a_non_positive_tau():
    with pytest.raises(ValueError, match="tau must be > 0"):
        tail(u32(1, 2), 0)


@pytest.mark.parametrize(
    "field, text, message",
    [
        ("prompt_template", "{problem}", "{candidates} exactly once"),
        ("prompt_template", "{problem} {candidates} {candidates}", "exactly once"),
        ("prompt_template", "{problem} {candidates} {tau}", "unknown placeholder {tau}"),
        ("candidate_template", "Candidate {index}", "{tail} exactly once"),
        ("answer_template", "Answer: {answer", "literal brace"),
        ("candidate_template", "{tail!r}", "unknown placeholder"),
    ],
)
def test_template_errors_name_the_template_and_the_fix(field, text, message):
    with pytest.raises(ValueError, match=field) as err:
        PromptTemplate(**{field: text})
    assert message in str(err.value)


@SETTINGS
@given(
    k=st.integers(1, 5),
    tau=st.integers(1, 40),
    lens=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 6)), min_size=5, max_size=5),
    include_answer=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_prompt_is_literal_pieces_problem_and_exact_tails(k, tau, lens, include_answer, seed):
    rng = np.random.default_rng(seed)
    problem = words(rng, 12)
    cands = [Candidate(words(rng, r), words(rng, a)) for r, a in lens[:k]]
    encoded = PromptTemplate().encode(toy_encode, k)
    prompt = render_prompt(problem, cands, encoded, tau, include_answer)
    # the expected tokens, written from the spec: literal pieces tokenised with {k}/{index} filled in
    before, rest = DEFAULT_PROMPT.split("{problem}")
    middle, after = rest.split("{candidates}")
    expected = [u32(*toy_encode(before)), problem, u32(*toy_encode(middle.replace("{k}", str(k))))]
    for i, c in enumerate(cands):
        if i:
            expected.append(u32(*toy_encode("\n\n")))
        kept = c.reasoning[max(0, len(c.reasoning) - tau) :]
        cut = len(c.reasoning) > tau
        expected += [u32(*toy_encode(f"Candidate {i + 1}:\n")), u32(*toy_encode("[...] ")) if cut else u32(), kept]
        if include_answer:
            expected += [u32(*toy_encode("\nFinal answer: ")), c.answer]
        assert prompt.tail_tokens[i] == len(kept) and prompt.cut[i] == cut
    expected.append(u32(*toy_encode(after)))
    assert np.array_equal(prompt.ids, np.concatenate(expected))


def test_render_needs_as_many_candidates_as_encoded():
    encoded = PromptTemplate().encode(toy_encode, 3)
    with pytest.raises(ValueError, match="k=3"):
        render_prompt(u32(1), [Candidate(u32(2), u32(3))], encoded, 4)


# ------------------------------------------------------------------------------------------- RSA choices
verdicts = st.lists(st.sampled_from([True, False, None]), min_size=0, max_size=12)


@SETTINGS
@given(
    correct=verdicts,
    k=st.integers(1, 5),
    per_problem=st.integers(1, 6),
    seed=st.text(max_size=8),
    require_correct=st.booleans(),
    require_incorrect=st.booleans(),
)
def test_aggregation_choices_obey_every_rule(correct, k, per_problem, seed, require_correct, require_incorrect):
    plans = plan_aggregations(correct, k, per_problem, seed, require_correct, require_incorrect)
    assert plans == plan_aggregations(correct, k, per_problem, seed, require_correct, require_incorrect)
    assert len(plans) <= per_problem
    if len(correct) < k + 1:
        assert plans == []
    seen = set()
    for p in plans:
        assert p.target not in p.candidates and len(set(p.candidates)) == len(p.candidates) == k
        assert all(0 <= i < len(correct) for i in (p.target, *p.candidates))
        assert correct[p.target] is not False  # a trace verified wrong is never a target
        if require_correct:
            assert correct[p.target] is True
        if require_incorrect:
            assert any(correct[i] is False for i in p.candidates)
        key = (p.target, frozenset(p.candidates))
        assert key not in seen
        seen.add(key)
    # correct targets first: with enough correct traces, no unverified one is chosen
    n_correct = sum(c is True for c in correct)
    if plans and n_correct >= len(plans) and not require_incorrect:
        assert all(correct[p.target] is True for p in plans[:n_correct])


def test_aggregation_spreads_targets_over_the_correct_traces():
    plans = plan_aggregations([True, True, True, False, None, False], 2, 3, "s")
    assert len({p.target for p in plans}) == 3 and {p.target for p in plans} <= {0, 1, 2}


def problem_traces(rng, n: int, correct: list, prompt: np.ndarray | None = None) -> list[Trace]:
    prompt = words(rng, 10) if prompt is None else prompt
    return [
        Trace(f"t{i:02d}", chat(prompt, words(rng, int(rng.integers(1, 60))), words(rng, 3)), correct[i])
        for i in range(n)
    ]


@SETTINGS
@given(n=st.integers(2, 8), k=st.integers(1, 4), tau=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_aggregate_replaces_the_problem_and_keeps_the_target_assistant_turn(n, k, tau, seed):
    rng = np.random.default_rng(seed)
    correct = [bool(rng.integers(2)) if rng.random() < 0.7 else None for _ in range(n)]
    traces = problem_traces(rng, n, correct)
    encoded = PromptTemplate().encode(toy_encode, k)
    samples, skipped = aggregate("key", traces, encoded, USER, tau, per_problem=3, seed=seed)
    by_id = {t.id: t for t in traces}
    assert skipped["ineligible_traces"] == 0
    if n < k + 1:
        assert samples == []
    for s in samples:
        target = by_id[s.target]
        assert s.target not in s.candidates and set(s.candidates) <= set(by_id)  # all of this problem
        assert s.target_correct is not False
        # everything but the problem segment (index 1) is the target's own, token for token
        assert [(x.kind, x.think) for x in s.segments] == [(x.kind, x.think) for x in target.segments]
        for i, (a, b) in enumerate(zip(s.segments, target.segments)):
            assert i == 1 or np.array_equal(a.ids, b.ids)
        prompt = s.segments[1].ids
        for cid, kept in zip(s.candidates, s.tail_tokens):
            reasoning = trace_parts(by_id[cid].segments, USER).reasoning
            assert kept == min(tau, len(reasoning)) and _contains(prompt, reasoning[len(reasoning) - kept :])
        assert _contains(prompt, target.segments[1].ids)  # the problem itself
    # the input order does not matter
    again, _ = aggregate("key", traces[::-1], encoded, USER, tau, per_problem=3, seed=seed)
    assert [(s.target, s.candidates) for s in again] == [(s.target, s.candidates) for s in samples]


def _contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    if len(needle) == 0:
        return True
    windows = np.lib.stride_tricks.sliding_window_view(haystack, len(needle))
    return bool((windows == needle).all(axis=1).any())


def test_aggregate_skips_ineligible_traces_and_prompts_over_budget():
    rng = np.random.default_rng(0)
    traces = problem_traces(rng, 4, [True, True, None, False])
    no_reasoning = Trace("nr", chat(words(rng, 10), u32(), words(rng, 3)))
    two_turns = Trace("mt", traces[0].segments[:-1] + [Segment(SEG_TEMPLATE, u32(END, USER))] + traces[1].segments)
    encoded = PromptTemplate().encode(toy_encode, 2)
    samples, skipped = aggregate("p", [*traces, no_reasoning, two_turns], encoded, USER, 8, 2)
    assert skipped["ineligible_traces"] == 2 and len(samples) == 2
    fixed = min(sum(len(x.ids) for x in s.segments) - len(trace_parts(s.segments, USER).reasoning) for s in samples)
    samples, skipped = aggregate("p", traces, encoded, USER, 8, 2, budget=fixed - 1)
    assert samples == [] and skipped["prompt_exceeds_context"] == 2


def test_system_turn_stays_in_front_of_the_aggregation_prompt():
    rng = np.random.default_rng(1)
    system = words(rng, 5)
    traces = [Trace(f"s{i}", chat(u32(9, 9, 9), words(rng, 20), words(rng, 2), system), True) for i in range(3)]
    samples, _ = aggregate("p", traces, PromptTemplate().encode(toy_encode, 2), USER, 5, 1)
    (s,) = samples
    assert np.array_equal(s.segments[1].ids, system) and trace_parts(s.segments, USER).problem == 3


# ------------------------------------------------------------------------------------------ Markovian chunks
@SETTINGS
@given(
    p=st.integers(1, 40),
    n=st.integers(1, 600),
    s=st.integers(1, 30),
    context=st.integers(8, 300),
    carry=st.integers(0, 120),
    head=st.integers(0, 60),
    system=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_chunk_targets_tile_the_reasoning_and_every_sample_fits(p, n, s, context, carry, head, system, seed):
    rng = np.random.default_rng(seed)
    reasoning = words(rng, n)
    segs = chat(words(rng, p), reasoning, words(rng, s), words(rng, 3) if system else None)
    total = len(flat(segs))
    chunks, reason = chunk_trace(segs, context, carry, head)
    r = next(i for i, x in enumerate(segs) if x.kind == SEG_REASONING)
    prefix, suffix = flat(segs[:r]), flat(segs[r + 1 :])
    if total <= context:
        assert (chunks, reason) == ([], "fits")
        return
    if len(prefix) + min(head, n) + carry + len(suffix) >= context:
        assert (chunks, reason) == ([], "no_room")
        return
    assert reason is None and len(chunks) >= 2
    covered, trained = [], []
    for i, c in enumerate(chunks):
        ids = flat(c.segments)
        assert len(ids) <= context and c.index == i
        assert np.array_equal(ids[: len(prefix)], prefix)  # the query (and <think>) in every sample
        assert all(x.context == (i > 0) for x in c.segments[:r])  # chunks after the first show P as context
        shown = [x for x in c.segments if x.context and x.kind == SEG_REASONING]
        target = [x for x in c.segments if x.kind == SEG_REASONING and not x.context]
        assert sum(len(x.ids) for x in c.segments if x.context) == c.context_tokens
        trained.append(flat([x for x in c.segments if not x.context]))
        h = min(head, c.start)
        expected_context = np.concatenate([reasoning[:h], reasoning[max(h, c.start - carry) : c.start]])
        assert np.array_equal(flat(shown), expected_context)  # head + carry: exact slices, nothing shown twice
        assert np.array_equal(flat(target), reasoning[c.start : c.end])
        covered.append((c.start, c.end))
        last = i == len(chunks) - 1
        assert np.array_equal(ids[len(ids) - len(suffix) :], suffix) == last or len(suffix) == 0
        if not last:  # every chunk but the last is full, unless the answer alone spills into one more sample
            assert len(ids) == context or (c.end == n and i == len(chunks) - 2)
    assert covered[0][0] == 0 and covered[-1][1] == n  # targets tile R exactly, in order
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    assert np.array_equal(np.concatenate(trained), flat(segs))  # what carries loss, over the chain: the trace


def test_chunking_skips_traces_without_reasoning():
    segs = chat(u32(*range(20, 60)), u32(), u32(*range(20, 40)))
    assert chunk_trace(segs, 30, 4, 2) == ([], "no_reasoning")
    with pytest.raises(ValueError, match="context"):
        chunk_trace(segs, 0, 4, 2)
