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

    def model_config_obj(self, vocab_size: int | None = None) -> ModelConfig:
        """The ModelConfig: preset (if any) + overrides; `vocab_size` fills in a preset's vocab when not given."""
        fields = dict(self.model)
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
