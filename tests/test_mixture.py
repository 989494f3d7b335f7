"""Mixture sampling: rate maths, deterministic copies, achieved shares on a realistic synthetic corpus."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonpipe.tokenizer.mixture import MixtureConfig, copies, mixture_rates, predicted_shares


def corpus(rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """(sample id, domain, tokens): few long reasoning traces, many short math problems, code files, web pages."""
    spec = {"reasoning": (800, np.log(3000), 0.8), "math": (6000, np.log(250), 0.5),
            "code": (3000, np.log(900), 1.0), "web": (5000, np.log(1200), 1.1)}  # fmt: skip
    rows = []
    for domain, (n, mu, sigma) in spec.items():
        lens = rng.lognormal(mu, sigma, n).astype(int) + 1
        rows += [(f"{domain}/{i}", domain, int(t)) for i, t in enumerate(lens)]
    return rows


def tokens_by(rows: list[tuple[str, str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, group, n in rows:
        out[group] = out.get(group, 0) + n
    return out


@pytest.mark.parametrize("others", ["keep", "drop"])
def test_achieved_shares_close_to_target(others: str) -> None:
    rows = corpus(np.random.default_rng(0))
    target = {"reasoning": 0.5, "math": 0.2, "code": 0.1}
    if others == "drop":
        target["web"] = 0.2
    rates = mixture_rates(tokens_by(rows), target, others)
    achieved: dict[str, int] = {}
    for sid, group, n in rows:
        achieved[group] = achieved.get(group, 0) + n * copies(sid, rates[group], seed=7)
    total = sum(achieved.values())
    shares = {g: t / total for g, t in achieved.items()}
    print({g: round(s, 4) for g, s in shares.items()}, {g: round(r, 3) for g, r in rates.items()})
    for group, share in target.items():
        assert abs(shares[group] - share) < 0.02, (group, shares[group], share)
    if others == "keep":
        assert rates["web"] == 1.0 and achieved["web"] == tokens_by(rows)["web"]  # untouched anchor
        assert abs(shares["web"] - 0.2) < 0.02


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefg"), st.integers(1, 10**9), min_size=1),
    st.lists(st.floats(0.01, 1.0), min_size=1, max_size=7),
    st.booleans(),
)
def test_rates_hit_target_shares(tokens: dict[str, int], weights: list[float], keep_some: bool) -> None:
    groups = sorted(tokens)
    named = groups[: len(weights)]
    if keep_some and len(named) == len(groups) and len(groups) > 1:
        named = named[:-1]
    rest = [g for g in groups if g not in named]
    scale = 0.9 if rest else 1.0  # named shares leave room for the kept others
    w = weights[: len(named)]
    target = {g: scale * x / sum(w) for g, x in zip(named, w)}
    rates = mixture_rates(tokens, target, "keep")
    pred = predicted_shares(tokens, rates)
    for g in named:
        assert pred[g] == pytest.approx(target[g], rel=1e-9, abs=1e-12)
    for g in rest:
        assert rates[g] == 1.0
    out_tokens = sum(tokens[g] * rates[g] for g in groups)
    expected = sum(tokens[g] for g in rest) / (1 - scale) if rest else sum(tokens.values())
    assert out_tokens == pytest.approx(expected, rel=1e-9)  # output size: anchored by others, else unchanged
    # dropping the others: the named groups renormalised keep the size of the named groups
    drop_target = {g: s / sum(target.values()) for g, s in target.items()}
    rates = mixture_rates(tokens, drop_target, "drop")
    assert all(rates[g] == 0.0 for g in rest)
    assert sum(tokens[g] * rates[g] for g in groups) == pytest.approx(sum(tokens[g] for g in named), rel=1e-9)


def test_copies_deterministic_and_unbiased() -> None:
    ids = [f"src/train.jsonl:{i}" for i in range(20_000)]
    a = [copies(s, 2.3, seed=1) for s in ids]
    assert a == [copies(s, 2.3, seed=1) for s in ids]  # same seed, same answer (no process hash seed involved)
    assert set(a) == {2, 3}
    assert abs(np.mean(a) - 2.3) < 0.02
    b = [copies(s, 2.3, seed=2) for s in ids]
    assert a != b and abs(np.mean(b) - 2.3) < 0.02
    assert all(copies(s, 3.0, seed=1) == 3 for s in ids[:100])
    assert all(copies(s, 0.0, seed=1) == 0 for s in ids[:100])
    with pytest.raises(ValueError, match="rate"):
        copies("x", -0.5, seed=0)


def test_unreachable_targets_raise() -> None:
    tokens = {"reasoning": 1000, "web": 3000}
    with pytest.raises(ValueError, match="'math'"):
        mixture_rates(tokens, {"reasoning": 0.5, "math": 0.2})
    with pytest.raises(ValueError, match="no share"):
        mixture_rates(tokens, {"reasoning": 1.0})  # web kept at rate 1 needs room
    with pytest.raises(ValueError, match="sum to 1"):
        mixture_rates(tokens, {"reasoning": 0.5}, others="drop")
    assert mixture_rates(tokens, {"reasoning": 1.0}, others="drop") == {"reasoning": 1.0, "web": 0.0}  # size kept
    assert mixture_rates(tokens, {"reasoning": 0.0}) == {"reasoning": 0.0, "web": 1.0}  # share 0 drops a group


def test_config_validation() -> None:
    cfg = MixtureConfig(shares={"reasoning": 0.86})
    assert cfg.by == "domain" and cfg.others == "keep"
    assert MixtureConfig(by="source", shares={"a": 0.25, "b": 0.75}, others="drop").by == "source"
    for bad, key in [
        ({"shares": {}}, "shares"),
        ({"shares": {"a": 1.5}}, "mixture.shares.a"),
        ({"shares": {"a": -0.1}}, "mixture.shares.a"),
        ({"shares": {"a": 0.7, "b": 0.6}}, "at most 1"),
        ({"shares": {"a": 0.5}, "others": "drop"}, "must sum to 1"),
        ({"shares": {"a": 0.5}, "by": "language"}, "by"),
        ({"shares": {"a": 0.5}, "seed": 3}, "seed"),
    ]:
        with pytest.raises(ValueError, match=key):
            MixtureConfig(**bad)
