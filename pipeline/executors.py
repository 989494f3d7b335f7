"""Executors: run one datatrove run (a `RunSpec`) on the manifest's engine.

`local` is datatrove's multiprocessing executor with task logs kept in files (the driver draws progress itself), so the
console stays readable. dask, slurm and ray live in pipeline/distributed.py.
"""

from __future__ import annotations

import os
import sys

import datatrove.executor.base as executor_base
from datatrove.executor import LocalPipelineExecutor
from datatrove.utils.logging import logger

from pipeline.manifest import ExecutorConfig


def quiet_task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's task logger, minus the INFO stream to stderr: task logs go to `logs/task_NNNNN.log`."""
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"
    logger.add(sys.stderr, level="ERROR", format=fmt)
    logger.add(logfile, level="DEBUG", format=fmt)
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def quiet_logs() -> None:
    """Only warnings and errors on stderr: the driver shows its own progress instead of datatrove's INFO stream."""
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def quiet_close_task_logger(logfile) -> None:
    """End a task's logging without datatrove's reset to a verbose stderr logger."""
    logger.complete()
    quiet_logs()
    logfile.close()


# forked local workers inherit these; dask workers import this module through pipeline.distributed
executor_base.add_task_logger = quiet_task_logger
executor_base.close_task_logger = quiet_close_task_logger


def exclusion_writer(folder: str):
    """Rejected documents of a stage: gzipped JSONL per rank, reason in `metadata.filter_reason`."""
    from datatrove.pipeline.writers import JsonlWriter

    return JsonlWriter(folder, output_filename="${rank}.jsonl.gz")


def local_workers(cfg: ExecutorConfig, tasks: int) -> int:
    workers = cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)
    return max(1, min(workers, tasks))


def make_executor(steps: list, tasks: int, logging_dir: str, cfg: ExecutorConfig):
    """A datatrove executor for one run; `kind` picks the engine."""
    if cfg.kind == "local":
        workers = local_workers(cfg, tasks)
        # fork: workers inherit the quiet task logger and start without re-importing the pipeline
        return LocalPipelineExecutor(steps, tasks=tasks, workers=workers, logging_dir=logging_dir, start_method="fork")
    from pipeline import distributed

    return distributed.make_executor(steps, tasks, logging_dir, cfg)
