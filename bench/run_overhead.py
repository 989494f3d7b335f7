"""The fixed cost of one local datatrove run: a no-op step over T tasks, run as `executors.run_to_end` runs it.

    python bench/run_overhead.py [--tasks 4] [--workers 2] [--repeat 15]

Two sides, interleaved (one run of each, `--repeat` times; minimum and median): ours (`ForkPoolExecutor`: a pool of
forked workers) and datatrove's `LocalPipelineExecutor` in its place (the same pool plus its `multiprocess.Manager`
process, which each task asks for a local rank and tells when it is done). Everything else is the same: the forked
run process, its end seen through a pidfd, the quiet task logs. A pipeline makes ~16 such runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from reasonpipe.pipeline import executors
from reasonpipe.pipeline.manifest import ExecutorConfig
from reasonpipe.pipeline.tasklogs import quiet_logs


class Noop(PipelineStep):
    name = "noop"
    type = "bench"

    def run(self, data, rank: int = 0, world_size: int = 1):
        return
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    quiet_logs()
    workers = executors.local_workers(ExecutorConfig(kind="local", workers=args.workers), args.tasks)
    sides = {
        "ours (ForkPoolExecutor)": executors.ForkPoolExecutor,
        "datatrove LocalPipelineExecutor": LocalPipelineExecutor,
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeat):
        for name, cls in sides.items():
            with tempfile.TemporaryDirectory() as logs:
                start = time.perf_counter()
                executor = cls([Noop()], tasks=args.tasks, workers=workers, logging_dir=logs, start_method="fork")
                executors._run_in_child(executor.run)  # as run_to_end runs a local run
                times[name].append(time.perf_counter() - start)
    print(f"{args.tasks} no-op tasks on {args.workers} workers, {args.repeat} interleaved runs per side")
    for name, ts in times.items():
        print(f"  {name}: min {min(ts) * 1e3:.1f} ms, median {statistics.median(ts) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
