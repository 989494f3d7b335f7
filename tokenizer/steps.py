"""Datatrove steps of the tokenizer: sample for tokenizer training, tokenise to a cache, read it back with mixture
sampling, measure trimmed sizes, pack and write shards.

Thin adapters over the pure modules (template, cache, mixture, writer). A build composes these runs:

    canonical: ... -> DocWriter -> TokenizerSample(k)       (only when the tokenizer is trained)
    tokenizer: TrainTokenizer(sample/)                       (1 task; reads ~k of the tasks' samples)
    tokenize:  DocReader -> TokenizeToCache(tokenizer.json, cache/)
    sizes:     TrimmedSizes(cache/, C, ...)                  (only with a mixture: tokens per group once trimmed)
    pack:      MixtureSample(cache/, rates) -> APTrim(C) -> PackWriter(pack/)
    then:      index.finalize_output(pack/, OUTPUT, tokenizer.json, extra)

Every step is per task: rank r reads and writes its own files, and none holds more than a batch of samples, its
packers' bounded buffers or a configured sample size in memory.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolder, DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched
from datatrove.utils.typeshelper import StatHints
from tokenizers import Tokenizer

from reasonpipe.docio import FrameWriter, doc_file, doc_line
from reasonpipe.tokenizer.backends import Backend
from reasonpipe.tokenizer.cache import (
    CachedSample,
    CacheWriter,
    SampleMeta,
    batch_meta,
    batch_samples,
    open_cache,
    read_cache,
)
from reasonpipe.tokenizer.config import TrainConfig
from reasonpipe.tokenizer.mixture import copies
from reasonpipe.tokenizer.shards import Compression, sha256_file
from reasonpipe.tokenizer.template import ChatTemplate, encode_ahead
from reasonpipe.tokenizer.vocab import TemplateTokens, load_tokenizer, resolve_template, train_tokenizer
from reasonpipe.tokenizer.writer import PackedOutput
from reasonpipe.trimming.built import BuiltSample, read_samples
from reasonpipe.trimming.core import trim
from reasonpipe.trimming.ttc_steps import built_document, built_files, sampling_key


def _folder(folder: DataFolderLike | os.PathLike) -> DataFolder:
    """A `DataFolder` from anything datatrove takes, or a local `Path`."""
    return get_datafolder(os.fspath(folder) if isinstance(folder, os.PathLike) else folder)


def sample_key(seed: int, doc_id: str) -> int:
    """The hash that chooses the tokenizer-training sample (the smallest are kept)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest(), "little")


class SmallestHashes:
    """The `k` (id, text) pairs with the smallest `sample_key(seed, id)` seen so far: a heap of k entries.

    The choice depends only on the ids, so the k smallest of a union are the k smallest of its parts' k smallest:
    per-task samples combine into exactly the sample a single pass over everything would choose."""

    def __init__(self, k: int, seed: int) -> None:
        self.k, self.seed = k, seed
        self._heap: list[tuple[int, str, str]] = []  # max-heap (negated keys)

    def add(self, doc_id: str, text: str) -> None:
        item = (-sample_key(self.seed, doc_id), doc_id, text)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def items(self) -> list[tuple[str, str]]:
        """(id, text), smallest hash first."""
        return [(i, t) for _, i, t in sorted(self._heap, reverse=True)]


def train_from_documents(
    docs: Iterable[Document], cfg: TrainConfig, template: dict[str, str] | None = None, seed: int = 0
) -> Tokenizer:
    """Train a byte-level BPE on `cfg.sample_docs` documents chosen by a stable hash of their ids.

    The choice and the training order depend only on the ids (not on the order the documents arrive in).
    Chat samples train on their plain rendering (`doc.text`); the template's special tokens are added.
    """
    sample = SmallestHashes(cfg.sample_docs, seed)
    for doc in docs:
        sample.add(doc.id, doc.text)
    texts = [text for _, text in sample.items() if text]
    return train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency, template)


class TokenizerSample(PipelineStep):
    """This task's part of the tokenizer-training sample: its `k` documents with the smallest id hashes.

    Documents pass through unchanged; at the end `output_folder/{rank:05d}.jsonl.zst` holds those documents (the
    `DocWriter` format), smallest hash first. The training run merges these files in hash order and reads about k
    documents of them (`pipeline.tail.smallest_of_samples`); `train_from_documents` keeps the k smallest again: the
    same sample as a pass over the whole corpus, and no task reads the whole corpus.
    Memory: a heap of k documents (`tokenizer.train.sample_docs`).
    """

    name = "🎲 tokenizer sample"
    type = "🔢 - TOKENIZER"

    def __init__(self, output_folder: DataFolderLike, k: int, seed: int = 0) -> None:
        super().__init__()
        self.output_folder = _folder(output_folder)
        self.k, self.seed = k, seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        sample = SmallestHashes(self.k, self.seed)
        for doc in data:
            sample.add(doc.id, doc.text)
            yield doc
        with self.output_folder.open(doc_file(rank), "wb") as raw:
            out = FrameWriter(raw)
            for doc_id, text in sample.items():
                out.write(doc_line(doc_id, text, {}))
                self.stat_update("sampled")
            out.flush()


@functools.lru_cache(maxsize=2)
def loaded_template(sha256: str, path: str, template_map: str, backend: Backend) -> ChatTemplate:
    """The chat template of the tokenizer file whose content hashes to `sha256`, loaded once per process: the tasks
    a worker runs one after another share it (through `ChatTemplate.fresh`, so each counts its own batches)."""
    tok = load_tokenizer(path)
    return ChatTemplate(tok, resolve_template(tok, json.loads(template_map)), backend)


class TokenizeToCache(PipelineStep):
    """Encodes documents segment-wise (chat template) and writes the token cache of this task.

    Writes `output_folder/{rank:05d}.arrow` (see cache.py; any fsspec filesystem: `DataFolder`) and
    `{rank:05d}.stats.json`: docs and tokens in total, by domain, by source and by kind, and `tokenizer_sha256`, the
    sha256 of the tokenizer file it encoded with (the output must ship that very file). Documents pass through
    unchanged. Batches of `batch_size` documents are encoded ahead in background threads (`encode_ahead`) while this
    task writes the previous batch and pulls the next ones from upstream; the "batch" time stat counts the writing
    only. `backend` picks the encoder (backends.py); counters `batches_<backend>`, `parity_texts` and
    `parity_failures` say what encoded this task. Memory: `encode_ahead`'s few batches.
    """

    name = "🔢 tokenize to cache"
    type = "🔢 - TOKENIZER"
    fork_preload = ("pandas", "awkward")  # pyarrow imports pandas on converting lists; gigatoken's batches: awkward

    def __init__(
        self,
        tokenizer_path: str,
        output_folder: DataFolderLike,
        template_map: dict[str, str] | None = None,
        batch_size: int = 2048,
        backend: Backend = "tokenizers",
    ) -> None:
        super().__init__()
        self.tokenizer_path = str(tokenizer_path)
        self.output_folder = _folder(output_folder)
        self.template_map = template_map
        self.batch_size, self.backend = batch_size, backend

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        encoded_with = sha256_file(self.tokenizer_path)  # recorded: the output must ship this very tokenizer
        template_map = json.dumps(self.template_map, sort_keys=True)  # hashable: a key of the process cache
        template = loaded_template(encoded_with, self.tokenizer_path, template_map, self.backend).fresh()
        counts: dict[str, Counter] = {
            k: Counter() for k in ("docs_by_domain", "docs_by_source", "by_domain", "by_source", "by_kind")
        }
        docs = tokens = 0
        with CacheWriter(f"{rank:05d}.arrow", self.output_folder) as writer:
            for batch, encoded in encode_ahead(template, batched(data, self.batch_size)):
                with self.track_time("batch"):
                    meta = [SampleMeta(d.id, *(d.metadata.get(k) for k in SampleMeta._fields[1:])) for d in batch]
                    writer.write(meta, encoded)
                for m, n in zip(meta, encoded.n_tokens.tolist()):
                    docs, tokens = docs + 1, tokens + n
                    counts["by_domain"][str(m.domain)] += n
                    counts["by_source"][str(m.source)] += n
                    counts["by_kind"][str(m.kind)] += n
                    counts["docs_by_domain"][str(m.domain)] += 1
                    counts["docs_by_source"][str(m.source)] += 1
                    self.stat_update("tokens", value=n)
                self.stat_update("documents", value=len(batch))
                yield from batch
        for key, n in sorted(template.stats.items()):
            self.stat_update(key, value=n)
        stats = {"docs": docs, "tokens": tokens, **{k: dict(sorted(v.items())) for k, v in counts.items()}}
        stats["tokenizer_sha256"] = encoded_with
        with self.output_folder.open(f"{rank:05d}.stats.json", "w") as f:
            f.write(json.dumps(stats, sort_keys=True, indent=1) + "\n")


def sum_stats(folder: DataFolderLike, pattern: str) -> dict[str, Any]:
    """The JSON stats files `pattern` of a folder summed: numbers add up, nested {name: number} maps per name."""
    folder = _folder(folder)
    total: dict[str, Any] = {}
    for name in folder.list_files(glob_pattern=pattern, recursive=False):
        with folder.open(name, "r") as f:
            stats = json.load(f)
        for key, value in stats.items():
            if isinstance(value, dict):
                acc = total.setdefault(key, {})
                for group, n in value.items():
                    acc[group] = acc.get(group, 0) + n
            elif isinstance(value, int | float):  # docs, tokens (not the tokenizer's sha256)
                total[key] = total.get(key, 0) + value
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in sorted(total.items())}


def cache_token_stats(folder: DataFolderLike) -> dict[str, Any]:
    """The tokenise run's per-task stats summed (docs, tokens, by_domain, by_source, by_kind, docs_by_...)."""
    return sum_stats(folder, "*.stats.json")


class CacheReader(PipelineStep):
    """Reads the token cache: Documents with text "", the id, `SampleMeta` fields (those not None) and
    `metadata["segments"]`.

    Files `folder/*.arrow` sorted by name, task `rank` reads files rank, rank + world_size, ...
    """

    name = "📖 token cache reader"
    type = "📖 - READER"
    fork_preload = ("pandas",)  # pyarrow imports it on a first conversion to numpy

    def __init__(self, folder: DataFolderLike, limit: int = -1) -> None:
        super().__init__()
        self.folder = _folder(folder)
        self.limit = limit

    def files(self, rank: int, world_size: int) -> list[str]:
        files = self.folder.list_files(glob_pattern="*.arrow", recursive=False)
        if not files:
            raise FileNotFoundError(f"{type(self).__name__}: no *.arrow cache files in {self.folder.path}")
        return files[rank::world_size]

    @staticmethod
    def document(sample: CachedSample, doc_id: str | None = None, **extra: Any) -> Document:
        fields = {k: v for k in SampleMeta._fields[1:] if (v := getattr(sample, k)) is not None}
        return Document(text="", id=doc_id or sample.id, metadata={**fields, "segments": sample.segments, **extra})

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        n = 0
        for name in self.files(rank, world_size):
            for sample in read_cache(name, self.folder):
                if n == self.limit:
                    return
                self.stat_update("documents")
                yield self.document(sample)
                n += 1


class MixtureSample(CacheReader):
    """Reads this task's token cache (and `built` samples), repeating or dropping samples to reach a token mixture.

    Each sample is emitted `copies(key, rate, seed)` times, the rate being `rates[metadata[by]]` (`default_rate` for
    groups not listed) and the key its id (a Markovian chunk's: its trace's, so chains are sampled whole). Copy 0
    keeps the id; copy c > 0 gets id `<id>#c`, `metadata["copy_of"] = <id>` and `metadata["copy"] = c`.
    Copies are spread over the stream: copy c of every sample comes in pass c over the task's cache files, so a
    sample and its copy are a whole pass apart (the packer also never puts two copies in one window). A pass after
    the first builds segments only for the samples that have that many copies. Memory: one record batch.
    Counters: `total`, `forwarded` (copies out), `dropped_sampled_out`, `copies_added`, per-group details, so the
    pipeline's accounting reads: total + copies_added = forwarded + dropped.
    """

    name = "🎛️ mixture sample"
    type = "🎛️ - SAMPLER"

    def __init__(
        self,
        folder: DataFolderLike,
        rates: dict[str, float],
        by: Literal["domain", "source"] = "domain",
        seed: int = 0,
        default_rate: float = 1.0,
        built: str | None = None,
    ) -> None:
        super().__init__(folder)
        self.built = built  # folder of the test-time-compute builders' samples (read after the cache), or None
        if by not in ("domain", "source"):
            raise ValueError(f"MixtureSample by: got {by!r}, allowed: 'domain', 'source'")
        bad = {g: r for g, r in rates.items() if r < 0}
        if bad or default_rate < 0:
            raise ValueError(f"MixtureSample rates must be >= 0, got {bad or {'default_rate': default_rate}}")
        self.rates, self.by, self.seed, self.default_rate = dict(rates), by, seed, default_rate

    def copies(self, meta: SampleMeta | CachedSample | BuiltSample) -> int:
        rate = self.rates.get(str(getattr(meta, self.by)), self.default_rate)
        return copies(sampling_key(meta.id), rate, self.seed)

    def _samples(self, files: list[str], built: list, select=None) -> Iterator[tuple[Any, Callable[..., Document]]]:
        """(sample, its document maker) of this task's cache files, then of its built-sample files."""
        for name in files:
            for sample in read_cache(name, self.folder, select):
                yield sample, self.document
        for path in built:
            for sample in read_samples(path):
                if select is None or select(sample):
                    yield sample, built_document

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        files = self.files(rank, world_size)
        built = built_files(self.built, rank, world_size) if self.built else []
        passes = 1  # grows to the largest copy count seen in pass 0
        for sample, document in self._samples(files, built):
            k = self.copies(sample)
            group = str(getattr(sample, self.by))
            self.stat_update(StatHints.total)
            if k == 0:
                self.stat_update(StatHints.dropped, "dropped_sampled_out", f"sampled_out_{group}")
                continue
            self.stat_update(StatHints.forwarded, value=k)
            if k > 1:
                self.stat_update("copies_added", value=k - 1)
                self.stat_update(f"repeated_{group}")
                passes = max(passes, k)
            yield document(sample)
        for c in range(1, passes):
            for sample, document in self._samples(files, built, lambda m, c=c: self.copies(m) > c):
                yield document(sample, f"{sample.id}#{c}", copy_of=sample.id, copy=c)


class TrimmedSizes(CacheReader):
    """Tokens per mixture group once trimmed to `budget` (what the shards will hold), for this task's cache files.

    Writes `output_folder/{rank:05d}.json`: {"by_domain": {group: tokens}, "by_source": {...}, "docs": n}. Plain
    text counts whole, a chat sample that fits counts its tokens, a longer one is trimmed with the run's options
    (the same `trim` the pack run applies; dropped ones count 0). Only the longer chat samples get segments built.
    `sum_stats(output_folder, "*.json")` gives the corpus totals the mixture rates are planned on: a partitioned
    pass instead of a serial one in the driver. Memory: one record batch.
    """

    name = "📏 trimmed sizes"
    type = "📊 - STATS"

    def __init__(
        self,
        folder: DataFolderLike,
        output_folder: DataFolderLike,
        budget: int,
        policy: str = "tail",
        marker_ids: list[int] | None = None,
        snap: int = 0,
        newline_ids: list[int] | None = None,
        built: str | None = None,
    ) -> None:
        super().__init__(folder)
        self.output_folder = _folder(output_folder)
        self.built = built
        self.budget, self.policy, self.snap = budget, policy, snap
        self.marker = np.asarray(marker_ids, dtype=np.uint32) if marker_ids else None
        self.newline_ids = np.asarray(newline_ids, dtype=np.uint32) if newline_ids else None

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        sizes: dict[str, Counter] = {"by_domain": Counter(), "by_source": Counter()}
        docs = 0
        for name in self.files(rank, world_size):
            for batch in open_cache(name, self.folder):
                metas, n_tokens = batch_meta(batch), batch.column("n_tokens").to_numpy().tolist()
                long = [i for i, (m, n) in enumerate(zip(metas, n_tokens)) if m.kind == "chat" and n > self.budget]
                for i, segs in zip(long, batch_samples(batch, long)):
                    kept, record = trim(segs, self.budget, self.policy, self.marker, self.snap, self.newline_ids)
                    n_tokens[i] = record.tokens_after if kept is not None else 0
                for m, n in zip(metas, n_tokens):
                    sizes["by_domain"][str(m.domain)] += n
                    sizes["by_source"][str(m.source)] += n
                    self.stat_update("documents")
                docs += len(metas)
        for path in built_files(self.built, rank, world_size) if self.built else []:
            for sample in read_samples(path):
                n = sum(len(seg.ids) for seg in sample.segments)
                if sample.kind == "chat" and n > self.budget:
                    kept, record = trim(
                        sample.segments, self.budget, self.policy, self.marker, self.snap, self.newline_ids
                    )
                    n = record.tokens_after if kept is not None else 0
                sizes["by_domain"][str(sample.domain)] += n
                sizes["by_source"][str(sample.source)] += n
                self.stat_update("documents")
                docs += 1
        stats = {"docs": docs, **{k: dict(sorted(v.items())) for k, v in sizes.items()}}
        with self.output_folder.open(f"{rank:05d}.json", "w") as f:
            f.write(json.dumps(stats, sort_keys=True, indent=1) + "\n")


class PackWriter(PipelineStep):
    """Packs the (trimmed) samples of a task into train/val shards via `writer.PackedOutput`.

    Input documents carry `metadata["segments"]`, `kind`, `source`, `domain` and (after APTrim) `metadata["trim"]`,
    and may carry `problem_key` (validation routing), `upstream_id` and `copy_of` (provenance, copy spreading).
    `special_ids` is `TemplateTokens.as_dict()` of the tokenizer (pad id, and template ids for loss masking).
    Writes `output_folder/{train,val}/{rank:05d}-{k:05d}.arrow`, `samples/{rank:05d}.parquet`, `stats/{rank:05d}.json`.
    Memory: the packers' bounded buffers and a row group of samples/ rows (see `PackedOutput`).
    """

    name = "📦 pack + write shards"
    type = "💽 - WRITER"

    def __init__(
        self,
        output_folder: str,
        seq_len: int,
        special_ids: dict[str, int],
        loss_mask: Literal["all", "assistant"] = "all",
        buffer_windows: int = 64,
        min_fill_chunk: int = 1,
        validation_fraction: float = 0.0,
        seed: int = 0,
        rows_per_shard: int | None = None,
        compression: Compression = None,
    ) -> None:
        super().__init__()
        self.output_folder = output_folder
        self.tokens = TemplateTokens(**special_ids)
        self.options = dict(
            seq_len=seq_len,
            loss_mask=loss_mask,
            buffer_windows=buffer_windows,
            min_fill_chunk=min_fill_chunk,
            validation_fraction=validation_fraction,
            seed=seed,
            rows_per_shard=rows_per_shard,
            compression=compression,
        )
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"PackWriter validation_fraction: got {validation_fraction}, allowed: [0, 1)")
        if loss_mask not in ("all", "assistant"):
            raise ValueError(f"PackWriter loss_mask: got {loss_mask!r}, allowed: 'all', 'assistant'")

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        out = PackedOutput(self.output_folder, rank, tokens=self.tokens, **self.options)
        for doc in data:
            meta = doc.metadata
            with self.track_time():
                split = out.add(
                    doc.id,
                    meta["segments"],
                    kind=meta.get("kind") or "text",
                    source=meta.get("source"),
                    domain=meta.get("domain"),
                    trim=meta.get("trim"),
                    copy_of=meta.get("copy_of"),
                    copy=meta.get("copy", 0),
                    problem_key=meta.get("problem_key"),
                    upstream_id=meta.get("upstream_id"),
                    builder=meta.get("builder"),
                    provenance=meta.get("provenance"),
                )
            self.stat_update(f"samples_{split}")
        with self.track_time("task"):
            stats = out.close()
        for split, s in stats["splits"].items():
            self.stat_update(f"windows_{split}", value=s["windows"])
            self.stat_update(f"real_tokens_{split}", value=s["real_tokens"])
        return
        yield  # a generator that yields nothing: the last step of its run
