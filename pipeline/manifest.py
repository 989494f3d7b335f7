"""The manifest: a YAML file validated into a `Manifest`, with errors that name the file, the line and the key.

Top-level keys: name, seed, inputs, stages, tokenizer, trim, builders, pack, mixture, output, executor. Stage options
are validated by the stage's own model from the registry (filters/stage.py), so adding a stage never edits this file.
Relative paths resolve against the manifest's folder.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reasonpipe.filters.stage import StageOptions
from reasonpipe.pipeline.registry import stage_class, stage_names
from reasonpipe.pipeline.yamlpos import YamlError, format_path, key_lines, line_of, load_yaml
from reasonpipe.tokenizer.config import TokenizerConfig
from reasonpipe.tokenizer.mixture import MixtureConfig
from reasonpipe.tokenizer.packing import PackConfig
from reasonpipe.trimming.config import TrimConfig
from reasonpipe.trimming.ttc_config import BuildersConfig

FORMATS = ("jsonl", "parquet", "arrow", "csv", "hf_disk")
SCHEMAS = ("messages", "problem_solution", "prompt_completion", "text", "auto")
SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".csv": "csv",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def infer_format(path: str) -> str | None:
    """Format from a path's suffix, ignoring compression suffixes (.gz, .zst, .bz2, .xz)."""
    name = path.rstrip("/").lower()
    for comp in (".gz", ".zst", ".zstd", ".bz2", ".xz"):
        name = name.removesuffix(comp)
    for suffix, fmt in SUFFIX_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    return None


class InputConfig(Strict):
    """One input: a file, a directory, a glob or an fsspec URL, and how to read it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    path: str
    format: Literal[FORMATS] | None = None  # inferred from the suffix when omitted
    schema_: Literal[SCHEMAS] = Field("auto", alias="schema")
    domain: str = "web"
    fields: dict[str, str] = {}  # canonical field -> key in the record, e.g. {text: content, question: prompt}
    max_record_bytes: int = Field(8 << 20, gt=0)  # larger records are rejected as `too_large`

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class OutputConfig(Strict):
    path: str
    rows_per_shard: int = Field(2048, gt=0)
    compression: Literal["lz4", "zstd"] | None = None  # None keeps shards zero-copy memory-mappable
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    # intermediate runs (tokenised corpus cache included); share one between manifests that differ only in
    # trim/pack/mixture (e.g. the 4K/32K/131K phases) so each re-runs only trimming and packing
    work_dir: str | None = None


class SlurmConfig(Strict):
    partition: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0
    qos: str | None = None
    env_command: str | None = None  # e.g. "source .venv/bin/activate"
    sbatch_args: dict[str, str] = {}


class RayConfig(Strict):
    address: str | None = None
    cpus_per_task: int = 1


class ExecutorConfig(Strict):
    kind: Literal["local", "dask", "slurm", "ray"] = "local"
    tasks: int = Field(2, gt=0)
    workers: int = Field(-1, ge=-1)  # -1: as many as tasks (capped by the CPU count locally)
    scheduler_address: str | None = None  # dask: an existing cluster instead of a LocalCluster
    retries: int = Field(2, ge=0)  # dask: attempts per failed task
    slurm: SlurmConfig = SlurmConfig()
    ray: RayConfig = RayConfig()


class Manifest(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    inputs: list[InputConfig] = Field(min_length=1)
    stages: list[dict[str, Any]] = []  # validated against the stage registry in `load_manifest`
    tokenizer: TokenizerConfig
    trim: TrimConfig = TrimConfig()
    builders: BuildersConfig = BuildersConfig()  # test-time-compute samples built in the pack phase
    pack: PackConfig = PackConfig()
    mixture: MixtureConfig | None = None
    output: OutputConfig
    executor: ExecutorConfig = ExecutorConfig()

    @field_validator("inputs")
    @classmethod
    def _unique_input_names(cls, inputs: list[InputConfig]) -> list[InputConfig]:
        names = [i.name for i in inputs]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"input names must be unique; repeated: {', '.join(dupes)}")
        return inputs

    @model_validator(mode="after")
    def _context_fits_window(self) -> Manifest:
        if self.trim.context is not None and self.trim.context > self.pack.seq_len:
            raise ValueError(
                f"trim.context ({self.trim.context}) exceeds pack.seq_len ({self.pack.seq_len}): a trimmed sample "
                "must fit one window. Lower trim.context or raise pack.seq_len."
            )
        self.builders.check(self.context)
        return self

    @property
    def context(self) -> int:
        """The trimming budget: trim.context, or the window length when unset."""
        return self.trim.context or self.pack.seq_len


@dataclass(frozen=True)
class StageSpec:
    """A validated `stages:` entry."""

    name: str
    index: int  # position in `stages:`
    label: str  # unique, e.g. "02-minhash"
    options: StageOptions
    domains: tuple[str, ...] | None


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    stages: list[StageSpec]
    path: Path
    raw: dict[str, Any]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, path: str) -> str:
        """A manifest path made absolute against the manifest's folder (URLs pass through)."""
        if is_url(path):
            return path
        p = Path(path.removeprefix("file://")).expanduser()
        if p.is_absolute():
            return str(p)
        try:
            return str((self.base_dir / p).resolve())
        except RuntimeError:  # a symlink loop: reported by preflight
            return os.path.normpath(self.base_dir / p)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()

    def located(self, loc: tuple, message: str) -> str:
        """A problem as `file:line: key.path: message`."""
        lines = key_lines(self.path.read_text(encoding="utf-8"))
        return f"{self.path.name}:{line_of(lines, loc) or '?'}: {format_path(loc)}: {message}"


class ManifestError(Exception):
    """Every problem of a manifest at once, each with its line, key path, what was found and what is allowed."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = path, problems
        super().__init__(f"invalid manifest {path}:\n" + "\n".join(f"  - {p}" for p in problems))


def _describe(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown key (remove it or check its spelling)"
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
        return f"found {err['input']!r}; allowed: {err['ctx']['expected']}"
    if "input" in err and not isinstance(err["input"], dict | list):
        return f"{msg} (found {err['input']!r})"
    return msg


def _problems(exc: ValidationError, lines: dict, path: Path) -> list[str]:
    return [
        f"{path.name}:{line_of(lines, err['loc']) or '?'}: {format_path(err['loc'])}: {_describe(err)}"
        for err in exc.errors()
    ]


def _check_stages(raw_stages: Any, base_dir: Path) -> tuple[list[StageSpec], list[tuple[tuple, str]]]:
    """Validate the `stages:` list against the registry; returns specs and (key path, message) problems."""
    specs, problems = [], []
    if not isinstance(raw_stages, list):
        return specs, [(("stages",), "must be a list of `- stage_name: {options}` entries")]
    for i, entry in enumerate(raw_stages):
        loc = ("stages", i)
        if not isinstance(entry, dict):
            problems.append((loc, f"found {entry!r}; expected a mapping like `- minhash: {{}}`"))
            continue
        names = [k for k in entry if k not in ("domains", "label")]
        if len(names) != 1:
            problems.append((loc, f"expected exactly one stage name, found {names or 'none'}"))
            continue
        name = names[0]
        cls = stage_class(name)
        if cls is None:
            problems.append((loc + (name,), f"unknown stage {name!r}; allowed: {', '.join(stage_names())}"))
            continue
        domains = entry.get("domains")
        if domains is not None and (not isinstance(domains, list) or not all(isinstance(d, str) for d in domains)):
            problems.append((loc + ("domains",), f"found {domains!r}; expected a list of domain names"))
            continue
        try:
            opts = cls.Options.model_validate(entry[name] or {}, context={"base_dir": base_dir})
        except ValidationError as exc:
            problems += [(loc + (name,) + tuple(e["loc"]), _describe(e)) for e in exc.errors()]
            continue
        label = f"{i + 1:02d}-{entry.get('label', name)}"
        specs.append(StageSpec(name, i, label, opts, tuple(domains) if domains else None))
    return specs, problems


def _check_inputs(raw_inputs: Any, base_dir: Path) -> list[tuple[tuple, str]]:
    """Paths that match no file, and formats that cannot be inferred (checked on the raw YAML, with the rest)."""
    problems = []
    for i, inp in enumerate(raw_inputs if isinstance(raw_inputs, list) else []):
        if not isinstance(inp, dict) or not isinstance(inp.get("path"), str):
            continue
        path = inp["path"]
        if is_url(path):
            continue
        target = Path(path.removeprefix("file://")).expanduser()
        target = str(target if target.is_absolute() else base_dir / target)
        if not glob.glob(target):
            problems.append((("inputs", i, "path"), f"no file matches {target}"))
        elif inp.get("format") is None and infer_format(target) is None and not Path(target).is_dir():
            problems.append((("inputs", i, "format"), f"cannot infer the format of {path!r}; set one of {FORMATS}"))
    return problems


def load_manifest(path: str | Path, overrides: dict[str, Any] | None = None) -> LoadedManifest:
    """Read, validate and resolve a manifest. `overrides` maps dotted keys (e.g. `executor.tasks`) to values."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ManifestError(path, [f"{path}: no such file"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(path, [f"{path}: cannot read it: {exc}"]) from None
    try:
        raw = load_yaml(text)
    except YamlError as exc:
        raise ManifestError(path, [f"{path.name}:{exc.line}: {exc.message}"]) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ManifestError(path, [f"{path.name}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ManifestError(path, [f"{path.name}:1: the manifest must be a mapping of top-level keys"])
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    lines = key_lines(text)
    specs, stage_problems = _check_stages(raw.get("stages", []), path.parent)
    found = stage_problems + _check_inputs(raw.get("inputs"), path.parent)
    problems = [f"{path.name}:{line_of(lines, loc) or '?'}: {format_path(loc)}: {msg}" for loc, msg in found]
    try:
        manifest = Manifest.model_validate(raw, context={"base_dir": path.parent})
    except ValidationError as exc:
        problems = _problems(exc, lines, path) + problems
    if problems:
        raise ManifestError(path, problems)
    return LoadedManifest(manifest, specs, path, raw)
