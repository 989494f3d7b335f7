"""The runs after the canonical documents: train the tokenizer (optional), tokenise to the Arrow cache, then
mixture-sample, AP-trim, pack and write shards; finally assemble the output folder and its index.json."""

from __future__ import annotations

import os

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from reasonpipe.pipeline.docio import DocReader
from reasonpipe.pipeline.manifest import LoadedManifest
from reasonpipe.pipeline.runs import Plan, RunSpec
from reasonpipe.pipeline.steps import Progress


class TrainTokenizer(PipelineStep):
    """Trains the run's byte-level BPE on a hash-chosen sample of the canonical documents (a 1-task run)."""

    name = "🔤 train tokenizer"
    type = "🔢 - TOKENIZER"

    def __init__(self, cfg, template: dict[str, str] | None, seed: int, path: str):
        super().__init__()
        self.cfg, self.template, self.seed, self.path = cfg, template, seed, path

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from reasonpipe.tokenizer.steps import train_from_documents
        from reasonpipe.tokenizer.vocab import save_tokenizer

        with self.track_time("tokenizer"):
            save_tokenizer(train_from_documents(data, self.cfg, self.template, self.seed), self.path)
        return
        yield


def _tokens_dir(prep_dir: str) -> str:
    return os.path.join(prep_dir, "tokens")


def tokenizer_file(loaded: LoadedManifest, prep_dir: str) -> str:
    """The tokenizer.json a run encodes with: the one it trains (in its prep folder) or the manifest's own."""
    tok = loaded.manifest.tokenizer
    path = os.path.join(prep_dir, "tokenizer.json") if tok.train else loaded.resolve(str(tok.path))
    return os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path


def add_prep_runs(chain, loaded: LoadedManifest, prep_dir: str, canonical: str) -> None:
    """Append the tokenizer-training run (when the manifest trains one) and the tokenise-to-cache run."""
    from reasonpipe.tokenizer.steps import TokenizeToCache

    m = loaded.manifest
    tok = m.tokenizer
    path = tokenizer_file(loaded, prep_dir)
    if tok.train:
        chain.add_run(
            "tokenizer", [DocReader(canonical, True), TrainTokenizer(tok.train, tok.template, m.seed, path)], 1
        )
    steps = [
        DocReader(canonical),
        Progress("tokenize"),
        TokenizeToCache(path, _tokens_dir(prep_dir), tok.template),
    ]
    chain.add_run("tokenize", steps, m.executor.tasks)


def trimmed_tokens_by_group(plan: Plan, marker: list[int] | None, newlines: list[int] | None) -> dict[str, int]:
    """Tokens per mixture group once trimmed at this manifest's budget (what the shards will hold), from the cache."""
    import glob

    from reasonpipe.tokenizer.cache import read_cache
    from reasonpipe.trimming.core import trim

    m = plan.loaded.manifest
    marker = np.asarray(marker, dtype=np.uint32) if marker else None
    newlines = np.asarray(newlines, dtype=np.uint32) if newlines else None
    totals: dict[str, int] = {}
    for path in sorted(glob.glob(os.path.join(_tokens_dir(plan.prep_dir), "*.arrow"))):
        for sample in read_cache(path):
            n = sum(len(seg.ids) for seg in sample.segments)
            if sample.kind == "chat" and n > m.context:
                kept, record = trim(sample.segments, m.context, m.trim.policy, marker, m.trim.snap_newline, newlines)
                n = record.tokens_after if kept is not None else 0
            group = str(getattr(sample, m.mixture.by))
            totals[group] = totals.get(group, 0) + n
    return totals


def _rates(plan: Plan, marker: list[int] | None, newlines: list[int] | None) -> dict[str, float]:
    from reasonpipe.tokenizer.mixture import mixture_rates

    mix = plan.loaded.manifest.mixture
    if mix is None:
        return {}
    return mixture_rates(trimmed_tokens_by_group(plan, marker, newlines), mix.shares, mix.others)


def predicted_mixture(plan: Plan) -> dict[str, float]:
    """Token shares the mixture will give: exact once the corpus is tokenised, else estimated from input bytes."""
    from reasonpipe.tokenizer.mixture import mixture_rates, predicted_shares

    mix = plan.loaded.manifest.mixture
    if any(r.name == "tokenize" and os.path.isdir(os.path.join(r.logging_dir, "completions")) for r in plan.runs):
        sizes = trimmed_tokens_by_group(plan, None, None)
    else:
        sizes = {}
        for s in plan.sources:
            group = s.domain if mix.by == "domain" else s.name
            sizes[group] = sizes.get(group, 0) + sum(os.path.getsize(f) for f in s.files if os.path.isfile(f))
    return predicted_shares(sizes, mixture_rates(sizes, mix.shares, mix.others))


def pack_runs(plan: Plan) -> list[RunSpec]:
    m = plan.loaded.manifest
    out = os.path.join(plan.pack_dir, "out")
    trim_excl = os.path.join(plan.pack_dir, "exclusions", "trim")

    def build() -> list:
        from reasonpipe.filters.exclusions import exclusion_writer
        from reasonpipe.tokenizer.steps import CacheReader, MixtureSample, PackWriter
        from reasonpipe.tokenizer.vocab import load_tokenizer, newline_ids, resolve_template
        from reasonpipe.trimming.step import APTrim

        tok = load_tokenizer(tokenizer_file(plan.loaded, plan.prep_dir))
        special = resolve_template(tok, m.tokenizer.template).as_dict()
        marker = tok.encode(m.trim.marker, add_special_tokens=False).ids if m.trim.marker else None
        newlines = newline_ids(tok) if m.trim.snap_newline else None
        mix = m.mixture
        return [
            CacheReader(_tokens_dir(plan.prep_dir)),
            Progress("pack"),
            MixtureSample(_rates(plan, marker, newlines), mix.by if mix else "domain", m.seed),
            APTrim(m.context, m.trim.policy, marker, m.trim.snap_newline, newlines, exclusion_writer(trim_excl)),
            PackWriter(
                out,
                m.pack.seq_len,
                special,
                loss_mask=m.pack.loss_mask,
                buffer_windows=m.pack.buffer_windows,
                min_fill_chunk=m.pack.min_fill_chunk,
                validation_fraction=m.output.validation_fraction,
                seed=m.seed,
                rows_per_shard=m.output.rows_per_shard,
                compression=m.output.compression,
            ),
        ]

    run = RunSpec("pack", "pack", m.executor.tasks, os.path.join(plan.pack_dir, "runs", "pack"), build)
    run.labels = {2: "mixture", 3: "trim"}
    return [run]


def finalize(plan: Plan, table: list[dict], encoded_sha256: str | None = None) -> dict:
    """Assemble OUTPUT (shards, samples, tokenizer, index.json) from the pack run's folder.

    `encoded_sha256`: the sha256 of the tokenizer the tokenise run encoded with (index.json
    `encoded_with_tokenizer_sha256`, checked against the shipped tokenizer.json by `inspect --validate`)."""
    from reasonpipe.tokenizer.index import finalize_output

    m = plan.loaded.manifest
    decont = {}
    for row in table:
        for key, value in row["extra"].items():
            if key.startswith("hits_"):
                decont[key.removeprefix("hits_")] = decont.get(key.removeprefix("hits_"), 0) + int(value)
    extra = {
        "name": m.name,
        "stages": table,
        "decontamination": decont,
        "manifest": plan.loaded.raw,
        "manifest_sha256": plan.loaded.sha256(),
        "run_fingerprint": plan.pack_hash,
        "encoded_with_tokenizer_sha256": encoded_sha256,
        "mixture": {"by": m.mixture.by if m.mixture else "domain", "target": m.mixture.shares if m.mixture else None},
        "trim": {"context": m.context, "policy": m.trim.policy},
    }
    place_exclusions(plan)
    out = os.path.join(plan.pack_dir, "out")
    excl = os.path.join(plan.pack_dir, "exclusions", "trim")
    return finalize_output(
        out, plan.output_dir, tokenizer_file(plan.loaded, plan.prep_dir), extra, m.tokenizer.template, excl
    )


def place_exclusions(plan: Plan) -> None:
    """OUTPUT/exclusions/<label>/: hard links to the prep and pack runs' rejected records (copies across devices)."""
    import shutil

    from reasonpipe.pipeline.workdir import remove_owned

    target = os.path.join(plan.output_dir, "exclusions")
    remove_owned(target, plan.output_dir)  # only ever inside the marked output folder
    for phase_dir in (plan.prep_dir, plan.pack_dir):
        source = os.path.join(phase_dir, "exclusions")
        for root, _, files in os.walk(source):
            dest = os.path.join(target, os.path.relpath(root, source))
            os.makedirs(dest, exist_ok=True)
            for name in files:
                if name.startswith("."):  # a temporary file left by a killed task
                    continue
                try:
                    os.link(os.path.join(root, name), os.path.join(dest, name))
                except OSError:
                    shutil.copy2(os.path.join(root, name), os.path.join(dest, name))
