"""The `reasoning_quality` stage: checks that a reasoning trace is complete, clean and worth training on.

For chat samples (`metadata["kind"] == "chat"`); plain documents pass. Drop reasons, in the order checked:
`unbalanced_think` (a `<think>`/`</think>` tag left inside a turn's content or reasoning: the adapter could not split
the raw text), `no_answer` (empty final answer), `no_reasoning` / `trivial_reasoning` (missing / too few words),
`repetition_loop` (degenerate repetition in trace or answer: many repeated n-grams, or very compressible),
`truncated` (a long answer stops mid-sentence), `language_mismatch` (problem and trace confidently in different
languages), `unparseable_answer` (optional: the final answer has no expression `math_verify.parse` can read).

Defaults were checked on real traces (DeepSeek-R1 style samples, Marco-o1 CoT): their 10-gram duplicate fraction is
at most 0.17 and their zlib ratio at least 0.25, against 0.35 and 0.1 here; short answers ("yes", "(D) 27 sec") need
no terminal punctuation (`truncation_min_words`).
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Iterable, Sequence

from datatrove.utils._import_utils import check_required_dependencies
from pydantic import Field, field_validator

from reasonpipe.filters.base import DomainFilter
from reasonpipe.filters.language import (
    COMPACT_LANGUAGES,
    Detector,
    LinguaDetector,
    detect_cached,
    detection_text,
    letter_count,
    lingua_language,
)
from reasonpipe.filters.stage import BuildContext, Chain, Stage, StageOptions, register
from reasonpipe.sample import final_answer_text, is_chat, problem_text, reasoning_text, turns

# A word: one CJK/kana/hangul character, or a run of other word characters.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_THINK_TAG = re.compile(r"</?think>", re.IGNORECASE)

# How a complete answer may end: sentence punctuation (Latin, CJK), closing brackets/quotes, a closing code fence,
# LaTeX display/inline math closers, a number, emphasis markers.
_CLEAN_END = re.compile(r"""(?:[.!?;。！？…)\]}>"'”’»`*$|]|\d|\\\]|\\\)|```|~~~)\s*$""")


def words(text: str) -> list[str]:
    """Words of `text`; every CJK character counts as one (scripts without spaces)."""
    return _WORD.findall(text)


def duplicate_ngram_fraction(tokens: Sequence[str], n: int) -> float:
    """Fraction of `tokens` covered by n-grams that already occurred earlier (Gopher's duplicate n-gram measure).

    A degenerate loop ("Wait, let me check again. Wait, let me check again. ...") scores near 1; prose near 0.
    """
    if len(tokens) < 2 * n:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeated, i = 0, 0
    while i <= len(tokens) - n:
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            repeated += n
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated / len(tokens)


def compression_ratio(text: str) -> float:
    """zlib-compressed size / raw size of the UTF-8 text (prose ~0.35-0.5; a repetition loop far lower)."""
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 6)) / len(raw) if raw else 1.0


def ends_cleanly(text: str) -> bool:
    """Whether `text` ends like a finished answer (punctuation, closing bracket/fence/math, number...)."""
    return bool(_CLEAN_END.search(text.rstrip()))


def has_stray_think_tag(texts: Iterable[str]) -> bool:
    return any(_THINK_TAG.search(t) for t in texts if t)


def is_repetition_loop(
    text: str, ngram: int, max_duplicate_fraction: float, min_compression_ratio: float, min_chars: int
) -> bool:
    """Degenerate repetition: too many repeated `ngram`-grams, or (for texts of `min_chars`+) too compressible."""
    if duplicate_ngram_fraction(words(text), ngram) > max_duplicate_fraction:
        return True
    return len(text) >= min_chars and compression_ratio(text) < min_compression_ratio


def answer_parses(answer: str) -> bool:
    """Whether math-verify extracts at least one expression from `answer` (imported on first use)."""
    from math_verify import parse

    # math-verify's timeout uses signal.alarm, which only works in the main thread (dask workers are threads)
    main = threading.current_thread() is threading.main_thread()
    return bool(parse(answer, parsing_timeout=5 if main else None))


class ReasoningQualityFilter(DomainFilter):
    """Drops chat samples whose trace or answer is missing, trivial, looping, truncated or inconsistent."""

    name = "🧠 Reasoning quality"

    def __init__(
        self,
        min_reasoning_words: int = 20,
        require_reasoning: bool = True,
        ngram: int = 10,
        max_duplicate_fraction: float = 0.35,
        min_compression_ratio: float = 0.1,
        compression_min_chars: int = 2000,
        truncation_min_words: int = 10,
        detector: Detector | None = None,
        language_min_letters: int = 60,
        language_min_confidence: float = 0.7,
        verify_math: bool = False,
        domains: Iterable[str] | None = None,
        exclusion_writer=None,
    ):
        super().__init__(domains, exclusion_writer)
        self.min_reasoning_words = min_reasoning_words
        self.require_reasoning = require_reasoning
        self.ngram = ngram
        self.max_duplicate_fraction = max_duplicate_fraction
        self.min_compression_ratio = min_compression_ratio
        self.compression_min_chars = compression_min_chars
        self.truncation_min_words = truncation_min_words
        self.detector = detector
        self.language_min_letters = language_min_letters
        self.language_min_confidence = language_min_confidence
        self.verify_math = verify_math
        if verify_math:
            check_required_dependencies("reasoning_quality verify_math", [("math_verify", "math-verify")])

    def keep(self, doc) -> bool | tuple[bool, str]:
        if not is_chat(doc):
            self.stat_update("not_chat")
            return True
        if has_stray_think_tag(t.get(k) for t in turns(doc) for k in ("content", "reasoning")):
            return False, "unbalanced_think"
        answer, reasoning = final_answer_text(doc).strip(), reasoning_text(doc).strip()
        if not answer:
            return False, "no_answer"
        if not reasoning:
            if self.require_reasoning:
                return False, "no_reasoning"
        elif len(words(reasoning)) < self.min_reasoning_words:
            return False, "trivial_reasoning"
        for text in (reasoning, answer):
            if is_repetition_loop(
                text, self.ngram, self.max_duplicate_fraction, self.min_compression_ratio, self.compression_min_chars
            ):
                return False, "repetition_loop"
        if len(words(answer)) >= self.truncation_min_words and not ends_cleanly(answer):
            return False, "truncated"
        if self.detector is not None and reasoning and self.languages_differ(doc, problem_text(doc), reasoning):
            return False, "language_mismatch"
        if self.verify_math and not answer_parses(answer):
            return False, "unparseable_answer"
        return True

    def languages_differ(self, doc, problem: str, reasoning: str) -> bool:
        """Whether problem and trace are confidently in different languages (False when either is too short).

        Detections are cached on the document (`detect_cached`): the `language` stage reuses them."""
        detected = []
        for text in (problem, reasoning):
            text = detection_text(text, 2000)
            if letter_count(text) < self.language_min_letters:
                return False
            result = detect_cached(doc, self.detector, text, self)
            if result is None or result[1] < self.language_min_confidence:
                return False
            detected.append(result[0])
        return detected[0] != detected[1]


class ReasoningOptions(StageOptions):
    min_reasoning_words: int = Field(20, ge=0, description="fewer words of reasoning: trivial_reasoning")
    require_reasoning: bool = Field(True, description="drop answers without any reasoning (no_reasoning)")
    ngram: int = Field(10, ge=2, description="n-gram size of the repetition measure")
    max_duplicate_fraction: float = Field(0.35, gt=0, le=1, description="repeated n-gram share above: repetition_loop")
    min_compression_ratio: float = Field(0.1, ge=0, lt=1, description="zlib ratio below: repetition_loop")
    compression_min_chars: int = Field(2000, ge=0, description="texts shorter than this skip the zlib check")
    truncation_min_words: int = Field(10, ge=0, description="answers this long must end cleanly (truncated)")
    check_language: bool = Field(True, description="drop traces not in the problem's language (language_mismatch)")
    language_min_letters: int = Field(60, ge=1, description="both sides need this many prose letters to compare")
    language_min_confidence: float = Field(0.7, ge=0, le=1, description="both detections need this confidence")
    detector_languages: list[str] = Field(list(COMPACT_LANGUAGES), min_length=2, description="lingua languages")
    verify_math: bool = Field(False, description="the final answer must parse with math-verify")

    @field_validator("detector_languages")
    @classmethod
    def _known_languages(cls, codes: list[str]) -> list[str]:
        for code in codes:
            lingua_language(code)
        return codes


@register
class ReasoningQualityStage(Stage):
    """Trace quality for chat samples: answer present, reasoning non-trivial, tags clean, no loops, not truncated."""

    name = "reasoning_quality"
    Options = ReasoningOptions

    def build(self, opts: ReasoningOptions, ctx: BuildContext, chain: Chain) -> None:
        params = opts.model_dump(exclude={"check_language", "detector_languages"})  # the filter's own arguments
        detector = LinguaDetector(opts.detector_languages) if opts.check_language else None
        chain.add(
            ReasoningQualityFilter(
                **params, detector=detector, domains=ctx.domains, exclusion_writer=ctx.exclusion_writer()
            )
        )

    def describe(self, opts: ReasoningOptions) -> str:
        extra = ", math-verify" if opts.verify_math else ""
        loops = f"{opts.ngram}-gram repeats <= {opts.max_duplicate_fraction}"
        return f"reasoning >= {opts.min_reasoning_words} words, {loops}{extra}"
