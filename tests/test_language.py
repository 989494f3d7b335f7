"""The offline `language` stage: lingua detection (and a local fastText model), reasons, labels, gating, options."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import orjson
import pytest
from datatrove.data import Document
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from reasonpipe.filters.language import (
    COMPACT_LANGUAGES,
    LanguageFilter,
    LanguageOptions,
    LanguageStage,
    LinguaDetector,
    detect_cached,
    detection_text,
    language_verdict,
    letter_count,
    prose,
)
from reasonpipe.sample import render_text

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"  # shared/ beside the repository

# A small hand-written check set: 3 everyday sentences per language of the compact default set.
SAMPLES = {
    "en": [
        "The library opens at nine in the morning and closes late on Fridays.",
        "She told me that the train had been delayed because of the snow.",
        "We should compare both solutions before choosing the cheaper one.",
    ],
    "fr": [
        "La bibliothèque ouvre à neuf heures et ferme tard le vendredi soir.",
        "Elle m'a dit que le train avait du retard à cause de la neige.",
        "Nous devrions comparer les deux solutions avant de choisir la moins chère.",
    ],
    "de": [
        "Die Bibliothek öffnet um neun Uhr und schließt freitags sehr spät.",
        "Sie sagte mir, dass der Zug wegen des Schnees Verspätung hatte.",
        "Wir sollten beide Lösungen vergleichen, bevor wir die billigere wählen.",
    ],
    "es": [
        "La biblioteca abre a las nueve de la mañana y cierra tarde los viernes.",
        "Ella me dijo que el tren se había retrasado por culpa de la nieve.",
        "Deberíamos comparar ambas soluciones antes de elegir la más barata.",
    ],
    "it": [
        "La biblioteca apre alle nove del mattino e chiude tardi il venerdì.",
        "Mi ha detto che il treno era in ritardo a causa della neve.",
        "Dovremmo confrontare entrambe le soluzioni prima di scegliere la più economica.",
    ],
    "pt": [
        "A biblioteca abre às nove da manhã e fecha tarde às sextas-feiras.",
        "Ela me disse que o trem estava atrasado por causa da neve.",
        "Devemos comparar as duas soluções antes de escolher a mais barata.",
    ],
    "ru": [
        "Библиотека открывается в девять утра и закрывается поздно по пятницам.",
        "Она сказала мне, что поезд опоздал из-за снега.",
        "Нам следует сравнить оба решения, прежде чем выбрать более дешёвое.",
    ],
    "zh": [
        "图书馆早上九点开门，星期五很晚才关门。",
        "她告诉我火车因为下雪晚点了。",
        "我们应该先比较两种方案，再选择便宜的那一种。",
    ],
    "ja": [
        "図書館は朝九時に開いて、金曜日は遅くまで開いています。",
        "雪のせいで電車が遅れたと彼女は言いました。",
        "安い方を選ぶ前に、両方の解決策を比べるべきです。",
    ],
    "ko": [
        "도서관은 아침 아홉 시에 문을 열고 금요일에는 늦게 닫습니다.",
        "그녀는 눈 때문에 기차가 늦었다고 말했습니다.",
        "더 싼 것을 고르기 전에 두 가지 해결책을 비교해야 합니다.",
    ],
}


def doc(text: str, domain: str = "web", i: int = 0) -> Document:
    return Document(text=text, id=f"lang/{i}", metadata={"source": "test", "domain": domain})


@pytest.fixture(scope="module")
def detector() -> LinguaDetector:
    return LinguaDetector(COMPACT_LANGUAGES)


def test_accuracy_on_a_small_multilingual_set(detector, no_network, capsys):
    results = [(code, detector.detect(text)) for code, texts in SAMPLES.items() for text in texts]
    accuracy = sum(found is not None and found[0] == code for code, found in results) / len(results)
    with capsys.disabled():
        print(f"\nlingua accuracy on {len(results)} sentences in {len(SAMPLES)} languages: {accuracy:.3f}")
    assert accuracy >= 0.95
    assert all(0.0 < found[1] <= 1.0 for _, found in results)


def test_real_english_prose_is_kept_and_labelled(detector, no_network, capsys):
    path = REAL / "prose/python_peps_paragraphs_6k.jsonl"
    if not path.exists():
        pytest.skip("real prose not available")
    with open(path) as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(300), f)]
    step = LanguageFilter(detector, languages=["en"])
    docs = [doc(t, i=i) for i, t in enumerate(texts)]
    verdicts = [step.filter(d) for d in docs]
    judged = [d for d in docs if "language" in d.metadata]
    keep_rate = verdicts.count(True) / len(verdicts)
    with capsys.disabled():
        print(f"\nlanguage keep rate on PEP paragraphs (en): {keep_rate:.3f}, judged {len(judged)}/{len(docs)}")
    assert keep_rate >= 0.99 and len(judged) >= 0.9 * len(docs)
    assert all(d.metadata["language"] == "en" and d.metadata["language_score"] >= 0.5 for d in judged)


def test_real_chinese_instructions_are_dropped_by_code(detector):
    path = REAL / "reasoning/marco_o1_cot.jsonl"
    if not path.exists():
        pytest.skip("real reasoning data not available")
    rows = [json.loads(line) for line in open(path)]
    chinese = [r["instruction"] for r in rows if sum("\u4e00" <= ch <= "\u9fff" for ch in r["instruction"]) > 20]
    step = LanguageFilter(detector, languages=["en"])
    assert chinese and all(step.filter(doc(t)) == (False, "language_zh") for t in chinese)


def test_reasons_labels_and_label_only_mode(detector):
    keep_en = LanguageFilter(detector, languages=["en"])
    french = doc(SAMPLES["fr"][0] + " " + SAMPLES["fr"][1])
    assert keep_en.filter(french) == (False, "language_fr")
    assert french.metadata["language"] == "fr" and 0.5 < french.metadata["language_score"] <= 1.0

    mixed_text = SAMPLES["en"][2] + " " + SAMPLES["fr"][2] + " " + SAMPLES["en"][0]
    found = detector.detect(prose(mixed_text))
    assert found[0] == "en" and found[1] < 1.0
    strict = LanguageFilter(detector, languages=["en"], min_confidence=1.0)
    assert strict.filter(doc(mixed_text)) == (False, "wrong_language")

    label_only = LanguageFilter(detector, languages=None)
    assert label_only.filter(french) is True and french.metadata["language"] == "fr"


def test_verdict_rules():
    assert language_verdict(("de", 0.9), ["en"], 0.5) == (False, "language_de")
    assert language_verdict(("en", 0.4), ["en"], 0.5) == (False, "wrong_language")
    assert language_verdict(("en", 0.9), ["en", "fr"], 0.5) == (True, None)
    assert language_verdict(None, ["en"], 0.5) == (True, None)
    assert language_verdict(("de", 0.9), None, 0.5) == (True, None)


def test_math_and_code_are_not_judged_as_language(detector):
    step = LanguageFilter(detector, languages=["fr"])
    math_only = doc("$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$ and $a^2 + b^2 = c^2$")
    code_only = doc("```python\nfor i in range(10):\n    print(i ** 2)\n```")
    for d in (math_only, code_only):
        assert step.filter(d) is True and "language" not in d.metadata
    assert prose("Let $x = 1$ and \\emph{note} `code()` see https://a.b/c 42.") == "Let and note see ."


def test_domain_gating(detector):
    step = LanguageFilter(detector, languages=["en"], domains=["web"])
    german = doc(SAMPLES["de"][0], domain="math")
    assert step.filter(german) is True and "language" not in german.metadata
    assert step.filter(doc(SAMPLES["de"][0], domain="web")) == (False, "language_de")


def test_options_validation(tmp_path):
    opts = LanguageOptions(languages=["nl"], low_accuracy=True)
    assert "nl" in opts.detector().languages and "en" in opts.detector().languages
    with pytest.raises(ValidationError, match="unknown language code 'xx'"):
        LanguageOptions(languages=["xx"])
    with pytest.raises(ValidationError, match="needs model_path"):
        LanguageOptions(backend="fasttext")
    with pytest.raises(ValidationError, match="file not found"):
        LanguageOptions.model_validate(
            {"backend": "fasttext", "model_path": "lid.bin"}, context={"base_dir": tmp_path}
        )
    with pytest.raises(ValidationError, match="min_confidence"):
        LanguageOptions(min_confidence=1.5)
    with pytest.raises(ValidationError, match="extra"):
        LanguageOptions(language=["en"])
    assert "keep en" in LanguageStage().describe(LanguageOptions())


def test_filter_pickles_without_its_loaded_models(detector):
    step = LanguageFilter(LinguaDetector(["en", "fr"]), languages=["en"])
    assert step.filter(doc(SAMPLES["fr"][0])) == (False, "language_fr")
    assert step.detector._detector is not None
    clone = pickle.loads(pickle.dumps(step))
    assert clone.detector._detector is None
    assert clone.filter(doc(SAMPLES["fr"][1])) == (False, "language_fr")
    # the clone (a later task in the same worker process) reuses the loaded models; another configuration does not
    assert clone.detector._detector is step.detector._detector
    assert LinguaDetector(["fr", "en", "en"]).detector is step.detector.detector
    assert LinguaDetector(["en", "fr"], low_accuracy=True).detector is not step.detector.detector


def test_fasttext_backend_with_a_local_model(tmp_path, no_network):
    fasttext = pytest.importorskip("fasttext")
    lines = [f"__label__{code} {text}" for code in ("en", "fr") for text in SAMPLES[code] * 10]
    (tmp_path / "train.txt").write_text("\n".join(lines), encoding="utf-8")
    model = fasttext.train_supervised(
        str(tmp_path / "train.txt"), epoch=25, dim=16, minn=2, maxn=4, thread=1, verbose=0
    )
    model.save_model(str(tmp_path / "lid.bin"))
    opts = LanguageOptions.model_validate(
        {"backend": "fasttext", "model_path": "lid.bin", "languages": ["en"], "min_confidence": 0.5},
        context={"base_dir": str(tmp_path)},
    )
    step = LanguageFilter(opts.detector(), languages=opts.languages, min_confidence=opts.min_confidence)
    assert step.filter(doc(SAMPLES["en"][0])) is True
    assert step.filter(doc(SAMPLES["fr"][0])) == (False, "language_fr")


def test_language_stage_through_the_registry(tmp_path):
    from tests.stagekit import read_exclusions, run_stage

    docs = [doc(t, i=i) for i, t in enumerate(SAMPLES["en"] + SAMPLES["de"])]
    docs.append(doc(SAMPLES["de"][1], domain="code", i=99))
    kept, stats = run_stage(
        "language", {"languages": ["en"], "low_accuracy": True}, docs, tasks=2, domains=["web"], tmp_path=tmp_path
    )
    assert sorted(d.id for d in kept) == sorted(d.id for d in docs if d.text in SAMPLES["en"] or d.id == "lang/99")
    assert stats["dropped_language_de"] == 3 and stats["total"] == len(docs)
    assert all(d.metadata["language"] == "en" for d in kept if d.id != "lang/99")
    assert {d.metadata["filter_reason"] for d in read_exclusions(tmp_path)} == {"language_de"}


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=60) | st.text(st.characters(codec="ascii"), max_size=60))
def test_letter_count_counts_what_the_letter_pattern_finds(text):
    assert letter_count(text) == len(re.findall(r"[^\W\d_]", text))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([*"ab xyz$\\{}()=+12`\n.,é中", "\\frac", "$$", "```", "http://x.y/z"]), max_size=40))
def test_prose_is_idempotent_and_free_of_math_and_code(pieces):
    out = prose("".join(pieces))
    assert prose(out) == out
    assert not any(ch in out for ch in "$\\{}()=+`0123456789")


class Counting:
    """A detector that counts its calls (and says every text is English)."""

    def __init__(self, signature: str = "counting/1"):
        self.signature, self.calls = signature, []

    def detect(self, text: str):
        self.calls.append(text)
        return ("en", 0.9)


def test_each_text_is_detected_once_per_document():
    d = doc("some text")
    first, other = Counting(), Counting("counting/2")
    assert detect_cached(d, first, "hello there") == ("en", 0.9)
    assert detect_cached(d, first, "hello there") == ("en", 0.9) and len(first.calls) == 1
    detect_cached(d, first, "another text")
    detect_cached(d, other, "hello there")  # another detector (or settings): its own verdict
    assert len(first.calls) == 2 and len(other.calls) == 1
    stored = orjson.loads(orjson.dumps(d.metadata))  # the cache travels with the document between runs
    again = Document(text=d.text, id=d.id, metadata=stored)
    assert detect_cached(again, first, "hello there") == ("en", 0.9) and len(first.calls) == 2


def chat_doc(problem: str, reasoning: str, answer: str = "The answer is 4.", i: int = 0) -> Document:
    turns = [{"role": "user", "content": problem, "reasoning": None}]
    turns.append({"role": "assistant", "content": answer, "reasoning": reasoning})
    meta = {"source": "t", "domain": "reasoning", "kind": "chat", "turns": turns}
    return Document(text=render_text(turns), id=f"chat/{i}", metadata=meta)


def test_language_stage_reuses_what_reasoning_quality_detected():
    from reasonpipe.filters.reasoning import ReasoningOptions, ReasoningQualityFilter

    reasoning_detector = LinguaDetector(ReasoningOptions().detector_languages)
    language_detector = LanguageOptions().detector()
    assert reasoning_detector.signature == language_detector.signature  # the defaults share their verdicts
    quality = ReasoningQualityFilter(detector=reasoning_detector)
    language = LanguageFilter(language_detector, languages=["en"])
    problem = " ".join(SAMPLES["en"]) + " What do you think about all of this, and why?"
    trace = "Let me think about this carefully. " + " ".join(SAMPLES["en"][::-1]) + " So it adds up to four."
    docs = [chat_doc(problem, trace + f" Step {i} done.", i=i) for i in range(3)]
    assert all(quality.filter(d) is True for d in docs)
    assert all(language.filter(d) is True for d in docs)
    assert quality.stats["lang_detected"].total == 6
    assert "lang_detected" not in language.stats.stats and language.stats["lang_reused"].total == 3


def test_a_chat_sample_is_judged_by_the_longer_of_its_problem_and_its_trace(detector):
    english = " ".join(SAMPLES["en"] * 8)[:1500]  # the first 2000 prose characters of the whole text are English
    french = " ".join(SAMPLES["fr"] * 10)[:1800]
    step = LanguageFilter(detector, languages=["en"])
    assert step.filter(chat_doc(english, french)) == (False, "language_fr")  # the trace dominates
    d = chat_doc(" ".join(SAMPLES["fr"]), english)
    assert step.filter(d) is True and d.metadata["language"] == "en"


def test_probing_long_texts_agrees_with_reading_them_whole(no_network, capsys):
    files = ["prose/python_peps_paragraphs_6k.jsonl", "math_prose/stacks_project_paragraphs_5k.jsonl"]
    files += ["reasoning/marco_o1_cot.jsonl"]
    if not all((REAL / f).exists() for f in files):
        pytest.skip("real data not available")
    texts = []
    for name in files:
        with open(REAL / name) as f:
            for line in f:
                rec = json.loads(line)
                for value in (rec.get("text"), rec.get("instruction"), rec.get("response")):
                    if value and len(text := detection_text(value, 2000)) > 800:
                        texts.append(text)
    texts = texts[::2][:200]
    probed = LinguaDetector(COMPACT_LANGUAGES)
    whole = LinguaDetector(COMPACT_LANGUAGES, probe_chars=0)
    assert probed.signature != whole.signature
    same = sum(probed.detect(t)[0] == whole.detect(t)[0] for t in texts)
    with capsys.disabled():
        print(f"\nprobe vs whole-text lingua on {len(texts)} real texts > 800 chars: {same} agree")
    assert len(texts) >= 150 and same == len(texts)
