"""`reasonpipe run`: execute a manifest's runs in order, resumably, then assemble the output and report."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from rich.console import Console

from reasonpipe.pipeline import tail
from reasonpipe.pipeline.accounting import check_identity, stage_counts
from reasonpipe.pipeline.compile import compile_plan
from reasonpipe.pipeline.executors import make_executor
from reasonpipe.pipeline.manifest import LoadedManifest
from reasonpipe.pipeline.progress import Watcher
from reasonpipe.pipeline.runs import Plan, RunSpec
from reasonpipe.pipeline.tasklogs import quiet_logs

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def run_complete(run: RunSpec) -> bool:
    folder = os.path.join(run.logging_dir, "completions")
    return os.path.isdir(folder) and len(os.listdir(folder)) >= run.tasks


def _reset_output(plan: Plan) -> None:
    """--force: remove the previous results and this manifest's intermediate runs."""
    for name in ("index.json", "tokenizer.json", "shards", "shards-val", "samples", "exclusions", ".work"):
        path = os.path.join(plan.output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    for path in (plan.prep_dir, plan.pack_dir):
        shutil.rmtree(path, ignore_errors=True)


def _already_done(plan: Plan) -> bool:
    index = os.path.join(plan.output_dir, "index.json")
    if not os.path.exists(index) or not all(map(run_complete, plan.runs)):
        return False
    with open(index) as f:
        return json.load(f).get("run_fingerprint") == plan.pack_hash


def execute(plan: Plan) -> None:
    cfg = plan.loaded.manifest.executor
    keep = plan.loaded.manifest.output.keep_intermediate
    quiet_logs()
    for i, run in enumerate(plan.runs, 1):
        title = f"[{i}/{len(plan.runs)}] {run.name}"
        if run_complete(run):
            console.print(f"{title}: already complete, skipped")
            if not keep:
                run.release()
            continue
        start = time.monotonic()
        executor = make_executor(run.build(), run.tasks, run.logging_dir, cfg)
        with Watcher(title, run.logging_dir, run.tasks):
            try:
                executor.run()
            except Exception as exc:
                logs = os.path.join(run.logging_dir, "logs")
                raise RuntimeError(f"run {run.name!r} failed ({exc}); task logs: {logs}") from exc
        if not run_complete(run):
            raise RuntimeError(f"run {run.name!r} finished with incomplete tasks; logs: {run.logging_dir}/logs")
        console.print(f"{title}: done in {time.monotonic() - start:.1f}s ({run.tasks} tasks)")
        if not keep:  # intermediate folders no later run reads (output.keep_intermediate keeps them)
            run.release()


def print_accounting(table: list[dict]) -> None:
    from rich.table import Table

    t = Table(title="per-stage accounting (read = kept + rejected + duplicates)")
    for col in ("stage", "read", "kept", "rejected", "duplicates", "top reasons"):
        t.add_column(col, justify="right" if col in ("read", "kept", "rejected", "duplicates") else "left")
    for row in table:
        reasons = sorted(row["rejected"].items(), key=lambda kv: -kv[1])[:3]
        top = ", ".join(f"{k} {v}" for k, v in reasons)
        rejected = sum(row["rejected"].values())
        t.add_row(row["label"], f"{row['read']:,}", f"{row['kept']:,}", f"{rejected:,}", f"{row['duplicates']:,}", top)
    console.print(t)


def run_manifest(loaded: LoadedManifest, limit: int | None = None, force: bool = False) -> Plan:
    plan = compile_plan(loaded, limit)
    if force:
        _reset_output(plan)
    elif _already_done(plan):
        console.print(f"nothing to do: {plan.output_dir} is complete for this manifest (use --force to redo)")
        return plan
    os.makedirs(plan.output_dir, exist_ok=True)
    console.print(f"reasonpipe run {loaded.manifest.name}: {len(plan.runs)} datatrove runs -> {plan.output_dir}")
    for inp, source in zip(loaded.manifest.inputs, plan.sources):
        if inp.schema_ == "auto":
            console.print(f"input {source.name}: schema auto -> {source.schema} (from its first records)")
    execute(plan)
    table = stage_counts(plan)
    index = tail.finalize(plan, table)
    print_accounting(table)
    for problem in check_identity(table):
        console.print(f"[red]accounting mismatch[/red]: {problem}")
    train = index["totals"]["train"]
    console.print(
        f"wrote {train['windows']:,} windows of {index['seq_len']} tokens "
        f"({train['real_tokens']:,} real tokens, packing efficiency {train['packing_efficiency']:.2%})\n"
        f"outputs: {plan.output_dir}/index.json, shards/, samples/, exclusions/ — "
        f"inspect with `reasonpipe inspect {plan.output_dir}`"
    )
    return plan
