"""The dedup signers' three costly parts, before and after this round's changes, on real texts (same results).

    .venv/bin/python bench/minhash_sign.py [--records 3000] [--repeat 3]

Texts: the first `--records` records (as JSON lines) of every real-sample input in ../shared/data/real, prepared and
shingled as `minhash` does (3-token shingles, 32 bands x 4 hashes), in batches of 512 (the signer's batch). Each
round times every case once, interleaved; the table gives the minimum CPU seconds per case and asserts equal results:
1. MinHash signatures with 16384-gram blocks (before) and 8192 (after: the (hashes x block) buffer fits the L3 cache
   beside another task's);
2. each text's sorted distinct grams by `np.lexsort` (before) and by a value sort then a 16-bit stable (radix) sort
   by text (after, `distinct_per_text`);
3. math marks by one alternation scanned left to right (before) and three patterns (after, `math_marks`; compared as
   multisets, which is how the signers use them).
"""

from __future__ import annotations

import argparse
import glob
import re
import time
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from reasonpipe.filters.minhash import MinhashOptions
from reasonpipe.filters.minhash_core import MinHasher, distinct_per_text, ngram_hashes, token_hashes
from reasonpipe.filters.normalize import math_marks, prepare

MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "real-sample.yaml"
_ONE_PATTERN = re.compile(
    r"(?=[\\\dacelpst])(?:\\[A-Za-z]+|\d+(?:\.\d+)?"
    r"|(?<![A-Za-z])(?:arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|cot|sec|csc|log|ln|exp|sqrt|pi)(?![A-Za-z]))",
    re.IGNORECASE,
)


def lexsort_distinct(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    text = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    order = np.lexsort((values, text))
    values, text = values[order], text[order]
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = (values[1:] != values[:-1]) | (text[1:] != text[:-1])
    out = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(np.bincount(text[keep], minlength=len(offsets) - 1), out=out[1:])
    return values[keep], out


def one_pattern_marks(text: str) -> list[str]:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return [m if m.startswith("\\") else m.lower() for m in _ONE_PATTERN.findall(text)]


def cpu(fn, *args) -> tuple[float, object]:
    start = time.process_time()
    out = fn(*args)
    return time.process_time() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    texts = []
    for inp in yaml.safe_load(MANIFEST.read_text())["inputs"]:
        for path in sorted(glob.glob(str(MANIFEST.parent / inp["path"]))):
            with open(path) as f:
                texts += [line for _, line in zip(range(args.records), f)]
    norm = MinhashOptions().normalization
    batches = [[prepare(t, norm) for t in texts[i : i + 512]] for i in range(0, len(texts), 512)]
    shingled = [ngram_hashes(*token_hashes(b), 3, whole_if_short=True) for b in batches]
    grams = [distinct_per_text(*s) for s in shingled]
    cases = {
        "signatures, 16384-gram blocks": lambda: [MinHasher(32, 4, 0, chunk=16384).signatures(*g) for g in grams],
        "signatures, 8192-gram blocks": lambda: [MinHasher(32, 4, 0, chunk=8192).signatures(*g) for g in grams],
        "distinct grams, lexsort": lambda: [lexsort_distinct(*s) for s in shingled],
        "distinct grams, radix": lambda: [distinct_per_text(*s) for s in shingled],
        "math marks, one pattern": lambda: [Counter(one_pattern_marks(t)) for t in texts],
        "math marks, three patterns": lambda: [Counter(math_marks(t)) for t in texts],
    }
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        results = {}
        for name, fn in cases.items():
            seconds, results[name] = cpu(fn)
            best[name] = min(best.get(name, seconds), seconds)
        names = list(cases)
        for before, after in zip(names[::2], names[1::2]):
            a, b = results[before], results[after]
            same = all(
                (x == y) if isinstance(x, Counter) else all(np.array_equal(p, q) for p, q in zip(x, y))
                for x, y in zip(a, b)
            )
            assert same, f"{before} and {after} differ"
    print(f"{len(texts):,} texts, {sum(map(len, texts)) / 1e6:.1f} MB; min CPU seconds over {args.repeat} rounds\n")
    print("| case | before s | after s | speed-up |\n|---|---|---|---|")
    names = list(cases)
    for before, after in zip(names[::2], names[1::2]):
        what = before.split(",")[0]
        print(f"| {what} | {best[before]:.3f} | {best[after]:.3f} | {best[before] / best[after]:.2f}x |")


if __name__ == "__main__":
    main()
