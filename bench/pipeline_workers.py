"""Pipeline throughput with 1 vs 2 workers (local and dask executors), measured in one run.

    python bench/pipeline_workers.py [--manifest manifests/demo.yaml] [--tasks 4]

Each configuration runs the whole manifest from scratch (a fresh output folder) and reports input MB/s and docs/s;
the printed ratios are against the 1-worker local run of the same invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonpipe.pipeline.manifest import load_manifest  # noqa: E402
from reasonpipe.pipeline.run import run_manifest  # noqa: E402


def timed_run(manifest: str, out: str, kind: str, tasks: int, workers: int) -> tuple[float, int, int]:
    overrides = {"output.path": out, "executor.kind": kind, "executor.tasks": tasks, "executor.workers": workers}
    loaded = load_manifest(manifest, overrides)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        plan = run_manifest(loaded)
    seconds = time.perf_counter() - start
    size = sum(os.path.getsize(f) for s in plan.sources for f in s.files if os.path.isfile(f))
    import json

    stages = json.loads(Path(out, "index.json").read_text())["stages"]
    return seconds, size, stages[0]["read"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", default="manifests/demo.yaml")
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, workers in (("local", 1), ("local", 2), ("dask", 1), ("dask", 2)):
            secs, size, docs = timed_run(args.manifest, f"{tmp}/{kind}{workers}", kind, args.tasks, workers)
            rows.append((kind, workers, secs, size / secs / 1e6, docs / secs))
    base = rows[0][2]
    print(f"manifest {args.manifest}, tasks {args.tasks}, {os.cpu_count()} CPUs")
    print("| executor | workers | seconds | input MB/s | docs/s | speed-up vs local x1 |")
    print("|---|---|---|---|---|---|")
    for kind, workers, secs, mbs, dps in rows:
        print(f"| {kind} | {workers} | {secs:.1f} | {mbs:.3f} | {dps:.1f} | {base / secs:.2f}x |")


if __name__ == "__main__":
    main()
