"""Encoder backends on the same real corpus and the same threads: Hugging Face `tokenizers` vs `gigatoken`.

    python bench/encoder_backends.py [--rounds 3] [--mb 4] [--vocab 32000] [--threads 1]

Corpus: every text of ../shared/data/real (reasoning traces, GSM8K, code, LaTeX and PEP prose); a byte-level BPE is
trained on a hash-chosen sample of it with reasonpipe's own trainer. Both sides run on `--threads` threads
(`RAYON_NUM_THREADS` for tokenizers' pool; gigatoken encodes on the calling thread, as in a pipeline task).
`--mb` keeps a hash-chosen part of the corpus of about that size (0: all). Each round builds fresh encoders, so
gigatoken's pre-token cache starts cold as in a pipeline task. Printed, per round and as min/median over rounds (A/B
interleaved in one process, so load changes hit both):

  raw     the encoder alone on all texts: TokenizersEncoder.encode_flat vs GigatokenEncoder.encode_flat
  template  ChatTemplate.encode_batch over the corpus as samples (chat samples render to several pieces), batches
          of 2048 as TokenizeToCache does; the gigatoken side also pays its parity check (~1/64 of the texts
          encoded again with tokenizers)

and the parity: texts whose ids differ between the two backends (all texts compared, not a sample).
Skips (exit 0) when the real data is absent. Needs `pip install 'reasonpipe[gigatoken]'`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import xxhash

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
REAL = REAL if REAL.exists() else Path("/work/shared/data/real")


def load_texts() -> tuple[list[str], list[dict]]:
    """Every text field of the real corpora, and the same records as samples (chat where there is a reasoning)."""
    texts, samples = [], []
    for path in sorted(REAL.rglob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                fields = [v for v in record.values() if isinstance(v, str) and v.strip()]
                texts += fields
                if len(fields) >= 2:  # first field as the problem, the longest as the reasoning, the last as answer
                    reasoning = max(fields[1:], key=len)
                    turns = [{"role": "user", "content": fields[0]}]
                    turns.append({"role": "assistant", "content": fields[-1][:200], "reasoning": reasoning})
                    samples.append({"kind": "chat", "turns": turns})
                else:
                    samples += fields
    return texts, samples


def timed(fn, items: list) -> float:
    """Seconds to call fn on every item."""
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=float, default=4.0)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not REAL.exists():
        print(f"skipped: real data not found at {REAL}")
        return 0
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # before tokenizers builds its pool
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from datatrove.utils.batching import batched

    from reasonpipe.tokenizer.backends import GigatokenEncoder, TokenizersEncoder, first_difference
    from reasonpipe.tokenizer.steps import SmallestHashes
    from reasonpipe.tokenizer.template import ChatTemplate
    from reasonpipe.tokenizer.vocab import prepare, resolve_template, train_tokenizer

    texts, samples = load_texts()
    if args.mb:  # a hash-chosen part: every n-th record by a stable hash, texts and samples alike
        total = sum(len(t.encode()) for t in texts) / 1e6
        keep = max(1, round(total / args.mb))
        texts = [t for t in texts if xxhash.xxh64_intdigest(t) % keep == 0]
        samples = [s for s in samples if xxhash.xxh64_intdigest(json.dumps(s)) % keep == 0]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    pick = SmallestHashes(5000, 0)
    for i, t in enumerate(texts):
        pick.add(str(i), t)
    tok = train_tokenizer([t for _, t in pick.items()], args.vocab)
    plain = prepare(tok)
    plain.encode_special_tokens = False
    ref, fast = TokenizersEncoder(plain), GigatokenEncoder(plain.to_str())  # fast: for the parity pass only
    print(f"corpus: {len(texts):,} texts, {mb:.1f} MB; {len(samples):,} samples; vocab {tok.get_vocab_size():,}")
    print(f"threads {args.threads}; {args.rounds} rounds, tokenizers and gigatoken interleaved")

    # parity on every text (the encoders never see special-token strings in the pipeline; skip those texts here)
    specials = [t.content for t in tok.get_added_tokens_decoder().values()]
    checked = [t for t in texts if not any(s in t for s in specials)]
    diffs = 0
    for chunk in batched(checked, 4096):
        a, b = ref.encode_flat(chunk), fast.encode_flat(chunk)
        while (i := first_difference(a, b)) is not None:
            diffs += 1
            chunk = chunk[i + 1 :]
            a, b = ref.encode_flat(chunk), fast.encode_flat(chunk)
    print(f"parity: {diffs} of {len(checked):,} texts differ")

    batches, chunks = list(batched(samples, 2048)), list(batched(checked, 2048))
    rows: dict[str, list[float]] = {k: [] for k in ("raw_tok", "raw_giga", "tpl_tok", "tpl_giga")}
    for r in range(args.rounds):
        ref, fast = TokenizersEncoder(plain), GigatokenEncoder(plain.to_str())  # fresh: cold caches
        tpl_ref = ChatTemplate(tok, resolve_template(tok), backend="tokenizers")
        tpl_fast = ChatTemplate(tok, resolve_template(tok), backend="gigatoken")
        rows["raw_tok"].append(timed(ref.encode_flat, chunks))
        rows["raw_giga"].append(timed(fast.encode_flat, chunks))
        rows["tpl_tok"].append(timed(tpl_ref.encode_batch_checked, batches))
        rows["tpl_giga"].append(timed(tpl_fast.encode_batch_checked, batches))
        print(
            f"round {r}: raw tokenizers {rows['raw_tok'][-1]:.2f}s gigatoken {rows['raw_giga'][-1]:.2f}s "
            f"({rows['raw_tok'][-1] / rows['raw_giga'][-1]:.1f}x) | template tokenizers {rows['tpl_tok'][-1]:.2f}s "
            f"gigatoken {rows['tpl_giga'][-1]:.2f}s ({rows['tpl_tok'][-1] / rows['tpl_giga'][-1]:.1f}x)"
        )
    for name, a, b in (("raw encoder", "raw_tok", "raw_giga"), ("chat template", "tpl_tok", "tpl_giga")):
        ratios = [x / y for x, y in zip(rows[a], rows[b])]
        line = f"{name}: gigatoken speed-up min {min(ratios):.1f}x median {statistics.median(ratios):.1f}x"
        if name == "raw encoder":
            line += f" (tokenizers {mb / statistics.median(rows[a]):.2f} MB/s, gigatoken "
            line += f"{mb / statistics.median(rows[b]):.2f} MB/s)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
