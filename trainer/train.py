"""Train a ZAYA1 model on reasonpipe shards: one process (CPU / one GPU) or `torchrun` (DDP or FSDP2).

    reasonpipe train --data OUTPUT [--weight W] [--data OUTPUT2 --weight W2 ...] (--preset NAME | --config FILE)
                     --out RUN_DIR [--steps N] [--resume] [--no-verify]
    torchrun --nproc_per_node=8 -m reasonpipe.trainer.train --data OUTPUT --config run.yaml --out RUN_DIR

One optimizer step consumes one global batch (global_batch_tokens / seq_len windows), cut into micro-batches over
ranks and gradient-accumulation steps. The loss is the mean over every trained token of the global batch, whatever
the split, so 2 ranks x B and 1 rank x 2 x B accumulated compute the same step. Expert counts are summed over the
micro-batches and ranks and drive one balancing-bias update per optimizer step. A non-finite loss or gradient norm
skips the step (logged); `max_nonfinite` consecutive ones stop the run.

Strict at start, before step 0: the shards are checked against their index.json (trainer/verify.py), the model's
vocab size and bos/eos/pad ids come from the shards' tokenizer, the run folder records the data it trains on
(data.json, tokenizer.json), and `--resume` takes the newest sound checkpoint and refuses settings that cannot
change mid-run (trainconfig.resume_changes); the optimisation settings it may change are logged as overrides.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonpipe.segments import SEG_ANSWER, SEG_REASONING
from reasonpipe.tokenizer.shards import sha256_file
from reasonpipe.trainer import checkpoint as C
from reasonpipe.trainer import distributed as D
from reasonpipe.trainer.balancing import update_model_biases
from reasonpipe.trainer.config import ModelConfig
from reasonpipe.trainer.loader import (
    Batch,
    Prefetcher,
    ShardLoader,
    Source,
    check_sources,
    eval_batches,
    has_val,
    shard_tokenizer,
)
from reasonpipe.trainer.metrics import (
    MetricsLog,
    RouterProbe,
    balance_summary,
    flops_per_token,
    memory_gib,
    peak_flops,
)
from reasonpipe.trainer.model import ZayaLM
from reasonpipe.trainer.optim import Schedule, build_optimizer, clip_grad_norm
from reasonpipe.trainer.trainconfig import DataSource, RunConfig, load_run_config, resume_changes
from reasonpipe.trainer.verify import format_problems, verify_outputs


class TrainingStopped(RuntimeError):
    """The run cannot continue (e.g. too many consecutive non-finite losses)."""


# --- configuration -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="reasonpipe train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", default=[], metavar="OUTPUT",
                    help="reasonpipe OUTPUT folder (local path or fsspec URL); repeat for a mixture")  # fmt: skip
    ap.add_argument("--weight", action="append", type=float, default=[],
                    help="mixture weight of the preceding --data (give one per --data, or none)")  # fmt: skip
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--preset", help="model preset (tiny, small, zaya1-8b) with the default train section")
    src.add_argument("--config", help="YAML/JSON file with 'model' and 'train' sections")
    ap.add_argument("--out", required=True, help="run directory (config.json, metrics.jsonl, checkpoints/)")
    ap.add_argument("--steps", type=int, help="total optimizer steps (overrides train.steps)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    ap.add_argument("--seed", type=int, help="overrides train.seed")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides train.device")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the shards' sha256 check at start (sizes and schema are always checked)")  # fmt: skip
    return ap


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The run's config: --config / --preset (on --resume: the new settings, checked against the checkpoint), or on
    --resume alone the stored RUN_DIR/config.json; then CLI overrides."""
    stored = Path(args.out) / "config.json"
    if args.config or args.preset:
        cfg = load_run_config(args.config, args.preset)
        if args.resume and stored.exists() and not args.data and not cfg.train.data:
            cfg.train.data = RunConfig.model_validate(json.loads(stored.read_text())).train.data
    elif args.resume and stored.exists():
        saved = json.loads(stored.read_text())
        cfg = RunConfig.model_validate({"model": saved["model"], "train": saved["train"]})
    else:
        raise ValueError("give --preset NAME or --config FILE (or --resume a run that has config.json)")
    train = cfg.train
    if args.data:
        if args.weight and len(args.weight) != len(args.data):
            raise ValueError(
                f"--weight given {len(args.weight)} times for {len(args.data)} --data; give one per --data"
            )
        weights = args.weight or [1.0] * len(args.data)
        train.data = [DataSource(path=p, weight=w) for p, w in zip(args.data, weights)]
    if not train.data:
        raise ValueError("no training data: give --data OUTPUT (or train.data in the config)")
    if args.steps is not None:
        train.steps = args.steps
    if args.seed is not None:
        train.seed = args.seed
    if args.device is not None:
        train.device = args.device
    return RunConfig.model_validate(cfg.model_dump())


def resolve_model_config(cfg: RunConfig, sources: list[Source]) -> tuple[ModelConfig, int]:
    """ModelConfig and the training seq_len, checked against the shards: the tokenizer's vocab size (a preset's
    unless set) and its bos/eos/pad ids (always; a contradicting model section is refused); a preset's seq_len."""
    vocab, ids = shard_tokenizer(sources)
    shard_len = sources[0].seq_len
    seq_len = cfg.train.seq_len or min(s.seq_len for s in sources)
    mcfg = cfg.model_config_obj(vocab_size=vocab, ids=ids)
    if "preset" in cfg.model and "seq_len" not in cfg.model:
        mcfg = mcfg.replace(seq_len=max(seq_len, shard_len))
    if mcfg.seq_len < seq_len:
        raise ValueError(f"model.seq_len {mcfg.seq_len} < training seq_len {seq_len}; raise model.seq_len")
    check_sources(sources, mcfg.vocab_size, seq_len)
    return mcfg, seq_len


# --- model wrapping ------------------------------------------------------------------------------------------------


def wrap_model(model: ZayaLM, env: D.DistEnv, parallel: str) -> nn.Module:
    """DDP (buffers not broadcast: every rank applies the same bias update) or FSDP2 (per block, then the root)."""
    if not env.distributed:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for blk in model.layers:
            fully_shard(blk)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [env.device.index] if env.device.type == "cuda" else None
    return DDP(model, device_ids=ids, broadcast_buffers=False)


def build_model(mcfg: ModelConfig, env: D.DistEnv, parallel: str, seed: int, init: bool) -> tuple[ZayaLM, nn.Module]:
    """(the bare model, the wrapped one). One process / DDP: built on the device, identically on every rank.
    FSDP2: built on the meta device, sharded, then materialised shard by shard: each rank allocates only its shards,
    and the initial weights (`init`; a resume loads the checkpoint instead) are rank 0's host-memory build, broadcast
    one tensor at a time: they do not depend on the number of ranks (on CPU they are a one-process run's: tested)."""
    torch.manual_seed(seed)
    if not (env.distributed and parallel == "fsdp"):
        with env.device:  # initialise on the device: no full fp32 copy in host memory per rank
            raw = ZayaLM(mcfg)
        return raw, wrap_model(raw, env, parallel)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    with torch.device("meta"):
        raw = ZayaLM(mcfg)
    model = wrap_model(raw, env, parallel)
    raw.to_empty(device=env.device)
    if init:
        torch.manual_seed(seed)
        full = ZayaLM(mcfg).state_dict() if env.is_main else {}
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(raw, full, options=opts)
    return raw, model


def autocast_ctx(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# --- steps ---------------------------------------------------------------------------------------------------------


def segment_sums(token_loss: torch.Tensor, batch: Batch) -> torch.Tensor:
    """[answer loss sum, answer tokens, reasoning loss sum, reasoning tokens] of one micro-batch."""
    tl = token_loss.detach().float()
    out = []
    for kind in (SEG_ANSWER, SEG_REASONING):
        sel = (batch.label_segment == kind).to(tl.dtype)  # a product, not a boolean index: no host sync on GPU
        out += [(tl * sel).sum(), sel.sum()]
    return torch.stack(out)


def forward(model: nn.Module, batch: Batch) -> Any:
    return model(batch.input_ids, position_ids=batch.position_ids, doc_ids=batch.doc_ids, labels=batch.labels)


@torch.no_grad()
def evaluate(
    model: nn.Module, cfg: RunConfig, sources: list[Source], seq_len: int, env: D.DistEnv
) -> dict[str, float]:
    model.eval()
    sums = torch.zeros(6, dtype=torch.float64, device=env.device)  # loss, tokens, ans, ans n, rsn, rsn n
    batches = eval_batches(sources, seq_len, cfg.train.eval_windows, cfg.train.micro_batch, env.rank, env.world_size)
    for batch in batches:
        batch = batch.to(env.device)
        with autocast_ctx(env.device, cfg.train.precision):
            out = forward(model, batch)
        tl = out.token_loss.float()
        seg = segment_sums(tl, batch)
        sums += torch.cat([torch.stack([tl.sum(), (batch.labels != -100).sum().float()]), seg]).double()
    D.all_reduce_sum(sums)
    model.train()
    s = sums.tolist()
    return {
        "eval_loss": s[0] / max(s[1], 1),
        "eval_loss_answer": s[2] / s[3] if s[3] else None,
        "eval_loss_reasoning": s[4] / s[5] if s[5] else None,
        "eval_tokens": int(s[1]),
    }


@dataclass
class StepStats:
    """One optimizer step, reduced over micro-batches and ranks."""

    loss: float  # mean over the global batch's trained tokens
    seg: torch.Tensor  # [answer loss sum, answer tokens, reasoning loss sum, reasoning tokens]
    counts: torch.Tensor  # [layers, experts] tokens routed
    grad_norm: float | None
    ok: bool  # finite loss and gradient norm: the update was applied


def new_window() -> dict[str, Any]:
    """Sums over the steps between two log records."""
    return {"t0": time.perf_counter(), "steps": 0, "loss": 0.0, "seg": torch.zeros(4, dtype=torch.float64)}


class Trainer:
    """One run: data, model, optimizer and schedule built from the config (and the latest checkpoint on resume)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool, env: D.DistEnv, verify_sha: bool = True) -> None:
        t = self.t = cfg.train
        self.cfg, self.run_dir, self.env = cfg, run_dir, env
        self.log = MetricsLog(run_dir, enabled=env.is_main)
        self.sources = self._open_sources(verify_sha)
        self.mcfg, self.seq_len = resolve_model_config(cfg, self.sources)
        if t.global_batch_tokens % self.seq_len:
            raise ValueError(
                f"train.global_batch_tokens {t.global_batch_tokens} is not a multiple of seq_len {self.seq_len}"
            )
        gb = t.global_batch_tokens // self.seq_len
        if gb % (env.world_size * t.micro_batch):
            raise ValueError(
                f"global batch of {gb} windows ({t.global_batch_tokens} tokens / seq_len {self.seq_len}) is not a "
                f"multiple of ranks {env.world_size} x train.micro_batch {t.micro_batch}"
            )
        self.loader = ShardLoader(self.sources, self.seq_len, gb, t.micro_batch, env.rank, env.world_size, t.seed)
        self.data = data_record(self.sources)
        self.overrides: dict[str, list[Any]] = {}
        ckpt = self._find_checkpoint(resume)
        if ckpt is not None:
            self._check_resume(*ckpt)

        self.raw, self.model = build_model(self.mcfg, env, t.parallel, t.seed, init=ckpt is None)
        self.probe = RouterProbe(self.raw)
        if t.compile:
            self.raw.compile()
        self.optimizer = build_optimizer(self.raw, t.optimizer)
        s = t.schedule
        self.sched = Schedule(self.optimizer, s.kind, s.warmup_steps, s.total_steps or t.steps, s.min_lr_ratio,
                              s.decay_fraction)  # fmt: skip
        self.step, self.bal_step, self.skipped, self.bad_in_a_row = 0, 0, 0, 0
        self._resume(ckpt)
        self.fpt = flops_per_token(self.raw, self.seq_len)
        self.peak = peak_flops(env.device)
        self._announce()

    def _open_sources(self, verify_sha: bool) -> list[Source]:
        """Open every --data output (rank 0 first: it fills the local cache of remote data for the others) and check
        its shards against index.json before anything else is built."""
        sources: list[Source] = []
        for turn in (True, False):
            if self.env.is_main == turn:
                sources = [Source.open(d.path, d.weight, cache_dir=self.run_dir / "data_cache") for d in self.t.data]
            D.barrier()
        outputs = [(s.path, s.root, s.index) for s in sources]
        problems, rep = verify_outputs(outputs, verify_sha, self.env.rank, self.env.world_size)
        problems = sorted({p for found in D.all_gather_object(problems) for p in found})
        if problems:
            raise ValueError(format_problems(problems))
        how = "sizes, schema and sha256" if verify_sha else "sizes and schema (--no-verify: no sha256)"
        self.log.print(f"shards verified ({how}): {rep.shards} shards, {rep.bytes / 2**20:,.1f} MiB in "
                       f"{rep.seconds:.1f}s")  # fmt: skip
        return sources

    def _find_checkpoint(self, resume: bool) -> tuple[Path, dict[str, Any]] | None:
        """The newest sound checkpoint (and its trainer state) on --resume; a broken one is skipped with a warning."""
        found = C.list_checkpoints(self.run_dir)
        if found and not resume:
            raise ValueError(
                f"{self.run_dir} already has checkpoints ({found[-1][1].name}): pass --resume, or use another --out"
            )
        if not resume:
            return None
        broken = []
        for _, path in reversed(found):
            problem = C.verify_all_ranks(path, self.env)
            if problem is None:
                return path, C.read_trainer_state(path)
            broken.append(f"{path.name}: {problem}")
            self.log.print(f"warning: checkpoint {path} is incomplete or damaged ({problem}); trying an older one")
        if broken:
            raise ValueError(
                f"--resume: no usable checkpoint under {self.run_dir}/checkpoints:\n  "
                + "\n  ".join(broken)
                + "\nmove checkpoints/ away to start over"
            )
        self.log.print(f"--resume: no checkpoint under {self.run_dir}/checkpoints, starting from scratch")
        return None

    def run_config(self) -> dict[str, Any]:
        return {"model": self.mcfg.to_dict(), "train": self.t.model_dump(mode="json")}

    def _check_resume(self, path: Path, state: dict[str, Any]) -> None:
        """Before anything is built: the settings a resume changes (refused ones raise) and the same shards."""
        self.overrides = resume_changes(state["config"], self.run_config())
        changed = [b["path"] for a, b in zip(state["data"], self.data) if a["fingerprint"] != b["fingerprint"]]
        if changed:
            raise ValueError(f"--resume: the shards of {changed} are not the ones {path.name} was trained on "
                             "(their sha256s differ); resume on the same data, or start a new run")  # fmt: skip

    def _resume(self, ckpt: tuple[Path, dict[str, Any]] | None) -> None:
        if ckpt is not None:
            path, state = ckpt
            C.load_checkpoint(path, self.raw, self.optimizer, self.env)
            self.step, self.bal_step, self.skipped = state["step"], state["balancing_step"], state["skipped_steps"]
            self.sched.load_state_dict(state["scheduler"])
            self.loader.load_state_dict(state["loader"])
            self.log.print(f"resumed from {path} at step {self.step} ({self.loader.consumed} samples consumed)")
            for key, (old, new) in self.overrides.items():
                self.log.print(f"  override {key}: {old!r} -> {new!r}")
        if ckpt is None and self.mcfg.key_temp_init == 0:
            self.log.print("warning: model.key_temp_init = 0 (the HF loading placeholder) zeroes the keys at init; "
                           "training from scratch should set model.key_temp_init: 1.0")  # fmt: skip
        self.log.truncate(self.step)  # records past the checkpoint belong to the interrupted attempt

    def _announce(self) -> None:
        env, t, raw, gb = self.env, self.t, self.raw, self.loader.global_batch
        resolved = {**self.run_config(), "seq_len": self.seq_len, "global_batch": gb}
        if env.is_main:
            (self.run_dir / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
            write_data_record(self.run_dir, self.sources, self.data)
        info = D.backend_info()
        self.log.print(
            f"ZAYA1 {raw.num_params() / 1e6:.2f}M params ({raw.num_params(False) / 1e6:.2f}M w/o embedding) | "
            f"device {env.device} x{env.world_size} ({t.parallel if env.distributed else 'single'}) | torch "
            f"{info['torch']} cuda {info['cuda']} hip {info['hip']} | seq_len {self.seq_len} | global batch {gb} "
            f"windows = {env.world_size} ranks x {self.loader.accum_steps} accum x {t.micro_batch} | "
            f"{self.fpt / 1e6:.1f} MFLOP/token"
        )
        self.log.record({"step": self.step, "event": "resume" if self.step else "start", "backend": info,
                         "params": raw.num_params(), "flops_per_token": self.fpt, "world_size": env.world_size,
                         "global_batch": gb, "overrides": self.overrides})  # fmt: skip

    def train_step(self, micro: list[Batch]) -> StepStats:
        """Forward/backward over this rank's micro-batches, reductions over ranks, then the updates (if finite)."""
        env, t, dev = self.env, self.t, self.env.device
        local_tokens = torch.tensor([sum(b.num_loss_tokens for b in micro)], dtype=torch.float64, device=dev)
        n_tok = max(D.all_reduce_sum(local_tokens).item(), 1.0)
        sums = torch.zeros(5, dtype=torch.float64, device=dev)  # loss, answer / reasoning sums and counts
        counts = torch.zeros(self.mcfg.num_layers, self.mcfg.num_experts, dtype=torch.long, device=dev)
        for i, batch in enumerate(micro):
            batch = batch.to(dev)
            sync = i == len(micro) - 1
            if hasattr(self.raw, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter on the last micro-batch
                self.raw.set_requires_gradient_sync(sync)
            no_sync = self.model.no_sync() if not sync and hasattr(self.model, "no_sync") else contextlib.nullcontext()
            with no_sync:
                with autocast_ctx(dev, t.precision):
                    out = forward(self.model, batch)
                # mean over the global batch's trained tokens; DDP/FSDP average gradients over ranks: hence * world
                (out.token_loss.sum() * (env.world_size / n_tok)).backward()
            sums[0] += out.token_loss.detach().double().sum()
            sums[1:] += segment_sums(out.token_loss, batch).double()
            counts += out.expert_counts.detach()
        D.all_reduce_sum(sums)
        D.all_reduce_sum(counts)
        loss = sums[0].item() / n_tok
        grad_norm = (
            clip_grad_norm(self.raw.parameters(), t.optimizer.grad_clip).item() if math.isfinite(loss) else None
        )
        ok = math.isfinite(loss) and grad_norm is not None and math.isfinite(grad_norm)
        if ok:
            self.optimizer.step()
            self.bal_step += 1
            b = t.balancing
            update_model_biases(self.raw.balance_state(), counts, self.bal_step, b.mode, lr=b.lr, betas=b.betas,
                                eps=b.eps)  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        return StepStats(loss, sums[1:].cpu(), counts.cpu(), grad_norm, ok)

    def _after_step(self, st: StepStats) -> None:
        """Count the step; skip-logging and stopping on non-finite losses."""
        self.step += 1
        self.sched.advance()
        if st.ok:
            self.bad_in_a_row = 0
            return
        self.skipped += 1
        self.bad_in_a_row += 1
        self.log.record({"step": self.step, "event": "skipped_nonfinite", "loss": st.loss, "grad_norm": st.grad_norm})
        if self.bad_in_a_row >= self.t.max_nonfinite:
            raise TrainingStopped(
                f"stopping at step {self.step}: {self.bad_in_a_row} consecutive non-finite losses/gradients "
                f"(train.max_nonfinite = {self.t.max_nonfinite}); lower train.optimizer.lr (now "
                f"{self.t.optimizer.lr:g}) in a --config, or inspect the data, then rerun with --resume --config: "
                f"it continues from the last checkpoint with the new settings"
            )

    def _record(self, window: dict[str, Any], st: StepStats, lr_mult: float) -> dict[str, Any]:
        """The metrics.jsonl record of the steps since the last one (window sums)."""
        dt = time.perf_counter() - window["t0"]
        n = window["steps"]
        tps = self.t.global_batch_tokens * n / dt if dt > 0 and n else None
        seg = window["seg"].tolist()
        rec: dict[str, Any] = {
            "step": self.step,
            "loss": window["loss"] / n if n else None,
            "loss_answer": seg[0] / seg[1] if seg[1] else None,
            "loss_reasoning": seg[2] / seg[3] if seg[3] else None,
            "lr": self.t.optimizer.lr * lr_mult,
            "grad_norm": st.grad_norm,
            "tokens": self.loader.consumed * self.seq_len,
            "tokens_per_s": tps,
            "mfu": self.fpt * tps / (self.peak * self.env.world_size) if (self.peak and tps) else None,
            "skipped_steps": self.skipped,
            **memory_gib(self.env.device),
        }
        layers = self.probe.per_layer(st.counts)
        rec.update(balance_summary(layers))
        rec["balance_layers"] = layers
        if not (self.env.distributed and self.t.parallel == "fsdp"):  # FSDP2 parameters are shards
            temps = torch.stack([blk.self_attn.temp.detach().float().mean() for blk in self.raw.layers])
            rec["key_temperature_mean"] = temps.mean().item()
        return rec

    def save(self) -> Path:
        state = {"step": self.step, "balancing_step": self.bal_step, "skipped_steps": self.skipped,
                 "scheduler": self.sched.state_dict(), "loader": self.loader.state_dict(),
                 "config": self.run_config(), "data": self.data}  # fmt: skip
        path = C.save_checkpoint(self.run_dir, self.step, self.raw, self.optimizer, state, self.env,
                                 self.t.keep_checkpoints)  # fmt: skip
        self.log.print(f"checkpoint {path}")
        return path

    def fit(self) -> dict[str, Any]:
        """Train up to train.steps; log, evaluate and checkpoint on schedule. Returns the last records."""
        t = self.t
        window, last = new_window(), {}
        prefetch = Prefetcher(self.loader, pin=self.env.device.type == "cuda") if t.prefetch else None
        try:
            while self.step < t.steps:
                micro = prefetch.next() if prefetch is not None else self.loader.next_global_batch()
                lr_mult = self.sched.apply()
                self.probe.active = (self.step + 1) % t.log_every == 0 or self.step + 1 == t.steps
                st = self.train_step(micro)
                self._after_step(st)
                if st.ok:
                    window["steps"] += 1
                    window["loss"] += st.loss
                    window["seg"] += st.seg
                final = self.step == t.steps
                if self.step % t.log_every == 0 or final:
                    last = self._record(window, st, lr_mult)
                    self.log.record(last)
                    window = new_window()
                if has_val(self.sources) and ((t.eval_every and self.step % t.eval_every == 0) or final):
                    ev = evaluate(self.model, self.cfg, self.sources, self.seq_len, self.env)
                    self.log.record({"step": self.step, **ev})
                    last.update(ev)
                if (t.checkpoint_every and self.step % t.checkpoint_every == 0) or final:
                    self.save()
                if window["steps"] == 0:  # throughput excludes eval and checkpoint time
                    window["t0"] = time.perf_counter()
        finally:
            if prefetch is not None:
                prefetch.close()
        return last


def data_record(sources: list[Source]) -> list[dict[str, Any]]:
    """What the run trains on: per --data output its path, tokenizer and a fingerprint of its shards' sha256s."""
    out = []
    for s in sources:
        shards = sorted((e["path"], e["sha256"]) for e in s.index["shards"])
        out.append({
            "path": s.path, "weight": s.weight, "seq_len": s.seq_len, "tokenizer": s.index["tokenizer"],
            "fingerprint": hashlib.sha256(json.dumps(shards).encode()).hexdigest(),
        })  # fmt: skip
    return out


def write_data_record(run_dir: Path, sources: list[Source], data: list[dict[str, Any]]) -> None:
    """RUN_DIR/data.json and a copy of the shards' tokenizer (RUN_DIR/tokenizer.json) for export-hf; the copy must
    be the tokenizer index.json names (sha256), or the run would export another tokenizer than it trained on."""
    src = sources[0].root / sources[0].index["tokenizer"].get("path", "tokenizer.json")
    want = sources[0].index["tokenizer"].get("sha256")
    if not src.is_file() or sha256_file(src) != want:
        raise ValueError(f"{src}: missing or not the tokenizer index.json records (sha256 {want}); the shards were "
                         "encoded with another tokenizer: re-run the pipeline")  # fmt: skip
    shutil.copyfile(src, run_dir / ".tokenizer.json.tmp")
    os.replace(run_dir / ".tokenizer.json.tmp", run_dir / "tokenizer.json")
    (run_dir / "data.json").write_text(json.dumps({"sources": data}, indent=2, sort_keys=True) + "\n")


def train(cfg: RunConfig, run_dir: Path, resume: bool, env: D.DistEnv, verify_sha: bool = True) -> dict[str, Any]:
    return Trainer(cfg, run_dir, resume, env, verify_sha).fit()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(args.out)
    env = D.init(cfg.train.device)
    try:
        if env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        D.barrier()
        train(cfg, run_dir, args.resume, env, verify_sha=not args.no_verify)
    except (ValueError, TrainingStopped) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, TrainingStopped) else 2
    finally:
        D.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
