"""Consecutive dedup stages share one materialization (pipeline/runs.py `Chain.materialize`): their signers ride one
streaming run and each stage's global steps skip what the earlier stages remove. The result must be exactly that of
running the stages one after the other, each on the documents the previous one kept."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters.base_filter import BaseFilter
from dedupdata import chat_sample, generated_texts, perturb, problem_variant
from stagekit import RankReader

from reasonpipe.docio import DocReader, DocWriter
from reasonpipe.filters.stage import BuildContext
from reasonpipe.pipeline.registry import stage_class
from reasonpipe.pipeline.runs import Chain

pytestmark = pytest.mark.usefixtures("one_thread")

STAGES = ("exact_dedup", "minhash", "problem_dedup")


class KeepAll(BaseFilter):
    """A filter that keeps every document: between two dedup stages it stops them sharing a materialization."""

    name = "keep all"

    def filter(self, doc) -> bool:
        return True


def corpus(seed: int = 0) -> list:
    """Chat samples: problems with 2-7 traces, exact copies and near-copies (5% of the words replaced) of some traces,
    so exact dedup removes docs MinHash would also pair, and MinHash removes traces that problem dedup (4 kept per
    problem, best first by answer and length, not by position) would otherwise count."""
    rng = random.Random(seed)
    problems = generated_texts(40, seed=seed, words=(25, 40))
    traces = generated_texts(400, seed=seed + 1, words=(60, 120))
    docs = []
    for p, problem in enumerate(problems):
        for t in range(rng.randint(2, 7)):
            reasoning = traces.pop()
            text = problem if rng.random() < 0.5 else problem_variant(problem, rng)
            docs.append(chat_sample(f"p{p}-t{t}", text, reasoning, f"The answer is {p}."))
            if rng.random() < 0.3:
                docs.append(chat_sample(f"p{p}-t{t}-exact", text, reasoning, f"The answer is {p}."))
            if rng.random() < 0.3:
                near = perturb(reasoning, 0.05, rng)
                docs.append(chat_sample(f"p{p}-t{t}-near", text, near, f"The answer is {p}."))
    rng.shuffle(docs)
    return docs


def run_dedup(root: Path, docs: list, fused: bool, tasks: int = 3) -> tuple[list, list, list[str]]:
    """The three dedup stages through the manifest compiler's `Chain`: (kept (id, problem_key) in order, excluded
    (label, id, reason, duplicate_of) sorted, run names)."""
    inputs = root / "inputs"
    share = -(-len(docs) // tasks)
    for rank in range(tasks):
        writer = DocWriter(str(inputs))
        list(writer.run(iter(docs[rank * share : (rank + 1) * share]), rank, tasks))
    chain = Chain(str(root / "prep"), tasks)
    chain.add(DocReader(str(inputs)))
    for i, name in enumerate(STAGES):
        label = f"{i:02d}-{name}"
        chain.label = label
        cls = stage_class(name)
        ctx = BuildContext(label, str(root / "stages" / label), str(root / "excl" / label), tasks, 0, None)
        cls().build(cls.Options.model_validate({}), ctx, chain)
        if not fused:
            chain.add(KeepAll())
    chain.label = None
    chain.close("final", DocWriter(str(root / "final")))
    for run in chain.runs:
        LocalPipelineExecutor(run.build(), tasks=run.tasks, workers=1, logging_dir=run.logging_dir).run()
    kept = [
        (doc.id, doc.metadata.get("problem_key"))
        for rank in range(tasks)
        for doc in DocReader(str(root / "final")).run(None, rank, tasks)
    ]
    excluded = []
    for path in sorted((root / "excl").rglob("*.jsonl.gz")):
        for line in gzip.open(path, "rt"):
            doc = json.loads(line)
            meta = doc["metadata"]
            excluded.append((path.parent.name, doc["id"], meta["filter_reason"], meta.get("duplicate_of")))
    return kept, sorted(excluded), [run.name for run in chain.runs]


def test_fused_dedup_stages_remove_exactly_what_sequential_stages_remove(tmp_path: Path) -> None:
    docs = corpus()
    kept, excluded, runs = run_dedup(tmp_path / "fused", docs, fused=True)
    kept_seq, excluded_seq, runs_seq = run_dedup(tmp_path / "sequential", docs, fused=False)
    assert sum(name.startswith("stream-") for name in runs) == 1  # the documents are written once, not 3 times
    assert sum(name.startswith("stream-") for name in runs_seq) == 3
    reasons = {reason for _, _, reason, _ in excluded}
    assert reasons == {"duplicate_exact", "duplicate_near", "duplicate_problem"}  # every stage has work to do
    assert excluded == excluded_seq
    assert kept == kept_seq
    assert len(kept) + len(excluded) == len(docs)


def test_a_signer_never_rides_past_a_stage_that_relabels_problem_keys(tmp_path: Path) -> None:
    """Problem dedup rewrites `problem_key` of the documents it keeps: a later dedup stage must sign its output."""
    chain = Chain(str(tmp_path / "prep"), 2)
    chain.add(RankReader(str(tmp_path / "inputs")))
    for i, name in enumerate(("problem_dedup", "minhash", "exact_dedup")):
        chain.label = label = f"{i:02d}-{name}"
        cls = stage_class(name)
        ctx = BuildContext(label, str(tmp_path / label), str(tmp_path / "excl" / label), 2, 0, None)
        cls().build(cls.Options.model_validate({}), ctx, chain)
    streams = [run for run in chain.runs if run.name.startswith("stream-")]
    assert [run.name for run in streams] == ["stream-00-problem_dedup", "stream-01-minhash"]  # exact rode minhash's
    assert [type(step).__name__ for step in streams[1].steps][-3:] == [
        "WordShingleSigner",
        "ExactSignatureWriter",
        "DocWriter",
    ]
