"""`reasonpipe generate`: prompts are training samples' own prefixes, outputs split in token space, a run folder and
its HF export generate the same text, and every user mistake is one line with exit 2 (no traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trained import SEEN, UNSEEN

from reasonpipe.pipeline import generate_cli
from reasonpipe.pipeline.cli import main
from reasonpipe.pipeline.completion import conversation, generation_prompt, render_turns, split_output
from reasonpipe.pipeline.generate_cli import read_prompts
from reasonpipe.pipeline.generation_args import UsageError
from reasonpipe.pipeline.load_model import load_model
from reasonpipe.tokenizer.hf_export import chat_template, hf_template_strings
from reasonpipe.tokenizer.template import segments_ids
from reasonpipe.tokenizer.vocab import DEFAULT_TEMPLATE, TemplateTokens

TOKENS = TemplateTokens(*range(9))  # bos 0, eos 1, pad 2, system 3, user 4, assistant 5, end_turn 6, think 7, 8


@pytest.fixture(scope="module")
def loaded(memorised):
    return load_model(memorised.run, "cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------- prompts and outputs
def test_prompt_is_the_prefix_of_the_trained_samples(memorised, loaded) -> None:
    """The prompt of a memorised problem is, token for token, how its training samples begin in the shards (up to
    and including the assistant marker), and the rendering of the whole sample continues it."""
    windows = []
    for shard in sorted((memorised.output / "shards").glob("*.arrow")):
        table = pa.ipc.open_stream(pa.memory_map(str(shard))).read_all()
        for ids, offsets in zip(table.column("input_ids").to_pylist(), table.column("doc_offsets").to_pylist()):
            windows += [ids[a:b] for a, b in zip(offsets, [*offsets[1:], len(ids)])]
    for record in SEEN:
        turns = conversation([{"role": "user", "content": record["question"]}])
        prompt = generation_prompt(render_turns(loaded.template, turns), loaded.tokens).tolist()
        assert prompt[-1] == loaded.tokens.assistant
        assert sum(doc[: len(prompt)] == prompt for doc in windows) == 20  # its 20 copies (RSA samples differ)
        with_answer = {"role": "assistant", "content": "x", "reasoning": "y"}
        full = segments_ids(render_turns(loaded.template, [*turns, with_answer])).tolist()
        assert full[: len(prompt)] == prompt
    opened = generation_prompt(render_turns(loaded.template, turns), loaded.tokens, "open")
    assert opened.tolist() == [*prompt, loaded.tokens.think_open]


def test_prompt_texts_are_normalised_as_ingest_does(loaded) -> None:
    """Whitespace at the ends, CRLF and control characters are cleaned as the pipeline cleaned training texts."""
    raw = conversation([{"role": "user", "content": "  Ada has 3\r\napples.\x07  \n"}], system=" be brief ")
    assert raw == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Ada has 3\napples."}]
    # a system message in the conversation wins over --system
    given_sys = conversation([{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}], system="x")
    assert [t["content"] for t in given_sys] == ["mine", "q"]


ids_st = st.lists(st.integers(9, 300), max_size=12)


@settings(max_examples=200, deadline=None)
@given(reasoning=ids_st, answer=ids_st, think=st.booleans(), closed=st.booleans(),
       stop=st.sampled_from([None, TOKENS.end_turn, TOKENS.eos]), prefilled=st.booleans())  # fmt: skip
def test_split_output_recovers_the_parts(reasoning, answer, think, closed, stop, prefilled) -> None:
    opened = think or prefilled
    ids = ([TOKENS.think_open] if think and not prefilled else []) + (reasoning if opened else [])
    ids += ([TOKENS.think_close] if opened and closed else []) + (answer if not opened or closed else [])
    ids += [stop] if stop is not None else []
    c = split_output(ids, TOKENS, think_opened=prefilled)
    assert list(c.ids) == ids
    assert c.stop == {None: "length", TOKENS.end_turn: "end_turn", TOKENS.eos: "eos"}[stop]
    if not opened:
        assert c.reasoning is None and c.closed is None and c.answer.tolist() == answer
    else:
        assert c.reasoning.tolist() == reasoning and c.closed is closed
        assert c.answer.tolist() == (answer if closed else [])
    # only the first </think> closes; what follows it (another </think> included) is the answer
    twice = split_output([TOKENS.think_open, 20, TOKENS.think_close, 21, TOKENS.think_close, 22], TOKENS)
    assert twice.reasoning.tolist() == [20] and twice.answer.tolist() == [21, TOKENS.think_close, 22]


def test_hf_template_strings_round_trip() -> None:
    strings = {**DEFAULT_TEMPLATE, "think_open": "<reason>", "user": 'a "quoted" {user}'}
    config = {"chat_template": chat_template(strings), "pad_token": strings["pad"]}
    assert hf_template_strings(config) == strings
    with pytest.raises(KeyError, match="pad"):
        hf_template_strings({"chat_template": chat_template(strings)})


# ---------------------------------------------------------------------------------------------- the command
def test_generate_from_the_run_and_its_hf_export(memorised, tmp_path, capsys) -> None:
    """The memorised answers come back; the HF export of the same checkpoint generates the same records."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": r["question"]}) + "\n"
                               for i, r in enumerate(SEEN[:4])))  # fmt: skip
    code, _, err = cli(capsys, "generate", str(memorised.run), "--prompts", str(prompts), "--out",
                       str(tmp_path / "run.jsonl"), "--max-new-tokens", "40", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert "4 completions" in err and "tokens/s" in err
    got = read_jsonl(tmp_path / "run.jsonl")
    assert [r["id"] for r in got] == ["q0", "q1", "q2", "q3"]
    for r, record in zip(got, SEEN):
        reasoning, gold = record["answer"].split("\n")
        assert set(r) == {"id", "prompt", "prompt_tokens", "output", "reasoning", "answer", "closed_reasoning",
                          "tokens", "stopped", "stop"}  # fmt: skip
        assert r["prompt"] == record["question"] and r["reasoning"] == reasoning and r["answer"] == gold
        assert r["closed_reasoning"] is True and r["stopped"] is True and r["stop"] == "end_turn"
        assert r["output"] == f"<think>{reasoning}</think>{gold}<|end_turn|>"
    assert cli(capsys, "export-hf", str(memorised.run), str(tmp_path / "hf"))[0] == 0
    code, _, err = cli(capsys, "generate", str(tmp_path / "hf"), "--prompts", str(prompts), "--out",
                       str(tmp_path / "hf.jsonl"), "--max-new-tokens", "40")  # fmt: skip
    assert code == 0, err
    assert read_jsonl(tmp_path / "hf.jsonl") == got


def test_generate_prints_one_prompt_and_writes_jsonl_to_stdout(memorised, capsys) -> None:
    code, out, err = cli(capsys, "generate", str(memorised.run), "--prompt", SEEN[1]["question"],
                         "--max-new-tokens", "40")  # fmt: skip
    assert code == 0, err
    assert SEEN[1]["question"] in out and "#### 40<|end_turn|>" in out and "stopped at end_turn" in out
    code, out, err = cli(capsys, "generate", str(memorised.run), "--prompt", SEEN[1]["question"], "--out", "-",
                         "--max-new-tokens", "3", "--think", "open")  # fmt: skip
    assert code == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    # the prompt opened <think>: three tokens of reasoning, cut by the limit, not closed
    assert record["tokens"] == 3 and record["stop"] == "length" and record["stopped"] is False
    assert record["closed_reasoning"] is False and record["answer"] == "" and record["reasoning"] == "Bo starts with"


def test_batching_and_padding_do_not_change_greedy_outputs(memorised, tmp_path, capsys) -> None:
    """Prompts of different lengths, batched 1 or 16 at a time (left padding), give the same greedy outputs."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join([SEEN[0]["question"], "hi", UNSEEN[2]["question"] + " Think twice, then answer."]))
    outs = []
    for batch in ("1", "16"):
        out = tmp_path / f"b{batch}.jsonl"
        assert cli(capsys, "generate", str(memorised.run), "--prompts", str(prompts), "--out", str(out),
                   "--batch-size", batch, "--max-new-tokens", "24")[0] == 0  # fmt: skip
        outs.append(read_jsonl(out))
    assert outs[0] == outs[1] and [r["id"] for r in outs[0]] == ["p.txt:1", "p.txt:2", "p.txt:3"]


def test_sampling_is_seeded(memorised, tmp_path, capsys) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": UNSEEN[0]["question"]}) + "\n")
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / f"{name}.jsonl"
        assert cli(capsys, "generate", str(memorised.run), "--prompts", str(prompts), "--out", str(out), "--seed",
                   seed, "--temperature", "5", "--max-new-tokens", "16")[0] == 0  # fmt: skip
        runs[name] = read_jsonl(out)[0]["output"]
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]


def test_prompt_file_formats(tmp_path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join([
        json.dumps({"messages": [{"role": "user", "content": "one"}], "id": 7}),
        "",
        json.dumps({"question": "two", "system": "sys"}),
        json.dumps({"problem": "three"}),
    ]))  # fmt: skip
    items = read_prompts(f)
    assert [(i.id, i.text, i.system) for i in items] == [("7", "one", None), ("p.jsonl:3", "two", "sys"),
                                                         ("p.jsonl:4", "three", None)]  # fmt: skip
    txt = tmp_path / "p.txt"
    txt.write_text('{"not": "json here"}\n\nsecond line\n')
    lines = [(i.id, i.text) for i in read_prompts(txt)]
    assert lines == [("p.txt:1", '{"not": "json here"}'), ("p.txt:3", "second line")]
    for body, message in [
        ('{"prompt": "ok"}\n{"prompt": \n', "p.jsonl:2: not JSON"),
        ('["a list"]\n', "p.jsonl:1: a list, expected an object"),
        ('{"text": "x"}\n', "p.jsonl:1: no 'messages' list or string field 'prompt', 'question', 'problem'"),
        ('{"messages": "hi"}\n', "p.jsonl:1: 'messages' must be a list"),
        ("\n\n", "p.jsonl: no prompts in it"),
    ]:
        f.write_text(body)
        with pytest.raises(UsageError, match=message):
            read_prompts(f)


def fails(capsys, expected: str, *argv: str) -> None:
    """The command exits 2 with `expected` in its one-line message and no traceback."""
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err, err
    assert expected in err, err


def test_user_mistakes_are_one_line_and_exit_2(memorised, tmp_path, capsys) -> None:
    run = str(memorised.run)
    prompts = tmp_path / "p.jsonl"
    ends_with_answer = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    prompts.write_text(json.dumps({"messages": ends_with_answer}) + "\n")
    cases = [
        ([str(tmp_path / "nope"), "--prompt", "x"], "no such folder"),
        ([str(tmp_path), "--prompt", "x"], "neither a run folder (data.json, checkpoints/) nor an HF folder"),
        ([run, "--prompt", "x", "--temperature", "-1"], "--temperature: Input should be greater than or equal to 0"),
        ([run, "--prompt", "x", "--top-p", "0", "--batch-size", "0"], "--top-p: Input should be greater than 0"),
        ([run, "--prompts", str(prompts)], "p.jsonl:1: the conversation must end with a user message"),
        ([run, "--prompts", str(prompts), "--out", str(prompts)], "is the prompts file"),
        ([run, "--prompts", str(tmp_path / "missing.jsonl")], "missing.jsonl: no such file"),
        ([run, "--prompt", "x", "--threads", "0"], "--threads 0: give 1 or more"),
    ]
    if not __import__("torch").cuda.is_available():
        cases.append(([run, "--prompt", "x", "--device", "cuda"], "--device cuda: no CUDA/ROCm device"))
    for argv, expected in cases:
        fails(capsys, expected, "generate", *argv)


def test_an_output_that_cannot_be_written_is_one_line_and_exit_1(memorised, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv in (["generate", str(memorised.run), "--prompt", "x", "--max-new-tokens", "2", "--out",
                  str(blocker / "out.jsonl")],
                 ["eval", str(memorised.run), "--benchmark", str(memorised.seen), "--limit", "1",
                  "--max-new-tokens", "2", "--out", str(blocker / "eval")]):  # fmt: skip
        code, _, err = cli(capsys, *argv)
        assert code == 1 and "Traceback" not in err and f"cannot write {blocker}" in err, err


def test_damaged_run_folders_are_named(memorised, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(memorised.run, run)
    (run / "tokenizer.json").write_text((run / "tokenizer.json").read_text().replace('"<think>"', '"<thonk>"'))
    fails(capsys, "not the tokenizer the run trained on", "generate", str(run), "--prompt", "x")
    shutil.copy(memorised.run / "tokenizer.json", run / "tokenizer.json")
    shutil.rmtree(run / "checkpoints")
    fails(capsys, "no checkpoints/step_*/", "generate", str(run), "--prompt", "x")
    (run / "data.json").write_text("{")
    fails(capsys, "data.json: unreadable", "generate", str(run), "--prompt", "x")


def test_ctrl_c_writes_nothing(memorised, tmp_path, capsys, monkeypatch) -> None:
    from reasonpipe.pipeline import completion

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(completion, "generate", interrupted)
    out = tmp_path / "out.jsonl"
    code, _, err = cli(capsys, "generate", str(memorised.run), "--prompt", "x", "--out", str(out))
    assert code == 130 and "interrupted; nothing was written" in err and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_leaves_no_partial_file(tmp_path) -> None:
    def lines():
        yield "one\n"
        raise KeyboardInterrupt

    target = tmp_path / "x.jsonl"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        generate_cli.write_atomic(target, lines())
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]
