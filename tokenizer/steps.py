"""Datatrove steps of the tokenizer: tokenise to a cache, read it back, sample a mixture, pack and write shards.

Thin adapters over the pure modules (template, cache, writer). A build composes two runs:

    run 1: <read + filters + dedup> -> TokenizeToCache(tokenizer.json, cache/)       (+ stats for mixture planning)
    run 2: CacheReader(cache/) -> MixtureSample(rates) -> APTrim(C) -> PackWriter(pack/)
    then:  index.finalize_output(pack/, OUTPUT, tokenizer.json, extra)
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.compute as pc
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched
from datatrove.utils.typeshelper import StatHints
from tokenizers import Tokenizer

from reasonpipe.tokenizer.cache import CacheWriter, read_cache
from reasonpipe.tokenizer.config import TrainConfig
from reasonpipe.tokenizer.mixture import copies
from reasonpipe.tokenizer.shards import Compression, open_shard, sha256_file
from reasonpipe.tokenizer.template import ChatTemplate, encode_ahead
from reasonpipe.tokenizer.vocab import TemplateTokens, load_tokenizer, resolve_template, train_tokenizer
from reasonpipe.tokenizer.writer import PackedOutput, write_json_atomic


def _hash_key(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest(), "little")


def train_from_documents(
    docs: Iterable[Document], cfg: TrainConfig, template: dict[str, str] | None = None, seed: int = 0
) -> Tokenizer:
    """Train a byte-level BPE on `cfg.sample_docs` documents chosen by a stable hash of their ids.

    The choice and the training order depend only on the ids (not on the order the documents arrive in).
    Chat samples train on their plain rendering (`doc.text`); the template's special tokens are added.
    """
    heap: list[tuple[int, str, str]] = []  # max-heap (negated keys) of the sample_docs smallest hashes
    for doc in docs:
        item = (-_hash_key(seed, doc.id), doc.id, doc.text)
        if len(heap) < cfg.sample_docs:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
    texts = [text for _, _, text in sorted(heap, reverse=True) if text]
    return train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency, template)


class TokenizeToCache(PipelineStep):
    """Encodes documents segment-wise (chat template) and writes the token cache of this task.

    Writes `output_folder/{rank:05d}.arrow` (see cache.py) and `output_folder/{rank:05d}.stats.json`: docs and
    tokens in total, by domain, by source and by kind, for mixture planning, and `tokenizer_sha256`, the sha256 of
    the tokenizer file it encoded with. Documents pass through unchanged.
    Batches of `batch_size` documents are encoded ahead in background threads (`encode_ahead`) while this task
    writes the previous batch and pulls the next ones from upstream; the "batch" time stat counts the writing only.
    """

    name = "🔢 tokenize to cache"
    type = "🔢 - TOKENIZER"

    def __init__(
        self,
        tokenizer_path: str | Path,
        output_folder: str | Path,
        template_map: dict[str, str] | None = None,
        batch_size: int = 2048,
    ) -> None:
        super().__init__()
        self.tokenizer_path = str(tokenizer_path)
        self.output_folder = Path(output_folder)
        self.template_map = template_map
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        encoded_with = sha256_file(self.tokenizer_path)  # recorded: the output must ship this very tokenizer
        tok = load_tokenizer(self.tokenizer_path)
        template = ChatTemplate(tok, resolve_template(tok, self.template_map))
        counts: dict[str, Counter] = {
            k: Counter() for k in ("docs_by_domain", "docs_by_source", "by_domain", "by_source", "by_kind")
        }
        docs = tokens = 0
        with CacheWriter(self.output_folder / f"{rank:05d}.arrow") as writer:
            for batch, encoded in encode_ahead(template, batched(data, self.batch_size)):
                with self.track_time("batch"):
                    meta = [
                        (d.id, d.metadata.get("source"), d.metadata.get("domain"), d.metadata.get("kind"))
                        for d in batch
                    ]
                    writer.write(meta, encoded)
                for (_, source, domain, kind), n in zip(meta, encoded.n_tokens.tolist()):
                    docs, tokens = docs + 1, tokens + n
                    counts["by_domain"][str(domain)] += n
                    counts["by_source"][str(source)] += n
                    counts["by_kind"][str(kind)] += n
                    counts["docs_by_domain"][str(domain)] += 1
                    counts["docs_by_source"][str(source)] += 1
                    self.stat_update("tokens", value=n)
                self.stat_update("documents", value=len(batch))
                yield from batch
        stats = {"docs": docs, "tokens": tokens, **{k: dict(sorted(v.items())) for k, v in counts.items()}}
        stats["tokenizer_sha256"] = encoded_with
        write_json_atomic(self.output_folder / f"{rank:05d}.stats.json", stats)


def cache_token_stats(folder: str | Path, context: int | None = None) -> dict[str, Any]:
    """The per-task cache stats of `folder` summed (docs, tokens, by_domain, by_source, by_kind, docs_by_...).

    With `context`, the token counts are those after trimming to it, as far as known before trimming: a chat
    sample counts min(tokens, context) (trimming cuts it to at most C; the few it drops still count), plain text
    counts whole. Mixture rates planned on these match the packed output better when traces are long.
    """
    if context is not None:
        return _cache_stats_at_context(Path(folder), context)
    total: dict[str, Any] = {"docs": 0, "tokens": 0}
    for path in sorted(Path(folder).glob("*.stats.json")):
        stats = json.loads(path.read_text(encoding="utf-8"))
        for key, value in stats.items():
            if isinstance(value, dict):
                acc = total.setdefault(key, {})
                for name, n in value.items():
                    acc[name] = acc.get(name, 0) + n
            elif key in total:  # docs, tokens (not the tokenizer's sha256)
                total[key] += value
    return total


def _cache_stats_at_context(folder: Path, context: int) -> dict[str, Any]:
    total: dict[str, Any] = {"docs": 0, "tokens": 0}
    for key in ("by_domain", "by_source", "by_kind", "docs_by_domain", "docs_by_source"):
        total[key] = {}
    for path in sorted(folder.glob("*.arrow")):
        table = open_shard(path).select(["source", "domain", "kind", "n_tokens"])  # memory-mapped, no token data
        n = table["n_tokens"].to_numpy().astype(np.int64)
        chat = np.asarray(pc.equal(table["kind"], "chat").fill_null(False))
        n = np.where(chat, np.minimum(n, context), n)
        total["docs"] += len(n)
        total["tokens"] += int(n.sum())
        for col in ("domain", "source", "kind"):
            groups = [str(g) for g in table[col].to_pylist()]
            acc, docs = total[f"by_{col}"], total.get(f"docs_by_{col}")
            for g, k in zip(groups, n.tolist()):
                acc[g] = acc.get(g, 0) + k
                if docs is not None:
                    docs[g] = docs.get(g, 0) + 1
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in total.items()}


class CacheReader(PipelineStep):
    """Reads the token cache: Documents with text "", the id, source/domain/kind and `metadata["segments"]`.

    Files `folder/*.arrow` sorted by name, task `rank` reads files rank, rank + world_size, ...
    """

    name = "📖 token cache reader"
    type = "📖 - READER"

    def __init__(self, folder: str | Path, limit: int = -1) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.limit = limit

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        files = sorted(self.folder.glob("*.arrow"))
        if not files:
            raise FileNotFoundError(f"CacheReader: no *.arrow cache files in {self.folder}")
        n = 0
        for path in files[rank::world_size]:
            for sample in read_cache(path):
                if n == self.limit:
                    return
                meta = {"source": sample.source, "domain": sample.domain, "kind": sample.kind}
                meta["segments"] = sample.segments
                self.stat_update("documents")
                yield Document(text="", id=sample.id, metadata=meta)
                n += 1


class MixtureSample(PipelineStep):
    """Repeats or drops samples to reach a token mixture: `copies(id, rate, seed)` copies of each sample.

    The rate of a sample is `rates[metadata[by]]` (`default_rate` for groups not listed). Copy 0 keeps the id;
    copy k > 0 gets id `<id>#k` and `metadata["copy_of"] = <id>` (validation routing keeps copies together).
    Counters: `total`, `forwarded` (copies out), `dropped_sampled_out`, `copies_added`, per-group details.
    """

    name = "🎛️ mixture sample"
    type = "🎛️ - SAMPLER"

    def __init__(
        self,
        rates: dict[str, float],
        by: Literal["domain", "source"] = "domain",
        seed: int = 0,
        default_rate: float = 1.0,
    ) -> None:
        super().__init__()
        if by not in ("domain", "source"):
            raise ValueError(f"MixtureSample by: got {by!r}, allowed: 'domain', 'source'")
        bad = {g: r for g, r in rates.items() if r < 0}
        if bad or default_rate < 0:
            raise ValueError(f"MixtureSample rates must be >= 0, got {bad or {'default_rate': default_rate}}")
        self.rates, self.by, self.seed, self.default_rate = dict(rates), by, seed, default_rate

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            group = str(doc.metadata.get(self.by))
            k = copies(doc.id, self.rates.get(group, self.default_rate), self.seed)
            # standard counters, so the pipeline's accounting reads: total + copies_added = forwarded + dropped
            self.stat_update(StatHints.total)
            if k == 0:
                self.stat_update(StatHints.dropped, "dropped_sampled_out", f"sampled_out_{group}")
                continue
            self.stat_update(StatHints.forwarded, value=k)
            if k > 1:
                self.stat_update("copies_added", value=k - 1)
                self.stat_update(f"repeated_{group}")
            # copies are made before the original moves on: later steps mutate its metadata
            extra = [
                replace(doc, id=f"{doc.id}#{c}", metadata={**doc.metadata, "copy_of": doc.id}) for c in range(1, k)
            ]
            yield doc
            yield from extra


class PackWriter(PipelineStep):
    """Packs the (trimmed) samples of a task into train/val shards via `writer.PackedOutput`.

    Input documents carry `metadata["segments"]`, `kind`, `source`, `domain` and (after APTrim) `metadata["trim"]`.
    `special_ids` is `TemplateTokens.as_dict()` of the tokenizer (pad id, and template ids for loss masking).
    Writes `output_folder/{train,val}/{rank:05d}-{k:05d}.arrow`, `samples/{rank:05d}.parquet`, `stats/{rank:05d}.json`.
    """

    name = "📦 pack + write shards"
    type = "💽 - WRITER"

    def __init__(
        self,
        output_folder: str | Path,
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
        self.output_folder = Path(output_folder)
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
                    route_id=meta.get("copy_of"),
                )
            self.stat_update(f"samples_{split}")
        with self.track_time("task"):
            stats = out.close()
        for split, s in stats["splits"].items():
            self.stat_update(f"windows_{split}", value=s["windows"])
            self.stat_update(f"real_tokens_{split}", value=s["real_tokens"])
        return
        yield  # a generator that yields nothing: the last step of its run
