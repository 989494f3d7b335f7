"""Run a benchmark side in a child process against this tree or an old commit (for interleaved old/new ratios).

`old_pythonpath(ref)` extracts the commit with `git archive` into a temporary `reasonpipe/` folder; a child started
with that folder first on PYTHONPATH imports the old code. `run_child(script, args, pythonpath)` runs
`script --side-out ...` and returns the JSON object the child printed last.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def old_pythonpath(ref: str) -> str:
    folder = Path(tempfile.mkdtemp(prefix="reasonpipe-old-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder / "reasonpipe", filter="data")
    return str(folder)


def run_child(script: str, args: list[str], pythonpath: str | None) -> dict:
    env = os.environ | ({"PYTHONPATH": pythonpath} if pythonpath else {})
    proc = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
