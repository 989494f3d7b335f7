"""Task logs: a local run's tasks log to their files only, failures keep their traceback there, and the driver's
console shows its own warnings again once the run is over."""

from __future__ import annotations

from pathlib import Path

import pytest
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger

from reasonpipe.pipeline.executors import run_to_end
from reasonpipe.pipeline.manifest import ExecutorConfig
from reasonpipe.pipeline.tasklogs import quiet_logs


class Chatty(PipelineStep):
    name = "chatty"
    type = "test"

    def __init__(self, fail_rank: int | None = None):
        super().__init__()
        self.fail_rank = fail_rank

    def run(self, data, rank: int = 0, world_size: int = 1):
        logger.info(f"info from task {rank}")
        logger.warning(f"warning from task {rank}")
        if rank == self.fail_rank:
            raise ValueError(f"boom in task {rank}")
        return
        yield


@pytest.mark.parametrize("workers", [1, 2])
def test_tasks_log_to_their_files_and_not_to_the_console(tmp_path: Path, capfd, workers: int):
    quiet_logs()
    cfg = ExecutorConfig(kind="local", tasks=3, workers=workers)
    run_to_end([Chatty()], 3, str(tmp_path / "ok"), cfg)
    for rank in range(3):  # every task's file has its own lines, and only those
        log = (tmp_path / "ok" / "logs" / f"task_{rank:05d}.log").read_text()
        assert f"info from task {rank}" in log and f"warning from task {rank}" in log
        assert all(f"from task {other}" not in log for other in range(3) if other != rank)

    with pytest.raises(ValueError, match="boom in task 1"):
        run_to_end([Chatty(fail_rank=1)], 3, str(tmp_path / "failed"), cfg)
    log = (tmp_path / "failed" / "logs" / "task_00001.log").read_text()
    assert "Traceback" in log and "ValueError: boom in task 1" in log

    err = capfd.readouterr().err
    assert "from task" not in err and "boom" not in err  # the tasks' lines went to their files only
    logger.warning("the driver's own warning")
    logger.info("the driver's own info")
    err = capfd.readouterr().err
    assert "the driver's own warning" in err and "own info" not in err
