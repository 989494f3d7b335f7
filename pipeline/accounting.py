"""Per-stage accounting from datatrove's per-task stats files: read = kept + rejected (by reason) + duplicates.

Each run's `stats/NNNNN.json` lists its steps' counters in pipeline order. A stage's steps carry its label;
its `read` is the `total` of its first counting step, `kept` the `forwarded` of its last, and every `dropped_<reason>`
is a rejection, except reasons `duplicate_*`, which count as duplicates.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict

from reasonpipe.pipeline.runs import Plan


def _value(stat) -> float:
    return stat["total"] if isinstance(stat, dict) else stat


def run_stats(logging_dir: str) -> list[Counter]:
    """Counters per step of a run, summed over its tasks' stats files."""
    folder = os.path.join(logging_dir, "stats")
    steps: list[Counter] = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name)) as f:
            for i, step in enumerate(json.load(f)):
                if i == len(steps):
                    steps.append(Counter())
                steps[i].update({k: _value(v) for k, v in step["stats"].items()})
    return steps


def stage_counts(plan: Plan) -> list[dict]:
    """The `stages` table of index.json, in pipeline order."""
    by_label: dict[str, list[Counter]] = defaultdict(list)
    for run in plan.runs:
        stats = run_stats(run.logging_dir)
        for index, label in sorted(run.labels.items()):
            if index < len(stats) and "total" in stats[index]:
                by_label[label].append(stats[index])
    table = []
    for label, stage in plan.labels:
        steps = by_label.get(label, [])
        rejected: Counter = Counter()
        duplicates, extra = 0, Counter()
        for counters in steps:
            for key, value in counters.items():
                if key.startswith("dropped_duplicate_"):
                    duplicates += int(value)
                elif key.startswith("dropped_"):
                    rejected[key.removeprefix("dropped_")] += int(value)
                elif key not in ("total", "forwarded", "dropped", "doc_len", "doc_len_tokens"):
                    extra[key] += value
        read = int(steps[0]["total"]) if steps else 0
        kept = int(steps[-1].get("forwarded", 0)) if steps else 0
        row = {"label": label, "stage": stage, "read": read, "kept": kept, "rejected": dict(sorted(rejected.items()))}
        row |= {"duplicates": duplicates, "extra": dict(sorted(extra.items()))}
        table.append(row)
    return table


def check_identity(table: list[dict]) -> list[str]:
    """Stages whose counts do not add up (read != kept + rejected + duplicates); empty when all is exact."""
    bad = []
    for row in table:
        added = row["extra"].get("copies_added", 0)  # mixture upsampling adds copies
        if row["read"] + added != row["kept"] + sum(row["rejected"].values()) + row["duplicates"]:
            bad.append(f"{row['label']}: read {row['read']} != kept {row['kept']} + rejected + duplicates")
    return bad
