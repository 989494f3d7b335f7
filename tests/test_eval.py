"""`reasonpipe eval`: a tiny model that memorised 8 problems scores high on them and zero on unseen ones; pass@k and
the majority vote add up over the per-item results; benchmark formats and user mistakes."""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trained import SEEN

from reasonpipe.filters.answers import answer_span, normalize_answer
from reasonpipe.pipeline.cli import main
from reasonpipe.pipeline.evaluate import Problem, majority, parse_fields, pass_at_k, read_benchmark, score
from reasonpipe.pipeline.generation_args import UsageError

pytestmark = pytest.mark.usefixtures("one_thread")


GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "math" / "gsm8k_train.jsonl"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def evaluate(capsys, out: Path, *argv: str) -> tuple[list[dict], dict, str]:
    code, stdout, err = cli(capsys, "eval", *argv, "--out", str(out), "--max-new-tokens", "24", "--device", "cpu")
    assert code == 0, err
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return results, json.loads((out / "summary.json").read_text()), stdout


# ------------------------------------------------------------------------------------------- the trained model
def test_memorised_problems_score_high_and_unseen_ones_zero(memorised, tmp_path, capsys) -> None:
    run = str(memorised.run)
    seen, s, stdout = evaluate(capsys, tmp_path / "seen", run, "--benchmark", str(memorised.seen))
    assert s["problems"] == 8 and s["samples"] == 1 and s["accuracy"] >= 0.875, stdout
    assert s["closed_reasoning"] == 1.0 and s["opened_reasoning"] == 1.0 and s["stopped"] == 1.0
    assert "accuracy" in stdout and "tokens/s" in stdout
    unseen, u, _ = evaluate(capsys, tmp_path / "unseen", run, "--benchmark", str(memorised.unseen))
    assert u["accuracy"] <= 0.125 and u["majority_accuracy"] <= 0.125
    for results, summary in ((seen, s), (unseen, u)):
        # accounting: the summary is the mean of the per-item results, verdicts tally the per-sample verdicts
        assert summary["accuracy"] == sum(r["correct"] for r in results) / len(results)
        assert summary["pass_at_k"] == {"1": summary["accuracy"]}
        tally = {}
        for r in results:
            for x in r["samples"]:
                tally[x["verdict"]] = tally.get(x["verdict"], 0) + 1
        assert summary["verdicts"] == tally
        mean_tokens = sum(x["tokens"] for r in results for x in r["samples"]) / len(results)
        assert summary["mean_output_tokens"] == pytest.approx(mean_tokens)
        assert summary["generated_tokens"] == sum(x["tokens"] for r in results for x in r["samples"])
    first = seen[0]
    assert first["question"] == SEEN[0]["question"] and first["gold"] == SEEN[0]["answer"]
    (sample,) = first["samples"]
    gold = SEEN[0]["answer"].split("#### ")[1]
    assert sample["answer"] == f"#### {gold}" and sample["predicted"] == gold and sample["verdict"] == "correct"
    assert first["majority"] == sample["answer"] and first["majority_correct"] is True


def test_samples_give_pass_at_k_and_majority_and_are_seeded(memorised, tmp_path, capsys) -> None:
    argv = (str(memorised.run), "--benchmark", str(memorised.seen), "--samples", "4", "--temperature", "1.5",
            "--limit", "3", "--seed", "3")  # fmt: skip
    results, s, _ = evaluate(capsys, tmp_path / "a", *argv)
    assert s["problems"] == 3 and set(s["pass_at_k"]) == {"1", "2", "4"}
    assert s["pass_at_k"]["1"] == s["accuracy"] == sum(r["correct"] / 4 for r in results) / 3
    assert s["pass_at_k"]["4"] == sum(r["correct"] > 0 for r in results) / 3
    assert s["pass_at_k"]["1"] <= s["pass_at_k"]["2"] <= s["pass_at_k"]["4"]
    for r in results:
        assert len(r["samples"]) == 4 and r["correct"] == sum(x["correct"] for x in r["samples"])
        forms = [normalize_answer(x["answer"]) for x in r["samples"] if x["answer"].strip()]
        if forms:
            assert forms.count(normalize_answer(r["majority"])) == max(forms.count(f) for f in forms)
    assert s["majority_accuracy"] == sum(r["majority_correct"] for r in results) / 3
    again, _, _ = evaluate(capsys, tmp_path / "b", *argv)
    assert again == results
    other, _, _ = evaluate(capsys, tmp_path / "c", *argv[:-1], "4")
    assert [x["output"] for r in other for x in r["samples"]] != [x["output"] for r in results for x in r["samples"]]


def test_default_out_folder_is_in_the_run(memorised, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(memorised.run, run)
    code, _, err = cli(capsys, "eval", str(run), "--benchmark", str(memorised.seen), "--limit", "1",
                       "--max-new-tokens", "24")  # fmt: skip
    assert code == 0, err
    assert (run / "eval" / "seen" / "results.jsonl").is_file() and (run / "eval" / "seen" / "summary.json").is_file()


# ---------------------------------------------------------------------------------------------------- scoring
@given(n=st.integers(1, 7), data=st.data())
def test_pass_at_k_is_the_fraction_of_k_subsets_with_a_correct_sample(n, data) -> None:
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    subsets = list(itertools.combinations([True] * c + [False] * (n - c), k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["#### 4", "4", "4.", " 5", "\\boxed{5}", "six", "", "  ", None]), max_size=8))
def test_majority_is_the_first_of_the_most_common_answers(answers) -> None:
    top = majority(answers)
    forms = [normalize_answer(a) if a and a.strip() else None for a in answers]
    if not any(forms):
        assert top is None
        return
    counts = {f: forms.count(f) for f in forms if f}
    assert counts[forms[top]] == max(counts.values())
    assert all(counts.get(f, 0) < counts[forms[top]] for f in forms[:top] if f)  # ties go to the earliest


def test_score_judges_math_solutions_and_names_unknown_verdicts() -> None:
    s = score(Problem("0", "q", "so it is \\boxed{\\frac{1}{2}}"), ["\\boxed{0.5}", "1/2", "", "#### 3"], "auto")
    assert [j.verdict for j in s["judged"]] == ["correct", "correct", "unknown:no_answer", "incorrect"]
    assert s["correct"] == 2 and s["pass"][1] == 0.5 and s["pass"][4] == 1.0
    gsm = score(Problem("1", "q", "A has 3.\n#### 1,000"), ["#### 1000", "1,000.", "999"], "exact")
    assert [j.correct for j in gsm["judged"]] == [True, True, False]
    assert gsm["majority"] == "#### 1000" and gsm["majority_correct"] is True


# ------------------------------------------------------------------------------------------ benchmark files
def test_benchmark_formats(tmp_path) -> None:
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "q1", "answer": "r\n#### 5"}) + "\n\n" + json.dumps({"question": "q2",
                   "answer": 7, "id": "x"}) + "\n")  # fmt: skip
    assert read_benchmark(gsm) == [Problem("0", "q1", "r\n#### 5"), Problem("x", "q2", "7")]
    assert read_benchmark(gsm, limit=1) == [Problem("0", "q1", "r\n#### 5")]
    math = tmp_path / "math.jsonl.gz"
    with gzip.open(math, "wt") as f:
        f.write(json.dumps({"problem": "p", "solution": "so \\boxed{2}", "unique_id": "u1"}) + "\n")
    assert read_benchmark(math, parse_fields(["id=unique_id"])) == [Problem("u1", "p", "so \\boxed{2}")]
    table = tmp_path / "b.parquet"
    pq.write_table(pa.table({"Q": ["a", "b"], "A": ["1", "2"]}), table)
    mapped = read_benchmark(table, parse_fields(["question=Q", "answer=A"]))
    assert mapped == [Problem("0", "a", "1"), Problem("1", "b", "2")]


@pytest.mark.parametrize(
    ("body", "fields", "message"),
    [
        ('{"question": "q"}\n', [], "b.jsonl:1: no answer in field 'answer' / 'solution' (fields: question); map it "
                                    "with --field answer=KEY"),
        ('{"Q": "q", "answer": "1"}\n', ["question=Q"], ""),
        ('{"Q": "q", "answer": "1"}\n', ["question=R"], "b.jsonl:1: no question in field 'R' (fields: Q, answer)"),
        ('{"question": "q", \n', [], "b.jsonl:1: not JSON"),
        ('[1, 2]\n', [], "b.jsonl:1: a list, expected an object"),
        ("\n", [], "b.jsonl: no problems in it"),
    ],
)  # fmt: skip
def test_benchmark_mistakes_name_the_line_and_the_fix(tmp_path, body, fields, message) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text(body)
    if not message:
        assert read_benchmark(path, parse_fields(fields))[0].question == "q"
        return
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_benchmark(path, parse_fields(fields))


def test_eval_user_mistakes_are_one_line_and_exit_2(memorised, tmp_path, capsys) -> None:
    run, bench = str(memorised.run), str(memorised.seen)
    cases = [
        ([run, "--benchmark", str(tmp_path / "none.jsonl")], "--benchmark", "none.jsonl: no such file"),
        ([run, "--benchmark", bench, "--samples", "4"], "with greedy decoding gives 4 equal answers"),
        ([run, "--benchmark", bench, "--samples", "0"], "--samples and --limit must be >= 1"),
        ([run, "--benchmark", bench, "--tail", "8"], "--tail is the RSA tail length"),
        ([run, "--benchmark", bench, "--field", "answer"], "--field 'answer': write NAME=KEY"),
        ([run, "--benchmark", bench, "--field", "gold=x"], "NAME one of question, answer, id"),
        ([run, "--benchmark", bench, "--rsa", "4,2"], "--rsa '4,2': write N,K,T"),
        ([run, "--benchmark", bench, "--rsa", "2,3,1"], "need N >= 1, 1 <= K <= N"),
        ([run, "--benchmark", bench, "--rsa", "4,2,1", "--samples", "2"], "drop --samples"),
        ([str(tmp_path), "--benchmark", bench], "neither a run folder"),
    ]
    for argv, *expected in cases:
        code, _, err = cli(capsys, "eval", *argv, "--out", str(tmp_path / "o"))
        assert code == 2 and "Traceback" not in err and all(e in err for e in expected), err
    assert not (tmp_path / "o").exists()


def test_real_gsm8k_benchmark(memorised, tmp_path, capsys) -> None:
    """The real GSM8K file reads whole (every gold has a `####` answer), and the memorised model is evaluated on its
    first problems end to end: every verdict is made (none unknown for want of a gold), and it solves few (one of
    them, 72, happens to be a memorised answer)."""
    if not GSM8K.is_file():
        pytest.skip(f"{GSM8K} absent (../shared/data/real)")
    problems = read_benchmark(GSM8K)
    assert len(problems) == 7473 and all(answer_span(p.gold) != p.gold.strip() for p in problems)
    results, s, _ = evaluate(capsys, tmp_path / "gsm", str(memorised.run), "--benchmark", str(GSM8K), "--limit", "4")
    assert s["problems"] == 4 and [r["question"] for r in results] == [p.question for p in problems[:4]]
    assert s["accuracy"] <= 0.25 and not any(v.startswith("unknown:no_gold") for v in s["verdicts"])


def test_ctrl_c_during_eval_writes_nothing(memorised, tmp_path, capsys, monkeypatch) -> None:
    from reasonpipe.pipeline import completion

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(completion, "generate", interrupted)
    code, _, err = cli(capsys, "eval", str(memorised.run), "--benchmark", str(memorised.seen), "--out",
                       str(tmp_path / "o"))  # fmt: skip
    assert code == 130 and "interrupted; nothing was written" in err and not (tmp_path / "o").exists()
