"""Markovian RSA at test time: N traces per problem, refined for T rounds from bounded tails of each other.

    round 0     N traces from the problem's own prompt
    round r     for each of N new traces: K traces of round r - 1 drawn without replacement (seeded by
                (seed, problem, round, trace)); their tails (last TAU tokens of the reasoning, token-exact) shown in
                the aggregation prompt that `rsa_aggregate` trains on; the model writes one improved trace
    answer      majority vote over the last round's final answers (pipeline/evaluate.py)

Every prompt is rendered by the builder's own code: `trimming.tails.render_prompt` with the `EncodedPrompt` of the
training manifest's `builders.rsa_aggregate` templates (defaults when unknown), placed into the problem's rendered
conversation by `trimming.rsa.with_problem`, as a training sample's user turn is. A trace's candidate reasoning is
its think block (its whole output when it opened none), its answer what follows `</think>`.

The context is Markovian: a prompt's length has a bound that does not grow with the round, asserted for every
prompt: the prompt rendered with K empty candidates + K x (truncation marker + min(TAU, max_new_tokens) tail tokens
[+ max_new_tokens answer tokens with include_answer_in_tail]); with `tail_unit: words` a tail counts up to
max_new_tokens tokens. Each round's N x problems generations go through `complete` in batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reasonpipe.pipeline.completion import (
    Completion,
    PromptError,
    Sampling,
    Throughput,
    complete,
    conversation,
    generation_prompt,
    render_turns,
)
from reasonpipe.pipeline.load_model import LoadedModel
from reasonpipe.segments import Segment
from reasonpipe.trimming.rsa import problem_segment, with_problem
from reasonpipe.trimming.tails import Candidate, EncodedPrompt, render_prompt
from reasonpipe.trimming.ttc_config import RSAConfig


@dataclass(frozen=True)
class RSAShape:
    n: int  # traces per problem (population)
    k: int  # candidates per aggregation prompt
    t: int  # aggregation rounds after round 0
    tau: int  # tail length (tokens, or words with tail_unit: words)

    def __post_init__(self) -> None:
        if self.n < 1 or self.t < 0 or self.tau < 1 or not 1 <= self.k <= self.n:
            raise ValueError(f"--rsa {self.n},{self.k},{self.t} --tail {self.tau}: need N >= 1, 1 <= K <= N, T >= 0 "
                             "and TAU >= 1")  # fmt: skip


@dataclass(frozen=True)
class ProblemPrompt:
    segments: list[Segment]  # the problem's conversation rendered as a training sample (<bos> ... <eos>)
    problem: int  # index of the problem segment
    ids: np.ndarray  # round 0's generation prompt
    bound: int  # the most tokens an aggregation prompt of this problem can have


@dataclass
class RSARun:
    rounds: list[list[list[Completion]]]  # [round][problem][trace]
    max_prompt_tokens: list[int]  # per round, the longest prompt
    bound: int  # the largest per-problem bound
    throughput: Throughput = field(default_factory=Throughput)


class RSAHarness:
    def __init__(
        self, loaded: LoadedModel, shape: RSAShape, sampling: Sampling, options: RSAConfig | None = None,
        system: str | None = None,
    ) -> None:  # fmt: skip
        self.loaded, self.shape, self.sampling, self.system = loaded, shape, sampling, system
        base = options or RSAConfig()
        self.options = base.model_copy(update={"k": shape.k, "tau": shape.tau})
        template = loaded.template
        self.encoded: EncodedPrompt = self.options.template().encode(lambda t: template.encode_texts([t])[0], shape.k)
        self.word_starts = None
        if self.options.tail_unit == "words":
            from reasonpipe.pipeline.ttc import word_start_ids

            self.word_starts = np.asarray(word_start_ids(template.tokenizer), dtype=np.uint32)

    def problem_prompt(self, problem: str) -> ProblemPrompt:
        turns = conversation([{"role": "user", "content": problem}], self.system)
        segments = render_turns(self.loaded.template, turns)
        at = problem_segment(segments, self.loaded.tokens.user)
        if at is None:
            raise PromptError(f"problem {problem[:60]!r} renders without a problem segment (empty after normalising?)")
        ids = generation_prompt(segments, self.loaded.tokens, self.sampling.think)
        empty = [Candidate(np.zeros(0, np.uint32), np.zeros(0, np.uint32))] * self.shape.k
        m = self.sampling.max_new_tokens
        per = len(self.encoded.marker) + (m if self.word_starts is not None else min(self.shape.tau, m))
        per += m if self.options.include_answer_in_tail else 0
        base = ProblemPrompt(segments, at, ids, 0)
        return ProblemPrompt(segments, at, ids, len(self.aggregation_prompt(base, empty)) + self.shape.k * per)

    def aggregation_prompt(self, p: ProblemPrompt, candidates: Sequence[Candidate]) -> np.ndarray:
        """The generation prompt showing `candidates` for problem `p`: a builder sample's prefix, token for token."""
        problem = p.segments[p.problem].ids
        shown = render_prompt(problem, candidates, self.encoded, self.shape.tau,
                              self.options.include_answer_in_tail, self.word_starts)  # fmt: skip
        segments = with_problem(p.segments, p.problem, shown.ids)
        return generation_prompt(segments, self.loaded.tokens, self.sampling.think)

    def picks(self, problem: int, round_: int, trace: int) -> list[int]:
        """The K traces of the previous round shown to trace `trace` of round `round_` (seeded, no repeats)."""
        rng = random.Random(f"{self.sampling.seed}\x00rsa\x00{problem}\x00{round_}\x00{trace}")
        return rng.sample(range(self.shape.n), self.shape.k)

    def run(self, prompts: Sequence[ProblemPrompt]) -> RSARun:
        """Rounds 0..T for the problems' prompts (`problem_prompt`)."""
        n = self.shape.n
        out = RSARun([], [], max(p.bound for p in prompts))
        batch = [p.ids for p in prompts for _ in range(n)]
        for r in range(self.shape.t + 1):
            if r:
                batch = []
                for i, p in enumerate(prompts):
                    last = out.rounds[-1][i]
                    for j in range(n):
                        cands = [Candidate(last[c].candidate_reasoning(), last[c].answer) for c in self.picks(i, r, j)]
                        ids = self.aggregation_prompt(p, cands)
                        if len(ids) > p.bound:  # the Markovian bound (module doc); checked on every prompt
                            raise AssertionError(f"RSA prompt of {len(ids)} tokens over its bound {p.bound}")
                        batch.append(ids)
            done = complete(self.loaded, batch, self.sampling, stream=r, throughput=out.throughput)
            out.rounds.append([done[i * n : (i + 1) * n] for i in range(len(prompts))])
            out.max_prompt_tokens.append(max(len(ids) for ids in batch))
        return out
