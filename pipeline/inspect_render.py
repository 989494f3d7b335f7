"""Rendering for `reasonpipe inspect`: stats as tables (rich on a terminal, plain text when piped) and decoded
sample windows with document boundaries, segments and loss-masked spans made visible."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reasonpipe.pipeline.inspect_stats import flat, load_index, read_shard, samples_frame
from reasonpipe.segments import SEGMENT_NAMES

SEGMENT_STYLES = {
    "pad": "dim",
    "text": "white",
    "prompt": "bold cyan",
    "reasoning": "yellow",
    "answer": "bold green",
    "template": "magenta",
}
MASKED_STYLE = "on grey23"  # background of tokens with loss_mask = 0


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    right: bool = True  # right-justify columns after the first (numbers); False for key/value lists


# ---------------------------------------------------------------------------------------------------- formatting
def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if v.is_integer() and abs(v) >= 1 else f"{v:.4g}"
    return str(v)


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def render_sections(sections: list[Section], console: Console, rich: bool) -> None:
    """Rich tables on a terminal; aligned plain text (no box drawing, no colour) otherwise."""
    for s in sections:
        if rich:
            table = Table(title=s.title, title_justify="left", title_style="bold")
            for i, c in enumerate(s.columns):
                table.add_column(c, justify="right" if i and s.right else "left")
            for row in s.rows:
                table.add_row(*(r if isinstance(r, str) else fmt(r) for r in row))
            console.print(table)
            continue
        cells = [s.columns] + [[r if isinstance(r, str) else fmt(r) for r in row] for row in s.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(s.columns))]
        console.print(f"== {s.title} ==", markup=False, highlight=False)
        for row in cells:
            line = "  ".join(c.rjust(w) if i and s.right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
            console.print(line.rstrip(), markup=False, highlight=False, soft_wrap=True)
        console.print()


# ---------------------------------------------------------------------------------------------------- stats view
def stats_sections(st: dict[str, Any]) -> list[Section]:
    tok = st["tokenizer"]
    out = [
        Section(
            "Output",
            ["key", "value"],
            [
                ["name", st["name"]],
                ["path", st["output"]],
                ["seq_len", st["seq_len"]],
                ["compression", st["compression"] or "none"],
                ["tokenizer", f"{tok['path']} (vocab {fmt(tok['vocab_size'])}, sha256 {str(tok['sha256'])[:12]})"],
                ["format / tool", f"{st['format_version']} / {st['tool_version']}"],
            ],
            right=False,
        ),
        Section(
            "Totals",
            ["split", "shards", "windows", "tokens", "real tokens", "packing eff.", "bytes"],
            [
                [k, t["shards"], t["windows"], t["tokens"], t["real_tokens"], pct(t["packing_efficiency"]), t["bytes"]]
                for k, t in st["totals"].items()
            ],
        ),
    ]
    for view, label in (("by_domain", "domain"), ("by_source", "source")):
        rows = [[m["name"], m["samples"], m["tokens"], pct(m["share"]), pct(m["target"])] for m in st["mixture"][view]]
        out.append(
            Section(
                f"Mixture by {label} (packed tokens, after trimming)",
                [label, "samples", "tokens", "share", "target"],
                rows,
            )
        )
    tr = st["trim"]
    kd, fd = tr["reasoning_kept_dist"], tr["reasoning_kept_fraction_dist"]
    out.append(
        Section(
            "Trimming",
            ["key", "value"],
            [
                ["context / policy", f"{fmt(tr['context'])} / {tr['policy'] or '-'}"],
                ["chat samples", tr["samples"]],
                ["fit / trimmed / dropped", f"{fmt(tr['fit'])} / {fmt(tr['trimmed'])} / {fmt(tr['dropped'])}"],
                *(
                    [["truncated (answer lost)", f"{fmt(tr['truncated'])} ({fmt(tr['answer_lost'])})"]]
                    if tr.get("truncated")
                    else []
                ),
                ["earlier think blocks removed", tr["dropped_thinks"]],
                ["tokens before -> after", f"{fmt(tr['tokens_before'])} -> {fmt(tr['tokens_after'])}"],
                [
                    "reasoning kept",
                    f"{fmt(tr['reasoning_kept'])} of {fmt(tr['reasoning_before'])}"
                    f" ({pct(tr['reasoning_kept_fraction'])})",
                ],
                [
                    "kept reasoning, trimmed samples",
                    f"p10 {fmt(kd['p10'])}  p50 {fmt(kd['p50'])}  p90 {fmt(kd['p90'])}  max {fmt(kd['max'])} tokens",
                ],
                [
                    "kept fraction, trimmed samples",
                    f"p10 {pct(fd['p10'])}  p50 {pct(fd['p50'])}  p90 {pct(fd['p90'])}",
                ],
            ],
            right=False,
        )
    )
    cp = st["copies"]
    if cp["samples"]:
        out.append(
            Section(
                "Mixture copies (up-sampling)",
                ["key", "value"],
                [
                    ["samples repeated / copies added", f"{fmt(cp['samples'])} / {fmt(cp['copies'])}"],
                    ["windows between copies", f"min {fmt(cp['min_distance'])}  median {fmt(cp['median_distance'])}"],
                    ["copies sharing a window", cp["same_window"]],
                ],
                right=False,
            )
        )
    out.append(
        Section(
            "Stages",
            ["label", "stage", "read", "kept", "rejected", "duplicates"],
            [
                [s["label"], s["stage"], s["read"], s["kept"], s["rejected_total"], s["duplicates"]]
                for s in st["stages"]
            ],
        )
    )
    out.append(
        Section(
            "Top rejection reasons",
            ["stage", "reason", "count"],
            [[r["stage"], r["reason"], r["count"]] for r in st["top_rejections"]],
        )
    )
    out += _ttc_sections(st.get("ttc"))
    if st["warnings"]:
        out.append(Section("Warnings", ["warning"], [[w] for w in st["warnings"]], right=False))
    return out


def _ttc_sections(st: dict[str, Any] | None) -> list[Section]:
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


def compare_sections(cmp: dict[str, Any]) -> list[Section]:
    def ratio(metric: str) -> bool:
        return metric.endswith(("share", "efficiency", "fraction"))

    def d(v: Any, metric: str) -> str:
        if v is None:
            return "-"
        if ratio(metric):
            return f"{100 * v:+.1f} pp"
        return f"{v:+,}" if isinstance(v, int) else f"{v:+,.4g}"

    rows = [
        [r["metric"], *((pct(r[k]) if ratio(r["metric"]) else r[k]) for k in ("a", "b")), d(r["delta"], r["metric"])]
        for r in cmp["rows"]
    ]
    title = f"Compare  A={cmp['a']}  B={cmp['b']}" + ("" if cmp["same_tokenizer"] else "  (different tokenizers)")
    return [Section(title, ["metric", "A", "B", "B - A"], rows)]


def validation_sections(problems: list[dict[str, str]]) -> list[Section]:
    if not problems:
        return [Section("Validation", ["result"], [["OK: no problems found"]])]
    rows = [[p["where"], p["check"], p["message"]] for p in problems]
    return [Section(f"Validation: {len(problems)} problem(s)", ["where", "check", "problem"], rows, right=False)]


# ---------------------------------------------------------------------------------------------------- samples
def pick_windows(index: dict[str, Any], split: str, n: int, seed: int) -> list[tuple[dict[str, Any], int]]:
    """n distinct (shard entry, row) of `split`, drawn uniformly with `seed`, in shard order."""
    entries = [e for e in index["shards"] if e["split"] == split]
    total = sum(e["rows"] for e in entries)
    picks = sorted(random.Random(seed).sample(range(total), min(n, total)))
    out, base = [], 0
    for e in entries:
        out += [(e, g - base) for g in picks if base <= g < base + e["rows"]]
        base += e["rows"]
    return out


def decode_windows(out: Path, n: int, seed: int, split: str = "train") -> list[dict[str, Any]]:
    """Decode n windows: per document its span, and runs of equal (segment, loss) with their text."""
    from tokenizers import Tokenizer

    index = load_index(out)
    tok = Tokenizer.from_file(str(Path(out) / index["tokenizer"]["path"]))
    windows = []
    tables: dict[str, Any] = {}
    for entry, row in pick_windows(index, split, n, seed):
        if entry["path"] not in tables:
            tables[entry["path"]] = read_shard(Path(out) / entry["path"])
        t = tables[entry["path"]].slice(row, 1)
        ids, loss, seg = (flat(t.column(c)) for c in ("input_ids", "loss_mask", "segment"))
        offsets = t.column("doc_offsets")[0].as_py() + [len(ids)]
        names = t.column("sample_ids")[0].as_py()
        docs = []
        for d, sid in enumerate(names):
            a, b = offsets[d], offsets[d + 1]
            key = seg[a:b].astype(np.int16) * 2 + loss[a:b]
            cuts = [a, *(a + 1 + np.flatnonzero(np.diff(key))).tolist(), b]
            runs = []
            for s, e in zip(cuts[:-1], cuts[1:]):
                if s == e:
                    continue
                kind = SEGMENT_NAMES.get(int(seg[s]), str(int(seg[s])))
                text = "" if kind == "pad" else tok.decode(ids[s:e].tolist(), skip_special_tokens=False)
                runs.append({"segment": kind, "loss": bool(loss[s]), "start": s, "end": e, "text": text})
            docs.append({"sample_id": sid, "start": a, "end": b, "runs": runs})
        windows.append(
            {
                "shard": entry["path"],
                "row": row,
                "tokens": len(ids),
                "real_tokens": int(np.count_nonzero(seg)),
                "documents": docs,
            }
        )
    _add_provenance(out, windows)
    return windows


def _add_provenance(out: Path, windows: list[dict[str, Any]]) -> None:
    """Each decoded document's source and upstream id (the record's own id in the user's data), from samples/."""
    ids = sorted({d["sample_id"] for w in windows for d in w["documents"]})
    found = samples_frame(out).filter(pl.col("id").is_in(ids)).select("id", "source", "upstream_id").collect()
    prov = {r["id"]: r for r in found.iter_rows(named=True)}
    for w in windows:
        for d in w["documents"]:
            r = prov.get(d["sample_id"], {})
            d["source"], d["upstream_id"] = r.get("source"), r.get("upstream_id")


def render_windows(windows: list[dict[str, Any]], console: Console, rich: bool) -> None:
    """Colours on a terminal (segment = colour, grey background = no loss); [segment]...[/segment] markers else."""
    if rich:
        legend = Text("legend: ")
        for name, style in SEGMENT_STYLES.items():
            legend.append(name, style=style).append(" ")
        legend.append("no-loss", style=MASKED_STYLE)
        console.print(legend)
    else:
        console.print("legend: [segment]...[/segment]; '[segment -loss]' marks tokens with loss_mask 0", markup=False)
    for w in windows:
        head = f"=== {w['shard']} row {w['row']}: {w['tokens']} tokens, {w['real_tokens']} real ==="
        console.print(head, style="bold" if rich else None, markup=False, highlight=False)
        for i, doc in enumerate(w["documents"]):
            upstream = f" (upstream id {doc['upstream_id']})" if doc.get("upstream_id") else ""
            console.print(
                f"--- document {i} [{doc['start']}:{doc['end']}] {doc['sample_id']}{upstream} ---",
                style="bold blue" if rich else None,
                markup=False,
                highlight=False,
            )
            body = Text()
            for r in doc["runs"]:
                if r["segment"] == "pad":
                    body.append(f"[pad x{r['end'] - r['start']}]", style="dim")
                elif rich:
                    body.append(
                        r["text"],
                        style=SEGMENT_STYLES.get(r["segment"], "") + ("" if r["loss"] else " " + MASKED_STYLE),
                    )
                else:
                    tag = r["segment"] + ("" if r["loss"] else " -loss")
                    body.append(f"[{tag}]{r['text']}[/{r['segment']}]")
            console.print(body, highlight=False, soft_wrap=not rich)
        console.print()
