"""Data-parallel training under torchrun on CPU (gloo): 2 ranks x B windows compute the same steps as 1 rank with
2 x B accumulated (the loss normalisation, the gradient all-reduce and the expert-count all-reduce that drives the
balancing biases), with DDP + AdamW and with FSDP2 + Muon (sharded matrices gathered for Newton-Schulz; the model
built on the meta device and materialised shard by shard); sharded DCP checkpoints written by every rank; and a run
resumes exactly with another number of ranks, both ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from reasonpipe.trainer import checkpoint as C
from reasonpipe.trainer import train as T
from reasonpipe.trainer.config import ModelConfig
from reasonpipe.trainer.model import ZayaLM

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, outputs):
    tmp = tmp_path_factory.mktemp("dist")
    shards = outputs.get("gsm8k")  # made by `reasonpipe run` (tests/outputs.py)
    cfg = {
        "model": {"preset": "tiny"},
        "train": {
            "steps": STEPS,
            "global_batch_tokens": 8 * 256,  # 8 windows: 1 rank x 4 micro-batches of 2, or 2 ranks x 2
            "micro_batch": 2,
            "optimizer": {"lr": 3e-3},
            "schedule": {"warmup_steps": 1, "total_steps": STEPS},
            "balancing": {"mode": "pid", "lr": 1e-2},
            "log_every": 1,
            "eval_windows": 4,
            "checkpoint_every": 2,
        },
    }
    (tmp / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    cfg["train"].update(parallel="fsdp", optimizer={"name": "muon", "lr": 3e-3})
    (tmp / "fsdp.yaml").write_text(yaml.safe_dump(cfg))
    refs = {}
    for parallel in ("ddp", "fsdp"):  # the single-process references (parallel is ignored without torchrun)
        refs[parallel] = tmp / f"ref_{parallel}"
        assert launch(1, tmp, shards.root, refs[parallel], parallel) == ""
    return tmp, shards, refs


def launch(nproc: int, tmp: Path, data: Path, out: Path, parallel: str, *extra: str) -> str:
    """Run the trainer (torchrun with gloo when nproc > 1); returns the error output on failure, '' on success."""
    args = ["--data", str(data), "--out", str(out), "--config", str(tmp / f"{parallel}.yaml"), *extra]
    if nproc == 1:  # in this process (no process group), one thread like the torchrun workers
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return "" if T.main(args) == 0 else "single-process run failed"
        finally:
            torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "reasonpipe.trainer.train", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return "" if proc.returncode == 0 else proc.stderr[-3000:] + proc.stdout[-2000:]


def losses(run_dir: Path) -> dict[int, float]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r and "event" not in r}


def model_at(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    """The checkpoint's model, read into one unsharded process (as export-hf does)."""
    model = ZayaLM(ModelConfig.from_dict(json.loads((run_dir / "config.json").read_text())["model"]))
    C.load_model_weights(C.step_dir(run_dir, step), model)
    return model.state_dict()


def assert_same_model(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_match_one_rank_with_accumulation(setup, parallel: str) -> None:
    tmp, shards, refs = setup
    ref = refs[parallel]
    out = tmp / f"two_{parallel}"
    err = launch(2, tmp, shards.root, out, parallel, "--steps", "2")
    assert err == "", err
    want, got = losses(ref), losses(out)
    assert list(got) == [1, 2]
    for s in got:
        assert got[s] == pytest.approx(want[s], rel=1e-5)
    a, b = model_at(ref, 2), model_at(out, 2)
    assert_same_model(a, b)
    bias = [k for k in a if k.endswith("balancing_biases")]
    assert len(bias) == 4 and all(a[k][:-1].abs().sum() > 0 for k in bias)  # the biases did move
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["world_size"] == 2

    ck = C.step_dir(out, 2)
    shards_written = sorted(p.name for p in ck.glob("*.distcp"))
    if parallel == "fsdp":  # every rank wrote its own shards of the sharded state
        assert shards_written == ["__0_0.distcp", "__1_0.distcp"]
        assert sorted(p.name for p in (ck / "rng").iterdir()) == ["0.json", "1.json"]
    assert json.loads((ck / "trainer.json").read_text())["world_size"] == 2 and C.verify(ck) is None

    # the 2-rank run resumes on 1 rank (DCP reshards) and continues the 1-rank run exactly
    err = launch(1, tmp, shards.root, out, parallel, "--steps", str(STEPS), "--resume")
    assert err == "", err
    got = losses(out)
    for s in range(1, STEPS + 1):
        assert got[s] == pytest.approx(want[s], rel=1e-5)
    assert_same_model(model_at(ref, STEPS), model_at(out, STEPS))


def test_fsdp_resumes_a_one_rank_checkpoint_on_two_ranks(setup) -> None:
    """The other direction: 1 process -> 2 FSDP ranks, each loading only its shards of the full checkpoint."""
    tmp, shards, refs = setup
    out = tmp / "grow_fsdp"
    assert launch(1, tmp, shards.root, out, "fsdp", "--steps", "2") == ""
    err = launch(2, tmp, shards.root, out, "fsdp", "--steps", str(STEPS), "--resume")
    assert err == "", err
    want, got = losses(refs["fsdp"]), losses(out)
    for s in range(1, STEPS + 1):
        assert got[s] == pytest.approx(want[s], rel=1e-5)
    assert_same_model(model_at(refs["fsdp"], STEPS), model_at(out, STEPS))
