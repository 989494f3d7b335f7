"""The partitioned dedup steps: vectorised cores against references, results independent of how the global steps are
partitioned, work folders on a non-POSIX fsspec filesystem (`memory://`), one problem key per problem group, and
intermediate folders freed once consumed (resume included)."""

from __future__ import annotations

import io
import random
import uuid
from types import SimpleNamespace

import fsspec
import numpy as np
import pytest
import zstandard
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from dedupdata import chat_sample, generated_texts, planted_corpus, problem_variant, template_variant
from hypothesis import given, settings
from hypothesis import strategies as st
from stagekit import read_exclusions, run_stage

from reasonpipe.docio import DocReader, DocWriter, FrameWriter, zstd_lines
from reasonpipe.filters.minhash import MinhashOptions, WordShingleSigner
from reasonpipe.filters.minhash_core import components, jaccard, pair_intersections, segment_indices
from reasonpipe.filters.minhash_steps import SignedDocs
from reasonpipe.filters.problem_dedup import problem_hash
from reasonpipe.filters.workfiles import (
    Column,
    folder,
    partition_of,
    read_partition,
    read_rows,
    read_spans,
    write_partitioned,
)
from reasonpipe.pipeline.manifest import ExecutorConfig, OutputConfig
from reasonpipe.pipeline.run import RunError, execute
from reasonpipe.pipeline.runs import RunSpec
from reasonpipe.sample import problem_text


def memory_url() -> str:
    return f"memory://reasonpipe-test-{uuid.uuid4().hex}"


# --- vectorised cores ---


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sets(st.integers(0, 40), max_size=25), min_size=2, max_size=8), st.data())
def test_pair_intersections_match_set_intersections(sets: list[set[int]], data) -> None:
    values = np.concatenate([np.array(sorted(s), dtype=np.uint64) for s in sets])
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sets])))
    pairs = data.draw(st.lists(st.tuples(*[st.integers(0, len(sets) - 1)] * 2), min_size=1, max_size=20))
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    inter = pair_intersections(values, offsets, a, b)
    assert inter.tolist() == [len(sets[i] & sets[j]) for i, j in pairs]
    for (i, j), k in zip(pairs, inter.tolist()):  # the Jaccard the verifier computes from it
        union = len(sets[i]) + len(sets[j]) - k
        ref = jaccard(np.array(sorted(sets[i]), dtype=np.uint64), np.array(sorted(sets[j]), dtype=np.uint64))
        assert (k / union if union else 1.0) == pytest.approx(ref)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.tuples(*[st.integers(0, n - 1)] * 2)))))
def test_components_match_a_reference_union_find(case) -> None:
    n, edges = case
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in edges:
        parent[max(root(a), root(b))] = min(root(a), root(b))
    got = components(np.array(edges, dtype=np.int64).reshape(-1, 2), n)
    assert got.tolist() == [root(x) for x in range(n)]  # each node labelled by its component's smallest member


def test_segment_indices() -> None:
    assert segment_indices(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]


# --- work files on any filesystem ---


@pytest.mark.parametrize("where", ["local", "memory"])
@settings(max_examples=25, deadline=None)
@given(lens=st.lists(st.integers(0, 50), min_size=1, max_size=30), data=st.data())
def test_columns_and_partitions_round_trip(tmp_path_factory, where, lens, data) -> None:
    """Spans read back equal numpy slicing, locally (memory-mapped) and remotely (merged range reads)."""
    url = str(tmp_path_factory.mktemp("cols")) if where == "local" else memory_url()
    df = folder(url)
    values = np.arange(sum(lens), dtype=np.uint64) * np.uint64(7919)
    col = Column(df, "c.bin", np.uint64)
    starts = [col.append(values[s : s + n]) for s, n in zip(np.cumsum([0] + lens[:-1]).tolist(), lens)]
    col.close()
    pick = data.draw(st.lists(st.integers(0, len(lens) - 1), max_size=40))
    got, off = read_spans(df, "c.bin", np.uint64, np.array(starts)[pick], np.array(lens)[pick])
    expected = [values[starts[i] : starts[i] + lens[i]] for i in pick]
    assert [got[off[k] : off[k + 1]].tolist() for k in range(len(pick))] == [e.tolist() for e in expected]
    rows = data.draw(st.lists(st.integers(0, len(values) - 1), max_size=40)) if len(values) else []
    assert read_rows(df, "c.bin", np.uint64, np.array(rows, dtype=np.int64)).tolist() == values[rows].tolist()
    parts = data.draw(st.integers(1, 5))
    keys = values * np.uint64(0x9E3779B97F4A7C15)
    write_partitioned(df, "p", keys, partition_of(keys, parts), parts)
    back = [read_partition(df, "p", np.uint64, p) for p in range(parts)]
    assert sorted(np.concatenate(back).tolist()) == sorted(keys.tolist())
    assert all((partition_of(b, parts) == p).all() for p, b in enumerate(back))


def test_docio_round_trips_on_memory_filesystem() -> None:
    url = memory_url()
    docs = [Document(text=f"doc {i} é", id=f"d{i}", metadata={"domain": "web", "n": i}) for i in range(5)]
    assert [d.id for d in DocWriter(url).run(iter(docs), rank=1)] == [d.id for d in docs]
    list(DocWriter(url).run(iter([]), rank=0))  # an empty rank still writes its file
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(url.removeprefix("memory://"), detail=False)) == [
        "00000.jsonl.zst",
        "00001.jsonl.zst",
    ]
    back = list(DocReader(url).run(rank=1))
    assert [(d.id, d.text, d.metadata) for d in back] == [(d.id, d.text, d.metadata) for d in docs]
    assert [d.id for d in DocReader(url, all_ranks=True).run()] == [d.id for d in docs]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=60),
    st.booleans(),
    st.integers(1, 2000),
    st.integers(1, 64),
)
def test_zstd_lines_reads_back_what_the_frame_writer_wrote(
    lines: list[bytes], last_newline: bool, frame_bytes: int, block: int
):
    written = [line + b"\n" for line in lines]
    if written and not last_newline:
        written[-1] = lines[-1]
    raw = io.BytesIO()
    out = FrameWriter(raw, frame_bytes)  # small frames: many frame boundaries
    for line in written:
        out.write(line)
    out.flush()
    stream = raw.getvalue()
    # a standard multi-frame zstd stream (zstdcat reads it), and its lines come back as written
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stream), read_across_frames=True).read() == b"".join(
        written
    )
    kept = lines if last_newline or not lines or lines[-1] else lines[:-1]  # an empty last line without newline
    assert list(zstd_lines(io.BytesIO(stream), block)) == kept
    if stream:
        with pytest.raises(EOFError):
            list(zstd_lines(io.BytesIO(stream[:-3]), block))  # cut inside the last frame


# --- the stages: partition counts, filesystems, problem keys ---


def _near_dup_corpus(seed: int) -> list[Document]:
    docs, _ = planted_corpus(generated_texts(150, seed=seed, words=(60, 120)), [0.05, 0.1], per_fraction=25, seed=seed)
    docs += [
        Document(text=d.text.upper(), id=f"exact-{i}", metadata=dict(d.metadata)) for i, d in enumerate(docs[:20])
    ]
    return docs


def _chat_corpus(seed: int) -> list[Document]:
    rng = random.Random(seed)
    problems = generated_texts(25, seed=seed, words=(15, 40))
    docs = [
        chat_sample(f"s{i:03d}", problem_variant(problems[i % 25], rng), "r " * rng.randint(1, 50), "7")
        for i in range(100)
    ]
    for doc in docs:
        doc.metadata["problem_key"] = problem_hash(problem_text(doc))
    return docs


def _result(docs: list[Document], tmp_path, stage: str, options: dict, **kw) -> tuple[list, dict]:
    kept, _ = run_stage(stage, options, docs, tasks=3, tmp_path=tmp_path, **kw)
    excluded = {d.id: d.metadata["duplicate_of"] for d in read_exclusions(tmp_path)}
    return [(d.id, d.metadata.get("problem_key")) for d in kept], excluded


@pytest.mark.parametrize(
    "stage, corpus, variants",
    [
        ("exact_dedup", _near_dup_corpus, [{"finder_tasks": 1}, {"finder_tasks": 5}]),
        (
            "minhash",
            _near_dup_corpus,
            [{"bucket_tasks": 1, "verify_tasks": 1}, {"bucket_tasks": 7, "verify_tasks": 4}],
        ),
        ("problem_dedup", _chat_corpus, [{"k": 2, "bucket_tasks": 1, "verify_tasks": 2}, {"k": 2, "bucket_tasks": 6}]),
    ],
)
def test_results_do_not_depend_on_partitioning_or_filesystem(stage, corpus, variants, tmp_path) -> None:
    """Same input and streaming tasks: the same kept documents, duplicate_of and problem keys for any number of
    finder / bucket / verify tasks, with the work folder local or on `memory://` (a non-POSIX fsspec filesystem)."""
    docs = corpus(3)
    reference = _result(docs, tmp_path / "ref", stage, variants[0])
    assert reference[1], "the corpus must have duplicates"
    assert _result(docs, tmp_path / "parts", stage, variants[1]) == reference
    url = memory_url()
    assert _result(docs, tmp_path / "mem", stage, variants[1], work_dir=url) == reference
    written = fsspec.filesystem("memory").find(url.removeprefix("memory://"))
    assert any("/signatures/" in p for p in written) and any("/removals/" in p for p in written)
    assert not (tmp_path / "mem" / "work").exists()


def test_verification_in_small_chunks_gives_the_same_result(tmp_path, monkeypatch) -> None:
    """Candidate pairs are verified in chunks of bounded gram volume; the chunk size never changes what is removed."""
    import reasonpipe.filters.minhash_steps as steps

    docs = _near_dup_corpus(4)
    reference = _result(docs, tmp_path / "ref", "minhash", {})
    monkeypatch.setattr(steps, "_CHUNK", 300)  # a few pairs per chunk (documents have ~60-120 grams)
    assert _result(docs, tmp_path / "small", "minhash", {}) == reference


def test_problem_dedup_gives_each_problem_group_one_key(tmp_path) -> None:
    """Kept and dropped traces of one near-duplicate problem share the group's smallest key; distinct problems
    (different numbers) keep their own."""
    problems = [
        f"Sam has {a} apples, buys {b} more at the market, and gives {c} to a friend. How many apples does Sam have "
        f"left at the end of the day?"
        for a, b, c in [(5, 7, 3), (5, 7, 4), (30, 2, 11)]
    ]
    docs = []
    for p, problem in enumerate(problems):
        for t, at in enumerate([None, 1, 3, 4, 6, 7]):  # trace t > 0: one word replaced, a key of its own
            words = problem.split()
            if at is not None:
                words[at] = "one"
            docs.append(chat_sample(f"p{p}-t{t}", " ".join(words), "step " * (10 + 10 * t), str(t)))
    for doc in docs:
        doc.metadata["problem_key"] = problem_hash(problem_text(doc))
    original = {d.id: d.metadata["problem_key"] for d in docs}
    assert all(len({original[f"p{p}-t{t}"] for t in range(6)}) == 6 for p in range(3))
    kept, stats = run_stage("problem_dedup", {"k": 3}, docs, tasks=2, tmp_path=tmp_path)
    dropped = read_exclusions(tmp_path)
    assert len(kept) == 9 and len(dropped) == 9 and stats["relabeled"] > 0
    for p in range(3):
        group = [d for d in kept + dropped if d.id.startswith(f"p{p}-")]
        assert {d.metadata["problem_key"] for d in group} == {min(original[d.id] for d in group)}
    assert len({d.metadata["problem_key"] for d in kept}) == 3


# --- intermediate folders ---


class _Source(PipelineStep):
    name = "source"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for i in range(3):
            yield Document(text=f"text {rank} {i}", id=f"{rank}-{i}")


class _FailOnce(PipelineStep):
    """Raises in task 0 the first time (a crash in the middle of the consuming run)."""

    name = "fail once"

    def __init__(self, flag: str):
        super().__init__()
        self.flag = flag

    def run(self, data, rank: int = 0, world_size: int = 1):
        import os

        for doc in data:
            if rank == 0 and not os.path.exists(self.flag):
                open(self.flag, "w").close()
                raise RuntimeError("simulated crash")
            yield doc


def _plan(tmp_path, keep: bool) -> SimpleNamespace:
    docs = str(tmp_path / "docs")
    runs = [
        RunSpec("write", "prep", 2, str(tmp_path / "runs/0"), [_Source(), DocWriter(docs)]),
        RunSpec("read", "prep", 2, str(tmp_path / "runs/1"), [DocReader(docs), _FailOnce(str(tmp_path / "flag"))]),
    ]
    runs[1].frees.append(docs)
    manifest = SimpleNamespace(
        executor=ExecutorConfig(tasks=2, workers=1), output=OutputConfig(path="x", keep_intermediate=keep)
    )
    return SimpleNamespace(loaded=SimpleNamespace(manifest=manifest), runs=runs)


@pytest.mark.parametrize("keep", [False, True])
def test_intermediate_folders_are_freed_only_after_their_last_reader_completes(tmp_path, keep) -> None:
    plan = _plan(tmp_path, keep)
    with pytest.raises(RunError, match="simulated crash"):
        execute(plan)  # the reader crashed: its input must survive for the resume
    assert (tmp_path / "docs" / "00000.jsonl.zst").exists()
    execute(_plan(tmp_path, keep))  # resume: the writer is skipped, the reader redoes its failed task
    assert (tmp_path / "docs").exists() == keep


# --- careless users ---

MANIFEST = """\
name: t
inputs:
  - {name: docs, path: docs.jsonl, schema: text, domain: math}
stages:
  - minhash: STAGE
tokenizer: {train: {vocab_size: 1000}}
output: {path: out, keep_intermediate: KEEP}
"""


@pytest.mark.parametrize(
    "stage, keep, expected",
    [
        (
            "{number_aware: 3}",
            "false",
            "minhash.number_aware: expected true, false or a list of domain names (found 3)",
        ),
        ("{same_numbers: true}", "false", "stages[0].minhash.same_numbers: unknown key"),
        ("{verify_tasks: 0}", "false", "stages[0].minhash.verify_tasks: Input should be greater than or equal to 1"),
        ("{}", "sometimes", "output.keep_intermediate"),
    ],
)
def test_dedup_options_mistakes_name_the_key(tmp_path, stage, keep, expected) -> None:
    from reasonpipe.pipeline.manifest import ManifestError, load_manifest

    (tmp_path / "docs.jsonl").write_text('{"text": "x"}\n')
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST.replace("STAGE", stage).replace("KEEP", keep))
    with pytest.raises(ManifestError) as exc:
        load_manifest(path)
    assert any(expected in p for p in exc.value.problems), exc.value.problems


@pytest.mark.parametrize("marks", ["contained", "equal"])
def test_one_pair_check_equals_batch_verification(tmp_path, marks) -> None:
    """The greedy pass's one-pair check (`SignedDocs.similar`) decides every pair as the batch `verify` does."""
    rng = random.Random(5)
    texts = generated_texts(40, seed=5, words=(40, 90))
    docs, _ = planted_corpus(texts, [0.05, 0.3], per_fraction=12, seed=5)
    docs += [Document(text=v, id=f"variant-{i}", metadata={"domain": "math"})
             for i, t in enumerate(texts[:12]) if (v := template_variant(t, rng))]  # fmt: skip
    for doc in docs[::2]:
        doc.metadata["domain"] = "math"  # number-aware: marks are checked when either side is math
    signer = WordShingleSigner(str(tmp_path), MinhashOptions(), 0, None, 2)
    list(signer.run(iter(docs), 0, 1))
    gids = np.arange(len(docs), dtype=np.int64)  # rank 0: gid = row = position
    pairs = np.array([(a, b) for a in gids for b in gids if a < b])
    with SignedDocs(folder(str(tmp_path))) as signed:
        ok, agree = signed.verify(pairs, 0.55, marks)
        rec = signed.records(gids)
        one = [signed.similar(int(a), int(b), rec[a], rec[b], 0.55, marks) for a, b in pairs]
    assert one == (ok & agree).tolist()
    assert 0 < sum(one) < len(one) and np.any(ok & ~agree)  # similar pairs, and pairs whose marks disagree
