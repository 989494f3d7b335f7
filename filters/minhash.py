"""`minhash`: near-duplicate removal with MinHash LSH whose candidate pairs are verified by true Jaccard similarity.

Runs (see filters/minhash_steps.py): signatures are computed inline (vectorised numpy, ~20x datatrove's signature
step) while the documents are materialized; then LSH buckets (N tasks, each reading only its hash range of band
keys), verification (V tasks, each verifying the pairs routed to it), clustering over the verified pairs (V tasks) and
the filtering streaming run. Unlike datatrove, no document is removed on a band collision alone: the pair's shingle
sets must reach `jaccard_threshold`. Documents are visited in (rank, position) order and one is removed when it is
verified-similar to an earlier kept document (not through chains of removed ones).

Number-aware verification (`number_aware`, on for the math and reasoning domains): template variants of one problem
("Compute $\\tan 330^\\circ$" / "Compute $\\cos 45^\\circ$", "x^2+bx+48" / "x^2+bx+18") share most shingles but
are different problems. For a pair where either document is in a number-aware domain, the numbers, LaTeX commands
and function names of one (as a multiset, see `normalize.math_marks`) must all occur in the other: a copy may lose
some (an edit, a dropped sentence) but two documents that each have a number the other lacks are kept apart.
"""

from __future__ import annotations

import numpy as np
from datatrove.data import Document
from pydantic import Field, field_validator

from reasonpipe.filters.minhash_core import lsh_threshold, ngram_hashes, token_hashes
from reasonpipe.filters.minhash_steps import GramSignatureWriter, build_lsh_dedup
from reasonpipe.filters.normalize import Normalization, math_marks, prepare
from reasonpipe.filters.stage import BuildContext, Chain, Stage, StageOptions, register


class MinhashOptions(StageOptions):
    """Options of the `minhash` stage.

    Defaults, measured (tests/test_dedup.py, bench/dedup.py) on 12,000 real paragraphs/problems of >= 60 words with
    planted copies whose words are 5% / 10% replaced by common words: 3-token shingles, 32 bands x 4 hashes (LSH
    threshold (1/32)^(1/4) ~ 0.42, so pairs at Jaccard ~0.55 become candidates with probability ~0.97) and
    verification at Jaccard >= 0.55 remove 99% / 96% of the copies and 0.9% of the originals (mostly genuine
    near-duplicates: parallel LaTeX lemmas, LeetCode problems sharing a long code stub). A replaced word breaks up to
    3 shingles, so 10% replaced words leave Jaccard ~0.57; 5-token shingles (datatrove's default) would leave ~0.42.

    Attributes:
        shingle_size: tokens per shingle (tokens: words, numbers, single operators; see filters/normalize.py).
        buckets: LSH bands.
        hashes_per_bucket: MinHash values per band.
        jaccard_threshold: minimum true Jaccard similarity of two documents' shingle sets to call them duplicates.
        normalization: text normalisation before tokenising (digits and operators are always kept).
        number_aware: domains whose documents get the number-aware check (module docstring); `true`: every
            document, `false`: none.
        seed: MinHash seed; None = the manifest's seed.
        bucket_tasks: tasks of the buckets run (each reads 1/bucket_tasks of the band keys); None = the run's tasks.
        verify_tasks: tasks of the verification and clustering runs (each verifies 1/verify_tasks of the candidate
            pairs, then clusters 1/verify_tasks of the groups); None = the run's tasks.
    """

    shingle_size: int = Field(3, ge=1, le=64)
    buckets: int = Field(32, ge=1, le=512)
    hashes_per_bucket: int = Field(4, ge=1, le=64)
    jaccard_threshold: float = Field(0.55, gt=0.0, le=1.0)
    normalization: Normalization = Field(default_factory=Normalization)
    number_aware: bool | list[str] = ["math", "reasoning"]
    seed: int | None = None
    bucket_tasks: int | None = Field(None, ge=1)
    verify_tasks: int | None = Field(None, ge=1)

    @field_validator("number_aware", mode="before")
    @classmethod
    def _domains_or_bool(cls, value):
        if isinstance(value, bool) or (isinstance(value, list) and all(isinstance(d, str) for d in value)):
            return value
        raise ValueError("expected true, false or a list of domain names")


class WordShingleSigner(GramSignatureWriter):
    """Signs `doc.text` by its word shingles (documents of the selected domains only)."""

    name = "🎯 MinHash signatures (numpy)"

    def __init__(self, work_dir: str, opts: MinhashOptions, seed: int, domains, bucket_tasks: int):
        super().__init__(work_dir, opts.buckets, opts.hashes_per_bucket, seed, bucket_tasks)
        self.shingle_size, self.norm, self.domains = opts.shingle_size, opts.normalization, domains
        self.number_aware = opts.number_aware

    def selected(self, doc: Document) -> bool:
        return self.domains is None or doc.metadata.get("domain") in self.domains

    def grams(self, docs: list[Document]) -> tuple[np.ndarray, np.ndarray]:
        tokens, offsets = token_hashes([prepare(doc.text, self.norm) for doc in docs])
        return ngram_hashes(tokens, offsets, self.shingle_size, whole_if_short=True)

    def marks(self, doc: Document) -> list[str] | None:
        aware = self.number_aware
        if aware is True or (aware is not False and doc.metadata.get("domain") in aware):
            return math_marks(doc.text)
        return None


@register
class MinhashStage(Stage):
    name = "minhash"
    Options = MinhashOptions

    def build(self, opts: MinhashOptions, ctx: BuildContext, chain: Chain) -> None:
        seed = ctx.seed if opts.seed is None else opts.seed
        signer = WordShingleSigner(ctx.work_dir, opts, seed, ctx.domains, opts.bucket_tasks or ctx.tasks)
        build_lsh_dedup(chain, ctx, signer, opts, "minhash", "duplicate_near", marks="contained")

    def describe(self, opts: MinhashOptions) -> str:
        t = lsh_threshold(opts.buckets, opts.hashes_per_bucket)
        aware = opts.number_aware
        scope = "all" if aware is True else "no" if aware is False or not aware else "/".join(aware)
        return (
            f"{opts.shingle_size}-token shingles, {opts.buckets} buckets x {opts.hashes_per_bucket} hashes "
            f"(LSH threshold ~{t:.2f}), verified at Jaccard >= {opts.jaccard_threshold}; "
            f"numbers must agree in {scope} documents"
        )
