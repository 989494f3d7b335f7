"""The DAG a manifest compiles to: datatrove runs (`RunSpec`), the `Plan` holding them, and the `Chain` that stages
append their steps and runs to (the `filters.stage.Chain` protocol)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from reasonpipe.docio import DocReader, DocWriter
from reasonpipe.filters.removals import RemovalFilter
from reasonpipe.pipeline.manifest import LoadedManifest
from reasonpipe.pipeline.readers import InputSource
from reasonpipe.pipeline.steps import Progress
from reasonpipe.pipeline.workkeys import WorkKey, changes, previous_key


@dataclass
class RunSpec:
    """One datatrove run: its steps (or a builder called right before it runs), tasks and logging folder."""

    name: str
    phase: str  # "prep" | "pack"
    tasks: int
    logging_dir: str
    steps: list | Callable[[], list] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)  # step index -> accounting label
    note: str = ""
    # a builder's inputs: the runs whose results it reads (their tokenizer, their stats); None = every earlier run
    needs: tuple[str, ...] | None = None
    # intermediate folders (paths or URLs) that no later run reads: deleted once this run is complete
    frees: list[str] = field(default_factory=list)

    def build(self) -> list:
        if callable(self.steps):
            self.steps = self.steps()
        for step in self.steps:  # progress files live in the run's logging folder
            if isinstance(step, Progress):
                step.folder = os.path.join(self.logging_dir, "progress")
        return self.steps

    def release(self) -> None:
        """Delete the intermediate folders this run is the last to read (call once it is complete: a resumed run
        still finds them until then)."""
        from fsspec.core import url_to_fs

        for path in self.frees:
            fs, local = url_to_fs(path)
            if fs.exists(local):
                fs.rm(local, recursive=True)


@dataclass
class Plan:
    loaded: LoadedManifest
    output_dir: str
    work_dir: str  # holds prep_dir and pack_dir
    prep_dir: str
    pack_dir: str
    prep_key: WorkKey
    pack_key: WorkKey
    runs: list[RunSpec]
    sources: list[InputSource]
    labels: list[tuple[str, str]]  # (label, stage name) in pipeline order, for accounting

    @property
    def prep_hash(self) -> str:
        return self.prep_key.digest

    @property
    def pack_hash(self) -> str:
        return self.pack_key.digest


def run_complete(run: RunSpec) -> bool:
    folder = os.path.join(run.logging_dir, "completions")
    return os.path.isdir(folder) and len(os.listdir(folder)) >= run.tasks


def built_from(output_dir: str) -> str | None:
    """The pack digest the output's index.json was assembled from (None: no readable index)."""
    try:
        with open(os.path.join(output_dir, "index.json"), encoding="utf-8") as f:
            return json.load(f).get("run_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def phase_status(plan: Plan) -> list[str]:
    """One line per phase: complete and reused, resuming, or redone and why (compared with the key the output was
    built from, else the newest earlier key in the work folder)."""
    old_pack = previous_key(plan.work_dir, "pack", built_from(plan.output_dir))
    old_prep = previous_key(plan.work_dir, "prep", old_pack.parts.get("prep") if old_pack else None)
    lines = []
    for phase, key, old, folder in (
        ("prep", plan.prep_key, old_prep, plan.prep_dir),
        ("pack", plan.pack_key, old_pack, plan.pack_dir),
    ):
        runs = [r for r in plan.runs if r.phase == phase]
        done = sum(map(run_complete, runs))
        if done == len(runs):
            state = "complete, reused"
        elif WorkKey.load(folder) is not None:
            state = f"{done}/{len(runs)} runs complete, resumes"
        elif old is None:
            state = "new (no earlier run in the work folder)"
        else:
            state = "redo: " + ("; ".join(changes(old, key)) or "its key changed")
        lines.append(f"{phase} {key.digest}: {state}")
    return lines


class Chain:
    """Builds the runs; implements the `filters.stage.Chain` protocol that stages use."""

    def __init__(self, prep_dir: str, tasks: int):
        self.prep_dir, self.tasks = prep_dir, tasks
        self.runs: list[RunSpec] = []
        self.current: list = []
        self.current_labels: dict[int, str] = {}
        self.label: str | None = None
        self.current_frees: list[str] = []
        self._materialized = 0
        self._writers: dict[str, RunSpec] = {}  # materialized folder -> the run that writes it
        self._pending: tuple = ()  # set by materialize(): see pending_removals()

    def _logdir(self, name: str) -> str:
        return os.path.join(self.prep_dir, "runs", f"{len(self.runs):02d}-{name}")

    def add(self, *steps) -> None:
        for step in steps:
            if self.label is not None:
                self.current_labels[len(self.current)] = self.label
            self.current.append(step)

    def close(self, name: str, *tail) -> None:
        """End the current streaming run (with `tail` steps appended unlabelled)."""
        steps, labels, frees = self.current + list(tail), self.current_labels, self.current_frees
        self.runs.append(RunSpec(name, "prep", self.tasks, self._logdir(name), steps, labels, frees=frees))
        self.current, self.current_labels, self.current_frees = [], {}, []

    def free_with_current(self, folder: str) -> None:
        """`folder` is read by no run after the current streaming run: delete it once that run is complete."""
        self.current_frees.append(folder)

    def materialize(self) -> str:
        """End the current streaming run by writing its documents (the protocol's contract) — unless it only reads
        documents already written, drops earlier dedup stages' removals and signs them for the next dedup stage:
        then that signer moves into the run that wrote them (before its writer) and the current run stays open, so
        consecutive dedup stages read and write the documents once (their global steps skip what the earlier stages
        remove: `pending_removals`)."""
        if self._hoistable():
            run = self._writers[self.current[0].path]
            if (label := self.current_labels.pop(len(self.current) - 1, None)) is not None:
                run.labels[len(run.steps) - 1] = label
            run.steps.insert(len(run.steps) - 1, self.current.pop())
            self._pending = tuple((step.work_dir, step.producers) for step in self.current[2:])
            return self.current[0].path
        folder = os.path.join(self.prep_dir, "docs", f"{self._materialized:02d}-{self.label}")
        self._materialized += 1
        self.close(f"stream-{self.label}", DocWriter(folder))
        self._writers[folder], self._pending = self.runs[-1], ()
        return folder

    def _hoistable(self) -> bool:
        """Whether the current run is [a reader of a materialized folder, progress, removal filters that relabel
        nothing, a signer that forwards every document and numbers rows by stream position]."""
        steps = self.current
        return (
            len(steps) >= 3
            and isinstance(steps[0], DocReader)
            and steps[0].path in self._writers
            and isinstance(steps[1], Progress)
            and all(isinstance(step, RemovalFilter) and not step.relabels for step in steps[2:-1])
            and getattr(steps[-1], "hoistable", False)
        )

    def pending_removals(self) -> tuple:
        """(work folder, producers) of the earlier dedup stages whose removals the documents `materialize()` just
        returned still hold; the next stage drops those rows from its signatures (`removals.DropRemovedRows`)."""
        return self._pending

    def reader(self, folder: str) -> DocReader:
        return DocReader(folder)

    def add_run(self, name: str, steps: list, tasks: int) -> None:
        labels = {i: self.label for i in range(len(steps))} if self.label else {}
        self.runs.append(RunSpec(name, "prep", tasks, self._logdir(name), steps, labels))

    def continue_from(self, folder: str, *steps) -> None:
        if self.current and isinstance(self.current[0], DocReader) and self.current[0].path == folder:  # fused
            self.add(*steps)
            return
        saved, self.label = self.label, None
        self.add(DocReader(folder), Progress("continue"))
        self.label = saved
        self.add(*steps)
        self.free_with_current(folder)
