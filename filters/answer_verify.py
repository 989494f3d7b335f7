"""`answer_verify`: judge each trace's final answer against the gold answer of its problem (filters/answers.py).

For chat samples of the selected domains. The gold answer comes from the record itself (`fields: {gold: KEY}` on the
input: the adapter keeps it as `metadata["gold"]`) or, when the record has none, from a `reference` file keyed by
problem: the problem text of each reference record is normalised and hashed exactly like a sample's problem
(`problem_dedup.problem_hash`), so one gold file (e.g. GSM8K's train split) serves every trace of its problems. The
reference is read once per task; its memory is that of the reference file, not of the corpus.

Every judged sample gets `metadata["correct"]` (True, False, or None when unknown) and `metadata["verify"]`
({gold, predicted, method, reason}: the answers as compared). `drop_incorrect` drops wrong answers (reason
`incorrect_answer`), `drop_unknown` drops those that could not be judged (reason `unverified_answer`); by default
every sample is kept and labelled. Counters per source (`verify_correct_<source>`, `verify_incorrect_<source>`,
`verify_unknown_<source>`) give the correctness rates of index.json and `inspect`.
"""

from __future__ import annotations

from pathlib import Path

from datatrove.data import Document
from datatrove.utils._import_utils import check_required_dependencies
from pydantic import Field, model_validator

from reasonpipe.filters.answers import METHODS, Method, judge
from reasonpipe.filters.base import DomainFilter
from reasonpipe.filters.decontaminate import read_records
from reasonpipe.filters.problem_dedup import problem_hash
from reasonpipe.filters.stage import BuildContext, Chain, ExistingPath, Stage, StageOptions, register
from reasonpipe.sample import final_answer_text, is_chat, problem_text

VERDICTS = {True: "correct", False: "incorrect", None: "unknown"}


class ReferenceFile(StageOptions):
    """Gold answers keyed by problem: a jsonl / jsonl.gz / parquet file with a problem field and an answer field."""

    path: ExistingPath
    problem_field: str = "question"
    answer_field: str = "answer"

    @model_validator(mode="after")
    def _readable(self) -> ReferenceFile:
        if not str(self.path).endswith((".jsonl", ".jsonl.gz", ".parquet")):
            raise ValueError(f"reference: path {self.path} must end with .jsonl, .jsonl.gz or .parquet")
        try:
            records = read_records(self.path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"reference: cannot read {self.path}: {exc}") from None
        for field in (self.problem_field, self.answer_field):
            if records and not any(field in r for r in records[:1000]):
                found = sorted({k for r in records[:100] for k in r})
                raise ValueError(f"reference {self.path}: no record has the field {field!r} (fields: {found})")
        return self


class AnswerVerifyOptions(StageOptions):
    method: Method = Field("auto", description="auto (math-verify, else exact), math or exact")
    reference: ReferenceFile | None = Field(None, description="gold answers keyed by problem, for records without one")
    drop_incorrect: bool = Field(False, description="drop traces whose answer is wrong (incorrect_answer)")
    drop_unknown: bool = Field(False, description="drop traces that cannot be judged (unverified_answer)")


class AnswerVerifier(DomainFilter):
    """Labels chat samples with `metadata["correct"]` and `metadata["verify"]`; see the module doc."""

    name = "✅ answer verify"

    def __init__(
        self,
        method: Method = "auto",
        reference: ReferenceFile | None = None,
        drop_incorrect: bool = False,
        drop_unknown: bool = False,
        domains=None,
        exclusion_writer=None,
    ):
        super().__init__(domains, exclusion_writer)
        if method not in METHODS:
            raise ValueError(f"answer_verify method: got {method!r}, allowed: {', '.join(METHODS)}")
        if method != "exact":
            check_required_dependencies("answer_verify", [("math_verify", "math-verify")])
        self.method, self.reference = method, reference
        self.drop_incorrect, self.drop_unknown = drop_incorrect, drop_unknown
        self._gold: dict[str, str] | None = None  # problem hash -> gold answer, loaded in the task

    def gold_by_problem(self) -> dict[str, str]:
        if self._gold is None:
            self._gold = {}
            ref = self.reference
            for record in read_records(ref.path) if ref else []:
                problem, answer = record.get(ref.problem_field), record.get(ref.answer_field)
                if isinstance(problem, str) and answer is not None:
                    self._gold.setdefault(problem_hash(problem), str(answer))
        return self._gold

    def keep(self, doc: Document) -> bool | tuple[bool, str]:
        if not is_chat(doc):
            self.stat_update("not_chat")
            return True
        gold = doc.metadata.get("gold")
        if gold is None:
            gold = self.gold_by_problem().get(problem_hash(problem_text(doc)))
        verdict = judge(None if gold is None else str(gold), final_answer_text(doc), self.method)
        doc.metadata["correct"] = verdict.correct
        doc.metadata["verify"] = {k: getattr(verdict, k) for k in ("gold", "predicted", "method", "reason")}
        label = VERDICTS[verdict.correct]
        self.stat_update(f"verify_{label}_{doc.metadata.get('source')}")
        if verdict.reason:
            self.stat_update(f"unknown_{verdict.reason}")
        if verdict.correct is False and self.drop_incorrect:
            return False, "incorrect_answer"
        if verdict.correct is None and self.drop_unknown:
            return False, "unverified_answer"
        return True


@register
class AnswerVerifyStage(Stage):
    name = "answer_verify"
    Options = AnswerVerifyOptions

    def build(self, opts: AnswerVerifyOptions, ctx: BuildContext, chain: Chain) -> None:
        chain.add(
            AnswerVerifier(
                opts.method,
                opts.reference,
                opts.drop_incorrect,
                opts.drop_unknown,
                ctx.domains,
                ctx.exclusion_writer(),
            )
        )

    def describe(self, opts: AnswerVerifyOptions) -> str:
        gold = f"gold from the records, else {Path(opts.reference.path).name}" if opts.reference else "gold: `fields`"
        drops = [name for name, on in (("incorrect", opts.drop_incorrect), ("unknown", opts.drop_unknown)) if on]
        return f"method {opts.method}; {gold}; " + (f"drops {' and '.join(drops)}" if drops else "keeps and labels")
