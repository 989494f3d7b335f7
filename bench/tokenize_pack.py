"""Throughput of reasonpipe's tokenise + trim + pack + write path against raw `Tokenizer.encode_batch` and
datatrove's `DocumentTokenizer`, on the same documents, as ratios measured in one run.

    (a)  raw `Tokenizer.encode_batch` over the documents' texts (and `encode_batch_fast`, for reference), with the
         tokenizer.json loaded as is
    (b)  ours: chat template segment encoding (`encode_ahead`, as TokenizeToCache does) -> token cache write, then
         cache read -> AP trim -> pack -> Arrow shards (the pure functions + ShardWriter that TokenizeToCache /
         CacheReader / APTrim / PackWriter wrap; no executor)
    (c)  datatrove `DocumentTokenizer` (local tokenizer.json, EOS appended, no shuffling) writing its .ds file

Every path streams the whole corpus in batches of the same size (`--batch` documents), in one process, with the
same tokenizer thread pool (RAYON default: all cores). Corpus: /work/shared/data/real (GSM8K and Marco-o1 as chat
samples with reasoning, 5% of GSM8K given long traces built from the R1 thinking samples so that trimming happens;
PEPs, HoTT, Stacks, code as plain documents), or a generated corpus when that folder is absent. Throughput = input
text bytes (UTF-8 of `doc.text`) per second. Each repetition runs every path once, in a rotating order (so the load
of the shared machine hits every path alike); per path the fastest repetition counts, wall time and process CPU time
(all threads) separately: on a shared machine the CPU ratios are the steadier ones.

    .venv/bin/python bench/tokenize_pack.py [--seq-len 4096] [--vocab 16384] [--repeat 3] [--batch 2048] [--limit 0]
"""

from __future__ import annotations

import argparse
import gc
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
from datatrove.data import Document  # noqa: E402
from datatrove.utils.batching import batched  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from reasonpipe.sample import render_text  # noqa: E402
from reasonpipe.tokenizer.cache import CacheWriter, read_cache  # noqa: E402
from reasonpipe.tokenizer.packing import Packer  # noqa: E402
from reasonpipe.tokenizer.shards import ShardWriter  # noqa: E402
from reasonpipe.tokenizer.template import ChatTemplate, encode_ahead  # noqa: E402
from reasonpipe.tokenizer.vocab import load_tokenizer, resolve_template, save_tokenizer, train_tokenizer  # noqa: E402
from reasonpipe.tokenizer.writer import pack_item  # noqa: E402
from reasonpipe.trimming.core import trim  # noqa: E402

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


# -- the paths, each a whole run over the corpus -------------------------------------------------------------------


def clock() -> np.ndarray:
    """(wall seconds, process CPU seconds of all threads)."""
    return np.array([time.perf_counter(), time.process_time()])


def thread_clock() -> np.ndarray:
    """(wall seconds, CPU seconds of the calling thread)."""
    return np.array([time.perf_counter(), time.thread_time()])


def raw(tok: Tokenizer, fast: bool, batches: list[list[Document]], work: Path) -> dict[str, np.ndarray]:
    """(a) / (a'): `Tokenizer.encode_batch` (or `_fast`) over the documents' texts."""
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    t = clock()
    for docs in batches:
        encode([d.text for d in docs], add_special_tokens=False)
    return {"encode": clock() - t}


class Stages:
    """Wall and CPU time per stage of (b). Stages run on the main thread and are charged its CPU time; the encoding
    thread's CPU time (all of the process's CPU time not charged to a main-thread stage) goes to "encode"."""

    def __init__(self) -> None:
        self.times: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(2))
        self._start, self._last = clock(), thread_clock()

    def lap(self, stage: str) -> None:
        now = thread_clock()
        self.times[stage] += now - self._last
        self._last = now

    def result(self) -> dict[str, np.ndarray]:
        wall, cpu = clock() - self._start
        main = sum(self.times.values(), np.zeros(2))
        self.times["encode"] += np.array([wall - main[0], cpu - main[1]])
        return dict(self.times)


def ours(
    template: ChatTemplate, seq_len: int, batches: list[list[Document]], work: Path, counts: dict[str, float]
) -> dict[str, np.ndarray]:
    """(b): what TokenizeToCache, then CacheReader -> APTrim -> PackWriter do, as plain function calls."""
    out = work / "ours"
    shutil.rmtree(out, ignore_errors=True)
    st = Stages()
    cache_path = out / "cache" / "00000.arrow"
    with CacheWriter(cache_path) as cache:  # run 1 writes the cache ...
        for docs, encoded in encode_ahead(template, batches):
            st.lap("encode")  # waiting for the encoding thread
            cache.write(
                [(d.id, d.metadata["source"], d.metadata["domain"], d.metadata["kind"]) for d in docs], encoded
            )
            st.lap("cache write")
    st.lap("cache write")
    packer = Packer(seq_len, template.tokens.pad, buffer_windows=64)
    writer = ShardWriter(out / "shards" / "00000-{k:05d}.arrow", seq_len, rows_per_shard=4096)
    counts.clear()
    for samples in batched(read_cache(cache_path), len(batches[0])):  # ... run 2 reads it back
        st.lap("cache read")
        kept = []
        for sample in samples:
            segs = sample.segments
            if sample.kind == "chat":
                segs, record = trim(segs, seq_len)
                counts[record.status] = counts.get(record.status, 0) + 1
            if segs is not None:
                kept.append((sample, segs))
        st.lap("trim")
        windows = []
        for sample, segs in kept:
            windows += packer.add(pack_item(sample.id, segs, sample.kind == "chat", "all", template.tokens))
        st.lap("pack")
        for w in windows:
            writer.write(w)
        st.lap("shard write")
    windows = packer.flush()
    st.lap("pack")
    for w in windows:
        writer.write(w)
    writer.close()
    st.lap("shard write")
    counts.update(windows=packer.windows, real=packer.real_tokens, efficiency=packer.efficiency)
    return st.result()


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
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2048, help="documents per encode batch (every path)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N documents (0: all)")
    args = ap.parse_args()

    docs = real_corpus() if REAL.exists() else generated_corpus()
    if args.limit:
        docs = docs[: args.limit]
    texts = [d.text for d in docs]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    chat = sum(d.metadata["kind"] == "chat" for d in docs)
    print(f"corpus: {'real' if REAL.exists() else 'generated'}, {len(docs)} docs ({chat} chat), {mb:.1f} MB text")

    work = Path(tempfile.mkdtemp(prefix="bench-tokpack-"))
    try:
        t0 = time.perf_counter()
        rng = random.Random(0)
        tok = train_tokenizer(rng.sample(texts, min(len(texts), 5000)), args.vocab)
        tok_path = save_tokenizer(tok, work / "tokenizer.json")
        tok = load_tokenizer(tok_path)
        template = ChatTemplate(tok, resolve_template(tok))
        plain = Tokenizer.from_file(str(tok_path))  # (a) as a user loads it: no template, no literal-specials switch
        print(f"tokenizer: byte-level BPE, vocab {tok.get_vocab_size()}, trained in {time.perf_counter() - t0:.1f}s")
        print(
            f"threads: tokenizers may use {os.cpu_count()} CPU cores (RAYON default) on every path; "
            f"batches of {args.batch} documents; machine shared, take ratios"
        )
        # the corpus is held in memory here (a run streams it): keep the collector from re-scanning it
        gc.collect()
        gc.freeze()

        batches = [docs[i : i + args.batch] for i in range(0, len(docs), args.batch)]
        counts: dict[str, float] = {}  # (b)'s trim and packing counts
        paths = {
            "a": lambda: raw(plain, False, batches, work),
            "a_fast": lambda: raw(plain, True, batches, work),
            "b": lambda: ours(template, args.seq_len, batches, work, counts),
            "c": lambda: datatrove(tok_path, args.batch, batches, work),
        }
        names = list(paths)
        # warm-up, off the clocks: first-use costs (lazy imports in pyarrow/datatrove, thread pools) are not paid by
        # whichever path happens to run first
        warm = [batches[0][:64]]
        raw(plain, False, warm, work)
        ours(template, args.seq_len, warm, work, {})
        datatrove(tok_path, args.batch, warm, work)
        times = {k: np.full((args.repeat, 2), np.inf) for k in names}
        stage_log: list[dict[str, np.ndarray]] = []
        for rep in range(args.repeat):
            for k in names[rep % 4 :] + names[: rep % 4]:  # rotating order
                time.sleep(0.2)  # let the previous path's idle tokenizer threads stop spinning (off the clocks)
                st = paths[k]()
                times[k][rep] = sum(st.values(), np.zeros(2))
                if k == "b":
                    stage_log.append(st)
        best = {k: v.min(axis=0) for k, v in times.items()}

        print(f"\nseq_len {args.seq_len}: {counts['windows']} windows, {counts['real']} real tokens, "
              f"packing efficiency {counts['efficiency']:.4f}")  # fmt: skip
        print(
            f"trim: fit {counts.get('fit', 0)}, trimmed {counts.get('trimmed', 0)}, dropped {counts.get('dropped', 0)}"
        )
        print(
            f"\n{'path':44s} {'wall s':>7s} {'MB/s':>6s} {'x (a)':>6s} | {'cpu s':>6s} {'MB/cpu-s':>8s} {'x (a)':>6s}"
        )
        rows = [
            ("a", "(a)  Tokenizer.encode_batch"),
            ("a_fast", "(a') Tokenizer.encode_batch_fast"),
            ("b", "(b)  ours: encode+cache+trim+pack+shards"),
            ("c", "(c)  datatrove DocumentTokenizer"),
        ]
        for key, label in rows:
            (w, c), (aw, ac) = best[key], best["a"]
            print(f"{label:44s} {w:7.2f} {mb / w:6.2f} {aw / w:6.2f} | {c:6.2f} {mb / c:8.2f} {ac / c:6.2f}")
        for name, i in (("wall", 0), ("cpu", 1)):
            a, a_fast, b, c = (best[k][i] for k in ("a", "a_fast", "b", "c"))
            print(f"{name:4s}: (b)/(a) = {a / b:.2f} (goal >= 0.8)   (b)/(c) = {c / b:.2f} (goal >= 1)   "
                  f"(b)/(a') = {a_fast / b:.2f}")  # fmt: skip
        fastest = stage_log[int(times["b"][:, 0].argmin())]
        total = sum(fastest.values())
        print(
            f"\nstage shares of (b) (its fastest repetition; wall {total[0]:.2f}s, cpu {total[1]:.2f}s; encode wall ="
        )
        print("  time spent waiting for the encoding thread, encode cpu = that thread's work):")
        for stage, (w, c) in sorted(fastest.items(), key=lambda kv: -kv[1][1]):
            print(
                f"  {stage:12s} wall {w:6.2f}s {100 * w / total[0]:5.1f}%   cpu {c:6.2f}s {100 * c / total[1]:5.1f}%"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
