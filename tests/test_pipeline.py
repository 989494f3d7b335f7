"""`reasonpipe run` end to end on the small CI corpus: accounting, exclusions, resume after SIGKILL, re-trim reuse."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import yaml
from corpus import make_corpus, write_manifest

from reasonpipe.pipeline.accounting import check_identity

CLI = [sys.executable, "-m", "reasonpipe.pipeline.cli"]
ROOT = Path(__file__).resolve().parents[1]


def reasonpipe(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(CLI + list(args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"reasonpipe {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def manifest_for(root: Path, info: dict, name: str, **overrides) -> Path:
    """A manifest of the corpus under its own file name (write_manifest always writes manifest.yaml)."""
    path = write_manifest(root, info, **overrides)
    return path.rename(path.with_name(f"{name}.yaml"))


def digests(out: Path) -> dict[str, str]:
    """sha256 of every shard and samples file of an output."""
    files = sorted(out.glob("shards*/*.arrow")) + sorted(out.glob("samples/*.parquet"))
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("corpus")
    return root, make_corpus(root)


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    root, info = corpus
    manifest = manifest_for(root, info, "finished", output={"path": str(tmp_path_factory.mktemp("run") / "out")})
    proc = reasonpipe("run", str(manifest))
    out = Path(yaml.safe_load(manifest.read_text())["output"]["path"])
    return manifest, out, proc


def test_run_writes_the_contract(finished):
    _, out, proc = finished
    index = json.loads((out / "index.json").read_text())
    assert "per-stage accounting" in proc.stdout and str(out) in proc.stdout
    assert index["totals"]["train"]["windows"] > 0 and index["tokenizer"]["vocab_size"] > 0
    for shard in index["shards"]:
        table = pa.ipc.open_stream(pa.memory_map(str(out / shard["path"]))).read_all()
        assert table.num_rows == shard["rows"]
        assert table.schema.field("input_ids").type == pa.list_(pa.uint32(), index["seq_len"])


def test_accounting_is_exact_and_bad_records_are_counted(finished, corpus):
    _, out, _ = finished
    _, info = corpus
    stages = json.loads((out / "index.json").read_text())["stages"]
    assert check_identity(stages) == []
    by_label = {row["label"]: row for row in stages}
    read = by_label["read"]
    for reason in ("malformed_json", "invalid_utf8"):
        assert read["rejected"].get(reason, 0) >= 1, read
    assert sum(read["rejected"].values()) + sum(by_label["adapt"]["rejected"].values()) >= info["malformed"]
    # every stage's input is the previous stage's output
    chain = [row for row in stages if row["label"] not in ("mixture", "trim")]
    for before, after in zip(chain, chain[1:]):
        assert after["read"] == before["kept"], (before, after)
    assert any(row["duplicates"] > 0 for row in stages)


def test_rejections_are_written_with_their_reason(finished):
    _, out, _ = finished
    reasons = set()
    for path in (out / "exclusions").rglob("*.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            reasons |= {json.loads(line)["metadata"]["filter_reason"] for line in f}
    assert {"malformed_json", "invalid_utf8"} <= reasons


def test_intermediate_folders_are_deleted_once_consumed(finished):
    _, out, _ = finished
    (prep,) = (out / ".work").glob("prep-*")
    assert (prep / "tokens").is_dir()  # the tokenised corpus stays (re-trimming reuses it)
    assert not (prep / "canonical").exists()
    leftovers = list((prep / "docs").glob("*")) + list((prep / "stages").glob("*"))
    assert leftovers == []


def test_rerun_is_a_noop(finished):
    manifest, _, _ = finished
    assert "nothing to do" in reasonpipe("run", str(manifest)).stdout


def test_sigkill_and_resume_gives_byte_identical_shards(finished, corpus, tmp_path):
    _, reference, _ = finished
    root, info = corpus
    manifest = manifest_for(root, info, "killed", output={"path": str(tmp_path / "out")})
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        CLI + ["run", str(manifest)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # kill once the first run has completed a task
        if list((tmp_path / "out" / ".work").glob("prep-*/runs/*/completions/*")):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reasonpipe("run", str(manifest))
    assert digests(tmp_path / "out") == digests(reference)


def test_plan_lists_runs_without_running(corpus, tmp_path):
    root, info = corpus
    manifest = manifest_for(root, info, "planned", output={"path": str(tmp_path / "planned")})
    proc = reasonpipe("plan", str(manifest))
    assert "is valid" in proc.stdout and "tokenize" in proc.stdout and "pack" in proc.stdout
    assert "threshold" in proc.stdout  # MinHash's implied similarity threshold
    assert not (tmp_path / "planned" / "index.json").exists()


def test_bad_manifest_exits_2_with_the_key(corpus, tmp_path):
    root, info = corpus
    manifest = manifest_for(root, info, "bad", output={"path": str(tmp_path / "x")})
    manifest.write_text(manifest.read_text().replace("seq_len:", "seq_lenn:"))
    proc = reasonpipe("run", str(manifest), check=False)
    assert proc.returncode == 2 and "pack.seq_lenn: unknown key" in proc.stderr


def test_retrim_and_remix_reuse_the_tokenised_corpus(finished):
    # last: it re-trims the shared output in place
    manifest, out, _ = finished
    raw = yaml.safe_load(manifest.read_text())
    raw["trim"] = {"context": raw["pack"]["seq_len"] // 2}
    raw["mixture"] = {"by": "domain", "shares": {"reasoning": 0.8}, "others": "keep"}  # upsampling: copies
    raw["output"]["validation_fraction"] = 0.3  # routed by problem: the planted problem duplicates stay together
    retrim = manifest.with_name("retrim.yaml")
    retrim.write_text(yaml.safe_dump(raw))
    proc = reasonpipe("run", str(retrim))
    skipped = [line for line in proc.stdout.splitlines() if "already complete, skipped" in line]
    assert skipped and not any("pack" in line for line in skipped)
    index = json.loads((out / "index.json").read_text())
    assert index["trim"]["context"] == raw["trim"]["context"]
    assert abs(index["mixture"]["achieved"]["reasoning"]["share"] - 0.8) < 0.03
    mixture = next(row for row in index["stages"] if row["label"] == "mixture")
    assert mixture["extra"]["copies_added"] > 0 and check_identity(index["stages"]) == []
    # copies spread (never in one window), no problem in both splits: the validator checks both
    from reasonpipe.pipeline.inspect_stats import compute_stats
    from reasonpipe.pipeline.inspect_validate import validate

    assert [str(p) for p in validate(out)] == []
    copies = compute_stats(out)["copies"]
    samples = pl.read_parquet(out / "samples" / "*.parquet")
    packed_copies = samples.filter(pl.col("copy_of").is_not_null() & (pl.col("status") != "dropped")).height
    assert 0 < copies["copies"] == packed_copies <= mixture["extra"]["copies_added"]
    assert copies["same_window"] == 0 and copies["min_distance"] >= 1
    per_key = samples.filter(pl.col("problem_key").is_not_null()).group_by("problem_key").agg(pl.col("split"))
    assert per_key.filter(pl.col("split").list.len() > 1).height > 0  # several traces of one problem (and copies)
    assert {"train", "val"} <= set(samples["split"])


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_ablation_baseline_policies_are_one_key_apart(finished, policy):
    """`trim.policy: truncate | drop` re-run only pack; the output validates and says what each baseline lost."""
    manifest, out, _ = finished
    raw = yaml.safe_load(manifest.read_text())
    raw["trim"] = {"context": raw["pack"]["seq_len"] // 2, "policy": policy}
    path = manifest.with_name(f"{policy}.yaml")
    path.write_text(yaml.safe_dump(raw))
    proc = reasonpipe("run", str(path))
    assert any("already complete, skipped" in line for line in proc.stdout.splitlines())
    trim = json.loads((out / "index.json").read_text())["trim"]
    samples = pl.read_parquet(str(out / "samples" / "*.parquet")).filter(pl.col("status") != "plain")
    long = samples.filter(pl.col("tokens_before") > raw["trim"]["context"])
    assert trim["policy"] == policy and long.height > 0 and trim["trimmed"] == 0
    if policy == "truncate":
        assert trim["truncated"] == long.height and trim["dropped"] == 0
        assert (long["tokens_after"] == raw["trim"]["context"]).all() and long["status"].unique().to_list() == [
            "truncated"
        ]
        assert 0 < trim["answer_lost"] == int(samples["answer_lost"].sum()) <= trim["truncated"]
    else:
        assert trim["dropped"] == long.height and long["status"].unique().to_list() == ["dropped"]
        assert trim["truncated"] == trim["answer_lost"] == 0
    assert reasonpipe("inspect", str(out), "--validate").returncode == 0
