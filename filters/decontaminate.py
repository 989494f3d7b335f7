"""`decontaminate`: drop documents that share a token n-gram with an item of a local benchmark file.

Tokens are the normalised tokens of filters/normalize.py (case, Unicode forms, whitespace and prose punctuation do not
matter; digits and operators do). Each field of each benchmark item is indexed on its own:
  - >= 2n tokens: its n-grams (n = `ngram`, default 13);
  - `min_ngram` <= len < 2n: its max(min_ngram, len // 2)-grams, so one changed word still leaves a matching gram;
  - `min_item_tokens` <= len < `min_ngram`: the whole field as one gram;
  - shorter fields are too generic to index (counted as `skipped_fields`).
A document is contaminated when it contains >= `min_matches` indexed grams; it is dropped with reason `contaminated`,
`metadata["contaminated_by"] = {"benchmark": name, "item": id}` (the item with the most matched grams) and the stat
`hits_<benchmark>`. Single streaming step; the index is built once per task from the files.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document
from pydantic import Field, model_validator

from reasonpipe.filters.base import CountingFilter
from reasonpipe.filters.minhash_core import U64, ngram_hashes, ngram_hashes_by_size, token_hashes
from reasonpipe.filters.normalize import Normalization, prepare
from reasonpipe.filters.stage import BuildContext, Chain, ExistingPath, Stage, StageOptions, register


class BenchmarkFile(StageOptions):
    """One benchmark: `name`, a jsonl / jsonl.gz / parquet `path`, the `fields` whose text is indexed, and optionally
    the `id_field` naming each item (default: its 0-based record index)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    path: ExistingPath
    fields: list[str] = Field(min_length=1)
    id_field: str | None = None

    @model_validator(mode="after")
    def _known_format(self) -> BenchmarkFile:
        if not str(self.path).endswith((".jsonl", ".jsonl.gz", ".parquet")):
            raise ValueError(f"benchmark {self.name!r}: path {self.path} must end with .jsonl, .jsonl.gz or .parquet")
        return self


class DecontaminateOptions(StageOptions):
    """Options of the `decontaminate` stage (see the module docstring).

    Attributes:
        benchmarks: the benchmark files.
        ngram: n-gram size in tokens for long fields.
        min_ngram: smallest n-gram size used for short fields.
        min_item_tokens: fields with fewer tokens are not indexed.
        min_matches: indexed grams a document must contain to be contaminated.
        max_items_per_gram: grams found in more benchmark items than this are template phrases ("write a python
            function to find the ...") and are not indexed (None: keep all).
        operators: count operator characters as tokens. Off by default: operator-heavy text such as GSM8K
            calculator annotations (`2*20=<<2*20=40>>40`) packs 13 tokens into a few characters, and such grams
            match unrelated arithmetic.
        normalization: text normalisation before tokenising (digits and operators are always kept).
    """

    benchmarks: list[BenchmarkFile] = Field(min_length=1)
    ngram: int = Field(13, ge=1, le=64)
    min_ngram: int = Field(8, ge=1, le=64)
    min_item_tokens: int = Field(4, ge=1)
    min_matches: int = Field(1, ge=1)
    max_items_per_gram: int | None = Field(None, ge=1)
    operators: bool = False
    normalization: Normalization = Field(default_factory=Normalization)

    @model_validator(mode="after")
    def _consistent(self) -> DecontaminateOptions:
        if self.min_ngram > self.ngram:
            raise ValueError(f"min_ngram ({self.min_ngram}) must be <= ngram ({self.ngram})")
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmarks: names must be unique, found {names}")
        return self


def read_records(path: Path) -> list[dict[str, Any]]:
    """All records of a jsonl, jsonl.gz or parquet file."""
    if str(path).endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _as_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "\n".join(map(_as_text, value))
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict) else str(value)


class NgramIndex:
    """Gram hashes of benchmark fields -> owning item, per gram size (pure; built from records)."""

    def __init__(self, opts: DecontaminateOptions):
        self.opts = opts
        self.names: list[str] = []  # benchmark names
        self.items: list[list] = []  # per benchmark: item references
        self.sizes: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # size -> (sorted hashes, owners)
        self._present: dict[int, np.ndarray] = {}  # size -> which low bits some indexed gram has (see `match`)
        self.skipped_fields = 0
        self.pruned_grams = 0

    def add(self, name: str, records: list[dict], fields: list[str], id_field: str | None) -> None:
        for field in fields:
            if not any(field in r for r in records):
                available = sorted({k for r in records[:100] for k in r})
                raise ValueError(f"benchmark {name!r}: field {field!r} is in no record (fields: {available})")
        bench = len(self.names)
        self.names.append(name)
        self.items.append([r.get(id_field, i) if id_field else i for i, r in enumerate(records)])
        texts, owners = [], []
        for i, record in enumerate(records):
            for field in fields:
                if record.get(field) is not None:
                    texts.append(prepare(_as_text(record[field]), self.opts.normalization))
                    owners.append(bench << 32 | i)
        if not texts:
            return
        tokens, offsets = token_hashes(texts, self.opts.operators)
        lens = np.diff(offsets)
        sizes = np.where(lens >= 2 * self.opts.ngram, self.opts.ngram, np.maximum(self.opts.min_ngram, lens // 2))
        sizes = np.where(lens < self.opts.min_ngram, lens, sizes)
        self.skipped_fields += int(np.sum(lens < self.opts.min_item_tokens))
        owners_arr = np.array(owners, dtype=np.int64)
        for size in np.unique(sizes[lens >= self.opts.min_item_tokens]).tolist():
            chosen = np.flatnonzero((sizes == size) & (lens >= self.opts.min_item_tokens))
            sub_offsets = np.concatenate(([0], np.cumsum(lens[chosen])))
            sub_tokens = np.concatenate([tokens[offsets[c] : offsets[c + 1]] for c in chosen])
            grams, gram_offsets = ngram_hashes(sub_tokens, sub_offsets, size, whole_if_short=True)
            gram_owners = np.repeat(owners_arr[chosen], np.diff(gram_offsets))
            old_h, old_o = self.sizes.get(size, (np.zeros(0, np.uint64), np.zeros(0, np.int64)))
            h, o = np.concatenate((old_h, grams)), np.concatenate((old_o, gram_owners))
            order = np.lexsort((o, h))
            self.sizes[size] = (h[order], o[order])
            self._present.pop(size, None)

    def prune(self) -> None:
        """Drop grams owned by more than `max_items_per_gram` items (call once, after every `add`)."""
        limit = self.opts.max_items_per_gram
        for size, (hashes, owners) in list(self.sizes.items()):
            distinct = np.ones(len(hashes), dtype=bool)
            distinct[1:] = (hashes[1:] != hashes[:-1]) | (owners[1:] != owners[:-1])
            hashes, owners = hashes[distinct], owners[distinct]
            if limit is not None:
                values, first, counts = np.unique(hashes, return_index=True, return_counts=True)
                keep = np.repeat(counts <= limit, counts)
                self.pruned_grams += int(np.sum(counts > limit))
                hashes, owners = hashes[keep], owners[keep]
            self.sizes[size] = (hashes, owners)
            self._present.pop(size, None)

    def _presence(self, size: int) -> np.ndarray:
        """A bitmap over the low bits of the gram hashes of `size` (16x as many bits as grams, >= 2^16): a gram
        whose bit is clear is not indexed, and only the few others are searched for."""
        if size not in self._present:
            hashes = self.sizes[size][0]
            bits = min(max(int(len(hashes) * 16).bit_length(), 16), 30)
            present = np.zeros(1 << bits, dtype=bool)
            present[hashes & U64((1 << bits) - 1)] = True
            self._present[size] = present
        return self._present[size]

    def match(self, texts: list[str]) -> list[tuple[int, int, int] | None]:
        """Per (prepared) text: (benchmark, item, matched grams) of the item with most matched grams, or None."""
        tokens, offsets = token_hashes(texts, self.opts.operators)
        owner_lists: list[list[np.ndarray]] = [[] for _ in texts]
        by_size = ngram_hashes_by_size(tokens, offsets, [size for size, (h, _) in self.sizes.items() if len(h)])
        for size, (grams, gram_offsets) in by_size.items():
            hashes, owners = self.sizes[size]
            if len(grams) == 0:
                continue
            present = self._presence(size)
            # binary search only for grams the bitmap lets through (random searches were half of the stage's time)
            maybe = np.flatnonzero(present[grams & U64(len(present) - 1)])
            pos = np.minimum(np.searchsorted(hashes, grams[maybe]), len(hashes) - 1)
            found = hashes[pos] == grams[maybe]
            hit, pos = maybe[found], pos[found]
            if len(hit) == 0:
                continue
            text_of = np.searchsorted(gram_offsets, hit, side="right") - 1
            for t in np.unique(text_of).tolist():
                owner_lists[t].append(owners[pos[text_of == t]])
        results: list[tuple[int, int, int] | None] = []
        for found in owner_lists:
            if not found:
                results.append(None)
                continue
            values, counts = np.unique(np.concatenate(found), return_counts=True)
            if counts.sum() < self.opts.min_matches:
                results.append(None)
                continue
            best = int(values[np.argmax(counts)])  # most matched grams; ties: smallest (benchmark, item)
            results.append((best >> 32, best & 0xFFFFFFFF, int(counts.sum())))
        return results


class DecontaminationFilter(CountingFilter):
    """Drops documents that contain benchmark n-grams (selected domains only)."""

    name = "🧪 decontaminate"

    def __init__(self, opts: DecontaminateOptions, domains: tuple[str, ...] | None, exclusion_writer=None):
        super().__init__(exclusion_writer=exclusion_writer, batch_size=256)
        self.opts, self.domains = opts, domains
        self._index: NgramIndex | None = None

    @property
    def index(self) -> NgramIndex:
        if self._index is None:
            self._index = NgramIndex(self.opts)
            for bench in self.opts.benchmarks:
                self._index.add(bench.name, read_records(bench.path), bench.fields, bench.id_field)
            self._index.prune()
            self.stat_update("skipped_fields", value=self._index.skipped_fields)
            self.stat_update("pruned_grams", value=self._index.pruned_grams)
        return self._index

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        chosen = [i for i, d in enumerate(batch) if self.domains is None or d.metadata.get("domain") in self.domains]
        results: list[bool | tuple[bool, str]] = [True] * len(batch)
        matches = self.index.match([prepare(batch[i].text, self.opts.normalization) for i in chosen])
        for i, match in zip(chosen, matches):
            if match is None:
                continue
            bench, item, _ = match
            name = self.index.names[bench]
            batch[i].metadata["contaminated_by"] = {"benchmark": name, "item": self.index.items[bench][item]}
            batch[i].metadata["filter_reason"] = "contaminated"
            self.stat_update(f"hits_{name}")
            results[i] = (False, "contaminated")
        return results


@register
class DecontaminateStage(Stage):
    name = "decontaminate"
    Options = DecontaminateOptions

    def build(self, opts: DecontaminateOptions, ctx: BuildContext, chain: Chain) -> None:
        chain.add(DecontaminationFilter(opts, ctx.domains, ctx.exclusion_writer()))

    def check(self, opts: DecontaminateOptions) -> list[tuple[tuple, str]]:
        """Each benchmark file parses and every field it names is in some record."""
        problems = []
        for i, bench in enumerate(opts.benchmarks):
            try:
                records = [r for r in read_records(bench.path) if isinstance(r, dict)]
            except (OSError, ValueError) as exc:  # bad JSON, bad UTF-8, bad parquet (ArrowInvalid) are ValueErrors
                problems.append((("benchmarks", i, "path"), f"{bench.path} does not parse: {exc}"))
                continue
            missing = [f for f in bench.fields if not any(f in r for r in records)]
            if missing:
                found = sorted({k for r in records[:100] for k in r})
                message = f"{missing} in no record of {bench.path} (found {found})"
                problems.append((("benchmarks", i, "fields"), message))
        return problems

    def describe(self, opts: DecontaminateOptions) -> str:
        names = ", ".join(b.name for b in opts.benchmarks)
        return f"{opts.ngram}-gram overlap (short fields >= {opts.min_ngram}-grams or whole) against {names}"
