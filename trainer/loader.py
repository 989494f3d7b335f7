"""Data loader over reasonpipe shards: a deterministic global sample order, split across data-parallel ranks.

Order. Global sample k (k = 0, 1, ...) maps to a (source, window) pair by a pure function of the seed:
  - one source of N windows: epoch e = k // N, window = perm(seed, source, e)[k % N];
  - a weighted mixture: samples come in blocks of `MIX_BLOCK`; a block holds a fixed quota of each source
    (largest-remainder shares of the weights) in a seeded shuffled order, and a source's j-th sample is its
    window perm(seed, source, j // N)[j % N] (so a small source with a large weight is repeated, epoch by epoch).
Batches. Global batch g consumes samples [g*B, (g+1)*B); rank r of W takes the contiguous slice
[g*B + r*B/W, g*B + (r+1)*B/W) and cuts it into micro-batches. The loader state is the number of consumed samples,
so a resume is exact even with another data-parallel size.
Windows. Shards are memory-mapped (zero-copy numpy views, `tokenizer.shards`); a window read is O(1). A model
`seq_len` may divide the shards' seq_len: each shard window then yields shard_seq_len // seq_len sub-windows.
Position ids restart at every document start (`doc_offsets`); doc_ids number the documents of a window (padding gets
its own id) for document-causal attention. Labels are pre-shifted: labels[t] = input_ids[t+1] where loss_mask[t+1].
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasonpipe.tokenizer.shards import ShardSet

IGNORE = -100
MIX_BLOCK = 4096


# --- sources -------------------------------------------------------------------------------------------------------


def local_output_dir(path: str, cache_dir: Path | None = None) -> Path:
    """A local folder for an OUTPUT path; fsspec URLs (s3://, gs://, hf://, ...) are copied once into `cache_dir`."""
    if "://" not in path or path.startswith("file://"):
        return Path(path.removeprefix("file://"))
    import fsspec

    if cache_dir is None:
        raise ValueError(f"remote data {path!r} needs a cache folder")
    dest = cache_dir / hashlib.sha256(path.encode()).hexdigest()[:16]
    if not (dest / "index.json").exists():
        fs, root = fsspec.core.url_to_fs(path)
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        index = json.loads(fs.cat_file(f"{root}/index.json"))
        for rel in ["tokenizer.json"] + [s["path"] for s in index["shards"]]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{rel}", str(tmp / rel))
        (tmp / "index.json").write_text(json.dumps(index, sort_keys=True))
        tmp.rename(dest)
    return dest


@dataclass
class Source:
    """One OUTPUT folder: its index, its train windows and (when present) its validation windows."""

    path: str
    weight: float
    root: Path
    index: dict[str, Any]
    train: ShardSet
    val: ShardSet | None

    @classmethod
    def open(cls, path: str, weight: float = 1.0, cache_dir: Path | None = None) -> Source:
        root = local_output_dir(path, cache_dir)
        train = ShardSet(root, "train")
        if len(train) == 0:
            raise ValueError(f"{path}: no train windows in index.json")
        has_val = any(s["split"] == "val" for s in train.index["shards"])
        val = ShardSet(root, "val") if has_val else None
        return cls(path, weight, root, train.index, train, val)

    @property
    def seq_len(self) -> int:
        return int(self.index["seq_len"])

    @property
    def vocab_size(self) -> int:
        return int(self.index["tokenizer"]["vocab_size"])

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self.index["tokenizer"].get("special_ids") or {})


MODEL_IDS = ("bos", "eos", "pad")  # the special ids the model config carries


def shard_tokenizer(sources: Sequence[Source]) -> tuple[int, dict[str, int]]:
    """(vocab size, {bos, eos, pad}) of the one tokenizer every source was encoded with; ValueError otherwise."""
    first = sources[0]
    for s in sources:
        missing = [k for k in MODEL_IDS if k not in s.special_ids]
        if missing:
            raise ValueError(
                f"{s.path}/index.json: tokenizer.special_ids lacks {missing} (found {s.special_ids}); the trainer "
                f"takes the model's special ids from there: re-run the pipeline with a current reasonpipe"
            )
        if (s.vocab_size, s.special_ids) != (first.vocab_size, first.special_ids):
            raise ValueError(
                f"data sources disagree on the tokenizer: {first.path} has vocab {first.vocab_size}, special ids "
                f"{first.special_ids}; {s.path} has vocab {s.vocab_size}, special ids {s.special_ids}"
            )
    return first.vocab_size, {k: int(first.special_ids[k]) for k in MODEL_IDS}


def check_sources(sources: Sequence[Source], model_vocab: int, seq_len: int) -> None:
    """The shards must fit the model: vocab within the embedding, windows a multiple of the model's seq_len."""
    for s in sources:
        if s.vocab_size > model_vocab:
            raise ValueError(
                f"{s.path}: tokenizer vocab_size {s.vocab_size} > model vocab_size {model_vocab}; "
                f"set model.vocab_size >= {s.vocab_size}"
            )
        if s.seq_len % seq_len:
            raise ValueError(
                f"{s.path}: shard seq_len {s.seq_len} is not a multiple of train.seq_len {seq_len}; "
                f"use {s.seq_len} or a divisor of it"
            )
    tokenizers = {s.index["tokenizer"].get("sha256") for s in sources}
    if len(tokenizers) > 1:
        raise ValueError(f"data sources use different tokenizers (sha256 {sorted(map(str, tokenizers))})")


# --- global order --------------------------------------------------------------------------------------------------


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(list(key)))


def quotas(weights: Sequence[float], block: int) -> np.ndarray:
    """Samples per source in a block: largest-remainder apportionment of `block` by weight (ties to lower index)."""
    w = np.asarray(weights, dtype=np.float64)
    if (w <= 0).any() or not np.isfinite(w).all():
        raise ValueError(f"mixture weights must be positive and finite, got {list(weights)}")
    exact = w / w.sum() * block
    q = np.floor(exact).astype(np.int64)
    rest = block - int(q.sum())
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - q[i]), i))
    for i in order[:rest]:
        q[i] += 1
    return q


class _Cache(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or(self, key: Any, make: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        if len(self) > self.size:
            self.popitem(last=False)
        return value


class GlobalOrder:
    """Pure map from global sample index to (source, window); deterministic from the seed and the source sizes."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int, block: int = MIX_BLOCK) -> None:
        self.sizes = [int(n) for n in sizes]
        self.seed = int(seed)
        self.block = block
        self.quota = quotas(weights, block) if len(sizes) > 1 else np.array([block])
        if len(sizes) > 1 and (self.quota == 0).any():
            raise ValueError(f"a mixture weight is too small to get a sample per block of {block}")
        self._perms = _Cache(8)
        self._blocks = _Cache(4)

    def _perm(self, src: int, epoch: int) -> np.ndarray:
        return self._perms.get_or((src, epoch), lambda: _rng(self.seed, src, epoch).permutation(self.sizes[src]))

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        def make() -> tuple[np.ndarray, np.ndarray]:
            labels = np.repeat(np.arange(len(self.sizes)), self.quota)
            labels = _rng(self.seed, 1_000_003, b).permutation(labels)
            ordinal = np.zeros_like(labels)
            for s in range(len(self.sizes)):
                at = labels == s
                ordinal[at] = np.arange(int(at.sum()))
            return labels, ordinal

        return self._blocks.get_or(b, make)

    def __call__(self, k: int) -> tuple[int, int]:
        if len(self.sizes) == 1:
            src, j = 0, k
        else:
            b, p = divmod(k, self.block)
            labels, ordinal = self._block(b)
            src = int(labels[p])
            j = b * int(self.quota[src]) + int(ordinal[p])
        epoch, pos = divmod(j, self.sizes[src])
        return src, int(self._perm(src, epoch)[pos])


# --- windows -> tensors ----------------------------------------------------------------------------------------------


@dataclass
class Batch:
    input_ids: torch.Tensor  # int64 [b, S]
    labels: torch.Tensor  # int64 [b, S], IGNORE where not trained
    position_ids: torch.Tensor  # int64 [b, S], restart at each document
    doc_ids: torch.Tensor  # int64 [b, S], document number within the window (padding: its own number)
    label_segment: torch.Tensor  # int64 [b, S], segment kind of each label token (0 where ignored)

    def to(self, device: torch.device) -> Batch:
        nb = device.type == "cuda"
        return Batch(*(t.to(device, non_blocking=nb) for t in self.__dict__.values()))

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def num_loss_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())


def window_arrays(rec: Any, part: int, seq_len: int) -> tuple[np.ndarray, ...]:
    """(input_ids, labels, positions, doc_ids, label_segment) of sub-window `part` of one shard window."""
    ids, mask, seg = rec.input_ids, rec.loss_mask, rec.segment
    full = ids.shape[0]
    offsets = np.asarray(rec.doc_offsets, dtype=np.int64)
    if offsets.size == 0 or offsets[0] != 0:
        offsets = np.concatenate([[0], offsets])
    t = np.arange(full)
    doc = np.searchsorted(offsets, t, side="right") - 1
    pos = t - offsets[doc]
    doc = np.where(seg == 0, offsets.size, doc)  # padding: a document of its own
    lo, hi = part * seq_len, (part + 1) * seq_len
    nxt = np.arange(lo + 1, hi + 1)
    valid = nxt < full
    nxt_c = np.minimum(nxt, full - 1)
    trained = valid & (mask[nxt_c] != 0)
    labels = np.where(trained, ids[nxt_c].astype(np.int64), IGNORE)
    label_seg = np.where(trained, seg[nxt_c], 0)
    return ids[lo:hi].astype(np.int64), labels, pos[lo:hi], doc[lo:hi] - doc[lo], label_seg.astype(np.int64)


def collate(records: Sequence[tuple[Any, int]], seq_len: int) -> Batch:
    cols = list(zip(*(window_arrays(rec, part, seq_len) for rec, part in records)))
    return Batch(*(torch.from_numpy(np.stack(c)) for c in cols))


# --- the loader ----------------------------------------------------------------------------------------------------


class ShardLoader:
    """Micro-batches of one data-parallel rank, in the global order; state = consumed global samples."""

    def __init__(
        self,
        sources: Sequence[Source],
        seq_len: int,
        global_batch: int,
        micro_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        if global_batch % (world_size * micro_batch):
            raise ValueError(
                f"global batch {global_batch} windows is not a multiple of world_size {world_size} x "
                f"micro_batch {micro_batch}"
            )
        self.sources = list(sources)
        self.seq_len = seq_len
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.parts = [s.seq_len // seq_len for s in self.sources]  # sub-windows per shard window
        sizes = [len(s.train) * p for s, p in zip(self.sources, self.parts)]
        self.order = GlobalOrder(sizes, [s.weight for s in self.sources], seed)
        self.consumed = 0  # global samples consumed (= steps done * global_batch)

    @property
    def accum_steps(self) -> int:
        return self.global_batch // (self.world_size * self.micro_batch)

    def window(self, k: int) -> tuple[Any, int]:
        """Shard record and sub-window part of global sample k."""
        src, w = self.order(k)
        row, part = divmod(w, self.parts[src])
        return self.sources[src].train[row], part

    def rank_samples(self, g: int) -> range:
        per_rank = self.global_batch // self.world_size
        start = g * self.global_batch + self.rank * per_rank
        return range(start, start + per_rank)

    def global_batch_at(self, g: int) -> list[Batch]:
        """This rank's micro-batches of global batch g (a pure function of g: safe to prefetch)."""
        idx = self.rank_samples(g)
        out = []
        for m in range(0, len(idx), self.micro_batch):
            out.append(collate([self.window(k) for k in idx[m : m + self.micro_batch]], self.seq_len))
        return out

    def next_global_batch(self) -> list[Batch]:
        """This rank's micro-batches of the next global batch; advances the state by one global batch."""
        out = self.global_batch_at(self.consumed // self.global_batch)
        self.consumed += self.global_batch
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "seed": self.seed,
            "global_batch": self.global_batch,
            "sources": [{"path": s.path, "weight": s.weight, "windows": len(s.train)} for s in self.sources],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "global_batch", "sources"):
            if state[key] != mine[key]:
                raise ValueError(f"loader state mismatch on resume: {key} was {state[key]!r}, now {mine[key]!r}")
        self.consumed = int(state["consumed"])


class Prefetcher:
    """Builds the next global batch in a background thread while the current one trains; the loader state
    advances only when a batch is handed out, so checkpoints stay exact. `pin` pins host memory for async copies."""

    def __init__(self, loader: ShardLoader, pin: bool = False) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.loader, self.pin = loader, pin
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self.pending: tuple[int, Any] | None = None

    def _build(self, g: int) -> list[Batch]:
        batches = self.loader.global_batch_at(g)
        if self.pin:
            batches = [Batch(*(t.pin_memory() for t in b.__dict__.values())) for b in batches]
        return batches

    def next(self) -> list[Batch]:
        g = self.loader.consumed // self.loader.global_batch
        if self.pending is None or self.pending[0] != g:
            self.pending = (g, self.pool.submit(self._build, g))
        out = self.pending[1].result()
        self.loader.consumed += self.loader.global_batch
        self.pending = (g + 1, self.pool.submit(self._build, g + 1))
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def eval_batches(
    sources: Sequence[Source], seq_len: int, max_windows: int, micro_batch: int, rank: int, world_size: int
) -> Iterator[Batch]:
    """This rank's share (round robin) of the first `max_windows` validation windows of every source."""
    items: list[tuple[Any, int]] = []
    for s in sources:
        if s.val is None:
            continue
        parts = s.seq_len // seq_len
        n = min(len(s.val) * parts, max_windows)
        items.extend((s.val, i) for i in range(n))
    if not items:
        return
    # Every rank runs the same number of micro-batches (sharded models need matching collectives): the short ranks
    # pad with a copy of the first window whose labels are all ignored.
    per_rank = -(-len(items) // world_size)
    steps = -(-per_rank // micro_batch)
    mine: list[tuple[Any, int] | None] = list(items[rank::world_size])
    mine += [None] * (steps * micro_batch - len(mine))
    for m in range(0, len(mine), micro_batch):
        recs, dummy = [], []
        for item in mine[m : m + micro_batch]:
            val, i = item if item is not None else items[0]
            row, part = divmod(i, val.seq_len // seq_len)
            recs.append((val[row], part))
            dummy.append(item is None)
        batch = collate(recs, seq_len)
        batch.labels[torch.tensor(dummy)] = IGNORE
        batch.label_segment[torch.tensor(dummy)] = 0
        yield batch


def has_val(sources: Sequence[Source]) -> bool:
    return any(s.val is not None and len(s.val) for s in sources)
