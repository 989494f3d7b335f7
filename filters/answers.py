"""Final answers: extract them, normalise them, and judge a trace's answer against a gold answer. Pure.

`judge(gold, answer, method)` returns a `Verdict`: correct True / False, or None (unknown) with the reason. Methods:
- "math": Hugging Face `math-verify` (offline): both sides parsed to sympy and compared (equivalent forms agree:
  `\\frac{1}{2}` and `0.5`, `\\boxed{}` wrappers, `$18` and `18 dollars`, `5\\text{ cm}` and `5`, `1,000` and `1000`);
  unknown when either side does not parse.
- "exact": equality after normalisation (case, whitespace, `$`, `\\boxed{}` / `\\text{}` wrappers, thousands
  separators, a final period); multiple-choice golds (`B`, `(B)`) compare the chosen letter.
- "auto" (default): math when both sides parse, and then exact equality still counts as correct (math-verify reads
  prose answers such as "yes" as products of symbols); exact otherwise.
Gold texts may be whole reference solutions: the part after a GSM8K `####` or the last `\\boxed{}` is the answer.
math-verify's timeouts use signal.alarm, which only works in the main thread: elsewhere (dask workers) they are off.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Literal

Method = Literal["auto", "math", "exact"]
METHODS = ("auto", "math", "exact")

_GSM = re.compile(r"####\s*(.+?)\s*$", re.S)
_DELIMITED = re.compile(r"\\boxed|\$|\\\(|\\\[")
_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_CHOICE = re.compile(r"^\(?([A-J])\)?$")
_CHOICE_IN = re.compile(r"(?:^|answer is|answer:|\()\s*\(?([A-J])\)?(?![A-Za-z])", re.I)


def boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def answer_span(text: str) -> str:
    """The answer inside a text: the last `\\boxed{}` content, else what follows a GSM8K `####`, else the text."""
    text = text.strip()
    if (b := boxed(text)) is not None:
        return b.strip()
    if (m := _GSM.search(text)) is not None:
        return m.group(1).strip()
    return text


def normalize_answer(text: str) -> str:
    """The comparison form of an answer for exact matching (module doc)."""
    s = answer_span(text)
    s = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "%").replace("\\!", "")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip().lower()
    return s


def _prose(text: str) -> bool:
    """Whether a text has words (two letters or more outside LaTeX commands): prose, not a bare expression."""
    return _PROSE_WORD.search(_COMMAND.sub(" ", text)) is not None


def _choice(text: str) -> str | None:
    """The letter of a multiple-choice answer ("B", "(B)", "The answer is (B) 27 sec"), or None."""
    s = normalize_answer(text).upper()
    if (m := _CHOICE.match(s)) is not None:
        return m.group(1)
    m = _CHOICE_IN.search(answer_span(text))
    return m.group(1).upper() if m else None


def _parse(text: str, wrap: bool) -> list:
    """math-verify's parse; a bare expression (no delimiters, no prose) is read as LaTeX between `$`."""
    from math_verify import parse

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    text = text.replace("\\$", "")  # an escaped dollar is a currency sign, not a LaTeX delimiter
    if wrap and not _DELIMITED.search(text) and not _prose(text):
        text = f"${text}$"
    return parse(text, parsing_timeout=timeout)


def _equivalent(gold: list, pred: list) -> bool:
    from math_verify import verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return bool(verify(gold, pred, timeout_seconds=timeout))


@dataclass(frozen=True)
class Verdict:
    correct: bool | None  # None: unknown
    gold: str | None  # the gold answer as compared (parsed form when math)
    predicted: str | None  # the trace's answer as compared
    method: str | None  # "math" | "exact" | "choice"; None when unknown
    reason: str | None = None  # why unknown: "no_gold", "no_answer", "unparseable"


def judge(gold: str | None, answer: str | None, method: Method = "auto") -> Verdict:
    """Whether `answer` (a trace's final answer text) states the `gold` answer; see the module doc."""
    if method not in METHODS:
        raise ValueError(f"answer method: got {method!r}, allowed: {', '.join(METHODS)}")
    gold = answer_span(gold) if gold is not None else ""
    answer = (answer or "").strip()
    if not gold:
        return Verdict(None, None, answer_span(answer) or None, None, "no_gold")
    if not answer:
        return Verdict(None, gold, None, None, "no_answer")
    if _CHOICE.match(normalize_answer(gold).upper()) and method != "math":
        letter = _choice(answer)
        return Verdict(letter == _choice(gold), _choice(gold), letter, "choice")
    exact = normalize_answer(gold) == normalize_answer(answer)
    if method != "exact":
        g, p = _parse(gold, wrap=True), _parse(answer_span(answer), wrap=True)
        if g and p:
            return Verdict(_equivalent(g, p) or exact, str(g[-1]), str(p[-1]), "math")
        if method == "math":
            return Verdict(None, str(g[-1]) if g else gold, str(p[-1]) if p else None, None, "unparseable")
    return Verdict(exact, normalize_answer(gold), normalize_answer(answer), "exact")
