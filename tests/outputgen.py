"""Build small but complete OUTPUT folders (shards, samples, tokenizer, index) for tests and benchmarks.

Written straight to the BRIEF contract with pyarrow, so `reasonpipe inspect` can be tested before the real pipeline
writes outputs. Two front doors:

- `make_output(dir, ...)`: trains a tiny byte-level BPE, renders chat samples with the chat template (segments and
  loss mask), AP-trims them to the context, packs them (atomic chat samples never split, plain documents split to
  fill the gaps), and writes shards/, shards-val/, samples/, tokenizer.json and index.json.
- `make_synthetic_output(dir, target_bytes, ...)`: the same layout at benchmark scale (random token ids in the
  same template), ~`target_bytes` of shards in seconds.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from reasonpipe.tokenizer.shards import COLUMNS as SHARD_SCHEMA_COLUMNS
from reasonpipe.tokenizer.shards import sha256_file, shard_schema

SPECIALS = [
    "<|bos|>",
    "<|eos|>",
    "<|pad|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end_turn|>",
    "<think>",
    "</think>",
]
SPECIAL_KEYS = ["bos", "eos", "pad", "system", "user", "assistant", "end_turn", "think_open", "think_close"]
PAD, PLAIN, PROMPT, REASONING, ANSWER, TEMPLATE = 0, 1, 2, 3, 4, 5

WORDS = (
    "the of a to is in we that let so number sum prime proof step check then therefore answer equation value "
    "function compute total each two three five seven times plus minus equals because since hence thus case "
    "first second next finally verify result integer even odd square root divide remainder list loop return"
).split()


# ---------------------------------------------------------------------------------------------------- samples
@dataclass
class Sample:
    """One sample before packing: its pieces (segment kind, token ids, loss) and metadata."""

    id: str
    source: str
    domain: str
    kind: str  # "chat" (atomic) | "text" (plain, may be split)
    turns: list[tuple[str, list[int], list[int] | None]] = field(default_factory=list)  # (role, content, reasoning)
    text_ids: list[int] = field(default_factory=list)


def render(s: Sample, sp: dict[str, int], keep: list[int | None] | None, mask_prompt: bool) -> tuple[list, list, list]:
    """Chat template -> (ids, segment, loss). keep[i]: reasoning tokens kept in turn i (None: no think block)."""
    ids: list[int] = []
    seg: list[int] = []

    def put(tokens: list[int], kind: int) -> None:
        ids.extend(tokens)
        seg.extend([kind] * len(tokens))

    if s.kind == "text":
        put([sp["bos"]], TEMPLATE)
        put(s.text_ids, PLAIN)
        put([sp["eos"]], TEMPLATE)
    else:
        put([sp["bos"]], TEMPLATE)
        for i, (role, content, reasoning) in enumerate(s.turns):
            put([sp[role]], TEMPLATE)
            if role == "assistant":
                if keep is not None:
                    k = keep[i]
                else:
                    k = len(reasoning) if reasoning is not None else None
                if reasoning is not None and k is not None:
                    put([sp["think_open"]], TEMPLATE)
                    put(reasoning[:k], REASONING)
                    put([sp["think_close"]], TEMPLATE)
                put(content, ANSWER)
            else:
                put(content, PROMPT)
            put([sp["end_turn"]], TEMPLATE)
        put([sp["eos"]], TEMPLATE)
    loss = [0 if (mask_prompt and k == PROMPT) else 1 for k in seg]
    return ids, seg, loss


def ap_trim(s: Sample, sp: dict[str, int], context: int) -> tuple[str, list[int | None] | None, int]:
    """AP trimming (tail policy): returns (status, keep, dropped_thinks); keep=None means unchanged."""
    full = len(render(s, sp, None, False)[0])
    if full <= context:
        return "fit", None, 0
    asst = [i for i, t in enumerate(s.turns) if t[0] == "assistant" and t[2] is not None]
    keep: list[int | None] = [len(t[2]) if t[2] is not None else None for t in s.turns]
    dropped = 0
    for attempt in range(2):  # 0: cut the last trace's tail; 1: also remove earlier think blocks
        if attempt == 1:
            for i in asst[:-1]:
                keep[i] = None
                dropped += 1
        if asst:
            last = asst[-1]
            keep[last] = len(s.turns[last][2])
            excess = len(render(s, sp, keep, False)[0]) - context
            if excess <= keep[last]:
                keep[last] = keep[last] - max(excess, 0)
                return "trimmed", keep, dropped
    return "dropped", None, dropped


def random_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def synthetic_corpus(rng: random.Random, n_chat: int, n_plain: int) -> list[dict]:
    """Records in canonical form: chat samples (1-2 assistant turns with reasoning) and plain documents."""
    recs: list[dict] = []
    domains = [("reasoning", "openthoughts"), ("math", "gsm8k"), ("code", "leetcode")]
    for i in range(n_chat):
        domain, source = domains[i % len(domains)]
        turns = []
        if i % 5 == 0:
            turns.append({"role": "system", "content": "you are a careful solver", "reasoning": None})
        for _ in range(2 if i % 4 == 0 else 1):
            turns.append({"role": "user", "content": random_text(rng, rng.randint(4, 25)), "reasoning": None})
            long = rng.random() < 0.35
            turns.append(
                {
                    "role": "assistant",
                    "content": "answer " + random_text(rng, rng.randint(1, 8)),
                    "reasoning": random_text(rng, rng.randint(60, 200) if long else rng.randint(5, 40)),
                }
            )
        if i % 11 == 3:  # prompt alone too long: AP trimming must drop it
            turns[-2]["content"] = random_text(rng, 150)
        recs.append({"id": f"{source}/train.jsonl:{i}", "source": source, "domain": domain, "turns": turns})
    for i in range(n_plain):
        source, domain = ("peps", "web") if i % 2 else ("stacks", "math")
        text = random_text(rng, rng.randint(10, 150))
        recs.append({"id": f"{source}/docs.jsonl:{i}", "source": source, "domain": domain, "text": text})
    return recs


def real_corpus(root: Path, n_chat: int, n_plain: int) -> list[dict]:
    """Records from /work/shared/data/real: GSM8K as chat (solution = reasoning, `#### n` = answer), PEPs as text."""
    recs: list[dict] = []
    with open(root / "math" / "gsm8k_train.jsonl") as f:
        for i, line in zip(range(n_chat), f):
            r = json.loads(line)
            reasoning, _, answer = r["answer"].rpartition("####")
            turns = [
                {"role": "user", "content": r["question"], "reasoning": None},
                {"role": "assistant", "content": answer.strip(), "reasoning": reasoning.strip()},
            ]
            recs.append({"id": f"gsm8k/train.jsonl:{i}", "source": "gsm8k", "domain": "math", "turns": turns})
    with open(root / "prose" / "python_peps_paragraphs_6k.jsonl") as f:
        for i, line in zip(range(n_plain), f):
            recs.append(
                {"id": f"peps/p.jsonl:{i}", "source": "peps", "domain": "web", "text": json.loads(line)["text"]}
            )
    return recs


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Tiny byte-level BPE with the reasonpipe special tokens at ids 0..8 (in SPECIALS order)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return tok


# ---------------------------------------------------------------------------------------------------- packing
@dataclass
class Packed:
    ids: np.ndarray  # (windows, seq_len) uint32
    seg: np.ndarray
    loss: np.ndarray
    offsets: list[list[int]]
    sample_ids: list[list[str]]
    start_window: dict[str, int]  # sample id -> window where it starts
    split_documents: int


def pack(atomic: list[tuple], plain: list[tuple], seq_len: int, pad: int) -> Packed:
    """Greedy packing. Items: (id, ids, seg, loss) numpy arrays. Atomic items never straddle a window; plain
    documents fill the space atomic items leave, and a split document continues at offset 0 of the next window."""
    windows: list[list[tuple]] = [[]]
    used = [0]
    start: dict[str, int] = {}
    split_ids: set[str] = set()
    plain_iter: Iterator[tuple] = iter(plain)
    pending: tuple | None = None  # remainder of a plain document being split

    def place(item: tuple) -> None:
        start.setdefault(item[0], len(windows) - 1)
        windows[-1].append(item)
        used[-1] += len(item[1])

    def new_window() -> None:
        windows.append([])
        used.append(0)

    def put_plain(item: tuple) -> None:  # place what fits, keep the rest pending
        nonlocal pending
        room = seq_len - used[-1]
        if len(item[1]) <= room:
            place(item)
        else:
            place((item[0], *(a[:room] for a in item[1:])))
            pending = (item[0], *(a[room:] for a in item[1:]))
            split_ids.add(item[0])

    def fill() -> None:  # top up the current window with plain tokens
        nonlocal pending
        while used[-1] < seq_len:
            item, pending = (pending if pending is not None else next(plain_iter, None)), None
            if item is None:
                return
            put_plain(item)

    def continue_pending() -> None:  # a split document goes on at the start of the following windows
        nonlocal pending
        while pending is not None:
            item, pending = pending, None
            put_plain(item)
            if pending is not None:
                new_window()

    for item in atomic:
        while len(item[1]) > seq_len - used[-1]:
            fill()
            new_window()
            continue_pending()
        place(item)
    fill()
    while pending is not None:
        new_window()
        continue_pending()
        fill()
    if not windows[-1]:
        windows.pop()
    split = len(split_ids)

    n = len(windows)
    ids = np.full((n, seq_len), pad, np.uint32)
    seg = np.zeros((n, seq_len), np.uint8)
    loss = np.zeros((n, seq_len), np.uint8)
    offsets, sids = [], []
    for w, items in enumerate(windows):
        pos, offs, names = 0, [], []
        for sid, a, s, m in items:
            ids[w, pos : pos + len(a)] = a
            seg[w, pos : pos + len(a)] = s
            loss[w, pos : pos + len(a)] = m
            offs.append(pos)
            names.append(sid)
            pos += len(a)
        offsets.append(offs)
        sids.append(names)
    return Packed(ids, seg, loss, offsets, sids, start, split)


# ---------------------------------------------------------------------------------------------------- writing


def write_shards(
    out: Path, split: str, p: Packed, rows_per_shard: int, compression: str | None, batch_rows: int = 256
) -> list[dict]:
    """Write `p` as shards/NNNNN.arrow (or shards-val/) IPC stream files; returns the index.json shard entries."""
    folder = out / ("shards" if split == "train" else "shards-val")
    folder.mkdir(parents=True, exist_ok=True)
    seq_len = p.ids.shape[1]
    schema = shard_schema(seq_len)
    entries = []
    opts = pa.ipc.IpcWriteOptions(compression=compression)
    for k, lo in enumerate(range(0, len(p.ids), rows_per_shard)):
        hi = min(lo + rows_per_shard, len(p.ids))
        path = folder / f"{k:05d}.arrow"
        with pa.ipc.new_stream(str(path), schema, options=opts) as w:
            for b in range(lo, hi, batch_rows):
                e = min(b + batch_rows, hi)
                cols = [
                    pa.FixedSizeListArray.from_arrays(pa.array(p.ids[b:e].ravel(), pa.uint32()), seq_len),
                    pa.FixedSizeListArray.from_arrays(pa.array(p.loss[b:e].ravel(), pa.uint8()), seq_len),
                    pa.FixedSizeListArray.from_arrays(pa.array(p.seg[b:e].ravel(), pa.uint8()), seq_len),
                    pa.array(p.offsets[b:e], pa.list_(pa.uint32())),
                    pa.array(p.sample_ids[b:e], pa.list_(pa.string())),
                ]
                w.write_batch(pa.record_batch(cols, schema=schema))
        rows = hi - lo
        entries.append(
            {
                "path": f"{folder.name}/{k:05d}.arrow",
                "split": split,
                "rows": rows,
                "tokens": rows * seq_len,
                "real_tokens": int(np.count_nonzero(p.seg[lo:hi])),
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
            }
        )
    return entries


SAMPLES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("upstream_id", pa.string()),
        ("problem_key", pa.string()),
        ("copy_of", pa.string()),
        ("split", pa.string()),
        ("status", pa.string()),
        ("tokens_before", pa.uint32()),
        ("tokens_after", pa.uint32()),
        ("reasoning_before", pa.uint32()),
        ("reasoning_kept", pa.uint32()),
        ("dropped_thinks", pa.uint16()),
        ("shard", pa.int32()),
        ("row", pa.int32()),
    ]
)


def write_samples(out: Path, rows: list[dict], per_file: int) -> None:
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for k, lo in enumerate(range(0, max(len(rows), 1), per_file)):
        table = pa.Table.from_pylist(rows[lo : lo + per_file], schema=SAMPLES_SCHEMA)
        pq.write_table(table, out / "samples" / f"{k:05d}.parquet")


def split_of(sample_id: str, val_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


def finish_output(
    out: Path,
    name: str,
    seq_len: int,
    context: int,
    compression: str | None,
    vocab_size: int,
    special_ids: dict[str, int],
    shards: list[dict],
    samples: list[dict],
    packing: dict,
    stages: list[dict],
    mixture_target: dict[str, float] | None,
) -> None:
    """Totals, trim and mixture summaries from the samples, then index.json (sorted keys, atomic write)."""
    totals = {}
    for split in ("train", "val"):
        ss = [s for s in shards if s["split"] == split]
        tok = sum(s["tokens"] for s in ss)
        real = sum(s["real_tokens"] for s in ss)
        totals[split] = {
            "windows": sum(s["rows"] for s in ss),
            "tokens": tok,
            "real_tokens": real,
            "packing_efficiency": real / tok if tok else 0.0,
            "samples": sum(1 for s in samples if s["split"] == split and s["status"] != "dropped"),
        }
    chat = [s for s in samples if s["status"] != "plain"]
    trim = {
        "context": context,
        "policy": "tail",
        "samples": len(chat),
        **{k: sum(1 for s in chat if s["status"] == k) for k in ("fit", "trimmed", "dropped")},
        **{
            k: sum(s[k] for s in chat) for k in ("tokens_before", "tokens_after", "reasoning_before", "reasoning_kept")
        },
    }
    by_domain: dict[str, int] = {}
    for s in samples:
        if s["status"] != "dropped":
            by_domain[s["domain"]] = by_domain.get(s["domain"], 0) + s["tokens_after"]
    total = sum(by_domain.values()) or 1
    manifest = {"name": name, "output": {"seq_len": seq_len, "compression": compression}, "trim": {"context": context}}
    index = {
        "format_version": 1,
        "tool_version": "0.1.0",
        "name": name,
        "seq_len": seq_len,
        "compression": compression,
        "tokenizer": {
            "path": "tokenizer.json",
            "sha256": sha256_file(out / "tokenizer.json"),
            "vocab_size": vocab_size,
            "special_ids": special_ids,
        },
        "shards": shards,
        "totals": totals,
        "stages": stages,
        "trim": trim,
        "packing": packing,
        "mixture": {
            "by": "domain",
            "target": mixture_target,
            "achieved": {d: {"tokens": t, "share": t / total} for d, t in sorted(by_domain.items())},
        },
        "decontamination": {"gsm8k_test": 0, "humaneval": 0},
        "manifest": manifest,
        "manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
    }
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, sort_keys=True, indent=1), encoding="utf-8")
    tmp.replace(out / "index.json")


def fake_stages(n_samples: int, seed: int) -> list[dict]:
    """Per-stage accounting that obeys read = kept + rejected + duplicates."""
    rng = random.Random(seed)
    stages = []
    kept = n_samples
    specs = [
        ("read", "jsonl_reader", ["malformed_json", "invalid_utf8"], False),
        ("quality", "quality_filter", ["too_short", "low_alpha_ratio", "repetition"], False),
        ("dedup-minhash", "minhash_dedup", [], True),
        ("decontaminate", "decontamination", ["benchmark_overlap"], False),
    ]
    for label, stage, reasons, dup in reversed(specs):  # walk back from the survivors to the raw read count
        rejected = {r: rng.randint(1, 9) for r in reasons}
        duplicates = rng.randint(1, 9) if dup else 0
        read = kept + sum(rejected.values()) + duplicates
        stages.append(
            {
                "label": label,
                "stage": stage,
                "read": read,
                "kept": kept,
                "rejected": rejected,
                "duplicates": duplicates,
                "extra": {},
            }
        )
        kept = read
    return stages[::-1]


def _special_ids(tok: Tokenizer) -> dict[str, int]:
    return {k: tok.token_to_id(t) for k, t in zip(SPECIAL_KEYS, SPECIALS)}


def _emit(
    out: Path,
    name: str,
    seq_len: int,
    context: int,
    compression: str | None,
    vocab_size: int,
    sp: dict[str, int],
    items: list[tuple[dict, tuple | None]],
    rows_per_shard: int,
    samples_per_file: int,
    seed: int,
    mixture_target: dict[str, float] | None,
) -> Path:
    """items: (sample row without shard/row, packed item (id, ids, seg, loss) or None if dropped)."""
    rows = [r for r, _ in items]
    shards: list[dict] = []
    split_docs = 0
    for split in ("train", "val"):
        atomic = [it for r, it in items if it is not None and r["split"] == split and r["status"] != "plain"]
        plain = [it for r, it in items if it is not None and r["split"] == split and r["status"] == "plain"]
        if not atomic and not plain:
            continue
        p = pack(atomic, plain, seq_len, sp["pad"])
        split_docs += p.split_documents
        shards += write_shards(out, split, p, rows_per_shard, compression)
        for r in rows:
            if r["split"] == split and r["id"] in p.start_window:
                w = p.start_window[r["id"]]
                r["shard"], r["row"] = w // rows_per_shard, w % rows_per_shard
    write_samples(out, rows, samples_per_file)
    windows = sum(s["rows"] for s in shards)
    tok = sum(s["tokens"] for s in shards)
    real = sum(s["real_tokens"] for s in shards)
    packing = {
        "seq_len": seq_len,
        "windows": windows,
        "efficiency": real / tok if tok else 0.0,
        "pad_tokens": tok - real,
        "split_documents": split_docs,
    }
    stages = fake_stages(len(rows), seed)
    finish_output(
        out, name, seq_len, context, compression, vocab_size, sp, shards, rows, packing, stages, mixture_target
    )
    return out


def make_output(
    out: str | Path,
    *,
    seq_len: int = 128,
    context: int | None = None,
    n_chat: int = 60,
    n_plain: int = 30,
    val_fraction: float = 0.15,
    rows_per_shard: int = 8,
    samples_per_file: int = 50,
    vocab_size: int = 400,
    compression: str | None = None,
    mask_prompt: bool = True,
    seed: int = 0,
    real_data: Path | None = None,
    name: str = "test",
) -> Path:
    """Write a complete OUTPUT folder to `out` and return its path (deterministic for a given seed).

    `context` (default: seq_len) is the AP-trimming budget; it must be <= seq_len since atomic samples fit in one
    window. `real_data`: a folder laid out like /work/shared/data/real to use real GSM8K/PEP text instead of
    synthetic text.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    context = context or seq_len
    assert context <= seq_len, "atomic samples must fit in one window"
    rng = random.Random(seed)
    recs = real_corpus(real_data, n_chat, n_plain) if real_data else synthetic_corpus(rng, n_chat, n_plain)
    texts = [t["content"] + " " + (t["reasoning"] or "") for r in recs for t in r.get("turns", [])]
    texts += [r["text"] for r in recs if "text" in r]
    tok = train_tokenizer(texts, vocab_size)
    tok.save(str(out / "tokenizer.json"))
    sp = _special_ids(tok)

    def enc(s: str) -> list[int]:
        return tok.encode(s, add_special_tokens=False).ids

    items: list[tuple[dict, tuple | None]] = []
    for r in recs:
        if "turns" in r:
            turns = [
                (t["role"], enc(t["content"]), enc(t["reasoning"]) if t["reasoning"] else None) for t in r["turns"]
            ]
            s = Sample(r["id"], r["source"], r["domain"], "chat", turns=turns)
        else:
            s = Sample(r["id"], r["source"], r["domain"], "text", text_ids=enc(r["text"]))
        full = render(s, sp, None, mask_prompt)
        reasoning_before = sum(len(t[2]) for t in s.turns if t[2] is not None)
        if s.kind == "text":
            status, keep, dropped = "plain", None, 0
        else:
            status, keep, dropped = ap_trim(s, sp, context)
        ids, seg, loss = render(s, sp, keep, mask_prompt) if status != "dropped" else ([], [], [])
        row = {
            "id": s.id,
            "source": s.source,
            "domain": s.domain,
            "split": split_of(s.id, val_fraction),
            "status": status,
            "tokens_before": len(full[0]),
            "tokens_after": len(ids),
            "reasoning_before": reasoning_before,
            "reasoning_kept": sum(1 for k in seg if k == REASONING),
            "dropped_thinks": dropped,
            "shard": -1,
            "row": -1,
        }
        packed = None
        if status != "dropped":
            packed = (s.id, np.array(ids, np.uint32), np.array(seg, np.uint8), np.array(loss, np.uint8))
        items.append((row, packed))
    target = {"reasoning": 0.5, "math": 0.3, "code": 0.1, "web": 0.1}
    return _emit(
        out, name, seq_len, context, compression, tok.get_vocab_size(), sp, items, rows_per_shard,
        samples_per_file, seed, target,
    )  # fmt: skip


def make_synthetic_output(
    out: str | Path,
    *,
    target_bytes: int = 1 << 30,
    seq_len: int = 4096,
    rows_per_shard: int = 2048,
    vocab_size: int = 2000,
    seed: int = 0,
    val_fraction: float = 0.02,
) -> Path:
    """Benchmark-scale OUTPUT: random token ids in the chat/plain templates, ~target_bytes of shards."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer([" ".join(WORDS)] * 20, 400)
    tok.save(str(out / "tokenizer.json"))
    sp = _special_ids(tok)
    vocab = tok.get_vocab_size()
    rng = np.random.default_rng(seed)
    bytes_per_window = seq_len * 6 + 64
    n_windows = max(1, target_bytes // bytes_per_window)
    tokens_needed = int(n_windows * seq_len * 0.97)  # packing leaves a few pads
    t5 = np.uint8(TEMPLATE)
    items: list[tuple[dict, tuple | None]] = []
    made = 0
    i = 0
    domains = [("reasoning", "openthoughts"), ("web", "fineweb"), ("math", "numina"), ("code", "leetcode")]
    domains += [("web", "fineweb"), ("web", "fineweb-edu")]  # plain text fills the gaps atomic samples leave
    while made < tokens_needed:
        domain, source = domains[i % len(domains)]
        sid = f"{source}/part-{i // 100000:03d}.jsonl:{i}"
        if domain == "web":
            body = rng.integers(9, vocab, int(rng.integers(200, 3000)), dtype=np.uint32)
            ids = np.concatenate([[sp["bos"]], body, [sp["eos"]]]).astype(np.uint32)
            seg = np.full(len(ids), PLAIN, np.uint8)
            seg[0] = seg[-1] = t5
            row_status, rb, rk, before = "plain", 0, 0, len(ids)
        else:
            p, r, a = (int(x) for x in rng.integers([20, 50, 5], [400, 6000, 200]))
            before = p + r + a + 8
            rk = min(r, max(0, seq_len - (p + a + 8)))
            row_status, rb = ("fit" if rk == r else "trimmed"), r
            head = [sp["bos"], sp["user"]]
            parts = [
                (np.array(head, np.uint32), t5),
                (rng.integers(9, vocab, p, dtype=np.uint32), PROMPT),
                (np.array([sp["end_turn"], sp["assistant"], sp["think_open"]], np.uint32), t5),
                (rng.integers(9, vocab, rk, dtype=np.uint32), REASONING),
                (np.array([sp["think_close"]], np.uint32), t5),
                (rng.integers(9, vocab, a, dtype=np.uint32), ANSWER),
                (np.array([sp["end_turn"], sp["eos"]], np.uint32), t5),
            ]
            ids = np.concatenate([x for x, _ in parts])
            seg = np.concatenate([np.full(len(x), k, np.uint8) for x, k in parts])
        loss = (seg != PROMPT).astype(np.uint8)
        row = {
            "id": sid,
            "source": source,
            "domain": domain,
            "split": split_of(sid, val_fraction),
            "status": row_status,
            "tokens_before": before,
            "tokens_after": len(ids),
            "reasoning_before": rb,
            "reasoning_kept": rk,
            "dropped_thinks": 0,
            "shard": -1,
            "row": -1,
        }
        items.append((row, (sid, ids, seg, loss)))
        made += len(ids)
        i += 1
    return _emit(out, "bench", seq_len, seq_len, None, vocab, sp, items, rows_per_shard, 200_000, seed, None)


# ---------------------------------------------------------------------------------------------------- tampering
def rewrite_shard(out: str | Path, rel_path: str, edit) -> None:  # noqa: ANN001 - edit(dict) -> None
    """Rewrite one shard after `edit(cols)` mutates its columns in place, then re-sign index.json (sha256, bytes,
    real tokens, totals) so that only content-level checks (e.g. the AP invariant) can notice the change.
    cols: input_ids / loss_mask / segment as (rows, seq_len) numpy arrays, doc_offsets / sample_ids as lists."""
    out = Path(out)
    path = out / rel_path
    with pa.memory_map(str(path)) as src:
        t = pa.ipc.open_stream(src).read_all()
    seq_len = t.schema.field("input_ids").type.list_size
    cols = {
        c: t.column(c).combine_chunks().flatten().to_numpy().reshape(-1, seq_len).copy()
        for c in SHARD_SCHEMA_COLUMNS[:3]
    }
    cols |= {c: t.column(c).to_pylist() for c in SHARD_SCHEMA_COLUMNS[3:]}
    edit(cols)
    p = Packed(cols["input_ids"], cols["segment"], cols["loss_mask"], cols["doc_offsets"], cols["sample_ids"], {}, 0)
    index = json.loads((out / "index.json").read_text())
    entry = next(e for e in index["shards"] if e["path"] == rel_path)
    tmp = out / "_rewrite"
    new = write_shards(tmp, entry["split"], p, rows_per_shard=len(p.ids), compression=index["compression"])[0]
    (tmp / new["path"]).replace(path)
    entry.update({k: new[k] for k in ("rows", "tokens", "real_tokens", "sha256", "bytes")})
    for split, tot in index["totals"].items():
        ss = [e for e in index["shards"] if e["split"] == split]
        tot["real_tokens"] = sum(e["real_tokens"] for e in ss)
        tot["packing_efficiency"] = tot["real_tokens"] / tot["tokens"] if tot["tokens"] else 0.0
    (out / "index.json").write_text(json.dumps(index, sort_keys=True, indent=1))
