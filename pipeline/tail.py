"""The runs after the canonical documents: train the tokenizer (optional), tokenise to the Arrow cache, then
(with `builders`) build test-time-compute samples (pipeline/ttc.py), (with a mixture) measure trimmed sizes, then
mixture-sample, AP-trim, pack and write shards; finally assemble the output folder and its index.json.

Every run is partitioned over the executor's tasks except the tokenizer training (1 task), which reads only the
per-task samples `TokenizerSample` wrote, merged in hash order up to the sample size. The driver only sums per-task
JSON files (mixture sizes) and assembles the output task by task (`finalize_output`)."""

from __future__ import annotations

import heapq
import operator
import os
from collections.abc import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep

from reasonpipe.docio import DOC_GLOB, DocReader, read_docs
from reasonpipe.pipeline import ttc
from reasonpipe.pipeline.manifest import LoadedManifest
from reasonpipe.pipeline.runs import Plan, RunSpec
from reasonpipe.pipeline.steps import Progress


class TrainTokenizer(PipelineStep):
    """Trains the run's byte-level BPE on the hash-chosen sample of the canonical documents (a 1-task run).

    It reads the per-task samples of `TokenizerSample` in `sample_folder` (`smallest_of_samples`: about sample_docs
    documents of the tasks x sample_docs) and trains on the sample_docs with the smallest hashes: memory and reading
    bounded by the sample size, not the corpus or the task count."""

    name = "🔤 train tokenizer"
    type = "🔢 - TOKENIZER"

    def __init__(self, sample_folder: DataFolderLike, cfg, template: dict[str, str] | None, seed: int, path: str):
        super().__init__()
        self.sample_folder, self.cfg, self.template, self.seed, self.path = sample_folder, cfg, template, seed, path

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from reasonpipe.tokenizer.steps import train_from_documents
        from reasonpipe.tokenizer.vocab import save_tokenizer

        with self.track_time("tokenizer"):
            docs = smallest_of_samples(self.sample_folder, self.cfg.sample_docs, self.seed)
            save_tokenizer(train_from_documents(docs, self.cfg, self.template, self.seed), self.path)
        return
        yield


def smallest_of_samples(folder: DataFolderLike, k: int, seed: int) -> Iterator[Document]:
    """The documents of the task samples in `folder` merged in hash order, up to the k-th smallest hash and its
    ties: all that `SmallestHashes(k, seed)` can keep of them. Each file lists its documents smallest hash first
    (`TokenizerSample`), so about k documents are read, not tasks x k."""
    from reasonpipe.tokenizer.steps import sample_key

    def keyed(name: str) -> Iterator[tuple[int, Document]]:
        for doc in read_docs(folder, name):
            yield sample_key(seed, doc.id), doc

    folder = get_datafolder(folder)
    streams = [keyed(name) for name in folder.list_files(glob_pattern=DOC_GLOB)]
    last = None
    for n, (key, doc) in enumerate(heapq.merge(*streams, key=operator.itemgetter(0))):
        if n >= k and key != last:
            break
        last = key
        yield doc
    for stream in streams:
        stream.close()


def _tokens_dir(prep_dir: str) -> str:
    return os.path.join(prep_dir, "tokens")


def _sample_dir(prep_dir: str) -> str:
    return os.path.join(prep_dir, "tokenizer-sample")


def _sizes_dir(pack_dir: str) -> str:
    return os.path.join(pack_dir, "sizes")


def tokenizer_file(loaded: LoadedManifest, prep_dir: str) -> str:
    """The tokenizer.json a run encodes with: the one it trains (in its prep folder) or the manifest's own."""
    tok = loaded.manifest.tokenizer
    path = os.path.join(prep_dir, "tokenizer.json") if tok.train else loaded.resolve(str(tok.path))
    return os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path


def canonical_steps(loaded: LoadedManifest, prep_dir: str) -> list:
    """Steps appended to the run that writes the canonical documents: the tokenizer sample, when one is trained."""
    from reasonpipe.tokenizer.steps import TokenizerSample

    m = loaded.manifest
    train = m.tokenizer.train
    return [TokenizerSample(_sample_dir(prep_dir), train.sample_docs, m.seed)] if train else []


def add_prep_runs(chain, loaded: LoadedManifest, prep_dir: str, canonical: str) -> None:
    """Append the tokenizer-training run (when the manifest trains one) and the tokenise-to-cache run."""
    from reasonpipe.tokenizer.steps import TokenizeToCache

    m = loaded.manifest
    tok = m.tokenizer
    path = tokenizer_file(loaded, prep_dir)
    if tok.train:
        steps = [TrainTokenizer(_sample_dir(prep_dir), tok.train, tok.template, m.seed, path)]
        chain.add_run("tokenizer", steps, 1)
    steps = [
        DocReader(canonical),
        Progress("tokenize"),
        TokenizeToCache(path, _tokens_dir(prep_dir), tok.template, backend=tok.backend),
    ]
    chain.add_run("tokenize", steps, m.executor.tasks)


def _run_tokenizer(plan: Plan):
    from reasonpipe.tokenizer.vocab import load_tokenizer

    return load_tokenizer(tokenizer_file(plan.loaded, plan.prep_dir))


def _trim_ids(plan: Plan, tok) -> tuple[list[int] | None, list[int] | None]:
    """Token ids of the trim marker and of newline tokens (for snap_newline), from the run's tokenizer `tok`."""
    from reasonpipe.tokenizer.vocab import newline_ids

    m = plan.loaded.manifest
    marker = tok.encode(m.trim.marker, add_special_tokens=False).ids if m.trim.marker else None
    return marker, newline_ids(tok) if m.trim.snap_newline else None


def trimmed_sizes(plan: Plan) -> dict[str, int]:
    """Tokens per mixture group once trimmed at this manifest's budget, summed from the sizes run's task files."""
    from reasonpipe.tokenizer.steps import sum_stats

    return sum_stats(_sizes_dir(plan.pack_dir), "*.json")[f"by_{plan.loaded.manifest.mixture.by}"]


def predicted_mixture(plan: Plan) -> dict[str, float]:
    """Token shares the mixture will give: exact once the sizes run is done, from the untrimmed token counts once
    the corpus is tokenised, else estimated from input bytes."""
    from reasonpipe.tokenizer.mixture import mixture_rates, predicted_shares
    from reasonpipe.tokenizer.steps import cache_token_stats

    mix = plan.loaded.manifest.mixture
    done = {r.name for r in plan.runs if os.path.isdir(os.path.join(r.logging_dir, "completions"))}
    if "sizes" in done:
        sizes = trimmed_sizes(plan)
    elif "tokenize" in done:
        sizes = cache_token_stats(_tokens_dir(plan.prep_dir))[f"by_{mix.by}"]
    else:
        sizes = {}
        for s in plan.sources:
            group = s.domain if mix.by == "domain" else s.name
            sizes[group] = sizes.get(group, 0) + sum(os.path.getsize(f) for f in s.files if os.path.isfile(f))
    for group in ttc.output_groups(plan):  # built in the pack phase: not sized yet; a named share is met exactly
        sizes.setdefault(group, 1)
    return predicted_shares(sizes, mixture_rates(sizes, mix.shares, mix.others))


def pack_runs(plan: Plan) -> list[RunSpec]:
    """The pack phase: the builder runs (with `builders`), the sizes run (with a mixture: tokens per group once
    trimmed, for the rates), then pack. Built samples are read with the token cache by `sizes` and `pack`."""
    m = plan.loaded.manifest
    out = os.path.join(plan.pack_dir, "out")
    trim_excl = os.path.join(plan.pack_dir, "exclusions", "trim")
    tokens = _tokens_dir(plan.prep_dir)
    built = ttc.built_dir(plan)
    runs = []

    if m.mixture is not None:

        def sizes() -> list:
            from reasonpipe.tokenizer.steps import TrimmedSizes

            marker, newlines = _trim_ids(plan, _run_tokenizer(plan))
            trim = m.trim
            return [
                TrimmedSizes(
                    tokens,
                    _sizes_dir(plan.pack_dir),
                    m.context,
                    trim.policy,
                    marker,
                    trim.snap_newline,
                    newlines,
                    built=built,
                )
            ]

        logs = os.path.join(plan.pack_dir, "runs", "sizes")
        runs.append(RunSpec("sizes", "pack", m.executor.tasks, logs, sizes, needs=("tokenizer",)))

    def build() -> list:
        from reasonpipe.filters.exclusions import exclusion_writer
        from reasonpipe.tokenizer.mixture import mixture_rates
        from reasonpipe.tokenizer.steps import MixtureSample, PackWriter
        from reasonpipe.tokenizer.vocab import resolve_template
        from reasonpipe.trimming.step import APTrim

        tok = _run_tokenizer(plan)  # ~0.4 s to load: once for both
        special = resolve_template(tok, m.tokenizer.template)
        marker, newlines = _trim_ids(plan, tok)
        mix = m.mixture
        if mix:
            ttc.check_mixture(plan)
        rates = mixture_rates(trimmed_sizes(plan), mix.shares, mix.others) if mix else {}
        return [
            MixtureSample(tokens, rates, mix.by if mix else "domain", m.seed, built=built),
            Progress("pack"),
            APTrim(m.context, m.trim.policy, marker, m.trim.snap_newline, newlines, exclusion_writer(trim_excl)),
            PackWriter(
                out,
                m.pack.seq_len,
                special.as_dict(),
                loss_mask=m.pack.loss_mask,
                buffer_windows=m.pack.buffer_windows,
                min_fill_chunk=m.pack.min_fill_chunk,
                validation_fraction=m.output.validation_fraction,
                seed=m.seed,
                rows_per_shard=m.output.rows_per_shard,
                compression=m.output.compression,
            ),
        ]

    logs = os.path.join(plan.pack_dir, "runs", "pack")
    run = RunSpec("pack", "pack", m.executor.tasks, logs, build, needs=("tokenizer", "ttc-build", "sizes"))
    run.labels = {0: "mixture", 2: "trim"}
    return [*ttc.build_runs(plan, tokenizer_file(plan.loaded, plan.prep_dir)), *runs, run]


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
        "verification": ttc.verification(table),
        "ttc": ttc.index_block(plan),
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
