"""The training run configuration: a YAML/JSON file with a `model` and a `train` section, validated with pydantic.

```yaml
model: {preset: tiny, doc_causal: true}          # a preset name and/or any ModelConfig field
train:
  data: [{path: output/demo, weight: 1.0}]       # OUTPUT folders (local paths or fsspec URLs); CLI --data overrides
  steps: 300
  global_batch_tokens: 8192     # tokens per optimizer step: a multiple of seq_len * micro_batch * ranks
  micro_batch: 8
  optimizer: {name: adamw, lr: 3.0e-3}
  schedule: {kind: cosine, warmup_steps: 30}
  balancing: {mode: pid, lr: 1.0e-3}
```
Unknown keys are errors that name the key; every field has a default except `model` (preset or fields).
The tokenizer's vocab_size and bos/eos/pad ids come from the shards' index.json; a model section that sets them
to other values is refused (a larger vocab_size is allowed: padded embedding rows).

On `--resume` a new `--config` may change the optimisation settings (everything in `train` but RESUME_FIXED_TRAIN)
and the model's runtime knobs (RESUME_FREE_MODEL); each change is recorded in metrics.jsonl. Any other model field
(the shape, the attention/document semantics) and the data order fields are refused with the keys named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from reasonpipe.trainer.config import PRESETS, ModelConfig, preset


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSource(Strict):
    path: str
    weight: float = Field(1.0, gt=0)


class OptimizerConfig(Strict):
    name: Literal["adamw", "muon"] = "adamw"
    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    momentum: float = Field(0.95, ge=0, lt=1)  # Muon
    ns_steps: int = Field(5, ge=1)  # Muon Newton-Schulz iterations
    grad_clip: float = Field(1.0, ge=0)  # 0 = no clipping (the norm is still logged)


class ScheduleConfig(Strict):
    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    total_steps: int | None = Field(None, ge=1)  # schedule length; default train.steps
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    decay_fraction: float = Field(0.2, gt=0, le=1)  # WSD: share of steps in the final decay


class BalancingConfig(Strict):
    mode: Literal["pid", "sign", "off"] = "pid"
    lr: float = Field(1e-3, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)


class TrainConfig(Strict):
    data: list[DataSource] = Field(default_factory=list)
    seed: int = 0
    steps: int = Field(1000, ge=1)  # stop after this many optimizer steps (total, counting resumed ones)
    seq_len: int | None = Field(None, ge=1)  # tokens per sample; default the shards' seq_len (or a divisor of it)
    global_batch_tokens: int = Field(65536, ge=1)
    micro_batch: int = Field(4, ge=1)  # windows per forward pass per rank
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    balancing: BalancingConfig = Field(default_factory=BalancingConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun; FSDP2 = torch.distributed.fsdp.fully_shard
    compile: bool = False
    prefetch: bool = True  # build the next global batch in a background thread
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(0, ge=0)  # 0 = only at the end (when shards-val/ exists)
    eval_windows: int = Field(64, ge=1)  # validation windows per source
    checkpoint_every: int = Field(0, ge=0)  # 0 = only at the end
    keep_checkpoints: int = Field(3, ge=1)
    max_nonfinite: int = Field(5, ge=1)  # consecutive non-finite losses that stop the run

    @field_validator("data")
    @classmethod
    def _unique_paths(cls, v: list[DataSource]) -> list[DataSource]:
        paths = [d.path for d in v]
        dup = sorted({p for p in paths if paths.count(p) > 1})
        if dup:
            raise ValueError(f"data paths listed twice: {dup}")
        return v


class RunConfig(Strict):
    model: dict[str, Any]
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _model_fields(self) -> RunConfig:
        self.model_config_obj()  # raises a precise error for unknown preset / fields
        return self

    def model_config_obj(self, vocab_size: int | None = None, ids: dict[str, int] | None = None) -> ModelConfig:
        """The ModelConfig: preset (if any) + overrides. `vocab_size` fills in a preset's vocab when not given; `ids`
        (the shards' {"bos", "eos", "pad"}) fill in the special ids, and a section that sets another id is refused."""
        fields = dict(self.model)
        for key, tid in (ids or {}).items():
            given = fields.setdefault(f"{key}_token_id", tid)
            if given != tid:
                raise ValueError(
                    f"model.{key}_token_id = {given}, but the shards' tokenizer has {key} = {tid} (index.json "
                    f"tokenizer.special_ids); remove model.{key}_token_id: the trainer takes it from the shards"
                )
        name = fields.pop("preset", None)
        known = set(ModelConfig.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"model: unknown keys {unknown}; allowed: 'preset' and {sorted(known)}")
        if name is not None and name not in PRESETS:
            raise ValueError(f"model.preset: unknown preset {name!r}; allowed: {sorted(PRESETS)}")
        if name is not None and vocab_size is not None and "vocab_size" not in fields and not name.startswith("zaya1"):
            fields["vocab_size"] = vocab_size
        base = preset(name).to_dict() if name is not None else {}
        try:  # pydantic checks the dataclass field types (and runs its __post_init__ checks)
            return TypeAdapter(ModelConfig).validate_python({**base, **fields})
        except ValidationError as e:
            raise ValueError("\n  ".join(error_lines(e, prefix="model"))) from None


# What a --resume may not change: the data order (data, seed, seq_len, global batch) and the optimizer's state layout.
RESUME_FIXED_TRAIN = ("data", "seed", "seq_len", "global_batch_tokens", "optimizer.name")
# Model fields a --resume may change: efficiency knobs that leave the weights and the function they compute alone.
RESUME_FREE_MODEL = ("activation_checkpointing", "ce_chunk_tokens", "fp32_head", "attention_backend", "extra")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys ({"a": {"b": 1}} -> {"a.b": 1}); lists and tuples as lists."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key != "extra":
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def resume_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """{"model.x" / "train.y": [old, new]} of the settings a resume changes; ValueError naming the refused ones.

    old / new: {"model": resolved ModelConfig dict, "train": TrainConfig dump}."""
    changes: dict[str, list[Any]] = {}
    for section in ("model", "train"):
        a, b = flatten(old[section]), flatten(new[section])
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changes[f"{section}.{key}"] = [a.get(key), b.get(key)]

    def fixed(key: str) -> bool:
        section, _, name = key.partition(".")
        if section == "model":
            return name.split(".")[0] not in RESUME_FREE_MODEL
        return any(name == f or name.startswith(f"{f}.") for f in RESUME_FIXED_TRAIN)

    refused = {k: v for k, v in changes.items() if fixed(k)}
    if refused:
        lines = [f"  {k}: {v[0]!r} in the checkpoint, {v[1]!r} now" for k, v in refused.items()]
        raise ValueError(
            "--resume cannot change these settings of the checkpointed run:\n" + "\n".join(lines) + "\n"
            f"a resume may change train.* except {list(RESUME_FIXED_TRAIN)} and model.{{"
            f"{', '.join(RESUME_FREE_MODEL)}}}; start a new run (another --out) for the rest"
        )
    return changes


def error_lines(err: ValidationError, prefix: str = "") -> list[str]:
    """One line per error: dotted key, what is wrong (allowed values), what was found."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in ([prefix] if prefix else []) + list(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        found = e.get("input")
        if e["type"] == "value_error" or isinstance(found, dict):  # the message already names key and value
            lines.append(f"{loc}: {msg}" if loc else msg)
        else:
            lines.append(f"{loc}: {msg} (found {json.dumps(found, default=str)[:80]})")
    return lines


def format_error(err: ValidationError, source: str) -> str:
    return "\n  ".join([f"invalid training config {source}:", *error_lines(err)])


def load_run_config(path: str | Path | None, preset_name: str | None) -> RunConfig:
    """From a YAML/JSON file, or a bare preset (default train section); raises ValueError with a precise message."""
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        if not isinstance(raw, dict):
            raise ValueError(f"invalid training config {path}: expected a mapping with 'model' and 'train' keys")
        if preset_name is not None:
            raw.setdefault("model", {})["preset"] = preset_name
        source = str(path)
    else:
        raw = {"model": {"preset": preset_name}}
        source = f"(preset {preset_name})"
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ValueError(format_error(e, source)) from None
