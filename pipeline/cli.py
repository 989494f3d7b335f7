"""The `reasonpipe` command line: run, plan, inspect, train, export (megatron | hf), export-hf, generate, eval,
tokenizer train.

Exit codes of `run` and `plan`: 0 done (or nothing to do), 1 the run failed (a task failed, disk full, accounting that
does not add up, a tokenizer replaced mid-run: the message says why; a re-run resumes), 2 invalid manifest or refused
paths (nothing was started), 3 another run holds the output or work folder, 130 interrupted (Ctrl-C; a re-run
resumes). A user mistake never ends in a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Any

from reasonpipe.pipeline.manifest import ManifestError

EXIT_FAILED, EXIT_INVALID, EXIT_BUSY, EXIT_INTERRUPTED = 1, 2, 3, 130


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {"executor.tasks": args.tasks, "executor.workers": args.workers, "executor.kind": args.executor}
    return {k: v for k, v in pairs.items() if v is not None}


def _manifest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="the YAML manifest")
    p.add_argument("--tasks", type=int, help="override executor.tasks")
    p.add_argument("--workers", type=int, help="override executor.workers")
    p.add_argument("--executor", choices=["local", "dask", "slurm", "ray"], help="override executor.kind")
    p.add_argument("--limit", type=int, help="read at most N records per input (quick trials)")
    p.add_argument("--strict", action="store_true", help="treat warnings (input entries not read) as errors")


def _replay(args: argparse.Namespace) -> list[str]:
    """This `reasonpipe run` command line, for the continuation jobs of a Slurm chain (never with --force)."""
    cmd = [sys.executable, "-m", "reasonpipe.pipeline.cli", "run", os.path.abspath(args.manifest)]
    for flag in ("tasks", "workers", "executor", "limit"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    return cmd + (["--strict"] if args.strict else [])


def cmd_run(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.manifest import load_manifest
    from reasonpipe.pipeline.run import run_manifest

    loaded = load_manifest(args.manifest, _overrides(args))
    run_manifest(loaded, args.limit, args.force, args.strict, args.wait, _replay(args))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.slurm_chain import follow

    return follow(os.path.abspath(args.output), args.wait, args.poll)


def cmd_plan(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.manifest import load_manifest
    from reasonpipe.pipeline.plan import print_plan

    print_plan(load_manifest(args.manifest, _overrides(args)), limit=args.limit, strict=args.strict)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.inspect_cli import run_inspect

    return run_inspect(args)


def cmd_export_hf(args: argparse.Namespace) -> int:
    from reasonpipe.trainer.export import main as export_main

    return export_main(args.run_dir, args.out_dir)


def cmd_export(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.export_io import ExportError

    if args.format == "megatron":
        from reasonpipe.pipeline.export_megatron import export_megatron as export
    else:
        from reasonpipe.pipeline.export_datasets import export_hf as export
    try:
        info = export(args.output, args.dest)
    except ExportError as err:
        print(f"reasonpipe export {args.format}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reasonpipe export {args.format}: interrupted; {args.dest} is unchanged", file=sys.stderr)
        return 130
    rows = ", ".join(f"{name} {s.get('windows', s.get('rows'))} windows" for name, s in info["splits"].items())
    print(f"wrote {args.dest} ({rows}); see {args.dest}/reasonpipe-export.json")
    for name, s in info["splits"].items():
        if s.get("eod_reset_mismatches"):
            print(
                f"warning: {name}: in {s['eod_reset_mismatches']} windows documents do not end exactly at EOS tokens: "
                "Megatron's --reset-attention-mask will not find their boundaries (examples in the marker file)",
                file=sys.stderr,
            )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.generate_cli import run_generate

    return _model_command("generate", run_generate, args)


def cmd_eval(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.evaluate import run_eval

    return _model_command("eval", run_eval, args)


def _model_command(name: str, func, args: argparse.Namespace) -> int:
    """generate / eval: a bad input or model folder is one line and exit 2, an output that cannot be written (a path
    under a file, no permission, disk full) one line and exit 1; Ctrl-C writes nothing and exits 130."""
    from reasonpipe.pipeline.completion import PromptError
    from reasonpipe.pipeline.generation_args import UsageError
    from reasonpipe.pipeline.load_model import LoadError

    try:
        return func(args)
    except (UsageError, LoadError, PromptError) as err:
        return _fail(f"reasonpipe {name}: {err}", EXIT_INVALID)
    except OSError as err:
        return _fail(f"reasonpipe {name}: cannot write {err.filename or 'the output'} ({err.strerror or err})",
                     EXIT_FAILED)  # fmt: skip
    except KeyboardInterrupt:
        return _fail(f"reasonpipe {name}: interrupted; nothing was written", EXIT_INTERRUPTED)


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.tokenizer_cli import train_from_files

    train_from_files(args.inputs, args.out, args.vocab_size, args.field, args.sample_docs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasonpipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a manifest (resumable: re-run the same command after an interruption)")
    _manifest_args(p)
    p.add_argument("--force", action="store_true", help="discard previous results and start over")
    p.add_argument(
        "--wait", action="store_true", help="slurm: wait for each run here instead of submitting the chain and leaving"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="where a submitted Slurm chain is (exit 0 done, 1 failed, 4 still working)")
    p.add_argument("output", help="the manifest's output folder")
    p.add_argument("--wait", action="store_true", help="follow the chain until it ends")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between checks with --wait")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("plan", help="validate a manifest and print its datatrove runs without running them")
    _manifest_args(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("inspect", help="summarise, decode, validate, plot or compare a run's output")
    from reasonpipe.pipeline.inspect_cli import add_inspect_args

    add_inspect_args(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "train", help="train the bundled ZAYA1 model on shards (see `reasonpipe train -h`)", add_help=False
    )
    p.set_defaults(func=None)

    p = sub.add_parser("export", help="export an output's windows for Megatron-LM/Primus or Hugging Face datasets")
    p.add_argument(
        "format",
        choices=["megatron", "hf"],
        help="megatron: indexed .bin/.idx per split, one document per window; hf: a datasets DatasetDict folder",
    )
    p.add_argument("output", help="a reasonpipe output folder (holds index.json)")
    p.add_argument("dest", help="new or empty folder to write (an earlier reasonpipe export there is replaced)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-hf", help="export a training run's latest checkpoint as a transformers Zaya folder")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.set_defaults(func=cmd_export_hf)

    from reasonpipe.pipeline.generate_cli import add_generate_args

    p = sub.add_parser("generate", help="chat completions from a training run or an export-hf folder")
    add_generate_args(p)
    p.set_defaults(func=cmd_generate)

    from reasonpipe.pipeline.evaluate import add_eval_args

    p = sub.add_parser("eval", help="answer accuracy on a benchmark file (pass@k, majority vote, Markovian RSA)")
    add_eval_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("tokenizer", help="tokenizer utilities")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    t = tsub.add_parser("train", help="train a byte-level BPE with reasonpipe's special tokens on text files")
    t.add_argument("inputs", nargs="+", help="jsonl/parquet/csv/txt files")
    t.add_argument("--out", required=True, help="where to write tokenizer.json")
    t.add_argument("--vocab-size", type=int, default=32000)
    t.add_argument("--field", default="text", help="record field holding the text (jsonl/parquet/csv)")
    t.add_argument("--sample-docs", type=int, default=None, help="train on at most this many documents")
    t.set_defaults(func=cmd_tokenizer_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [
        "train"
    ]:  # the trainer owns its flags (and runs under torchrun as `python -m reasonpipe.trainer.train`)
        from reasonpipe.trainer.train import main as train_main

        return train_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    return guarded(args.func, args)


def guarded(func, args: argparse.Namespace) -> int:
    """Run a command; the errors a user can cause become one message on stderr and an exit code."""
    from reasonpipe.pipeline.run import Interrupted, RunError
    from reasonpipe.pipeline.workdir import FolderError, LockBusy

    try:
        return func(args)
    except ManifestError as err:
        return _fail(str(err), EXIT_INVALID)
    except FolderError as err:
        return _fail(f"reasonpipe: {err}", EXIT_INVALID)
    except LockBusy as err:
        return _fail(f"reasonpipe: {err}", EXIT_BUSY)
    except RunError as err:
        return _fail(f"reasonpipe: {err}", EXIT_FAILED)
    except (Interrupted, KeyboardInterrupt) as err:
        return _fail(f"reasonpipe: {err or 'interrupted; re-run the same command to resume'}", EXIT_INTERRUPTED)
    except OSError as err:  # the driver's own writes and reads: a full disk, a folder it may not write
        where = f" ({err.filename})" if err.filename else ""
        hint = "free some space, then " if err.errno == errno.ENOSPC else ""
        return _fail(f"reasonpipe: {err.strerror or err}{where}; {hint}re-run the same command to resume", 1)


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
