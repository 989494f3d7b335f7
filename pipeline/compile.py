"""Manifest -> a DAG of datatrove runs.

Phase `prep` (keyed by a hash of everything that shapes the tokenised corpus: inputs, stages, tokenizer, seed, task
count, --limit): read + adapt + normalise + the manifest's stages, then (optionally) train the tokenizer, then tokenise
segment-wise into an Arrow cache. Phase `pack` (keyed by that hash plus trim/pack/mixture/output): mixture sampling,
AP trimming, packing and shard writing. Changing only trim/pack/mixture re-runs only `pack`: the prep runs' completion
markers are already there. Runs execute in order; each depends on every run before it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filters.stage import BuildContext
from pipeline.docio import DocReader, DocWriter
from pipeline.manifest import LoadedManifest, infer_format, is_url
from pipeline.readers import InputReader, InputSource, iter_records
from pipeline.registry import stage_class
from pipeline.steps import Adapt, Normalize, Progress

TOOL_VERSION = "0.1.0"


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
    prep_dir: str
    pack_dir: str
    prep_hash: str
    pack_hash: str
    runs: list[RunSpec]
    sources: list[InputSource]
    labels: list[tuple[str, str]]  # (label, stage name) in pipeline order, for accounting


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprints(loaded: LoadedManifest, limit: int | None) -> tuple[str, str]:
    """(prep hash, pack hash): what each phase's outputs depend on, executors and worker counts excluded."""
    raw = loaded.raw
    m = loaded.manifest
    prep = {k: raw.get(k) for k in ("inputs", "stages", "tokenizer", "seed")}
    prep |= {"tasks": m.executor.tasks, "limit": limit, "version": TOOL_VERSION, "base": str(loaded.base_dir)}
    pack = {"prep": _hash(prep), "trim": m.trim.model_dump(), "pack": m.pack.model_dump(), "context": m.context}
    pack |= {"mixture": m.mixture.model_dump() if m.mixture else None, "output": m.output.model_dump()}
    return _hash(prep), _hash(pack)


def resolve_sources(loaded: LoadedManifest) -> list[InputSource]:
    """List every input's files (sorted) and fix its format and schema (`auto` looks at the first records)."""
    from pipeline.adapters import detect_schema

    sources = []
    for inp in loaded.manifest.inputs:
        target = loaded.resolve(inp.path)
        fmt = inp.format or infer_format(target)
        if is_url(target):
            import fsspec

            fs, _, paths = fsspec.get_fs_token_paths(target)
            files = sorted(fs.unstrip_protocol(p) for p in (fs.find(paths[0]) if fs.isdir(paths[0]) else paths))
            root = target if fs.isdir(paths[0]) else target.rsplit("/", 1)[0]
        elif fmt == "hf_disk" or (fmt is None and Path(target, "dataset_info.json").exists()):
            fmt, files, root = "hf_disk", [target], str(Path(target).parent)
        elif Path(target).is_dir():
            root = target
            files = sorted(str(p) for p in Path(target).rglob("*") if p.is_file() and not p.name.startswith("."))
            files = [f for f in files if infer_format(f) == fmt or (fmt is None and infer_format(f))]
            fmt = fmt or (infer_format(files[0]) if files else "jsonl")
        else:
            files = sorted(glob.glob(target)) or [target]
            root = os.path.commonpath([os.path.dirname(f) for f in files])
        source = InputSource(
            inp.name, fmt, tuple(files), root, inp.schema_, inp.domain, inp.fields, inp.max_record_bytes
        )
        if inp.schema_ == "auto":
            head = [r for r, _ in zip(iter_records(source, files[0]), range(20))] if files else []
            source = InputSource(**{**source.__dict__, "schema": detect_schema(head, inp.fields)})
        sources.append(source)
    return sources


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


def compile_plan(loaded: LoadedManifest, limit: int | None = None) -> Plan:
    """Every datatrove run of the manifest, in execution order."""
    m = loaded.manifest
    output_dir = loaded.resolve(m.output.path)
    prep_hash, pack_hash = fingerprints(loaded, limit)
    work = loaded.resolve(m.output.work_dir) if m.output.work_dir else os.path.join(output_dir, ".work")
    prep_dir = os.path.join(work, f"prep-{prep_hash}")
    pack_dir = os.path.join(work, f"pack-{pack_hash}")
    excl = os.path.join(prep_dir, "exclusions")  # linked into OUTPUT/exclusions when the output is assembled
    sources = resolve_sources(loaded)
    chain = Chain(prep_dir, m.executor.tasks)
    labels = [("read", "read"), ("adapt", "adapt"), ("normalize", "normalize")]

    def ctx(label: str, domains=None) -> BuildContext:
        work = os.path.join(prep_dir, "stages", label)
        return BuildContext(label, work, os.path.join(excl, label), m.executor.tasks, m.seed, domains)

    from pipeline.executors import exclusion_writer

    chain.label = "read"
    chain.add(InputReader(sources, limit, exclusion_writer(os.path.join(excl, "read"))))
    chain.label = None
    chain.add(Progress("ingest"))
    chain.label = "adapt"
    schemas = {s.name: (s.schema, s.fields) for s in sources}
    chain.add(Adapt(schemas, exclusion_writer(os.path.join(excl, "adapt"))))
    chain.label = "normalize"
    chain.add(Normalize(exclusion_writer(os.path.join(excl, "normalize"))))
    for spec in loaded.stages:
        chain.label = spec.label
        stage_class(spec.name)().build(spec.options, ctx(spec.label, spec.domains), chain)
        labels.append((spec.label, spec.name))
    chain.label = None
    canonical = os.path.join(prep_dir, "canonical")
    chain.close("canonical", DocWriter(canonical))

    from pipeline import tail

    tail.add_prep_runs(chain, loaded, prep_dir, canonical)
    plan = Plan(loaded, output_dir, prep_dir, pack_dir, prep_hash, pack_hash, chain.runs, sources, labels)
    plan.runs += tail.pack_runs(plan)
    plan.labels += [("mixture", "mixture"), ("trim", "trim")]
    return plan
