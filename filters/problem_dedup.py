"""`problem_dedup`: keep at most K reasoning traces per problem (kind == "chat" samples only).

Two samples answer the same problem when their normalised problems (first user turn: NFKC, lowercase, prose
punctuation and all whitespace removed) have character n-gram sets with Jaccard similarity >= `jaccard_threshold`
(MinHash LSH candidates, then verified exactly) and, with `same_numbers`, the same numbers, LaTeX commands and function
names (`normalize.math_marks`, as multisets), so GSM8K-style variants that differ only in their numbers stay distinct.
Samples are visited best first and one is dropped when `k` already kept samples answer the same problem. Best first
means, in order:
  1. it has a final answer (`metadata["answer"]` or a non-empty last assistant turn);
  2. its reasoning fits `max_reasoning_chars` (when set);
  3. the longest reasoning (`prefer: shortest` flips it);
  4. the earliest in the input (by task rank, then position: deterministic for a task count).
Dropped samples get reason `duplicate_problem` and `duplicate_of` = the best kept sample of the same problem.

Problem groups: samples linked by verified pairs (transitively) form one group, and every sample of a group, kept or
dropped, gets the group's smallest `metadata["problem_key"]`, so routing by problem key (the validation split) never
separates two traces of one problem and builders that group traces by problem see the whole group.
Runs and memory: as `minhash` (filters/minhash_steps.py).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from datatrove.data import Document
from pydantic import Field

from reasonpipe.filters.minhash_core import char_ngram_hashes, lsh_threshold
from reasonpipe.filters.minhash_steps import GramSignatureWriter, build_lsh_dedup
from reasonpipe.filters.normalize import Normalization, math_marks, normalize
from reasonpipe.filters.stage import BuildContext, Chain, Stage, StageOptions, register
from reasonpipe.sample import final_answer_text, is_chat, problem_text, reasoning_text


class ProblemDedupOptions(StageOptions):
    """Options of the `problem_dedup` stage (see the module docstring for the keep rule).

    Attributes:
        k: traces kept per problem.
        char_ngram: characters (UTF-8 bytes) per shingle of the normalised problem.
        buckets, hashes_per_bucket: LSH bands and rows (defaults: threshold (1/16)^(1/4) = 0.5).
        jaccard_threshold: minimum true Jaccard similarity of two problems' n-gram sets.
        same_numbers: also require the same numbers, LaTeX commands and function names (math-safe).
        max_reasoning_chars: reasoning longer than this ranks below reasoning that fits (None: no limit).
        prefer: "longest" or "shortest" reasoning among equals.
        normalization: problem normalisation (digits and operators always kept).
        seed: MinHash seed; None = the manifest's seed.
        bucket_tasks, verify_tasks: tasks of the buckets run and of the verification and clustering runs; None =
            the run's tasks.
    """

    k: int = Field(4, ge=1)
    char_ngram: int = Field(5, ge=1, le=64)
    buckets: int = Field(16, ge=1, le=512)
    hashes_per_bucket: int = Field(4, ge=1, le=64)
    jaccard_threshold: float = Field(0.7, gt=0.0, le=1.0)
    same_numbers: bool = True
    max_reasoning_chars: int | None = Field(None, ge=0)
    prefer: Literal["longest", "shortest"] = "longest"
    normalization: Normalization = Field(default_factory=lambda: Normalization(strip_punctuation=True))
    seed: int | None = None
    bucket_tasks: int | None = Field(None, ge=1)
    verify_tasks: int | None = Field(None, ge=1)


def problem_key(text: str, norm: Normalization) -> str:
    """The normalised problem that is shingled: normalised, then every space removed."""
    return normalize(text, norm).replace(" ", "")


_DEFAULT_NORM = ProblemDedupOptions().normalization


def problem_hash(text: str) -> str:
    """A sample's problem key (`metadata["problem_key"]`): hex xxhash64 of its normalised problem (default options).

    Set on every chat sample when it is normalised (pipeline/steps.py); validation routing and every step that groups
    traces by problem use it.
    """
    from xxhash import xxh64_hexdigest

    return xxh64_hexdigest(problem_key(text, _DEFAULT_NORM).encode())


def rank_key(doc: Document, opts: ProblemDedupOptions) -> tuple[int, int, int]:
    """Sort key of a sample within its problem group (smaller = better, ties: input order; see the module doc)."""
    reasoning = len(reasoning_text(doc))
    has_answer = bool(doc.metadata.get("answer")) or bool(final_answer_text(doc).strip())
    fits = opts.max_reasoning_chars is None or reasoning <= opts.max_reasoning_chars
    return (int(not has_answer), int(not fits), -reasoning if opts.prefer == "longest" else reasoning)


class ProblemSigner(GramSignatureWriter):
    """Signs chat samples of the selected domains by the character n-grams of their normalised problem."""

    name = "🎯 problem signatures"

    def __init__(self, work_dir: str, opts: ProblemDedupOptions, seed: int, domains, bucket_tasks: int):
        super().__init__(work_dir, opts.buckets, opts.hashes_per_bucket, seed, bucket_tasks)
        self.opts, self.domains = opts, domains

    def selected(self, doc: Document) -> bool:
        return is_chat(doc) and (self.domains is None or doc.metadata.get("domain") in self.domains)

    def grams(self, docs: list[Document]) -> tuple[np.ndarray, np.ndarray]:
        return char_ngram_hashes(
            [problem_key(problem_text(d), self.opts.normalization) for d in docs], self.opts.char_ngram
        )

    def marks(self, doc: Document) -> list[str] | None:
        return math_marks(problem_text(doc)) if self.opts.same_numbers else None

    def key(self, doc: Document) -> tuple[int, int, int]:
        return rank_key(doc, self.opts)

    def problem_key(self, doc: Document) -> int:
        key = doc.metadata.get("problem_key")
        try:
            return int(key, 16)
        except (TypeError, ValueError):  # not set (a sample that skipped normalisation): derive it
            return int(problem_hash(problem_text(doc)), 16)


@register
class ProblemDedupStage(Stage):
    name = "problem_dedup"
    Options = ProblemDedupOptions

    def build(self, opts: ProblemDedupOptions, ctx: BuildContext, chain: Chain) -> None:
        seed = ctx.seed if opts.seed is None else opts.seed
        signer = ProblemSigner(ctx.work_dir, opts, seed, ctx.domains, opts.bucket_tasks or ctx.tasks)
        build_lsh_dedup(
            chain, ctx, signer, opts, "problem", "duplicate_problem", marks="equal", keep=opts.k, relabel=True
        )

    def describe(self, opts: ProblemDedupOptions) -> str:
        t = lsh_threshold(opts.buckets, opts.hashes_per_bucket)
        return (
            f"<= {opts.k} traces per problem; char {opts.char_ngram}-grams, LSH threshold ~{t:.2f}, "
            f"verified at Jaccard >= {opts.jaccard_threshold}{', same numbers' if opts.same_numbers else ''}; "
            "one problem_key per problem group"
        )
