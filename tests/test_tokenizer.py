"""Tokenizer: training, loading a given tokenizer with a template map, the chat template's segments, round trips."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from reasonpipe.segments import SEG_ANSWER, SEG_PROMPT, SEG_REASONING, SEG_TEMPLATE, SEG_TEXT
from reasonpipe.tokenizer.config import TokenizerConfig
from reasonpipe.tokenizer.packing import Packer, PackItem
from reasonpipe.tokenizer.template import ChatTemplate, assistant_flags, encode_ahead, segments_ids
from reasonpipe.tokenizer.vocab import (
    DEFAULT_TEMPLATE,
    load_tokenizer,
    newline_ids,
    prepare,
    prepared_spec,
    resolve_template,
    save_tokenizer,
    train_tokenizer,
)
from reasonpipe.trimming.core import trim

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
REAL = REAL if REAL.exists() else Path("/work/shared/data/real")


def corpus(n: int = 600) -> list[str]:
    """Realistic training texts: PEP and LaTeX paragraphs and GSM8K solutions when the real data is there."""
    files = ["prose/python_peps_paragraphs_6k.jsonl", "math_prose/hott_book_paragraphs.jsonl"]
    texts: list[str] = []
    if REAL.exists():
        for name in files:
            with open(REAL / name, encoding="utf-8") as f:
                texts += [json.loads(line)["text"] for _, line in zip(range(n // 2), f)]
        return texts
    rng = random.Random(0)  # generated fallback: word salad with numbers, code and LaTeX
    words = "the of a proof let x be we have def return if then so total is $\\frac{1}{2}$ = + ( ) : \n".split(" ")
    return [" ".join(rng.choice(words) for _ in range(rng.randint(20, 120))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(corpus(), vocab_size=1200)


@pytest.fixture(scope="module")
def tpl(tok: Tokenizer) -> ChatTemplate:
    return ChatTemplate(tok, resolve_template(tok))


def chat(question: str, reasoning: str | None, answer: str, turns: int = 1, system: str | None = None) -> dict:
    conv = [{"role": "system", "content": system, "reasoning": None}] if system else []
    for t in range(turns):
        conv.append({"role": "user", "content": f"{question} (part {t})", "reasoning": None})
        conv.append({"role": "assistant", "content": f"{answer} {t}", "reasoning": reasoning and f"{reasoning} {t}"})
    return {"kind": "chat", "turns": conv}


def test_train_special_tokens_first_and_deterministic(tok: Tokenizer) -> None:
    tokens = resolve_template(tok)
    assert list(tokens.as_dict().values()) == list(range(9))
    assert [tok.id_to_token(i) for i in range(9)] == list(DEFAULT_TEMPLATE.values())
    assert 600 < tok.get_vocab_size() <= 1200
    again = train_tokenizer(corpus(), vocab_size=1200)
    assert again.to_str() == tok.to_str()


def test_train_rejects_tiny_vocab() -> None:
    with pytest.raises(ValueError, match="vocab_size: 100"):
        train_tokenizer(["abc"], vocab_size=100)


def test_plain_segments_equal_whole_encode(tok: Tokenizer, tpl: ChatTemplate) -> None:
    t = tpl.tokens
    texts = corpus(200)
    for text, segs in zip(texts, tpl.encode_many(texts)):
        kinds = [s.kind for s in segs]
        assert kinds == [SEG_TEMPLATE, SEG_TEXT, SEG_TEMPLATE]
        whole = [t.bos, *tok.encode(text, add_special_tokens=False).ids, t.eos]
        ids = segments_ids(segs)
        assert ids.dtype == np.uint32 and ids.tolist() == whole
        assert tok.decode(ids.tolist(), skip_special_tokens=True) == text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4))
def test_segment_concatenation_decodes_to_joined_text(tok: Tokenizer, tpl: ChatTemplate, parts: list[str]) -> None:
    """Encoding pieces separately and concatenating never changes the text (no prefix space, byte-level)."""
    ids = np.concatenate(tpl.encode_texts(parts))
    assert tok.decode(ids.tolist(), skip_special_tokens=False) == "".join(parts)


def test_chat_layout_kinds_and_thinks(tok: Tokenizer, tpl: ChatTemplate) -> None:
    sample = chat("What is 6 * 7?", "Six sevens: 42.\nCheck: 7 * 6 = 42.", "42", turns=2, system="Be brief.")
    segs = tpl.encode(sample)
    rendered = tok.decode(segments_ids(segs).tolist(), skip_special_tokens=False)
    expected = (
        "<|bos|><|system|>Be brief.<|end_turn|>"
        "<|user|>What is 6 * 7? (part 0)<|end_turn|><|assistant|><think>Six sevens: 42.\nCheck: 7 * 6 = 42. 0</think>"
        "42 0<|end_turn|><|user|>What is 6 * 7? (part 1)<|end_turn|><|assistant|><think>Six sevens: 42.\nCheck: "
        "7 * 6 = 42. 1</think>42 1<|end_turn|><|eos|>"
    )
    assert rendered == expected
    content = [(s.kind, s.think, tok.decode(s.ids.tolist())) for s in segs if s.kind != SEG_TEMPLATE]
    assert content == [
        (SEG_PROMPT, -1, "Be brief."),
        (SEG_PROMPT, -1, "What is 6 * 7? (part 0)"),
        (SEG_REASONING, 0, "Six sevens: 42.\nCheck: 7 * 6 = 42. 0"),
        (SEG_ANSWER, -1, "42 0"),
        (SEG_PROMPT, -1, "What is 6 * 7? (part 1)"),
        (SEG_REASONING, 1, "Six sevens: 42.\nCheck: 7 * 6 = 42. 1"),
        (SEG_ANSWER, -1, "42 1"),
    ]
    # think markers carry their turn's think index; nothing else does
    t = tpl.tokens
    for s in segs:
        if s.kind == SEG_TEMPLATE and t.think_open in s.ids.tolist() or t.think_close in s.ids.tolist():
            assert s.think >= 0 and len(s.ids) == 1


def test_literal_think_tags_in_text_stay_text(tpl: ChatTemplate) -> None:
    segs = tpl.encode(chat("Explain <think> tags", "I write </think> and <|eos|> literally", "done"))
    t = tpl.tokens
    specials = set(t.as_dict().values())
    for s in segs:
        if s.kind != SEG_TEMPLATE:
            assert not specials & set(s.ids.tolist()), s
    assert segments_ids(segs).tolist().count(t.think_close) == 1


def test_literal_specials_with_many_special_tokens(tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokenizers with many special tokens scan texts with one regex: same result as the substring scan."""
    monkeypatch.setattr(ChatTemplate, "REGEX_ABOVE", 0)
    tpl = ChatTemplate(tok, resolve_template(tok))
    assert tpl._special_re is not None
    texts = ["plain text", "a <think> b", "x</think>", "<|user|> said", "no tags"]
    got = [ids.tolist() for ids in tpl.encode_texts(texts)]
    assert got == [tok.encode(t, add_special_tokens=False).ids for t in texts]  # tok encodes specials as text
    assert tok.token_to_id("<think>") not in got[1]


def test_assistant_without_reasoning_and_empty_texts(tpl: ChatTemplate) -> None:
    segs = tpl.encode(chat("Hi", None, "Hello"))
    assert [s.kind for s in segs] == [SEG_TEMPLATE, SEG_PROMPT, SEG_TEMPLATE, SEG_ANSWER, SEG_TEMPLATE]
    assert all(s.think == -1 for s in segs)
    t = tpl.tokens
    empty = tpl.encode(
        {"kind": "chat", "turns": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]}
    )
    assert segments_ids(empty).tolist() == [t.bos, t.user, t.end_turn, t.assistant, t.end_turn, t.eos]
    with pytest.raises(ValueError, match="role 'tool'"):
        tpl.encode({"kind": "chat", "turns": [{"role": "tool", "content": "x"}]})


def _mixed_samples() -> list:
    """Plain texts, single/multi-turn chats, empty texts, literal special-token strings: every planning branch."""
    texts = corpus(40)
    samples: list = [texts[0], "", "literal <|eos|> and <think> in plain text", {"text": texts[1]}]
    samples += [chat(texts[2][:200], texts[3], "42"), chat("q", None, "a", turns=3, system="be brief")]
    samples += [chat("", "", ""), chat("Why </think>?", "step <|bos|> 1", "done", turns=2)]
    samples += [{"kind": "chat", "turns": [{"role": "assistant", "content": "", "reasoning": "only a trace"}]}]
    return samples + texts[4:]


def test_batch_columns_match_per_sample_encoding(tpl: ChatTemplate) -> None:
    """The columnar batch encoding is exact: the same segments as encoding each sample alone, consistent columns."""
    samples = _mixed_samples()
    enc = tpl.encode_batch(samples)
    assert len(enc.doc_segs) == len(enc.n_tokens) == len(samples)
    assert int(enc.seg_len.sum()) == len(enc.ids) == int(enc.n_tokens.sum())
    assert len(enc.seg_kind) == len(enc.seg_len) == len(enc.seg_think) == int(enc.doc_segs.sum())
    assert not enc.ids.flags.writeable and enc.ids.dtype == np.uint32
    batched = enc.segments()
    for sample, segs in zip(samples, batched):
        alone = tpl.encode(sample)
        assert [(s.kind, s.think, s.ids.tolist()) for s in segs] == [(s.kind, s.think, s.ids.tolist()) for s in alone]
        assert all(len(s.ids) > 0 for s in segs)  # empty texts give no segment
        # template runs are merged: no two adjacent template segments of the same think block
        assert not any(a.kind == b.kind == SEG_TEMPLATE and a.think == b.think for a, b in zip(segs, segs[1:]))
    assert [sum(len(s.ids) for s in segs) for segs in batched] == enc.n_tokens.tolist()
    assert tpl.encode_batch([]).segments() == []


@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_encode_ahead_in_order_and_errors_in_place(tpl: ChatTemplate, ahead: int) -> None:
    samples = _mixed_samples()
    batches = [samples[i : i + 7] for i in range(0, len(samples), 7)]
    got = list(encode_ahead(tpl, iter(batches), ahead=ahead))
    assert [b for b, _ in got] == batches
    for batch, enc in got:
        want = tpl.encode_batch(batch)
        assert np.array_equal(enc.ids, want.ids) and np.array_equal(enc.seg_len, want.seg_len)
        assert np.array_equal(enc.seg_kind, want.seg_kind) and np.array_equal(enc.seg_think, want.seg_think)
    bad = [batches[0], [{"kind": "chat", "turns": [{"role": "tool", "content": "x"}]}], batches[1]]
    stream = encode_ahead(tpl, iter(bad), ahead=ahead)
    assert next(stream)[0] == batches[0]  # the batches before a bad one come through
    with pytest.raises(ValueError, match="role 'tool'"):
        next(stream)


def test_template_segments_trim_keeping_the_answer(tok: Tokenizer, tpl: ChatTemplate) -> None:
    long_reasoning = " ".join(corpus(40))
    segs = tpl.encode(chat("Prove it.", long_reasoning, "Therefore the claim holds. QED"))
    budget = 120
    out, record = trim(segs, budget)
    assert record.status == "trimmed" and out is not None
    ids = segments_ids(out)
    assert len(ids) <= budget
    text = tok.decode(ids.tolist(), skip_special_tokens=False)
    assert text.startswith("<|bos|><|user|>Prove it. (part 0)<|end_turn|><|assistant|><think>")
    assert text.endswith("</think>Therefore the claim holds. QED 0<|end_turn|><|eos|>")


def test_assistant_flags(tpl: ChatTemplate) -> None:
    t = tpl.tokens
    segs = tpl.encode(chat("q", "r", "a", turns=2, system="s"))
    ids = segments_ids(segs)
    flags = assistant_flags(segs, t)
    flagged = ids[flags].tolist()
    assert flagged == [t.think_open, t.think_close, t.end_turn] * 2  # assistant-side template tokens only
    assert len(flags) == len(ids)


def test_plain_window_decodes_to_text(tok: Tokenizer, tpl: ChatTemplate) -> None:
    texts = corpus(30)
    packer = Packer(seq_len=4096, pad_id=tpl.tokens.pad, buffer_windows=4)
    windows = []
    for i, segs in enumerate(tpl.encode_many(texts)):
        ids = segments_ids(segs)
        seg = np.repeat([s.kind for s in segs], [len(s.ids) for s in segs]).astype(np.uint8)
        windows += packer.add(PackItem(f"d{i}", ids, seg, np.ones_like(seg), atomic=False))
    windows += packer.flush()
    decoded = []
    for w in windows:
        ends = [*w.doc_offsets[1:], int(np.count_nonzero(w.segment))]
        for sid, a, b in zip(w.sample_ids, w.doc_offsets, ends):
            decoded.append((sid, w.input_ids[a:b]))
    pieces: dict[str, list[int]] = {}
    for sid, ids in decoded:
        pieces.setdefault(sid, []).extend(ids.tolist())
    for i, text in enumerate(texts):
        assert tok.decode(pieces[f"d{i}"], skip_special_tokens=True) == text


def test_given_tokenizer_template_map_and_refusal(tmp_path: Path) -> None:
    names = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "user": "[INST]", "end_turn": "[/INST]"}
    trained = train_tokenizer(corpus(200), vocab_size=800, template=names)
    path = save_tokenizer(trained, tmp_path / "given" / "tokenizer.json")
    tok = load_tokenizer(path.parent)  # a folder holding tokenizer.json works too
    size = tok.get_vocab_size()
    tokens = resolve_template(tok, names)
    assert tokens.bos == tok.token_to_id("<s>") and tokens.user == tok.token_to_id("[INST]")
    assert tokens.think_open == tok.token_to_id("<think>")  # unmapped keys default to our names
    with pytest.raises(ValueError, match=r"tokenizer.template.think_open: token '<thinking>' is not in"):
        resolve_template(tok, {**names, "think_open": "<thinking>"})
    with pytest.raises(ValueError, match=r"tokenizer.template.bos: token '<\|bos\|>'"):
        resolve_template(tok)  # its BOS is '<s>': the default name does not exist
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['thinking'\]"):
        resolve_template(tok, {"thinking": "<think>"})
    assert tok.get_vocab_size() == size  # never grown


def _prefixing_tokenizers() -> list[Tokenizer]:
    texts = corpus(200)
    out = []
    bl = Tokenizer(models.BPE())
    bl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bl.decoder = decoders.ByteLevel()
    bl.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    out.append(bl)
    ms = Tokenizer(models.BPE())
    ms.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    ms.decoder = decoders.Metaspace(prepend_scheme="always")
    ms.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600))
    out.append(ms)
    sp = Tokenizer(models.BPE())  # sentencepiece (Llama 2) style: the normalizer prepends, the decoder strips
    sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    sp.train_from_iterator(texts + ["The proofs go by induction on n."], trainers.BpeTrainer(vocab_size=600))
    out.append(sp)
    return out


@pytest.mark.parametrize("which", [0, 1, 2], ids=["bytelevel-prefix-space", "metaspace-always", "prepend-normalizer"])
def test_loading_removes_start_prefixing(tmp_path: Path, which: int) -> None:
    raw = _prefixing_tokenizers()[which]
    parts = ["The proof", "s go by induction", " on n."]
    naive = sum((raw.encode(p, add_special_tokens=False).ids for p in parts), [])
    assert raw.decode(naive) != "".join(parts)  # the problem being fixed
    tok = load_tokenizer(save_tokenizer(raw, tmp_path / "tokenizer.json"))
    ids = sum((tok.encode(p, add_special_tokens=False).ids for p in parts), [])
    assert tok.decode(ids) == "".join(parts)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["bytelevel-prefix-space", "metaspace-always", "prepend-normalizer"])
def test_preparing_is_idempotent_and_skips_prepared_tokenizers(tmp_path: Path, which: int) -> None:
    raw = _prefixing_tokenizers()[which]
    spec = prepared_spec(raw)
    assert spec != raw.to_str()
    once = prepare(raw)
    assert prepared_spec(once) == once.to_str()  # prepared already: its own text, no rebuild
    assert once.to_str() == Tokenizer.from_str(spec).to_str()
    loaded = load_tokenizer(save_tokenizer(raw, tmp_path / "raw.json"))  # a file that needs preparing
    again = load_tokenizer(save_tokenizer(once, tmp_path / "prepared.json"))  # one that does not
    assert loaded.to_str() == again.to_str() == once.to_str()
    assert loaded.encode_special_tokens and again.encode_special_tokens


def test_newline_ids(tok: Tokenizer) -> None:
    ids = newline_ids(tok)
    assert tok.token_to_id("Ċ") in ids
    assert all(tok.decode([i]).endswith("\n") for i in ids)


def test_tokenizer_config_validation() -> None:
    assert TokenizerConfig(path=Path("tok.json")).train is None
    cfg = TokenizerConfig(train={"vocab_size": 32000}, template={"think_open": "<think>"})
    assert cfg.train is not None and cfg.train.sample_docs == 100_000
    with pytest.raises(ValidationError, match="exactly one of 'path'"):
        TokenizerConfig()
    with pytest.raises(ValidationError, match="got both"):
        TokenizerConfig(path=Path("t.json"), train={"vocab_size": 32000})
    with pytest.raises(ValidationError, match=r"unknown key\(s\) \['begin'\]"):
        TokenizerConfig(path=Path("t.json"), template={"begin": "<s>"})
    with pytest.raises(ValidationError, match="extra"):
        TokenizerConfig(path=Path("t.json"), vocab=3)
    with pytest.raises(ValidationError, match="vocab_size"):
        TokenizerConfig(train={"vocab_size": 10})
    assert TokenizerConfig(path=Path("t.json")).backend == "auto"
    with pytest.raises(ValidationError, match="backend"):
        TokenizerConfig(path=Path("t.json"), backend="fast")


# ---------------------------------------------------------------------------------------------------- backends
def _backend_batches(n: int = 8) -> list[list]:
    """Realistic batches: PEP/LaTeX paragraphs, chat samples (one with a literal <think> in its prompt)."""
    texts = corpus(400)
    samples: list = []
    for i, text in enumerate(texts):
        samples.append(text if i % 3 else chat(text[:200], text, f"{i}", turns=1 + i % 2))
    samples.append(chat("Is <think> a tag here?", "It is text.", "yes"))
    size = -(-len(samples) // n)
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def _columns_equal(a, b) -> bool:
    return all(np.array_equal(getattr(a, c), getattr(b, c)) for c in ("ids", "seg_kind", "seg_len", "seg_think"))


def test_gigatoken_backend_equals_tokenizers(tok: Tokenizer) -> None:
    pytest.importorskip("gigatoken")
    ref = ChatTemplate(tok, resolve_template(tok))
    fast = ChatTemplate(tok, resolve_template(tok), backend="gigatoken")
    assert ref.backend == "tokenizers" and fast.backend == "gigatoken"
    assert ChatTemplate(tok, resolve_template(tok), backend="auto").backend == "gigatoken"  # installed: used
    batches = _backend_batches()
    for (_, want), (_, got) in zip(encode_ahead(ref, batches), encode_ahead(fast, batches), strict=True):
        assert _columns_equal(want, got)
    assert fast.stats["batches_gigatoken"] == len(batches) and fast.stats["parity_texts"] > 0
    assert fast.stats["parity_failures"] == 0 and ref.stats["batches_tokenizers"] == len(batches)


def test_gigatoken_parity_failure_falls_back_in_batch_order(
    tok: Tokenizer, tpl: ChatTemplate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast encoder that goes wrong from batch 3 on: batches 0-2 stay gigatoken, every later batch is re-encoded
    with tokenizers (the switch is decided in batch order, so two runs agree), one log line says so."""
    pytest.importorskip("gigatoken")
    from reasonpipe.tokenizer import backends, template

    batches = _backend_batches()
    for batch in batches[3:]:
        batch[:] = [s + " ZEBRA" if isinstance(s, str) else s for s in batch]
    right = backends.GigatokenEncoder.encode_flat

    def wrong(self, texts):
        ids, lens = right(self, texts)
        bad = np.array([" ZEBRA" in t for t in texts])
        ids = ids.copy()
        ids[(np.cumsum(lens) - lens)[bad & (lens > 0)]] += 1  # first token of each such text
        return ids, lens

    monkeypatch.setattr(backends.GigatokenEncoder, "encode_flat", wrong)
    monkeypatch.setattr(backends, "PARITY_EVERY", 1)  # check every text, so batch 3 is the one that differs
    logged: list[str] = []
    monkeypatch.setattr(template, "log_warning", logged.append)
    runs = []
    for _ in range(2):
        fast = ChatTemplate(tok, resolve_template(tok), backend="gigatoken")
        runs.append([enc for _, enc in encode_ahead(fast, batches)])
        assert fast.stats["parity_failures"] == 1 and fast.stats["batches_gigatoken"] == 3
        assert fast.stats["batches_tokenizers"] == len(batches) - 3
    for want, got, again in zip(encode_ahead(tpl, batches), *runs):
        assert _columns_equal(want[1], got) and _columns_equal(got, again)
    assert len(logged) == 2 and "gigatoken differs from tokenizers (text " in logged[0]


def test_backend_choice_without_gigatoken(tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    from reasonpipe.tokenizer import backends

    monkeypatch.setattr(backends, "gigatoken_available", lambda: False)
    assert ChatTemplate(tok, resolve_template(tok), backend="auto").backend == "tokenizers"
    assert TokenizerConfig(path=Path("t.json"), backend="auto").backend == "auto"
    with pytest.raises(ValidationError, match=r"backend\n.*gigatoken is not installed"):
        TokenizerConfig(path=Path("t.json"), backend="gigatoken")
    with pytest.raises(ValueError, match=r"gigatoken is not installed; `pip install 'reasonpipe\[gigatoken\]'`"):
        ChatTemplate(tok, resolve_template(tok), backend="gigatoken")


def test_fast_encoders_are_shared_by_threads_and_tasks(tok: Tokenizer, tpl: ChatTemplate, monkeypatch) -> None:
    """Three tasks of one process (fresh copies), each encoding in two threads, build at most two gigatoken
    encoders between them (~0.2 s each), and encode what tokenizers does."""
    pytest.importorskip("gigatoken")
    from reasonpipe.tokenizer import template as template_module

    made = []
    build = template_module.make_fast_encoder
    monkeypatch.setattr(template_module, "make_fast_encoder", lambda *a: made.append(a) or build(*a))
    loaded = ChatTemplate(tok, resolve_template(tok), backend="gigatoken")
    for _ in range(3):
        task = loaded.fresh()
        for batch, encoded in encode_ahead(task, _backend_batches()):
            assert _columns_equal(tpl.encode_batch(batch), encoded)
        assert task.stats["batches_gigatoken"] == len(_backend_batches()) and not task.stats["parity_failures"]
    assert 1 <= len(made) <= 2 and len(loaded._idle) == len(made)


def test_gigatoken_encoder_renewal_keeps_ids(tok: Tokenizer, tpl: ChatTemplate, monkeypatch) -> None:
    """The encoder is rebuilt every RENEW_CHARS characters (bounding its pre-token cache): same ids."""
    pytest.importorskip("gigatoken")
    from reasonpipe.tokenizer import backends

    monkeypatch.setattr(backends, "RENEW_CHARS", 5000)
    fast = ChatTemplate(tok, resolve_template(tok), backend="gigatoken")
    (encoder,) = fast._idle
    first = encoder._encoder
    for batch in _backend_batches():
        assert _columns_equal(tpl.encode_batch(batch), fast.encode_batch(batch))
    assert encoder._encoder is not first
