"""Tokenizer datatrove steps end to end: TokenizeToCache -> CacheReader -> MixtureSample -> APTrim -> PackWriter ->
finalize_output, on a small realistic corpus (GSM8K + PEP paragraphs when the real data is there, generated otherwise).
Accounting (every sample in samples/ exactly once per copy), placement, determinism and idempotence."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.writers.jsonl import JsonlWriter

from reasonpipe.docio import DOC_GLOB, read_docs
from reasonpipe.pipeline.executors import preload_for_fork
from reasonpipe.pipeline.tail import smallest_of_samples
from reasonpipe.sample import render_text
from reasonpipe.tokenizer.cache import read_cache
from reasonpipe.tokenizer.config import TrainConfig
from reasonpipe.tokenizer.index import finalize_output
from reasonpipe.tokenizer.mixture import copies
from reasonpipe.tokenizer.shards import ShardSet, open_shard, sha256_file
from reasonpipe.tokenizer.steps import (
    MixtureSample,
    PackWriter,
    TokenizerSample,
    TokenizeToCache,
    TrimmedSizes,
    cache_token_stats,
    sample_key,
    sum_stats,
    train_from_documents,
)
from reasonpipe.tokenizer.template import ChatTemplate
from reasonpipe.tokenizer.vocab import load_tokenizer, resolve_template, save_tokenizer
from reasonpipe.trimming.core import trim
from reasonpipe.trimming.step import APTrim

REAL = Path("/work/shared/data/real")
SEQ, CONTEXT, RATES, SEED = 256, 256, {"math": 1.6, "web": 0.7}, 3


def _real_records() -> tuple[list[tuple[str, str, str]], list[str]]:
    gsm, peps = [], []
    with open(REAL / "math/gsm8k_train.jsonl", encoding="utf-8") as f:
        for _, line in zip(range(160), f):
            r = json.loads(line)
            solution, answer = r["answer"].split("####")
            gsm.append((r["question"], solution.strip(), answer.strip()))
    with open(REAL / "prose/python_peps_paragraphs_6k.jsonl", encoding="utf-8") as f:
        peps = [json.loads(line)["text"] for _, line in zip(range(160), f)]
    return gsm, peps


def _generated_records() -> tuple[list[tuple[str, str, str]], list[str]]:
    rng = random.Random(0)
    words = "we add the numbers so each box has apples total is then left over and".split()
    gsm = []
    for i in range(160):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        steps = "\n".join(f"{' '.join(rng.choices(words, k=8))} {a}+{b}={a + b}" for _ in range(rng.randint(1, 5)))
        gsm.append((f"Problem {i}: what is {a} plus {b}?", steps, str(a + b)))
    peps = [" ".join(rng.choices(words + ["PEP", "Python", "."], k=rng.randint(10, 300))) for _ in range(160)]
    return gsm, peps


def make_docs() -> list[Document]:
    """Chat samples with short to very long reasoning (some trimmed, a few dropped), multi-turn ones, plain text."""
    gsm, peps = _real_records() if REAL.exists() else _generated_records()
    rng = random.Random(1)
    docs = []
    for i, (question, solution, answer) in enumerate(gsm):
        reasoning = "\n".join([solution] * rng.choice([1, 1, 2, 5, 12]))  # long traces must be generated
        if i % 40 == 7:
            question = " ".join([question] * 30)  # prompt alone exceeds the context: dropped
        turns = [
            {"role": "user", "content": question, "reasoning": None},
            {"role": "assistant", "content": f"The answer is {answer}.", "reasoning": reasoning},
        ]
        if i % 5 == 0:  # a follow-up turn
            turns += [
                {"role": "user", "content": "Are you sure?", "reasoning": None},
                {"role": "assistant", "content": f"Yes, {answer}.", "reasoning": solution},
            ]
        # four traces per problem (as problem dedup keeps up to K traces under one key); the record's own id
        meta = {"source": "gsm8k", "domain": "math", "kind": "chat", "turns": turns}
        meta |= {"problem_key": f"{i // 4:016x}", "upstream_id": f"gsm-{i}"}
        docs.append(Document(text=render_text(turns), id=f"gsm8k/train.jsonl:{i}", metadata=meta))
    for i, text in enumerate(peps):
        meta = {"source": "peps", "domain": "web", "kind": "text"}
        docs.append(Document(text=text, id=f"peps.jsonl:{i}", metadata=meta))
    random.Random(2).shuffle(docs)
    return docs


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = train_from_documents(make_docs(), TrainConfig(vocab_size=1024, sample_docs=250))
    return save_tokenizer(tok, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def build(root: Path, tokenizer_path: Path, tasks: int = 2, rates: dict = RATES, **pack_options) -> dict:
    """Both runs (tokenise on `tasks` tasks, then pack on `tasks` tasks) and finalize_output into root/out."""
    docs = make_docs()
    for rank in range(tasks):
        step = TokenizeToCache(tokenizer_path, str(root / "cache"), batch_size=64)
        passed = list(step.run(iter(docs[rank::tasks]), rank, tasks))
        assert [d.id for d in passed] == [d.id for d in docs[rank::tasks]]  # documents pass through
    tok = load_tokenizer(tokenizer_path)
    special = resolve_template(tok).as_dict()
    options = {"validation_fraction": 0.15, "seed": SEED, "rows_per_shard": 40, **pack_options}
    for rank in range(tasks):
        pipeline = MixtureSample(root / "cache", rates, "domain", SEED).run(None, rank, tasks)
        excl = JsonlWriter(str(root / "excl"))
        pipeline = APTrim(CONTEXT, exclusion_writer=excl).run(pipeline, rank, tasks)
        assert list(PackWriter(str(root / "pack"), SEQ, special, **options).run(pipeline, rank, tasks)) == []
    extra = {"name": "t", "trim": {"context": CONTEXT, "policy": "tail"}, "mixture": {"by": "domain", "target": None}}
    return finalize_output(root / "pack", root / "out", tokenizer_path, extra, dropped_folder=root / "excl")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tokenizer_path: Path) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("build")
    return root, build(root, tokenizer_path)


def read_samples(out: Path) -> list[dict]:
    return [r for p in sorted((out / "samples").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_cache_round_trip_and_stats(built: tuple[Path, dict], tokenizer_path: Path) -> None:
    root, _ = built
    docs = make_docs()
    tok = load_tokenizer(tokenizer_path)
    template = ChatTemplate(tok, resolve_template(tok))
    expected = {d.id: segs for d, segs in zip(docs, template.encode_many(docs))}
    seen = 0
    for path in sorted((root / "cache").glob("*.arrow")):
        for sample in read_cache(path):
            want = expected[sample.id]
            assert [(s.kind, s.think, s.ids.tolist()) for s in sample.segments] == [
                (s.kind, s.think, s.ids.tolist()) for s in want
            ]
            seen += 1
    assert seen == len(docs)
    stats = cache_token_stats(root / "cache")
    total = sum(sum(len(s.ids) for s in segs) for segs in expected.values())
    assert stats["docs"] == len(docs) and stats["tokens"] == total
    assert sum(stats["by_domain"].values()) == total and set(stats["by_source"]) == {"gsm8k", "peps"}
    assert stats["docs_by_domain"] == {"math": 160, "web": 160}


def test_trimmed_sizes_equal_trimming_every_sample(built: tuple[Path, dict], tokenizer_path: Path) -> None:
    """The partitioned sizes run gives, per group, exactly the tokens trimming every sample at C would keep."""
    root, _ = built
    for rank in range(2):
        assert list(TrimmedSizes(root / "cache", root / "sizes", CONTEXT).run(None, rank, 2)) == []
    sizes = sum_stats(root / "sizes", "*.json")
    tok = load_tokenizer(tokenizer_path)
    want: dict[str, int] = {}
    for doc, segs in zip(make_docs(), ChatTemplate(tok, resolve_template(tok)).encode_many(make_docs())):
        kept, record = trim(segs, CONTEXT)
        n = sum(len(s.ids) for s in segs) if doc.metadata["kind"] == "text" else record.tokens_after
        want[doc.metadata["domain"]] = want.get(doc.metadata["domain"], 0) + n
    assert sizes["by_domain"] == want and sizes["docs"] == len(make_docs())
    assert want["math"] < cache_token_stats(root / "cache")["by_domain"]["math"]  # trimming cut some


def test_every_copy_in_samples_exactly_once(built: tuple[Path, dict]) -> None:
    root, index = built
    docs = make_docs()
    want = []
    for d in docs:
        k = copies(d.id, RATES[d.metadata["domain"]], SEED)
        want += [d.id if c == 0 else f"{d.id}#{c}" for c in range(k)]  # k == 0: sampled out
    rows = read_samples(root / "out")
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(want) and len(set(ids)) == len(ids)
    status = [r["status"] for r in rows]
    assert status.count("dropped") > 0 and status.count("trimmed") > 0 and status.count("fit") > 0
    assert {r["status"] for r in rows if r["domain"] == "web"} == {"plain"}
    trim = index["trim"]
    assert (
        trim["samples"] == trim["fit"] + trim["trimmed"] + trim["dropped"] == sum(r["domain"] == "math" for r in rows)
    )
    assert trim["dropped"] == status.count("dropped")
    for r in rows:
        if r["status"] == "dropped":
            assert (r["shard"], r["row"], r["tokens_after"]) == (-1, -1, 0) and r["tokens_before"] > CONTEXT
        else:
            assert r["tokens_after"] <= (CONTEXT if r["status"] != "plain" else r["tokens_before"])
    # copies are routed with their original
    split = {r["id"]: r["split"] for r in rows if r["status"] != "dropped"}
    for sid, s in split.items():
        if "#" in sid:
            assert split.get(sid.split("#")[0], s) == s


def test_samples_point_at_their_windows(built: tuple[Path, dict]) -> None:
    root, index = built
    out = root / "out"
    sets = {"train": ShardSet(out, "train"), "val": ShardSet(out, "val")}
    starts = {s: np.cumsum([0, *ss.shard_rows]).tolist() for s, ss in sets.items()}
    windows_of: dict[str, list[tuple[str, int]]] = {}
    for split, ss in sets.items():
        for i in range(len(ss)):
            for sid in ss[i].sample_ids:
                windows_of.setdefault(sid, []).append((split, i))
    for r in read_samples(out):
        if r["status"] == "dropped":
            assert r["id"] not in windows_of
            continue
        i = starts[r["split"]][r["shard"]] + r["row"]
        rec = sets[r["split"]][i]
        assert r["id"] in rec.sample_ids
        if r["status"] != "plain":  # atomic: exactly one window, whole
            assert windows_of[r["id"]] == [(r["split"], i)]
            j = rec.sample_ids.index(r["id"])
            end = rec.doc_offsets[j + 1] if j + 1 < len(rec.doc_offsets) else int(np.count_nonzero(rec.segment))
            assert end - rec.doc_offsets[j] == r["tokens_after"]
    assert index["totals"]["val"]["samples"] > 0 and index["totals"]["train"]["samples"] > 0


def test_token_accounting_and_index(built: tuple[Path, dict], tokenizer_path: Path) -> None:
    root, index = built
    out = root / "out"
    rows = read_samples(out)
    packed = [r for r in rows if r["status"] != "dropped"]
    for split in ("train", "val"):
        t = index["totals"][split]
        assert t["real_tokens"] == sum(r["tokens_after"] for r in packed if r["split"] == split)
        assert t["tokens"] == t["windows"] * SEQ and t["samples"] == sum(r["split"] == split for r in packed)
    assert index["packing"]["efficiency"] > 0.95  # a mixed corpus packs tightly
    assert index["packing"]["pad_tokens"] == sum(
        index["totals"][s]["tokens"] - index["totals"][s]["real_tokens"] for s in ("train", "val")
    )
    achieved = index["mixture"]["achieved"]
    assert sum(g["tokens"] for g in achieved.values()) == sum(r["tokens_after"] for r in packed)
    for entry in index["shards"]:
        path = out / entry["path"]
        assert sha256_file(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
        table = open_shard(path)
        assert table.num_rows == entry["rows"]
        seg = table.column("segment").combine_chunks().flatten().to_numpy()
        assert int(np.count_nonzero(seg)) == entry["real_tokens"]
    assert (out / "tokenizer.json").read_bytes() == tokenizer_path.read_bytes()
    assert index["tokenizer"]["special_ids"]["pad"] == load_tokenizer(tokenizer_path).token_to_id("<|pad|>")
    assert json.loads((out / "index.json").read_text()) == index
    assert index["trim"]["tokens_before"] - index["trim"]["tokens_after"] > 0


def test_two_runs_byte_identical_and_finalize_idempotent(
    built: tuple[Path, dict], tmp_path: Path, tokenizer_path: Path
) -> None:
    root, index = built
    again = build(tmp_path, tokenizer_path)
    assert again == index
    names = sorted(p.relative_to(root / "out") for p in (root / "out").rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*") if p.is_file())
    for name in names:
        assert (root / "out" / name).read_bytes() == (tmp_path / "out" / name).read_bytes(), name
    # re-finalizing the same pack folder gives the same files
    extra = {"name": "t", "trim": {"context": CONTEXT, "policy": "tail"}, "mixture": {"by": "domain", "target": None}}
    before = {n: sha256_file(tmp_path / "out" / n) for n in names}
    assert (
        finalize_output(tmp_path / "pack", tmp_path / "out", tokenizer_path, extra, dropped_folder=tmp_path / "excl")
        == index
    )
    assert {n: sha256_file(tmp_path / "out" / n) for n in names} == before


def test_finalize_removes_stale_files_of_a_larger_build(
    built: tuple[Path, dict], tmp_path: Path, tokenizer_path: Path
) -> None:
    root, _ = built
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "09999.arrow").write_bytes(b"stale")
    (out / "samples").mkdir()
    (out / "samples" / "00042.parquet").write_bytes(b"stale")
    finalize_output(root / "pack", out, tokenizer_path, {}, dropped_folder=root / "excl")
    assert not (out / "shards" / "09999.arrow").exists() and not (out / "samples" / "00042.parquet").exists()


def test_assistant_loss_mask_policy(tmp_path: Path, tokenizer_path: Path) -> None:
    index = build(tmp_path, tokenizer_path, tasks=1, loss_mask="assistant", validation_fraction=0.0)
    ss = ShardSet(tmp_path / "out")
    assert len(ss) == index["totals"]["train"]["windows"] and len(ShardSet(tmp_path / "out", "val")) == 0
    for i in range(len(ss)):
        w = ss[i]
        assert not w.loss_mask[(w.segment == 1) | (w.segment == 2) | (w.segment == 0)].any()  # text, prompt, pad
        assert w.loss_mask[(w.segment == 3) | (w.segment == 4)].all()  # reasoning and answers


def test_mixture_sample_determinism_counts_and_passes(built: tuple[Path, dict]) -> None:
    root, _ = built
    step = MixtureSample(root / "cache", RATES, "domain", SEED)
    out = list(step.run(None, 0, 1))
    ids = [d.id for d in out]
    assert ids == [d.id for d in MixtureSample(root / "cache", RATES, "domain", SEED).run(None, 0, 1)]
    docs = make_docs()
    stats = step.stats
    assert stats["total"].total == len(docs) and stats["forwarded"].total == len(out)
    # accounting identity the pipeline checks: read + copies added = kept + sampled out
    added = stats["copies_added"].total if "copies_added" in stats.stats else 0
    dropped = stats["dropped_sampled_out"].total if "dropped_sampled_out" in stats.stats else 0
    assert len(docs) + added == len(out) + dropped
    math_out = sum(1 for i in ids if i.startswith("gsm8k"))
    assert 1.3 * 160 < math_out < 1.9 * 160  # rate 1.6 in expectation
    # copy c of every sample comes after every copy c-1 (pass c); copies carry their original and its metadata
    copy_no = [int(i.rsplit("#", 1)[1]) if "#" in i else 0 for i in ids]
    assert copy_no == sorted(copy_no) and max(copy_no) == 1
    by_id = {d.id: d for d in out}
    for d in out:
        if "#" in d.id:
            original = by_id[d.metadata["copy_of"]]
            assert d.metadata["upstream_id"] == original.metadata["upstream_id"]
            assert [s.ids.tolist() for s in d.metadata["segments"]] == [
                s.ids.tolist() for s in original.metadata["segments"]
            ]
    with pytest.raises(ValueError, match="rates must be >= 0"):
        MixtureSample(root / "cache", {"math": -1.0})


def window_origins(out: Path, split: str = "train") -> list[list[str]]:
    """Per window, the original sample of each document (a copy `x#c` names `x`), from samples/' copy_of."""
    rows = read_samples(out)
    origin = {r["id"]: r["copy_of"] or r["id"] for r in rows}
    return [[origin[sid] for sid in w.sample_ids] for w in ShardSet(out, split)]


@pytest.mark.parametrize("tasks", [1, 2])
def test_upsampled_copies_never_share_a_window(tmp_path: Path, tokenizer_path: Path, tasks: int) -> None:
    """4x up-sampling of every source: no window holds two copies of one sample, and copies sit far apart."""
    index = build(tmp_path, tokenizer_path, tasks, rates={"math": 4.0, "web": 4.0}, validation_fraction=0.0)
    windows = window_origins(tmp_path / "out")
    assert sum(len(w) - len(set(w)) for w in windows) == 0
    first: dict[str, list[int]] = {}
    for k, w in enumerate(windows):
        for o in dict.fromkeys(w):
            if not first.get(o) or first[o][-1] != k:  # a plain document spans windows: count where copies start
                first.setdefault(o, []).append(k)
    gaps = [b - a for ks in first.values() for a, b in zip(ks, ks[1:])]
    per_pass = len(windows) / tasks / 4  # copy c of a sample comes a pass (over its task's cache) after copy c-1
    print(f"{len(windows)} windows, copy distance min {min(gaps)} median {np.median(gaps)}, a pass ~{per_pass:.0f}")
    assert min(gaps) >= 1 and np.median(gaps) >= per_pass / 4
    assert index["packing"]["efficiency"] > 0.95
    from reasonpipe.pipeline import inspect_validate

    assert [str(p) for p in inspect_validate.validate(tmp_path / "out")] == []


def test_no_problem_in_both_splits_and_provenance(built: tuple[Path, dict]) -> None:
    """Routing by problem key: the 4 traces of a problem share a split; upstream ids reach samples/."""
    root, index = built
    rows = read_samples(root / "out")
    splits: dict[str, set[str]] = {}
    for r in rows:
        if r["status"] != "dropped" and r["problem_key"]:
            splits.setdefault(r["problem_key"], set()).add(r["split"])
    assert len(splits) == 40 and all(len(s) == 1 for s in splits.values())
    assert {next(iter(s)) for s in splits.values()} == {"train", "val"}
    upstream = {d.id: d.metadata.get("upstream_id") for d in make_docs()}
    for r in rows:  # packed, dropped by trimming and mixture copies alike
        assert r["upstream_id"] == upstream[r["copy_of"] or r["id"]]
    assert any(r["status"] == "dropped" and r["upstream_id"] for r in rows)
    assert any(r["copy_of"] and r["upstream_id"] for r in rows)


def test_train_from_documents_ignores_input_order() -> None:
    docs = make_docs()
    cfg = TrainConfig(vocab_size=600, sample_docs=100)
    a = train_from_documents(docs, cfg)
    b = train_from_documents(list(reversed(docs)), cfg)
    assert a.to_str() == b.to_str()


def test_output_passes_the_contract_validator(built: tuple[Path, dict]) -> None:
    """Cross-check against `reasonpipe inspect --validate` (the AP invariant, shard and samples contract)."""
    from reasonpipe.pipeline import inspect_validate

    root, _ = built
    assert [str(p) for p in inspect_validate.validate(root / "out")] == []


def test_cache_on_a_non_local_filesystem(built: tuple[Path, dict], tokenizer_path: Path) -> None:
    """The token cache step writes through fsspec (an in-memory filesystem here) and reads back the same samples."""
    from datatrove.io import get_datafolder

    root, _ = built
    docs = make_docs()
    folder = get_datafolder("memory://reasonpipe-test/cache")
    for rank in range(2):
        list(TokenizeToCache(tokenizer_path, folder, batch_size=64).run(iter(docs[rank::2]), rank, 2))
    assert sorted(folder.list_files()) == ["00000.arrow", "00000.stats.json", "00001.arrow", "00001.stats.json"]
    assert not (root / "memory:").exists()
    assert cache_token_stats(folder) == cache_token_stats(root / "cache")
    for rank in range(2):
        remote = MixtureSample(folder, RATES, "domain", SEED).run(None, rank, 2)
        local = MixtureSample(root / "cache", RATES, "domain", SEED).run(None, rank, 2)
        for a, b in zip(remote, local, strict=True):
            assert a.id == b.id and a.metadata.get("upstream_id") == b.metadata.get("upstream_id")
            assert [s.ids.tolist() for s in a.metadata["segments"]] == [s.ids.tolist() for s in b.metadata["segments"]]
    folder.rm("", recursive=True)


def test_tokenizer_sample_per_task_equals_one_pass(tmp_path: Path) -> None:
    """Each task keeps its k smallest hashes; training on the union's k smallest = choosing from everything."""
    docs = make_docs()
    cfg = TrainConfig(vocab_size=600, sample_docs=50)
    for rank in range(3):
        passed = list(TokenizerSample(tmp_path, cfg.sample_docs, SEED).run(iter(docs[rank::3]), rank, 3))
        assert passed == docs[rank::3]
    sampled = []
    for path in sorted(tmp_path.glob(DOC_GLOB)):
        sampled += read_docs(get_datafolder(str(tmp_path)), path.name)
    assert len(sampled) == 3 * cfg.sample_docs
    merged = list(smallest_of_samples(str(tmp_path), cfg.sample_docs, SEED))  # what the training run reads
    smallest = sorted(docs, key=lambda d: sample_key(SEED, d.id))[: cfg.sample_docs]
    assert [d.id for d in merged] == [d.id for d in smallest]
    whole = train_from_documents(docs, cfg, seed=SEED).to_str()
    assert train_from_documents(sampled, cfg, seed=SEED).to_str() == whole
    assert train_from_documents(merged, cfg, seed=SEED).to_str() == whole


def test_merged_samples_keep_every_tie_of_the_last_hash(tmp_path: Path) -> None:
    """Two tasks that saw the same documents: the k-th smallest hash comes twice and both copies are read."""
    docs = make_docs()[:40]
    for rank in range(2):
        list(TokenizerSample(tmp_path, 5, SEED).run(iter(docs), rank, 2))
    merged = [d.id for d in smallest_of_samples(str(tmp_path), 5, SEED)]
    smallest = [d.id for d in sorted(docs, key=lambda d: sample_key(SEED, d.id))[:3]]
    assert merged == [i for i in smallest for _ in range(2)]


def test_validate_catches_copies_together_and_problem_leaks(built: tuple[Path, dict], tmp_path: Path) -> None:
    """`inspect --validate` on a tampered samples/: two documents of one window marked as copies of one sample,
    and a validation sample given the problem key of a training one."""
    import shutil

    import pyarrow as pa

    from reasonpipe.pipeline import inspect_validate

    root, _ = built
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    window = next(w for w in ShardSet(out) if len(w.sample_ids) >= 2)
    a, b = window.sample_ids[:2]
    train_key = next(r["problem_key"] for r in read_samples(out) if r["split"] == "train" and r["problem_key"])
    for path in sorted((out / "samples").glob("*.parquet")):
        table = pq.read_table(path)
        rows = table.to_pylist()
        for r in rows:
            if r["id"] == b:
                r["copy_of"] = a
            if r["split"] == "val" and r["problem_key"] and r["problem_key"] != train_key:
                r["problem_key"] = train_key
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    checks = {p.check: p.message for p in inspect_validate.validate(out)}
    assert a in checks["copies_together"] and b in checks["copies_together"]
    assert "in both splits" in checks["problem_split"]


def test_inspect_sample_shows_upstream_ids(built: tuple[Path, dict]) -> None:
    """`inspect --sample` names each document's source and upstream id: a window traced to the user's records."""
    from reasonpipe.pipeline.inspect_render import decode_windows

    root, _ = built
    upstream = {d.id: d.metadata.get("upstream_id") for d in make_docs()}
    docs = [d for w in decode_windows(root / "out", 12, seed=0) for d in w["documents"]]
    rows = {r["id"]: r for r in read_samples(root / "out")}
    for d in docs:
        assert d["upstream_id"] == upstream[rows[d["sample_id"]]["copy_of"] or d["sample_id"]]
        assert d["source"] == rows[d["sample_id"]]["source"]
    assert any(d["upstream_id"] for d in docs) and any(d["upstream_id"] is None for d in docs)


def test_samples_rows_stream_out_as_samples_are_placed(
    built: tuple[Path, dict], tmp_path: Path, tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's samples/ rows are written as their samples get a window: the rows waiting in memory stay bounded by
    the packer's buffer, not by the task's size; the file holds every sample once, placed as the shards say."""
    from reasonpipe.tokenizer import writer

    root, _ = built
    monkeypatch.setattr(writer, "ROWS_PER_GROUP", 16)
    special = resolve_template(load_tokenizer(tokenizer_path))
    out = writer.PackedOutput(tmp_path, 0, SEQ, special, buffer_windows=2, rows_per_shard=40)
    docs = list(APTrim(CONTEXT).run(MixtureSample(root / "cache", RATES, "domain", SEED).run(None, 0, 1), 0, 1))
    most = 0
    for doc in docs:
        m = doc.metadata
        out.add(
            doc.id, m["segments"], m["kind"], m["source"], m["domain"], m["trim"], m.get("copy_of"), m.get("copy", 0)
        )
        most = max(most, len(out._pending))
    out.close()
    path = tmp_path / "samples" / "00000.parquet"
    table = pq.read_table(path)
    assert sorted(table["id"].to_pylist()) == sorted(d.id for d in docs)
    assert len(docs) > 10 * most and pq.ParquetFile(path).num_row_groups > 1
    for r in table.to_pylist():
        shard = open_shard(tmp_path / "train" / f"00000-{r['task_shard']:05d}.arrow")
        assert r["id"] in shard.column("sample_ids")[r["row"]].as_py()


def test_tasks_in_one_process_share_the_loaded_template_and_count_their_own(tmp_path: Path, tokenizer_path: Path):
    """A worker's later task reuses the loaded tokenizers (keyed by the file's content) with counts of its own; an
    edited tokenizer file at the same path is loaded anew."""
    from reasonpipe.tokenizer.steps import loaded_template

    docs = make_docs()
    counted = []
    for rank in range(2):  # two tasks of one run, one after the other in this process
        step = TokenizeToCache(tokenizer_path, str(tmp_path / "cache"), batch_size=64)
        list(step.run(iter(docs[rank::2]), rank, 2))
        counted.append(step.stats["documents"].total)
    assert counted == [len(docs[0::2]), len(docs[1::2])]
    assert loaded_template.cache_info().hits >= 1
    first = loaded_template(sha256_file(tokenizer_path), str(tokenizer_path), "null", "tokenizers")
    a, b = first.fresh(), first.fresh()
    assert a._plain is first._plain and a._idle is first._idle and a.stats is not b.stats
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer_path.read_text())
    before = loaded_template(sha256_file(path), str(path), "null", "tokenizers")
    path.write_text(tokenizer_path.read_text() + "\n")  # edited in place: another content, another template
    assert loaded_template(sha256_file(path), str(path), "null", "tokenizers") is not before


_IMPORTS_OF_A_TASK = """
import sys
from datatrove.data import Document
from reasonpipe.tokenizer.steps import MixtureSample, TokenizeToCache
before = set(sys.modules)
docs = [Document(text=f"plain text number {i}", id=f"d{i}", metadata={"domain": "web"}) for i in range(50)]
list(TokenizeToCache(sys.argv[1], sys.argv[2], backend=sys.argv[3]).run(iter(docs), 0, 1))
list(MixtureSample(sys.argv[2], {}, "domain", 0).run(None, 0, 1))
print(" ".join(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize("backend", ["tokenizers", "gigatoken"])
def test_the_modules_steps_preload_for_forked_workers_are_ones_their_tasks_import(tmp_path, tokenizer_path, backend):
    """`fork_preload` (imported by the driver before a local run forks its workers): a task of these steps, in a
    fresh process, imports each module named there that its backend uses, so the preload saves work."""
    if backend == "gigatoken":
        pytest.importorskip("gigatoken")
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS_OF_A_TASK, str(tokenizer_path), str(tmp_path / "cache"), backend],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    named = set(TokenizeToCache.fork_preload) | set(MixtureSample.fork_preload)
    used = named if backend == "gigatoken" else named - {"awkward"}
    assert used <= set(out)


def test_preload_for_fork_imports_what_steps_name_once(tmp_path, monkeypatch):
    (tmp_path / "rp_preload_probe.py").write_text("import os\nLOADED_IN = os.getpid()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    preload_for_fork([SimpleNamespace(fork_preload=("rp_preload_probe", "rp_no_such_module")), object()])
    assert sys.modules.pop("rp_preload_probe").LOADED_IN == os.getpid()
    assert "rp_no_such_module" not in sys.modules
