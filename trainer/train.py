"""Train a ZAYA1 model on reasonpipe shards: one process (CPU / one GPU) or `torchrun` (DDP or FSDP2).

    reasonpipe train --data OUTPUT [--weight W] [--data OUTPUT2 --weight W2 ...] (--preset NAME | --config FILE)
                     --out RUN_DIR [--steps N] [--resume]
    torchrun --nproc_per_node=8 -m trainer.train --data OUTPUT --config run.yaml --out RUN_DIR

One optimizer step consumes one global batch (global_batch_tokens / seq_len windows), cut into micro-batches over
ranks and gradient-accumulation steps. The loss is the mean over every trained token of the global batch, whatever
the split, so 2 ranks x B and 1 rank x 2 x B accumulated compute the same step. Expert counts are summed over the
micro-batches and ranks and drive one balancing-bias update per optimizer step. A non-finite loss or gradient norm
skips the step (logged); `max_nonfinite` consecutive ones stop the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer import checkpoint as C
from trainer import distributed as D
from trainer.balancing import balance_metrics, update_model_biases
from trainer.config import ModelConfig
from trainer.loader import Batch, ShardLoader, Source, check_sources, eval_batches, has_val
from trainer.metrics import MetricsLog, balance_summary, flops_per_token, memory_gib, peak_flops
from trainer.model import ZayaLM
from trainer.optim import Schedule, build_optimizer, clip_grad_norm
from trainer.trainconfig import DataSource, RunConfig, load_run_config

ANSWER, REASONING = 4, 3


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
    return ap


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The run's config: --config / --preset, or on --resume the stored RUN_DIR/config.json; then CLI overrides."""
    stored = Path(args.out) / "config.json"
    if args.resume and stored.exists():
        saved = json.loads(stored.read_text())
        cfg = RunConfig.model_validate({"model": saved["model"], "train": saved["train"]})
    elif args.config or args.preset:
        cfg = load_run_config(args.config, args.preset)
    else:
        raise ValueError("give --preset NAME or --config FILE (or --resume a run that has config.json)")
    train = cfg.train
    if args.data:
        if args.weight and len(args.weight) != len(args.data):
            raise ValueError(
                f"--weight given {len(args.weight)} times for {len(args.data)} --data; give one per --data"
            )
        weights = args.weight or [1.0] * len(args.data)
        data = [DataSource(path=p, weight=w) for p, w in zip(args.data, weights)]
        if args.resume and stored.exists() and data != train.data:
            raise ValueError(f"--resume with other data than the run's config.json: {train.data} vs {data}")
        train.data = data
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
    """ModelConfig (a preset gets the shards' vocab and seq_len unless set) and the training seq_len; checked."""
    vocab = max(s.vocab_size for s in sources)
    shard_len = sources[0].seq_len
    seq_len = cfg.train.seq_len or min(s.seq_len for s in sources)
    mcfg = cfg.model_config_obj(vocab_size=vocab)
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


def autocast_ctx(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class RouterProbe:
    """Forward hooks on the router MLPs: mean normalised entropy of the router softmax per layer (training only)."""

    def __init__(self, model: ZayaLM) -> None:
        self.routers = model.routers()
        self.sums = torch.zeros(len(self.routers), dtype=torch.float64)
        self.count = torch.zeros(len(self.routers), dtype=torch.float64)
        self.handles = [r.router_mlp.register_forward_hook(self._hook(i)) for i, r in enumerate(self.routers)]

    def _hook(self, i: int) -> Any:
        def hook(_m: nn.Module, _inp: Any, logits: torch.Tensor) -> None:
            if not torch.is_grad_enabled():
                return
            with torch.no_grad():
                p = torch.softmax(logits.float(), -1)
                ent = -(p * p.clamp_min(1e-30).log()).sum(-1) / math.log(p.shape[-1])
                self.sums[i] += ent.sum().item()
                self.count[i] += ent.numel()

        return hook

    def per_layer(self, counts: torch.Tensor) -> list[dict[str, float]]:
        """Balance metrics of each layer for the logged step; resets the entropy sums."""
        ent = (self.sums / self.count.clamp_min(1)).tolist()
        rows = []
        for i, r in enumerate(self.routers):
            m = balance_metrics(counts[i])
            b = r.balancing_biases[: r.num_experts].detach().float().cpu()
            rows.append({
                "max_violation": m["max_violation"], "cv": m["cv"], "entropy": m["entropy"],
                "dead_experts": m["dead_experts"], "router_entropy": ent[i],
                "bias_mean": b.mean().item(), "bias_std": b.std(unbiased=False).item(), "bias_max": b.max().item(),
            })  # fmt: skip
        self.sums.zero_()
        self.count.zero_()
        return rows


# --- steps ---------------------------------------------------------------------------------------------------------


def segment_sums(token_loss: torch.Tensor, batch: Batch) -> torch.Tensor:
    """[answer loss sum, answer tokens, reasoning loss sum, reasoning tokens] of one micro-batch."""
    tl = token_loss.detach().float()
    out = []
    for kind in (ANSWER, REASONING):
        sel = batch.label_segment == kind
        out += [tl[sel].sum(), sel.sum().to(tl.dtype)]
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


def train(cfg: RunConfig, run_dir: Path, resume: bool, env: D.DistEnv) -> dict[str, Any]:
    t = cfg.train
    log = MetricsLog(run_dir, enabled=env.is_main)
    sources = [Source.open(d.path, d.weight, cache_dir=run_dir / "data_cache") for d in t.data]
    mcfg, seq_len = resolve_model_config(cfg, sources)
    if t.global_batch_tokens % seq_len:
        raise ValueError(f"train.global_batch_tokens {t.global_batch_tokens} is not a multiple of seq_len {seq_len}")
    global_batch = t.global_batch_tokens // seq_len
    if global_batch % (env.world_size * t.micro_batch):
        raise ValueError(
            f"global batch of {global_batch} windows ({t.global_batch_tokens} tokens / seq_len {seq_len}) is not a "
            f"multiple of ranks {env.world_size} x train.micro_batch {t.micro_batch}"
        )
    loader = ShardLoader(sources, seq_len, global_batch, t.micro_batch, env.rank, env.world_size, t.seed)

    torch.manual_seed(t.seed)  # identical init on every rank
    with env.device:  # initialise on the device: no full fp32 copy in host memory per rank
        raw = ZayaLM(mcfg)
    probe = RouterProbe(raw)
    model = wrap_model(raw, env, t.parallel)
    if t.compile:
        raw.compile()
    optimizer = build_optimizer(raw, t.optimizer)
    total = t.schedule.total_steps or t.steps
    sched = Schedule(optimizer, t.schedule.kind, t.schedule.warmup_steps, total, t.schedule.min_lr_ratio,
                     t.schedule.decay_fraction)  # fmt: skip

    step, bal_step, skipped = 0, 0, 0
    ckpt = C.latest_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise ValueError(f"{run_dir} already has checkpoints ({ckpt.name}): pass --resume, or use another --out")
    if ckpt is not None:
        state = C.load_checkpoint(ckpt, raw, optimizer, env.rank)
        step, bal_step, skipped = state["step"], state["balancing_step"], state["skipped_steps"]
        sched.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        log.print(f"resumed from {ckpt} at step {step} ({loader.consumed} samples consumed)")
    elif resume:
        log.print(f"--resume: no checkpoint under {run_dir}/checkpoints, starting from scratch")
    if env.is_main:
        log.truncate(step)  # records past the checkpoint belong to the interrupted attempt

    resolved = {"model": mcfg.to_dict(), "train": t.model_dump(), "seq_len": seq_len, "global_batch": global_batch}
    if env.is_main:
        (run_dir / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
    fpt = flops_per_token(raw, seq_len)
    peak = peak_flops(env.device)
    info = D.backend_info()
    log.print(
        f"ZAYA1 {raw.num_params() / 1e6:.2f}M params ({raw.num_params(False) / 1e6:.2f}M w/o embedding) | "
        f"device {env.device} x{env.world_size} ({t.parallel if env.distributed else 'single'}) | torch "
        f"{info['torch']} cuda {info['cuda']} hip {info['hip']} | seq_len {seq_len} | global batch {global_batch} "
        f"windows = {env.world_size} ranks x {loader.accum_steps} accum x {t.micro_batch} | "
        f"{fpt / 1e6:.1f} MFLOP/token"
    )
    log.record({"step": step, "event": "resume" if step else "start", "backend": info, "params": raw.num_params(),
                "flops_per_token": fpt, "world_size": env.world_size, "global_batch": global_batch})  # fmt: skip

    consecutive_bad = 0
    window = {"t0": time.perf_counter(), "steps": 0, "loss": 0.0, "seg": torch.zeros(4, dtype=torch.float64)}
    last: dict[str, Any] = {}
    while step < t.steps:
        micro = loader.next_global_batch()
        n_tok = D.all_reduce_sum(torch.tensor([sum(b.num_loss_tokens for b in micro)], dtype=torch.float64,
                                              device=env.device)).item()  # fmt: skip
        lr_mult = sched.apply()
        stats = torch.zeros(5, dtype=torch.float64, device=env.device)  # loss sum, answer / reasoning sums
        counts = torch.zeros(mcfg.num_layers, mcfg.num_experts, dtype=torch.long, device=env.device)
        for i, batch in enumerate(micro):
            batch = batch.to(env.device)
            sync = i == len(micro) - 1
            if hasattr(raw, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter only on the last micro-batch
                raw.set_requires_gradient_sync(sync)
            no_sync = model.no_sync() if (not sync and hasattr(model, "no_sync")) else contextlib.nullcontext()
            with no_sync:
                with autocast_ctx(env.device, t.precision):
                    out = forward(model, batch)
                # mean over the global batch's trained tokens; DDP / FSDP average gradients over ranks, hence * world
                loss = out.token_loss.sum() * (env.world_size / max(n_tok, 1.0))
                loss.backward()
            stats[0] += out.token_loss.detach().double().sum()
            stats[1:] += segment_sums(out.token_loss, batch).double()
            counts += out.expert_counts.detach()
        D.all_reduce_sum(stats)
        D.all_reduce_sum(counts)
        step_loss = stats[0].item() / max(n_tok, 1.0)
        grad_norm = (
            clip_grad_norm(raw.parameters(), t.optimizer.grad_clip).item() if math.isfinite(step_loss) else None
        )
        ok = math.isfinite(step_loss) and grad_norm is not None and math.isfinite(grad_norm)
        if ok:
            optimizer.step()
            bal_step += 1
            b = t.balancing
            update_model_biases(raw.balance_state(), counts, bal_step, b.mode, lr=b.lr, betas=b.betas, eps=b.eps)
            consecutive_bad = 0
        else:
            skipped += 1
            consecutive_bad += 1
            log.record({"step": step + 1, "event": "skipped_nonfinite", "loss": step_loss, "grad_norm": grad_norm})
        optimizer.zero_grad(set_to_none=True)
        step += 1
        sched.advance()
        if consecutive_bad >= t.max_nonfinite:
            raise TrainingStopped(
                f"stopping at step {step}: {consecutive_bad} consecutive non-finite losses/gradients "
                f"(train.max_nonfinite = {t.max_nonfinite}); lower the learning rate or inspect the data, then "
                f"--resume from the last checkpoint"
            )
        if ok:
            window["steps"] += 1
            window["loss"] += step_loss
            window["seg"] += stats[1:].cpu()

        if step % t.log_every == 0 or step == t.steps:
            dt = time.perf_counter() - window["t0"]
            n = max(window["steps"], 1)
            tps = t.global_batch_tokens * window["steps"] / dt if dt > 0 else None
            seg = window["seg"].tolist()
            rec: dict[str, Any] = {
                "step": step,
                "loss": window["loss"] / n if window["steps"] else None,
                "loss_answer": seg[0] / seg[1] if seg[1] else None,
                "loss_reasoning": seg[2] / seg[3] if seg[3] else None,
                "lr": t.optimizer.lr * lr_mult,
                "grad_norm": grad_norm,
                "tokens": loader.consumed * seq_len,
                "tokens_per_s": tps,
                "mfu": fpt * tps / (peak * env.world_size) if (peak and tps) else None,
                "skipped_steps": skipped,
                **memory_gib(env.device),
            }
            layers = probe.per_layer(counts.cpu())
            rec.update(balance_summary(layers))
            rec["balance_layers"] = layers
            rec["key_temperature_mean"] = float(
                torch.stack([blk.self_attn.temp.detach().float().mean().cpu() for blk in raw.layers]).mean()
            ) if not env.distributed or t.parallel == "ddp" else None  # fmt: skip
            log.record(rec)
            last = rec
            window = {"t0": time.perf_counter(), "steps": 0, "loss": 0.0, "seg": torch.zeros(4, dtype=torch.float64)}

        final = step == t.steps
        if has_val(sources) and ((t.eval_every and step % t.eval_every == 0) or final):
            ev = evaluate(model, cfg, sources, seq_len, env)
            log.record({"step": step, **ev})
            last.update(ev)
        if (t.checkpoint_every and step % t.checkpoint_every == 0) or final:
            state = {"step": step, "balancing_step": bal_step, "skipped_steps": skipped,
                     "scheduler": sched.state_dict(), "loader": loader.state_dict()}  # fmt: skip
            path = C.save_checkpoint(run_dir, step, raw, optimizer, state, env.rank, t.keep_checkpoints)
            log.print(f"checkpoint {path}")
        if window["steps"] == 0:  # throughput excludes eval and checkpoint time
            window["t0"] = time.perf_counter()
    return last


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
        train(cfg, run_dir, args.resume, env)
    except (ValueError, TrainingStopped) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, TrainingStopped) else 2
    finally:
        D.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
