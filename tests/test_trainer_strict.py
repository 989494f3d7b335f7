"""The trainer is strict and safe: special ids from index.json, shards verified before step 0, checkpoints that never
run code and fall back past a broken one, and resume overrides that are either refused or recorded."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml

from reasonpipe.trainer import checkpoint as C
from reasonpipe.trainer import train as T
from reasonpipe.trainer.trainconfig import resume_changes


@pytest.fixture(scope="module")
def shards(outputs):
    return outputs.get("gsm8k")  # 1,500 GSM8K samples through `reasonpipe run` (tests/outputs.py)


pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(steps: int = 2, model: dict | None = None, **train: object) -> dict:
    base = {"steps": steps, "global_batch_tokens": 1024, "micro_batch": 2, "optimizer": {"lr": 3e-3},
            "schedule": {"warmup_steps": 1, "total_steps": 8}, "log_every": 1, "eval_windows": 2}  # fmt: skip
    base.update(train)
    return {"model": {"preset": "tiny", **(model or {})}, "train": base}


def run(tmp: Path, data: Path, config: dict | None, out: str, *extra: str) -> int:
    argv = ["--data", str(data), "--out", str(tmp / out), *extra]
    if config is not None:
        path = tmp / f"{out}-{len(list(tmp.glob(f'{out}-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(config))
        argv += ["--config", str(path)]
    return T.main(argv)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir) if "loss" in r and "event" not in r}


# --- special ids ---------------------------------------------------------------------------------------------------


def test_special_ids_and_vocab_come_from_index_json(tmp_path: Path, shards, capsys) -> None:
    index = json.loads((shards.root / "index.json").read_text())
    ids = index["tokenizer"]["special_ids"]
    assert (ids["bos"], ids["eos"]) != (2, 106)  # not Gemma's, the model config's defaults
    assert run(tmp_path, shards.root, cfg(steps=1), "ids") == 0
    model = json.loads((tmp_path / "ids/config.json").read_text())["model"]
    got = {k: model[f"{k}_token_id"] for k in ("bos", "eos", "pad")}
    assert got == {k: ids[k] for k in ("bos", "eos", "pad")}
    assert model["vocab_size"] == index["tokenizer"]["vocab_size"]
    # an explicit model section that contradicts the shards is refused, naming the key and the fix
    bad = cfg(steps=1, model={"bos_token_id": 2})
    assert run(tmp_path, shards.root, bad, "bad-ids") == 2
    err = capsys.readouterr().err
    assert f"model.bos_token_id = 2, but the shards' tokenizer has bos = {ids['bos']}" in err
    assert "remove model.bos_token_id" in err


def test_outputs_with_different_special_ids_are_refused(tmp_path: Path, shards, capsys) -> None:
    other = tmp_path / "other"
    shutil.copytree(shards.root, other)
    index = json.loads((other / "index.json").read_text())
    index["tokenizer"]["special_ids"]["pad"] = 7
    (other / "index.json").write_text(json.dumps(index))
    code = T.main(["--data", str(shards.root), "--data", str(other), "--preset", "tiny", "--out", str(tmp_path / "r")])
    assert code == 2 and "data sources disagree on the tokenizer" in capsys.readouterr().err
    del index["tokenizer"]["special_ids"]  # an index without the ids the model needs
    (other / "index.json").write_text(json.dumps(index))
    assert T.main(["--data", str(other), "--preset", "tiny", "--out", str(tmp_path / "r2")]) == 2
    assert "tokenizer.special_ids lacks ['bos', 'eos', 'pad']" in capsys.readouterr().err


# --- shards verified before step 0 ---------------------------------------------------------------------------------


def damage(root: Path, how: str) -> Path:
    """Damage train shard 1 of the output at `root`; returns its path."""
    shard = root / "shards/00001.arrow"
    data = bytearray(shard.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01  # inside the token data: readable, silently wrong without a hash
        shard.write_bytes(bytes(data))
    elif how == "truncate":
        shard.write_bytes(bytes(data[: len(data) - 1000]))
    elif how == "missing":
        shard.unlink()
    return shard


BAD_SHARDS = [
    ("flip", "differs from index.json's"),
    ("truncate", "(truncated or rewritten)"),
    ("missing", ": missing"),
]


@pytest.mark.parametrize("how, message", BAD_SHARDS)
def test_bad_shard_fails_before_step_0_naming_it(tmp_path: Path, shards, capsys, how: str, message: str) -> None:
    data = tmp_path / "data"
    shutil.copytree(shards.root, data)
    shard = damage(data, how)
    assert run(tmp_path, data, cfg(), "r") == 2
    err = capsys.readouterr().err
    assert f"{shard}: " in err and message in err, err
    assert not (tmp_path / "r/checkpoints").exists()
    assert not [r for r in records(tmp_path / "r") if "loss" in r] if (tmp_path / "r/metrics.jsonl").exists() else True
    if how == "flip":  # --no-verify skips only the hash: a flipped byte then trains, a truncated shard never does
        assert run(tmp_path, data, cfg(steps=1), "nv", "--no-verify") == 0


def test_no_verify_still_checks_sizes(tmp_path: Path, shards, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(shards.root, data)
    shard = damage(data, "truncate")
    assert run(tmp_path, data, cfg(), "r", "--no-verify") == 2
    assert f"{shard}: " in capsys.readouterr().err


# --- checkpoints -----------------------------------------------------------------------------------------------------


class Payload:
    """Pickles to a call of os.system: what a crafted checkpoint would run on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_in_a_checkpoint_is_refused_not_run(tmp_path: Path, shards, capsys) -> None:
    assert run(tmp_path, shards.root, cfg(steps=1), "p") == 0
    ck = C.step_dir(tmp_path / "p", 1)
    marker = tmp_path / "pwned"
    (ck / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    C.write_manifest(ck)  # the attacker controls the whole folder: the manifest matches
    assert run(tmp_path, shards.root, None, "p", "--resume", "--steps", "2") == 2
    err = capsys.readouterr().err
    assert "refused global posix.system" in err and str(ck / ".metadata") in err
    assert not marker.exists()
    # export-hf reads checkpoints the same way
    from reasonpipe.trainer.export import main as export_main

    assert export_main(str(tmp_path / "p"), str(tmp_path / "hf")) == 2 and not marker.exists()


def test_non_tensor_entries_are_refused(tmp_path: Path) -> None:
    """DCP stores non-tensors as pickled bytes it would unpickle without restriction: our reader refuses them."""
    path = tmp_path / "ck"
    dcp.save({"model": {"w": torch.ones(2)}, "extra": {"obj": {"a": 1}}}, checkpoint_id=path)
    with pytest.raises(C.CheckpointError, match="entry 'extra.obj.a' is not a tensor"):
        C.load_tensors(path, {"model": {"w": torch.zeros(2)}})
    dcp.save({"model": {"w": torch.full((2,), 3.0)}}, checkpoint_id=tmp_path / "ok")  # a tensor-only one loads
    state = {"model": {"w": torch.zeros(2)}}
    C.load_tensors(tmp_path / "ok", state)
    assert state["model"]["w"].tolist() == [3.0, 3.0]


def test_verify_names_the_bad_file(tmp_path: Path) -> None:
    ck = tmp_path / "step_0000001"
    dcp.save({"model": {"w": torch.arange(1000.0)}}, checkpoint_id=ck)
    assert C.verify(ck) is not None and "manifest.json missing" in C.verify(ck)
    C.write_manifest(ck)
    assert C.verify(ck) is None
    data = bytearray((ck / "__0_0.distcp").read_bytes())
    data[-10] ^= 1
    (ck / "__0_0.distcp").write_bytes(bytes(data))
    assert "__0_0.distcp does not match its sha256" in C.verify(ck)
    assert C.verify(ck, hash_share=None) is None  # sizes alone do not see a flipped byte
    (ck / "__0_0.distcp").write_bytes(bytes(data[:-5]))
    assert "__0_0.distcp has" in C.verify(ck, hash_share=None)


def test_rng_state_round_trips_through_json() -> None:
    import random

    import numpy as np

    state = json.loads(json.dumps(C.rng_state()))
    want = (torch.rand(3), np.random.rand(3), random.random())
    C.set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and (want[1] == got[1]).all() and want[2] == got[2]


def test_truncated_latest_checkpoint_falls_back_to_the_newest_sound_one(tmp_path: Path, shards, capsys) -> None:
    assert run(tmp_path, shards.root, cfg(steps=6), "once") == 0
    assert run(tmp_path, shards.root, cfg(steps=4, checkpoint_every=2), "cut") == 0
    broken = C.step_dir(tmp_path / "cut", 4) / "__0_0.distcp"
    broken.write_bytes(broken.read_bytes()[:-100])
    capsys.readouterr()
    assert run(tmp_path, shards.root, None, "cut", "--resume", "--steps", "6") == 0
    out = capsys.readouterr().out
    assert f"warning: checkpoint {broken.parent} is incomplete or damaged (__0_0.distcp has" in out
    assert f"resumed from {C.step_dir(tmp_path / 'cut', 2)} at step 2" in out
    assert losses(tmp_path / "cut") == losses(tmp_path / "once")  # steps 3-6 redone exactly


def test_resume_with_no_sound_checkpoint_is_a_clean_error(tmp_path: Path, shards, capsys) -> None:
    assert run(tmp_path, shards.root, cfg(steps=1), "r") == 0
    (C.step_dir(tmp_path / "r", 1) / "manifest.json").unlink()
    assert run(tmp_path, shards.root, None, "r", "--resume", "--steps", "2") == 2
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "step_0000001: manifest.json missing" in err


# --- resume overrides ------------------------------------------------------------------------------------------------


def test_resume_refuses_a_shape_change(tmp_path: Path, shards, capsys) -> None:
    assert run(tmp_path, shards.root, cfg(steps=1), "r") == 0
    wider = cfg(steps=2, model={"hidden_size": 128})
    assert run(tmp_path, shards.root, wider, "r", "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume cannot change" in err and "model.hidden_size: 64 in the checkpoint, 128 now" in err
    assert run(tmp_path, shards.root, cfg(steps=2, seed=5), "r", "--resume") == 2
    assert "train.seed: 0 in the checkpoint, 5 now" in capsys.readouterr().err


def test_nan_stop_then_lower_lr_and_resume(tmp_path: Path, shards, monkeypatch, capsys) -> None:
    """The trainer's own advice after a NaN stop works: lower the lr in a --config, --resume."""
    assert run(tmp_path, shards.root, cfg(steps=2), "nan") == 0
    real = T.forward

    def exploding(model, batch):
        out = real(model, batch)
        out.token_loss = out.token_loss * float("nan")
        return out

    monkeypatch.setattr(T, "forward", exploding)
    assert run(tmp_path, shards.root, None, "nan", "--resume", "--steps", "8") == 1
    err = capsys.readouterr().err
    assert "lower train.optimizer.lr (now 0.003) in a --config" in err and "--resume" in err
    monkeypatch.setattr(T, "forward", real)
    lower = cfg(steps=4, optimizer={"lr": 1e-3}, schedule={"warmup_steps": 1, "total_steps": 8, "kind": "constant"})
    assert run(tmp_path, shards.root, lower, "nan", "--resume") == 0
    recs = records(tmp_path / "nan")
    resume = [r for r in recs if r.get("event") == "resume"][-1]
    assert resume["step"] == 2
    assert resume["overrides"]["train.optimizer.lr"] == [3e-3, 1e-3]
    assert resume["overrides"]["train.schedule.kind"] == ["cosine", "constant"]
    assert resume["overrides"]["train.steps"] == [2, 4]
    steps = {r["step"]: r for r in recs if "loss" in r and "event" not in r}
    assert sorted(steps) == [1, 2, 3, 4] and steps[3]["lr"] == pytest.approx(1e-3)  # the new lr is in force
    assert all(math.isfinite(steps[s]["loss"]) for s in steps)


def test_resume_changes_rules() -> None:
    train = {"steps": 2, "seed": 0, "optimizer": {"name": "adamw", "lr": 1.0}, "data": [{"path": "a"}]}
    old = {"model": {"hidden_size": 64, "activation_checkpointing": False}, "train": train}
    new = json.loads(json.dumps(old))
    new["model"]["activation_checkpointing"] = True
    new["train"]["optimizer"]["lr"] = 0.5
    assert resume_changes(old, new) == {"model.activation_checkpointing": [False, True],
                                        "train.optimizer.lr": [1.0, 0.5]}  # fmt: skip
    refused = [("train", "optimizer", {"name": "muon", "lr": 1.0}), ("train", "data", [{"path": "b"}]),
               ("model", "hidden_size", 32)]  # fmt: skip
    for section, key, value in refused:
        bad = json.loads(json.dumps(old))
        bad[section][key] = value
        with pytest.raises(ValueError, match="--resume cannot change"):
            resume_changes(old, bad)
