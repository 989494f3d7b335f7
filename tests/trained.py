"""A `tiny` model that memorised a handful of problems, made by the project's own commands (once per test session).

`memorised_run(base)` writes 8 GSM8K-style word problems ("Ada has 35 apples and buys 37 more. ...", reasoning
"Ada starts with 35. 35 + 37 = 72.", answer `#### 72`), each repeated 20 times, runs `reasonpipe run` on them with
the `rsa_aggregate` builder on (short custom templates, k 2, tau 8: so the model also learns the aggregation prompt
the RSA harness shows it) and `reasonpipe train`s the tiny preset for 200 steps on 128-token windows (~40 s of CPU).
`unseen` problems have the same form with other names and numbers, none of whose sums is a memorised answer.
The `memorised` fixture (conftest.py) shares one such run across the test modules.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

NAMES = ["Ada", "Bo", "Cy", "Di", "Eve", "Fay", "Gus", "Hal"]
OTHER_NAMES = ["Ivy", "Jo", "Kai", "Lu", "Max", "Ned", "Oli", "Pia"]
ITEMS = ["apples", "pens", "books", "cards", "coins", "shells", "stamps", "marbles"]
RSA = {"k": 2, "tau": 8, "per_problem": 20, "prompt_template": "{problem}\nCandidates:\n{candidates}",
       "candidate_template": "({index}) {tail}"}  # fmt: skip
TRAIN = {"steps": 200, "seq_len": 128, "global_batch_tokens": 1024, "micro_batch": 8, "log_every": 50,
         "prefetch": False, "optimizer": {"lr": 5e-3, "weight_decay": 0.0},
         "schedule": {"warmup_steps": 10}}  # fmt: skip


def problems(names: list[str], lo: int, hi: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for name, item in zip(names, ITEMS):
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        q = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?"
        out.append({"question": q, "answer": f"{name} starts with {a}. {a} + {b} = {a + b}.\n#### {a + b}"})
    return out


SEEN = problems(NAMES, 11, 49, 0)  # sums 22..98
UNSEEN = problems(OTHER_NAMES, 51, 89, 1)  # sums 102..178: never a memorised answer


@dataclass(frozen=True)
class Memorised:
    run: Path  # the `reasonpipe train --out` folder
    output: Path  # the `reasonpipe run` output it trained on
    seen: Path  # benchmark file of the memorised problems (question, answer)
    unseen: Path  # benchmark file of problems it never saw


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@contextlib.contextmanager
def one_thread():
    """torch on one intra-op thread: decoding and training the tiny model is many tiny ops, and on the shared 2-core
    machine a second thread makes them 5-50x slower (BENCHMARKS.md, generate and eval throughput)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def memorised_run(base: Path) -> Memorised:
    from reasonpipe.pipeline.cli import main

    base.mkdir(parents=True, exist_ok=True)
    _jsonl(base / "train.jsonl", SEEN * 20)
    manifest = {
        "name": "memorise", "seed": 0,
        "inputs": [{"name": "gsm", "path": "train.jsonl", "schema": "problem_solution", "domain": "math"}],
        "stages": [], "tokenizer": {"train": {"vocab_size": 512}}, "builders": {"rsa_aggregate": RSA},
        "trim": {"context": 128}, "pack": {"seq_len": 128, "loss_mask": "assistant"},
        "output": {"path": "out"}, "executor": {"kind": "local", "tasks": 1, "workers": 1},
    }  # fmt: skip
    (base / "m.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (base / "train.json").write_text(json.dumps({"model": {"preset": "tiny"}, "train": TRAIN}))
    log = io.StringIO()
    with one_thread(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        assert main(["run", str(base / "m.yaml")]) == 0, log.getvalue()[-3000:]
        code = main(["train", "--data", str(base / "out"), "--config", str(base / "train.json"),
                     "--out", str(base / "run")])  # fmt: skip
        assert code == 0, log.getvalue()[-3000:]
    return Memorised(base / "run", base / "out", _jsonl(base / "seen.jsonl", SEEN),
                     _jsonl(base / "unseen.jsonl", UNSEEN))  # fmt: skip
