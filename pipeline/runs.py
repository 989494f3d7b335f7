"""The DAG a manifest compiles to: datatrove runs (`RunSpec`), the `Plan` holding them, and the `Chain` that stages
append their steps and runs to (the `filters.stage.Chain` protocol)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from reasonpipe.pipeline.docio import DocReader, DocWriter
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

    def build(self) -> list:
        if callable(self.steps):
            self.steps = self.steps()
        for step in self.steps:  # progress files live in the run's logging folder
            if isinstance(step, Progress):
                step.folder = os.path.join(self.logging_dir, "progress")
        return self.steps


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
        self._materialized = 0

    def _logdir(self, name: str) -> str:
        return os.path.join(self.prep_dir, "runs", f"{len(self.runs):02d}-{name}")

    def add(self, *steps) -> None:
        for step in steps:
            if self.label is not None:
                self.current_labels[len(self.current)] = self.label
            self.current.append(step)

    def close(self, name: str, *tail) -> None:
        """End the current streaming run (with `tail` steps appended unlabelled)."""
        steps, labels = self.current + list(tail), self.current_labels
        self.runs.append(RunSpec(name, "prep", self.tasks, self._logdir(name), steps, labels))
        self.current, self.current_labels = [], {}

    def materialize(self) -> str:
        folder = os.path.join(self.prep_dir, "docs", f"{self._materialized:02d}-{self.label}")
        self._materialized += 1
        self.close(f"stream-{self.label}", DocWriter(folder))
        return folder

    def reader(self, folder: str) -> DocReader:
        return DocReader(folder)

    def add_run(self, name: str, steps: list, tasks: int) -> None:
        labels = {i: self.label for i in range(len(steps))} if self.label else {}
        self.runs.append(RunSpec(name, "prep", tasks, self._logdir(name), steps, labels))

    def continue_from(self, folder: str, *steps) -> None:
        saved, self.label = self.label, None
        self.add(DocReader(folder), Progress("continue"))
        self.label = saved
        self.add(*steps)
