"""Pipeline throughput with 1 vs 2 workers (local and dask executors), measured in one run.

    python bench/pipeline_workers.py [--manifest manifests/demo.yaml] [--tasks 4] [--repeat 3]

Every configuration runs the whole manifest from scratch (a fresh output and work folder), `--repeat` times; each
repetition runs the configurations in a random order (so no configuration always pays the process's cold imports or
always follows the heaviest one), after one untimed warm-up run. Reported per configuration: the minimum and the
median seconds, input MB/s and docs/s of the minimum, and the speed-up of both against the 1-worker local run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonpipe.pipeline.manifest import load_manifest  # noqa: E402
from reasonpipe.pipeline.run import run_manifest  # noqa: E402

CONFIGS = (("local", 1), ("local", 2), ("dask", 1), ("dask", 2))


def timed_run(manifest: str, out: str, kind: str, tasks: int, workers: int) -> tuple[float, int, int]:
    """(seconds, input bytes, records read) of one run from scratch into `out`."""
    overrides = {"output.path": out, "executor.kind": kind, "executor.tasks": tasks, "executor.workers": workers}
    overrides["output.work_dir"] = None  # work folder inside `out`: nothing cached from an earlier run
    loaded = load_manifest(manifest, overrides)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        plan = run_manifest(loaded)
    seconds = time.perf_counter() - start
    size = sum(os.path.getsize(f) for s in plan.sources for f in s.files if os.path.isfile(f))
    stages = json.loads(Path(out, "index.json").read_text())["stages"]
    shutil.rmtree(out)
    return seconds, size, stages[0]["read"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", default="manifests/demo.yaml")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of the configurations")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seconds: dict[tuple[str, int], list[float]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        timed_run(args.manifest, f"{tmp}/warm", "local", args.tasks, 1)  # imports and page cache, off the record
        for rep in range(args.repeat):
            order = rng.sample(CONFIGS, len(CONFIGS))
            print(f"repetition {rep + 1}: {', '.join(f'{k} x{w}' for k, w in order)}", file=sys.stderr)
            for kind, workers in order:
                secs, size, docs = timed_run(args.manifest, f"{tmp}/{kind}{workers}", kind, args.tasks, workers)
                seconds[(kind, workers)].append(secs)
    base_min, base_med = min(seconds[CONFIGS[0]]), statistics.median(seconds[CONFIGS[0]])
    print(f"manifest {args.manifest}, tasks {args.tasks}, {os.cpu_count()} CPUs, {args.repeat} repetitions")
    print("| executor | workers | min s | median s | input MB/s | docs/s | speed-up vs local x1 (min / median) |")
    print("|---|---|---|---|---|---|---|")
    for kind, workers in CONFIGS:
        s = seconds[(kind, workers)]
        lo, med = min(s), statistics.median(s)
        print(
            f"| {kind} | {workers} | {lo:.1f} | {med:.1f} | {size / lo / 1e6:.3f} | {docs / lo:.1f} | "
            f"{base_min / lo:.2f}x / {base_med / med:.2f}x |"
        )


if __name__ == "__main__":
    main()
