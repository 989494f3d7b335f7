"""Throughput of the dedup and decontamination stages, and our MinHash against a plain datatrove MinHash pipeline.

Corpus: the real paragraphs/problems of ../shared/data/real (>= 60 words) with planted near-duplicates (5% and 10% of
words replaced by common words) and exact duplicates (case/whitespace variants); generated text when the real data is
absent. Every stage runs end to end through the same local datatrove chain (tests/stagekit.py: jsonl.gz read,
materialize, extra runs, filter, jsonl.gz write) in one process (workers=1) and is timed in CPU seconds of this
process (the machine is shared, so wall time is noisy); the input files are written before timing starts. The datatrove
baseline runs its four MinHash steps with the same shingle size, buckets, hashes per bucket and task count (whitespace
word splitting, since its default English splitter needs spaCy; that is faster than spaCy, so it favours datatrove).

    .venv/bin/python bench/dedup.py [--docs N] [--tasks T] [--io jsonl.gz|jsonl|docio]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from datatrove.data import Document  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402
from dedupdata import REAL, generated_texts, planted_corpus, real_texts  # noqa: E402
from stagekit import LocalChain, read_docs  # noqa: E402

import reasonpipe.filters.decontaminate  # noqa: E402,F401  (registers the stage)
import reasonpipe.filters.exact_dedup  # noqa: E402,F401
import reasonpipe.filters.problem_dedup  # noqa: E402,F401
from reasonpipe.filters.minhash import MinhashOptions, WordShingleSigner  # noqa: E402
from reasonpipe.filters.minhash_steps import LshBuckets, RemovalFilter, VerifyCluster  # noqa: E402
from reasonpipe.filters.stage import REGISTRY, BuildContext  # noqa: E402
from reasonpipe.sample import render_text  # noqa: E402


class DocioChain(LocalChain):
    """The chain with the pipeline's own intermediate format (pipeline/docio.py: orjson, gzip level 1)."""

    def reader(self, folder: str):
        from reasonpipe.pipeline.docio import DocReader

        return DocReader(folder)

    def writer(self, folder: str):
        from reasonpipe.pipeline.docio import DocWriter

        return DocWriter(folder)


def make_chain(root: Path, tasks: int, input_folder: Path, io: str) -> LocalChain:
    if io == "docio":
        return DocioChain(root, tasks, str(input_folder))
    return LocalChain(root, tasks, str(input_folder), compressed=io == "jsonl.gz")


def write_input(folder: Path, docs: list[Document], tasks: int, io: str) -> None:
    parts = [docs[r * len(docs) // tasks : (r + 1) * len(docs) // tasks] for r in range(tasks)]
    if io == "docio":
        for rank, part in enumerate(parts):
            drain(DocioChain(folder, tasks, str(folder)).writer(str(folder)).run(iter(part), rank, tasks))
        return
    suffix = ".jsonl.gz" if io == "jsonl.gz" else ".jsonl"
    compression = "gzip" if io == "jsonl.gz" else None
    with JsonlWriter(str(folder), output_filename="${rank}" + suffix, compression=compression) as writer:
        for rank, part in enumerate(parts):
            for doc in part:
                writer.write(doc, rank=rank)


def drain(result) -> None:
    """Run a step's `run` to completion (some are generators, some plain functions)."""
    if result is not None:
        deque(result, maxlen=0)


def run_ours(stage_name: str, options: dict, input_folder: Path, root: Path, tasks: int, io: str):
    """CPU seconds of a registered stage end to end through the chain, and the ids it kept."""
    chain = make_chain(root, tasks, input_folder, io)
    if stage_name != "passthrough":
        stage = REGISTRY[stage_name]()
        opts = stage.Options.model_validate(options)
        ctx = BuildContext(f"00-{stage_name}", str(root / "work"), str(root / "exclusions"), tasks, 0, None)
        stage.build(opts, ctx, chain)
    start = time.process_time()
    chain.execute(str(root / "output"))
    seconds = time.process_time() - start
    return seconds, {d.id for d in read_docs(root / "output", tasks, ".jsonl" if io == "jsonl" else ".jsonl.gz")}


def datatrove_steps(root: Path, n: int, bands: int, rows: int):
    """datatrove's four MinHash steps (whitespace word splitting: its default English splitter needs spaCy)."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    config = MinhashConfig(n_grams=n, num_buckets=bands, hashes_per_bucket=rows, seed=0)
    sigs, buckets, removes = (str(root / d) for d in ("sigs", "buckets", "remove"))
    return (
        MinhashDedupSignature(sigs, config, language=Whitespace()),
        MinhashDedupBuckets(sigs, buckets, config=config),
        MinhashDedupCluster(buckets, removes, config=config),
        MinhashDedupFilter(removes),
    )


def run_datatrove(input_folder: Path, root: Path, tasks: int, io: str, in_chain: bool, bands: int = 32):
    """datatrove MinHash end to end: standalone (signatures read the input, the filter re-reads it) or as a stage of
    our chain (materialize first, as every global stage must, then its four runs)."""
    sig, buckets, cluster, filt = datatrove_steps(root, 3, bands, 4)
    chain = make_chain(root, tasks, input_folder, io)
    folder = chain.materialize() if in_chain else str(input_folder)
    if not in_chain:
        chain.runs.clear()
    chain.add_run("signatures", [chain.reader(folder), sig], tasks)
    chain.add_run("buckets", [buckets], bands)
    chain.add_run("cluster", [cluster], 1)
    chain.continue_from(folder, filt)
    start = time.process_time()
    chain.execute(str(root / "output"))
    seconds = time.process_time() - start
    return seconds, {d.id for d in read_docs(root / "output", tasks, ".jsonl" if io == "jsonl" else ".jsonl.gz")}


def in_memory(docs: list[Document], tasks: int, root: Path, ours: bool, bands: int = 32):
    """MinHash compute only: the same four steps called on in-memory documents (no JSON I/O)."""
    parts = [docs[r * len(docs) // tasks : (r + 1) * len(docs) // tasks] for r in range(tasks)]
    if ours:
        opts = MinhashOptions()
        sig_dir, pairs, removals = (str(root / d) for d in ("sig", "pairs", "rem"))
        sig, filt = WordShingleSigner(sig_dir, opts, 0, None), RemovalFilter(removals, "duplicate_near")
        buckets = LshBuckets(sig_dir, pairs, bands)
        cluster = VerifyCluster(sig_dir, pairs, removals, opts.jaccard_threshold)
        bucket_tasks = min(bands, tasks)
    else:
        sig, buckets, cluster, filt = datatrove_steps(root, 3, bands, 4)
        bucket_tasks = bands
    start = time.process_time()
    for r, part in enumerate(parts):
        drain(sig.run(iter(part), r, tasks))
    for b in range(bucket_tasks):
        drain(buckets.run(None, b, bucket_tasks))
    drain(cluster.run(None, 0, 1))
    kept = {d.id for r, part in enumerate(parts) for d in filt.run(iter(part), r, tasks)}
    return time.process_time() - start, kept


def chat_corpus(limit: int) -> list[Document]:
    """GSM8K problems as chat samples (answer as reasoning + final answer), each with 2 variants of its problem."""
    path = REAL / "math/gsm8k_train.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()][:limit] if path.exists() else []
    if not records:
        records = [{"question": t[:300], "answer": t[300:] + "\n#### 1"} for t in generated_texts(limit, seed=9)]
    rng = random.Random(0)
    docs = []
    for i, r in enumerate(records):
        reasoning, _, answer = r["answer"].rpartition("####")
        for v in range(3 if i % 4 == 0 else 1):
            problem = (
                r["question"] if v == 0 else (r["question"].upper() if v == 1 else "  ".join(r["question"].split()))
            )
            turns = [
                {"role": "user", "content": problem, "reasoning": None},
                {
                    "role": "assistant",
                    "content": answer.strip(),
                    "reasoning": reasoning.strip() + " " * rng.randint(0, 3),
                },
            ]
            docs.append(
                Document(
                    text=render_text(turns),
                    id=f"gsm-{i}-{v}",
                    metadata={"kind": "chat", "domain": "math", "turns": turns},
                )
            )
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=12000, help="original documents (before planting)")
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument(
        "--io",
        choices=["jsonl.gz", "jsonl", "docio"],
        default="jsonl.gz",
        help="chain files: datatrove JsonlWriter .jsonl.gz (stagekit), plain .jsonl, or pipeline/docio.py's format",
    )
    args = parser.parse_args()
    io = args.io

    texts = real_texts(min_words=60) if REAL.exists() else []
    source = "real" if texts else "generated"
    texts = random.Random(0).sample(texts, min(args.docs, len(texts))) if texts else generated_texts(args.docs)
    per = max(1, len(texts) // 20)
    docs, copies = planted_corpus(texts, [0.05, 0.10], per_fraction=per, seed=0)
    rng = random.Random(1)
    for i in rng.sample(range(len(texts)), per):  # exact duplicates up to case and whitespace
        text = "  ".join(texts[i].upper().split())
        docs.append(Document(text=text, id=f"exact-{i:05d}", metadata={"domain": "web"}))
    size_mb = sum(len(d.text.encode()) for d in docs) / 1e6
    chat = chat_corpus(3000)
    chat_mb = sum(len(d.text.encode()) for d in chat) / 1e6

    def recall(kept: set[str], fraction: float) -> float:
        ids = [i for i, f in copies.items() if f == fraction]
        return sum(i not in kept for i in ids) / len(ids)

    def false_rate(kept: set[str]) -> float:
        return sum(f"orig-{i:05d}" not in kept for i in range(len(texts))) / len(texts)

    stage_rows, minhash_rows = [], []
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        tmp = Path(tmp)
        write_input(tmp / "input", docs, args.tasks, io)
        write_input(tmp / "chat", chat, args.tasks, io)
        bench_files = [
            {"name": name, "path": str(REAL / rel), "fields": fields}
            for name, rel, fields in [
                ("gsm8k", "math/gsm8k_train.jsonl", ["question", "answer"]),
                ("humaneval", "code/humaneval.jsonl", ["prompt", "canonical_solution"]),
                ("mbpp", "code/mbpp.jsonl", ["text", "code"]),
            ]
            if (REAL / rel).exists()
        ]
        if not bench_files:
            (tmp / "b.jsonl").write_text("".join(json.dumps({"q": t}) + "\n" for t in texts[:200]))
            bench_files.append({"name": "gen", "path": str(tmp / "b.jsonl"), "fields": ["q"]})
        cases = [
            ("passthrough (read+write)", "passthrough", {}, "input", len(docs), size_mb),
            ("exact_dedup", "exact_dedup", {}, "input", len(docs), size_mb),
            ("minhash", "minhash", {}, "input", len(docs), size_mb),
            ("problem_dedup (k=1)", "problem_dedup", {"k": 1}, "chat", len(chat), chat_mb),
            ("decontaminate", "decontaminate", {"benchmarks": bench_files}, "input", len(docs), size_mb),
        ]
        for label, stage, opts, folder, n_docs, mb in cases:
            seconds, kept = run_ours(stage, opts, tmp / folder, tmp / f"run-{stage}", args.tasks, io)
            stage_rows.append((label, n_docs, mb, seconds, n_docs - len(kept)))
            if stage == "minhash":
                minhash_rows.append(("ours, end to end (chain)", seconds, kept))
        for in_chain in (False, True):
            label = "datatrove, as a chain stage" if in_chain else "datatrove, standalone"
            seconds, kept = run_datatrove(tmp / "input", tmp / f"run-dt-{in_chain}", args.tasks, io, in_chain)
            minhash_rows.append((label, seconds, kept))
        for ours in (True, False):
            seconds, kept = in_memory(docs, args.tasks, tmp / f"mem-{ours}", ours)
            minhash_rows.append(("ours" if ours else "datatrove", seconds, kept))

    print(
        f"corpus: {len(docs)} {source} docs, {size_mb:.1f} MB ({len(copies)} near copies, {per} exact copies); "
        f"chat: {len(chat)} samples, {chat_mb:.1f} MB; tasks={args.tasks}, workers=1, chain files: {io}"
    )
    print(f"{'stage (end to end)':<28}{'docs':>8}{'MB':>7}{'cpu s':>8}{'docs/s':>9}{'MB/s':>7}{'removed':>9}")
    for label, n_docs, mb, s, removed in stage_rows:
        print(f"{label:<28}{n_docs:>8}{mb:>7.1f}{s:>8.2f}{n_docs / s:>9.0f}{mb / s:>7.2f}{removed:>9}")
    print("\nMinHash, same parameters (3-token shingles, 32 buckets x 4 hashes, 2 tasks):")
    print(f"{'pipeline':<34}{'cpu s':>8}{'MB/s':>7}{'ours x':>8}{'rec@5%':>8}{'rec@10%':>8}{'orig rm':>9}")
    for i, (label, s, kept) in enumerate(minhash_rows):
        base = minhash_rows[0][1] if i < 3 else minhash_rows[3][1]
        if i == 3:
            print("compute only (documents in memory, no JSON I/O):")
        print(
            f"{label:<34}{s:>8.2f}{size_mb / s:>7.2f}{s / base:>8.2f}{recall(kept, 0.05):>8.3f}"
            f"{recall(kept, 0.10):>8.3f}{false_rate(kept):>9.4f}"
        )


if __name__ == "__main__":
    main()
