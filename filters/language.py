"""Offline language identification: the `language` stage, and the detectors the reasoning filter reuses.

Two backends, both local: lingua (`lingua-language-detector`, models ship in the wheel; the default) and a fastText
model file given by path (`fasttext-numpy2-wheel`, optional; e.g. lid.176.bin downloaded beforehand). Detection runs
on the prose of a text: code, LaTeX math and markup are stripped first (`prose`), and only its first `max_chars`
characters are read (`detection_text`).

Each distinct text is detected once per document: `detect_cached` keeps every result in `metadata["lang"]`, keyed by
a hash of the detector's signature and the exact text it read, so a later stage (or run) reuses it only for the same
text and the same detector. `reasoning_quality` detects a chat sample's problem and trace; the language stage judges
the longer of the two, so after that stage it detects nothing again.

lingua's cost grows with the text. The cheaper path that agrees with it is a probe: a text longer than 3 x
`probe_chars` is first detected on its first and last `probe_chars` characters, and when both say the same language
with confidence >= PROBE_CONFIDENCE, that is the result; otherwise the whole text is read. On the real corpora it gives
the whole-text language and verdict on every text, 2.6x faster on long traces; lingua's low-accuracy mode is at most
1.4x faster there and changes 0.1-0.6% of the results, so it is only an option (BENCHMARKS.md, bench/language_id.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import xxhash
from pydantic import Field, field_validator, model_validator

from reasonpipe.filters.base import DomainFilter
from reasonpipe.filters.stage import BuildContext, Chain, ExistingPath, Stage, StageOptions, register
from reasonpipe.sample import final_answer_text, is_chat, problem_text, reasoning_text

# The detector's default languages when none are given: loading all 75 lingua languages is slow and rarely useful.
COMPACT_LANGUAGES = ("en", "zh", "es", "fr", "de", "ru", "ja", "ko", "pt", "it")
PROBE_CHARS = 200  # head and tail probes of long texts (0: always read the whole text)
PROBE_CONFIDENCE = 0.99

_MATH_ENVS = (
    r"\\begin\{(equation|align|gather|multline|eqnarray|displaymath|math|array|[pbvBV]?matrix|xymatrix|tikzcd|cases)"
    r"(\*?)\}.*?\\end\{\1\2\}"
)
_NON_PROSE = [
    re.compile(r"```.*?(?:```|$)", re.DOTALL),  # fenced code (an unterminated fence runs to the end)
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)", re.DOTALL),  # display math, \( inline \)
    re.compile(_MATH_ENVS, re.DOTALL),  # display math environments
    re.compile(r"\\(?:begin|end|label|ref|eqref|cite|index\w*|url|input|include)\*?\{[^}]*\}"),  # markup + argument
    re.compile(r"\$[^$]{0,500}\$"),  # $inline math$
    re.compile(r"\\[a-zA-Z]+\*?"),  # remaining LaTeX commands (their {arguments} stay: often prose)
    re.compile(r"https?://\S+|www\.\S+"),
    re.compile(r"[^\w\s.,;:!?'\"’“”。，、？！]|[\d_]"),  # digits, operators, brackets, symbols
]
_SPACES = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]")
_ASCII_NON_LETTERS = bytes(c for c in range(128) if not chr(c).isalpha())  # an ASCII letter is [A-Za-z]


def prose(text: str) -> str:
    """The natural-language part of `text`: code, math, LaTeX commands, URLs, digits and symbols removed."""
    for pattern in _NON_PROSE:
        text = pattern.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


# `reasoning_quality` and `language` read the same parts of a document one step after the other (a document goes
# through every filter before the next one comes): a few recent results of these pure functions cover both.
@functools.lru_cache(maxsize=16)
def letter_count(text: str) -> int:
    if text.isascii():  # 7x faster than the pattern, the same count
        return len(text.encode("ascii").translate(None, _ASCII_NON_LETTERS))
    return len(_LETTER.findall(text))


@functools.lru_cache(maxsize=16)
def detection_text(text: str, max_chars: int) -> str:
    """What a detector reads of `text`: the first `max_chars` characters of the prose of its first 4 x max_chars."""
    return prose(text[: max_chars * 4])[:max_chars]


class Detector(Protocol):
    signature: str  # names the detector and its settings: same signature and same text give the same result

    def detect(self, text: str) -> tuple[str, float] | None:
        """The most likely language (ISO 639-1 code, lowercase) of `text` and its confidence in [0, 1]."""
        ...


def detect_cached(doc, detector: Detector, text: str, step=None) -> tuple[str, float] | None:
    """`detector.detect(text)`, once per document: results live in `doc.metadata["lang"]` as
    `{hash of (signature, text): [code, score] | None}`. `step` counts `lang_detected` / `lang_reused`."""
    cache = doc.metadata.setdefault("lang", {})
    key = xxhash.xxh3_64_hexdigest(f"{detector.signature}\0{text}")
    if key in cache:
        if step is not None:
            step.stat_update("lang_reused")
        hit = cache[key]
        return None if hit is None else (hit[0], hit[1])
    result = detector.detect(text)
    cache[key] = None if result is None else [result[0], result[1]]
    if step is not None:
        step.stat_update("lang_detected")
    return result


def lingua_language(code: str):
    """The lingua `Language` of an ISO 639-1 code; ValueError naming the code when lingua has none."""
    from lingua import IsoCode639_1, Language

    try:
        return Language.from_iso_code_639_1(IsoCode639_1.from_str(code.lower()))
    except ValueError:
        raise ValueError(f"unknown language code {code!r} (lingua knows ISO 639-1 codes such as en, zh, fr)") from None


@functools.cache
def _lingua_detector(languages: tuple[str, ...], low_accuracy: bool):
    """One lingua detector per process and configuration: its models load on the first text (~2 s for 10 languages
    in high-accuracy mode), so the steps of a run and the tasks a worker process runs one after another share them.
    Bounded by the configurations a pipeline names (one or two)."""
    from lingua import LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_languages(*(lingua_language(c) for c in languages))
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


class LinguaDetector:
    """lingua over a subset of languages, built on first use (so the step pickles without it); long texts are probed
    at both ends first (see the module docstring)."""

    def __init__(
        self, languages: Sequence[str] = COMPACT_LANGUAGES, low_accuracy: bool = False, probe_chars: int = PROBE_CHARS
    ):
        if len(set(languages)) < 2:
            raise ValueError(f"lingua needs at least 2 languages to choose from, got {list(languages)}")
        for code in languages:
            lingua_language(code)
        self.languages = tuple(sorted(set(languages)))
        self.low_accuracy = low_accuracy
        self.probe_chars = probe_chars
        mode = "low" if low_accuracy else "high"
        self.signature = f"lingua/{mode}/probe{probe_chars}@{PROBE_CONFIDENCE}/{','.join(self.languages)}"
        self._detector = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_detector": None}

    @property
    def detector(self):
        if self._detector is None:
            self._detector = _lingua_detector(self.languages, self.low_accuracy)
        return self._detector

    def detect_whole(self, text: str) -> tuple[str, float] | None:
        values = self.detector.compute_language_confidence_values(text)
        if not values or values[0].value == 0:
            return None
        return values[0].language.iso_code_639_1.name.lower(), float(values[0].value)

    def detect(self, text: str) -> tuple[str, float] | None:
        n = self.probe_chars
        if n and len(text) > 3 * n:
            head, tail = self.detect_whole(text[:n]), self.detect_whole(text[-n:])
            if head and tail and head[0] == tail[0] and min(head[1], tail[1]) >= PROBE_CONFIDENCE:
                return head[0], min(head[1], tail[1])
        return self.detect_whole(text)


class FastTextDetector:
    """A local fastText language-id model (labels `__label__<code>`, e.g. lid.176.bin), loaded on first use."""

    def __init__(self, model_path: str | Path):
        from datatrove.utils._import_utils import check_required_dependencies

        check_required_dependencies("fasttext language id", [("fasttext", "fasttext-numpy2-wheel")])
        self.model_path = str(model_path)
        with open(self.model_path, "rb") as f:  # results are cached under the model's content, not its path
            self.signature = f"fasttext/{xxhash.xxh3_64_hexdigest(f.read())}"
        self._model = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}

    def detect(self, text: str) -> tuple[str, float] | None:
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(self.model_path)
        labels, scores = self._model.predict(text.replace("\n", " "), k=1)
        if not labels:
            return None
        return labels[0].removeprefix("__label__"), min(float(scores[0]), 1.0)


def language_verdict(
    detected: tuple[str, float] | None, keep: Sequence[str] | None, min_confidence: float
) -> tuple[bool, str | None]:
    """Keep or drop a detection: `(True, None)`, or `(False, "language_<code>")` when another language is most likely,
    `(False, "wrong_language")` when a kept language is most likely but below `min_confidence`."""
    if keep is None or detected is None:
        return True, None
    code, score = detected
    if code not in keep:
        return False, f"language_{code}"
    if score < min_confidence:
        return False, "wrong_language"
    return True, None


class LanguageOptions(StageOptions):
    languages: list[str] | None = Field(["en"], description="languages to keep (ISO 639-1); null = label only")
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="minimum confidence of the kept language")
    backend: Literal["lingua", "fasttext"] = "lingua"
    detector_languages: list[str] | None = Field(
        None, description="lingua: languages to choose among (default: en zh es fr de ru ja ko pt it + `languages`)"
    )
    low_accuracy: bool = Field(False, description="lingua's low accuracy mode (trigrams only; ~0.5% results differ)")
    probe_chars: int = Field(
        PROBE_CHARS, ge=0, description="lingua: probe long texts at both ends with this many characters first (0: off)"
    )
    model_path: ExistingPath | None = Field(None, description="fasttext: the local model file (required)")
    min_letters: int = Field(20, ge=0, description="documents with fewer prose letters pass, undetermined")
    max_chars: int = Field(2000, ge=100, description="characters of prose the detector reads")

    @field_validator("languages", "detector_languages")
    @classmethod
    def _lowercase(cls, codes: list[str] | None) -> list[str] | None:
        return None if codes is None else [code.lower() for code in codes]

    @model_validator(mode="after")
    def _check_backend(self) -> LanguageOptions:
        if self.backend == "fasttext":
            if self.model_path is None:
                raise ValueError("backend 'fasttext' needs model_path (a local fastText language-id model file)")
            if self.detector_languages is not None or self.low_accuracy or self.probe_chars != PROBE_CHARS:
                raise ValueError("detector_languages, low_accuracy and probe_chars apply to backend 'lingua' only")
        else:
            if self.model_path is not None:
                raise ValueError("model_path applies to backend 'fasttext' only (lingua's models ship with it)")
            for code in [*(self.languages or []), *(self.detector_languages or [])]:
                lingua_language(code)
        return self

    def detector(self) -> Detector:
        if self.backend == "fasttext":
            return FastTextDetector(self.model_path)
        codes = self.detector_languages if self.detector_languages is not None else COMPACT_LANGUAGES
        return LinguaDetector([*codes, *(self.languages or [])], self.low_accuracy, self.probe_chars)


class LanguageFilter(DomainFilter):
    """Labels `metadata["language"]`/`["language_score"]` and drops documents not in the kept languages.

    A plain document is judged by its text; a chat sample by the longer (in prose letters) of its problem and its
    reasoning (its final answer when it has none): the texts `reasoning_quality` already detected."""

    name = "🌍 Language (offline)"

    def __init__(
        self,
        detector: Detector,
        languages: Sequence[str] | None = ("en",),
        min_confidence: float = 0.5,
        min_letters: int = 20,
        max_chars: int = 2000,
        domains: Sequence[str] | None = None,
        exclusion_writer=None,
    ):
        super().__init__(domains, exclusion_writer)
        self.detector = detector
        self.languages = None if languages is None else frozenset(c.lower() for c in languages)
        self.min_confidence = min_confidence
        self.min_letters = min_letters
        self.max_chars = max_chars

    def keep(self, doc) -> bool | tuple[bool, str]:
        parts = [problem_text(doc), reasoning_text(doc) or final_answer_text(doc)] if is_chat(doc) else [doc.text]
        texts = [detection_text(part, self.max_chars) for part in parts]
        letters = [letter_count(text) for text in texts]
        text = texts[letters.index(max(letters))]
        detected = detect_cached(doc, self.detector, text, self) if max(letters) >= self.min_letters else None
        if detected is None:
            self.stat_update("undetermined")
            return True
        doc.metadata["language"], doc.metadata["language_score"] = detected
        ok, reason = language_verdict(detected, self.languages, self.min_confidence)
        return True if ok else (False, reason)


@register
class LanguageStage(Stage):
    """Offline language id (lingua, or a local fastText model): keep `languages`, label every judged document."""

    name = "language"
    Options = LanguageOptions

    def build(self, opts: LanguageOptions, ctx: BuildContext, chain: Chain) -> None:
        chain.add(
            LanguageFilter(
                opts.detector(),
                languages=opts.languages,
                min_confidence=opts.min_confidence,
                min_letters=opts.min_letters,
                max_chars=opts.max_chars,
                domains=ctx.domains,
                exclusion_writer=ctx.exclusion_writer(),
            )
        )

    def describe(self, opts: LanguageOptions) -> str:
        keep = "label only" if opts.languages is None else f"keep {','.join(opts.languages)}"
        return f"{opts.backend}: {keep}, min confidence {opts.min_confidence}"
