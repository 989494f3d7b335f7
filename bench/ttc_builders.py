"""Cost of the test-time-compute builders next to AP trimming + pack items, in one interleaved run (in-process steps).

    python bench/ttc_builders.py [--gsm 1000] [--repeat 3]

Samples: the first N GSM8K train problems from ../shared/data/real, each with its real solution and three traces
generated from it (bench/ttc_real.py), plus the R1 and Marco-o1 traces; tokenised once with a BPE trained on them.
Per repetition, in rotating order, each path consumes every tokenised sample:
  (a) trim + pack items: APTrim at 256 tokens, then `pack_item` (what the pack run does per sample before packing);
  (b) markovian_chunks: chains at context 256 (carry 96, head 16) for the traces longer than that;
  (c) rsa_aggregate: route the traces to 2 partitions (sample files on disk), then build k=2 aggregation samples with
      tails of 64 tokens in each partition (reads the files back, renders the prompts).
Prints the minimum and median seconds per path and their throughput in input tokens/s relative to (a).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from datatrove.data import Document  # noqa: E402
from ttc_real import REAL, gsm_traces  # noqa: E402

from reasonpipe.filters.answer_verify import AnswerVerifier  # noqa: E402
from reasonpipe.pipeline.adapters import adapt, detect_schema  # noqa: E402
from reasonpipe.pipeline.steps import Normalize  # noqa: E402
from reasonpipe.tokenizer.template import ChatTemplate  # noqa: E402
from reasonpipe.tokenizer.vocab import resolve_template, train_tokenizer  # noqa: E402
from reasonpipe.tokenizer.writer import pack_item  # noqa: E402
from reasonpipe.trimming.step import APTrim  # noqa: E402
from reasonpipe.trimming.tails import PromptTemplate  # noqa: E402
from reasonpipe.trimming.ttc_steps import MarkovianChunks, RouteTraces, RSAAggregate  # noqa: E402


def samples(n: int) -> tuple[list[Document], ChatTemplate]:
    import json

    records = [(t, "problem_solution", {}) for t in gsm_traces(n)]
    for f in sorted((REAL / "reasoning").glob("*.jsonl")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        records += [(r, detect_schema(rows[:20], {}), {}) for r in rows]
    docs = []
    for i, (r, schema, fields) in enumerate(records):
        text, meta = adapt(r, schema, fields)
        doc = Document(text=text, id=f"d{i:06d}", metadata={"source": "s", "domain": "math", **meta})
        Normalize().filter(doc)
        AnswerVerifier(reference=None).filter(doc)
        docs.append(doc)
    tok = train_tokenizer([d.text for d in docs[:3000]], 4096)
    template = ChatTemplate(tok, resolve_template(tok))
    for doc, segs in zip(docs, template.encode_many(docs)):
        keep = {k: doc.metadata.get(k) for k in ("source", "domain", "kind", "problem_key", "correct")}
        doc.metadata, doc.text = keep | {"segments": segs}, ""
    return docs, template


def fresh(docs: list[Document]) -> list[Document]:
    return [Document(text="", id=d.id, metadata=dict(d.metadata)) for d in docs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gsm", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not REAL.exists():
        print(f"skipped: {REAL} is absent")
        return
    docs, template = samples(args.gsm)
    import pyarrow as pa

    pa.array(["warm-up"])  # pyarrow imports pandas on its first conversion of Python objects: off the clock
    tokens = sum(len(s.ids) for d in docs for s in d.metadata["segments"])
    special = template.tokens
    encoded = PromptTemplate().encode(lambda t: template.encode_texts([t])[0], 2)

    def trim_pack(work: Path) -> str:
        out = 0
        for doc in APTrim(256).run(iter(fresh(docs))):
            out += len(pack_item(doc.id, doc.metadata["segments"], True, "all", special).ids)
        return f"{out:,} tokens in pack items"

    def markovian(work: Path) -> str:
        return f"{sum(1 for _ in MarkovianChunks(256, 96, 16).run(iter(fresh(docs)))):,} chunk samples"

    def rsa(work: Path) -> str:
        for rank in range(2):
            list(RouteTraces(work / "route", 2).run(iter(fresh(docs[rank::2])), rank, 2))
        step = RSAAggregate(work / "route", encoded, special.user, 64, per_problem=2)
        return f"{sum(1 for rank in range(2) for _ in step.run(None, rank, 2)):,} aggregation samples"

    paths = {"(a) trim + pack items": trim_pack, "(b) markovian_chunks": markovian, "(c) rsa_aggregate": rsa}
    times: dict[str, list[float]] = {name: [] for name in paths}
    made: dict[str, str] = {}
    names = list(paths)
    for rep in range(args.repeat):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # rotating order
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                made[name] = paths[name](Path(tmp))
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times[names[0]])
    print(f"`python bench/ttc_builders.py --gsm {args.gsm} --repeat {args.repeat}`: {len(docs):,} samples, "
          f"{tokens:,} tokens\n")  # fmt: skip
    print("| path | min s | median s | input Mtok/s (median) | x (a) | output |\n|---|---|---|---|---|---|")
    for name in names:
        med = statistics.median(times[name])
        print(f"| {name} | {min(times[name]):.2f} | {med:.2f} | {tokens / med / 1e6:.2f} | {base / med:.2f} | "
              f"{made[name]} |")  # fmt: skip


if __name__ == "__main__":
    main()
