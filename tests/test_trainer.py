"""ZAYA1 trainer on CPU: convergence below the unigram entropy, exact resume, non-finite handling, config errors,
checkpoint layout, optimisers and schedules, metrics, and independence from datatrove."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from outputs import unigram_entropy

from reasonpipe.tokenizer.shards import sha256_file
from reasonpipe.trainer import checkpoint as C
from reasonpipe.trainer import train as T
from reasonpipe.trainer.config import ModelConfig
from reasonpipe.trainer.metrics import peak_flops
from reasonpipe.trainer.model import ZayaLM
from reasonpipe.trainer.optim import lr_multiplier, newton_schulz

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(outputs):
    return outputs.get("gsm8k")  # 1,500 GSM8K samples through `reasonpipe run` (tests/outputs.py)


pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(**train: object) -> dict:
    base = {
        "steps": 6,
        "global_batch_tokens": 1024,
        "micro_batch": 2,
        "optimizer": {"lr": 3e-3, "weight_decay": 0.0},
        "schedule": {"warmup_steps": 2},
        "log_every": 1,
        "eval_windows": 4,
    }
    base.update(train)
    return {"model": {"preset": "tiny"}, "train": base}


def run(tmp: Path, shards, cfg: dict | None, out: str, *extra: str) -> int:
    argv = ["--data", str(shards.root), "--out", str(tmp / out), *extra]
    if cfg is not None:
        path = tmp / f"{out}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        argv += ["--config", str(path)]
    return T.main(argv)


def weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    """The model state of a run's checkpoint, read as export-hf reads it."""
    conf = json.loads((run_dir / "config.json").read_text())
    model = ZayaLM(ModelConfig.from_dict(conf["model"]))
    C.load_model_weights(C.step_dir(run_dir, step), model)
    return model.state_dict()


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def step_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir) if "loss" in r and "event" not in r}


def test_loss_falls_below_unigram_entropy(tmp_path: Path, shards) -> None:
    """A tiny model must beat the best context-free predictor of the trained tokens within 300 steps."""
    threshold = unigram_entropy(shards.root)
    cfg = small_cfg(steps=120, micro_batch=4, log_every=20, eval_windows=32, schedule={"warmup_steps": 10})
    assert run(tmp_path, shards, cfg, "conv") == 0
    recs = records(tmp_path / "conv")
    train_losses = [r["loss"] for r in recs if r.get("loss") is not None and "event" not in r]
    eval_loss = [r["eval_loss"] for r in recs if "eval_loss" in r][-1]
    assert train_losses[0] > threshold  # starts above (ln 512 = 6.24 at init)
    assert train_losses[-1] < threshold and eval_loss < threshold, (train_losses, eval_loss, threshold)
    print(f"unigram entropy {threshold:.3f} nats; final train loss {train_losses[-1]:.3f}, eval {eval_loss:.3f}")


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, shards) -> None:
    cfg = small_cfg(schedule={"warmup_steps": 2, "total_steps": 6})
    assert run(tmp_path, shards, cfg, "once") == 0
    assert run(tmp_path, shards, cfg, "split", "--steps", "3") == 0
    assert run(tmp_path, shards, None, "split", "--steps", "6", "--resume") == 0
    once, split = step_losses(tmp_path / "once"), step_losses(tmp_path / "split")
    assert list(once) == [1, 2, 3, 4, 5, 6] and once == split
    a, b = weights(tmp_path / "once", 6), weights(tmp_path / "split", 6)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    bias = a["layers.0.mlp.gate.balancing_biases"]
    assert bias[:-1].abs().sum() > 0 and bias[-1] == -1  # PID moved the expert biases; skip class frozen
    assert a["layers.0.mlp.gate.bias_exp_avg_sq"].sum() > 0  # balancing moments are checkpointed


def test_checkpoint_layout_and_config(tmp_path: Path, shards) -> None:
    cfg = small_cfg(checkpoint_every=2, keep_checkpoints=2)
    assert run(tmp_path, shards, cfg, "ck") == 0
    ckpts = sorted(p.name for p in (tmp_path / "ck/checkpoints").iterdir())
    assert ckpts == ["step_0000004", "step_0000006"]  # pruned to 2, no temporary directories left
    ck = tmp_path / "ck/checkpoints/step_0000006"
    files = sorted(str(p.relative_to(ck)) for p in ck.rglob("*") if p.is_file())
    assert files == [".metadata", "__0_0.distcp", "manifest.json", "rng/0.json", "trainer.json"]
    assert C.verify(ck) is None
    conf = json.loads((tmp_path / "ck/config.json").read_text())
    state = json.loads((ck / "trainer.json").read_text())
    assert state["step"] == 6 and state["loader"]["consumed"] == 6 * 4 and state["scheduler"]["step"] == 6
    assert state["config"]["model"] == conf["model"] and state["world_size"] == 1
    assert conf["model"]["vocab_size"] == shards.vocab_size and conf["train"]["steps"] == 6
    # the run records what it trained on: the tokenizer (a copy, same sha256) and a fingerprint of the shards
    data = json.loads((tmp_path / "ck/data.json").read_text())["sources"]
    index = json.loads((shards.root / "index.json").read_text())
    assert data[0]["tokenizer"] == index["tokenizer"] == state["data"][0]["tokenizer"]
    assert sha256_file(tmp_path / "ck/tokenizer.json") == index["tokenizer"]["sha256"]


def test_nonfinite_loss_skips_the_step(tmp_path: Path, shards, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = T.forward

    def flaky(model, batch):  # micro-batches 5-8 = steps 3 and 4 (2 micro-batches per step)
        calls["n"] += 1
        out = real(model, batch)
        if calls["n"] in (5, 6, 7, 8):
            out.token_loss = out.token_loss * float("nan")
        return out

    monkeypatch.setattr(T, "forward", flaky)
    assert run(tmp_path, shards, small_cfg(), "nan") == 0
    recs = records(tmp_path / "nan")
    assert [r["step"] for r in recs if r.get("event") == "skipped_nonfinite"] == [3, 4]
    final = [r for r in recs if "skipped_steps" in r][-1]
    assert final["skipped_steps"] == 2 and math.isfinite(final["loss"])


def test_consecutive_nonfinite_losses_stop_the_run(tmp_path: Path, shards, monkeypatch, capsys) -> None:
    real = T.forward

    def broken(model, batch):
        out = real(model, batch)
        out.token_loss = out.token_loss * float("inf")
        return out

    monkeypatch.setattr(T, "forward", broken)
    assert run(tmp_path, shards, small_cfg(max_nonfinite=3), "inf") == 1
    err = capsys.readouterr().err
    assert "stopping at step 3: 3 consecutive non-finite" in err
    assert not (tmp_path / "inf/checkpoints").exists()


def test_metrics_records(tmp_path: Path, shards) -> None:
    cfg = small_cfg(steps=2, eval_every=1)
    cfg["model"].update(doc_causal=True, doc_reset=True)  # document-causal attention from doc_ids
    assert run(tmp_path, shards, cfg, "m") == 0
    recs = records(tmp_path / "m")
    step = [r for r in recs if r.get("step") == 2 and "loss" in r][0]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "loss_answer", "loss_reasoning", "mem_rss_gib",
                "balance/max_violation_max", "balance/cv_mean", "balance/entropy_mean", "balance/dead_experts_max",
                "balance/router_entropy_mean"):  # fmt: skip
        assert step[key] is not None, key
    assert step["mfu"] is None  # no known peak on CPU
    assert len(step["balance_layers"]) == 4 and 0 <= step["balance_layers"][0]["router_entropy"] <= 1
    assert step["loss_answer"] != step["loss_reasoning"]
    evals = [r for r in recs if "eval_loss" in r]
    assert [r["step"] for r in evals] == [1, 2] and evals[0]["eval_tokens"] > 0
    assert recs[0]["event"] == "start" and "hip" in recs[0]["backend"]


def test_muon_trains(tmp_path: Path, shards) -> None:
    cfg = small_cfg(steps=8, optimizer={"name": "muon", "lr": 3e-3}, schedule={"warmup_steps": 1})
    assert run(tmp_path, shards, cfg, "muon") == 0
    losses = step_losses(tmp_path / "muon")
    assert losses[8] < losses[1] - 0.2


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32), (3, 40, 24)])
def test_newton_schulz_orthogonalises(shape: tuple[int, ...]) -> None:
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    sv = torch.linalg.svdvals(newton_schulz(g))
    # singular values pushed into the quintic's band around 1 (5 steps cannot lift the tiniest of a square matrix)
    assert sv.max() < 1.3 and (sv > 0.6).float().mean() >= 0.95
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 3  # the input was not


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 50), st.integers(60, 500), st.floats(0, 1), st.floats(0.05, 1), st.sampled_from(["cosine", "wsd"])
)
def test_schedules(warmup: int, total: int, min_ratio: float, decay: float, kind: str) -> None:
    m = [lr_multiplier(s, kind, warmup, total, min_ratio, decay) for s in range(total)]
    assert all(0 < x <= 1 for x in m[:warmup]) and all(min_ratio - 1e-9 <= x <= 1 + 1e-9 for x in m[warmup:])
    assert all(b >= a for a, b in zip(m[:warmup], m[1:warmup]))  # warmup rises
    assert all(b <= a + 1e-12 for a, b in zip(m[warmup:], m[warmup + 1 :]))  # then never rises
    assert m[-1] == pytest.approx(min_ratio, abs=1e-9) or total - warmup < 2  # the last step reaches the floor
    if kind == "wsd":
        stable_end = total - max(1, round(decay * total))
        assert all(x == 1.0 for x in m[warmup:stable_end])


def test_peak_flops_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert peak_flops(torch.device("cpu")) is None
    for name, tflops in [("NVIDIA H100 80GB HBM3", 989), ("AMD Instinct MI300X", 1307), ("AMD Instinct MI325X", 1307),
                         ("NVIDIA H200", 989), ("NVIDIA A10G", None)]:  # fmt: skip
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_a, _n=name: _n)
        got = peak_flops(torch.device("cuda"))
        assert got == (tflops * 1e12 if tflops else None), name


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"train": {"lernrate": 1}}, "train.lernrate: Extra inputs are not permitted"),
        (
            {"model": {"preset": "huge"}},
            "unknown preset 'huge'; allowed: ['small', 'tiny', 'zaya1-8b', 'zaya1-8b-131k', 'zaya1-8b-32k']",
        ),
        ({"model": {"preset": "tiny", "vocab_size": 100}}, "tokenizer vocab_size 512 > model vocab_size 100"),
        ({"train": {"seq_len": 100}}, "shard seq_len 256 is not a multiple of train.seq_len 100"),
        ({"train": {"global_batch_tokens": 1000}}, "global_batch_tokens 1000 is not a multiple of seq_len 256"),
        ({"train": {"micro_batch": 3}}, "not a multiple of ranks 1 x train.micro_batch 3"),
        ({"train": {"optimizer": {"name": "sgd"}}}, "train.optimizer.name: Input should be 'adamw' or 'muon'"),
        ({"model": {"preset": "tiny", "hidden_size": "wide"}}, "model.hidden_size: Input should be a valid integer"),
        ({"model": {"preset": "tiny", "num_key_value_heads": 3}}, "must be a multiple of num_key_value_heads=3"),
        ({"model": {"preset": "tiny", "hidden": 8}}, "model: unknown keys ['hidden']; allowed: 'preset' and"),
    ],
)
def test_config_errors_are_precise(tmp_path: Path, shards, capsys, patch: dict, message: str) -> None:
    cfg = small_cfg()
    for section, values in patch.items():
        cfg[section].update(values)
    assert run(tmp_path, shards, cfg, "bad") == 2
    assert message in capsys.readouterr().err


def test_data_weights_must_pair_with_data(tmp_path: Path, shards, capsys) -> None:
    code = T.main(["--data", str(shards.root), "--weight", "1", "--weight", "2", "--preset", "tiny",
                   "--out", str(tmp_path / "w")])  # fmt: skip
    assert code == 2 and "--weight given 2 times for 1 --data" in capsys.readouterr().err


def test_trainer_imports_without_datatrove() -> None:
    code = (
        "import sys; sys.modules['datatrove'] = None; sys.modules['reasonpipe.pipeline'] = None\n"
        "import reasonpipe.trainer.train, reasonpipe.trainer.loader, reasonpipe.trainer.checkpoint\n"
        "import reasonpipe.trainer.optim, reasonpipe.trainer.metrics\n"
        "import reasonpipe.trainer.export, reasonpipe.trainer.verify\n"
        "import bench.train_small\n"
        "bad = ('datatrove', 'reasonpipe.pipeline', 'reasonpipe.filters')\n"
        "assert not any(m.startswith(bad) and sys.modules[m] for m in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_existing_run_needs_resume(tmp_path: Path, shards, capsys) -> None:
    cfg = small_cfg(steps=1)
    assert run(tmp_path, shards, cfg, "again") == 0
    assert run(tmp_path, shards, cfg, "again") == 2
    assert "already has checkpoints (step_0000001): pass --resume" in capsys.readouterr().err
    assert run(tmp_path, shards, None, "again", "--steps", "2", "--resume") == 0
    steps = [r["step"] for r in records(tmp_path / "again") if "loss" in r and "event" not in r]
    assert steps == [1, 2]


def test_gpu_suite_smoke_runs_every_section() -> None:
    """bench/gpu_suite.sh --smoke: every section of the GPU suite on CPU at tiny shapes (so it works without a GPU)."""
    proc = subprocess.run(["bash", str(ROOT / "bench/gpu_suite.sh"), "--smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PY": sys.executable})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "section failed" not in out, out
    for title in ("1. forward + backward", "2. attention backends", "3. long context", "4. expert compute share",
                  "5. decoding (generate, eval)"):  # fmt: skip
        assert f"### {title}" in out
    assert "| ours (eager) |" in out and "| transformers (sdpa, experts=grouped_mm) |" in out
    assert "expert share of the step" in out
    assert "| 4 | yes |" in out and "| 4 | no |" in out and "cached vs uncached at batch 4" in out
