"""Manifest options of the test-time-compute builders: the `builders:` section.

```yaml
builders:
  rsa_aggregate: {k: 4, tau: 4096, per_problem: 2}
  markovian_chunks: {context: 8192, carry: 4096, head: 100}
```
Both run in the pack phase, on the tokenised cache: changing any of these options re-runs only trimming and packing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reasonpipe.trimming.tails import DEFAULT_ANSWER, DEFAULT_CANDIDATE, DEFAULT_MARKER, DEFAULT_PROMPT, PromptTemplate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RSAConfig(_Strict):
    """`builders.rsa_aggregate`: aggregation samples from problems with several traces (trimming/rsa.py)."""

    k: int = Field(4, ge=1, le=64, description="candidates per aggregation prompt")
    tau: int = Field(4096, ge=1, description="tail length of each candidate (tokens, or words with tail_unit: words)")
    tail_unit: Literal["tokens", "words"] = Field("tokens", description="what tau counts")
    per_problem: int = Field(1, ge=1, description="aggregation samples per problem at most")
    min_traces: int | None = Field(None, ge=2, description="traces a problem needs (default and minimum: k + 1)")
    include_answer_in_tail: bool = Field(False, description="show each candidate's final answer after its tail")
    require_correct_target: bool = Field(False, description="only traces verified correct are targets")
    require_incorrect_candidate: bool = Field(False, description="at least one candidate verified wrong")
    prompt_template: str = Field(DEFAULT_PROMPT, description="placeholders {problem}, {candidates}, {k}")
    candidate_template: str = Field(DEFAULT_CANDIDATE, description="placeholders {index}, {tail}")
    answer_template: str = Field(DEFAULT_ANSWER, description="placeholder {answer}")
    truncation_marker: str = Field(DEFAULT_MARKER, description="text in front of a tail that was cut")
    domains: list[str] | None = Field(None, description="traces of these domains only (None: all)")
    output_domain: str = Field("rsa_aggregate", min_length=1, description="domain of the built samples (mixture)")

    @model_validator(mode="after")
    def _valid(self) -> RSAConfig:
        if self.min_traces is not None and self.min_traces < self.k + 1:
            raise ValueError(f"min_traces ({self.min_traces}) must be at least k + 1 ({self.k + 1})")
        self.template()  # the templates' placeholders are checked here, with the key named
        return self

    def template(self) -> PromptTemplate:
        return PromptTemplate(
            self.prompt_template, self.candidate_template, self.answer_template, self.truncation_marker
        )

    @property
    def traces_needed(self) -> int:
        return self.min_traces or self.k + 1

    def describe(self) -> str:
        rules = [r for r, on in (("correct targets only", self.require_correct_target),
                                 ("a wrong candidate", self.require_incorrect_candidate)) if on]  # fmt: skip
        answer = ", answers shown" if self.include_answer_in_tail else ""
        return (
            f"k {self.k} candidates, tails of {self.tau} {self.tail_unit}{answer}, <= {self.per_problem} per problem "
            f"with >= {self.traces_needed} traces" + "".join(f", {r}" for r in rules)
        )


class MarkovianConfig(_Strict):
    """`builders.markovian_chunks`: chains of bounded-context chunks from long traces (trimming/markovian.py)."""

    context: int | None = Field(None, ge=8, description="tokens per chunk sample (default: trim.context)")
    carry: int | None = Field(None, ge=0, description="tokens of the previous chunk shown (default: context / 2)")
    head: int = Field(100, ge=0, description="first reasoning tokens shown in every chunk")
    domains: list[str] | None = Field(None, description="traces of these domains only (None: all)")
    output_domain: str = Field("markovian_chunks", min_length=1, description="domain of the built samples (mixture)")

    def describe(self, trim_context: int) -> str:
        context, carry, head = self.sizes(trim_context)
        return f"traces over {context} tokens -> chunks of <= {context} (carry {carry}, head {head})"

    def sizes(self, trim_context: int) -> tuple[int, int, int]:
        """(context, carry, head) with the defaults resolved against the manifest's trimming context."""
        context = self.context or trim_context
        return context, context // 2 if self.carry is None else self.carry, self.head


class BuildersConfig(_Strict):
    rsa_aggregate: RSAConfig | None = None
    markovian_chunks: MarkovianConfig | None = None

    def check(self, trim_context: int) -> None:
        """Raise ValueError when the Markovian sizes cannot work at this manifest's trimming context."""
        if self.markovian_chunks is None:
            return
        context, carry, head = self.markovian_chunks.sizes(trim_context)
        if context > trim_context:
            raise ValueError(
                f"builders.markovian_chunks.context ({context}) exceeds trim.context ({trim_context}): a chunk sample "
                "must fit the trimming budget untouched. Lower it or raise trim.context."
            )
        if carry + head >= context:
            raise ValueError(
                f"builders.markovian_chunks: carry ({carry}) + head ({head}) must be below context ({context}) so "
                "that each chunk has room for new reasoning"
            )

    @property
    def active(self) -> bool:
        return self.rsa_aggregate is not None or self.markovian_chunks is not None
