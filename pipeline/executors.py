"""Executors: run one datatrove run (a `RunSpec`) on the manifest's engine, stoppable with Ctrl-C.

`local` is datatrove's local executor on a pool of forked workers (`ForkPoolExecutor`), with task logs kept in files
(the driver draws progress itself), so the console stays readable. dask, slurm and ray live in pipeline/distributed.py.

Ctrl-C: only the driver's main thread takes SIGINT (helper threads start with it blocked; waits are polled, so a
signal the kernel hands to another thread still ends them at once). A local run executes in a forked child that
ignores SIGINT, and so do the worker processes it forks (they also die with their parent, on Linux, and at SIGTERM by
the kernel's default action); on Ctrl-C the driver sends the child SIGTERM, the child kills its workers and exits,
and after `STOP_SECONDS` anything left is SIGKILLed (a second Ctrl-C does that at once). A dask LocalCluster is
started with SIGINT ignored (its processes inherit that); on Ctrl-C its worker processes are killed and it is
closed. A killed task leaves no completion marker, so a re-run redoes exactly the unfinished tasks. In every case
`KeyboardInterrupt` then propagates.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import os
import pickle
import select
import signal
import sys
import tempfile
import time
import warnings
from copy import deepcopy

import multiprocess
from datatrove.executor import LocalPipelineExecutor
from datatrove.utils.stats import PipelineStats

from reasonpipe.pipeline import (
    distributed,
    tasklogs,  # noqa: F401  (the quiet task logger, inherited by forked workers)
)
from reasonpipe.pipeline.manifest import ExecutorConfig

STOP_SECONDS = 3.0


def local_workers(cfg: ExecutorConfig, tasks: int) -> int:
    workers = cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)
    return max(1, min(workers, tasks))


class ForkPoolExecutor(LocalPipelineExecutor):
    """datatrove's local executor on a pool of forked workers, without its `multiprocess.Manager`.

    datatrove's `run` starts a manager process for a queue of local ranks and a counter of completed tasks, and each
    task makes proxy round trips to it. The local rank only decides which task logs reach the console and the counter
    only logs "k/N tasks completed": here task logs never reach the console (`tasklogs`) and the driver follows the
    completion markers, so neither is needed: 4 no-op tasks on 2 workers take 35 ms against 70 ms with datatrove's
    executor (bench/run_overhead.py; a pipeline makes ~16 runs). Forked workers inherit the quiet task logger and
    start without re-importing the pipeline.
    """

    def run(self) -> PipelineStats | None:
        ranks = self.get_incomplete_ranks(range(self.local_rank_offset, self.local_rank_offset + self.local_tasks))
        if not ranks:
            return None
        self.save_executor_as_json()
        if self.workers == 1:
            pipeline, stats = self.pipeline, []
            for rank in ranks:
                self.pipeline = deepcopy(pipeline)  # steps keep state while they run: each task gets fresh ones
                stats.append(self._run_for_rank(rank))
        else:
            with multiprocess.get_context("fork").Pool(self.workers) as pool:
                stats = list(pool.imap_unordered(self._run_for_rank, ranks))
        stats = sum(stats, start=PipelineStats())
        with self.logging_dir.open("stats.json", "wt") as f:
            stats.save_to_disk(f)
        return stats


def make_executor(steps: list, tasks: int, logging_dir: str, cfg: ExecutorConfig):
    """A datatrove executor for one run; `kind` picks the engine."""
    if cfg.kind == "local":
        workers = local_workers(cfg, tasks)
        return ForkPoolExecutor(steps, tasks=tasks, workers=workers, logging_dir=logging_dir, start_method="fork")
    return distributed.make_executor(steps, tasks, logging_dir, cfg)


def preload_for_fork(steps: list) -> None:
    """Import in this process the modules the run's steps name in `fork_preload` (modules their libraries import
    lazily, ~0.5-0.8 s each): the forked workers inherit them instead of each importing them again."""
    for step in steps:
        for name in getattr(step, "fork_preload", ()):
            if name not in sys.modules and importlib.util.find_spec(name) is not None:
                importlib.import_module(name)


def run_to_end(steps: list, tasks: int, logging_dir: str, cfg: ExecutorConfig) -> None:
    """Execute one run; on Ctrl-C stop its tasks within seconds and raise `KeyboardInterrupt`."""
    executor = make_executor(steps, tasks, logging_dir, cfg)
    if cfg.kind == "local":
        preload_for_fork(steps)
        _run_in_child(executor.run)
    elif cfg.kind == "dask":
        # the cluster's processes inherit SIG_IGN and the client's threads a mask blocking SIGINT: a terminal's
        # Ctrl-C reaches the driver's main thread only, which stops waiting at once
        with sigint_ignored(), sigint_blocked(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Port .* is already in use")  # another cluster's dashboard
            distributed.dask_client(cfg.scheduler_address, distributed.dask_workers(cfg, tasks))
        try:
            executor.run()
        except KeyboardInterrupt:
            _close_dask(cfg, tasks)
            raise
    else:
        executor.run()


@contextlib.contextmanager
def sigint_ignored():
    """SIGINT ignored while inside; processes started meanwhile keep ignoring it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def sigint_blocked():
    """SIGINT blocked for this thread while inside; threads started meanwhile keep it blocked, so the kernel hands a
    Ctrl-C to the main thread (a blocking wait there ends at once) and never to them."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _close_dask(cfg: ExecutorConfig, tasks: int) -> None:
    """Stop the run's dask tasks: a LocalCluster's worker processes are killed (a running task cannot be stopped
    otherwise) and the cluster closed; with an existing cluster the client lets go of its tasks."""
    import logging
    import multiprocessing

    for name in ("distributed", "tornado"):  # the workers' deaths are expected now (tornado logs callback errors)
        logging.getLogger(name).setLevel(logging.CRITICAL)
    client = distributed.dask_client(cfg.scheduler_address, distributed.dask_workers(cfg, tasks))
    cluster = None if cfg.scheduler_address else client.cluster  # never stop a cluster we did not start
    if cluster is not None:
        for process in multiprocessing.active_children():  # the LocalCluster's worker processes
            process.kill()
    for closable in (client, cluster):
        if closable is not None:
            with contextlib.suppress(Exception):
                closable.close(timeout=STOP_SECONDS)
    distributed.dask_client.cache_clear()


# local runs in a child process -------------------------------------------------------------------------------------
def _die_with_parent(sig: int) -> None:
    """Linux: deliver `sig` to this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


def _kill_children_and_exit(signum: int, _frame) -> None:
    import multiprocess

    for child in multiprocess.active_children():
        with contextlib.suppress(Exception):
            child.kill()
    os._exit(128 + signum)


def _worker_signals() -> None:
    """In each process the run forks (its workers, datatrove's manager): die with the run, and die at SIGTERM
    (`Pool.terminate` at the end of every run) by the kernel's default action. The run's Python-level handler
    would only run in the main thread at its next bytecode: an idle worker blocked on the pool's queue lock,
    with the signal arriving just before it blocked or taken by another of its threads (fsspec's IO loop), never
    ran it and hung the run."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(signal.SIGKILL)


def _child(fn, result: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by every worker this run forks
    signal.signal(signal.SIGTERM, _kill_children_and_exit)
    _die_with_parent(signal.SIGTERM)  # the driver SIGKILLed: stop too
    os.register_at_fork(after_in_child=_worker_signals)
    payload = b""
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - handed to the driver, which raises it
        try:
            payload = pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle travels as its text
            payload = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    with open(result, "wb") as f:
        f.write(payload)
    os._exit(1 if payload else 0)


def _run_in_child(fn) -> None:
    """Run `fn()` in a forked child (see the module docstring); its exception, if any, is raised here."""
    fd, result = tempfile.mkstemp(prefix="reasonpipe-run-")  # the child's exception (a file: no pipe to fill)
    os.close(fd)
    try:
        pid = os.fork()
        if pid == 0:
            try:
                _child(fn, result)
            finally:
                os._exit(1)  # the child never returns into the driver's code
        try:
            status = _wait(pid)
        except KeyboardInterrupt:
            _stop(pid)
            raise
        with open(result, "rb") as f:
            payload = f.read()
    finally:
        os.unlink(result)
    if payload:
        raise pickle.loads(payload)
    if status != 0:
        raise RuntimeError(f"the run's process ended abnormally (wait status {status})")


def _wait(pid: int) -> int:
    """The wait status of child `pid`, once it ends. The wait wakes every 50 ms (a Ctrl-C the kernel hands to another
    thread is seen when the main thread runs again) and, on Linux, at once when the child ends (a pidfd; a plain
    50 ms poll cost every run 25 ms on average)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        fd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if fd is None:
                time.sleep(0.05)
            else:
                select.select([fd], [], [], 0.05)
    finally:
        if fd is not None:
            os.close(fd)


def _stop(pid: int) -> None:
    """SIGTERM the child (it kills its workers), SIGKILL it after STOP_SECONDS or at a second Ctrl-C."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.02)
    except ChildProcessError:  # reaped already (it ended as the Ctrl-C came)
        return
    except KeyboardInterrupt:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
