"""Run one registered stage through a real datatrove chain, without the manifest compiler (a test helper).

`run_stage("minhash", {...}, docs, tasks=2, tmp_path=tmp_path)` writes `docs` into `tasks` input files (contiguous
slices, order kept), builds the stage with a `LocalChain` (the `Chain` protocol of filters/stage.py on datatrove's
`LocalPipelineExecutor`), runs every run in order and returns `(kept_docs, stats)`: the documents that left the stage
in (rank, position) order and the stage's datatrove stats as one flat `{name: total}` dict (for keys reported by
several of its steps, the later step wins, so `total`/`forwarded`/`dropped`/`dropped_<reason>` are the final filter's).
Rejected documents are in `tmp_path/exclusions/*.jsonl.gz` (see `read_exclusions`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from reasonpipe.filters.stage import BuildContext
from reasonpipe.pipeline.registry import stage_class

_FILE = "${rank}.jsonl.gz"


class RankReader(JsonlReader):
    """Reads exactly `{rank:05d}{suffix}` of a folder (missing = no documents), after any upstream documents."""

    name = "📖 rank reader"

    def __init__(self, folder: str, suffix: str = ".jsonl.gz"):
        super().__init__(folder)
        self.suffix = suffix

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        path = f"{rank:05d}{self.suffix}"
        if self.data_folder.exists(path):
            yield from self.read_files_shard([path])


class LocalChain:
    """The `Chain` protocol on LocalPipelineExecutor: runs are collected, then executed in order by `execute`.

    Materialized folders hold `${rank}.jsonl.gz` (`compressed=False`: `${rank}.jsonl`, for benchmarks).
    """

    def __init__(self, root: Path, tasks: int, input_folder: str, compressed: bool = True):
        self.root, self.tasks = root, tasks
        self.suffix = ".jsonl.gz" if compressed else ".jsonl"
        self.runs: list[tuple[str, list, int, set[int]]] = []  # name, steps, tasks, positions of stage steps
        self._current: list = [self.reader(input_folder)]
        self._stage_positions: set[int] = set()

    def add(self, *steps) -> None:
        assert self._current is not None, "add() after materialize() needs continue_from() first"
        for step in steps:
            self._stage_positions.add(len(self._current))
            self._current.append(step)

    def reader(self, folder: str):
        return RankReader(folder, self.suffix)

    def writer(self, folder: str):
        compression = "gzip" if self.suffix.endswith(".gz") else None
        return JsonlWriter(folder, output_filename="${rank}" + self.suffix, compression=compression)

    def materialize(self) -> str:
        folder = str(self.root / f"materialized-{len(self.runs):02d}")
        self._close(self.writer(folder))
        return folder

    def pending_removals(self) -> tuple:
        return ()

    def add_run(self, name: str, steps: list, tasks: int) -> None:
        self.runs.append((name, list(steps), tasks, set(range(len(steps)))))

    def continue_from(self, folder: str, *steps) -> None:
        self._current, self._stage_positions = [self.reader(folder)], set()
        self.add(*steps)

    def _close(self, writer) -> None:
        self._current.append(writer)
        self.runs.append((f"stream-{len(self.runs):02d}", self._current, self.tasks, self._stage_positions))
        self._current, self._stage_positions = None, set()

    def execute(self, output_folder: str) -> dict[str, float]:
        """Close the open streaming run with a writer to `output_folder`, run everything, return merged stage stats."""
        if self._current is not None:
            self._close(self.writer(output_folder))
        stats: dict[str, float] = {}
        for name, steps, tasks, positions in self.runs:
            executor = LocalPipelineExecutor(steps, tasks=tasks, workers=1, logging_dir=str(self.root / "logs" / name))
            result = executor.run()
            for position, step_stats in enumerate(result.stats):
                if position in positions:
                    stats.update({key: metric.total for key, metric in step_stats.stats.items()})
        return stats


def read_docs(folder: str | Path, tasks: int, suffix: str = ".jsonl.gz") -> list[Document]:
    """Documents of `{rank}{suffix}` files, rank by rank."""
    docs: list[Document] = []
    for rank in range(tasks):
        docs.extend(RankReader(str(folder), suffix).run(None, rank, tasks))
    return docs


def read_exclusions(tmp_path: Path) -> list[Document]:
    folder = tmp_path / "exclusions"
    ranks = sorted(int(f.split(".")[0]) for f in os.listdir(folder)) if folder.exists() else []
    return read_docs(folder, max(ranks, default=-1) + 1)


def run_stage(
    stage_name: str,
    options: dict,
    docs: list[Document],
    tasks: int = 2,
    domains: tuple[str, ...] | list[str] | None = None,
    tmp_path: Path | None = None,
    seed: int = 0,
    work_dir: str | None = None,
) -> tuple[list[Document], dict[str, float]]:
    """Run stage `stage_name` with `options` on `docs` split over `tasks` tasks; see the module docstring.

    `work_dir`: the stage's work folder (any fsspec URL, e.g. `memory://...`); default `tmp_path/work`."""
    tmp_path = Path(tmp_path or tempfile.mkdtemp(prefix="stagekit-"))
    stage = stage_class(stage_name)()
    opts = stage.Options.model_validate(options, context={"base_dir": str(tmp_path)})
    input_folder = tmp_path / "input"
    with JsonlWriter(str(input_folder), output_filename=_FILE) as writer:
        for i, doc in enumerate(docs):
            writer.write(doc, rank=i * tasks // max(len(docs), 1))
    ctx = BuildContext(
        label=f"00-{stage_name}",
        work_dir=work_dir or str(tmp_path / "work"),
        exclusions_dir=str(tmp_path / "exclusions"),
        tasks=tasks,
        seed=seed,
        domains=tuple(domains) if domains is not None else None,
    )
    chain = LocalChain(tmp_path, tasks, str(input_folder))
    stage.build(opts, ctx, chain)
    stats = chain.execute(str(tmp_path / "output"))
    return read_docs(tmp_path / "output", tasks), stats
