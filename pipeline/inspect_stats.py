"""Statistics of an OUTPUT folder (shards + samples/ + index.json) for `reasonpipe inspect`.

Pure reading, no printing. Shards are Arrow IPC stream files read through a memory map, one record batch at a time
and only the columns a number needs (the default view touches `segment` only: 1 byte per token), so it stays fast
and bounded in memory on outputs larger than RAM. The samples/ table is scanned lazily with polars (column
projection, group-bys), the shard table is a polars frame too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

SPLIT_DIRS = {"train": "shards", "val": "shards-val"}
ATOMIC_STATUSES = ("fit", "trimmed", "truncated")  # chat samples that must sit whole in one window


# ---------------------------------------------------------------------------------------------------- readers
def load_index(out: Path) -> dict[str, Any]:
    return json.loads((Path(out) / "index.json").read_text(encoding="utf-8"))


def iter_batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of a memory-mapped IPC stream shard, restricted to `columns` (zero-copy when uncompressed)."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_stream(source)
        for batch in reader:
            yield batch.select(columns) if columns else batch


def read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_stream(source).read_all()
    return table.select(columns) if columns else table


def flat(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Values of a fixed_size_list column as one flat numpy array (no copy for a single uncompressed chunk)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False)


def shard_counts(path: Path) -> dict[str, int]:
    """rows, tokens and real (non-pad) tokens of one shard, from its `segment` column alone."""
    rows = tokens = real = 0
    for batch in iter_batches(path, ["segment"]):
        seg = flat(batch.column(0))
        rows += batch.num_rows
        tokens += seg.size
        real += int(np.count_nonzero(seg))
    return {"rows": rows, "tokens": tokens, "real_tokens": real}


def sample_files(out: Path) -> list[Path]:
    return sorted((Path(out) / "samples").glob("*.parquet"))


def samples_frame(out: Path) -> pl.LazyFrame:
    """Lazy scan over samples/*.parquet; select only what you need before collecting."""
    files = sample_files(out)
    if not files:
        raise FileNotFoundError(f"{out}/samples: no *.parquet files")
    return pl.scan_parquet([str(f) for f in files])


# ---------------------------------------------------------------------------------------------------- stats
def _dist(s: pl.Series) -> dict[str, float | int]:
    """Summary of a numeric column: count, min, p10, p50, p90, p99, max, mean (zeros when empty)."""
    if s.len() == 0:
        return {"count": 0, "min": 0, "p10": 0, "p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0.0}
    s = s.cast(pl.Float64)
    q = {f"p{int(p * 100)}": float(s.quantile(p, "nearest")) for p in (0.1, 0.5, 0.9, 0.99)}
    return {"count": s.len(), "min": float(s.min()), **q, "max": float(s.max()), "mean": float(s.mean())}


def shard_table(out: Path, index: dict[str, Any]) -> tuple[pl.DataFrame, list[str]]:
    """One row per indexed shard with counts measured from the file; warnings for shards that cannot be read."""
    rows, warnings = [], []
    for entry in index.get("shards", []):
        path = Path(out) / entry["path"]
        row = {"path": entry["path"], "split": entry["split"], "rows": 0, "tokens": 0, "real_tokens": 0, "bytes": 0}
        try:
            row |= shard_counts(path) | {"bytes": path.stat().st_size}
        except (OSError, pa.ArrowException) as e:
            warnings.append(f"{entry['path']}: unreadable ({type(e).__name__}: {e}); run --validate")
        rows.append(row)
    schema = {"path": pl.String, "split": pl.String, "rows": pl.Int64, "tokens": pl.Int64}
    schema |= {"real_tokens": pl.Int64, "bytes": pl.Int64}
    return pl.DataFrame(rows, schema=schema), warnings


def _totals(shards: pl.DataFrame) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    groups = {"train": shards.filter(pl.col("split") == "train"), "val": shards.filter(pl.col("split") == "val")}
    groups["all"] = shards
    for name, g in groups.items():
        tokens, real = int(g["tokens"].sum()), int(g["real_tokens"].sum())
        out[name] = {
            "shards": g.height,
            "windows": int(g["rows"].sum()),
            "tokens": tokens,
            "real_tokens": real,
            "packing_efficiency": real / tokens if tokens else 0.0,
            "bytes": int(g["bytes"].sum()),
        }
    return out


def _mixture(lf: pl.LazyFrame, by: str, target: dict[str, float] | None) -> list[dict[str, Any]]:
    """Tokens (after trimming) and share per `by` value over the packed samples (train + val, as index.json)."""
    df = (
        lf.filter(pl.col("status") != "dropped")
        .group_by(by)
        .agg(pl.len().alias("samples"), pl.col("tokens_after").cast(pl.Int64).sum().alias("tokens"))
        .sort(["tokens", by], descending=[True, False])
        .collect()
    )
    total = int(df["tokens"].sum()) or 1
    rows = [
        {
            "name": r[by],
            "samples": r["samples"],
            "tokens": r["tokens"],
            "share": r["tokens"] / total,
            "target": (target or {}).get(r[by]),
        }
        for r in df.iter_rows(named=True)
    ]
    seen = {r["name"] for r in rows}  # targets that got no tokens at all still show, with share 0
    rows += [
        {"name": n, "samples": 0, "tokens": 0, "share": 0.0, "target": t}
        for n, t in sorted((target or {}).items())
        if n not in seen
    ]
    return rows


def _trim(lf: pl.LazyFrame, index_trim: dict[str, Any]) -> dict[str, Any]:
    cols = ["status", "tokens_before", "tokens_after", "reasoning_before", "reasoning_kept", "dropped_thinks"]
    df = lf.select(cols).filter(pl.col("status") != "plain").collect()
    counts = {s: int((df["status"] == s).sum()) for s in ("fit", "trimmed", "truncated", "dropped")}
    lost = lf.select("answer_lost").collect()["answer_lost"] if "answer_lost" in lf.collect_schema() else None
    counts["answer_lost"] = int(lost.sum()) if lost is not None else 0
    sums = {c: int(df[c].cast(pl.Int64).sum()) for c in cols[1:]}
    trimmed = df.filter(pl.col("status") == "trimmed")
    frac = (trimmed["reasoning_kept"] / trimmed["reasoning_before"].cast(pl.Float64)).fill_nan(1.0)
    kept = df.filter(pl.col("status") != "dropped")
    return {
        "context": index_trim.get("context"),
        "policy": index_trim.get("policy"),
        "samples": df.height,
        **counts,
        **sums,
        "reasoning_kept_fraction": sums["reasoning_kept"] / sums["reasoning_before"]
        if sums["reasoning_before"]
        else 1.0,
        "reasoning_kept_dist": _dist(trimmed["reasoning_kept"]),
        "reasoning_kept_fraction_dist": _dist(frac),
        "tokens_before_dist": _dist(df["tokens_before"]),
        "tokens_after_dist": _dist(kept["tokens_after"]),
    }


def _copies(lf: pl.LazyFrame, index: dict[str, Any]) -> dict[str, Any]:
    """Mixture copies: how many samples were repeated, and the distance in windows between consecutive copies of one
    sample (where each starts, in the split's window order); `same_window` counts copies that share a window."""
    bases = []  # (split, shard number) -> index of its first window in the split
    for split in SPLIT_DIRS:
        entries = [e for e in index.get("shards", []) if e["split"] == split]
        starts = np.cumsum([0] + [e["rows"] for e in entries[:-1]]).tolist() if entries else []
        bases += [{"split": split, "shard": k, "base": b} for k, b in enumerate(starts)]
    base = pl.DataFrame(bases, schema={"split": pl.String, "shard": pl.Int32, "base": pl.Int64}).lazy()
    gaps = (
        lf.filter(pl.col("status") != "dropped")
        .select(pl.coalesce("copy_of", "id").alias("origin"), "split", pl.col("shard").cast(pl.Int32), "row")
        .join(base, on=["split", "shard"], how="left")
        .with_columns(window=pl.col("base") + pl.col("row"))
        .group_by("origin")
        .agg(pl.len().alias("n"), pl.col("window").sort().diff().drop_nulls().alias("gap"))
        .filter(pl.col("n") > 1)
        .collect()
    )
    flat_gaps = gaps["gap"].explode() if gaps.height else pl.Series([], dtype=pl.Int64)
    return {
        "samples": gaps.height,
        "copies": int(gaps["n"].sum()) - gaps.height if gaps.height else 0,
        "min_distance": int(flat_gaps.min()) if flat_gaps.len() else None,
        "median_distance": float(flat_gaps.median()) if flat_gaps.len() else None,
        "same_window": int((flat_gaps == 0).sum()) if flat_gaps.len() else 0,
    }


def _stages(index: dict[str, Any], top: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stages, reasons = [], []
    for st in index.get("stages", []):
        rejected = dict(st.get("rejected", {}))
        stages.append(
            {
                "label": st.get("label"),
                "stage": st.get("stage"),
                "read": st.get("read", 0),
                "kept": st.get("kept", 0),
                "rejected_total": sum(rejected.values()),
                "duplicates": st.get("duplicates", 0),
                "rejected": rejected,
            }
        )
        reasons += [{"stage": st.get("label"), "reason": r, "count": n} for r, n in rejected.items()]
        if st.get("duplicates"):
            reasons.append({"stage": st.get("label"), "reason": "duplicate", "count": st["duplicates"]})
    reasons.sort(key=lambda r: (-r["count"], r["stage"] or "", r["reason"]))
    return stages, reasons[:top]


def compute_stats(out: str | Path, top_reasons: int = 10) -> dict[str, Any]:
    """Everything the default view shows, as a JSON-ready dict (keys documented in pipeline/inspect_cli.py)."""
    out = Path(out)
    index = load_index(out)
    shards, warnings = shard_table(out, index)
    lf = samples_frame(out)
    status_counts = lf.group_by("status").agg(pl.len().alias("n")).collect()
    split_counts = lf.filter(pl.col("status") != "dropped").group_by("split").agg(pl.len().alias("n")).collect()
    mixture = index.get("mixture") or {}
    stages, top = _stages(index, top_reasons)
    tok = index.get("tokenizer", {})
    return {
        "output": str(out),
        "name": index.get("name"),
        "format_version": index.get("format_version"),
        "tool_version": index.get("tool_version"),
        "seq_len": index.get("seq_len"),
        "compression": index.get("compression"),
        "tokenizer": {k: tok.get(k) for k in ("path", "sha256", "vocab_size", "special_ids")},
        "totals": _totals(shards),
        "shards": [
            r | {"packing_efficiency": r["real_tokens"] / r["tokens"] if r["tokens"] else 0.0}
            for r in shards.iter_rows(named=True)
        ],
        "samples": {
            "total": int(status_counts["n"].sum()),
            "by_status": dict(sorted(zip(status_counts["status"], status_counts["n"]))),
            "by_split": dict(sorted(zip(split_counts["split"], split_counts["n"]))),
        },
        "mixture": {
            "by_domain": _mixture(lf, "domain", mixture.get("target") if mixture.get("by") == "domain" else None),
            "by_source": _mixture(lf, "source", mixture.get("target") if mixture.get("by") == "source" else None),
        },
        "trim": _trim(lf, index.get("trim") or {}),
        "copies": _copies(lf, index),
        "stages": stages,
        "top_rejections": top,
        "packing": index.get("packing"),
        "decontamination": index.get("decontamination"),
        "ttc": _ttc(out, index),
        "warnings": warnings,
    }


# ------------------------------------------------------------------------------------------- test-time compute
RSA, MARKOVIAN = "rsa_aggregate", "markovian_chunks"
RSA_FIELDS = pl.Struct(
    {
        "target": pl.String,
        "candidates": pl.List(pl.String),
        "tail_tokens": pl.List(pl.Int64),
        "cut": pl.List(pl.Boolean),
        "target_correct": pl.Boolean,
        "candidates_correct": pl.List(pl.Boolean),
    }
)
CHUNK_FIELDS = pl.Struct({"trace": pl.String, "index": pl.Int64, "chunks": pl.Int64, "context_tokens": pl.Int64})


def built_samples(out: Path, builder: str, fields: pl.Struct) -> pl.DataFrame:
    """Packed samples of one builder with their provenance decoded (empty without builder columns)."""
    lf = samples_frame(out)
    if "builder" not in lf.collect_schema().names():
        return pl.DataFrame()
    return (
        lf.filter((pl.col("builder") == builder) & (pl.col("status") != "dropped"))
        .select("id", "split", "shard", "row", "tokens_after", pl.col("provenance").str.json_decode(fields).alias("p"))
        .collect()
        .unnest("p")
    )


def _ttc(out: Path, index: dict[str, Any]) -> dict[str, Any] | None:
    """Test-time-compute data: what each builder built and packed, tails, verified targets, chains, verification."""
    rsa, chunks = built_samples(out, RSA, RSA_FIELDS), built_samples(out, MARKOVIAN, CHUNK_FIELDS)
    built = index.get("ttc") or {}
    if not built and not index.get("verification") and rsa.is_empty() and chunks.is_empty():
        return None
    result: dict[str, Any] = {"builders": built, "verification": index.get("verification") or {}}
    if not rsa.is_empty():
        tails = rsa["tail_tokens"].explode()
        known = rsa.filter(pl.col("target_correct").is_not_null()).height
        result["rsa_aggregate"] = {
            "samples": rsa.height,
            "tokens": int(rsa["tokens_after"].sum()),
            "tail_tokens_dist": _dist(tails),
            "tails_cut": float(rsa["cut"].explode().mean()),
            "targets_correct": rsa.filter(pl.col("target_correct")).height / rsa.height,
            "targets_verified": known / rsa.height,
            "with_incorrect_candidate": rsa.filter(pl.col("candidates_correct").list.contains(False)).height
            / rsa.height,
        }
    if not chunks.is_empty():
        chains = chunks.group_by("trace").agg(pl.len().alias("packed"), pl.col("chunks").first())
        result["markovian_chunks"] = {
            "samples": chunks.height,
            "tokens": int(chunks["tokens_after"].sum()),
            "chains": chains.height,
            "complete_chains": chains.filter(pl.col("packed") == pl.col("chunks")).height,
            "chunks_per_chain_dist": _dist(chains["chunks"]),
            "context_tokens_dist": _dist(chunks.filter(pl.col("index") > 0)["context_tokens"]),
        }
    return result


# ---------------------------------------------------------------------------------------------------- compare
def _get(d: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        d = d.get(key) if isinstance(d, dict) else None
    return d


COMPARE_METRICS = [
    "seq_len",
    "tokenizer.vocab_size",
    "totals.train.windows",
    "totals.train.tokens",
    "totals.train.real_tokens",
    "totals.train.packing_efficiency",
    "totals.val.windows",
    "totals.val.real_tokens",
    "samples.total",
    "trim.context",
    "trim.fit",
    "trim.trimmed",
    "trim.dropped",
    "trim.tokens_before",
    "trim.tokens_after",
    "trim.reasoning_before",
    "trim.reasoning_kept",
    "trim.reasoning_kept_fraction",
    "trim.reasoning_kept_dist.p50",
    "trim.tokens_after_dist.p50",
    "trim.tokens_after_dist.max",
]


def compare_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Side-by-side metrics of two runs: rows of {metric, a, b, delta} (delta = b - a when both are numbers)."""
    rows = []
    metrics = list(COMPARE_METRICS)
    for view in ("by_domain", "by_source"):
        names = sorted({m["name"] for s in (a, b) for m in s["mixture"][view]})
        metrics += [f"mixture.{view}.{n}.share" for n in names]

    def value(s: dict[str, Any], metric: str) -> Any:
        if metric.startswith("mixture."):
            _, view, rest = metric.split(".", 2)
            name = rest.rsplit(".", 1)[0]
            return next((m["share"] for m in s["mixture"][view] if m["name"] == name), 0.0)
        return _get(s, metric)

    for m in metrics:
        va, vb = value(a, m), value(b, m)
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (va, vb))
        rows.append({"metric": m, "a": va, "b": vb, "delta": (vb - va) if numeric else None})
    same_tok = a["tokenizer"]["sha256"] == b["tokenizer"]["sha256"]
    return {"a": a["output"], "b": b["output"], "same_tokenizer": same_tok, "rows": rows}
