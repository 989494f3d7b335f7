"""End to end: the project's own pipeline writes shards, `reasonpipe train` trains the tiny preset on them, and
`reasonpipe export-hf` writes a folder that transformers' AutoTokenizer and ZayaForCausalLM use as they are: the ids
of config.json, tokenizer_config.json and generation_config.json are the shards' tokenizer's, and the exported chat
template renders conversations to exactly the pipeline's token ids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from corpus import make_corpus, write_manifest
from trained import one_thread

from reasonpipe.pipeline.cli import main as cli_main
from reasonpipe.tokenizer.hf_export import write_hf_tokenizer
from reasonpipe.tokenizer.template import ChatTemplate, segments_ids
from reasonpipe.tokenizer.vocab import TemplateTokens, load_tokenizer
from reasonpipe.trainer import checkpoint as C
from reasonpipe.trainer.config import ModelConfig
from reasonpipe.trainer.model import ZayaLM

ROOT = Path(__file__).resolve().parents[1]

CONVERSATIONS = [
    [{"role": "user", "content": "What is 12 * 7?"},
     {"role": "assistant", "content": "The answer is 84.", "reasoning": "12 * 7 = 70 + 14 = 84."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "  leading spaces\nand lines\n"},
     {"role": "assistant", "content": "ok"}, {"role": "user", "content": "Again, with ünïcödé and 3.14159?"},
     {"role": "assistant", "content": "\\boxed{3}", "reasoning": "Think:\n\n- step 1\n- step 2"}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": "", "reasoning": ""}],
]  # fmt: skip


@pytest.fixture(scope="module")
def pipeline_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small output made by `reasonpipe run` (chat and GSM samples, trained BPE, 256-token windows)."""
    root = tmp_path_factory.mktemp("e2e")
    corpus = make_corpus(root / "corpus", scale=0.4)
    out = root / "out"
    manifest = write_manifest(root / "corpus", corpus, inputs=["chat", "gsm"], stages=[{"exact_dedup": {}}],
                              tokenizer={"train": {"vocab_size": 1024}}, trim={"context": 256},
                              pack={"seq_len": 256}, output={"path": str(out)},
                              executor={"kind": "local", "tasks": 1, "workers": 1})  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "reasonpipe.pipeline.cli", "run", str(manifest)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def trained(pipeline_output: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("run")
    config = tmp / "run.json"
    config.write_text(json.dumps({"model": {"preset": "tiny"}, "train": {
        "steps": 3, "global_batch_tokens": 1024, "micro_batch": 2, "log_every": 1, "optimizer": {"lr": 3e-3},
        "schedule": {"warmup_steps": 1}}}))  # fmt: skip
    with one_thread():
        code = cli_main(["train", "--data", str(pipeline_output), "--config", str(config), "--out", str(tmp / "run")])
    assert code == 0
    assert cli_main(["export-hf", str(tmp / "run"), str(tmp / "hf")]) == 0
    return tmp / "run", tmp / "hf"


def test_trained_model_uses_the_shards_ids(pipeline_output: Path, trained) -> None:
    run, _ = trained
    ids = json.loads((pipeline_output / "index.json").read_text())["tokenizer"]["special_ids"]
    model = json.loads((run / "config.json").read_text())["model"]
    assert {k: model[f"{k}_token_id"] for k in ("bos", "eos", "pad")} == {k: ids[k] for k in ("bos", "eos", "pad")}
    # the embedding's padding row is the pad token's, so BOS trains: the first step's gradient norm is O(1)
    first = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"grad_norm"' in x][0]
    assert first["step"] == 1 and first["grad_norm"] < 50, first["grad_norm"]


def test_export_folder_works_in_transformers(pipeline_output: Path, trained) -> None:
    run, hf = trained
    assert sorted(p.name for p in hf.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                     "tokenizer.json", "tokenizer_config.json"]  # fmt: skip
    ids = TemplateTokens(**json.loads((pipeline_output / "index.json").read_text())["tokenizer"]["special_ids"])
    config = json.loads((hf / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (ids.bos, ids.eos, ids.pad)
    gen = json.loads((hf / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [ids.end_turn, ids.eos] and gen["pad_token_id"] == ids.pad

    tok = transformers.AutoTokenizer.from_pretrained(hf)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (ids.bos, ids.eos, ids.pad)
    model = transformers.ZayaForCausalLM.from_pretrained(hf).eval()
    prompt = tok.apply_chat_template(CONVERSATIONS[0][:1], add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)  # fmt: skip
    assert prompt["input_ids"][0, -1].item() == ids.assistant
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    # the exported weights compute what the trained checkpoint computes
    ours = ZayaLM(ModelConfig.from_dict(json.loads((run / "config.json").read_text())["model"])).eval()
    C.load_model_weights(C.latest_checkpoint(run), ours)
    x = prompt["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ours(x).logits, rtol=1e-4, atol=1e-4)


def test_chat_template_renders_the_pipelines_ids(pipeline_output: Path, trained) -> None:
    _, hf = trained
    tok = transformers.AutoTokenizer.from_pretrained(hf)
    ids = TemplateTokens(**json.loads((pipeline_output / "index.json").read_text())["tokenizer"]["special_ids"])
    ours = ChatTemplate(load_tokenizer(pipeline_output / "tokenizer.json"), ids)
    for conv in CONVERSATIONS:
        want = segments_ids(ours.encode({"kind": "chat", "turns": conv})).tolist()
        got = tok.apply_chat_template(conv, tokenize=True, return_dict=False)
        assert got == want, conv
        prompt = tok.apply_chat_template(conv[:1], tokenize=True, add_generation_prompt=True, return_dict=False)
        head = segments_ids(ours.encode({"kind": "chat", "turns": conv[:1]})).tolist()
        assert prompt == head[:-1] + [ids.assistant]  # the turn, then the assistant marker instead of <eos>
    with pytest.raises(Exception, match="role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_missing_special_token_is_a_clean_error(pipeline_output: Path, tmp_path: Path) -> None:
    vocab = json.loads((pipeline_output / "index.json").read_text())["tokenizer"]["vocab_size"]
    ids = TemplateTokens(**{k: vocab + 5 for k in TemplateTokens.__dataclass_fields__})
    with pytest.raises(ValueError, match="are not in this tokenizer"):
        write_hf_tokenizer(pipeline_output / "tokenizer.json", ids, tmp_path / "t", 256)


def test_export_of_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert cli_main(["export-hf", str(tmp_path), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'config.json'} not found" in err and "a `reasonpipe train` run folder" in err
