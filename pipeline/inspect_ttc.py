"""`reasonpipe inspect` for test-time-compute data: what each builder produced, tails, verified targets, chunk chains,
answer verification per source, and aggregation samples decoded legibly (`--rsa-sample N`).

Everything comes from samples/ (`builder`, `provenance` JSON) and index.json (`ttc`, `verification`); decoding reads
the one window a sample sits in.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from reasonpipe.pipeline.inspect_render import Section, fmt, pct
from reasonpipe.pipeline.inspect_stats import SPLIT_DIRS, _dist, flat, read_shard, samples_frame
from reasonpipe.segments import SEG_ANSWER, SEG_PROMPT, SEG_REASONING

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


def _built(out: Path, builder: str, fields: pl.Struct) -> pl.DataFrame:
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


def ttc_stats(out: str | Path, index: dict[str, Any]) -> dict[str, Any] | None:
    """The "ttc" block of `inspect --json` (None when the output has no builder samples nor verification)."""
    out = Path(out)
    rsa, chunks = _built(out, RSA, RSA_FIELDS), _built(out, MARKOVIAN, CHUNK_FIELDS)
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


def ttc_sections(st: dict[str, Any] | None) -> list[Section]:
    if not st:
        return []
    out = []
    rows = []
    rsa, chunks, b = st.get("rsa_aggregate"), st.get("markovian_chunks"), st["builders"]
    if "rsa_aggregate" in b:
        r = b["rsa_aggregate"]
        rows.append(["rsa_aggregate", "problems / with too few traces", f"{fmt(r['problems'])} / "
                     f"{fmt(r['problems_too_few_traces'])}"])  # fmt: skip
        rows.append(["", "samples built / packed", f"{fmt(r['samples'])} / {fmt(rsa['samples'] if rsa else 0)}"])
    if rsa:
        d = rsa["tail_tokens_dist"]
        rows.append(["", "tail tokens", f"p10 {fmt(d['p10'])}  p50 {fmt(d['p50'])}  max {fmt(d['max'])}"])
        rows.append(["", "tails cut", pct(rsa["tails_cut"])])
        rows.append(["", "targets verified correct", pct(rsa["targets_correct"])])
        rows.append(["", "samples with a wrong candidate", pct(rsa["with_incorrect_candidate"])])
    if "markovian_chunks" in b:
        m = b["markovian_chunks"]
        rows.append(["markovian_chunks", "traces / chains / chunks built",
                     f"{fmt(m['traces'])} / {fmt(m['chains'])} / {fmt(m['chunks'])}"])  # fmt: skip
    if chunks:
        d = chunks["chunks_per_chain_dist"]
        packed = f"{fmt(chunks['samples'])} ({fmt(chunks['complete_chains'])} complete chains)"
        rows.append(["", "chunks packed", packed])
        rows.append(["", "chunks per chain", f"p50 {fmt(d['p50'])}  max {fmt(d['max'])}"])
    if rows:
        out.append(Section("Test-time-compute builders", ["builder", "key", "value"], rows, right=False))
    ver = st["verification"]
    if ver:
        vrows = [[s, v["correct"], v["incorrect"], v["unknown"], pct(v["correct_rate"])] for s, v in ver.items()]
        out.append(Section("Answer verification", ["source", "correct", "incorrect", "unknown", "rate"], vrows))
    return out


# ---------------------------------------------------------------------------------------------------- decoding
def decode_aggregations(out: str | Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n aggregation samples (drawn with `seed`) decoded from their windows: the prompt as the model sees it, the
    candidates' provenance, and the target's reasoning and answer."""
    from tokenizers import Tokenizer

    out = Path(out)
    rsa = _built(out, RSA, RSA_FIELDS)
    if rsa.is_empty():
        return []
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    picks = sorted(random.Random(seed).sample(range(rsa.height), min(n, rsa.height)))
    items = []
    for r in rsa[picks].iter_rows(named=True):
        window = read_shard(out / SPLIT_DIRS[r["split"]] / f"{r['shard']:05d}.arrow").slice(r["row"], 1)
        ids, seg = flat(window.column("input_ids")), flat(window.column("segment"))
        offsets, names = window.column("doc_offsets")[0].as_py() + [len(ids)], window.column("sample_ids")[0].as_py()
        d = names.index(r["id"])
        ids, seg = ids[offsets[d] : offsets[d + 1]], seg[offsets[d] : offsets[d + 1]]
        kinds = (SEG_PROMPT, SEG_REASONING, SEG_ANSWER)
        text = {k: tok.decode(ids[seg == k].tolist(), skip_special_tokens=False) for k in kinds}
        items.append(
            {
                "id": r["id"],
                "window": f"{SPLIT_DIRS[r['split']]}/{r['shard']:05d}.arrow row {r['row']}",
                "target": {"id": r["target"], "correct": r["target_correct"]},
                "candidates": [
                    {"id": c, "correct": ok, "tail_tokens": t, "cut": cut}
                    for c, ok, t, cut in zip(r["candidates"], r["candidates_correct"], r["tail_tokens"], r["cut"])
                ],
                "prompt": text[SEG_PROMPT],
                "reasoning": text[SEG_REASONING],
                "answer": text[SEG_ANSWER],
                "tokens": int(len(ids)),
                "reasoning_tokens": int(np.count_nonzero(seg == SEG_REASONING)),
            }
        )
    return items


def _verdict(v: bool | None) -> str:
    return {True: "correct", False: "wrong", None: "unverified"}[v]


def render_aggregations(items: list[dict[str, Any]], console) -> None:
    if not items:
        console.print("no RSA aggregation samples in this output", markup=False)
    for it in items:
        head = f"=== RSA sample {it['id']} ({it['tokens']} tokens, {it['window']}) ==="
        console.print(head, markup=False, highlight=False, soft_wrap=True)
        console.print(f"target: {it['target']['id']} ({_verdict(it['target']['correct'])})", markup=False)
        for i, c in enumerate(it["candidates"], 1):
            cut = ", cut" if c["cut"] else ""
            line = f"candidate {i}: {c['id']} ({_verdict(c['correct'])}, tail {c['tail_tokens']} tokens{cut})"
            console.print(line, markup=False)
        console.print("--- user turn (the aggregation prompt) ---", markup=False)
        console.print(it["prompt"], markup=False, highlight=False, soft_wrap=True)
        console.print(f"--- assistant: reasoning ({it['reasoning_tokens']} tokens) ---", markup=False)
        r = it["reasoning"]
        console.print(r if len(r) <= 1200 else f"{r[:600]} [...] {r[-600:]}", markup=False, soft_wrap=True)
        console.print("--- assistant: answer ---", markup=False)
        console.print(it["answer"], markup=False, highlight=False, soft_wrap=True)
        console.print()
