"""How a run's input files are divided among its tasks, so that each task reads about 1/T of the bytes.

A file is *split* when its format allows it and it is large next to one task's share (`share = total bytes / T`,
split when `size > share / SPLIT_FRACTION`): plain jsonl and csv by line-aligned byte ranges, parquet by row groups,
arrow IPC files by record batches. It is cut into `min(STRIPES x T, size / piece)` parts (`piece = share /
PIECES_PER_SHARE`, at least MIN_PIECE bytes), dealt round robin to consecutive tasks, continuing where the previous
file's parts stopped. With STRIPES x T parts, task r gets parts r, r + T, r + 2T, ...: equal bytes taken from
STRIPES places spread over the file, so every task sees the same mix of records even when a file changes along its
length (copies appended after their originals, a crawl in date order): the documents that survive dedup, and every
later run's work, stay balanced too. Everything else (compressed jsonl, `datasets` folders, small files) stays whole
and is placed largest first on the least loaded task.

The plan is a pure function of the file list, their sizes and T, computed once by the driver: the index run and the
read run, on every task, use the same one. Ids never depend on it (see readers.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SPLIT_FRACTION = 8  # files above share / 8 are split: whole files alone leave at most ~1/8 of a share of imbalance
STRIPES = 8  # parts of a large file per task, spread over the file
PIECES_PER_SHARE = 64  # parts are about share / 64 bytes, when that gives fewer than T parts
MIN_PIECE = 64 << 10  # but never smaller than 64 KiB


@dataclass(frozen=True)
class Piece:
    """Part `part` of `parts` of one input file (`parts == 1`: the whole file)."""

    source: int  # index of the input in the manifest's order
    path: str
    size: int  # bytes of the file (a `datasets` folder: of all its files) when the run was planned
    part: int = 0
    parts: int = 1

    @property
    def whole(self) -> bool:
        return self.parts == 1

    def byte_range(self) -> tuple[int, int]:
        """[start, end) of this part's bytes; a line-aligned reader reads the lines that *start* in it."""
        return self.part * self.size // self.parts, (self.part + 1) * self.size // self.parts

    def item_range(self, n: int) -> range:
        """This part's share of `n` items (record batches), contiguous and in order."""
        return range(self.part * n // self.parts, (self.part + 1) * n // self.parts)

    def owns(self, position: int, total: int) -> bool:
        """Whether an item starting at `position` of `total` (a parquet row group's first row) is in this part."""
        return self.part * total // self.parts <= position < (self.part + 1) * total // self.parts


@dataclass(frozen=True)
class InputFile:
    source: int
    path: str
    size: int
    splittable: bool


def plan_pieces(files: Sequence[InputFile], tasks: int) -> list[list[Piece]]:
    """The pieces of every task, each task's in input-file order (see the module docstring)."""
    share = sum(f.size for f in files) / tasks
    piece = max(share / PIECES_PER_SHARE, MIN_PIECE)
    load = [0.0] * tasks
    plan: list[list[tuple[int, Piece]]] = [[] for _ in range(tasks)]
    whole: list[tuple[int, InputFile]] = []
    next_task = 0
    for order, f in enumerate(files):
        split = f.splittable and f.size > share / SPLIT_FRACTION
        parts = min(STRIPES * tasks, math.ceil(f.size / piece)) if split else 1
        if parts == 1:
            whole.append((order, f))
            continue
        for part in range(parts):
            task = (next_task + part) % tasks
            plan[task].append((order, Piece(f.source, f.path, f.size, part, parts)))
            load[task] += f.size / parts
        next_task = (next_task + parts) % tasks
    for order, f in sorted(whole, key=lambda item: (-item[1].size, item[0])):
        task = min(range(tasks), key=lambda t: (load[t], t))
        plan[task].append((order, Piece(f.source, f.path, f.size)))
        load[task] += f.size
    return [[p for _, p in sorted(pieces, key=lambda item: (item[0], item[1].part))] for pieces in plan]
