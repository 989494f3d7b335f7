"""Manifest options of the AP-trimming stage."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TrimConfig(BaseModel):
    """`trim:` section. `context` None means "the packing seq_len" (resolved by the manifest composer)."""

    model_config = ConfigDict(extra="forbid")

    context: int | None = Field(
        default=None, gt=0, strict=True, description="token budget C per sample (all tokens counted)"
    )
    policy: Literal["tail", "middle", "truncate", "drop"] = Field(
        default="tail",
        description="tail = ZAYA1; middle = ablation; truncate / drop = ablation baselines (naive cut / drop long)",
    )
    marker: str | None = Field(default=None, description="text inserted at the cut (tokenised once), off by default")
    snap_newline: int = Field(
        default=0, ge=0, strict=True, description="move the cut back to a newline within this many tokens"
    )

    @field_validator("marker")
    @classmethod
    def _marker_not_empty(cls, v: str | None) -> str | None:
        if v is not None and v == "":
            raise ValueError("trim.marker: got an empty string; use null (no marker) or a non-empty text")
        return v
