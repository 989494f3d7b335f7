"""`reasonpipe plan`: validate a manifest and everything a run needs (pipeline/preflight.py), say which phases a run
would reuse, resume or redo and why, and show its datatrove runs, without running anything."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from reasonpipe.pipeline.compile import compile_plan, work_folder
from reasonpipe.pipeline.hashing import HashCache
from reasonpipe.pipeline.manifest import LoadedManifest
from reasonpipe.pipeline.preflight import preflight
from reasonpipe.pipeline.registry import stage_class
from reasonpipe.pipeline.runs import phase_status
from reasonpipe.pipeline.workdir import is_ours

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_plan(loaded: LoadedManifest, limit: int | None = None, strict: bool = False) -> None:
    m = loaded.manifest
    warnings = preflight(loaded, strict)
    hashes = HashCache(work_folder(loaded))
    plan = compile_plan(loaded, limit, hashes)
    if is_ours(plan.work_dir):  # keep the file digests for the next plan or run (never creates a folder)
        hashes.save()
    console.print(f"manifest {loaded.path} is valid: {m.name!r}, seed {m.seed}, executor {m.executor.kind}")
    for warning in warnings:
        console.print(f"[yellow]warning[/yellow]: {warning}", soft_wrap=True)
    console.print(f"output: {plan.output_dir} (work folder {plan.work_dir})")
    for line in phase_status(plan):
        console.print(f"  {line}", soft_wrap=True)
    for s in plan.sources:
        console.print(f"  input {s.name}: {len(s.files)} {s.format} file(s), schema {s.schema}, domain {s.domain}")
    for spec in loaded.stages:
        note = stage_class(spec.name)().describe(spec.options)
        scope = f" (domains: {', '.join(spec.domains)})" if spec.domains else ""
        console.print(f"  stage {spec.label}{scope}" + (f": {note}" if note else ""))
    console.print(f"  trim: context {m.context}, policy {m.trim.policy}; pack: seq_len {m.pack.seq_len}")
    b = m.builders
    for name, cfg, note in (("rsa_aggregate", b.rsa_aggregate, lambda c: c.describe()),
                            ("markovian_chunks", b.markovian_chunks, lambda c: c.describe(m.context))):  # fmt: skip
        if cfg is not None:
            console.print(f"  builder {name} (domain {cfg.output_domain}): {note(cfg)}")

    table = Table(title="datatrove runs (each starts after the previous one completes)")
    for col in ("#", "run", "phase", "tasks", "steps"):
        table.add_column(col)
    for i, run in enumerate(plan.runs, 1):
        steps = "built when the run starts" if callable(run.steps) else " -> ".join(s.name for s in run.steps)
        table.add_row(str(i), run.name, run.phase, str(run.tasks), steps + (f"  [{run.note}]" if run.note else ""))
    console.print(table)
    if m.mixture is not None:
        from reasonpipe.pipeline.tail import predicted_mixture

        shares = predicted_mixture(plan)
        console.print("mixture (predicted token shares): " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    if m.executor.kind == "slurm":
        from reasonpipe.pipeline.distributed import sbatch_scripts

        for name, script in sbatch_scripts(plan):
            console.print(f"--- sbatch script for {name} ---\n{script}")
