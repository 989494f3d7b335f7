"""`answer_verify` and its core (filters/answers.py): verdicts on GSM8K/MATH-style answers, gold from a record field
or a reference file keyed by problem, drop/keep options, per-source counters, manifest errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datatrove.data import Document
from stagekit import read_exclusions, run_stage

from reasonpipe.filters.answer_verify import AnswerVerifier, ReferenceFile
from reasonpipe.filters.answers import answer_span, judge, normalize_answer
from reasonpipe.pipeline.adapters import adapt
from reasonpipe.pipeline.manifest import ManifestError, load_manifest

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.mark.parametrize(
    "gold, answer",
    [
        (r"\frac{1}{2}", "0.5"),
        ("0.5", r"The answer is $\boxed{\frac12}$."),
        (r"\dfrac{1}{2}", r"so $x = \frac{1}{2}$, i.e. \boxed{0.5}"),
        ("18", r"She pays \$18 in total."),
        ("18", "18 dollars"),
        ("5", r"The side is \boxed{5\text{ cm}}."),
        ("1000", r"\boxed{1,000}"),
        ("72", "#### 72"),
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "So she sold 72 clips altogether."),
        (r"3\sqrt{2}", r"\boxed{\sqrt{18}}"),
        (r"\frac{\sqrt{3}}{2}", r"We get $\boxed{\frac{\sqrt3}{2}}$"),
        ("(1,2)", r"\boxed{\left(1,2\right)}"),
        ("x^2+1", r"\boxed{1+x^2}"),
        ("B", "The answer is (B) 27 sec"),
        ("(C)", r"\boxed{C}"),
        ("yes", "Yes."),
        (r"\text{Tuesday}", "tuesday"),
    ],
)
def test_equivalent_forms_are_correct(gold, answer):
    v = judge(gold, answer)
    assert v.correct is True, v


@pytest.mark.parametrize(
    "gold, answer",
    [
        ("72", "#### 71"),
        (r"\frac{1}{2}", r"\boxed{\frac{1}{4}}"),
        ("18", r"\$81"),
        (r"3\sqrt{2}", r"\boxed{3\sqrt{3}}"),
        ("B", "The answer is (D)."),
        ("yes", "No."),
        (r"\text{Tuesday}", "Monday"),
    ],
)
def test_different_answers_are_incorrect(gold, answer):
    v = judge(gold, answer)
    assert v.correct is False, v


def test_unknown_verdicts_say_why():
    assert judge(None, r"\boxed{3}").reason == "no_gold"
    assert judge("3", "  ").reason == "no_answer"
    v = judge("3", "I am not sure how to do this one.", method="math")
    assert v.correct is None and v.reason == "unparseable"
    assert judge("3", "three", method="exact").correct is False
    with pytest.raises(ValueError, match="allowed: auto, math, exact"):
        judge("3", "3", method="fuzzy")


def test_answer_span_and_normalisation():
    assert answer_span(r"blah \boxed{\frac{a}{b}} and \boxed{7}") == "7"
    assert answer_span("work\n#### 1,234") == "1,234"
    assert normalize_answer(r"The \text{Answer}: $1,234$.") == "the answer: 1234"


def _gsm8k(n: int) -> list[dict]:
    path = REAL / "math" / "gsm8k_train.jsonl"
    if not path.exists():
        pytest.skip("../shared/data/real is absent")
    with open(path) as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def test_real_gsm8k_answers_in_every_style():
    """Each GSM8K gold (a full worked solution ending `#### n`) against its answer written five ways, and n + 1."""
    styles = ["#### {}", "The answer is {}.", "$\\boxed{{{}}}$", "She ends up with ${}.", "{} dollars"]
    records = _gsm8k(300)
    correct = incorrect = 0
    for r in records:
        n = r["answer"].rsplit("####", 1)[1].strip()
        wrong = str(int(n.replace(",", "")) + 1)
        for style in styles:
            correct += judge(r["answer"], style.format(n)).correct is True
            incorrect += judge(r["answer"], style.format(wrong)).correct is False
    assert correct == incorrect == len(records) * len(styles)


def test_real_r1_traces_against_their_gold():
    """The DeepSeek-R1 style traces of MATH problems: every final answer (boxed LaTeX) matches `gtruth_answer`, and
    none matches another problem's gold."""
    files = sorted((REAL / "reasoning").glob("r1_samples_*.jsonl"))
    if not files:
        pytest.skip("../shared/data/real is absent")
    records = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    golds = sorted({r["gtruth_answer"] for r in records})
    for r in records:
        assert judge(r["gtruth_answer"], r["message_content"]).correct is True, r["gtruth_answer"]
        others = [g for g in golds if g != r["gtruth_answer"]]
        assert all(judge(g, r["message_content"]).correct is False for g in others)


# ----------------------------------------------------------------------------------------------------- the stage
def chat_doc(doc_id: str, problem: str, answer: str, gold: str | None = None, source: str = "pool") -> Document:
    record = {"problem": problem, "reasoning": "Some careful work, step by step.", "solution": answer}
    fields = {}
    if gold is not None:
        record["gold_answer"], fields = gold, {"gold": "gold_answer"}
    text, meta = adapt(record, "problem_solution", fields)
    return Document(text=text, id=doc_id, metadata={"source": source, "domain": "math", **meta})


def test_gold_from_the_record_field_and_labels(no_network):
    docs = [
        chat_doc("a", "What is 1/2 as a decimal?", r"It is \boxed{0.5}.", gold=r"\frac{1}{2}"),
        chat_doc("b", "What is 2 + 2?", r"\boxed{5}", gold="4"),
        chat_doc("c", "What is 3 + 3?", r"\boxed{6}"),  # no gold anywhere: unknown
    ]
    step = AnswerVerifier()
    assert [step.filter(d) for d in docs] == [True, True, True]
    assert [d.metadata["correct"] for d in docs] == [True, False, None]
    assert docs[0].metadata["verify"] == {"gold": "\\frac{1}{2}", "predicted": "\\frac{1}{2}", "method": "math",
                                          "reason": None}  # fmt: skip
    assert docs[2].metadata["verify"]["reason"] == "no_gold"


def test_reference_file_keyed_by_problem_and_drop_options(tmp_path):
    ref = tmp_path / "gold.jsonl"
    ref.write_text(
        "\n".join(json.dumps({"q": q, "a": a}) for q, a in [("What is 2 + 2?", "#### 4"), ("What is 3+3 ?", "6")])
    )
    reference = ReferenceFile.model_validate({"path": str(ref), "problem_field": "q", "answer_field": "a"})
    docs = [
        chat_doc("a", "what is 2 + 2?", r"\boxed{4}"),  # the reference's problem up to case
        chat_doc("b", "What is 3 + 3?", r"\boxed{7}"),  # up to spacing and punctuation
        chat_doc("c", "What is 9 + 9?", r"\boxed{18}"),  # not in the reference
        chat_doc("d", "What is 2 + 2?", r"\boxed{5}", gold="5"),  # the record's own gold wins
    ]
    kept, stats = run_stage(
        "answer_verify",
        {"reference": {"path": str(ref), "problem_field": "q", "answer_field": "a"}, "drop_incorrect": True,
         "drop_unknown": True},
        docs, tasks=2, tmp_path=tmp_path / "run",
    )  # fmt: skip
    assert reference.path == ref
    assert sorted(d.id for d in kept) == ["a", "d"] and all(d.metadata["correct"] is True for d in kept)
    assert stats["verify_correct_pool"] == 2 and stats["verify_incorrect_pool"] == 1
    assert stats["verify_unknown_pool"] == 1 and stats["unknown_no_gold"] == 1
    reasons = sorted(d.metadata["filter_reason"] for d in read_exclusions(tmp_path / "run"))
    assert reasons == ["incorrect_answer", "unverified_answer"]


def test_plain_documents_and_other_domains_pass_untouched():
    plain = Document(text="just prose", id="p", metadata={"source": "web", "domain": "math", "kind": "text"})
    other = chat_doc("o", "What is 1 + 1?", r"\boxed{3}", gold="2")
    other.metadata["domain"] = "code"
    step = AnswerVerifier(drop_incorrect=True, domains=["math"])
    assert step.filter(plain) is True and step.filter(other) is True
    assert "correct" not in plain.metadata and "correct" not in other.metadata


def test_manifest_errors_name_the_key(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"problem": "p", "solution": "s"}) + "\n")
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"question": "p", "answer": "1"}) + "\n")
    cases = [
        ({"method": "fuzzy"}, "method: found 'fuzzy'; allowed: 'auto', 'math' or 'exact'"),
        ({"reference": {"path": "missing.jsonl"}}, "file not found"),
        ({"reference": {"path": str(ref), "answer_field": "gold"}}, "no record has the field 'gold'"),
        ({"drop_incorect": True}, "drop_incorect: unknown key"),
    ]
    for options, message in cases:
        manifest = tmp_path / "m.yaml"
        manifest.write_text(
            json.dumps(
                {
                    "name": "t",
                    "inputs": [{"name": "i", "path": str(data)}],
                    "stages": [{"answer_verify": options}],
                    "tokenizer": {"train": {"vocab_size": 1000}},
                    "output": {"path": str(tmp_path / "out")},
                }
            )
        )
        with pytest.raises(ManifestError) as err:
            load_manifest(manifest)
        assert message in str(err.value) and "stages[0].answer_verify" in str(err.value), str(err.value)
