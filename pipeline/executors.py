"""Executors: run one datatrove run (a `RunSpec`) on the manifest's engine.

`local` is datatrove's multiprocessing executor with task logs kept in files (the driver draws progress itself), so the
console stays readable. dask, slurm and ray live in pipeline/distributed.py.
"""

from __future__ import annotations

import os

from datatrove.executor import LocalPipelineExecutor

from reasonpipe.pipeline import (
    distributed,
    tasklogs,  # noqa: F401  (the quiet task logger, inherited by forked workers)
)
from reasonpipe.pipeline.manifest import ExecutorConfig


def local_workers(cfg: ExecutorConfig, tasks: int) -> int:
    workers = cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)
    return max(1, min(workers, tasks))


def make_executor(steps: list, tasks: int, logging_dir: str, cfg: ExecutorConfig):
    """A datatrove executor for one run; `kind` picks the engine."""
    if cfg.kind == "local":
        workers = local_workers(cfg, tasks)
        # fork: workers inherit the quiet task logger and start without re-importing the pipeline
        return LocalPipelineExecutor(steps, tasks=tasks, workers=workers, logging_dir=logging_dir, start_method="fork")
    return distributed.make_executor(steps, tasks, logging_dir, cfg)
