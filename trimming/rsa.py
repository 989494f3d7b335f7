"""RSA aggregation samples of one problem: choose candidates and a target, assemble the chat sample. Pure.

Input: the traces of one problem (tokenised chat samples sharing a problem key, each with its verdict `correct`:
True, False or None when unknown). For up to `per_problem` samples, a target trace and K other traces (the
candidates) are drawn with a generator seeded by (seed, problem key, sample number), so the choice depends on nothing
but the data and the seed. The sample is the target's own chat sample with its problem replaced by the aggregation
prompt (`tails.render_prompt`: the problem and the candidates' tails): the assistant turn, reasoning and answer, is the
target's, untouched; AP trimming later fits its reasoning to the phase's context like any sample's.

Targets: a trace verified correct is preferred, an unverified one (None) comes next, and a trace verified wrong is
never a target (the model would learn to aggregate into a wrong answer); `require_correct` allows only correct ones.
`require_incorrect` keeps only samples with at least one candidate verified wrong, so the model sees disagreement.
The target is never one of its candidates, and a (target, candidate set) pair is emitted once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reasonpipe.segments import SEG_ANSWER, SEG_PROMPT, SEG_REASONING, SEG_TEMPLATE, Segment
from reasonpipe.trimming.tails import Candidate, EncodedPrompt, render_prompt


@dataclass(frozen=True)
class Trace:
    id: str
    segments: list[Segment]
    correct: bool | None = None


@dataclass(frozen=True)
class TraceParts:
    """Where a single-problem trace keeps its problem, reasoning and answer."""

    problem: int  # index of the problem segment (the content of the only user turn)
    reasoning: np.ndarray  # tokens of its (last) think block's reasoning
    answer: np.ndarray  # tokens of the final answer


def problem_segment(segments: Sequence[Segment], user_id: int) -> int | None:
    """The index of the problem segment (the content of the only user turn), or None (no user turn, or several)."""
    at = [(i, j) for i, s in enumerate(segments) if s.kind == SEG_TEMPLATE for j in np.flatnonzero(s.ids == user_id)]
    if len(at) != 1:  # no user turn, or several: not one problem and its solution
        return None
    (i, j), problem = at[0], at[0][0] + 1  # the problem is the content right after the user marker
    if j != len(segments[i].ids) - 1 or problem >= len(segments) or segments[problem].kind != SEG_PROMPT:
        return None
    return problem


def with_problem(segments: Sequence[Segment], problem: int, prompt: np.ndarray) -> list[Segment]:
    """The segments with the problem segment replaced by an aggregation prompt's tokens (the builder's samples and
    the RSA harness's prompts both come from here)."""
    return [*segments[:problem], Segment(SEG_PROMPT, prompt), *segments[problem + 1 :]]


def trace_parts(segments: Sequence[Segment], user_id: int) -> TraceParts | None:
    """The parts of a trace with exactly one user turn, a non-empty reasoning and an answer after it; else None."""
    problem = problem_segment(segments, user_id)
    if problem is None:
        return None
    thinks = [s.think for s in segments if s.kind == SEG_REASONING and s.think >= 0 and len(s.ids)]
    if not thinks:
        return None
    last = max(thinks)
    where = [i for i, s in enumerate(segments) if s.kind == SEG_REASONING and s.think == last]
    answers = [s for s in segments[where[-1] + 1 :] if s.kind == SEG_ANSWER]
    if not answers:
        return None
    reasoning = np.concatenate([segments[i].ids for i in where])
    return TraceParts(problem, reasoning, np.concatenate([s.ids for s in answers]))


@dataclass(frozen=True)
class Aggregation:
    target: int  # index of the target trace
    candidates: tuple[int, ...]  # indices of the candidate traces, in prompt order


def plan_aggregations(
    correct: Sequence[bool | None],
    k: int,
    per_problem: int,
    seed: str,
    require_correct: bool = False,
    require_incorrect: bool = False,
) -> list[Aggregation]:
    """Up to `per_problem` (target, candidates) choices among traces with these verdicts (module doc). Pure."""
    n = len(correct)
    if k < 1 or per_problem < 1:
        raise ValueError(f"plan_aggregations: k ({k}) and per_problem ({per_problem}) must be >= 1")
    if n < k + 1:
        return []
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    good = [i for i in order if correct[i] is True]
    targets = good if require_correct else good + [i for i in order if correct[i] is None]
    out, seen = [], set()
    for j in range(per_problem * 4):  # a few more draws than samples: some repeat a (target, candidates) pair
        if len(out) == per_problem or not targets:
            break
        target = targets[j % len(targets)]
        others = [i for i in range(n) if i != target]
        wrong = [i for i in others if correct[i] is False]
        if require_incorrect:
            if not wrong:
                continue
            first = rng.choice(wrong)
            picked = [first] + rng.sample([i for i in others if i != first], k - 1)
        else:
            picked = rng.sample(others, k)
        rng.shuffle(picked)
        key = (target, frozenset(picked))
        if key not in seen:
            seen.add(key)
            out.append(Aggregation(target, tuple(picked)))
    return out


@dataclass(frozen=True)
class RSASample:
    segments: list[Segment]
    target: str  # trace ids
    candidates: tuple[str, ...]
    tail_tokens: tuple[int, ...]
    cut: tuple[bool, ...]
    target_correct: bool | None
    candidates_correct: tuple[bool | None, ...]


def aggregate(
    problem_key: str,
    traces: Sequence[Trace],
    encoded: EncodedPrompt,
    user_id: int,
    tau: int,
    per_problem: int,
    seed: int = 0,
    include_answer: bool = False,
    require_correct: bool = False,
    require_incorrect: bool = False,
    budget: int | None = None,
    word_starts: np.ndarray | None = None,
) -> tuple[list[RSASample], dict[str, int]]:
    """The aggregation samples of one problem's traces (eligible ones: `trace_parts`) and counters of what was skipped.

    Traces are taken in id order, so the result does not depend on the order they arrive in. With `budget`, a sample
    whose prompt, template and answer alone exceed it (its reasoning could not be trimmed to fit) is skipped.
    """
    skipped = {"ineligible_traces": 0, "prompt_exceeds_context": 0}
    parts, eligible = [], []
    for trace in sorted(traces, key=lambda t: t.id):
        p = trace_parts(trace.segments, user_id)
        if p is None:
            skipped["ineligible_traces"] += 1
            continue
        parts.append(p)
        eligible.append(trace)
    plans = plan_aggregations(
        [t.correct for t in eligible], encoded.k, per_problem, f"{seed}\x00{problem_key}", require_correct,
        require_incorrect,
    )  # fmt: skip
    samples = []
    for plan in plans:
        target, p = eligible[plan.target], parts[plan.target]
        cands = [Candidate(parts[i].reasoning, parts[i].answer) for i in plan.candidates]
        prompt = render_prompt(target.segments[p.problem].ids, cands, encoded, tau, include_answer, word_starts)
        segments = with_problem(target.segments, p.problem, prompt.ids)
        if budget is not None and sum(len(s.ids) for s in segments) - len(p.reasoning) > budget:
            skipped["prompt_exceeds_context"] += 1
            continue
        samples.append(
            RSASample(
                segments,
                target.id,
                tuple(eligible[i].id for i in plan.candidates),
                prompt.tail_tokens,
                prompt.cut,
                target.correct,
                tuple(eligible[i].correct for i in plan.candidates),
            )
        )
    return samples, skipped
