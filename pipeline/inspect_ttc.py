"""`reasonpipe inspect --rsa-sample N`: RSA aggregation samples decoded legibly from the window each sits in: the
candidates (verdicts, tails), the prompt as the model sees it, the target's reasoning and answer. (The statistics of
test-time-compute data are in inspect_stats.py, the "ttc" block.)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from reasonpipe.pipeline.inspect_stats import RSA, RSA_FIELDS, SPLIT_DIRS, built_samples, flat, read_shard
from reasonpipe.segments import SEG_ANSWER, SEG_PROMPT, SEG_REASONING


def decode_aggregations(out: str | Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n aggregation samples (drawn with `seed`) decoded from their windows: the prompt as the model sees it, the
    candidates' provenance, and the target's reasoning and answer."""
    from tokenizers import Tokenizer

    out = Path(out)
    rsa = built_samples(out, RSA, RSA_FIELDS)
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
