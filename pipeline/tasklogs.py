"""Task logging: each task logs to `logs/task_NNNNN.log` in its run's folder; nothing reaches stderr (a failed task's
traceback is in its log, and the driver reports the failure in one message naming that log).

Importing this module installs the quiet logger into datatrove's executors: forked local workers inherit it and dask
workers import it through pipeline/distributed.py, so the driver's console shows only its own progress.

A process has two loguru sinks, added once: the console (warnings and errors, silent while a task runs) and the
current task's log file (everything). A task only points the second at its file: loguru's `add` costs ~14 ms
(it resolves the interpreter's library folders for tracebacks each time), and datatrove's logger added and removed
two sinks per task, ~30 ms of every task.
"""

from __future__ import annotations

import sys

import datatrove.executor.base as executor_base
from datatrove.utils.logging import logger

TASK_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"


class _Console:
    """stderr, muted while this process runs a task."""

    def write(self, message: str) -> None:
        if _task_file.file is None:
            sys.stderr.write(message)

    def isatty(self) -> bool:  # loguru colours a terminal
        return sys.stderr.isatty()


class _TaskFile:
    """The log file of the task this process is running (none between tasks)."""

    file = None

    def write(self, message: str) -> None:
        if self.file is not None:
            self.file.write(message)


_task_file = _TaskFile()
_installed = False


def quiet_logs() -> None:
    """Only warnings and errors on stderr: the driver shows its own progress instead of datatrove's INFO stream."""
    global _installed
    logger.remove()
    _task_file.file = None
    logger.add(_Console(), level="WARNING")
    logger.add(_task_file, level="DEBUG", format=TASK_FORMAT)
    _installed = True


def quiet_task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's task logger, minus the stream to stderr: task logs go to `logs/task_NNNNN.log`."""
    if not _installed:  # a process that never set up logging (a dask worker)
        quiet_logs()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    _task_file.file = logfile
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def quiet_close_task_logger(logfile) -> None:
    """End a task's logging without datatrove's reset to a verbose stderr logger."""
    logger.complete()
    _task_file.file = None
    logfile.close()


executor_base.add_task_logger = quiet_task_logger
executor_base.close_task_logger = quiet_close_task_logger
