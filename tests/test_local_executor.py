"""The local executor (`ForkPoolExecutor`): every task runs once, on fresh steps; a re-run redoes exactly the tasks
without a completion marker; the run's stats.json sums the tasks it ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datatrove.pipeline.base import PipelineStep

from reasonpipe.pipeline.executors import ForkPoolExecutor, make_executor, run_to_end
from reasonpipe.pipeline.manifest import ExecutorConfig


class Counting(PipelineStep):
    """Records each task it runs in `out/<rank>.<n>` (n: how many tasks this step object ran before)."""

    name = "counting"
    type = "test"

    def __init__(self, out: str):
        super().__init__()
        self.out, self.ran = out, 0

    def run(self, data, rank: int = 0, world_size: int = 1):
        (Path(self.out) / f"{rank}.{self.ran}").touch()
        self.ran += 1
        self.stat_update("tasks", value=1)
        self.stat_update("ranks", value=rank)
        return
        yield


def ran(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def run_stats(logs: Path) -> dict:
    (step,) = json.loads((logs / "stats.json").read_text())
    return step["stats"]


@pytest.mark.parametrize("workers", [1, 2])
def test_every_task_once_on_fresh_steps_and_a_rerun_redoes_only_the_unfinished(tmp_path: Path, workers: int):
    out, logs = tmp_path / "out", tmp_path / "logs"
    out.mkdir()
    cfg = ExecutorConfig(kind="local", tasks=4, workers=workers)
    assert isinstance(make_executor([Counting(str(out))], 4, str(logs), cfg), ForkPoolExecutor)

    run_to_end([Counting(str(out))], 4, str(logs), cfg)
    assert ran(out) == ["0.0", "1.0", "2.0", "3.0"]  # each task once, each on a step that had run nothing
    assert run_stats(logs)["tasks"] == 4 and run_stats(logs)["ranks"]["total"] == 0 + 1 + 2 + 3

    for rank in (1, 3):  # as if those tasks had been killed
        (logs / "completions" / f"{rank:05d}").unlink()
    for f in out.iterdir():
        f.unlink()
    run_to_end([Counting(str(out))], 4, str(logs), cfg)
    assert ran(out) == ["1.0", "3.0"]
    assert run_stats(logs)["tasks"] == 2 and run_stats(logs)["ranks"]["total"] == 1 + 3

    for f in out.iterdir():
        f.unlink()
    run_to_end([Counting(str(out))], 4, str(logs), cfg)  # all complete: nothing runs
    assert ran(out) == []
