"""Language identification: the probe path vs whole-text lingua, and reasoning_quality + language, old vs new.

    python bench/language_id.py [--old main] [--docs 3000] [--repeats 3]

Part 1 (this tree): real texts of ../shared/data/real (prose: PEPs; math prose: HoTT + Stacks; short reasoning:
GSM8K questions and solutions; long traces: Marco-o1 responses, R1 thinking), as the detector reads them
(`detection_text`, 2000 characters). For each kind: agreement of the probed detection (head and tail first) with the
whole-text one, on the language and on the `language` stage's verdict (keep en at confidence 0.5), and the CPU time of
both, interleaved (CPU time: the machine is shared). lingua's low-accuracy mode is measured the same way.

Part 2 (old commit vs this tree, in child processes, alternating): the real-sample's reasoning inputs (GSM8K, Marco,
R1) as chat samples plus PEP paragraphs, through `reasoning_quality` (reasoning domain) then `language` (keep en).
What differs: the old side detects problem, trace and the whole text (3 whole-text detections per chat sample); the
new side detects problem and trace once each (probing long texts) and the language stage reuses them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sides import ROOT, old_pythonpath, run_child  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"


def rows(name: str) -> list[dict]:
    with open(REAL / name) as f:
        return [json.loads(line) for line in f]


def texts_by_kind() -> dict[str, list[str]]:
    from reasonpipe.filters.language import detection_text, letter_count

    traces = [r["response"] for r in rows("reasoning/marco_o1_cot.jsonl")]
    traces += [r["message_thinking"] for n in "ab" for r in rows(f"reasoning/r1_samples_{n}.jsonl")]
    raw = {
        "prose": [r["text"] for r in rows("prose/python_peps_paragraphs_6k.jsonl")],
        "math prose": [
            r["text"]
            for n in ("hott_book_paragraphs", "stacks_project_paragraphs_5k")
            for r in rows(f"math_prose/{n}.jsonl")
        ],
        "short reasoning (GSM8K)": [
            r[k] for r in rows("math/gsm8k_train.jsonl")[:2000] for k in ("question", "answer")
        ],
        "long traces (Marco-o1, R1)": traces,
    }
    out = {}
    for kind, values in raw.items():
        texts = [detection_text(v, 2000) for v in values]
        out[kind] = [t for t in texts if letter_count(t) >= 20]
    return out


def timed(fn, texts: list[str]) -> tuple[float, list]:
    start = time.process_time()
    results = [fn(t) for t in texts]
    return time.process_time() - start, results


def part1(repeats: int) -> None:
    from reasonpipe.filters.language import COMPACT_LANGUAGES, LinguaDetector, language_verdict

    whole = LinguaDetector(COMPACT_LANGUAGES, probe_chars=0)
    probed = LinguaDetector(COMPACT_LANGUAGES)
    low = LinguaDetector(COMPACT_LANGUAGES, low_accuracy=True, probe_chars=0)
    for d in (whole, probed, low):
        d.detect("warm up the models with a sentence in English, please.")
    print("| kind | texts | probed (> 600 chars) | probe = whole: language, verdict | whole / probed CPU time (min) "
          "| low-accuracy = whole | whole / low-accuracy CPU time |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for kind, texts in texts_by_kind().items():
        times = {"whole": [], "probed": [], "low": []}
        for _ in range(repeats):
            for name, detector in (("whole", whole), ("probed", probed), ("low", low)):
                seconds, results = timed(detector.detect, texts)
                times[name].append(seconds)
                if name == "whole":
                    ref = results
                elif name == "probed":
                    got = results
                else:
                    lowres = results
        same = sum(a is not None and b is not None and a[0] == b[0] or a == b for a, b in zip(ref, got))
        verdict = sum(language_verdict(a, ["en"], 0.5) == language_verdict(b, ["en"], 0.5) for a, b in zip(ref, got))
        low_same = sum(a is not None and b is not None and a[0] == b[0] or a == b for a, b in zip(ref, lowres))
        med = {k: min(v) for k, v in times.items()}
        long = sum(len(t) > 3 * probed.probe_chars for t in texts)
        print(
            f"| {kind} | {len(texts)} | {long} | {same}/{len(texts)}, {verdict}/{len(texts)} "
            f"| {med['whole'] / med['probed']:.2f}x | {low_same}/{len(texts)} | {med['whole'] / med['low']:.2f}x |"
        )


def stage_docs(n: int) -> list:
    from datatrove.data import Document

    from reasonpipe.pipeline.adapters import adapt
    from reasonpipe.pipeline.steps import Normalize

    records = [("gsm8k", r) for r in rows("math/gsm8k_train.jsonl")[:n]]
    records += [("marco", r) for r in rows("reasoning/marco_o1_cot.jsonl")]
    records += [("r1", r) for x in "ab" for r in rows(f"reasoning/r1_samples_{x}.jsonl")]
    docs, normalize = [], Normalize()
    for i, (name, rec) in enumerate(records):
        text, meta = adapt(rec, "problem_solution", {})
        doc = Document(text=text, id=f"{name}:{i}", metadata={"source": name, "domain": "reasoning", **meta})
        if normalize.filter(doc) is True:
            docs.append(doc)
    for i, rec in enumerate(rows("prose/python_peps_paragraphs_6k.jsonl")[:n]):
        docs.append(Document(text=rec["text"], id=f"peps:{i}", metadata={"source": "peps", "domain": "web"}))
    return docs


def part2_side(n: int) -> dict:
    from reasonpipe.filters.language import LanguageFilter, LanguageOptions, LinguaDetector
    from reasonpipe.filters.reasoning import ReasoningOptions, ReasoningQualityFilter

    docs = stage_docs(n)
    quality = ReasoningQualityFilter(
        detector=LinguaDetector(ReasoningOptions().detector_languages), domains=["reasoning"]
    )
    language = LanguageFilter(LanguageOptions().detector(), languages=["en"])
    quality.detector.detect("warm up the models with a sentence in English, please.")
    language.detector.detect("warm up the models with a sentence in English, please.")
    verdicts, seconds = {}, {"reasoning_quality": 0.0, "language": 0.0}
    for doc in docs:
        start = time.process_time()
        verdict = quality.filter(doc)
        middle = time.process_time()
        if verdict is True:
            verdict = language.filter(doc)
        seconds["reasoning_quality"] += middle - start
        seconds["language"] += time.process_time() - middle
        verdicts[doc.id] = verdict if verdict is True else list(verdict)
    return {"seconds": seconds, "verdicts": verdicts, "docs": len(docs)}


def part2(old: str, n: int, repeats: int) -> None:
    sides = {"old": old_pythonpath(old), "new": None}
    results = {side: [] for side in sides}
    for _ in range(repeats):
        for side, pythonpath in sides.items():
            results[side].append(run_child(__file__, ["--side-out", str(n)], pythonpath))
    differ = [k for k, v in results["old"][0]["verdicts"].items() if results["new"][0]["verdicts"][k] != v]
    med = {
        s: {k: statistics.median(r["seconds"][k] for r in rs) for k in rs[0]["seconds"]} for s, rs in results.items()
    }
    total = {s: sum(m.values()) for s, m in med.items()}
    print(f"\n{results['new'][0]['docs']} documents, {repeats} interleaved repeats (old = {old}), median CPU seconds:")
    for side in sides:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in med[side].items())
        print(f"  {side}: {parts}, total {total[side]:.1f}")
    print(f"  old / new: {total['old'] / total['new']:.2f}x; verdicts that differ: {len(differ)} {differ[:5]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="main", help="git ref of the old side of part 2")
    ap.add_argument("--docs", type=int, default=3000, help="GSM8K records and PEP paragraphs in part 2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--side-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side_out:
        print(json.dumps(part2_side(int(args.side_out))))
        return
    if not REAL.exists():
        sys.exit(f"{REAL} not found: this benchmark reads the real corpora")
    part1(args.repeats)
    part2(args.old, args.docs, args.repeats)


if __name__ == "__main__":
    main()
