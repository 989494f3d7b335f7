"""Gopher repetition: ours (filters/quality.py `GopherRepetition`) vs datatrove's `GopherRepetitionFilter`.

    python bench/gopher_repetition.py [--repeats 3]

Texts: the real PEP paragraphs and Marco-o1 responses of ../shared/data/real, plus repetitive variants of them (a
text's first words repeated 2-4 times, so every check has texts to drop). Both filters get the same word splitter
(`OfflineWordTokenizer`) and default thresholds; the script checks that every verdict is equal, then reports the CPU
time of each (interleaved repeats, min; CPU time since the machine is shared). Same work on both sides: the same
checks in the same order; ours builds n-grams with C-level builtins and each size from the one before.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter

from reasonpipe.filters.quality import GopherRepetitionStage, OfflineWordTokenizer

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def texts() -> list[str]:
    def field(name: str, key: str) -> list[str]:
        with open(REAL / name) as f:
            return [json.loads(line)[key] for line in f]

    base = field("prose/python_peps_paragraphs_6k.jsonl", "text") + field("reasoning/marco_o1_cot.jsonl", "response")
    return base + [" ".join(t.split()[: 5 + i % 40] * (2 + i % 3)) for i, t in enumerate(base[:1000])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts())]
    sides = {
        "datatrove": GopherRepetitionFilter(language=OfflineWordTokenizer()),
        "ours": GopherRepetitionStage().make_filter(GopherRepetitionStage.Options()).inner,
    }
    verdicts = {name: [f.filter(d) for d in docs] for name, f in sides.items()}
    assert verdicts["ours"] == verdicts["datatrove"], "verdicts differ"
    dropped = sum(v is not True for v in verdicts["ours"])
    cpu = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, f in sides.items():
            start = time.process_time()
            for d in docs:
                f.filter(d)
            cpu[name].append(time.process_time() - start)
    print(f"{len(docs):,} texts, {dropped:,} dropped by both, every verdict equal")
    for name, times in cpu.items():
        print(f"{name}: {min(times):.2f} s CPU (min of {args.repeats})")
    print(f"datatrove / ours: {min(cpu['datatrove']) / min(cpu['ours']):.2f}x")


if __name__ == "__main__":
    main()
