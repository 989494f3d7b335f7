"""Task balance and wall time of the read run (read -> adapt -> normalize -> first stage), this tree vs an old commit.

    python bench/read_split.py [--manifest manifests/real-sample.yaml] [--old main] [--tasks 4] [--repeats 3]
                               [--through stream|canonical|all]

Each side compiles the manifest with its own code (the old commit is extracted with `git archive` and put first on
PYTHONPATH) and runs every datatrove run up to and including the first one whose name starts with `--through`
(default `stream`: the read run; `canonical`: through the filter run that writes the canonical documents; `all`), in
a fresh folder; the sides alternate, `--repeats` times. It prints the documents each task read and the wall time (min
and median). What differs: the old side assigns whole files to tasks (`files[rank::T]`); this side runs the
`input-index` run (counting the records of split parts) and then reads balanced parts; through `canonical`, the
filters of this tree too (language detection once per text).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sides import ROOT, old_pythonpath, run_child  # noqa: E402


def run_side(manifest: str, tasks: int, out: str, through: str) -> dict:
    """In a child process: compile with whichever `reasonpipe` is importable, run up to the `through` run."""
    from reasonpipe.pipeline.compile import compile_plan
    from reasonpipe.pipeline.executors import make_executor
    from reasonpipe.pipeline.manifest import load_manifest
    from reasonpipe.pipeline.tasklogs import quiet_logs

    quiet_logs()
    loaded = load_manifest(manifest, {"executor.tasks": tasks, "output.path": out})
    plan = compile_plan(loaded)
    cfg = loaded.manifest.executor
    start = time.monotonic()
    read_run = None
    for run in plan.runs:
        make_executor(run.build(), run.tasks, run.logging_dir, cfg).run()
        if read_run is None and run.name.startswith("stream"):
            read_run = run
        if run.name.startswith(through):
            break
    wall = time.monotonic() - start
    docs = []
    for name in sorted(os.listdir(os.path.join(read_run.logging_dir, "stats"))):
        with open(os.path.join(read_run.logging_dir, "stats", name)) as f:
            docs.append(json.load(f)[0]["stats"].get("total", 0))
    return {"wall": wall, "docs": docs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=str(ROOT / "manifests" / "real-sample.yaml"))
    ap.add_argument("--old", default="main", help="git ref of the old side")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--through", default="stream", help="last run: a run name prefix, or 'all'")
    ap.add_argument("--side-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side_out:
        print(json.dumps(run_side(args.manifest, args.tasks, args.side_out, args.through)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="read-split-"))
    sides = {"old": old_pythonpath(args.old), "new": None}
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for repeat in range(args.repeats):
        for side, pythonpath in sides.items():
            out = str(tmp / f"{side}{repeat}")
            child = ["--manifest", args.manifest, "--tasks", str(args.tasks), "--through", args.through]
            child += ["--side-out", out]
            results[side].append(run_child(__file__, child, pythonpath))
    print(f"{args.manifest}, {args.tasks} tasks, through {args.through!r}, {args.repeats} repeats (old = {args.old})")
    for side, runs in results.items():
        docs = runs[0]["docs"]
        walls = [r["wall"] for r in runs]
        print(
            f"{side:>4}: documents per task {docs} (largest / mean {max(docs) / (sum(docs) / len(docs)):.2f}); "
            f"wall min {min(walls):.1f} s, median {statistics.median(walls):.1f} s"
        )
    ratio = statistics.median(r["wall"] for r in results["old"]) / statistics.median(r["wall"] for r in results["new"])
    low = min(r["wall"] for r in results["old"]) / min(r["wall"] for r in results["new"])
    print(f"wall time old / new: {ratio:.2f}x (medians), {low:.2f}x (minima)")


if __name__ == "__main__":
    main()
