"""A small CI corpus (~150 samples, seconds per pipeline run) built with the demo generator, plus a test manifest.

    corpus = make_corpus(tmp_path)              # writes the files, returns what was planted
    manifest = write_manifest(tmp_path, corpus, trim={"context": 256}, pack={"seq_len": 256})

The returned dict (also written as PLANTED.json) lets tests assert exact accounting:
  root, files {relative path: records}, bad_files {relative path: lines, malformed ones included},
  inputs {input name: manifest entry},
  long_traces / overlong_prompt / leaked / exact_duplicates / near_duplicates / problem_duplicates / no_reasoning
  (lists with the file and record `id` of each planted item; problem duplicates come in groups of 3 samples, two
  entries with the same `of` per group), malformed_records (file, 0-based line, reason; the huge record has
  `bytes`), malformed (their count: 13), counts (length of each list,
  plus `samples`: records of `files` outside benchmarks/, bad/ excluded).
Record ids are the `id` field of each record; malformed lines are identified by (file, line).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_generator():
    """data/make_demo.py as a module (it is a script, not a package)."""
    name = "reasonpipe_make_demo"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "data" / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered while it executes
    spec.loader.exec_module(module)
    return module


def ci_plan(scale: float = 1.0):
    """Counts for the CI corpus; `scale` multiplies every count (planted kinds keep at least one item)."""
    gen = load_generator()

    def n(x: int, lo: int = 1) -> int:
        return max(lo, round(x * scale))

    return gen.Plan(
        chat=n(40, 6), chat_long=n(4), gsm=n(30, 6), solutions=n(15, 2), solutions_long=1, prompt_completion=n(12, 2),
        pc_long=1, marco=n(10, 2), marco_long=1, hf=0, arrow=0, math_prose=n(15), web=n(12),
        code=dict(python=n(8), javascript=n(3), rust=n(2), c=n(2), sql=n(2), bash=n(2)),
        benchmark=n(10, 2), leaked=n(2), exact_dups=n(4), near_dups=n(3), problem_dups=n(2), no_reasoning=n(2),
        long_target=(2500, 4000),  # > 512 tokens for any reasonable tokenizer: trimming at 256/512 applies
        overlong_prompt_chars=3000,  # prompt + answer alone > 512 tokens: dropped by trimming at 512
        huge_bytes=256 * 1024, formats=("parquet", "csv"), pool_problems=n(3), pool_traces=5,
    )  # fmt: skip


# Manifest entries for every file of the CI corpus (schema names of pipeline/manifest.py; "auto" for Marco-o1).
INPUTS: dict[str, dict[str, Any]] = {
    "chat": {"path": "reasoning/chat.jsonl", "format": "jsonl", "schema": "messages", "domain": "reasoning"},
    "gsm": {"path": "reasoning/gsm.jsonl", "schema": "problem_solution", "domain": "math"},
    "solutions": {"path": "reasoning/solutions.jsonl", "schema": "problem_solution", "domain": "math"},
    "pc": {"path": "reasoning/prompt_completion.jsonl", "schema": "prompt_completion", "domain": "reasoning"},
    "marco": {"path": "reasoning/marco.jsonl", "schema": "auto", "domain": "reasoning"},
    "code": {"path": "code/", "format": "jsonl", "schema": "text", "domain": "code", "fields": {"text": "content"}},
    "math": {"path": "math/prose.parquet", "format": "parquet", "schema": "text", "domain": "math"},
    "web": {"path": "prose/web.csv", "format": "csv", "schema": "text", "domain": "web"},
    # the huge record of bad/text/huge.jsonl is 256 KiB: rejected as too large under this limit
    "bad": {"path": "bad/text/", "format": "jsonl", "schema": "text", "domain": "web", "max_record_bytes": 131072},
    "bad_chat": {"path": "bad/chat/", "format": "jsonl", "schema": "messages", "domain": "reasoning"},
    # several traces per problem with gold answers, for the test-time-compute builders (not read by default)
    "pool": {
        "path": "reasoning/pool.jsonl",
        "schema": "problem_solution",
        "domain": "math",
        "fields": {"gold": "gold"},
    },  # fmt: skip
}
DEFAULT_INPUTS = [name for name in INPUTS if name != "pool"]


def make_corpus(dir: Path, scale: float = 1.0, seed: int = 0) -> dict:
    """Write the CI corpus under `dir` (replacing it) and return what was planted."""
    gen = load_generator()
    dir = Path(dir)
    planted = gen.build(dir, ci_plan(scale), seed)
    planted["malformed_records"] = planted["malformed"]
    planted["malformed"] = len(planted["malformed_records"])  # a count, like the other `counts`
    planted["root"] = str(dir)
    planted["inputs"] = {name: dict(entry) for name, entry in INPUTS.items()}
    planted["benchmark"] = {"name": "mini_gsm", "path": "benchmarks/mini_gsm.jsonl", "fields": ["question", "answer"]}
    return planted


def write_manifest(dir: Path, corpus: dict, **overrides: Any) -> Path:
    """Write `dir`/manifest.yaml for the corpus. Each keyword replaces that top-level key (None removes it);
    `inputs` may be a list of input names from INPUTS or a list of full entries."""
    inputs = overrides.pop("inputs", DEFAULT_INPUTS)
    entries = [{"name": i, **corpus["inputs"][i]} if isinstance(i, str) else i for i in inputs]
    manifest: dict[str, Any] = {
        "name": "ci",
        "seed": corpus.get("seed", 0),
        "inputs": entries,
        "stages": [
            {"exact_dedup": {}},
            {"minhash": {}},
            {"decontaminate": {"benchmarks": [corpus["benchmark"]]}},
        ],
        "tokenizer": {"train": {"vocab_size": 2000}},
        "trim": {"context": 512},
        "pack": {"seq_len": 512},
        "output": {"path": "out"},
        "executor": {"kind": "local", "tasks": 2, "workers": 2},
    }
    for key, value in overrides.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    path = Path(dir) / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=119))
    return path
