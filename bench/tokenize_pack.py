"""Throughput of reasonpipe's tokenize + pack runs, as `reasonpipe run` executes them, against raw
`Tokenizer.encode_batch` and datatrove's `DocumentTokenizer` on the same documents, as ratios measured in one run.

    (a)  raw `Tokenizer.encode_batch` over the documents' texts (and `encode_batch_fast`, for reference), with the
         tokenizer.json loaded as is
    (b)  ours: the manifest's `tokenize` run (chat template segment encoding -> token cache) and `pack` run (cache
         reader -> mixture sampling -> AP trimming with per-sample trim records -> packing -> shards, samples/
         parquet, validation routing) through the local executor, then the output assembly (index.json, samples/,
         shards placed) that ends `reasonpipe run`. Same manifest every repetition; the repetition deletes the two
         runs' folders (completion markers, cache, pack output) so `reasonpipe run` redoes exactly those two runs
    (c)  datatrove `DocumentTokenizer` (local tokenizer.json, EOS appended, no shuffling) writing its .ds file

The corpus is written as jsonl inputs of a manifest (no stages, the benchmark's tokenizer given by path, 1 task,
1 worker); `reasonpipe run` ingests it once, off the clock, and (a) and (c) then read the very documents the
tokenize run reads (the ingest run's canonical output). Corpus: /work/shared/data/real (GSM8K and Marco-o1 as chat
samples with reasoning, 5% of GSM8K given long traces built from the R1 thinking samples so that trimming happens;
PEPs, HoTT, Stacks, code as plain documents), or a generated corpus when that folder is absent. Throughput = text
bytes (UTF-8 of `doc.text`) per second. Every path uses the tokenizers thread pool (RAYON default: all cores) in
this one process. Each repetition runs every path once in a random order; per path the minimum and the median over
repetitions are reported, wall time and process CPU time (all threads) separately.

    .venv/bin/python bench/tokenize_pack.py [--seq-len 4096] [--vocab 16384] [--repeat 5] [--batch 2048] [--limit 0]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from datatrove.data import Document  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from reasonpipe.docio import DocReader  # noqa: E402
from reasonpipe.pipeline import run as run_module  # noqa: E402
from reasonpipe.pipeline import tail  # noqa: E402
from reasonpipe.pipeline.compile import compile_plan  # noqa: E402
from reasonpipe.pipeline.manifest import load_manifest  # noqa: E402
from reasonpipe.sample import render_text  # noqa: E402
from reasonpipe.tokenizer.vocab import save_tokenizer, train_tokenizer  # noqa: E402

REAL = Path("/work/shared/data/real")


def _jsonl(name: str) -> list[dict]:
    with open(REAL / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _chat(doc_id: str, source: str, domain: str, question: str, reasoning: str, answer: str) -> Document:
    turns = [
        {"role": "user", "content": question, "reasoning": None},
        {"role": "assistant", "content": answer, "reasoning": reasoning},
    ]
    meta = {"source": source, "domain": domain, "kind": "chat", "turns": turns}
    return Document(text=render_text(turns), id=doc_id, metadata=meta)


def _plain(doc_id: str, source: str, domain: str, text: str) -> Document:
    return Document(text=text, id=doc_id, metadata={"source": source, "domain": domain, "kind": "text"})


def real_corpus() -> list[Document]:
    rng = random.Random(0)
    docs = []
    thinking = [r["message_thinking"] for n in ("a", "b") for r in _jsonl(f"reasoning/r1_samples_{n}.jsonl")]
    for i, r in enumerate(_jsonl("math/gsm8k_train.jsonl")):
        solution, answer = r["answer"].split("####")
        reasoning = solution.strip()
        if rng.random() < 0.05:  # long-tail traces (> 4K tokens)
            reasoning = "\n\n".join([reasoning, *rng.sample(thinking, 3)])
        docs.append(_chat(f"gsm8k:{i}", "gsm8k", "math", r["question"], reasoning, answer.strip()))
    for i, r in enumerate(_jsonl("reasoning/marco_o1_cot.jsonl")):
        resp = r["response"]
        thought = resp.split("<Thought>")[-1].split("</Thought>")[0].strip()
        output = resp.split("<Output>")[-1].split("</Output>")[0].strip()
        docs.append(_chat(f"marco:{i}", "marco_o1", "reasoning", r["instruction"], thought, output))
    for name, domain in [
        ("prose/python_peps_paragraphs_6k.jsonl", "web"),
        ("math_prose/hott_book_paragraphs.jsonl", "math"),
        ("math_prose/stacks_project_paragraphs_5k.jsonl", "math"),
    ]:
        docs += [_plain(f"{name}:{i}", name.split("/")[0], domain, r["text"]) for i, r in enumerate(_jsonl(name))]
    for i, r in enumerate(_jsonl("code/leetcode_train.jsonl")):
        docs.append(_plain(f"leetcode:{i}", "leetcode", "code", r["problem"] + "\n\n" + str(r["solutions"])))
    for i, r in enumerate(_jsonl("code/mbpp.jsonl")):
        docs.append(_plain(f"mbpp:{i}", "mbpp", "code", r["text"] + "\n" + r["code"]))
    rng.shuffle(docs)
    return docs


def generated_corpus(n: int = 20000) -> list[Document]:
    rng = random.Random(0)
    words = "the of a proof let x be we have def return if then so total is = + ( ) : and value list".split()
    docs = []
    for i in range(n):
        text = " ".join(rng.choices(words, k=rng.randint(30, 600)))
        if i % 2:
            reasoning = text * (12 if rng.random() < 0.05 else 1)
            docs.append(_chat(f"g:{i}", "gen", "reasoning", f"Question {i}?", reasoning, str(i)))
        else:
            docs.append(_plain(f"p:{i}", "gen", "web", text))
    return docs


# -- the corpus as a manifest's inputs ------------------------------------------------------------------------------


def write_inputs(docs: list[Document], folder: Path) -> list[dict]:
    """One jsonl input per (source, domain, kind): chat samples as `messages` (reasoning in think tags), plain
    documents as `text`."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for d in docs:
        m = d.metadata
        if m["kind"] == "chat":
            user, asst = m["turns"]
            answer = f"<think>{asst['reasoning']}</think>{asst['content']}"
            msgs = [{"role": "user", "content": user["content"]}, {"role": "assistant", "content": answer}]
            rec = {"messages": msgs}
        else:
            rec = {"text": d.text}
        groups[(m["source"], m["domain"], m["kind"])].append(rec)
    inputs = []
    for k, ((source, domain, kind), recs) in enumerate(sorted(groups.items())):
        path = folder / f"{k:02d}-{source.replace('/', '_')}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
        schema = "messages" if kind == "chat" else "text"
        inputs.append({"name": f"{k:02d}-{source}", "path": str(path), "schema": schema, "domain": domain})
    return inputs


def write_manifest(work: Path, inputs: list[dict], tok_path: Path, seq_len: int) -> Path:
    manifest = {
        "name": "bench-tokenize-pack",
        "inputs": inputs,
        "tokenizer": {"path": str(tok_path)},
        "trim": {"context": seq_len},
        "pack": {"seq_len": seq_len},
        "output": {"path": str(work / "out"), "rows_per_shard": 4096, "validation_fraction": 0.01},
        "executor": {"kind": "local", "tasks": 1, "workers": 1},
    }
    path = work / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


# -- the paths, each a whole pass over the corpus --------------------------------------------------------------------


def clock() -> np.ndarray:
    """(wall seconds, process CPU seconds of all threads)."""
    return np.array([time.perf_counter(), time.process_time()])


def raw(tok: Tokenizer, fast: bool, batches: list[list[Document]]) -> dict[str, np.ndarray]:
    """(a) / (a'): `Tokenizer.encode_batch` (or `_fast`) over the documents' texts."""
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    t = clock()
    for docs in batches:
        encode([d.text for d in docs], add_special_tokens=False)
    return {"encode": clock() - t}


@contextlib.contextmanager
def timed_runs(times: dict[str, np.ndarray]):
    """Time every datatrove run `reasonpipe run` executes (by name) and the output assembly that ends it."""
    make, finalize = run_module.make_executor, tail.finalize

    def make_timed(steps, tasks, logging_dir, cfg):
        executor = make(steps, tasks, logging_dir, cfg)
        name = next(r.name for r in plan_runs if r.logging_dir == logging_dir)
        inner = executor.run

        def timed():
            t = clock()
            try:
                return inner()
            finally:
                times[name] = clock() - t

        executor.run = timed
        return executor

    def finalize_timed(plan, table):
        t = clock()
        try:
            return finalize(plan, table)
        finally:
            times["finalize"] = clock() - t

    plan_runs: list = []
    run_module.make_executor, tail.finalize = make_timed, finalize_timed
    try:
        yield plan_runs
    finally:
        run_module.make_executor, tail.finalize = make, finalize


def reasonpipe_run(manifest: Path) -> dict[str, np.ndarray]:
    """`reasonpipe run manifest`, its console output discarded; the seconds of each run it executed."""
    loaded = load_manifest(manifest)
    times: dict[str, np.ndarray] = {}
    with timed_runs(times) as plan_runs, contextlib.redirect_stdout(io.StringIO()):
        plan_runs += compile_plan(loaded).runs
        run_module.run_manifest(loaded)
    return times


def ours(manifest: Path) -> dict[str, np.ndarray]:
    """(b): `reasonpipe run` redoing its tokenize and pack runs (their folders deleted first, off the clock)."""
    plan = compile_plan(load_manifest(manifest))
    for r in plan.runs:
        if r.name == "tokenize":
            shutil.rmtree(r.logging_dir, ignore_errors=True)
    shutil.rmtree(os.path.join(plan.prep_dir, "tokens"), ignore_errors=True)
    shutil.rmtree(plan.pack_dir, ignore_errors=True)
    times = reasonpipe_run(manifest)
    assert set(times) == {"tokenize", "pack", "finalize"}, times  # exactly those runs, as `reasonpipe run` does them
    return times


def datatrove(tok_path: Path, batch_size: int, batches: list[list[Document]], work: Path) -> dict[str, np.ndarray]:
    """(c): datatrove's DocumentTokenizer (what its run() does without shuffling: write_unshuffled)."""
    from datatrove.pipeline.tokens.tokenizer import DocumentTokenizer

    out = work / "datatrove"
    shutil.rmtree(out, ignore_errors=True)
    step = DocumentTokenizer(
        str(out),
        tokenizer_name_or_path=str(tok_path),
        eos_token="<|eos|>",
        shuffle_documents=False,
        batch_size=batch_size,
    )
    step.tokenizer  # noqa: B018  (loaded outside the clock)
    t = clock()
    step.write_unshuffled((d for docs in batches for d in docs), "00000.ds")
    return {"tokenize+write": clock() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2048, help="documents per encode batch for (a) and (c)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N documents (0: all)")
    args = ap.parse_args()

    docs = real_corpus() if REAL.exists() else generated_corpus()
    if args.limit:
        docs = docs[: args.limit]
    work = Path(tempfile.mkdtemp(prefix="bench-tokpack-"))
    try:
        t0 = time.perf_counter()
        rng = random.Random(0)
        tok = train_tokenizer(rng.sample([d.text for d in docs], min(len(docs), 5000)), args.vocab)
        tok_path = save_tokenizer(tok, work / "tokenizer.json")
        plain = Tokenizer.from_file(str(tok_path))  # (a) as a user loads it: no template, no literal-specials switch
        print(f"tokenizer: byte-level BPE, vocab {tok.get_vocab_size()}, trained in {time.perf_counter() - t0:.1f}s")
        (work / "inputs").mkdir()
        manifest = write_manifest(work, write_inputs(docs, work / "inputs"), tok_path, args.seq_len)
        first = reasonpipe_run(manifest)  # ingest (off the clock) + a first tokenize/pack: the warm-up
        plan = compile_plan(load_manifest(manifest))
        canonical = DocReader(os.path.join(plan.prep_dir, "canonical"))
        docs = list(canonical.run(None, 0, 1))  # what the tokenize run reads: (a) and (c) encode the same texts
        texts = [d.text for d in docs]
        mb = sum(len(t.encode()) for t in texts) / 1e6
        chat = sum(d.metadata.get("kind") == "chat" for d in docs)
        print(f"corpus: {'real' if REAL.exists() else 'generated'}, {len(docs)} docs ({chat} chat), {mb:.1f} MB text")
        print(f"ingest run (read + adapt + normalise, not timed below): {first['canonical'][0]:.2f}s wall")
        print(
            f"threads: tokenizers may use {os.cpu_count()} CPU cores (RAYON default) on every path; (a)/(c) batches "
            f"of {args.batch} documents; machine shared, take ratios"
        )
        # the corpus is held in memory here (a run streams it): keep the collector from re-scanning it
        gc.collect()
        gc.freeze()

        batches = [docs[i : i + args.batch] for i in range(0, len(docs), args.batch)]
        paths = {
            "a": lambda: raw(plain, False, batches),
            "a_fast": lambda: raw(plain, True, batches),
            "b": lambda: ours(manifest),
            "c": lambda: datatrove(tok_path, args.batch, batches, work),
        }
        raw(plain, False, [batches[0][:64]])  # first-use costs of (a) and (c), off the clocks
        datatrove(tok_path, args.batch, [batches[0][:64]], work)
        times = {k: np.zeros((args.repeat, 2)) for k in paths}
        runs_log: list[dict[str, np.ndarray]] = []
        order_rng = random.Random(1)
        for rep in range(args.repeat):
            for k in order_rng.sample(list(paths), len(paths)):  # a random order per repetition
                time.sleep(0.2)  # let the previous path's idle tokenizer threads stop spinning (off the clocks)
                st = paths[k]()
                times[k][rep] = sum(st.values(), np.zeros(2))
                if k == "b":
                    runs_log.append(st)
        report(args, mb, times, runs_log, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args, mb: float, times: dict[str, np.ndarray], runs_log: list[dict], work: Path) -> None:
    index = json.loads((work / "out" / "index.json").read_text())
    tr, pk = index["trim"], index["packing"]
    print(f"\nseq_len {args.seq_len}: {pk['windows']} windows (train + val), efficiency {pk['efficiency']:.4f}")
    print(f"trim: fit {tr['fit']}, trimmed {tr['trimmed']}, dropped {tr['dropped']}, plain {tr['plain']}")
    print(f"{args.repeat} repetitions; min (median) over them")
    print(f"\n{'path':48s} {'wall s':>13s} {'MB/s':>6s} {'x (a)':>11s} | {'cpu s':>13s} {'x (a)':>11s}")
    rows = [
        ("a", "(a)  Tokenizer.encode_batch"),
        ("a_fast", "(a') Tokenizer.encode_batch_fast"),
        ("b", "(b)  ours: reasonpipe run's tokenize + pack runs"),
        ("c", "(c)  datatrove DocumentTokenizer"),
    ]
    mins = {k: v.min(axis=0) for k, v in times.items()}
    meds = {k: np.median(v, axis=0) for k, v in times.items()}
    for key, label in rows:
        (w, c), (mw, mc) = mins[key], meds[key]
        (aw, ac), (amw, amc) = mins["a"], meds["a"]
        print(
            f"{label:48s} {w:6.2f} ({mw:5.2f}) {mb / w:6.2f} {aw / w:5.2f} ({amw / mw:.2f}) | "
            f"{c:6.2f} ({mc:5.2f}) {ac / c:5.2f} ({amc / mc:.2f})"
        )
    for name, i in (("wall", 0), ("cpu", 1)):
        a, b, c = (mins[k][i] for k in ("a", "b", "c"))
        ma, mb_, mc = (meds[k][i] for k in ("a", "b", "c"))
        print(f"{name:4s}: (b)/(a) = {a / b:.2f} ({ma / mb_:.2f}) (goal >= 0.8)   "
              f"(b)/(c) = {c / b:.2f} ({mc / mb_:.2f}) (goal >= 1)")  # fmt: skip
    fastest = runs_log[int(times["b"][:, 0].argmin())]
    total = sum(fastest.values())
    print(f"\nshares of (b), its fastest repetition (wall {total[0]:.2f}s, cpu {total[1]:.2f}s):")
    for run, (w, c) in fastest.items():
        print(f"  {run:9s} wall {w:6.2f}s {100 * w / total[0]:5.1f}%   cpu {c:6.2f}s {100 * c / total[1]:5.1f}%")
    pack = next(r for r in compile_plan(load_manifest(work / "manifest.yaml")).runs if r.name == "pack")
    print("  pack run steps (datatrove's time_stats, last repetition):")
    for step in json.loads(Path(pack.logging_dir, "stats.json").read_text()):
        if isinstance(step.get("time_stats"), dict):
            print(f"    {step['name']:36s} {step['time_stats']['total']:6.2f}s")


if __name__ == "__main__":
    main()
