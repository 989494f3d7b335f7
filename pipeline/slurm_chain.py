"""Slurm without a waiting driver: the manifest's runs submitted at once as a chain of job arrays.

`reasonpipe run` with `executor.kind: slurm` submits every unfinished run as datatrove's Slurm job array, each
depending (`afterok`) on the one before, and returns. A run that is built from the results of earlier runs (its
`RunSpec.needs`: the pack phase reads the trained tokenizer and the sizes run's statistics) cannot be pickled before
they exist, so the chain ends there with a small *continuation* job: it re-runs the same `reasonpipe run` command
inside the allocation, which finds the finished runs complete, submits the rest of the chain the same way, and, when
no run is left, assembles the output (accounting check, index.json) exactly as a local run does. Nothing polls.

The chain is recorded in `OUTPUT/slurm-chain.json` (run, job id, logging folder, tasks per job). While any of its
jobs is running or waiting to run, another `reasonpipe run` of the same output is refused (the jobs of the chain
itself are allowed); a chain whose jobs are gone or can never start (a failed dependency) is stale, and a re-run
cancels what is left of it and resubmits the unfinished runs (finished tasks are kept). `reasonpipe status OUTPUT`
reads the record and `squeue` and says where the chain is; `--wait` follows it to the end.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from reasonpipe.pipeline.distributed import env_command, slurm_executor
from reasonpipe.pipeline.manifest import ExecutorConfig
from reasonpipe.pipeline.runs import Plan, RunSpec, run_complete

CHAIN_FILE = "slurm-chain.json"
CONTINUE = "continue"  # the name of a continuation job in the record


@dataclass
class Job:
    run: str  # the datatrove run's name, or CONTINUE
    job_id: str
    logging_dir: str
    tasks: int


def chain_path(output_dir: str) -> str:
    return os.path.join(output_dir, CHAIN_FILE)


def read_chain(output_dir: str) -> list[Job]:
    try:
        with open(chain_path(output_dir), encoding="utf-8") as f:
            return [Job(**j) for j in json.load(f)["jobs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_chain(output_dir: str, jobs: list[Job], command: list[str]) -> None:
    path = chain_path(output_dir)
    tmp = f"{os.path.dirname(path)}/.{CHAIN_FILE}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"command": command, "jobs": [asdict(j) for j in jobs]}, f, indent=1)
    os.replace(tmp, path)


def queue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} of the jobs still known to squeue (array tasks folded into their job)."""
    ids = [j for j in job_ids if j and j != "-1"]
    if not ids:
        return {}
    out = subprocess.run(
        ["squeue", "-h", "-j", ",".join(ids), "-o", "%F|%T|%r"], capture_output=True, text=True, check=False
    ).stdout
    states: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        if state == "RUNNING" or job not in states:  # any running array task makes the job running
            states[job] = (state, reason)
    return states


def blocked(state: tuple[str, str]) -> bool:
    """A pending job that can never start: a job it depends on failed."""
    return state[0] == "PENDING" and "DependencyNeverSatisfied" in state[1]


def check_not_submitted(output_dir: str) -> list[str]:
    """Before a run takes the output: refuse while a submitted chain is working on it, unless this process is one
    of its jobs; cancel what is left of a stale chain. Returns notes for the console."""
    from reasonpipe.pipeline.workdir import LockBusy

    jobs = read_chain(output_dir)
    if not jobs:
        return []
    mine = os.environ.get("SLURM_JOB_ID")
    if mine and any(j.job_id == mine for j in jobs):
        return []  # a job of the chain itself, continuing it
    states = queue_states([j.job_id for j in jobs])
    live = [j for j in jobs if j.job_id in states and not blocked(states[j.job_id])]
    if live:
        ids = ", ".join(f"{j.run} {j.job_id}" for j in live)
        raise LockBusy(
            f"a submitted Slurm chain is working on {output_dir} (jobs {ids}): follow it with `reasonpipe status "
            f"{output_dir}`, or stop it with `scancel {' '.join(j.job_id for j in live)}` and run again"
        )
    stuck = list(states)  # none is live: what is left in the queue can never start
    if stuck:
        subprocess.run(["scancel", *stuck], capture_output=True, check=False)
    os.remove(chain_path(output_dir))
    if stuck or not os.path.exists(os.path.join(output_dir, "index.json")):
        return [f"an earlier Slurm chain on {output_dir} stopped before the end: its unfinished runs are resubmitted"]
    return []


def _buildable(plan: Plan, run: RunSpec) -> bool:
    """Whether every run `run`'s builder reads from is complete (its `needs`; by default every run before it)."""
    earlier = plan.runs[: plan.runs.index(run)]
    return all(run_complete(r) for r in earlier if run.needs is None or r.name in run.needs)


def all_complete(plan: Plan) -> bool:
    return all(run_complete(r) for r in plan.runs)


def _continuation(plan: Plan, cfg: ExecutorConfig, command: list[str], after: str | None) -> str:
    """Submit a 1-CPU job that runs `command` (the same `reasonpipe run`) once job `after` succeeded."""
    s = cfg.slurm
    logs = Path(plan.work_dir, "slurm-continue")
    logs.mkdir(parents=True, exist_ok=True)
    args = {"job-name": f"reasonpipe-{plan.loaded.manifest.name}-continue", "cpus-per-task": 1,
            "mem-per-cpu": f"{s.mem_per_cpu_gb}G", "time": s.time, "output": str(logs / "%j.out"),
            "partition": s.partition, "qos": s.qos, **dict(s.sbatch_args)}  # fmt: skip
    if after:
        args["dependency"] = f"afterok:{after}"
    lines = ["#!/bin/bash", *(f"#SBATCH --{k}={v}" for k, v in args.items() if v is not None)]
    lines += [env_command(cfg), "set -e", shlex.join(command)]
    proc = subprocess.run(["sbatch", "--parsable"], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"sbatch refused the continuation job: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def submit(plan: Plan, command: list[str]) -> list[Job]:
    """Submit the unfinished runs of `plan` as a chain (see the module docstring); returns the jobs, recorded."""
    from reasonpipe.pipeline.tasklogs import quiet_logs

    quiet_logs()  # datatrove logs every submission at INFO
    cfg = plan.loaded.manifest.executor
    jobs = read_chain(plan.output_dir)  # a continuation job adds to its chain's record; a new chain starts one
    if os.environ.get("SLURM_JOB_ID") not in {j.job_id for j in jobs}:
        jobs = []
    after: str | None = None
    for run in plan.runs:
        if run_complete(run):
            continue
        if callable(run.steps) and not _buildable(plan, run):  # built from unfinished runs: continue after them
            break
        ex = slurm_executor(run.build(), run.tasks, run.logging_dir, cfg)
        ex.depends_job_id = after
        ex.launch_job()
        if str(ex.job_id) != "-1":
            after = str(ex.job_id)
            jobs.append(Job(run.name, after, run.logging_dir, run.tasks))
    # the continuation submits the rest of the chain or, when no run is left, assembles the output
    jobs.append(Job(CONTINUE, _continuation(plan, cfg, command, after), str(Path(plan.work_dir, "slurm-continue")), 1))
    write_chain(plan.output_dir, jobs, command)
    return jobs


# ------------------------------------------------------------------------------------------------- status
@dataclass
class Status:
    rows: list[tuple[str, str, str, str]]  # (run, job, state, tasks done/total)
    done: bool  # the output is assembled and no job is left
    failed: str | None  # why the chain cannot finish (once none of its jobs runs or can run)


def status(output_dir: str) -> Status:
    jobs = read_chain(output_dir)
    states = queue_states([j.job_id for j in jobs])
    rows, failed = [], None
    for j in jobs:
        done = _count(j.logging_dir) if j.run != CONTINUE else 0
        state = states.get(j.job_id, ("", ""))
        if not state[0]:
            finished = j.run == CONTINUE or done >= j.tasks
            state = ("FINISHED" if finished else "ENDED", "")
            if not finished:
                failed = failed or (
                    f"run {j.run} (job {j.job_id}) ended with {done} of {j.tasks} tasks done; task logs in "
                    f"{j.logging_dir}/logs, Slurm logs in {j.logging_dir}/slurm_logs"
                )
        elif blocked(state):
            failed = failed or f"job {j.job_id} ({j.run}) can never start: a job before it failed"
        rows.append((j.run, j.job_id, state[0], "" if j.run == CONTINUE else f"{done}/{j.tasks}"))
    live = any(s[0] and not blocked(s) for s in states.values())
    assembled = os.path.exists(os.path.join(output_dir, "index.json"))
    if live:  # failed or not, the chain still works: a re-run would be refused until it stops
        failed = None
    elif not failed and jobs and not assembled:
        failed = f"the chain ended without assembling the output; see {jobs[-1].logging_dir}"
    return Status(rows, assembled and not live, failed)


def _count(logging_dir: str) -> int:
    folder = os.path.join(logging_dir, "completions")
    return len(os.listdir(folder)) if os.path.isdir(folder) else 0


def follow(output_dir: str, wait: bool, poll: float = 5.0, print_fn=print) -> int:
    """`reasonpipe status OUTPUT`: 0 assembled, 1 failed, 4 still working (without --wait)."""
    if not read_chain(output_dir):
        has_index = os.path.exists(os.path.join(output_dir, "index.json"))
        print_fn(f"{output_dir}: no submitted Slurm chain" + (" (the output is assembled)" if has_index else ""))
        return 0 if has_index else 1
    shown = None
    while True:
        st = status(output_dir)
        text = "\n".join(f"  {r:<28} job {j:<10} {s:<10} {t}" for r, j, s, t in st.rows)
        if text != shown:
            print_fn(f"{output_dir} ({time.strftime('%H:%M:%S')}):\n{text}")
            shown = text
        if st.failed:
            print_fn(f"failed: {st.failed}. Fix the cause and re-run the same `reasonpipe run`: it resumes")
            return 1
        if st.done:
            print_fn(f"done: {output_dir}/index.json is assembled")
            return 0
        if not wait:
            return 4
        time.sleep(poll)
