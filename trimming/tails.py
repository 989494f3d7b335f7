"""Candidate tails and the aggregation prompt of Markovian RSA, in token space.

Recursive self-aggregation shows a model K candidate solutions of one problem and asks for one improved solution;
the Markovian variant (ZAYA1) carries only a bounded *tail* of each candidate forward, so the prompt stays about
K * tau + problem tokens long. Here a candidate is already tokenised (its reasoning and its final answer as token
ids) and everything is slicing and concatenation of ids:

- `tail(ids, tau)`: the last `tau` tokens of a reasoning (or, given the ids of the tokens that start a word, its last
  `tau` words, cut at a word start): always an exact suffix of `ids`, never re-tokenised.
- `PromptTemplate`: the prompt's text with placeholders, validated; `encode(encode_text, k)` tokenises its literal
  pieces once (numbers such as `{k}` and `{index}` are filled in before tokenising) into an `EncodedPrompt`.
- `render_prompt(problem_ids, candidates, encoded, tau)`: the user-turn tokens: a pure function of token ids.

Training samples (`rsa_aggregate`) and test-time prompts (an RSA harness generating round after round) call the same
`render_prompt` with the same `EncodedPrompt`, so what the model is trained on is token for token what it is shown.
Literal pieces are tokenised on their own, like every segment of the chat template (see tokenizer/template.py).

Placeholders. prompt template: `{problem}` and `{candidates}` (once each), `{k}` (any number of times); candidate
template: `{tail}` (once), `{index}` (1-based); answer template: `{answer}` (once), appended after the tail when
answers are included. Candidates are joined by a blank line; a tail that was cut starts with the truncation marker.
`{{` and `}}` are literal braces.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_PROMPT = (
    "{problem}\n\n"
    "Below are {k} candidate solutions to this problem. Some of them may be wrong, and each shows only the end of "
    "its reasoning. Compare them, keep what is right, correct what is wrong, and write one improved solution that "
    "ends with the final answer.\n\n"
    "{candidates}"
)
DEFAULT_CANDIDATE = "Candidate {index}:\n{tail}"
DEFAULT_ANSWER = "\nFinal answer: {answer}"
DEFAULT_MARKER = "[...] "
SEPARATOR = "\n\n"

_FIELDS = {  # template -> (allowed placeholders, those required exactly once)
    "prompt_template": ({"problem", "candidates", "k"}, {"problem", "candidates"}),
    "candidate_template": ({"tail", "index"}, {"tail"}),
    "answer_template": ({"answer"}, {"answer"}),
}


def tail(ids: np.ndarray, tau: int, word_starts: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """(the last `tau` tokens of `ids`, whether anything before them was cut).

    With `word_starts` (ids of the tokens that begin a word, e.g. those whose text starts with a space or newline),
    `tau` counts words instead: the tail starts at the tau-th last word-start token. Either way it is `ids[s:]`.
    """
    if tau <= 0:
        raise ValueError(f"tail: tau must be > 0, got {tau}")
    if word_starts is None:
        start = max(0, len(ids) - tau)
    else:
        starts = np.flatnonzero(np.isin(ids, word_starts))
        words = len(starts) + (0 if len(starts) and starts[0] == 0 else 1) if len(ids) else 0
        start = int(starts[-tau]) if words > tau else 0
    return ids[start:], start > 0


def parse_template(text: str, which: str) -> list[str | tuple[str]]:
    """Literal texts and `(placeholder,)` tuples of a template; ValueError naming what is wrong and what is allowed."""
    allowed, once = _FIELDS[which]
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:  # an unmatched brace
        raise ValueError(f"{which}: {exc}; write a literal brace as {{{{ or }}}}") from None
    parts: list[str | tuple[str]] = []
    seen: list[str] = []
    for literal, field, spec, conversion in pieces:
        if literal:
            parts.append(literal)
        if field is None:
            continue
        if field not in allowed or spec or conversion:
            raise ValueError(
                f"{which}: unknown placeholder {{{field}}}; allowed: " + ", ".join(f"{{{f}}}" for f in sorted(allowed))
            )
        seen.append(field)
        parts.append((field,))
    for field in sorted(once):
        if seen.count(field) != 1:
            raise ValueError(f"{which}: must contain {{{field}}} exactly once (found {seen.count(field)})")
    return parts


@dataclass(frozen=True)
class PromptTemplate:
    """The texts of the aggregation prompt (module doc: placeholders); validated when constructed."""

    prompt_template: str = DEFAULT_PROMPT
    candidate_template: str = DEFAULT_CANDIDATE
    answer_template: str = DEFAULT_ANSWER
    truncation_marker: str = DEFAULT_MARKER

    def __post_init__(self) -> None:
        for which in _FIELDS:
            parse_template(getattr(self, which), which)

    def encode(self, encode_text: Callable[[str], Sequence[int]], k: int) -> EncodedPrompt:
        """Tokenise the literal pieces for prompts of `k` candidates (`encode_text`: text -> ids, no specials)."""
        if k <= 0:
            raise ValueError(f"PromptTemplate.encode: k must be > 0, got {k}")

        def pieces(which: str, numbers: dict[str, int]) -> tuple[np.ndarray | str, ...]:
            out: list[np.ndarray | str] = []
            text = ""
            for part in parse_template(getattr(self, which), which):
                if isinstance(part, str) or part[0] in numbers:  # literal text, or a number written into it
                    text += part if isinstance(part, str) else str(numbers[part[0]])
                    continue
                out += [_ids(encode_text, text), part[0]] if text else [part[0]]
                text = ""
            return tuple(out + [_ids(encode_text, text)] if text else out)

        return EncodedPrompt(
            k=k,
            prompt=pieces("prompt_template", {"k": k}),
            candidates=tuple(pieces("candidate_template", {"index": i}) for i in range(1, k + 1)),
            answer=pieces("answer_template", {}),
            marker=_ids(encode_text, self.truncation_marker),
            separator=_ids(encode_text, SEPARATOR),
        )


def _ids(encode_text: Callable[[str], Sequence[int]], text: str) -> np.ndarray:
    return np.asarray(encode_text(text), dtype=np.uint32) if text else np.zeros(0, np.uint32)


@dataclass(frozen=True)
class EncodedPrompt:
    """A `PromptTemplate` tokenised for `k` candidates: literal pieces as token ids, placeholders as their names."""

    k: int
    prompt: tuple[np.ndarray | str, ...]
    candidates: tuple[tuple[np.ndarray | str, ...], ...]  # one per candidate position (its `{index}` filled in)
    answer: tuple[np.ndarray | str, ...]
    marker: np.ndarray
    separator: np.ndarray


@dataclass(frozen=True)
class Candidate:
    reasoning: np.ndarray  # token ids of the candidate's reasoning
    answer: np.ndarray  # token ids of its final answer


@dataclass(frozen=True)
class Prompt:
    ids: np.ndarray  # uint32 tokens of the user turn's content
    tail_tokens: tuple[int, ...]  # reasoning tokens kept per candidate (its tail)
    cut: tuple[bool, ...]  # whether each candidate's reasoning was cut


def render_prompt(
    problem: np.ndarray,
    candidates: Sequence[Candidate],
    encoded: EncodedPrompt,
    tau: int,
    include_answer: bool = False,
    word_starts: np.ndarray | None = None,
) -> Prompt:
    """The aggregation prompt's tokens: the problem and each candidate's tail (module doc). Pure."""
    if len(candidates) != encoded.k:
        raise ValueError(f"render_prompt: {len(candidates)} candidates for a prompt encoded for k={encoded.k}")
    tails = [tail(c.reasoning, tau, word_starts) for c in candidates]
    blocks: list[np.ndarray] = []
    for i, (c, (kept, cut)) in enumerate(zip(candidates, tails)):
        if i:
            blocks.append(encoded.separator)
        shown = np.concatenate([encoded.marker, kept]) if cut else kept
        blocks += _fill(encoded.candidates[i], {"tail": shown})
        if include_answer:
            blocks += _fill(encoded.answer, {"answer": c.answer})
    values = {"problem": np.asarray(problem, dtype=np.uint32), "candidates": _cat(blocks)}
    ids = _cat(_fill(encoded.prompt, values))
    ids.flags.writeable = False
    return Prompt(ids, tuple(len(kept) for kept, _ in tails), tuple(cut for _, cut in tails))


def _fill(parts: Sequence[np.ndarray | str], values: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [values[p] if isinstance(p, str) else p for p in parts]


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays).astype(np.uint32, copy=False) if arrays else np.zeros(0, np.uint32)
