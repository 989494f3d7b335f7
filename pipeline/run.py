"""`reasonpipe run`: execute a manifest's runs in order, resumably, then assemble the output and report.

Before any work: `preflight` (pipeline/preflight.py), then the output and work folders are claimed (marked, see
pipeline/workdir.py) and locked for the whole run. A run that cannot finish raises `RunError` (a message saying why
and what to do, exit 1); Ctrl-C raises `Interrupted` (which runs finished, exit 130). Either way every finished task
is kept and re-running the same command resumes.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import sys
import time

from rich.console import Console

from reasonpipe.pipeline import slurm_chain, tail
from reasonpipe.pipeline.accounting import check_identity, stage_counts
from reasonpipe.pipeline.compile import compile_plan, work_folder
from reasonpipe.pipeline.executors import run_to_end
from reasonpipe.pipeline.hashing import HashCache
from reasonpipe.pipeline.manifest import LoadedManifest, ManifestError
from reasonpipe.pipeline.preflight import preflight
from reasonpipe.pipeline.progress import Watcher, snapshot
from reasonpipe.pipeline.runs import Plan, RunSpec, built_from, phase_status, run_complete
from reasonpipe.pipeline.tasklogs import quiet_logs
from reasonpipe.pipeline.workdir import RunLock, claim, remove_owned
from reasonpipe.tokenizer.shards import sha256_file

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
OUTPUT_RESULTS = ("index.json", "tokenizer.json", "shards", "shards-val", "samples", "exclusions")


class RunError(Exception):
    """A run that could not finish; the message says why and what to do."""


class Interrupted(Exception):
    """Ctrl-C: the message says what finished and that a re-run resumes."""


def _reset_output(plan: Plan) -> None:
    """--force: remove the previous results and this output's intermediate runs (only what reasonpipe wrote)."""
    for name in OUTPUT_RESULTS:
        remove_owned(os.path.join(plan.output_dir, name), plan.output_dir)
    private = plan.work_dir == os.path.join(plan.output_dir, ".work")  # else a shared work_dir: only our phases
    phases = glob.glob(os.path.join(plan.work_dir, "prep-*")) + glob.glob(os.path.join(plan.work_dir, "pack-*"))
    for folder in phases if private else [plan.prep_dir, plan.pack_dir]:
        remove_owned(folder, plan.work_dir)


def _already_done(plan: Plan) -> bool:
    return all(map(run_complete, plan.runs)) and built_from(plan.output_dir) == plan.pack_hash


def _no_space(exc: BaseException | None) -> bool:
    while exc is not None:
        if getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _failure(plan: Plan, run: RunSpec, exc: Exception) -> RunError:
    logs = os.path.join(run.logging_dir, "logs")
    if _no_space(exc):
        filename = getattr(exc, "filename", None)
        folder = os.path.dirname(filename) if filename else (plan.prep_dir if run.phase == "prep" else plan.pack_dir)
        return RunError(
            f"No space left on device while run {run.name!r} was writing under {folder}. Free some space there, "
            f"then re-run the same command: finished tasks are kept and the run resumes (task logs: {logs})"
        )
    return RunError(
        f"run {run.name!r} failed: {type(exc).__name__}: {exc}\n  task logs: {logs}\n"
        "  fix the cause and re-run the same command: finished tasks are kept and the run resumes"
    )


def _interrupted(plan: Plan, i: int) -> Interrupted:
    run = plan.runs[i - 1]
    finished = [r.name for r in plan.runs if run_complete(r)]
    done = snapshot(run.logging_dir)[0]
    names = f" ({', '.join(finished)})" if finished else ""
    return Interrupted(
        f"interrupted: {len(finished)}/{len(plan.runs)} runs finished{names}; run {i} {run.name!r} stopped with "
        f"{done}/{run.tasks} tasks done. Re-run the same command to resume."
    )


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
        try:
            with Watcher(title, run.logging_dir, run.tasks):
                run_to_end(run.build(), run.tasks, run.logging_dir, cfg)
        except KeyboardInterrupt:
            raise _interrupted(plan, i) from None
        except ManifestError:  # found when a run is built from the runs before it (e.g. a builder built nothing)
            raise
        except Exception as exc:
            raise _failure(plan, run, exc) from exc
        if not run_complete(run):
            raise RunError(f"run {run.name!r} finished with incomplete tasks; logs: {run.logging_dir}/logs")
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


def encoded_tokenizer_sha(plan: Plan) -> str:
    """The sha256 of the tokenizer the tokenise run encoded with; refuses a tokenizer file that differs from it."""
    recorded = set()
    for path in sorted(glob.glob(os.path.join(tail._tokens_dir(plan.prep_dir), "*.stats.json"))):
        with open(path, encoding="utf-8") as f:
            recorded.add(json.load(f).get("tokenizer_sha256"))
    path = tail.tokenizer_file(plan.loaded, plan.prep_dir)
    shipped = sha256_file(path)
    if recorded != {shipped}:
        found = ", ".join(sorted(str(r)[:12] for r in recorded))
        raise RunError(
            f"refusing to ship {path} (sha256 {shipped[:12]}): the corpus was tokenised with another tokenizer "
            f"(sha256 {found}); it was replaced during the run. Re-run the same command: the corpus is tokenised "
            "again with the tokenizer now at that path"
        )
    return shipped


def assemble(plan: Plan) -> dict:
    """Check the accounting and the tokenizer, then write OUTPUT (index.json last)."""
    table = stage_counts(plan)
    print_accounting(table)
    if bad := check_identity(table):
        raise RunError(
            "accounting does not add up, so the output was not assembled: " + "; ".join(bad) + f". Task stats are in "
            f"the runs' stats/ folders under {plan.work_dir}; this is a bug in the stage named (please report it)"
        )
    sha = encoded_tokenizer_sha(plan)
    # an output being reassembled never shows an index.json beside shards it does not describe
    remove_owned(os.path.join(plan.output_dir, "index.json"), plan.output_dir)
    return tail.finalize(plan, table, sha)


def run_manifest(
    loaded: LoadedManifest,
    limit: int | None = None,
    force: bool = False,
    strict: bool = False,
    wait: bool = False,
    command: list[str] | None = None,
) -> Plan:
    """Run (or, on Slurm without `wait`, submit) the manifest; `command` is the `reasonpipe run` command line a Slurm
    chain's continuation job repeats (pipeline/slurm_chain.py)."""
    for warning in preflight(loaded, strict):
        console.print(f"[yellow]warning[/yellow]: {warning}", soft_wrap=True)
    output_dir, work = loaded.resolve(loaded.manifest.output.path), work_folder(loaded)
    claim(output_dir, "output")
    claim(work, "work")
    try:
        with RunLock([output_dir, work]) as lock:
            for note in lock.notes + slurm_chain.check_not_submitted(output_dir):
                console.print(note, soft_wrap=True)
            return _run_locked(loaded, limit, force, wait, command)
    except OSError as exc:
        if _no_space(exc):
            raise RunError(
                f"No space left on device writing {getattr(exc, 'filename', None) or output_dir}. Free some space, "
                "then re-run the same command: finished tasks are kept and the run resumes"
            ) from exc
        raise


def _run_locked(loaded: LoadedManifest, limit: int | None, force: bool, wait: bool, command: list[str] | None) -> Plan:
    hashes = HashCache(work_folder(loaded))
    plan = compile_plan(loaded, limit, hashes)
    hashes.save()
    if force:
        _reset_output(plan)
    elif _already_done(plan):
        console.print(f"nothing to do: {plan.output_dir} is complete for this manifest (use --force to redo)")
        return plan
    console.print(f"reasonpipe run {loaded.manifest.name}: {len(plan.runs)} datatrove runs -> {plan.output_dir}")
    for line in phase_status(plan):
        console.print(f"  {line}", soft_wrap=True)
    for inp, source in zip(loaded.manifest.inputs, plan.sources):
        if inp.schema_ == "auto":
            console.print(f"input {source.name}: schema auto -> {source.schema} (from its first records)")
    plan.prep_key.save(plan.prep_dir)
    plan.pack_key.save(plan.pack_dir)
    if loaded.manifest.executor.kind == "slurm" and not wait and not slurm_chain.all_complete(plan):
        if not loaded.manifest.output.keep_intermediate:  # what the finished runs were the last to read
            for run in plan.runs:
                if run_complete(run):
                    run.release()
        # called from Python without the command line: the continuation jobs re-run the manifest file itself
        default = [sys.executable, "-m", "reasonpipe.pipeline.cli", "run", str(loaded.path.resolve())]
        jobs = slurm_chain.submit(plan, command or default + (["--limit", str(limit)] if limit is not None else []))
        runs = ", ".join(f"{j.run} {j.job_id}" for j in jobs)
        console.print(
            f"submitted to Slurm: {runs}. The chain runs without this process (the last job assembles the output); "
            f"follow it with `reasonpipe status {plan.output_dir}` (--wait to block until it ends)",
            soft_wrap=True,
        )
        return plan
    execute(plan)
    index = assemble(plan)
    train = index["totals"]["train"]
    console.print(
        f"wrote {train['windows']:,} windows of {index['seq_len']} tokens "
        f"({train['real_tokens']:,} real tokens, packing efficiency {train['packing_efficiency']:.2%})\n"
        f"outputs: {plan.output_dir}/index.json, shards/, samples/, exclusions/ — "
        f"inspect with `reasonpipe inspect {plan.output_dir}`"
    )
    return plan
