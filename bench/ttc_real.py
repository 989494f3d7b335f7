"""Test-time-compute data on real records: answer verification rates, RSA aggregation samples, Markovian chains.

    python bench/ttc_real.py [--gsm 200] [--out /tmp/ttc-real]

Inputs from ../shared/data/real (skipped when absent):
- GSM8K train (real problems with one real solution each). Real data has one trace per problem, so each problem
  gets three more *generated from its real solution*: the same solution ending in `\\boxed{n}` (right), and two with
  an arithmetic slip in the last step (`n + 1`, `10 n`: wrong). Gold answers come from a reference file: the GSM8K
  file itself, keyed by problem (answer_verify `reference`).
- The DeepSeek-R1 style traces of MATH problems (5 problems x 2 real traces, gold in `gtruth_answer`).
- Marco-o1 CoT (125 real traces, no gold: unknown).
Runs one manifest (answer_verify; rsa_aggregate k=2; markovian_chunks context 1024) through `reasonpipe run` and
prints the verification rates per source, the numbers of aggregation samples and chunk chains, and checks that
every aggregation sample's candidates and target are traces of one problem (mapped back to the input records).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
sys.path.insert(0, str(ROOT))

from reasonpipe.pipeline.manifest import load_manifest  # noqa: E402
from reasonpipe.pipeline.run import run_manifest  # noqa: E402


def gsm_traces(n: int) -> list[dict]:
    """The first n GSM8K problems, each with its real solution and three traces generated from it."""
    out = []
    with open(REAL / "math" / "gsm8k_train.jsonl") as f:
        for _, line in zip(range(n), f):
            r = json.loads(line)
            work, final = r["answer"].rsplit("####", 1)
            final = final.strip().replace(",", "")
            out.append({"question": r["question"], "answer": r["answer"], "kind": "real"})
            boxed = f"{work.strip()}\n\nSo the answer is $\\boxed{{{final}}}$."
            out.append({"question": r["question"], "answer": boxed, "kind": "real solution, boxed answer"})
            for wrong, kind in ((int(final) + 1, "slip +1"), (int(final) * 10, "slip x10")):
                lines = work.strip().split("\n")
                lines[-1] = re.sub(r"\d+(?=\D*$)", str(wrong), lines[-1])  # the last result written wrong
                out.append({"question": r["question"], "answer": "\n".join(lines) + f"\n#### {wrong}", "kind": kind})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gsm", type=int, default=200, help="GSM8K problems")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ttc-real"))
    args = parser.parse_args()
    if not REAL.exists():
        print(f"skipped: {REAL} is absent")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    traces = gsm_traces(args.gsm)
    (args.out / "gsm_traces.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traces))
    manifest = {
        "name": "ttc-real",
        "inputs": [
            {"name": "gsm", "path": str(args.out / "gsm_traces.jsonl"), "schema": "problem_solution",
             "domain": "math"},
            {"name": "r1", "path": str(REAL / "reasoning" / "r1_samples_*.jsonl"), "schema": "problem_solution",
             "domain": "reasoning", "fields": {"gold": "gtruth_answer"}},
            {"name": "marco", "path": str(REAL / "reasoning" / "marco_o1_cot.jsonl"), "domain": "reasoning"},
        ],
        "stages": [{"answer_verify": {"reference": {"path": str(REAL / "math" / "gsm8k_train.jsonl")}}}],
        "tokenizer": {"train": {"vocab_size": 4096}},
        "trim": {"context": 4096},
        "builders": {"rsa_aggregate": {"k": 2, "tau": 128, "per_problem": 2},
                     "markovian_chunks": {"context": 1024, "carry": 256, "head": 64}},
        "pack": {"seq_len": 4096},
        "output": {"path": str(args.out / "output")},
        "executor": {"tasks": 2, "workers": 2},
    }  # fmt: skip
    path = args.out / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_manifest(load_manifest(path), force=True)
    seconds = time.perf_counter() - start
    out = args.out / "output"
    index = json.loads((out / "index.json").read_text())

    print(f"`python bench/ttc_real.py --gsm {args.gsm}`: {len(traces)} GSM8K traces ({args.gsm} real + "
          f"{3 * args.gsm} generated from them), 10 R1 traces, 125 Marco-o1 traces; {seconds:.0f} s\n")  # fmt: skip
    print("| source | correct | incorrect | unknown | correct rate (judged) |\n|---|---|---|---|---|")
    for source, v in index["verification"].items():
        rate = "-" if v["correct_rate"] is None else f"{v['correct_rate']:.1%}"
        print(f"| {source} | {v['correct']} | {v['incorrect']} | {v['unknown']} | {rate} |")
    import polars as pl

    rsa, chunks = index["ttc"]["rsa_aggregate"], index["ttc"]["markovian_chunks"]
    print(f"\nRSA (k=2, tau=128): {rsa['problems']} problems, {rsa['problems_too_few_traces']} with < 3 traces, "
          f"{rsa['samples']} aggregation samples, targets {rsa['targets']}, mean tail {rsa['mean_tail_tokens']:.1f} "
          f"tokens")  # fmt: skip
    print(f"Markovian (C=1024, carry 256, head 64): {chunks['traces']} traces, {chunks['chains']} chains, "
          f"{chunks['chunks']} chunks, skipped {chunks['skipped']}")  # fmt: skip

    # every GSM8K verdict against how its trace was made (the verdicts travel with the samples in the token cache)
    from reasonpipe.tokenizer.cache import read_cache

    (prep,) = (out / ".work").glob("prep-*")
    verdicts = {s.id: s.correct for f in sorted((prep / "tokens").glob("*.arrow")) for s in read_cache(f)}
    right = [not t["kind"].startswith("slip") for t in traces]
    agree = sum(verdicts[f"gsm/gsm_traces.jsonl:{i}"] == r for i, r in enumerate(right))
    print(f"GSM8K verdicts equal to how each trace was made (right / slipped): {agree} of {len(traces)}")

    # every aggregation sample: its target and candidates are records of one problem (read back from the inputs)
    problem_of = {f"gsm/gsm_traces.jsonl:{i}": t["question"] for i, t in enumerate(traces)}
    kind_of = {f"gsm/gsm_traces.jsonl:{i}": t["kind"] for i, t in enumerate(traces)}
    samples = pl.read_parquet(out / "samples" / "*.parquet").filter(pl.col("builder") == "rsa_aggregate")
    one_problem = 0
    for prov in samples["provenance"]:
        p = json.loads(prov)
        ids = [p["target"], *p["candidates"]]
        one_problem += len({problem_of[i] for i in ids}) == 1
        assert not kind_of[p["target"]].startswith("slip"), p  # a wrong trace is never a target
    print(f"aggregation samples whose target and candidates are traces of one problem: {one_problem} of "
          f"{samples.height}")  # fmt: skip


if __name__ == "__main__":
    main()
