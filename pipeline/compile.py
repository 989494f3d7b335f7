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
from pathlib import Path

from reasonpipe import __version__
from reasonpipe.filters.exclusions import exclusion_writer
from reasonpipe.filters.stage import BuildContext
from reasonpipe.pipeline import tail
from reasonpipe.pipeline.docio import DocWriter
from reasonpipe.pipeline.manifest import LoadedManifest, infer_format, is_url
from reasonpipe.pipeline.readers import InputReader, InputSource, iter_records
from reasonpipe.pipeline.registry import stage_class
from reasonpipe.pipeline.runs import Chain, Plan
from reasonpipe.pipeline.steps import Adapt, Normalize, Progress
from reasonpipe.tokenizer.cache import FORMAT_VERSION as CACHE_FORMAT


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprints(loaded: LoadedManifest, limit: int | None) -> tuple[str, str]:
    """(prep hash, pack hash): what each phase's outputs depend on, executors and worker counts excluded."""
    raw = loaded.raw
    m = loaded.manifest
    prep = {k: raw.get(k) for k in ("inputs", "stages", "tokenizer", "seed")}
    prep |= {"tasks": m.executor.tasks, "limit": limit, "version": __version__, "base": str(loaded.base_dir)}
    prep["token_cache_format"] = CACHE_FORMAT  # a cache of another format is never reused
    pack = {"prep": _hash(prep), "trim": m.trim.model_dump(), "pack": m.pack.model_dump(), "context": m.context}
    pack |= {"mixture": m.mixture.model_dump() if m.mixture else None, "output": m.output.model_dump()}
    return _hash(prep), _hash(pack)


def resolve_sources(loaded: LoadedManifest) -> list[InputSource]:
    """List every input's files (sorted) and fix its format and schema (`auto` looks at the first records)."""
    from reasonpipe.pipeline.adapters import detect_schema

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
    chain.close("canonical", DocWriter(canonical), *tail.canonical_steps(loaded, prep_dir))

    tail.add_prep_runs(chain, loaded, prep_dir, canonical)
    plan = Plan(loaded, output_dir, prep_dir, pack_dir, prep_hash, pack_hash, chain.runs, sources, labels)
    plan.runs += tail.pack_runs(plan)
    plan.labels += [("mixture", "mixture"), ("trim", "trim")]
    return plan
