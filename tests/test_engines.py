"""Real engines: the same manifest on a real Slurm cluster (a submitted chain of jobs) and on a local Ray gives the
shards of the local executor, byte for byte.

`make test-engines` runs them (not `make test`: minutes each); `.ci/run` first starts a single-node Slurm cluster
(.ci/slurm-up.sh). Where `sbatch` or `ray` is absent these tests are skipped with the reason.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus import make_corpus, write_manifest

pytestmark = pytest.mark.engines

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "reasonpipe.pipeline.cli"]


def slurm_up() -> bool:
    if not shutil.which("sbatch"):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def digests(out: Path) -> dict[str, str]:
    files = sorted(out.glob("shards*/*.arrow")) + sorted(out.glob("samples/*.parquet"))
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("engines")
    return root, make_corpus(root, scale=0.5)


def manifest(root: Path, info: dict, name: str, out: Path, kind: str) -> Path:
    """Few runs (each a job array under Slurm): exact dedup and decontamination, a trained tokenizer, pack."""
    stages = [{"exact_dedup": {}}, {"decontaminate": {"benchmarks": [info["benchmark"]]}}]
    path = write_manifest(
        root, info, stages=stages, output={"path": str(out)}, executor={"kind": kind, "tasks": 2, "workers": 2}
    )
    return path.rename(path.with_name(f"{name}.yaml"))


@pytest.fixture(scope="module")
def local(corpus, tmp_path_factory) -> dict[str, str]:
    root, info = corpus
    out = tmp_path_factory.mktemp("local") / "out"
    proc = cli("run", str(manifest(root, info, "local", out, "local")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return digests(out)


@pytest.mark.skipif(not slurm_up(), reason="no Slurm cluster here (sbatch/sinfo); .ci/run starts one")
def test_slurm_chain_leaves_and_equals_local(corpus, local, tmp_path):
    root, info = corpus
    out = tmp_path / "out"
    path = manifest(root, info, "slurm", out, "slurm")
    start = time.monotonic()
    proc = cli("run", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted to Slurm" in proc.stdout and time.monotonic() - start < 120  # the driver leaves
    chain = json.loads((out / "slurm-chain.json").read_text())
    assert chain["jobs"][-1]["run"] == "continue" and not (out / "index.json").exists()

    # while the chain works on the output, another run of it is refused; status says it is still working
    busy = cli("run", str(path))
    assert busy.returncode == 3 and "submitted Slurm chain" in busy.stderr, busy.stdout + busy.stderr
    assert cli("status", str(out)).returncode in (0, 4)

    # a cancelled job (preemption, scancel) stops the chain: status says so, and a re-run resumes it
    subprocess.run(["scancel", chain["jobs"][-2]["job_id"]], check=True)  # the last run before the continuation
    failed = cli("status", str(out), "--wait", "--poll", "2", timeout=600)
    assert failed.returncode == 1 and "failed" in failed.stdout, failed.stdout
    again = cli("run", str(path))
    assert again.returncode == 0 and "resubmitted" in again.stdout, again.stdout + again.stderr
    done = cli("status", str(out), "--wait", "--poll", "2", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert digests(out) == local and local
    assert cli("inspect", str(out), "--validate").returncode == 0
    assert "nothing to do" in cli("run", str(path)).stdout
    # no job of this output is left in the queue (e.g. one that waits forever on the cancelled job)
    left = subprocess.run(["squeue", "-h", "-O", "ArrayJobID:20,StdOut:1000"], capture_output=True, text=True).stdout
    assert str(out) not in left, left


@pytest.mark.skipif(not slurm_up(), reason="no Slurm cluster here (sbatch/sinfo); .ci/run starts one")
def test_slurm_wait_equals_local(corpus, local, tmp_path):
    root, info = corpus
    out = tmp_path / "out"
    proc = cli("run", str(manifest(root, info, "slurm-wait", out, "slurm")), "--wait", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert digests(out) == local and not (out / "slurm-chain.json").exists()


def test_ray_equals_local(corpus, local, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (`make test-engines` installs it)")
    root, info = corpus
    out = tmp_path / "out"
    proc = cli("run", str(manifest(root, info, "ray", out, "ray")), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert digests(out) == local and local
