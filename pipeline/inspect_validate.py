"""`reasonpipe inspect --validate`: check an OUTPUT folder against the shard contract; returns a list of problems.

Checks (each problem names where it is and what is wrong):
- index.json: parses, matches the schema (pydantic), totals equal the sums over its shards and over samples/;
- tokenizer.json: present, sha256 and vocab size as indexed, and the tokenizer the shards were encoded with (the
  sha256 the tokenise run recorded, index.json `encoded_with_tokenizer_sha256`);
- every indexed shard: present, size and sha256 as indexed (truncation, flipped bytes), readable, column names and
  types per contract, window length = seq_len, rows / tokens / real tokens as indexed, token ids < vocab size,
  segment kinds 0..5, pads carry the pad id and no loss, doc_offsets start at 0, increase, match sample_ids;
  shard files on disk that the index does not list;
- samples/: schema, unique ids, statuses, dropped <=> no window, each sample found where samples/ says it starts,
  no problem key in both splits;
- no window holds two copies of one sample (a mixture copy `copy_of` its original, or two copies of it);
- the AP invariant: every atomic (fit/trimmed) sample lies whole in one window, never continues into the next,
  and its tokens hold its prompt and answer intact: starts with BOS, has prompt tokens, its answer runs up to the
  closing end-of-turn/EOS template, token count and kept reasoning tokens as samples/ records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError

from reasonpipe.pipeline.inspect_stats import ATOMIC_STATUSES, SPLIT_DIRS, flat, samples_frame
from reasonpipe.tokenizer.shards import sha256_file, shard_schema

CHUNK_ROWS = 1024  # windows checked at once (bounds memory on long windows)


@dataclass(frozen=True)
class Problem:
    where: str  # shard path, "index.json", "tokenizer.json" or "samples"
    check: str  # short name of the failed check
    message: str

    def __str__(self) -> str:
        return f"{self.where}: [{self.check}] {self.message}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- schemas
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpecialIds(_Strict):
    bos: NonNegativeInt
    eos: NonNegativeInt
    pad: NonNegativeInt
    system: NonNegativeInt
    user: NonNegativeInt
    assistant: NonNegativeInt
    end_turn: NonNegativeInt
    think_open: NonNegativeInt
    think_close: NonNegativeInt


class TokenizerEntry(_Strict):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    vocab_size: PositiveInt
    special_ids: SpecialIds


class ShardEntry(_Strict):
    path: str
    split: Literal["train", "val"]
    rows: NonNegativeInt
    tokens: NonNegativeInt
    real_tokens: NonNegativeInt
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: NonNegativeInt


class SplitTotals(_Strict):
    windows: NonNegativeInt
    tokens: NonNegativeInt
    real_tokens: NonNegativeInt
    packing_efficiency: float = Field(ge=0.0, le=1.0)
    samples: NonNegativeInt


class IndexModel(BaseModel):
    model_config = ConfigDict(extra="allow")  # trim/packing/mixture/manifest... are reported, not enforced here
    format_version: Literal[1]
    tool_version: str
    name: str
    seq_len: PositiveInt
    compression: Literal["lz4", "zstd"] | None
    tokenizer: TokenizerEntry
    shards: list[ShardEntry]
    totals: dict[Literal["train", "val"], SplitTotals]
    stages: list[dict[str, Any]]


SAMPLES_COLUMNS = {
    "id": pa.string(),
    "source": pa.string(),
    "domain": pa.string(),
    "upstream_id": pa.string(),
    "problem_key": pa.string(),
    "copy_of": pa.string(),
    "split": pa.string(),
    "status": pa.string(),
    "tokens_before": pa.uint32(),
    "tokens_after": pa.uint32(),
    "reasoning_before": pa.uint32(),
    "reasoning_kept": pa.uint32(),
    "dropped_thinks": pa.uint16(),
    "shard": pa.int32(),
    "row": pa.int32(),
}
STATUSES = (*ATOMIC_STATUSES, "dropped", "plain")


def _same_type(found: pa.DataType, expected: pa.DataType) -> bool:
    """Exact type match, except that any string flavour (large_string from polars, string_view) is a string."""
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found) or pa.types.is_string_view(found)
    return found.equals(expected)


# ---------------------------------------------------------------------------------------------------- index
def _load_index(out: Path, problems: list[Problem]) -> IndexModel | None:
    path = out / "index.json"
    if not path.is_file():
        problems.append(Problem("index.json", "missing", f"{path} does not exist"))
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(Problem("index.json", "json", f"not valid UTF-8 JSON: {e}"))
        return None
    try:
        return IndexModel.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            problems.append(Problem("index.json", "schema", f"{loc}: {err['msg']} (found {err.get('input')!r})"))
        return None


def _check_tokenizer(out: Path, index: IndexModel, problems: list[Problem]) -> None:
    entry = index.tokenizer
    path = out / entry.path
    if not path.is_file():
        problems.append(Problem(entry.path, "missing", "tokenizer file listed in index.json does not exist"))
        return
    if (digest := sha256_file(path)) != entry.sha256:
        problems.append(Problem(entry.path, "checksum", f"sha256 {digest} != index.json {entry.sha256}"))
    encoded = (index.model_extra or {}).get("encoded_with_tokenizer_sha256")
    if encoded is not None and encoded != digest:
        problems.append(
            Problem(
                entry.path,
                "encoded_with",
                f"sha256 {digest[:12]}, but the shards were encoded with the tokenizer of sha256 {encoded[:12]} "
                "(index.json encoded_with_tokenizer_sha256): decoding them with this one gives garbage",
            )
        )
    try:
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(path)).get_vocab_size()
    except Exception as e:  # noqa: BLE001 - any load failure is the finding
        problems.append(Problem(entry.path, "unreadable", f"tokenizers cannot load it: {e}"))
        return
    if vocab != entry.vocab_size:
        problems.append(
            Problem(entry.path, "vocab_size", f"tokenizer has {vocab} tokens, index.json says {entry.vocab_size}")
        )
    for key, tid in entry.special_ids.model_dump().items():
        if tid >= entry.vocab_size:
            problems.append(Problem("index.json", "special_ids", f"{key}={tid} >= vocab_size {entry.vocab_size}"))


# ---------------------------------------------------------------------------------------------------- shards
@dataclass
class _ShardScan:
    rows: int = 0
    tokens: int = 0
    real_tokens: int = 0
    docs: list[pl.DataFrame] | None = None
    ok: bool = True  # structure valid enough for the AP check


def _check_chunk(
    where: str, batch: pa.RecordBatch, row0: int, index: IndexModel, scan: _ShardScan, problems: list[Problem]
) -> None:
    """Token-level checks of `batch` (rows row0..) and one docs row per (window, document) for the AP check."""
    L, sp, vocab = index.seq_len, index.tokenizer.special_ids, index.tokenizer.vocab_size
    n = batch.num_rows
    ids, loss, seg = (flat(batch.column(c)) for c in ("input_ids", "loss_mask", "segment"))
    scan.rows += n
    scan.tokens += seg.size
    scan.real_tokens += int(np.count_nonzero(seg))

    def first_row(bad: np.ndarray) -> int:
        return row0 + int(np.argmax(bad.reshape(n, L).any(axis=1)))

    if seg.size and (m := int(ids.max())) >= vocab:
        problems.append(Problem(where, "token_ids", f"row {first_row(ids >= vocab)}: token id {m} >= vocab {vocab}"))
    if seg.size and int(seg.max()) > 5:
        problems.append(
            Problem(where, "segment", f"row {first_row(seg > 5)}: segment kind {int(seg.max())} not in 0..5")
        )
    pad = seg == 0
    if (bad := pad & (ids != sp.pad)).any():
        problems.append(Problem(where, "padding", f"row {first_row(bad)}: segment 0 (pad) holds a non-pad token id"))
    if (bad := pad & (loss != 0)).any():
        problems.append(Problem(where, "loss_mask", f"row {first_row(bad)}: loss_mask is 1 on padding"))

    offs_col, ids_col = batch.column("doc_offsets"), batch.column("sample_ids")
    lengths = offs_col.value_lengths().fill_null(0).to_numpy()
    if not np.array_equal(lengths, ids_col.value_lengths().fill_null(0).to_numpy()):
        r = row0 + int(np.argmax(lengths != ids_col.value_lengths().fill_null(0).to_numpy()))
        problems.append(Problem(where, "doc_offsets", f"row {r}: doc_offsets and sample_ids differ in length"))
        scan.ok = False
        return
    offs = offs_col.flatten().to_numpy().astype(np.int64)
    rows = np.repeat(np.arange(n), lengths)
    first = np.r_[0, np.cumsum(lengths)[:-1]]
    bad_rows = set(np.flatnonzero(lengths == 0).tolist())
    bad_rows |= set(rows[first[lengths > 0]][offs[first[lengths > 0]] != 0].tolist())
    same_row_next = np.r_[rows[1:] == rows[:-1], False]
    bad_rows |= set(rows[same_row_next & (np.r_[offs[1:], 0] <= offs)].tolist())
    bad_rows |= set(rows[offs >= L].tolist())
    if bad_rows:
        r = row0 + min(bad_rows)
        problems.append(
            Problem(where, "doc_offsets", f"row {r}: doc_offsets must start at 0, increase and stay < {L}")
        )
        scan.ok = False
        return
    # Documents partition each window: per-document counts via reduceat over the flat token arrays.
    g = rows * L + offs
    nonpad = np.add.reduceat(seg != 0, g, dtype=np.int64)
    count = {k: np.add.reduceat(seg == k, g, dtype=np.int64) for k in (2, 3, 4)}
    last = g + np.maximum(nonpad, 1) - 1  # last real token of each document (pads trail documents)
    n_tpl = np.where(ids[last] == sp.eos, 2, 1)  # answer ends before "<|end_turn|>" or "<|end_turn|> <|eos|>"
    end_turn_pos = np.maximum(last - n_tpl + 1, g)
    answer_end = np.maximum(end_turn_pos - 1, g)
    scan.docs.append(
        pl.DataFrame(
            {
                "sample_id": pl.from_arrow(ids_col.flatten()).cast(pl.String),
                "row": row0 + rows,
                "doc": np.arange(len(offs)) - first[rows],
                "start": offs,
                "n_real": nonpad,
                "n_prompt": count[2],
                "n_reasoning": count[3],
                "n_answer": count[4],
                "starts_bos": ids[g] == sp.bos,
                "ends_template": (ids[end_turn_pos] == sp.end_turn) & (nonpad >= 3),
                "answer_intact": seg[answer_end] == 4,
            }
        )
    )


def _check_shard(out: Path, entry: ShardEntry, index: IndexModel, problems: list[Problem]) -> pl.DataFrame | None:
    """File-level and token-level checks of one shard; returns its documents (sample_id, row, ...) or None."""
    where, path = entry.path, out / entry.path
    if not path.is_file():
        problems.append(Problem(where, "missing", "shard listed in index.json does not exist"))
        return None
    size = path.stat().st_size
    if size != entry.bytes:
        problems.append(Problem(where, "size", f"{size} bytes on disk, index.json says {entry.bytes} (truncated?)"))
    if (digest := sha256_file(path)) != entry.sha256:
        problems.append(Problem(where, "checksum", f"sha256 {digest} != index.json {entry.sha256} (corrupted)"))
    scan = _ShardScan(docs=[])
    expected = shard_schema(index.seq_len)
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            schema = reader.schema
            for field in expected:
                found = schema.field(field.name).type if field.name in schema.names else None
                if found is None or not found.equals(field.type):
                    problems.append(
                        Problem(where, "schema", f"column {field.name}: {found or 'missing'}, expected {field.type}")
                    )
                    scan.ok = False
            if not scan.ok:
                return None
            for batch in reader:
                for lo in range(0, batch.num_rows, CHUNK_ROWS):
                    _check_chunk(where, batch.slice(lo, CHUNK_ROWS), scan.rows, index, scan, problems)
    except (pa.ArrowException, OSError, KeyError) as e:
        problems.append(Problem(where, "unreadable", f"not a readable Arrow IPC stream: {type(e).__name__}: {e}"))
        return None
    for key in ("rows", "tokens", "real_tokens"):
        if getattr(scan, key) != getattr(entry, key):
            problems.append(
                Problem(where, key, f"{getattr(scan, key)} {key} in file, index.json says {getattr(entry, key)}")
            )
    if not scan.ok:
        return None
    return pl.concat(scan.docs) if scan.docs else None


# ---------------------------------------------------------------------------------------------------- samples
def _open_end(columns: list[str]) -> pl.Expr:
    """Per sample: its answer and end-of-turn may be missing by design: a Markovian chunk that is not the last of its
    chain (it ends mid-reasoning), or a sample of the "truncate" baseline (cut wherever the budget ends)."""
    truncated = pl.col("status") == "truncated"
    if "provenance" not in columns:
        return truncated.alias("open_end")
    last = pl.col("provenance").str.json_path_match("$.last")
    chunk = ((pl.col("builder") == "markovian_chunks") & (last == "false")).fill_null(False)
    return (chunk | truncated).alias("open_end")


def _load_samples(out: Path, problems: list[Problem]) -> pl.DataFrame | None:
    files = sorted((out / "samples").glob("*.parquet"))
    if not files:
        problems.append(Problem("samples", "missing", "no samples/*.parquet files"))
        return None
    ok = True
    for f in files:
        schema = pq.read_schema(f)
        for name, typ in SAMPLES_COLUMNS.items():
            if name not in schema.names:
                problems.append(Problem(f"samples/{f.name}", "schema", f"column {name} missing"))
                ok = False
            elif not _same_type(schema.field(name).type, typ):
                found = schema.field(name).type
                problems.append(Problem(f"samples/{f.name}", "schema", f"column {name}: {found}, expected {typ}"))
                ok = False
    if not ok:
        return None
    lf = samples_frame(out)
    df = lf.select(*SAMPLES_COLUMNS, _open_end(lf.collect_schema().names())).collect()
    if (n_dup := df.height - df["id"].n_unique()) > 0:
        problems.append(Problem("samples", "unique_ids", f"{n_dup} duplicate sample ids"))
    if (bad := df.filter(~pl.col("status").is_in(STATUSES))).height:
        problems.append(Problem("samples", "status", f"{bad['id'][0]}: status {bad['status'][0]!r} not in {STATUSES}"))
    if (bad := df.filter(~pl.col("split").is_in(list(SPLIT_DIRS)))).height:
        problems.append(Problem("samples", "split", f"{bad['id'][0]}: split {bad['split'][0]!r} not train/val"))
    packed = df.filter((pl.col("status") != "dropped") & pl.col("problem_key").is_not_null())
    leaks = packed.group_by("problem_key").agg(pl.col("split").n_unique().alias("n"), pl.col("id").first())
    if (bad := leaks.filter(pl.col("n") > 1)).height:
        r = bad.sort("id").row(0, named=True)
        problems.append(
            Problem("samples", "problem_split", f"{bad.height} problem(s) in both splits, e.g. that of {r['id']}")
        )
    placed = (pl.col("shard") >= 0) & (pl.col("row") >= 0)
    if (bad := df.filter((pl.col("status") == "dropped") == placed)).height:
        r = bad.row(0, named=True)
        problems.append(
            Problem("samples", "placement", f"{r['id']}: status {r['status']} with shard={r['shard']} row={r['row']}")
        )
    return df


def _check_samples_in_shard(
    where: str, docs: pl.DataFrame, samples: pl.DataFrame, prev_last: str | None, problems: list[Problem]
) -> None:
    """Each sample of this shard starts at its row; atomic samples are whole (the AP invariant)."""
    prev_in_row = pl.col("sample_id").shift(1)  # the previous document, possibly of the previous window
    docs = docs.sort(["row", "doc"]).with_columns(
        # a continuation: first document of a window with the id the previous window ended with
        continuation=(
            (pl.col("doc") == 0)
            & (pl.col("start") == 0)
            & (prev_in_row.fill_null(pl.lit(prev_last, pl.String)) == pl.col("sample_id"))
        ).fill_null(False)
    )
    starts = docs.filter(~pl.col("continuation"))
    joined = samples.join(starts, left_on=["id", "row"], right_on=["sample_id", "row"], how="left")
    report = []
    for r in joined.filter(pl.col("n_real").is_null()).head(5).iter_rows(named=True):
        report.append(("placement", f"sample {r['id']} not found at row {r['row']} (samples/ says it starts there)"))
    atomic = joined.filter(pl.col("status").is_in(ATOMIC_STATUSES) & pl.col("n_real").is_not_null())
    # any other occurrence of an atomic sample in this shard: a continuation (split) or a second copy
    home = atomic.select(pl.col("id").alias("sample_id"), pl.col("row").alias("home"))
    again = docs.join(home, on="sample_id").filter((pl.col("row") != pl.col("home")) | pl.col("continuation"))
    for r in again.head(5).iter_rows(named=True):
        how = "continues into" if r["continuation"] else "appears again in"
        report.append(("ap_split", f"atomic sample {r['sample_id']} {how} row {r['row']} (starts at row {r['home']})"))
    checks = [
        (
            "ap_tokens",
            pl.col("n_real") != pl.col("tokens_after"),
            "{n_real} tokens in window, samples/ says {tokens_after}",
        ),
        ("ap_start", ~pl.col("starts_bos"), "does not start with BOS"),
        ("ap_prompt", pl.col("n_prompt") == 0, "has no prompt tokens"),
        (
            "ap_answer",
            ((pl.col("n_answer") == 0) | ~pl.col("answer_intact")) & ~pl.col("open_end"),
            "answer is not intact before end-of-turn",
        ),
        ("ap_end", ~pl.col("ends_template") & ~pl.col("open_end"), "does not end with the end-of-turn/EOS template"),
        (
            "ap_reasoning",
            pl.col("n_reasoning") != pl.col("reasoning_kept"),
            "{n_reasoning} reasoning tokens, samples/ says {reasoning_kept}",
        ),
    ]
    for check, cond, msg in checks:
        for r in atomic.filter(cond).head(5).iter_rows(named=True):
            report.append((check, f"atomic sample {r['id']} at row {r['row']}: " + msg.format(**r)))
    problems += [Problem(where, c, m) for c, m in report]


def _check_copies(where: str, docs: pl.DataFrame, samples: pl.DataFrame, problems: list[Problem]) -> None:
    """No window of this shard holds two documents of one original sample (a sample and its copy, or two copies)."""
    origin = samples.select(pl.col("id").alias("sample_id"), "copy_of")
    docs = docs.join(origin, on="sample_id", how="left")
    docs = docs.with_columns(origin=pl.coalesce("copy_of", "sample_id"))
    together = (
        docs.group_by("row", "origin").agg(pl.col("sample_id").sort()).filter(pl.col("sample_id").list.len() > 1)
    )
    for r in together.sort("row").head(5).iter_rows(named=True):
        problems.append(
            Problem(where, "copies_together", f"row {r['row']} holds copies of one sample: {r['sample_id']}")
        )


# ---------------------------------------------------------------------------------------------------- driver
def validate(out: str | Path) -> list[Problem]:
    """Run every check on the OUTPUT folder `out`; an empty list means valid."""
    out = Path(out)
    problems: list[Problem] = []
    index = _load_index(out, problems)
    if index is None:
        return problems
    _check_tokenizer(out, index, problems)
    samples = _load_samples(out, problems)
    listed = {e.path for e in index.shards}
    for folder in SPLIT_DIRS.values():
        for f in sorted((out / folder).glob("*.arrow")):
            if f"{folder}/{f.name}" not in listed:
                problems.append(Problem(f"{folder}/{f.name}", "unindexed", "shard file on disk is not in index.json"))
    for split in SPLIT_DIRS:
        entries = [e for e in index.shards if e.split == split]
        prev_last: str | None = None  # last document id of the previous window, across shard boundaries
        for k, entry in enumerate(entries):
            if Path(entry.path).name != f"{k:05d}.arrow" or Path(entry.path).parent.name != SPLIT_DIRS[split]:
                problems.append(
                    Problem(entry.path, "path", f"{split} shard #{k} should be {SPLIT_DIRS[split]}/{k:05d}.arrow")
                )
            docs = _check_shard(out, entry, index, problems)
            if docs is None or samples is None:
                prev_last = None
                continue
            mine = samples.filter((pl.col("split") == split) & (pl.col("shard") == k))
            if (bad := mine.filter(pl.col("row") >= entry.rows)).height:
                problems.append(
                    Problem(
                        entry.path, "placement", f"sample {bad['id'][0]} at row {bad['row'][0]} >= {entry.rows} rows"
                    )
                )
            _check_samples_in_shard(entry.path, docs, mine, prev_last, problems)
            _check_copies(entry.path, docs, samples, problems)
            last = docs.sort(["row", "doc"]).tail(1)
            prev_last = last["sample_id"][0] if last.height and last["row"][0] == entry.rows - 1 else None
        if samples is not None:
            orphan = samples.filter((pl.col("split") == split) & (pl.col("shard") >= len(entries)))
            if orphan.height:
                problems.append(
                    Problem(
                        "samples", "placement", f"{orphan['id'][0]}: {split} shard {orphan['shard'][0]} is not indexed"
                    )
                )
    _check_totals(index, samples, problems)
    return problems


def _check_totals(index: IndexModel, samples: pl.DataFrame | None, problems: list[Problem]) -> None:
    for split, tot in index.totals.items():
        entries = [e for e in index.shards if e.split == split]
        sums = {"windows": sum(e.rows for e in entries), "tokens": sum(e.tokens for e in entries)}
        sums["real_tokens"] = sum(e.real_tokens for e in entries)
        for key, value in sums.items():
            if getattr(tot, key) != value:
                problems.append(
                    Problem("index.json", "totals", f"totals.{split}.{key}={getattr(tot, key)}, shards sum to {value}")
                )
        if samples is not None:
            n = samples.filter((pl.col("split") == split) & (pl.col("status") != "dropped")).height
            if tot.samples != n:
                problems.append(
                    Problem("index.json", "totals", f"totals.{split}.samples={tot.samples}, samples/ has {n}")
                )
    for e in index.shards:
        if e.tokens != e.rows * index.seq_len:
            problems.append(
                Problem(e.path, "tokens", f"index.json tokens={e.tokens} != rows*seq_len={e.rows * index.seq_len}")
            )
    trim = (index.model_extra or {}).get("trim")
    if samples is not None and isinstance(trim, dict):
        chat = samples.filter(pl.col("status") != "plain")
        found = {"samples": chat.height} | {s: int((chat["status"] == s).sum()) for s in (*ATOMIC_STATUSES, "dropped")}
        for key, value in found.items():
            if key in trim and trim[key] != value:
                problems.append(Problem("index.json", "trim", f"trim.{key}={trim[key]}, samples/ has {value}"))
