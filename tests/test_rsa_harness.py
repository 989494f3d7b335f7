"""The Markovian RSA harness: its prompts are the `rsa_aggregate` builder's prompts token for token (against the
shards `reasonpipe run` wrote and against `trimming.rsa.aggregate`), they never pass their bound, picks are seeded,
and `reasonpipe eval --rsa` reports per-round accuracy on the memorised model, reproducibly."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trained import RSA, SEEN

from reasonpipe.pipeline.cli import main
from reasonpipe.pipeline.completion import conversation, render_turns
from reasonpipe.pipeline.evaluate import _rsa_shape
from reasonpipe.pipeline.generation_args import Sampling, UsageError
from reasonpipe.pipeline.load_model import load_model
from reasonpipe.pipeline.rsa_harness import RSAHarness, RSAShape
from reasonpipe.tokenizer.template import segments_ids
from reasonpipe.trimming.rsa import Trace, aggregate, trace_parts
from reasonpipe.trimming.tails import Candidate
from reasonpipe.trimming.ttc_config import RSAConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loaded(memorised):
    return load_model(memorised.run, "cpu")


def documents(output: Path) -> list[list[int]]:
    docs = []
    for shard in sorted((output / "shards").glob("*.arrow")):
        table = pa.ipc.open_stream(pa.memory_map(str(shard))).read_all()
        for ids, offsets in zip(table.column("input_ids").to_pylist(), table.column("doc_offsets").to_pylist()):
            docs += [ids[a:b] for a, b in zip(offsets, [*offsets[1:], len(ids)])]
    return docs


def between(ids: list[int], start: int, end: int) -> np.ndarray:
    i = ids.index(start) + 1
    return np.asarray(ids[i : ids.index(end, i)], dtype=np.uint32)


# ------------------------------------------------------------------------------------ one renderer, token-exact
def test_harness_prompts_are_the_aggregation_samples_the_model_trained_on(memorised, loaded) -> None:
    """For each memorised problem, the harness's prompt showing two copies of its trace (every trace of a problem is
    the same here) is, token for token, the beginning of the rsa_aggregate samples `reasonpipe run` packed."""
    assert loaded.rsa is not None and loaded.rsa.prompt_template == RSA["prompt_template"]
    harness = RSAHarness(loaded, RSAShape(4, 2, 1, RSA["tau"]), Sampling(max_new_tokens=24), loaded.rsa)
    docs, t = documents(memorised.output), loaded.tokens
    for record in SEEN:
        p = harness.problem_prompt(record["question"])
        trace = next(d for d in docs if d[: len(p.ids)] == p.ids.tolist())  # a plain training sample of it
        cand = Candidate(between(trace, t.think_open, t.think_close), between(trace, t.think_close, t.end_turn))
        prompt = harness.aggregation_prompt(p, [cand, cand]).tolist()
        assert len(prompt) > len(p.ids) + 2 * RSA["tau"]  # the tails are in it
        assert sum(d[: len(prompt)] == prompt for d in docs) >= 1


@pytest.mark.parametrize("options", [{}, {"include_answer_in_tail": True, "tail_unit": "words", "tau": 3}])
def test_harness_prompt_equals_what_aggregate_emits(loaded, options) -> None:
    """Distinct candidates: every sample `aggregate` builds from rendered traces begins with the harness's prompt
    for the same candidates (the builder's sample up to its assistant marker)."""
    config = RSAConfig(**{**RSA, **options})
    harness = RSAHarness(loaded, RSAShape(5, 2, 1, config.tau), Sampling(max_new_tokens=24), config)
    question = SEEN[0]["question"]
    traces = []
    for i in range(5):
        turns = [*conversation([{"role": "user", "content": question}]),
                 {"role": "assistant", "reasoning": f"Try {i}: it is {30 + i} plus {i}, so {30 + 2 * i}.",
                  "content": f"#### {30 + 2 * i}"}]  # fmt: skip
        traces.append(Trace(f"t{i}", render_turns(loaded.template, turns), correct=i % 2 == 0))
    samples, skipped = aggregate(
        "q0", traces, harness.encoded, loaded.tokens.user, config.tau, per_problem=6,
        include_answer=config.include_answer_in_tail, word_starts=harness.word_starts,
    )  # fmt: skip
    assert len(samples) >= 3 and skipped["ineligible_traces"] == 0
    by_id = {tr.id: trace_parts(tr.segments, loaded.tokens.user) for tr in traces}
    p = harness.problem_prompt(question)
    for s in samples:
        cands = [Candidate(by_id[c].reasoning, by_id[c].answer) for c in s.candidates]
        prompt = harness.aggregation_prompt(p, cands).tolist()
        assert prompt[-1] == loaded.tokens.assistant
        assert segments_ids(s.segments).tolist()[: len(prompt)] == prompt


@settings(max_examples=60, deadline=None)
@given(data=st.data(), include_answer=st.booleans(), words=st.booleans(), tau=st.integers(1, 40))
def test_prompts_never_exceed_their_bound(loaded, data, include_answer, words, tau) -> None:
    """Whatever the previous round generated (at most --max-new-tokens per trace), the next prompt fits the bound;
    the bound depends on the problem and the settings only, never on the round."""
    config = RSAConfig(
        **{**RSA, "include_answer_in_tail": include_answer, "tail_unit": "words" if words else "tokens"}
    )
    m = data.draw(st.integers(1, 32))
    harness = RSAHarness(loaded, RSAShape(3, 2, 1, tau), Sampling(max_new_tokens=m), config)
    p = harness.problem_prompt(SEEN[1]["question"])
    ids = st.lists(st.integers(9, loaded.template.tokenizer.get_vocab_size() - 1), max_size=m)
    cands = [Candidate(np.asarray(data.draw(ids), np.uint32), np.asarray(data.draw(ids), np.uint32)) for _ in "ab"]
    assert len(harness.aggregation_prompt(p, cands)) <= p.bound
    full = [Candidate(np.full(m, 300, np.uint32), np.full(m, 301, np.uint32))] * 2  # the longest candidates
    assert len(harness.aggregation_prompt(p, full)) <= p.bound


def test_picks_are_seeded_and_distinct(loaded) -> None:
    harness = RSAHarness(loaded, RSAShape(6, 3, 2, 8), Sampling(seed=5), loaded.rsa)
    picks = [harness.picks(0, 1, j) for j in range(6)]
    assert all(len(set(x)) == 3 and set(x) <= set(range(6)) for x in picks)
    assert picks == [harness.picks(0, 1, j) for j in range(6)] and len({tuple(x) for x in picks}) > 1
    assert picks != [RSAHarness(loaded, RSAShape(6, 3, 2, 8), Sampling(seed=6), loaded.rsa).picks(0, 1, j)
                     for j in range(6)]  # fmt: skip


def test_tail_defaults_to_the_trained_tau_and_is_required_otherwise() -> None:
    args = SimpleNamespace(rsa="4,2,1", tail=None)
    trained = SimpleNamespace(rsa=RSAConfig(**RSA), rsa_origin="builders.rsa_aggregate of x")
    assert _rsa_shape(args, trained) == RSAShape(4, 2, 1, RSA["tau"])
    with pytest.raises(UsageError, match="give --tail TAU \\(an HF folder does not record"):
        _rsa_shape(args, SimpleNamespace(rsa=None, rsa_origin="an HF folder does not record its training manifest"))


# ------------------------------------------------------------------------------------------------ the command
def rsa_eval(memorised, capsys, out: Path, *extra: str) -> tuple[list[dict], dict]:
    code = main(["eval", str(memorised.run), "--benchmark", str(memorised.seen), "--limit", "3", "--temperature",
                 "1.0", "--max-new-tokens", "24", "--out", str(out), *extra])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 0, err
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return results, json.loads((out / "summary.json").read_text())


def test_eval_rsa_reports_rounds_within_the_bound_and_reproducibly(memorised, tmp_path, capsys) -> None:
    results, s = rsa_eval(memorised, capsys, tmp_path / "a", "--rsa", "3,2,1")
    assert s["rsa"]["n"] == 3 and s["rsa"]["k"] == 2 and s["rsa"]["rounds"] == 1 and s["rsa"]["tau"] == RSA["tau"]
    assert s["rsa"]["templates"].startswith("builders.rsa_aggregate of")
    assert [r["round"] for r in s["per_round"]] == [0, 1]
    assert s["max_prompt_tokens"] <= s["prompt_bound"]
    assert s["per_round"][0]["max_prompt_tokens"] < s["per_round"][1]["max_prompt_tokens"] <= s["prompt_bound"]
    assert s["accuracy"] == s["per_round"][-1]["majority_accuracy"] >= 2 / 3
    assert s["generated_tokens"] == sum(t["tokens"] for r in results for rd in r["rounds"] for t in rd["traces"])
    for r in results:
        assert [len(rd["traces"]) for rd in r["rounds"]] == [3, 3]
        assert r["final"] == r["rounds"][-1]["majority"] and r["final_correct"] == r["rounds"][-1]["majority_correct"]
    for rd, summary in zip(range(2), s["per_round"]):
        correct = [sum(t["correct"] for t in r["rounds"][rd]["traces"]) / 3 for r in results]
        assert summary["accuracy"] == pytest.approx(sum(correct) / 3)
    again, _ = rsa_eval(memorised, capsys, tmp_path / "b", "--rsa", "3,2,1")
    assert again == results


def test_round_zero_is_plain_sampling(memorised, tmp_path, capsys) -> None:
    """--rsa N,K,0 samples exactly what --samples N does (same prompts, same seeds)."""
    rsa, _ = rsa_eval(memorised, capsys, tmp_path / "rsa", "--rsa", "3,2,0")
    plain, _ = rsa_eval(memorised, capsys, tmp_path / "plain", "--samples", "3")
    assert [[t["output"] for t in r["rounds"][0]["traces"]] for r in rsa] == [
        [x["output"] for x in r["samples"]] for r in plain
    ]
