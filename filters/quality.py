"""datatrove's quality filters as stages: `gopher_quality`, `gopher_repetition`, `c4_quality`, `fineweb_quality`.

Options mirror the datatrove constructors (same names and defaults). All four run offline: datatrove splits English
words with spaCy (`SpaCyTokenizer("en")`, an undeclared dependency) and C4 can split sentences with it too; here
every filter gets `OfflineWordTokenizer` instead (datatrove's own regex sentence splitter plus a regex word splitter),
so nothing is imported from spaCy/NLTK and nothing is downloaded. The stop-word and punctuation rules are English.
C4 rewrites `doc.text` (drops lines without terminal punctuation...); for chat samples only its verdict is applied and
the text is left as rendered from the turns.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import ClassVar

from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
from datatrove.utils.text import split_into_words
from datatrove.utils.word_tokenizers import WhitespaceTokenizer
from pydantic import Field

from reasonpipe.filters.base import WrappedFilter
from reasonpipe.filters.stage import BuildContext, Chain, Stage, StageOptions, register
from reasonpipe.sample import is_chat


class OfflineWordTokenizer(WhitespaceTokenizer):
    """datatrove's `WhitespaceTokenizer` with a regex word splitter in place of its spaCy one.

    Words are runs of word characters (keeping inner apostrophes, hyphens and decimal points: "don't", "3.14");
    runs of punctuation are tokens of their own, as spaCy makes them (Gopher counts them as symbol words).
    """

    _WORD = re.compile(r"\w+(?:['’.\-]\w+)*|[^\w\s]+")

    def word_tokenize(self, text: str) -> list[str]:
        return self._WORD.findall(text)


def n_grams(words: list[str], n: int, sep: str) -> list[str]:
    """Every run of `n` consecutive words, joined by `sep` (datatrove's `get_n_grams` with `sep=" "`)."""
    return list(map(sep.join, zip(*(words[k:] for k in range(n)))))


def n_grams_by_size(words: list[str], sizes: Iterable[int], sep: str) -> Iterator[tuple[int, list[str]]]:
    """`(n, n_grams(words, n, sep))` for every n of `sizes`, smallest first, each larger size extending the grams of
    the one before by a word at a time (one string concatenation per gram instead of a join of n words); only the
    current size's grams are held."""
    tails = [sep + w for w in words] if sep else words
    size, grams = 0, None
    for n in sorted(set(sizes)):
        if grams is None:
            size, grams = n, n_grams(words, n, sep)
        for k in range(size, n):
            grams = list(map(operator.add, grams, tails[k:]))
        size = n
        yield n, grams


def top_duplicate_chars(grams: list[str]) -> int:
    """datatrove's `find_top_duplicate`: characters of the most frequent gram times its count, ties going to the
    first to appear (Counter keeps first-appearance order and `most_common` takes the first maximum)."""
    gram, count = Counter(grams).most_common(1)[0]
    return len(gram) * count


def all_duplicate_chars(grams: list[str], n: int) -> int:
    """datatrove's `find_all_duplicate` on the n-grams it reads (words joined with no separator): left to right, a
    gram seen before counts its characters and skips the n words it covers. The scan reads every gram up to the first
    repeat, so a text with no repeated gram (most of them) is settled by one set of all its grams."""
    if len(set(grams)) == len(grams):
        return 0
    seen, repeated, i = set(), 0, 0
    while i < len(grams):
        if grams[i] in seen:
            repeated += len(grams[i])
            i += n
        else:
            seen.add(grams[i])
            i += 1
    return repeated


class GopherRepetition(GopherRepetitionFilter):
    """datatrove's `GopherRepetitionFilter` with the same checks in the same order and the same verdicts, its n-gram
    counting done by C-level builtins (`n_grams`, `top_duplicate_chars`, `all_duplicate_chars`): 1.6-2x faster on
    real texts (bench/gopher_repetition.py; tests/test_filters.py compares the two on real and generated texts)."""

    def filter(self, doc) -> bool | tuple[bool, str]:
        text = doc.text
        if not text:
            return False, "empty"
        for parts, frac, char_frac, label in (
            (self.paragraph_exp.split(text.strip()), self.dup_para_frac, self.dup_para_char_frac, "para"),
            (self._line_splitter.split(text), self.dup_line_frac, self.dup_line_char_frac, "line"),
        ):
            duplicates, chars = find_duplicates(parts)
            if frac and duplicates / len(parts) > frac:
                return False, f"dup_{label}_frac"
            if char_frac and chars / len(text) > char_frac:
                return False, f"dup_{label}_char_frac"
        words = split_into_words(text, self.language)
        # every size's figure first (smallest size first, one size's grams in memory), then the checks in their order
        sizes = [n for n, _ in self.top_n_grams]
        top = {n: grams and top_duplicate_chars(grams) for n, grams in n_grams_by_size(words, sizes, " ")}
        for n, n_frac in self.top_n_grams:
            if top[n] and top[n] / len(text) > n_frac:  # a text without n-grams is not checked, as in datatrove
                return False, f"top_{n}_gram"
        sizes = [n for n, _ in self.dup_n_grams]
        dup = {n: all_duplicate_chars(grams, n) for n, grams in n_grams_by_size(words, sizes, "")}
        for n, n_frac in self.dup_n_grams:
            if dup[n] / len(text) > n_frac:
                return False, f"duplicated_{n}_n_grams"
        return True


class QualityFilter(WrappedFilter):
    """A wrapped datatrove quality filter: empty documents are dropped (`empty`) before it divides by their size."""

    def keep(self, doc) -> bool | tuple[bool, str]:
        if not doc.text.strip():
            return False, "empty"
        return super().keep(doc)


class TextPreservingFilter(QualityFilter):
    """For filters that rewrite `doc.text` (C4): chat samples keep their text, rendered from their turns."""

    def keep(self, doc) -> bool | tuple[bool, str]:
        text = doc.text
        result = super().keep(doc)
        if is_chat(doc):
            doc.text = text
        return result


class GopherQualityOptions(StageOptions):
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: int | None = 3
    max_avg_word_length: int | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = Field(0.8, description="min share of words with a letter (sic)")
    min_stop_words: int | None = 2
    stop_words: list[str] | None = Field(None, description="default: the, be, to, of, and, that, have, with")


class GopherRepetitionOptions(StageOptions):
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: list[tuple[int, float]] = [(2, 0.2), (3, 0.18), (4, 0.16)]
    dup_n_grams: list[tuple[int, float]] = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]


class C4QualityOptions(StageOptions):
    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


class FineWebQualityOptions(StageOptions):
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    stop_chars: list[str] | None = None
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


class DatatroveQualityStage(Stage):
    """A datatrove quality filter built from options named like its constructor arguments."""

    filter_class: ClassVar[type[BaseFilter]]
    wrapper: ClassVar[type[QualityFilter]] = QualityFilter

    def make_filter(
        self, opts: StageOptions, domains: Iterable[str] | None = None, exclusion_writer=None
    ) -> QualityFilter:
        kwargs = opts.model_dump()
        for key, value in kwargs.items():  # datatrove wants tuples where the options hold lists
            if isinstance(value, list) and key != "stop_words":
                kwargs[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        inner = self.filter_class(**kwargs, language=OfflineWordTokenizer())
        return self.wrapper(inner, domains=domains, exclusion_writer=exclusion_writer)

    def build(self, opts: StageOptions, ctx: BuildContext, chain: Chain) -> None:
        chain.add(self.make_filter(opts, ctx.domains, ctx.exclusion_writer()))


@register
class GopherQualityStage(DatatroveQualityStage):
    """Gopher quality heuristics (word counts and lengths, symbols, bullets, stop words)."""

    name = "gopher_quality"
    Options = GopherQualityOptions
    filter_class = GopherQualityFilter


@register
class GopherRepetitionStage(DatatroveQualityStage):
    """Gopher repetition heuristics (duplicate lines/paragraphs, top and duplicated n-grams)."""

    name = "gopher_repetition"
    Options = GopherRepetitionOptions
    filter_class = GopherRepetition


@register
class C4QualityStage(DatatroveQualityStage):
    """C4 rules (drops lines without terminal punctuation, documents with too few sentences, curly brackets...)."""

    name = "c4_quality"
    Options = C4QualityOptions
    filter_class = C4QualityFilter
    wrapper = TextPreservingFilter


@register
class FineWebQualityStage(DatatroveQualityStage):
    """FineWeb rules (line punctuation ratio, short lines, duplicated lines, list-like documents)."""

    name = "fineweb_quality"
    Options = FineWebQualityOptions
    filter_class = FineWebQualityFilter
