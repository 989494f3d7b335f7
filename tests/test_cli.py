"""Small CLI commands: `reasonpipe tokenizer train` and `reasonpipe plan` on the bundled demo manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


def reasonpipe(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "reasonpipe.pipeline.cli", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_tokenizer_train_adds_the_template_tokens(tmp_path):
    docs = tmp_path / "docs.jsonl"
    lines = [{"text": f"Problem {i}: add {i} and {i + 1}. The sum is {2 * i + 1}."} for i in range(300)]
    docs.write_text("\n".join(json.dumps(r) for r in lines) + "\n{broken\n")
    out = tmp_path / "tok" / "tokenizer.json"
    reasonpipe("tokenizer", "train", str(docs), "--out", str(out), "--vocab-size", "400")
    tok = Tokenizer.from_file(str(out))
    assert tok.get_vocab_size() <= 400
    specials = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end_turn|>"]
    assert [tok.token_to_id(t) for t in specials + ["<think>", "</think>"]] == list(range(9))
    assert tok.decode(tok.encode("The sum is 7.").ids) == "The sum is 7."


def test_plan_of_the_demo_manifest_names_every_stage():
    out = reasonpipe("plan", "manifests/demo.yaml").stdout
    for stage in ("exact_dedup", "minhash", "problem_dedup", "decontaminate", "reasoning_quality", "language"):
        assert stage in out
    assert "mixture (predicted token shares)" in out and "LSH threshold" in out
