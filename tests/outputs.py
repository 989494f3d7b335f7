"""Small OUTPUT folders made by the project's own pipeline, for the tests of everything that reads outputs.

`Outputs.get(corpus, **options)` writes the corpus as input files, a manifest for it, runs `reasonpipe run` on it and
returns the output (built once per test session: the `outputs` fixture in conftest.py holds one `Outputs`). Variants
of a corpus share its prep work folder, so a variant that changes only trim/pack/output (context, seq_len,
compression, loss mask, validation fraction) re-runs only the pack run, exactly as a user's edit would.

Corpora:
- `mixed`: chat samples (system prompts, two-turn chats, long reasoning traces that AP trimming cuts, prompts too long
  for the context that it drops) and plain documents that packing splits across windows; plus malformed JSON lines,
  an empty text and exact duplicates, so the accounting has rejections and duplicates. Default seq_len 128.
- `gsm8k`: GSM8K problem/solution records (../shared/data/real when present, else generated arithmetic word
  problems), prompt tokens without loss (`pack.loss_mask: assistant`). Default seq_len 256, vocabulary 512.
- `real`: the first `limit` (80) GSM8K problems and PEP paragraphs of ../shared/data/real, read in place (tests skip
  when it is absent).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
GSM8K = REAL / "math" / "gsm8k_train.jsonl"
PEPS = REAL / "prose" / "python_peps_paragraphs_6k.jsonl"
WORDS = (
    "the of a to is in we that let so number sum prime proof step check then therefore answer equation value "
    "function compute total each two three five seven times plus minus equals because since hence thus case "
    "first second next finally verify result integer even odd square root divide remainder list loop return"
).split()


@dataclass(frozen=True)
class Output:
    """A finished OUTPUT folder and what its index.json says about it."""

    root: Path
    seq_len: int
    vocab_size: int
    train_windows: int
    val_windows: int

    @classmethod
    def read(cls, root: Path) -> Output:
        index = json.loads((root / "index.json").read_text())
        totals = index["totals"]
        return cls(
            root,
            index["seq_len"],
            index["tokenizer"]["vocab_size"],
            totals["train"]["windows"],
            totals["val"]["windows"],
        )


# ---------------------------------------------------------------------------------------------------- corpora
def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _write_jsonl(path: Path, records: list[Any]) -> None:
    """Records as JSON lines; a str record is written as it is (a malformed line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def mixed_corpus(folder: Path, seed: int = 0, n_chat: int = 60, n_plain: int = 40) -> list[dict]:
    """Write the `mixed` corpus; returns its manifest inputs."""
    rng = random.Random(seed)
    chats: dict[str, list] = {"reasoning": [], "math": []}
    for i in range(n_chat):
        messages = [{"role": "system", "content": "you are a careful solver"}] if i % 5 == 0 else []
        for _ in range(2 if i % 4 == 0 else 1):
            long = rng.random() < 0.35
            reasoning = _words(rng, rng.randint(60, 200) if long else rng.randint(5, 40))
            messages.append({"role": "user", "content": _words(rng, rng.randint(4, 25))})
            answer = "answer " + _words(rng, rng.randint(1, 8))
            messages.append({"role": "assistant", "content": f"<think>{reasoning}</think>{answer}"})
        if i % 11 == 3:  # a prompt alone longer than the context: AP trimming must drop the sample
            messages[-2]["content"] = _words(rng, 150)
        chats["reasoning" if i % 3 else "math"].append({"id": f"chat-{i}", "messages": messages})
    chats["reasoning"] += [chats["reasoning"][0], "{not json", '{"messages": "not a list"}']  # duplicate, 2 bad
    plain = [{"text": _words(rng, rng.randint(10, 150))} for _ in range(n_plain)]
    plain += [plain[0], {"text": ""}, "[1, 2"]
    _write_jsonl(folder / "chat_reasoning.jsonl", chats["reasoning"])
    _write_jsonl(folder / "chat_math.jsonl", chats["math"])
    _write_jsonl(folder / "docs.jsonl", plain)
    return [
        {"name": "chat_reasoning", "path": "chat_reasoning.jsonl", "schema": "messages", "domain": "reasoning"},
        {"name": "chat_math", "path": "chat_math.jsonl", "schema": "messages", "domain": "math"},
        {"name": "docs", "path": "docs.jsonl", "schema": "text", "domain": "web"},
    ]


def gsm8k_corpus(folder: Path, seed: int = 0, samples: int = 1500) -> list[dict]:
    """GSM8K records (the real file when present, else generated word problems); returns the manifest inputs."""
    if GSM8K.exists():
        with GSM8K.open() as f:
            records = [json.loads(line) for _, line in zip(range(samples), f)]
    else:
        rng = random.Random(seed)
        names, items = ["Ada", "Bo", "Cy", "Di", "Eve"], ["apples", "pens", "books", "cards", "coins"]
        records = []
        for _ in range(samples):
            n, a, b, it = rng.choice(names), rng.randint(2, 90), rng.randint(2, 90), rng.choice(items)
            q = f"{n} has {a} {it} and buys {b} more. How many {it} does {n} have now?"
            r = f"{n} starts with {a} {it}. After buying {b} more, {n} has {a} + {b} = {a + b} {it}."
            records.append({"question": q, "answer": f"{r}\n#### {a + b}"})
    _write_jsonl(folder / "gsm8k.jsonl", records)
    return [{"name": "gsm8k", "path": "gsm8k.jsonl", "schema": "problem_solution", "domain": "math"}]


def real_corpus(folder: Path, seed: int = 0) -> list[dict]:
    """GSM8K problems and PEP paragraphs from ../shared/data/real, read in place (`limit` records of each): nothing
    is written to `folder`, and `seed` only seeds the manifest."""
    return [
        {"name": "gsm8k", "path": str(GSM8K), "schema": "problem_solution", "domain": "math"},
        {"name": "peps", "path": str(PEPS), "schema": "text", "domain": "web"},
    ]


CORPORA = {"mixed": mixed_corpus, "gsm8k": gsm8k_corpus, "real": real_corpus}
DEFAULTS: dict[str, dict[str, Any]] = {
    "mixed": {"seq_len": 128, "vocab_size": 512, "rows_per_shard": 8, "validation_fraction": 0.15, "tasks": 2,
              "stages": [{"exact_dedup": {}}]},
    "gsm8k": {"seq_len": 256, "vocab_size": 512, "rows_per_shard": 200, "validation_fraction": 0.1,
              "loss_mask": "assistant", "tasks": 1, "stages": []},
    "real": {"seq_len": 256, "vocab_size": 600, "rows_per_shard": 8, "validation_fraction": 0.15, "tasks": 1,
             "stages": [], "limit": 80},
}  # fmt: skip
CORPUS_KEYS = ("seed", "n_chat", "n_plain", "samples")  # options that change the corpus itself


def manifest(inputs: list[dict], o: dict[str, Any], out: Path, work: Path) -> dict[str, Any]:
    """The manifest of one output: corpus inputs, tokenizer trained on them, trim/pack/output options `o`."""
    return {
        "name": out.name,
        "seed": o.get("seed", 0),
        "inputs": inputs,
        "stages": o["stages"],
        "tokenizer": {"train": {"vocab_size": o["vocab_size"], "sample_docs": 2000}},
        "trim": {"context": o.get("context", o["seq_len"])},
        "pack": {"seq_len": o["seq_len"], "loss_mask": o.get("loss_mask", "all")},
        "output": {
            "path": str(out),
            "work_dir": str(work),
            "rows_per_shard": o["rows_per_shard"],
            "validation_fraction": o["validation_fraction"],
            "compression": o.get("compression"),
        },
        "executor": {"kind": "local", "tasks": o["tasks"], "workers": 1},
    }


class Outputs:
    """Builds outputs under `base`, each once (keyed by corpus and options); see the module doc."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.built: dict[str, Output] = {}
        self.inputs: dict[str, list[dict]] = {}  # corpus key -> manifest inputs (each corpus written once)

    def get(self, corpus: str, **options: Any) -> Output:
        from reasonpipe.pipeline.cli import main

        o = {**DEFAULTS[corpus], **options}
        corpus_key = "-".join([corpus] + [f"{k}{o[k]}" for k in CORPUS_KEYS if k in o])
        key = f"{corpus_key}-{hashlib.sha256(json.dumps(o, sort_keys=True).encode()).hexdigest()[:8]}"
        if key not in self.built:
            data = self.base / corpus_key
            if corpus_key not in self.inputs:
                data.mkdir(parents=True)
                self.inputs[corpus_key] = CORPORA[corpus](data, **{k: o[k] for k in CORPUS_KEYS if k in o})
            out = self.base / "out" / key
            path = data / f"{key}.yaml"
            path.write_text(yaml.safe_dump(manifest(self.inputs[corpus_key], o, out, data / "work"), sort_keys=False))
            argv = ["run", str(path)] + (["--limit", str(o["limit"])] if "limit" in o else [])
            log = io.StringIO()
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # not into a test's capsys
                code = main(argv)
            assert code == 0, f"reasonpipe {' '.join(argv)} failed:\n{log.getvalue()[-3000:]}"
            self.built[key] = Output.read(out)
        return self.built[key]


# ---------------------------------------------------------------------------------------------------- measures
def unigram_entropy(root: Path, split: str = "train") -> float:
    """Entropy (nats) of the empirical unigram distribution of the trained-on target tokens of a split.

    The target of position t is token t+1 of the same window where loss_mask[t+1] == 1 (what the trainer scores);
    a model that only learnt token frequencies reaches exactly this cross-entropy.
    """
    index = json.loads((Path(root) / "index.json").read_text())
    counts = np.zeros(index["tokenizer"]["vocab_size"], dtype=np.int64)
    for s in index["shards"]:
        if s["split"] != split:
            continue
        with pa.memory_map(str(Path(root) / s["path"])) as src:
            table = pa.ipc.open_stream(src).read_all()
        seq = index["seq_len"]
        ids = table.column("input_ids").combine_chunks().flatten().to_numpy().reshape(-1, seq)
        mask = table.column("loss_mask").combine_chunks().flatten().to_numpy().reshape(-1, seq)
        counts += np.bincount(ids[:, 1:][mask[:, 1:] == 1], minlength=counts.size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
