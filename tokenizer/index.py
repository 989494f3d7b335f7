"""Assemble the final OUTPUT folder from the PackWriter task outputs and write index.json.

    shards/NNNNN.arrow, shards-val/NNNNN.arrow   task shards hard-linked (copied across devices) in (rank, k) order
    samples/NNNNN.parquet                         per task: packed samples with the global `shard` column, plus the
                                                  samples trimming dropped (status "dropped", shard/row -1)
    tokenizer.json                                the tokenizer the shards were encoded with
    index.json                                    the contract of BRIEF/DESIGN, sorted keys, written last

Everything is derived from the task stats and samples files, so re-running gives the same files (idempotent);
files of an earlier, larger build that the new one does not produce are removed. Memory is bounded by one task:
samples/ are rewritten task by task and the index's summaries are sums of the task stats (plus the dropped samples
of each task, read with it), never a table of the whole corpus.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reasonpipe.tokenizer.shards import sha256_file
from reasonpipe.tokenizer.vocab import load_tokenizer, resolve_template
from reasonpipe.tokenizer.writer import SAMPLE_SCHEMA, TRIM_SUMS, write_json_atomic, write_parquet_atomic

FORMAT_VERSION = 1
SPLIT_DIRS = {"train": "shards", "val": "shards-val"}
OUT_SAMPLE_SCHEMA = (
    pa.schema([f for f in SAMPLE_SCHEMA if f.name not in ("task_shard", "row")])
    .append(pa.field("shard", pa.int32()))
    .append(pa.field("row", pa.int32()))
)


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("reasonpipe")
    except Exception:
        return "0.1.0"


def _place(src: Path, dst: Path) -> None:
    """Hard-link `src` to `dst` (copy when linking fails), atomically replacing `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _dropped_files(folder: Path | None) -> dict[int, list[Path]]:
    """The APTrim exclusion writer's jsonl(.gz) files (samples dropped by trimming), by task rank."""
    out: dict[int, list[Path]] = {}
    if folder is None or not folder.exists():
        return out
    for path in sorted(p for p in folder.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz"))):
        stem = path.name.split(".")[0]
        out.setdefault(int(stem) if stem.isdigit() else 0, []).append(path)
    return out


def _dropped_rows(paths: list[Path]) -> list[dict[str, Any]]:
    """samples/ rows of the samples dropped by trimming, from one task's exclusion files."""
    rows = []
    for path in paths:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                doc = json.loads(line)
                meta = doc.get("metadata") or {}
                trim = meta.get("trim") or {}
                rows.append(
                    {
                        "id": doc["id"],
                        **{
                            k: meta.get(k)
                            for k in (
                                "source",
                                "domain",
                                "upstream_id",
                                "problem_key",
                                "copy_of",
                                "builder",
                                "provenance",
                            )
                        },
                        "split": "train",  # never packed: the split is moot
                        "status": "dropped",
                        "tokens_before": trim.get("tokens_before", 0),
                        "tokens_after": 0,
                        "reasoning_before": trim.get("reasoning_before", 0),
                        "reasoning_kept": 0,
                        "dropped_thinks": trim.get("dropped_thinks", 0),
                        "answer_lost": False,
                        "shard": -1,
                        "row": -1,
                    }
                )
    return rows


def _clean(folder: Path, keep: set[str], suffix: str) -> None:
    """Remove files ending in `suffix` that this build did not produce (left by an earlier build)."""
    if folder.exists():
        for p in folder.iterdir():
            if p.name.endswith(suffix) and p.name not in keep:
                p.unlink()


def finalize_output(
    pack_folder: str | Path,
    output_dir: str | Path,
    tokenizer_path: str | Path,
    extra: dict[str, Any],
    template: dict[str, str] | None = None,
    dropped_folder: str | Path | None = None,
) -> dict[str, Any]:
    """Assemble OUTPUT from the PackWriter folder; returns the index written to `output_dir/index.json`.

    `extra` supplies what the packer does not know: name, stages, decontamination, manifest, manifest_sha256,
    mixture {"by", "target"}, trim {"context", "policy"}; other keys are copied into the index as they are.
    `template` is the tokenizer's template map (for the special ids).
    `dropped_folder` is the APTrim exclusion folder: its samples enter samples/ as "dropped".
    Memory: one task's samples (and its dropped samples) at a time; the summaries are sums of the task stats.
    """
    pack, out = Path(pack_folder), Path(output_dir)
    stats_files = sorted((pack / "stats").glob("*.json"))
    if not stats_files:
        raise FileNotFoundError(f"finalize_output: no task stats in {pack / 'stats'} (did PackWriter run?)")
    tasks = [json.loads(p.read_text(encoding="utf-8")) for p in stats_files]
    tasks.sort(key=lambda t: t["rank"])
    seq_lens = {t["seq_len"] for t in tasks}
    compressions = {t["compression"] for t in tasks}
    if len(seq_lens) != 1 or len(compressions) != 1:
        raise ValueError(f"finalize_output: tasks disagree on seq_len {seq_lens} or compression {compressions}")
    seq_len, compression = seq_lens.pop(), compressions.pop()

    # shards: global numbering per split in (rank, k) order; first[split][rank] = the task's first shard number
    shards, first = [], {split: {} for split in SPLIT_DIRS}
    for split, sub in SPLIT_DIRS.items():
        kept: set[str] = set()
        n = 0
        for t in tasks:
            first[split][t["rank"]] = n
            for s in t["splits"][split]["shards"]:
                rel = f"{sub}/{n:05d}.arrow"
                _place(pack / s["path"], out / rel)
                shards.append(
                    {
                        "path": rel,
                        "split": split,
                        **{k: s[k] for k in ("rows", "tokens", "real_tokens", "sha256", "bytes")},
                    }
                )
                kept.add(f"{n:05d}.arrow")
                n += 1
        _clean(out / sub, kept, ".arrow")

    # samples, task by task: global shard numbers, the task's dropped samples added (and summed for the index)
    dropped_files = _dropped_files(Path(dropped_folder) if dropped_folder else None)
    dropped = Counter()
    ranks = sorted({t["rank"] for t in tasks} | set(dropped_files))
    for rank in ranks:
        path = pack / "samples" / f"{rank:05d}.parquet"
        table = pq.read_table(path) if path.exists() else SAMPLE_SCHEMA.empty_table()
        offset = pc.if_else(pc.equal(table["split"], "val"), first["val"].get(rank, 0), first["train"].get(rank, 0))
        columns = {c: table[c] for c in OUT_SAMPLE_SCHEMA.names if c != "shard"}
        shard = pc.add(table["task_shard"], offset.cast(pa.int32()))
        table = pa.table({**columns, "shard": shard}).select(OUT_SAMPLE_SCHEMA.names).cast(OUT_SAMPLE_SCHEMA)
        if rows := _dropped_rows(dropped_files.get(rank, [])):
            table = pa.concat_tables([table, pa.Table.from_pylist(rows, schema=OUT_SAMPLE_SCHEMA)])
            dropped.update({"samples": len(rows)} | {k: sum(r[k] for r in rows) for k in TRIM_SUMS})
        write_parquet_atomic(table, out / "samples" / f"{rank:05d}.parquet")
    _clean(out / "samples", {f"{r:05d}.parquet" for r in ranks}, ".parquet")

    # tokenizer
    tok_out = out / "tokenizer.json"
    tmp = tok_out.with_name(f".tokenizer.json.tmp-{os.getpid()}")
    shutil.copyfile(tokenizer_path, tmp)
    os.replace(tmp, tok_out)
    tok = load_tokenizer(tok_out)
    special = resolve_template(tok, template).as_dict()

    index = {
        "format_version": FORMAT_VERSION,
        "tool_version": tool_version(),
        "name": extra.get("name", out.name),
        "seq_len": seq_len,
        "compression": compression,
        "tokenizer": {
            "path": "tokenizer.json",
            "sha256": sha256_file(tok_out),
            "vocab_size": tok.get_vocab_size(),
            "special_ids": special,
        },
        "shards": shards,
        "totals": _totals(tasks, seq_len),
        "stages": extra.get("stages", []),
        "trim": _trim_summary(tasks, dropped, extra.get("trim") or {}),
        "packing": _packing(tasks, seq_len),
        "mixture": _mixture(tasks, extra.get("mixture") or {}),
        "decontamination": extra.get("decontamination", {}),
        "manifest": extra.get("manifest", {}),
        "manifest_sha256": extra.get("manifest_sha256"),
    }
    index.update({k: v for k, v in extra.items() if k not in index and k not in ("trim", "mixture")})
    write_json_atomic(out / "index.json", index)
    return index


def _totals(tasks: list[dict[str, Any]], seq_len: int) -> dict[str, Any]:
    out = {}
    for split in SPLIT_DIRS:
        windows, real, samples = (
            sum(t["splits"][split][k] for t in tasks) for k in ("windows", "real_tokens", "samples")
        )
        tokens = windows * seq_len
        out[split] = {
            "windows": windows,
            "tokens": tokens,
            "real_tokens": real,
            "packing_efficiency": real / tokens if tokens else 0.0,
            "samples": samples,
        }
    return out


def _packing(tasks: list[dict[str, Any]], seq_len: int) -> dict[str, Any]:
    splits = [t["splits"][s] for t in tasks for s in SPLIT_DIRS]
    windows = sum(s["windows"] for s in splits)
    real = sum(s["real_tokens"] for s in splits)
    return {
        "seq_len": seq_len,
        "windows": windows,
        "efficiency": real / (windows * seq_len) if windows else 0.0,
        "pad_tokens": sum(s["pad_tokens"] for s in splits),
        "split_documents": sum(s["split_documents"] for s in splits),
    }


def _trim_summary(tasks: list[dict[str, Any]], dropped: Counter, cfg: dict[str, Any]) -> dict[str, Any]:
    """Counts over the chat samples (fit + trimmed + dropped); plain documents are counted apart."""
    status = sum((Counter(t["status"]) for t in tasks), Counter())
    sums = sum((Counter(t["trim_sums"]) for t in tasks), Counter()) + Counter({k: dropped[k] for k in TRIM_SUMS})
    return {
        "context": cfg.get("context"),
        "policy": cfg.get("policy"),
        "samples": status["fit"] + status["trimmed"] + status["truncated"] + dropped["samples"],
        "fit": status["fit"],
        "trimmed": status["trimmed"],
        "dropped": dropped["samples"],
        "truncated": status["truncated"],
        "answer_lost": sums["answer_lost"],
        "plain": status["plain"],
        **{k: sums[k] for k in ("tokens_before", "tokens_after", "reasoning_before", "reasoning_kept")},
    }


def _mixture(tasks: list[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """Achieved token shares of the packed samples (train + val) by domain or source."""
    by = cfg.get("by", "domain")
    tokens = sum((Counter(t["tokens_by"][by]) for t in tasks), Counter())
    total = sum(tokens.values())
    achieved = {g: {"tokens": n, "share": n / total if total else 0.0} for g, n in sorted(tokens.items())}
    return {"by": by, "target": cfg.get("target"), "achieved": achieved}
