"""`reasonpipe inspect OUTPUT [flags]`: see, validate and compare what a run produced.

Wiring (the `reasonpipe` CLI): `add_inspect_args(subparser)`, then `sys.exit(run_inspect(args))`.

Views (combinable; the stats view is shown when none of --sample/--validate/--compare is given):
- default: totals, mixture by domain and source, trimming summary, per-stage accounting, top rejection reasons;
- `--sample N [--seed S] [--split train|val]`: N decoded windows, documents / segments / no-loss spans marked;
- `--validate`: checksums, schema, window lengths, token ids, index consistency, the AP invariant (exit 1 on problems);
- `--compare OTHER`: side-by-side metrics of two outputs;
- `--rsa-sample N [--seed S]`: N RSA aggregation samples decoded: candidates, the prompt, the target's answer;
- `--plot DIR`: lengths.png, mixture.png, shard_tokens.png, rejections.png;
- `--json`: one JSON document on stdout instead of tables (all keys always present; null when not asked for).

Exit codes: 0 fine, 1 validation problems, 2 the output cannot be read (no index.json: in every mode, --compare's
other output included).

JSON output (`--json`), stable keys:

```
inspect_version     1
output              path of OUTPUT
stats               (always)
  name, format_version, tool_version, seq_len, compression     from index.json
  tokenizer         {path, sha256, vocab_size, special_ids}
  totals            {train|val|all: {shards, windows, tokens, real_tokens, packing_efficiency, bytes}}  measured
  shards            [{path, split, rows, tokens, real_tokens, bytes, packing_efficiency}]               measured
  samples           {total, by_status: {fit|trimmed|dropped|plain: n}, by_split: {train|val: n placed}}
  mixture           {by_domain|by_source: [{name, samples, tokens, share, target}]}  packed samples (train +
                    val, as index.json's mixture.achieved), tokens after trimming; target from the manifest
                    mixture (or null; a target that got no tokens is listed with tokens 0)
  trim              {context, policy, samples (chat), fit, trimmed, dropped, dropped_thinks, tokens_before,
                     tokens_after, reasoning_before, reasoning_kept, reasoning_kept_fraction,
                     reasoning_kept_dist, reasoning_kept_fraction_dist (trimmed samples),
                     tokens_before_dist (chat), tokens_after_dist (kept chat)}
                    each *_dist = {count, min, p10, p50, p90, p99, max, mean}
  copies            {samples (repeated by the mixture), copies (added), min_distance, median_distance (windows
                     between consecutive copies of one sample, where each starts; null without copies),
                     same_window (copies sharing a window: 0)}
  stages            [{label, stage, read, kept, rejected_total, duplicates, rejected: {reason: n}}]
  top_rejections    [{stage, reason, count}]  (duplicates count as reason "duplicate"), most frequent first
  packing, decontamination                                        copied from index.json
  warnings          [str]  shards that could not be read (run --validate)
  ttc               null | {builders: index.json "ttc", verification: {source: {correct, incorrect, unknown,
                     correct_rate}}, rsa_aggregate: {samples, tokens, tail_tokens_dist, tails_cut, targets_correct,
                     targets_verified, with_incorrect_candidate}, markovian_chunks: {samples, tokens, chains,
                     complete_chains, chunks_per_chain_dist, context_tokens_dist}}   packed samples of each builder
samples             null | [{shard, row, tokens, real_tokens,
                             documents: [{sample_id, upstream_id, source, start, end,
                                          runs: [{segment, loss, start, end, text}]}]}]
                    upstream_id: the record's own id in the user's dataset (null when it had none)
                    segment in pad|text|prompt|reasoning|answer|template; loss false = loss-masked
validation          null | {ok: bool, problems: [{where, check, message}]}
compare             null | {a, b, same_tokenizer, rows: [{metric, a, b, delta}], other: <stats of OTHER>}
plots               null | [png paths]
rsa_samples         null | [{id, window, target: {id, correct}, candidates: [{id, correct, tail_tokens, cut}],
                             prompt, reasoning, answer, tokens, reasoning_tokens}]
```
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from rich.console import Console

INSPECT_VERSION = 1


def add_inspect_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, help="OUTPUT folder of a run (holds index.json)")
    parser.add_argument("--sample", type=int, metavar="N", default=0, help="decode N random windows")
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    parser.add_argument("--split", choices=["train", "val"], default="train", help="split for --sample")
    parser.add_argument("--validate", action="store_true", help="check checksums, schema and invariants")
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON document")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write PNG plots to DIR")
    parser.add_argument("--compare", type=Path, metavar="OTHER_OUTPUT", help="side-by-side stats with another run")
    parser.add_argument("--top", type=int, default=10, help="rejection reasons to list (default 10)")
    parser.add_argument("--rsa-sample", type=int, metavar="N", default=0, help="decode N RSA aggregation samples")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="colour/tables")


def _console(color: str) -> Console:
    if color == "always":
        return Console(force_terminal=True, color_system="truecolor", width=120)
    if color == "never":
        return Console(no_color=True, force_terminal=False, soft_wrap=True)
    return Console()


def run_inspect(args: argparse.Namespace) -> int:
    """Run `reasonpipe inspect` with parsed args; returns the exit code."""
    from reasonpipe.pipeline import inspect_render as render

    console = _console(args.color)
    rich = console.is_terminal and not args.json
    err = Console(stderr=True)
    out: Path = args.output
    report: dict[str, Any] = {
        "inspect_version": INSPECT_VERSION,
        "output": str(out),
        "stats": None,
        "samples": None,
        "validation": None,
        "compare": None,
        "plots": None,
        "rsa_samples": None,
    }
    for folder in (out, args.compare):
        if folder is not None and not (folder / "index.json").is_file():  # not an output: exit 2 in every mode
            err.print(f"reasonpipe inspect: {folder} is not a reasonpipe output (no index.json)", markup=False)
            if args.json:
                sys.stdout.write(json.dumps(report, indent=1) + "\n")
            return 2
    code = 0
    if args.validate:
        from reasonpipe.pipeline.inspect_validate import validate

        problems = [p.to_dict() for p in validate(out)]
        report["validation"] = {"ok": not problems, "problems": problems}
        code = 1 if problems else 0
        if not args.json:
            render.render_sections(render.validation_sections(problems), console, rich)
            for p in problems:  # one greppable line per problem on stderr
                line = f"invalid: {p['where']}: [{p['check']}] {p['message']}"
                err.print(line, markup=False, highlight=False, soft_wrap=True)
    try:
        _views(args, report, console, rich)
    except (OSError, ValueError, KeyError, pa.ArrowException, pl.exceptions.PolarsError) as e:
        # an unreadable output: validation (if asked) already said why; otherwise say it here
        if code == 0:
            err.print(f"reasonpipe inspect: cannot read {out}: {type(e).__name__}: {e}", markup=False, soft_wrap=True)
            code = 2
    if args.json:
        sys.stdout.write(json.dumps(report, indent=1, default=str) + "\n")
    return code


def _views(args: argparse.Namespace, report: dict[str, Any], console: Console, rich: bool) -> None:
    """Fill `report` with the views asked for (and print them unless --json)."""
    from reasonpipe.pipeline import inspect_render as render
    from reasonpipe.pipeline import inspect_ttc as ttc
    from reasonpipe.pipeline.inspect_stats import compare_stats, compute_stats

    out: Path = args.output
    report["stats"] = stats = compute_stats(out, args.top)
    if not args.json and not (args.sample or args.validate or args.compare or args.rsa_sample):
        render.render_sections(render.stats_sections(stats), console, rich)
    if args.rsa_sample:
        report["rsa_samples"] = ttc.decode_aggregations(out, args.rsa_sample, args.seed)
        if not args.json:
            ttc.render_aggregations(report["rsa_samples"], console)
    if args.sample:
        report["samples"] = render.decode_windows(out, args.sample, args.seed, args.split)
        if not args.json:
            render.render_windows(report["samples"], console, rich)
    if args.compare:
        other = compute_stats(args.compare, args.top)
        report["compare"] = compare_stats(stats, other) | {"other": other}
        if not args.json:
            render.render_sections(render.compare_sections(report["compare"]), console, rich)
    if args.plot:
        from reasonpipe.pipeline.inspect_plots import make_plots

        report["plots"] = make_plots(out, stats, args.plot)
        if not args.json:
            console.print(f"plots: {', '.join(report['plots'])}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m reasonpipe.pipeline.inspect_cli OUTPUT ...`: the same as `reasonpipe inspect`."""
    parser = argparse.ArgumentParser(prog="reasonpipe inspect", description=__doc__.split("\n")[0])
    add_inspect_args(parser)
    return run_inspect(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
