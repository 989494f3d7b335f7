"""The `math_density` stage: keep documents dense in mathematics.

The score counts math signals per whitespace word: LaTeX commands (`\\frac`, `\\mathcal`), math spans (`$..$`,
`$$..$$`, `\\(..\\)`, `\\[..\\]`), arithmetic between numbers (`48/2 = 24`, `3 + 4`) and Unicode math symbols
(`≤ ∑ ∈`). URLs and code spans are removed first (their slashes and escapes are not math). LaTeX math prose scores
~0.3 (median), English prose ~0. The default threshold 0.02 was chosen on real data (tests/test_filters.py): 7,324
LaTeX paragraphs (HoTT book, Stacks project) vs 6,000 PEP paragraphs give precision 0.995, recall 0.990 (F1 is flat,
0.990-0.994, between 0.01 and 0.03); GSM8K problems+solutions (plain-text arithmetic) are kept at 0.98.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import Field

from reasonpipe.filters.base import DomainFilter
from reasonpipe.filters.stage import BuildContext, Chain, Stage, StageOptions, register

DEFAULT_THRESHOLD = 0.02

_NOT_MATH = re.compile(r"https?://\S+|www\.\S+|\S+@\S+\.\w+|```.*?(?:```|$)|`[^`\n]*`", re.DOTALL)
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+")
_MATH_SPAN = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$|\\\[.+?\\\]|\\\(.+?\\\)", re.DOTALL)
# a number, an operator (a minus needs spaces around it: "2023-06-06" is a date), then a number or "("
_ARITHMETIC = re.compile(r"\d[ \t]*(?:[+*/×÷^=<>≤≥]|[ \t]-[ \t])[ \t]*[\d(]")
_MATH_SYMBOL = re.compile(r"[≤≥±×÷∑∏∫√∞≈≠≡∈∉∀∃⊂⊆⊃⊇∪∩∧∨¬∂∇∘⊗⊕→↦⇒⇔]")


def math_signals(text: str) -> dict[str, int]:
    """Counts of each math signal in `text` (after removing URLs, e-mail addresses and code)."""
    text = _NOT_MATH.sub(" ", text)
    return {
        "latex_commands": len(_LATEX_COMMAND.findall(text)),
        "math_spans": len(_MATH_SPAN.findall(text)),
        "arithmetic": len(_ARITHMETIC.findall(text)),
        "math_symbols": len(_MATH_SYMBOL.findall(text)),
        "words": len(text.split()),
    }


def math_density(text: str) -> float:
    """Math signals per word (0 for empty text)."""
    signals = math_signals(text)
    words = signals.pop("words")
    return sum(signals.values()) / words if words else 0.0


class MathDensityFilter(DomainFilter):
    """Drops documents whose math density is below `threshold` (`below_math_density`); records the score."""

    name = "∑ Math density"

    def __init__(
        self, threshold: float = DEFAULT_THRESHOLD, domains: Iterable[str] | None = None, exclusion_writer=None
    ):
        super().__init__(domains, exclusion_writer)
        self.threshold = threshold

    def keep(self, doc) -> bool | tuple[bool, str]:
        score = math_density(doc.text)
        doc.metadata["math_density"] = round(score, 4)
        return True if score >= self.threshold else (False, "below_math_density")


class MathDensityOptions(StageOptions):
    threshold: float = Field(DEFAULT_THRESHOLD, ge=0, description="minimum math signals per word")


@register
class MathDensityStage(Stage):
    """Keep math-dense documents (LaTeX, math spans, arithmetic, math symbols per word)."""

    name = "math_density"
    Options = MathDensityOptions

    def build(self, opts: MathDensityOptions, ctx: BuildContext, chain: Chain) -> None:
        chain.add(MathDensityFilter(opts.threshold, domains=ctx.domains, exclusion_writer=ctx.exclusion_writer()))

    def describe(self, opts: MathDensityOptions) -> str:
        return f"math signals per word >= {opts.threshold}"
