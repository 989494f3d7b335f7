"""The dedup and decontamination stages: throughput against datatrove's MinHash, number-aware quality on real math,
and peak memory per step at 1x vs 4x the corpus.

1. Throughput (`--repeat` rounds, interleaved: every round runs every case once, in the same order). Corpus: the real
   paragraphs/problems of ../shared/data/real (>= 60 words) with planted near-duplicates (5% and 10% of words replaced
   by common words) and exact duplicates (case/whitespace variants); generated text when the real data is absent.
   Every stage runs end to end through a local datatrove chain (tests/stagekit.py: read, materialize, its extra runs,
   filter, write) in this process (workers=1), timed in CPU seconds (the machine is shared: wall time is noisy), once
   with the pipeline's own intermediate documents (docio.py: orjson, zstd level 1) and once with datatrove's
   JsonlWriter `.jsonl.gz`. The datatrove baseline runs its four MinHash steps with the same shingle size, buckets,
   hashes per bucket and streaming task count (whitespace word splitting: its default English splitter needs spaCy,
   and whitespace splitting is faster, so this favours datatrove); its bucket run has one task per band (32), ours
   `tasks` bucket tasks (each reads its hash range of all bands). Work that differs: ours verifies every candidate
   pair by true Jaccard (datatrove removes on a band collision) and keeps gram sets for that.
2. Number-aware near-dedup (issue 12 point 5): GSM8K question+answer and LaTeX paragraphs, template variants (one
   number or LaTeX command changed: distinct problems) and 5%-word copies, all domain math; share of distinct
   documents removed and recall on the copies, with `number_aware` off (before) and on (the default).
3. Memory: each datatrove run of exact_dedup, minhash and problem_dedup in its own process (workers=1: its tasks run
   one after another), peak RSS of the process tree sampled every 10 ms (and the kernel's exact maximum), at 1x and
   4x the corpus with 4x the tasks (memory per task is what must stay flat): the corpus is replicated with every
   letter shifted (replica j by j places), so documents and duplicates grow 4x and no replica overlaps another.

    .venv/bin/python bench/dedup.py [--docs N] [--tasks T] [--repeat R] [--scale K] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from datatrove.data import Document  # noqa: E402
from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402
from dedupdata import REAL, generated_texts, math_eval_corpus, planted_corpus, real_texts  # noqa: E402
from stagekit import LocalChain, read_docs  # noqa: E402

import reasonpipe.filters.decontaminate  # noqa: E402,F401  (registers the stage)
import reasonpipe.filters.exact_dedup  # noqa: E402,F401
from reasonpipe.filters.minhash import MinhashOptions, WordShingleSigner  # noqa: E402
from reasonpipe.filters.minhash_steps import ClusterRemovals, LshBuckets, VerifyPairs  # noqa: E402
from reasonpipe.filters.problem_dedup import problem_hash  # noqa: E402
from reasonpipe.filters.removals import RemovalFilter  # noqa: E402
from reasonpipe.filters.stage import REGISTRY, BuildContext  # noqa: E402
from reasonpipe.sample import render_text  # noqa: E402

IOS = ("docio", "jsonl.gz")


class DocioChain(LocalChain):
    """The chain with the pipeline's own intermediate documents (docio.py)."""

    def reader(self, folder: str):
        from reasonpipe.docio import DocReader

        return DocReader(folder)

    def writer(self, folder: str):
        from reasonpipe.docio import DocWriter

        return DocWriter(folder)


class IsolatedChain(DocioChain):
    """Runs every datatrove run in a fresh process and records its peak RSS (MiB) in `self.peaks`."""

    def execute(self, output_folder: str) -> dict[str, float]:
        if self._current is not None:
            self._close(self.writer(output_folder))
        self.peaks: dict[str, float] = {}
        for name, steps, tasks, _ in self.runs:
            job = self.root / f"{name}.pkl"
            job.write_bytes(pickle.dumps((steps, tasks, str(self.root / "logs" / name))))
            cmd = [sys.executable, __file__, "--run-pickled", str(job)]
            self.peaks[name] = peak_rss_mib(cmd, job.with_suffix(".hwm"))
        return {}


def peak_rss_mib(cmd: list[str], hwm_file: Path) -> float:
    """Run `cmd`; the larger of its process tree's RSS sampled every 10 ms and the high-water mark the process
    reports itself (VmHWM; `ru_maxrss` would include the parent's RSS, inherited across fork + exec), in MiB."""
    import psutil

    proc = subprocess.Popen(cmd + [str(hwm_file)])
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [root] + root.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.01)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed with exit code {proc.returncode}")
    return max(peak, int(hwm_file.read_text()) * 1024) / 2**20


def run_pickled(job: str, hwm_file: str) -> None:
    steps, tasks, logging_dir = pickle.loads(Path(job).read_bytes())
    LocalPipelineExecutor(steps, tasks=tasks, workers=1, logging_dir=logging_dir).run()
    status = Path("/proc/self/status").read_text()
    Path(hwm_file).write_text(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def make_chain(root: Path, tasks: int, input_folder: Path, io: str, chain_cls=None) -> LocalChain:
    if io == "docio":
        return (chain_cls or DocioChain)(root, tasks, str(input_folder))
    return LocalChain(root, tasks, str(input_folder), compressed=io == "jsonl.gz")


def write_input(folder: Path, docs: list[Document], tasks: int, io: str) -> None:
    parts = [docs[r * len(docs) // tasks : (r + 1) * len(docs) // tasks] for r in range(tasks)]
    if io == "docio":
        for rank, part in enumerate(parts):
            drain(DocioChain(folder, tasks, str(folder)).writer(str(folder)).run(iter(part), rank, tasks))
        return
    with JsonlWriter(str(folder), output_filename="${rank}.jsonl.gz", compression="gzip") as writer:
        for rank, part in enumerate(parts):
            for doc in part:
                writer.write(doc, rank=rank)


def drain(result) -> None:
    """Run a step's `run` to completion (some are generators, some plain functions)."""
    if result is not None:
        deque(result, maxlen=0)


def build_stage(chain, stage_name: str, options: dict, root: Path, tasks: int) -> None:
    if stage_name != "passthrough":
        stage = REGISTRY[stage_name]()
        ctx = BuildContext(f"00-{stage_name}", str(root / "work"), str(root / "exclusions"), tasks, 0, None)
        stage.build(stage.Options.model_validate(options), ctx, chain)


def run_ours(stage_name: str, options: dict, input_folder: Path, root: Path, tasks: int, io: str):
    """CPU seconds of a registered stage end to end through the chain, and the ids it kept."""
    chain = make_chain(root, tasks, input_folder, io)
    build_stage(chain, stage_name, options, root, tasks)
    start = time.process_time()
    chain.execute(str(root / "output"))
    seconds = time.process_time() - start
    return seconds, {d.id for d in read_docs(root / "output", tasks)}


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
    return seconds, {d.id for d in read_docs(root / "output", tasks)}


def in_memory(docs: list[Document], tasks: int, root: Path, ours: bool, bands: int = 32):
    """MinHash compute only: the same steps called on in-memory documents (no JSON I/O)."""
    parts = [docs[r * len(docs) // tasks : (r + 1) * len(docs) // tasks] for r in range(tasks)]
    start = time.process_time()
    if ours:
        opts, work = MinhashOptions(), str(root / "work")
        sig = WordShingleSigner(work, opts, 0, None, tasks)
        runs = [
            (LshBuckets(work, tasks, tasks), tasks),
            (VerifyPairs(work, tasks, opts.jaccard_threshold), tasks),
            (ClusterRemovals(work, tasks, tasks, opts.jaccard_threshold), tasks),
        ]
        filt = RemovalFilter(work, "duplicate_near", tasks)
    else:
        sig, buckets, cluster, filt = datatrove_steps(root, 3, bands, 4)
        runs = [(buckets, bands), (cluster, 1)]
    for r, part in enumerate(parts):
        drain(sig.run(iter(part), r, tasks))
    for step, n in runs:
        for t in range(n):
            drain(step.run(None, t, n))
    kept = {d.id for r, part in enumerate(parts) for d in filt.run(iter(part), r, tasks)}
    return time.process_time() - start, kept


def chat_corpus(records: list[dict], copies: int = 3) -> list[Document]:
    """GSM8K problems as chat samples (answer as reasoning + final answer); every 4th with `copies - 1` variants."""
    docs = []
    for i, r in enumerate(records):
        reasoning, _, answer = r["answer"].rpartition("####")
        for v in range(copies if i % 4 == 0 else 1):
            q = r["question"]
            problem = q if v == 0 else (q.upper() if v % 2 else "  ".join(q.split()))
            turns = [
                {"role": "user", "content": problem, "reasoning": None},
                {"role": "assistant", "content": answer.strip(), "reasoning": reasoning.strip() + " " * v},
            ]
            meta = {"kind": "chat", "domain": "math", "turns": turns, "problem_key": problem_hash(problem)}
            docs.append(Document(text=render_text(turns), id=f"gsm-{i}-{v}", metadata=meta))
    return docs


def gsm_records(limit: int | None = None) -> list[dict]:
    path = REAL / "math/gsm8k_train.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.read_text().splitlines()][:limit]
    return [{"question": t[:300], "answer": t[300:] + "\n#### 1"} for t in generated_texts(limit or 3000, seed=9)]


def text_corpus(texts: list[str]) -> tuple[list[Document], dict[str, float]]:
    """The texts, planted near copies (1/20 at 5%, 1/20 at 10%) and exact copies (1/20, case and whitespace)."""
    per = max(1, len(texts) // 20)
    docs, copies = planted_corpus(texts, [0.05, 0.10], per_fraction=per, seed=0)
    for i in random.Random(1).sample(range(len(texts)), per):
        text = "  ".join(texts[i].upper().split())
        docs.append(Document(text=text, id=f"exact-{i:05d}", metadata={"domain": "web"}))
    return docs, copies


def stat(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f}"


def throughput(args, texts: list[str], tmp: Path) -> None:
    docs, copies = text_corpus(texts)
    size_mb = sum(len(d.text.encode()) for d in docs) / 1e6
    chat = chat_corpus(gsm_records(3000))
    chat_mb = sum(len(d.text.encode()) for d in chat) / 1e6
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
    stages = [
        ("passthrough (read+write)", "passthrough", {}, "input", len(docs), size_mb),
        ("exact_dedup", "exact_dedup", {}, "input", len(docs), size_mb),
        ("minhash", "minhash", {}, "input", len(docs), size_mb),
        ("problem_dedup (k=1)", "problem_dedup", {"k": 1}, "chat", len(chat), chat_mb),
        ("decontaminate", "decontaminate", {"benchmarks": bench_files}, "input", len(docs), size_mb),
    ]
    for io in IOS:
        write_input(tmp / f"input-{io}", docs, args.tasks, io)
        write_input(tmp / f"chat-{io}", chat, args.tasks, io)
    seconds: dict[tuple, list[float]] = {}
    kept_of: dict[tuple, set[str]] = {}
    removed: dict[tuple, int] = {}
    n = 0
    for _ in range(args.repeat):  # interleaved: each round runs every case once
        for io in IOS:
            for label, stage, opts, corpus, n_docs, _ in stages:
                n += 1
                s, kept = run_ours(stage, opts, tmp / f"{corpus}-{io}", tmp / f"run{n}", args.tasks, io)
                seconds.setdefault((io, label), []).append(s)
                removed[(io, label)] = n_docs - len(kept)
                if stage == "minhash":
                    seconds.setdefault((io, "ours, end to end"), []).append(s)
                    kept_of[(io, "ours, end to end")] = kept
            for in_chain in (False, True):
                n += 1
                label = "datatrove, as a chain stage" if in_chain else "datatrove, standalone"
                s, kept = run_datatrove(tmp / f"input-{io}", tmp / f"run{n}", args.tasks, io, in_chain)
                seconds.setdefault((io, label), []).append(s)
                kept_of[(io, label)] = kept
        for ours in (True, False):
            n += 1
            s, kept = in_memory(docs, args.tasks, tmp / f"run{n}", ours)
            label = "compute only: " + ("ours" if ours else "datatrove")
            seconds.setdefault(("mem", label), []).append(s)
            kept_of[("mem", label)] = kept

    def recall(kept: set[str], fraction: float) -> float:
        ids = [i for i, f in copies.items() if f == fraction]
        return sum(i not in kept for i in ids) / len(ids)

    def false_rate(kept: set[str]) -> float:
        return sum(f"orig-{i:05d}" not in kept for i in range(len(texts))) / len(texts)

    print(
        f"corpus: {len(docs)} {'real' if REAL.exists() else 'generated'} docs, {size_mb:.1f} MB ({len(copies)} near "
        f"copies, {len(texts) // 20} exact copies); chat: {len(chat)} samples, {chat_mb:.1f} MB; tasks={args.tasks}, "
        f"workers=1, {args.repeat} interleaved rounds; cpu s as min / median"
    )
    for io in IOS:
        print(f"\nchain files: {io}")
        print(f"{'stage (end to end)':<28}{'docs':>8}{'cpu s':>16}{'docs/s':>9}{'MB/s':>7}{'removed':>9}")
        for label, _, _, _, n_docs, mb in stages:
            s, gone = seconds[(io, label)], removed[(io, label)]
            print(f"{label:<28}{n_docs:>8}{stat(s):>16}{n_docs / min(s):>9.0f}{mb / min(s):>7.2f}{gone:>9}")
        print(f"MinHash, 3-token shingles, 32 buckets x 4 hashes; datatrove: 32 bucket tasks, ours: {args.tasks}")
        print(f"{'pipeline':<30}{'cpu s':>16}{'dt/ours':>16}{'rec@5%':>8}{'rec@10%':>8}{'orig rm':>9}")
        ours = seconds[(io, "ours, end to end")]
        for label in ("ours, end to end", "datatrove, standalone", "datatrove, as a chain stage"):
            s, kept = seconds[(io, label)], kept_of[(io, label)]
            ratio = [d / o for d, o in zip(s, ours)]
            print(
                f"{label:<30}{stat(s):>16}{stat(ratio):>16}{recall(kept, 0.05):>8.3f}{recall(kept, 0.10):>8.3f}"
                f"{false_rate(kept):>9.4f}"
            )
    o, d = seconds[("mem", "compute only: ours")], seconds[("mem", "compute only: datatrove")]
    print(f"\ncompute only (in memory, no JSON): ours {stat(o)} s, datatrove {stat(d)} s, "
          f"datatrove/ours {stat([b / a for a, b in zip(o, d)])}")  # fmt: skip


def number_aware(tmp: Path) -> None:
    if not REAL.exists():
        print("\nnumber-aware: skipped (needs ../shared/data/real)")
        return
    docs, roles = math_eval_corpus(n_gsm=2000, n_latex=1000, n_variants=300, n_copies=300, seed=0)
    counts = {r: sum(v == r for v in roles.values()) for r in ("original", "variant", "copy")}
    print(
        f"\nnumber-aware near-dedup: {counts['original']} distinct math documents (2000 GSM8K q+a, 1000 LaTeX), "
        f"{counts['variant']} template variants (distinct too), {counts['copy']} copies with 5% of words replaced"
    )
    print(f"{'number_aware':<14}{'distinct removed':>18}{'variants removed':>18}{'copy recall':>13}")
    for label, opts in (("off (before)", {"number_aware": False}), ("on (default)", {})):
        from stagekit import run_stage

        kept, _ = run_stage("minhash", opts, docs, tasks=2, tmp_path=tmp / f"na-{label[:3]}")
        kept_ids = {d.id for d in kept}
        gone = {r: sum(i not in kept_ids for i, v in roles.items() if v == r) for r in counts}
        distinct = (gone["original"] + gone["variant"]) / (counts["original"] + counts["variant"])
        print(
            f"{label:<14}{distinct:>17.2%} {gone['variant'] / counts['variant']:>17.2%}"
            f"{gone['copy'] / counts['copy']:>13.3f}"
        )


def shifted(text: str, j: int) -> str:
    """`text` with every ASCII letter moved j places in the alphabet: a new document of the same length and shape
    that shares no shingles with the original (replica j of a scaled corpus)."""
    lower, upper = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    shift = str.maketrans(lower + upper, lower[j:] + lower[:j] + upper[j:] + upper[:j])
    return text.translate(shift)


def scaled(texts: list[str], k: int) -> list[str]:
    """k replicas of the texts (replica j shifted by j letters): k times the documents, the same duplicate rate."""
    return [shifted(t, j) for j in range(k) for t in texts]


def scaled_records(records: list[dict], k: int) -> list[dict]:
    """k replicas of GSM8K records (replica j shifted by j letters)."""
    return [{k_: shifted(v, j) for k_, v in r.items()} for j in range(k) for r in records]


def memory(args, texts: list[str], tmp: Path) -> None:
    k = args.scale
    job = tmp / "baseline.pkl"
    job.write_bytes(pickle.dumps(([], 1, str(tmp / "logs-baseline"))))
    base = peak_rss_mib([sys.executable, __file__, "--run-pickled", str(job)], job.with_suffix(".hwm"))
    print(f"\npeak RSS per run (MiB; each run its own process, its tasks one after another), 1x vs {k}x the corpus")
    print(f"(an empty run, i.e. Python + numpy + datatrove + reasonpipe imported: {base:.0f} MiB)")
    print(f"{'stage':<15}{'run':<26}{'1x':>8}{f'{k}x':>8}{'ratio':>7}")
    gsm = gsm_records()
    for stage, opts in (("exact_dedup", {}), ("minhash", {}), ("problem_dedup", {"k": 1})):
        peaks = []
        for scale in (1, k):
            tasks = args.tasks * scale
            if stage == "problem_dedup":
                docs = chat_corpus(scaled_records(gsm, scale))
            else:
                docs = text_corpus(scaled(texts, scale))[0]
            root = tmp / f"mem-{stage}-{scale}"
            write_input(root / "input", docs, tasks, "docio")
            chain = make_chain(root, tasks, root / "input", "docio", IsolatedChain)
            build_stage(chain, stage, opts, root, tasks)
            chain.execute(str(root / "output"))
            peaks.append((len(docs), tasks, chain.peaks))
        for (name, small), big in zip(peaks[0][2].items(), peaks[1][2].values()):
            print(f"{stage:<15}{name:<26}{small:>8.0f}{big:>8.0f}{big / small:>7.2f}")
        print(f"{'':<15}(docs, tasks): 1x {peaks[0][:2]}, {k}x {peaks[1][:2]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=12000, help="original documents (before planting)")
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds of the throughput cases")
    parser.add_argument("--scale", type=int, default=4, help="the larger corpus of the memory check (x the first)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--run-pickled", nargs=2, help=argparse.SUPPRESS)  # internal: one run of the memory check
    args = parser.parse_args()
    if args.run_pickled:
        return run_pickled(*args.run_pickled)
    texts = real_texts(min_words=60) if REAL.exists() else []
    texts = random.Random(0).sample(texts, min(args.docs, len(texts))) if texts else generated_texts(args.docs)
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        throughput(args, texts, Path(tmp))
        number_aware(Path(tmp))
        if not args.skip_memory:
            memory(args, texts, Path(tmp))


if __name__ == "__main__":
    main()
