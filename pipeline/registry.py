"""The stage registry, filled by importing every module of the `filters` package (each registers its stages)."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from reasonpipe import filters
from reasonpipe.filters.stage import REGISTRY, Stage


@cache
def _load() -> dict[str, type[Stage]]:
    for mod in sorted(pkgutil.iter_modules(filters.__path__), key=lambda m: m.name):
        importlib.import_module(f"reasonpipe.filters.{mod.name}")
    return REGISTRY


def stage_class(name: str) -> type[Stage] | None:
    return _load().get(name)


def stage_names() -> list[str]:
    return sorted(_load())
