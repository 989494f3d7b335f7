"""Manifest -> a DAG of datatrove runs.

Phase `prep`: read + adapt + normalise + the manifest's stages, then (optionally) train the tokenizer, then tokenise
segment-wise into an Arrow cache. Phase `pack`: mixture sampling, AP trimming, packing and shard writing. Each phase's
folder is named by its work key (pipeline/workkeys.py: the content of every file it reads, its settings and the
version of its code), so an edit re-runs exactly the phases it affects; changing only trim/pack/mixture re-runs only
`pack`. Runs execute in order; each depends on every run before it.
"""

from __future__ import annotations

import errno
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from reasonpipe.docio import DocWriter
from reasonpipe.filters.exclusions import exclusion_writer
from reasonpipe.filters.stage import BuildContext
from reasonpipe.pipeline import tail
from reasonpipe.pipeline.hashing import HashCache
from reasonpipe.pipeline.manifest import LoadedManifest, infer_format, is_url
from reasonpipe.pipeline.readers import InputReader, InputSource, iter_records
from reasonpipe.pipeline.registry import stage_class
from reasonpipe.pipeline.runs import Chain, Plan
from reasonpipe.pipeline.steps import Adapt, Normalize, Progress
from reasonpipe.pipeline.workkeys import pack_key, prep_key


@dataclass
class Listing:
    """An input's files (sorted), its format, the root its record ids are relative to, and what was skipped."""

    files: list[str]
    format: str | None
    root: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of entries not read


def stat_problem(path: str) -> str | None:
    """Why `path` cannot be opened ("symlink loop", "dangling symlink", ...), or None."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return "dangling symlink" if os.path.islink(path) else exc.strerror
    return None


def list_input(target: str, fmt: str | None) -> Listing:
    """The files a local input path (a file, a folder or a glob) stands for; in a folder, files of one format
    (`fmt`, else the first inferable one), hidden files excluded, other entries listed in `skipped`."""
    if fmt == "hf_disk" or (fmt is None and Path(target, "dataset_info.json").exists()):
        return Listing([target], "hf_disk", str(Path(target).parent))
    if Path(target).is_dir():
        listing = Listing([], fmt, target)
        for p in sorted(Path(target).rglob("*")):
            if any(part.startswith(".") for part in p.relative_to(target).parts):
                continue
            if problem := stat_problem(str(p)):
                listing.skipped.append((str(p), problem))
            elif p.is_file():
                found = infer_format(str(p))
                listing.format = listing.format or found
                if found == listing.format and found is not None:
                    listing.files.append(str(p))
                else:
                    listing.skipped.append((str(p), f"not {listing.format}" if found else "unknown format"))
        listing.format = listing.format or "jsonl"
        return listing
    files = sorted(glob.glob(target)) or [target]
    return Listing(files, fmt or infer_format(target), os.path.commonpath([os.path.dirname(f) for f in files]))


def resolve_sources(loaded: LoadedManifest) -> list[InputSource]:
    """List every input's files (sorted) and fix its format and schema (`auto` looks at the first records)."""
    from reasonpipe.pipeline.adapters import detect_schema

    sources = []
    for inp in loaded.manifest.inputs:
        target = loaded.resolve(inp.path)
        if is_url(target):
            import fsspec

            fs, _, paths = fsspec.get_fs_token_paths(target)
            files = sorted(fs.unstrip_protocol(p) for p in (fs.find(paths[0]) if fs.isdir(paths[0]) else paths))
            root = target if fs.isdir(paths[0]) else target.rsplit("/", 1)[0]
            listing = Listing(files, inp.format or infer_format(target), root)
        else:
            listing = list_input(target, inp.format)
        files, fmt, root = listing.files, listing.format, listing.root
        source = InputSource(
            inp.name, fmt, tuple(files), root, inp.schema_, inp.domain, inp.fields, inp.max_record_bytes
        )
        if inp.schema_ == "auto":
            head = [r for r, _ in zip(iter_records(source, files[0]), range(20))] if files else []
            source = InputSource(**{**source.__dict__, "schema": detect_schema(head, inp.fields)})
        sources.append(source)
    return sources


def work_folder(loaded: LoadedManifest) -> str:
    """Where the intermediate runs live: `output.work_dir`, else OUTPUT/.work."""
    out = loaded.manifest.output
    return loaded.resolve(out.work_dir) if out.work_dir else os.path.join(loaded.resolve(out.path), ".work")


def compile_plan(loaded: LoadedManifest, limit: int | None = None, hashes: HashCache | None = None) -> Plan:
    """Every datatrove run of the manifest, in execution order, in folders named by their work keys.

    `hashes` memoises file digests (default: the work folder's memo, read only)."""
    m = loaded.manifest
    output_dir = loaded.resolve(m.output.path)
    work = work_folder(loaded)
    sources = resolve_sources(loaded)
    prep = prep_key(loaded, sources, limit, hashes or HashCache(work))
    pack = pack_key(loaded, prep)
    prep_dir = os.path.join(work, f"prep-{prep.digest}")
    pack_dir = os.path.join(work, f"pack-{pack.digest}")
    excl = os.path.join(prep_dir, "exclusions")  # linked into OUTPUT/exclusions when the output is assembled
    chain = Chain(prep_dir, m.executor.tasks)
    labels = [("read", "read"), ("adapt", "adapt"), ("normalize", "normalize")]

    def ctx(label: str, domains=None) -> BuildContext:
        work = os.path.join(prep_dir, "stages", label)
        return BuildContext(label, work, os.path.join(excl, label), m.executor.tasks, m.seed, domains)

    reader = InputReader(
        sources,
        limit,
        exclusion_writer(os.path.join(excl, "read")),
        m.executor.tasks,
        os.path.join(prep_dir, "input-index"),
    )
    if (index := reader.index_step()) is not None:  # numbers the records of tasks that start inside a file
        chain.add_run("input-index", [index], m.executor.tasks)
    chain.label = "read"
    chain.add(reader)
    chain.label = None
    chain.add(Progress("ingest"))
    chain.label = "adapt"
    schemas = {s.name: (s.schema, s.fields) for s in sources}
    chain.add(Adapt(schemas, exclusion_writer(os.path.join(excl, "adapt"))))
    chain.label = "normalize"
    chain.add(Normalize(exclusion_writer(os.path.join(excl, "normalize"))))
    for spec in loaded.stages:
        chain.label = spec.label
        stage_ctx = ctx(spec.label, spec.domains)
        stage_class(spec.name)().build(spec.options, stage_ctx, chain)
        chain.free_with_current(stage_ctx.work_dir)  # its last reader: the streaming run that continues after it
        labels.append((spec.label, spec.name))
    chain.label = None
    canonical = os.path.join(prep_dir, "canonical")
    chain.close("canonical", DocWriter(canonical), *tail.canonical_steps(loaded, prep_dir))

    tail.add_prep_runs(chain, loaded, prep_dir, canonical)
    chain.runs[-1].frees.append(canonical)  # read by the tokenizer and tokenize runs, tokenize last
    plan = Plan(loaded, output_dir, work, prep_dir, pack_dir, prep, pack, chain.runs, sources, labels)
    plan.runs += tail.pack_runs(plan)
    plan.labels += [("mixture", "mixture"), ("trim", "trim")]
    return plan
