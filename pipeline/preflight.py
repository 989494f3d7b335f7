"""Checks before any work starts (`plan` and `run`): all a run needs is there, and it cannot hurt the user's files.

Errors (a `ManifestError` listing every problem with its line and key; exit 2, nothing is written):
- `output.path` / `output.work_dir`: `/`, the home folder or a folder above it, the manifest's own folder or one above
  it, equal to or inside an input folder (the run would read its own files), holding an input, an existing file, or a
  non-empty folder reasonpipe did not create (no `.reasonpipe` marker); the work folder equal to the output;
- inputs: a path that is a symlink loop or a dangling symlink, a folder with no file of the input's format, a file
  that cannot be read (permissions);
- `tokenizer.path` does not load as a tokenizer, or lacks a token the template names;
- a stage's own files do not parse (e.g. a decontamination benchmark without the fields it names).
Warnings (printed; `--strict` makes them errors): entries of an input folder that are not read (dangling symlinks,
symlink loops, files of another or unknown format).
"""

from __future__ import annotations

import os
from pathlib import Path

from reasonpipe.pipeline.compile import list_input, stat_problem, work_folder
from reasonpipe.pipeline.manifest import LoadedManifest, ManifestError, is_url
from reasonpipe.pipeline.registry import stage_class
from reasonpipe.pipeline.workdir import refusal

Problem = tuple[tuple, str]  # (key path, message)


def _inside(path: str, folder: str) -> bool:
    """`path` equals `folder` or lies below it (both absolute)."""
    return os.path.commonpath([path, folder]) == folder


def _input_roots(loaded: LoadedManifest) -> list[tuple[str, str]]:
    """(input name, local path) of every input; a glob stands for the folder before its first wildcard."""
    roots = []
    for inp in loaded.manifest.inputs:
        target = loaded.resolve(inp.path)
        if not is_url(target):
            static = target.split("*")[0].split("?")[0].split("[")[0]
            roots.append((inp.name, os.path.dirname(static) if static != target else target))
    return roots


def _folder_problems(loaded: LoadedManifest) -> list[Problem]:
    m = loaded.manifest
    out = loaded.resolve(m.output.path)
    folders = [(("output", "path"), out, "output")]
    if m.output.work_dir:
        folders.append((("output", "work_dir"), work_folder(loaded), "work"))
    home, manifest_dir = str(Path.home().resolve()), str(loaded.base_dir)
    problems: list[Problem] = []
    for loc, path, kind in folders:
        if is_url(path):
            continue
        path = os.path.realpath(path)
        if _inside(home, path):
            what = "/" if path == "/" else "your home folder or above it"
            problems.append((loc, f"{path} is {what}; choose a folder of its own for reasonpipe"))
            continue
        if _inside(manifest_dir, path):
            problems.append((loc, f"{path} holds this manifest ({loaded.path.name}); choose a folder of its own"))
            continue
        for name, root in _input_roots(loaded):
            root = os.path.realpath(root)
            if _inside(path, root):
                why = "later runs would read their own files as input; choose a folder outside every input"
                problems.append((loc, f"{path} is inside input {name!r} ({root}): {why}"))
            elif _inside(root, path):
                problems.append((loc, f"input {name!r} ({root}) is inside {path}; keep inputs outside the output"))
        if why := refusal(path, kind):
            problems.append((loc, why))
    if m.output.work_dir and os.path.realpath(work_folder(loaded)) == os.path.realpath(out):
        problems.append((("output", "work_dir"), "must differ from output.path (leave it unset for OUTPUT/.work)"))
    return problems


def _input_problems(loaded: LoadedManifest) -> tuple[list[Problem], list[Problem]]:
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for i, inp in enumerate(loaded.manifest.inputs):
        loc = ("inputs", i, "path")
        target = loaded.resolve(inp.path)
        if is_url(target):
            continue
        if os.path.lexists(target) and (problem := stat_problem(target)):
            errors.append((loc, f"{target} is a {problem}"))
            continue
        listing = list_input(target, inp.format)
        if not listing.files:
            errors.append((loc, f"{target} holds no {listing.format} file; check the path or set `format`"))
        for f in listing.files:
            if problem := stat_problem(f):
                errors.append((loc, f"{f} is a {problem}"))
            elif not os.access(f, os.R_OK | (os.X_OK if os.path.isdir(f) else 0)):
                errors.append((loc, f"cannot read {f}: permission denied"))
        if listing.skipped:
            shown = ", ".join(f"{Path(p).relative_to(target)} ({why})" for p, why in listing.skipped[:5])
            more = f" and {len(listing.skipped) - 5} more" if len(listing.skipped) > 5 else ""
            warnings.append((loc, f"{len(listing.skipped)} entries of {target} are not read: {shown}{more}"))
    return errors, warnings


def _tokenizer_problems(loaded: LoadedManifest) -> list[Problem]:
    tok = loaded.manifest.tokenizer
    if tok.path is None:
        return []
    from reasonpipe.tokenizer.vocab import load_tokenizer, resolve_template

    path = loaded.resolve(str(tok.path))
    try:
        tokenizer = load_tokenizer(path)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exceptions for a bad file
        return [(("tokenizer", "path"), f"{path} does not load as a tokenizer: {exc}")]
    try:
        resolve_template(tokenizer, tok.template)
    except ValueError as exc:
        return [(("tokenizer", "template"), str(exc).removeprefix("tokenizer.template."))]
    return []


def preflight(loaded: LoadedManifest, strict: bool = False) -> list[str]:
    """Raise a `ManifestError` with every problem found; return the warnings (errors too when `strict`)."""
    errors = _folder_problems(loaded)
    input_errors, warnings = _input_problems(loaded)
    errors += input_errors + _tokenizer_problems(loaded)
    for spec in loaded.stages:
        found = stage_class(spec.name)().check(spec.options)
        errors += [(("stages", spec.index, spec.name) + loc, msg) for loc, msg in found]
    if strict:
        errors += [(loc, f"{msg} (an error under --strict)") for loc, msg in warnings]
    if errors:
        raise ManifestError(loaded.path, [loaded.located(loc, msg) for loc, msg in errors])
    return [loaded.located(loc, msg) for loc, msg in warnings]
