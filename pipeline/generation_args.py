"""The flags `generate` and `eval` share (the model, the device, the decoding settings) and their validation.

Kept free of torch and the model code so that building the command line stays fast.
"""

from __future__ import annotations

import argparse
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Think = Literal["model", "open"]


class UsageError(ValueError):
    """A mistake in a command's inputs: printed as one line, exit 2."""


class Sampling(BaseModel):
    """Decoding settings (the `generate` / `eval` flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_new_tokens: int = Field(256, ge=1, description="--max-new-tokens")
    temperature: float = Field(0.0, ge=0, description="--temperature (0 = greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="--top-p")
    seed: int = Field(0, description="--seed")
    batch_size: int = Field(16, ge=1, description="--batch-size")
    think: Think = Field("model", description="--think: open: the prompt ends with <think>")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="RUN_OR_HF_DIR", help="a `reasonpipe train --out` folder or an export-hf folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda when available")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast on a GPU, fp32 on CPU")  # fmt: skip
    p.add_argument(
        "--threads",
        type=int,
        help="CPU intra-op threads (default: torch's; 1 is fastest for small models on a busy machine)",
    )
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens generated per prompt at most")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) = greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature > 0)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling (same seed, same outputs)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences decoded together")
    p.add_argument("--think", choices=["model", "open"], default="model",
                   help="model: the prompt ends at the assistant marker and the model opens <think> itself, as in "
                        "training; open: the prompt also opens <think>")  # fmt: skip
    p.add_argument("--system", help="a system prompt before each user turn")


def sampling_from(args: argparse.Namespace) -> Sampling:
    """The validated decoding settings of parsed flags; UsageError naming each bad flag."""
    fields = ("max_new_tokens", "temperature", "top_p", "seed", "batch_size", "think")
    try:
        return Sampling(**{f: getattr(args, f) for f in fields})
    except ValidationError as e:
        problems = [f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}" for err in e.errors()]
        raise UsageError("; ".join(problems)) from None
