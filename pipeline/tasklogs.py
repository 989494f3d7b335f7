"""Task logging: each task logs to `logs/task_NNNNN.log` in its run's folder; nothing reaches stderr (a failed task's
traceback is in its log, and the driver reports the failure in one message naming that log).

Importing this module installs the quiet logger into datatrove's executors: forked local workers inherit it and dask
workers import it through pipeline/distributed.py, so the driver's console shows only its own progress.
"""

from __future__ import annotations

import sys

import datatrove.executor.base as executor_base
from datatrove.utils.logging import logger


def quiet_task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's task logger, minus the stream to stderr: task logs go to `logs/task_NNNNN.log`."""
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"
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


executor_base.add_task_logger = quiet_task_logger
executor_base.close_task_logger = quiet_close_task_logger
