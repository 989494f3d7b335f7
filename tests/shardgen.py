"""Write small reasonpipe shard folders for tests, straight to the shard contract (pyarrow only).

Samples are GSM8K chat records (`/work/shared/data/real/math/gsm8k_train.jsonl`) when that file exists, otherwise
generated arithmetic word problems. Each sample renders as
`<bos> <user> question <end_turn> <assistant> <think> reasoning </think> answer <end_turn> <eos>` with segments
2 (prompt), 3 (reasoning), 4 (answer) and 5 (specials); samples are packed greedily into windows of `seq_len`
(documents may continue into the next window) and the tail of the last window is padded.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

GSM8K = Path("/work/shared/data/real/math/gsm8k_train.jsonl")
SPECIALS = ["<pad>", "<bos>", "<eos>", "<system>", "<user>", "<assistant>", "<end_turn>", "<think>", "</think>"]
SPECIAL_KEYS = ["pad", "bos", "eos", "system", "user", "assistant", "end_turn", "think_open", "think_close"]
PAD, PROMPT, REASONING, ANSWER, SPECIAL = 0, 2, 3, 4, 5


@dataclass
class ShardSet:
    root: Path
    seq_len: int
    vocab_size: int
    train_windows: int
    val_windows: int


def load_samples(limit: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(question, reasoning, answer) triples: real GSM8K when present, otherwise generated problems."""
    if GSM8K.exists():
        out = []
        with GSM8K.open() as f:
            for line in f:
                rec = json.loads(line)
                reasoning, _, answer = rec["answer"].rpartition("####")
                out.append((rec["question"], reasoning.strip(), answer.strip()))
                if len(out) >= limit:
                    break
        return out
    rng = random.Random(seed)
    names, items = ["Ada", "Bo", "Cy", "Di", "Eve"], ["apples", "pens", "books", "cards", "coins"]
    out = []
    for _ in range(limit):
        n, a, b, it = rng.choice(names), rng.randint(2, 90), rng.randint(2, 90), rng.choice(items)
        q = f"{n} has {a} {it} and buys {b} more. How many {it} does {n} have now?"
        r = f"{n} starts with {a} {it}. After buying {b} more, {n} has {a} + {b} = {a + b} {it}."
        out.append((q, r, str(a + b)))
    return out


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def render(tok, sample: tuple[str, str, str]) -> tuple[list[int], list[int]]:
    """Token ids and segment kinds of one chat sample (segments tokenised independently, then concatenated)."""
    sid = {k: tok.token_to_id(s) for k, s in zip(SPECIAL_KEYS, SPECIALS)}
    q, r, a = (tok.encode(t).ids for t in sample)
    parts = [
        ([sid["bos"], sid["user"]], SPECIAL),
        (q, PROMPT),
        ([sid["end_turn"], sid["assistant"], sid["think_open"]], SPECIAL),
        (r, REASONING),
        ([sid["think_close"]], SPECIAL),
        (a, ANSWER),
        ([sid["end_turn"], sid["eos"]], SPECIAL),
    ]
    ids = [i for p, _ in parts for i in p]
    seg = [s for p, s in parts for _ in p]
    return ids, seg


def pack(docs: list[tuple[list[int], list[int], str]], seq_len: int, pad_id: int, mask_prompt: bool) -> pa.Table:
    """Greedy packing: concatenate documents, cut every seq_len tokens, pad the last window."""
    rows: dict[str, list] = {"input_ids": [], "loss_mask": [], "segment": [], "doc_offsets": [], "sample_ids": []}
    ids: list[int] = []
    seg: list[int] = []
    offsets: list[int] = []
    sample_ids: list[str] = []

    def flush() -> None:
        n = len(ids)
        ids.extend([pad_id] * (seq_len - n))
        seg.extend([PAD] * (seq_len - n))
        s = np.asarray(seg, dtype=np.uint8)
        mask = (s != PAD) & ~((s == PROMPT) & mask_prompt)
        rows["input_ids"].append(np.asarray(ids, dtype=np.uint32))
        rows["loss_mask"].append(mask.astype(np.uint8))
        rows["segment"].append(s)
        rows["doc_offsets"].append(list(offsets))
        rows["sample_ids"].append(list(sample_ids))
        ids.clear(), seg.clear(), offsets.clear(), sample_ids.clear()

    for d_ids, d_seg, d_id in docs:
        pos = 0
        while pos < len(d_ids):
            offsets.append(len(ids))
            sample_ids.append(d_id)
            take = min(seq_len - len(ids), len(d_ids) - pos)
            ids.extend(d_ids[pos : pos + take])
            seg.extend(d_seg[pos : pos + take])
            pos += take
            if len(ids) == seq_len:
                flush()
    if ids:
        flush()

    def fixed(col: list[np.ndarray], typ: pa.DataType) -> pa.Array:
        flat = pa.array(np.concatenate(col), type=typ)
        return pa.FixedSizeListArray.from_arrays(flat, seq_len)

    return pa.table(
        {
            "input_ids": fixed(rows["input_ids"], pa.uint32()),
            "loss_mask": fixed(rows["loss_mask"], pa.uint8()),
            "segment": fixed(rows["segment"], pa.uint8()),
            "doc_offsets": pa.array(rows["doc_offsets"], type=pa.list_(pa.uint32())),
            "sample_ids": pa.array(rows["sample_ids"], type=pa.list_(pa.string())),
        }
    )


def write_stream(table: pa.Table, path: Path, batch_rows: int) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    data = path.read_bytes()
    ids = table.column("input_ids").combine_chunks().flatten().to_numpy()
    seg = table.column("segment").combine_chunks().flatten().to_numpy()
    return {
        "rows": table.num_rows,
        "tokens": int(ids.size),
        "real_tokens": int((seg != PAD).sum()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }


def make_shards(
    root: Path,
    *,
    seq_len: int = 256,
    samples: int = 1500,
    vocab_size: int = 512,
    val_fraction: float = 0.1,
    rows_per_shard: int = 200,
    batch_rows: int = 64,
    mask_prompt: bool = True,
    seed: int = 0,
    name: str = "test",
) -> ShardSet:
    """Write OUTPUT folder `root` (index.json, tokenizer.json, shards/, shards-val/) and describe it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data = load_samples(samples, seed)
    tok = train_tokenizer([t for s in data for t in s], vocab_size)
    tok.save(str(root / "tokenizer.json"))
    docs = [(*render(tok, s), f"gsm8k/train.jsonl:{i}") for i, s in enumerate(data)]
    n_val = int(len(docs) * val_fraction)
    splits = {"val": docs[:n_val], "train": docs[n_val:]}
    pad_id = tok.token_to_id("<pad>")
    shards, totals = [], {}
    for split, split_docs in splits.items():
        if not split_docs:
            continue
        table = pack(split_docs, seq_len, pad_id, mask_prompt)
        folder = "shards" if split == "train" else "shards-val"
        real = 0
        for k, start in enumerate(range(0, table.num_rows, rows_per_shard)):
            rel = f"{folder}/{k:05d}.arrow"
            info = write_stream(table.slice(start, rows_per_shard), root / rel, batch_rows)
            shards.append({"path": rel, "split": split, **info})
            real += info["real_tokens"]
        tokens = table.num_rows * seq_len
        totals[split] = {
            "windows": table.num_rows,
            "tokens": tokens,
            "real_tokens": real,
            "packing_efficiency": real / tokens,
            "samples": len(split_docs),
        }
    tok_bytes = (root / "tokenizer.json").read_bytes()
    index = {
        "format_version": 1,
        "tool_version": "0.1.0",
        "name": name,
        "seq_len": seq_len,
        "compression": None,
        "tokenizer": {
            "path": "tokenizer.json",
            "sha256": hashlib.sha256(tok_bytes).hexdigest(),
            "vocab_size": tok.get_vocab_size(),
            "special_ids": {k: tok.token_to_id(s) for k, s in zip(SPECIAL_KEYS, SPECIALS)},
        },
        "shards": shards,
        "totals": totals,
        "stages": [],
    }
    (root / "index.json").write_text(json.dumps(index, sort_keys=True, indent=1))
    return ShardSet(
        root=root,
        seq_len=seq_len,
        vocab_size=tok.get_vocab_size(),
        train_windows=totals["train"]["windows"],
        val_windows=totals.get("val", {}).get("windows", 0),
    )


def unigram_entropy(root: Path, split: str = "train") -> float:
    """Entropy (nats) of the empirical unigram distribution of the trained-on target tokens of a split.

    The target of position t is token t+1 of the same window where loss_mask[t+1] == 1 (what the trainer scores);
    a model that only learnt token frequencies reaches exactly this cross-entropy.
    """
    index = json.loads((Path(root) / "index.json").read_text())
    counts = np.zeros(index["tokenizer"]["vocab_size"], dtype=np.int64)
    for s in index["shards"]:
        if s["split"] != split:
            continue
        with pa.memory_map(str(Path(root) / s["path"])) as src:
            table = pa.ipc.open_stream(src).read_all()
        seq = index["seq_len"]
        ids = table.column("input_ids").combine_chunks().flatten().to_numpy().reshape(-1, seq)
        mask = table.column("loss_mask").combine_chunks().flatten().to_numpy().reshape(-1, seq)
        counts += np.bincount(ids[:, 1:][mask[:, 1:] == 1], minlength=counts.size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
