"""datatrove's quality filters as stages: `gopher_quality`, `gopher_repetition`, `c4_quality`, `fineweb_quality`.

Options mirror the datatrove constructors (same names and defaults). All four run offline: datatrove splits English
words with spaCy (`SpaCyTokenizer("en")`, an undeclared dependency) and C4 can split sentences with it too; here
every filter gets `OfflineWordTokenizer` instead (datatrove's own regex sentence splitter plus a regex word splitter),
so nothing is imported from spaCy/NLTK and nothing is downloaded. The stop-word and punctuation rules are English.
C4 rewrites `doc.text` (drops lines without terminal punctuation...); for chat samples only its verdict is applied and
the text is left as rendered from the turns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
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
    filter_class = GopherRepetitionFilter


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
