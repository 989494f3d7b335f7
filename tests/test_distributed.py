"""dask.distributed executor: same shards as the local executor, even when a worker process is killed mid-run."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from corpus import make_corpus, write_manifest

from reasonpipe.pipeline.distributed import dask_client, sbatch_scripts
from reasonpipe.pipeline.manifest import load_manifest
from reasonpipe.pipeline.run import run_manifest


def digests(out: Path) -> dict[str, str]:
    files = sorted(out.glob("shards*/*.arrow")) + sorted(out.glob("samples/*.parquet"))
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def manifest(root: Path, info: dict, name: str, out: Path, kind: str) -> Path:
    path = write_manifest(root, info, output={"path": str(out)}, executor={"kind": kind, "tasks": 2, "workers": 2})
    return path.rename(path.with_name(f"{name}.yaml"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, make_corpus(root)


def kill_one_worker_once_tasks_run(out: Path, killed: list[int]) -> None:
    """Wait until some task reports progress, then SIGKILL one dask worker process (its nanny restarts it)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if list(out.glob(".work/prep-*/runs/*/progress/*.json")):
            client = dask_client(None, 2)
            pid = sorted(client.run(os.getpid).values())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.02)


def test_dask_matches_local_even_after_a_worker_dies(corpus, tmp_path):
    root, info = corpus
    local_out, dask_out = tmp_path / "local", tmp_path / "dask"
    run_manifest(load_manifest(manifest(root, info, "local", local_out, "local")))
    killed: list[int] = []
    killer = threading.Thread(target=kill_one_worker_once_tasks_run, args=(dask_out, killed))
    killer.start()
    run_manifest(load_manifest(manifest(root, info, "dask", dask_out, "dask")))
    killer.join()
    assert killed, "no dask worker was killed"
    assert digests(dask_out) == digests(local_out) and digests(local_out)


def test_slurm_plan_prints_sbatch_scripts(corpus, tmp_path):
    root, info = corpus
    path = write_manifest(
        root,
        info,
        output={"path": str(tmp_path / "out")},
        executor={"kind": "slurm", "tasks": 4, "slurm": {"partition": "mi300", "time": "02:00:00", "qos": "high"}},
    )
    from reasonpipe.pipeline.compile import compile_plan

    scripts = dict(sbatch_scripts(compile_plan(load_manifest(path))))
    first = next(iter(scripts.values()))
    assert "#SBATCH --partition=mi300" in first and "#SBATCH --array=0-3" in first and "#SBATCH --qos=high" in first
    assert "launch_pickled_pipeline" in first
    assert "a continuation job submits it" in scripts["pack"]
