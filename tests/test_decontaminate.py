"""decontaminate: planted benchmark items with light perturbations are caught and attributed; clean text passes."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document
from dedupdata import REAL, generated_texts, real_texts
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from stagekit import read_exclusions, run_stage

from reasonpipe.filters.decontaminate import DecontaminateOptions, NgramIndex
from reasonpipe.filters.normalize import prepare


def light_perturbation(text: str, rng: random.Random, change_word: bool = True) -> str:
    """Change case, whitespace and punctuation, and (optionally) one word away from the ends."""
    words = text.split()
    if change_word and len(words) > 4:
        words[rng.randrange(2, len(words) - 2)] = rng.choice(["banana", "however", "quickly", "seven"])
    out = "  ".join(words) if rng.random() < 0.5 else "\n".join(words)
    out = out.replace(",", "").replace(".", " . ").replace("?", "!")
    return out.upper() if rng.random() < 0.5 else out.lower()


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


def _planted(items: list[str], clean: list[str], rng: random.Random) -> list[Document]:
    """Clean documents, then one document per item: clean text + the perturbed item + clean text."""
    docs = [Document(text=t, id=f"clean-{i}", metadata={"domain": "web"}) for i, t in enumerate(clean)]
    for i, item in enumerate(items):
        text = f"{rng.choice(clean)}\n\n{light_perturbation(item, rng)}\n\n{rng.choice(clean)}"
        docs.append(Document(text=text, id=f"planted-{i}", metadata={"domain": "web"}))
    return docs


def test_planted_items_are_caught_and_attributed(tmp_path) -> None:
    rng = random.Random(0)
    questions = generated_texts(60, seed=11, words=(16, 60))
    bench = _write_jsonl(
        tmp_path / "bench.jsonl.gz",
        [{"question": q, "answer": f"#### {i}", "uid": f"q{i}"} for i, q in enumerate(questions)],
    )
    clean = generated_texts(300, seed=12)
    docs = _planted(questions, clean, rng)
    opts = {"benchmarks": [{"name": "gen", "path": str(bench), "fields": ["question", "answer"], "id_field": "uid"}]}
    kept, stats = run_stage("decontaminate", opts, docs, tasks=2, tmp_path=tmp_path)
    assert {d.id for d in kept} == {f"clean-{i}" for i in range(len(clean))}
    assert stats["hits_gen"] == stats["dropped_contaminated"] == len(questions)
    assert stats["total"] == stats["forwarded"] + stats["dropped"]
    for doc in read_exclusions(tmp_path):
        assert doc.metadata["contaminated_by"] == {"benchmark": "gen", "item": f"q{doc.id.split('-')[1]}"}
        assert doc.metadata["filter_reason"] == "contaminated"


def test_short_items_whole_gram_and_domains(tmp_path) -> None:
    records = [{"q": "What is 17 * 23?"}, {"q": "Name the capital city of France, please."}, {"q": "Hi there"}]
    table = pa.Table.from_pylist(records)
    pq.write_table(table, tmp_path / "short.parquet")
    docs = [
        Document(text="quiz: WHAT is 17*23", id="a", metadata={"domain": "math"}),
        Document(text="what is 17 * 24?", id="b", metadata={"domain": "math"}),  # a different problem
        Document(text="name the capital city of france please, said the teacher", id="c", metadata={"domain": "web"}),
        Document(text="hi there, general kenobi", id="d", metadata={"domain": "web"}),  # too short to index
        Document(text="what is 17 * 23", id="e", metadata={"domain": "code"}),  # outside the selected domains
    ]
    opts = {"benchmarks": [{"name": "short", "path": str(tmp_path / "short.parquet"), "fields": ["q"]}]}
    kept, stats = run_stage("decontaminate", opts, docs, tasks=1, domains=["math", "web"], tmp_path=tmp_path)
    assert [d.id for d in kept] == ["b", "d", "e"]
    assert {d.id: d.metadata["contaminated_by"]["item"] for d in read_exclusions(tmp_path)} == {"a": 0, "c": 1}


def test_options_errors_name_the_problem(tmp_path) -> None:
    good = _write_jsonl(tmp_path / "b.jsonl", [{"question": "one two three four five"}])
    with pytest.raises(ValidationError, match="file not found"):
        DecontaminateOptions.model_validate({"benchmarks": [{"name": "x", "path": "nope.jsonl", "fields": ["q"]}]})
    (tmp_path / "b.csv").write_text("q\n")
    with pytest.raises(ValidationError, match=r"must end with \.jsonl"):
        DecontaminateOptions.model_validate(
            {"benchmarks": [{"name": "x", "path": tmp_path / "b.csv", "fields": ["q"]}]}
        )
    with pytest.raises(ValidationError, match="fields"):
        DecontaminateOptions.model_validate({"benchmarks": [{"name": "x", "path": good, "fields": []}]})
    with pytest.raises(ValidationError, match="unique"):
        b = {"name": "x", "path": good, "fields": ["question"]}
        DecontaminateOptions.model_validate({"benchmarks": [b, b]})
    opts = {"benchmarks": [{"name": "x", "path": str(good), "fields": ["answer"]}]}
    with pytest.raises(Exception, match="field 'answer' is in no record"):
        run_stage("decontaminate", opts, [Document(text="t", id="t", metadata={})], tasks=1, tmp_path=tmp_path)


@pytest.mark.skipif(not REAL.exists(), reason="real data not available")
def test_real_benchmarks_planted_in_real_text(tmp_path) -> None:
    """GSM8K questions, HumanEval prompts and MBPP problems+solutions, lightly perturbed, inside real paragraphs."""
    rng = random.Random(3)
    sources = {  # name: file, indexed fields, id field, planted fields
        "gsm8k": (REAL / "math/gsm8k_train.jsonl", ["question", "answer"], None, ["question"]),
        "humaneval": (REAL / "code/humaneval.jsonl", ["prompt", "canonical_solution"], "task_id", ["prompt"]),
        "mbpp": (REAL / "code/mbpp.jsonl", ["text", "code"], "task_id", ["text", "code"]),
    }
    benchmarks, items = [], []
    for name, (path, fields, id_field, planted_fields) in sources.items():
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][:300]
        bench_path = _write_jsonl(tmp_path / f"{name}.jsonl", records)
        benchmarks.append({"name": name, "path": str(bench_path), "fields": fields, "id_field": id_field})
        for i in rng.sample(range(len(records)), 40):
            text = "\n".join(records[i][f] for f in planted_fields)
            items.append((name, records[i][id_field] if id_field else i, text))
    clean = rng.sample(real_texts(min_words=30, prose_only=True), 600)
    docs = _planted([text for _, _, text in items], clean, rng)
    kept, stats = run_stage("decontaminate", {"benchmarks": benchmarks}, docs, tasks=2, tmp_path=tmp_path)
    caught = {d.id: d.metadata["contaminated_by"] for d in read_exclusions(tmp_path)}
    planted = {f"planted-{i}": {"benchmark": n, "item": item} for i, (n, item, _) in enumerate(items)}
    hits = sum(caught.get(k) == v for k, v in planted.items())
    assert hits >= 0.95 * len(planted), f"caught {hits}/{len(planted)}"
    false = [k for k in caught if k.startswith("clean")]
    assert len(false) <= 0.01 * len(clean), false


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.sampled_from([None, 2]))
def test_the_presence_bitmap_changes_no_match(seed: int, n_items: int, max_items: int | None) -> None:
    """Matching through the bitmap equals searching every gram (a one-entry bitmap lets every gram through)."""
    rng = random.Random(seed)
    items = generated_texts(n_items, seed=seed, words=(4, 40))  # >= min_item_tokens: every item is indexed
    opts = DecontaminateOptions.model_construct(max_items_per_gram=max_items)  # the index reads no benchmark file
    index = NgramIndex(opts)
    index.add("gen", [{"q": q} for q in items], ["q"], None)
    index.prune()
    # items in full (one always matches, unless pruning removed its grams), then cut variants
    pool = [*items, *generated_texts(3, seed=seed + 1)]
    cut = [" ".join(rng.choice(pool).split()[rng.randrange(3) :]) for _ in range(30)]
    texts = items[:3] + cut
    texts = [prepare(t, opts.normalization) for t in texts]
    bitmap = index.match(texts)
    assert any(bitmap) or max_items is not None
    index._present = {size: np.ones(1, dtype=bool) for size in index.sizes}
    assert bitmap == index.match(texts)
