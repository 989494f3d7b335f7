"""The stage registry: how a manifest stage name becomes datatrove pipeline steps.

Each stage module declares a `Stage` subclass with a `name`, a pydantic `Options` model and a `build` method, and
registers it with `@register`. The manifest validator and `reasonpipe plan` read `REGISTRY`; adding a stage never
edits a central schema. This module lives in `filters/` (not `pipeline/`) so stage modules never import the pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from reasonpipe.filters.exclusions import exclusion_writer


class StageOptions(BaseModel):
    """Base for every stage's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def _resolve_existing(path: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the manifest's folder and insist that it exists."""
    base = (info.context or {}).get("base_dir")
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    return path


# A path option that must exist; relative paths resolve against the manifest's folder.
ExistingPath = Annotated[Path, AfterValidator(_resolve_existing)]


@dataclass(frozen=True)
class BuildContext:
    """What a stage needs to know to build its steps."""

    label: str  # unique label of this stage instance, e.g. "03-minhash"; names its folders and stats
    work_dir: str  # private scratch folder for this stage instance
    exclusions_dir: str  # where this stage's rejected documents go (OUTPUT/exclusions/<label>)
    tasks: int  # task count of the streaming runs
    seed: int
    domains: tuple[str, ...] | None  # only documents of these domains are subject to the stage; None = all

    def exclusion_writer(self):
        """A datatrove writer for this stage's rejected documents (pass it to `BaseFilter(exclusion_writer=...)`)."""
        return exclusion_writer(self.exclusions_dir)

    def selected(self, domain: str | None) -> bool:
        """Whether a document of `domain` is subject to this stage."""
        return self.domains is None or domain in self.domains


class Chain(Protocol):
    """The DAG under construction (implemented by pipeline/runs.py).

    Steps are appended to the current *streaming run* (documents flow from the readers through every inline step).
    A stage that needs a global view of the data (dedup) calls `materialize()` to end the current run by writing its
    documents to a folder, adds its own runs, then `continue_from(folder, ...)` to start the next streaming run from
    those documents (same task count and rank -> file mapping, so per-rank document order is preserved). Consecutive
    dedup stages share one materialization (pipeline/runs.py): `pending_removals()` says what to skip.
    """

    def add(self, *steps) -> None: ...

    def materialize(self) -> str: ...

    def reader(self, folder: str):
        """A datatrove reader for documents written by `materialize()` (rank r reads file r)."""
        ...

    def pending_removals(self) -> tuple:
        """(work folder, producers) of earlier dedup stages whose removals the documents just materialized still
        hold (their signers rode one run); this stage drops those rows from its signatures first
        (`removals.DropRemovedRows`)."""
        ...

    def add_run(self, name: str, steps: list, tasks: int) -> None: ...

    def continue_from(self, folder: str, *steps) -> None: ...


class Stage(ABC):
    """A manifest stage. Subclasses set `name` and `Options` and implement `build`."""

    name: ClassVar[str]
    Options: ClassVar[type[StageOptions]] = StageOptions

    @abstractmethod
    def build(self, opts: StageOptions, ctx: BuildContext, chain: Chain) -> None:
        """Append this stage's steps/runs to `chain`."""

    def describe(self, opts: StageOptions) -> str:
        """One line for `reasonpipe plan` (e.g. the similarity threshold MinHash's bands imply)."""
        return ""

    def check(self, opts: StageOptions) -> list[tuple[tuple, str]]:
        """Problems with the files the options name, found before any work starts: (key path in the options,
        message) pairs, e.g. a benchmark file that does not parse."""
        return []


REGISTRY: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available to manifests under `cls.name`."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(
            f"stage name {cls.name!r} registered twice ({REGISTRY[cls.name].__module__}, {cls.__module__})"
        )
    REGISTRY[cls.name] = cls
    return cls
