"""Manifest options of the tokenizer: a local tokenizer.json to use, or a byte-level BPE to train."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reasonpipe.tokenizer.vocab import check_template_keys


class TrainConfig(BaseModel):
    """`tokenizer.train:` train a byte-level BPE on a deterministic sample of the corpus."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(ge=512, le=2**32 - 1, strict=True, description="vocabulary size, specials included")
    sample_docs: int = Field(default=100_000, gt=0, strict=True, description="documents sampled to train on")
    min_frequency: int = Field(default=2, ge=1, strict=True, description="minimum pair frequency to merge")


class TokenizerConfig(BaseModel):
    """`tokenizer:` exactly one of `path` (a local tokenizer.json or a folder holding one) and `train`.

    `template` maps template keys (bos, eos, pad, system, user, assistant, end_turn, think_open, think_close) to token
    strings. With `path` they must exist in that tokenizer's vocabulary (it is never grown); unmapped keys default
    to reasonpipe's names (<|bos|>, ..., <think>, </think>). With `train` they name the special tokens to create.
    """

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    train: TrainConfig | None = None
    template: dict[str, str] | None = None
    backend: Literal["auto", "tokenizers", "gigatoken"] = Field(
        default="auto",
        description="encoder of the texts: gigatoken (optional extra, checked against tokenizers on a sample of "
        "every batch) or tokenizers; auto uses gigatoken when it is installed",
    )

    @field_validator("template")
    @classmethod
    def _known_keys(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None:
            check_template_keys(v)
            empty = sorted(k for k, s in v.items() if not s)
            if empty:
                raise ValueError(f"tokenizer.template: empty token string for {empty}")
        return v

    @field_validator("backend")
    @classmethod
    def _backend_installed(cls, v: str) -> str:
        from reasonpipe.tokenizer.backends import gigatoken_available

        if v == "gigatoken" and not gigatoken_available():
            raise ValueError(
                "gigatoken is not installed: `pip install 'reasonpipe[gigatoken]'`, or use backend: auto "
                "(gigatoken when installed) or tokenizers"
            )
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> TokenizerConfig:
        if (self.path is None) == (self.train is None):
            found = "both" if self.path is not None else "neither"
            raise ValueError(f"tokenizer: set exactly one of 'path' (a local tokenizer.json) and 'train'; got {found}")
        return self
