"""Scaling out: dask.distributed, Slurm and Ray executors for the manifest's runs.

Every executor here keeps datatrove's contract: a task is one rank, its completion marker, stats and log live in the
run's logging folder (a filesystem shared by the driver and the workers), and completed ranks are skipped, so a
re-run resumes exactly as with the local executor. The driver runs the manifest's runs one after another and waits
for each (the pack run is built from the tokenised corpus's statistics), on every engine.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time
from functools import cache

from datatrove.executor.base import PipelineExecutor
from datatrove.utils.stats import PipelineStats

from reasonpipe.pipeline import tasklogs  # noqa: F401  (the quiet task logger, also in worker processes)
from reasonpipe.pipeline.manifest import ExecutorConfig


def _run_rank(executor: PipelineExecutor, rank: int) -> PipelineStats:
    """One task on a dask worker, on a private copy of the pipeline (steps hold per-task state)."""
    return copy.deepcopy(executor)._run_for_rank(rank)


@cache
def dask_client(scheduler_address: str | None, workers: int):
    """One client per driver process: an existing cluster, or a LocalCluster of `workers` single-threaded processes."""
    import logging

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the driver shows its own progress
    if scheduler_address:
        return Client(scheduler_address)
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    )
    return Client(cluster)


class DaskPipelineExecutor(PipelineExecutor):
    """Runs a datatrove pipeline's tasks as dask tasks; failed tasks are retried `retries` times."""

    def __init__(self, pipeline, tasks: int, workers: int, logging_dir: str, scheduler_address=None, retries: int = 2):
        super().__init__(pipeline, logging_dir, skip_completed=True)
        self.tasks, self.workers = tasks, workers
        self.scheduler_address, self.retries = scheduler_address, retries

    @property
    def world_size(self) -> int:
        return self.tasks

    def get_distributed_env(self, node_rank: int = -1) -> dict:
        return {
            "datatrove_node_ips": "localhost",
            "datatrove_cpus_per_task": "1",
            "datatrove_mem_per_cpu": "0",
            "datatrove_gpus_on_node": "0",
            "datatrove_executor": "DASK",
        }

    def run(self) -> PipelineStats:
        client = dask_client(self.scheduler_address, self.workers)
        ranks = self.get_incomplete_ranks()
        name = os.path.basename(self.logging_dir.path.rstrip("/"))
        futures = {
            rank: client.submit(_run_rank, self, rank, key=f"{name}-{rank}-{time.time_ns()}", retries=self.retries)
            for rank in ranks
        }
        results, failed = [], {}
        for rank, future in futures.items():
            try:  # blocks until the task is final; a task lost with a dead worker is recomputed elsewhere first
                results.append(future.result())
            except Exception as exc:
                failed[rank] = exc
        if failed:
            logs = self.logging_dir.resolve_paths("logs")
            detail = "; ".join(f"task {r}: {type(e).__name__}: {e}" for r, e in sorted(failed.items()))
            raise RuntimeError(f"{len(failed)} task(s) failed after {self.retries} retries ({detail}); logs: {logs}")
        stats = sum(results, start=PipelineStats())
        with self.logging_dir.open("stats.json", "wt") as f:
            stats.save_to_disk(f)
        return stats


class WaitingSlurmExecutor:
    """datatrove's Slurm executor, submitted and then waited for (the driver polls completion markers)."""

    def __init__(self, inner, poll_seconds: float = 30.0):
        self.inner, self.poll_seconds = inner, poll_seconds

    def run(self) -> None:
        self.inner.run()  # submits the job array (or does nothing when every task is complete)
        job = str(self.inner.job_id)
        while self.inner.get_incomplete_ranks(skip_completed=True):
            time.sleep(self.poll_seconds)
            queued = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip()
            if not queued and self.inner.get_incomplete_ranks(skip_completed=True):
                logs = self.inner.logging_dir.resolve_paths("slurm_logs")
                raise RuntimeError(f"slurm job {job} ended with incomplete tasks; see {logs} and the task logs")


def _slurm(steps: list, tasks: int, logging_dir: str, cfg: ExecutorConfig):
    from datatrove.executor.slurm import SlurmPipelineExecutor

    s = cfg.slurm
    return SlurmPipelineExecutor(
        steps,
        tasks=tasks,
        time=s.time,
        partition=s.partition,
        cpus_per_task=s.cpus_per_task,
        mem_per_cpu_gb=s.mem_per_cpu_gb,
        workers=cfg.workers,
        job_name=f"reasonpipe-{os.path.basename(logging_dir)}",
        qos=s.qos,
        env_command=s.env_command,
        sbatch_args=dict(s.sbatch_args),
        logging_dir=logging_dir,
    )


def dask_workers(cfg: ExecutorConfig, tasks: int) -> int:
    """Worker processes of a dask LocalCluster: `workers`, else one per task up to the CPU count."""
    return cfg.workers if cfg.workers > 0 else min(tasks, os.cpu_count() or 1)


def make_executor(steps: list, tasks: int, logging_dir: str, cfg: ExecutorConfig):
    if cfg.kind == "dask":
        workers = dask_workers(cfg, tasks)
        return DaskPipelineExecutor(steps, tasks, workers, logging_dir, cfg.scheduler_address, cfg.retries)
    if cfg.kind == "slurm":
        return WaitingSlurmExecutor(_slurm(steps, tasks, logging_dir, cfg))
    if cfg.kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        if cfg.ray.address:
            import ray

            ray.init(address=cfg.ray.address, ignore_reinit_error=True)
        return RayPipelineExecutor(
            steps, tasks=tasks, workers=cfg.workers, logging_dir=logging_dir, cpus_per_task=cfg.ray.cpus_per_task
        )
    raise ValueError(f"unknown executor kind {cfg.kind!r}")


def sbatch_scripts(plan) -> list[tuple[str, str]]:
    """The sbatch script each run would submit (for `reasonpipe plan`); runs built lazily are listed by name only."""
    cfg = plan.loaded.manifest.executor
    scripts = []
    for run in plan.runs:
        if callable(run.steps):
            scripts.append((run.name, "# built when the run starts (it depends on the tokenised corpus)"))
            continue
        ex = _slurm(run.steps, run.tasks, run.logging_dir, cfg)
        ex.slurm_logs_folder = os.path.join(run.logging_dir, "slurm_logs")
        pik = os.path.join(run.logging_dir, "executor.pik")
        scripts.append(
            (
                run.name,
                ex.get_launch_file_contents(
                    ex.get_sbatch_args(run.tasks), f"srun -l -n 1 launch_pickled_pipeline {pik}"
                ),
            )
        )
    return scripts
