"""Token-share mixtures: per-group sampling rates and deterministic per-sample copy counts.

A group (a domain or a source) with rate r contributes on average r copies of each of its samples: r < 1 down-samples,
r > 1 up-samples (repeats). Target shares are shares of the OUTPUT tokens.

Groups named in the target get exactly their share (in expectation). Groups not named ("others") follow
`others`: "keep" (default) leaves them untouched at rate 1 and they anchor the output size: with kept-others tokens
A and named shares summing to S < 1, the output has A / (1 - S) tokens. "drop" gives them rate 0; the named shares
must then sum to 1 and the output keeps the size of the named groups together (sum of their tokens).
"""

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SUM_TOLERANCE = 1e-6


class MixtureConfig(BaseModel):
    """`mixture:` section of a manifest."""

    model_config = ConfigDict(extra="forbid")

    by: Literal["domain", "source"] = Field(default="domain", description="group samples by this metadata key")
    shares: dict[str, float] = Field(description="target share of output tokens per group, each in [0, 1]")
    others: Literal["keep", "drop"] = Field(default="keep", description="groups not in shares: rate 1 or rate 0")

    @field_validator("shares")
    @classmethod
    def _shares_valid(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("mixture.shares: got an empty mapping; name at least one group")
        for name, share in v.items():
            if not name:
                raise ValueError("mixture.shares: got an empty group name")
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"mixture.shares.{name}: got {share}, allowed: a number in [0, 1]")
        return v

    @model_validator(mode="after")
    def _sum_valid(self) -> "MixtureConfig":
        total = sum(self.shares.values())
        if self.others == "drop" and abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(f"mixture.shares: sum to {total:.6g}; with others: drop they must sum to 1")
        if self.others == "keep" and total > 1.0 + SUM_TOLERANCE:
            raise ValueError(
                f"mixture.shares: sum to {total:.6g}; they must sum to at most 1 "
                "(with others: keep, the rest is the unnamed groups' share)"
            )
        return self


def mixture_rates(
    tokens_by_group: dict[str, int], target_shares: dict[str, float], others: Literal["keep", "drop"] = "keep"
) -> dict[str, float]:
    """Rate (expected copies per sample) of every group of `tokens_by_group`; see the module doc.

    Raises ValueError when the target cannot be reached: a named group with a positive share has no tokens, named
    shares sum to 1 while kept unnamed groups have tokens, or they sum below 1 with no unnamed tokens to make it up.
    """
    if others not in ("keep", "drop"):
        raise ValueError(f"mixture others: got {others!r}, allowed: 'keep', 'drop'")
    for name, share in target_shares.items():
        if share > 0 and tokens_by_group.get(name, 0) <= 0:
            raise ValueError(f"mixture: group {name!r} has target share {share} but no tokens in the corpus")
    named_total = sum(target_shares.values())
    rest = sum(n for g, n in tokens_by_group.items() if g not in target_shares) if others == "keep" else 0
    if rest > 0:
        if named_total >= 1.0 - SUM_TOLERANCE:
            raise ValueError(
                f"mixture: named shares sum to {named_total:.6g}, leaving no share for the "
                f"{rest} tokens of unnamed groups kept at rate 1 (others: keep)"
            )
        out_tokens = rest / (1.0 - named_total)
    else:
        if abs(named_total - 1.0) > SUM_TOLERANCE:
            raise ValueError(
                f"mixture: named shares sum to {named_total:.6g} and no unnamed group fills the "
                "rest; they must sum to 1"
            )
        out_tokens = sum(tokens_by_group.get(g, 0) for g in target_shares) / named_total
    rates = {}
    for group, n in tokens_by_group.items():
        if group in target_shares:
            rates[group] = target_shares[group] * out_tokens / n if n > 0 else 0.0
        else:
            rates[group] = 1.0 if others == "keep" else 0.0
    return rates


def copies(sample_id: str, rate: float, seed: int) -> int:
    """Copies of one sample: floor(rate) + Bernoulli(frac(rate)), the coin drawn from a stable hash of (seed, id)."""
    if rate < 0:
        raise ValueError(f"mixture rate: got {rate}, must be >= 0")
    whole = int(rate)
    frac = rate - whole
    if frac == 0.0:
        return whole
    digest = hashlib.blake2b(f"{seed}\x00{sample_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64  # uniform in [0, 1)
    return whole + (u < frac)


def predicted_shares(tokens_by_group: dict[str, int], rates: dict[str, float]) -> dict[str, float]:
    """Expected share of output tokens per group under `rates` (groups without a rate count as rate 0)."""
    expected = {g: n * rates.get(g, 0.0) for g, n in tokens_by_group.items()}
    total = sum(expected.values())
    return {g: (e / total if total > 0 else 0.0) for g, e in expected.items()}
