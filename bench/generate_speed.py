"""End-to-end throughput of `reasonpipe generate` and `reasonpipe eval` on a trained `tiny` model (CPU).

    .venv/bin/python bench/generate_speed.py                        # trains the memorised tiny run once (~40 s)
    .venv/bin/python bench/generate_speed.py --run RUN --repeat 5   # any `reasonpipe train --out` folder

Each side is one `reasonpipe` process (start-up, model load, prompt rendering, decoding, judging, writing): the
start-up alone (`generate --prompt hi --max-new-tokens 1`); `generate` on --prompts prompts (the run's word
problems, seen and unseen, repeated) at batch sizes 1, 16 and 64 on one intra-op thread, and 16 on two; `eval`
greedy on 8 problems, with `--samples 8`, and `eval --rsa 8,2,2`. All sides alternate within each repetition.
Figures: the process's CPU and wall seconds (start-up included: importing torch is most of it), the command's own
decoding tokens/s (its stderr line: wall clock from the first prompt batch to the last, load excluded) and
tokens / process wall second; median over the repetitions (the best in brackets).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from trained import SEEN, UNSEEN, memorised_run  # noqa: E402

REASONPIPE = [str(Path(sys.executable).parent / "reasonpipe")]
SPEED = re.compile(r"(\d+) tokens in [\d.]+s \(([\d,]+) tokens/s\)")


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str]) -> tuple[float, float, int, float]:
    """(child CPU s, wall s, tokens generated, the command's decoding tokens/s) of one reasonpipe command."""
    c0, t0 = child_cpu(), time.perf_counter()
    proc = subprocess.run([*REASONPIPE, *argv], capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, child_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"reasonpipe {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    m = SPEED.findall(proc.stdout + proc.stderr)[-1]
    return cpu, wall, int(m[0]), float(m[1].replace(",", ""))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="a trained run folder (default: train the memorised tiny run into a temp folder)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new", type=int, default=32, help="--max-new-tokens")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="generate_speed_") as tmp:
        measure(args, Path(tmp))


def measure(args: argparse.Namespace, work: Path) -> None:
    if args.run:
        run, bench = Path(args.run), work / "bench.jsonl"
        bench.write_text("".join(json.dumps(r) + "\n" for r in SEEN))
    else:
        m = memorised_run(work / "memorised")
        run, bench = m.run, m.seen
    prompts = work / "prompts.jsonl"
    questions = [r["question"] for r in SEEN + UNSEEN]
    prompts.write_text("".join(json.dumps({"prompt": questions[i % len(questions)]}) + "\n"
                               for i in range(args.prompts)))  # fmt: skip
    new = ["--max-new-tokens", str(args.new), "--device", "cpu"]
    sides = {"start-up: generate --prompt, 1 new token": ["generate", str(run), "--prompt", "hi", "--out",
             str(work / "one.jsonl"), "--max-new-tokens", "1", "--device", "cpu", "--threads", "1"]}  # fmt: skip
    for batch, threads in ((1, 1), (16, 1), (64, 1), (16, 2)):
        sides[f"generate, batch {batch}, {threads} thread(s)"] = [
            "generate", str(run), "--prompts", str(prompts), "--out", str(work / "out.jsonl"),
            "--batch-size", str(batch), "--threads", str(threads), *new,
        ]  # fmt: skip
    ev = ["eval", str(run), "--benchmark", str(bench), "--out", str(work / "eval"), "--threads", "1", *new]
    sides["eval greedy, 8 problems"] = ev
    sides["eval --samples 8 --temperature 0.7"] = [*ev, "--samples", "8", "--temperature", "0.7"]
    sides["eval --rsa 8,2,2 --temperature 0.7"] = [*ev, "--rsa", "8,2,2", "--temperature", "0.7"]
    got: dict[str, list[tuple[float, float, int, float]]] = {name: [] for name in sides}
    for _ in range(args.repeat):
        for name, side in sides.items():
            got[name].append(timed(side))
    what = args.run or "the memorised `tiny` run of tests/trained.py"
    print(f"CPU, {what}, {args.prompts} prompts, --max-new-tokens {args.new}; median of {args.repeat} (best)\n")
    print("| command | tokens generated | process CPU s | process wall s | decoding tokens/s (its own line) | "
          "end to end tokens / wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, rows in got.items():
        cpu, wall, own = ([r[i] for r in rows] for i in (0, 1, 3))
        tokens = rows[0][2]
        e2e = [tokens / w for w in wall]
        print(f"| {name} | {tokens:,} | {statistics.median(cpu):.1f} ({min(cpu):.1f}) | "
              f"{statistics.median(wall):.1f} ({min(wall):.1f}) | {statistics.median(own):,.0f} ({max(own):,.0f}) | "
              f"{statistics.median(e2e):,.0f} ({max(e2e):,.0f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
