"""Text normalisation and tokenisation for dedup and decontamination that keep distinct math and code distinct.

datatrove's MinHash normaliser maps every digit to 0 and strips operators, so "3+4=7" and "5*6=30" shingle alike.
Here digits always survive and the operators + - * / = < > ^ % & | ~ \\ are tokens of their own.

Token rule (shared by MinHash shingles and decontamination n-grams): after `prepare`, a token is a maximal run of word
characters (ASCII letters, digits, `_`, or any non-ASCII character that is not punctuation or a space) or one operator
character; everything else (spaces, prose punctuation) only separates tokens. `tokens` is the readable reference;
`filters.minhash_core.token_hashes` implements the same rule on UTF-8 bytes with numpy.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import Literal

from reasonpipe.filters.stage import StageOptions

OPERATORS = "+-*/=<>^%&|~\\"
_TOKEN = re.compile(r"[0-9A-Za-z_\x80-\U0010ffff]+|[" + re.escape(OPERATORS) + "]")
# Prose punctuation removed by `strip_punctuation` (never digits, letters or operators).
_PROSE_PUNCT = str.maketrans({c: " " for c in "!\"#$'(),.:;?@[]`{}"})


class Normalization(StageOptions):
    """How text is normalised before hashing. Digits and operators are always kept.

    Attributes:
        unicode: Unicode normal form applied first ("NFKC" folds full-width, ligatures, compatibility forms).
        lowercase: fold case.
        collapse_whitespace: turn every run of whitespace into one space and strip the ends (exact dedup only;
            token-based stages ignore whitespace anyway).
        strip_punctuation: replace prose punctuation `!"#$'(),.:;?@[]`{}` by spaces (exact dedup only; token-based
            stages treat it as a separator anyway).
    """

    unicode: Literal["NFKC", "NFC", "none"] = "NFKC"
    lowercase: bool = True
    collapse_whitespace: bool = True
    strip_punctuation: bool = False


@cache
def _unicode_separators() -> dict[int, str]:
    """Non-ASCII punctuation and spaces (categories P* and Z*) of the common planes, mapped to a space."""
    ranges = [(0x80, 0x3100), (0xFE10, 0xFF70)]
    return {cp: " " for lo, hi in ranges for cp in range(lo, hi) if unicodedata.category(chr(cp))[0] in "PZ"}


def normalize(text: str, norm: Normalization) -> str:
    """Normalise `text` for exact comparison (see `Normalization`)."""
    if norm.unicode != "none" and not text.isascii():
        text = unicodedata.normalize(norm.unicode, text)
    if norm.lowercase:
        text = text.lower()
    if norm.strip_punctuation:
        text = text.translate(_PROSE_PUNCT)
        if not text.isascii():
            text = text.translate(_unicode_separators())
    if norm.collapse_whitespace:  # str.split and the regex \s agree on whitespace (the same 29 characters)
        text = " ".join(text.split())
    return text


def prepare(text: str, norm: Normalization) -> str:
    """Unicode-normalise and case-fold `text`, and turn non-ASCII punctuation and spaces into ASCII spaces.

    The result tokenises by the byte-level rule of the module docstring.
    """
    if norm.unicode != "none" and not text.isascii():
        text = unicodedata.normalize(norm.unicode, text)
    if norm.lowercase:
        text = text.lower()
    if not text.isascii():
        text = text.translate(_unicode_separators())
    return text


# What makes two math problems different even when their wording is the same: numbers, LaTeX commands (\\tan, \\pi,
# \\frac, ...) and the names of common functions written without a backslash. Three patterns, each run over the
# text: one alternation tried at every position was 1.2-1.3x slower. A function name right after a backslash is a
# command's, hence the backslash in its lookbehind; the lookahead only lets through positions where a name can start.
# IGNORECASE: [A-Za-z] then also takes the four non-ASCII letters that fold to ASCII ones (İ ı ſ K); on an ASCII text
# lowercased first, the plain patterns find the same.
_FUNCTIONS = "arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|cot|sec|csc|log|ln|exp|sqrt|pi"
_COMMAND = re.compile(r"\\[A-Za-z]+", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_FUNCTION = re.compile(rf"(?=[acelpst])(?<![A-Za-z\\])(?:{_FUNCTIONS})(?![A-Za-z])", re.IGNORECASE)
_FUNCTION_LOWER = re.compile(rf"(?=[acelpst])(?<![a-z\\])(?:{_FUNCTIONS})(?![a-z])")


def math_marks(text: str) -> list[str]:
    """The numbers, LaTeX commands and function names of `text`, a multiset: the commands, then the numbers, then
    the function names, each in text order ("x^2+bx+48 = \\sqrt{3}" -> ["\\sqrt", "2", "48", "3"]).

    NFKC-normalised first (full-width digits count); LaTeX commands keep their case (\\Gamma != \\gamma), function
    names do not.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    marks = _COMMAND.findall(text) + _NUMBER.findall(text)
    if text.isascii():
        return marks + _FUNCTION_LOWER.findall(text.lower())
    return marks + [m.lower() for m in _FUNCTION.findall(text)]


def tokens(text: str, norm: Normalization) -> list[str]:
    """The tokens of `text` (reference implementation of the token rule)."""
    return _TOKEN.findall(prepare(text, norm))
