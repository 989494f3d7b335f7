"""The test-time-compute builders as datatrove steps and end to end: routing by problem, RSA aggregation samples,
Markovian chunk chains, the sample files, loss masks, and a manifest run that packs all three kinds of samples."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from corpus import load_generator, make_corpus, write_manifest
from datatrove.data import Document

from reasonpipe.filters.answer_verify import AnswerVerifier
from reasonpipe.pipeline.adapters import adapt
from reasonpipe.pipeline.inspect_cli import main as inspect_main
from reasonpipe.pipeline.inspect_validate import validate
from reasonpipe.pipeline.manifest import ManifestError, load_manifest
from reasonpipe.pipeline.steps import Normalize
from reasonpipe.pipeline.ttc import word_start_ids
from reasonpipe.segments import SEG_PROMPT, SEG_REASONING, SEG_TEMPLATE, Segment
from reasonpipe.tokenizer.cache import read_cache
from reasonpipe.tokenizer.template import ChatTemplate
from reasonpipe.tokenizer.vocab import TemplateTokens, resolve_template, train_tokenizer
from reasonpipe.tokenizer.writer import pack_item
from reasonpipe.trimming.built import BuiltSample, SampleFile, SampleWriter, read_samples
from reasonpipe.trimming.rsa import trace_parts
from reasonpipe.trimming.tails import DEFAULT_PROMPT, Candidate, PromptTemplate, render_prompt, tail
from reasonpipe.trimming.ttc_steps import (
    MarkovianChunks,
    RouteTraces,
    RSAAggregate,
    WriteBuilt,
    built_document,
    built_files,
)

gen = load_generator()
CLI = [sys.executable, "-m", "reasonpipe.pipeline.cli"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    pool, _ = gen.trace_pool(random.Random(7), gen.ProblemSource(), 6, 5)
    rng = random.Random(8)
    for i in range(3):  # long traces for the chunker
        lt = gen.make_long(rng, 2500)
        pool.append({"id": f"long-{i}", "problem": lt.question, "reasoning": lt.reasoning, "solution": lt.content})
    return pool


@pytest.fixture(scope="module")
def template(records) -> ChatTemplate:
    texts = [f"{r['problem']}\n{r['reasoning']}\n{r['solution']}" for r in records] + [DEFAULT_PROMPT]
    tok = train_tokenizer(texts, 800)
    return ChatTemplate(tok, resolve_template(tok))


def cached_docs(records: list[dict], template: ChatTemplate) -> list[Document]:
    """Documents as the token cache reader yields them: segments, problem key, verdict."""
    docs = []
    for i, r in enumerate(records):
        text, meta = adapt(r, "problem_solution", {"gold": "gold"})
        doc = Document(text=text, id=f"pool:{i:03d}", metadata={"source": "pool", "domain": "math", **meta})
        assert Normalize().filter(doc) is True and AnswerVerifier().filter(doc) is True
        docs.append(doc)
    for doc, segs in zip(docs, template.encode_many(docs)):
        keep = {k: doc.metadata[k] for k in ("source", "domain", "kind", "problem_key", "correct")}
        doc.metadata = keep | {"segments": segs}
        doc.text = ""
    return docs


@pytest.fixture(scope="module")
def docs(records, template) -> list[Document]:
    return cached_docs(records, template)


def encode_text(template: ChatTemplate):
    return lambda text: template.encode_texts([text])[0]


def rsa_run(docs: list[Document], template: ChatTemplate, root: Path, tasks: int, **options) -> list[Document]:
    """Route on `tasks` tasks (contiguous slices), then aggregate per task: what the two runs do."""
    encoded = PromptTemplate().encode(encode_text(template), options.pop("k", 2))
    tau = options.pop("tau", 16)
    for rank in range(tasks):
        part = docs[rank * len(docs) // tasks : (rank + 1) * len(docs) // tasks]
        assert list(RouteTraces(root, tasks).run(iter(part), rank, tasks)) == []
    out = []
    for rank in range(tasks):
        step = RSAAggregate(root, encoded, template.tokens.user, tau, per_problem=2, **options)
        out += list(step.run(None, rank, tasks))
    return out


def test_prompt_round_trip_through_a_real_tokenizer(template, records):
    """Pieces tokenised on their own and concatenated decode to the template's text with the pieces filled in."""
    tok = template.tokenizer
    enc = encode_text(template)
    problem = enc(records[0]["problem"])
    cands = [Candidate(enc(r["reasoning"]), enc(r["solution"])) for r in records[1:4]]
    for include_answer in (False, True):
        prompt = render_prompt(problem, cands, PromptTemplate().encode(enc, 3), 20, include_answer)
        blocks = []
        for i, c in enumerate(cands, 1):
            kept = tok.decode(c.reasoning[len(c.reasoning) - 20 :].tolist())
            block = f"Candidate {i}:\n" + ("[...] " if len(c.reasoning) > 20 else "") + kept
            blocks.append(block + (f"\nFinal answer: {tok.decode(c.answer.tolist())}" if include_answer else ""))
        expected = DEFAULT_PROMPT.format(problem=records[0]["problem"], k=3, candidates="\n\n".join(blocks))
        assert tok.decode(prompt.ids.tolist()) == expected


def test_word_tails_are_the_last_words_of_the_text(template, records):
    """`tail_unit: words` with the run's tokenizer: the tail decodes to the reasoning's last tau words."""
    starts = np.asarray(word_start_ids(template.tokenizer), dtype=np.uint32)
    for r in records[:10]:
        ids = encode_text(template)(r["reasoning"])
        for tau in (1, 5, 40):
            kept, cut = tail(ids, tau, starts)
            words = r["reasoning"].split()
            assert template.tokenizer.decode(kept.tolist()).split() == words[-tau:]
            assert cut == (len(words) > tau)


def test_any_task_count_gives_the_same_aggregation_samples(docs, template, tmp_path):
    """Grouping is partitioned by problem key: 1 or 3 tasks build exactly the same samples, token for token."""
    runs = {}
    for tasks in (1, 3):
        built = rsa_run(docs, template, tmp_path / f"route{tasks}", tasks)
        runs[tasks] = sorted((d.id, d.metadata["provenance"], tuple(np.concatenate(
            [s.ids for s in d.metadata["segments"]]).tolist())) for d in built)  # fmt: skip
    assert runs[1] == runs[3] and len(runs[1]) == 12  # 6 problems x per_problem 2
    keys_by_partition = [
        {s.problem_key for f in (tmp_path / "route3" / f"{p:05d}").glob("*.arrow") for s in read_samples(f)}
        for p in range(3)
    ]
    assert sum(map(len, keys_by_partition)) == len(set().union(*keys_by_partition))  # each problem in one task


def test_aggregation_samples_come_from_one_problem(docs, template, tmp_path):
    by_id = {d.id: d for d in docs}
    built = rsa_run(docs, template, tmp_path, 2, k=3, tau=12, require_incorrect=True)
    assert built
    for d in built:
        rsa = d.metadata["rsa"]
        members = [by_id[i] for i in [rsa["target"], *rsa["candidates"]]]
        assert {m.metadata["problem_key"] for m in members} == {d.metadata["problem_key"]} == {rsa["problem_key"]}
        assert rsa["target"] not in rsa["candidates"] and len(rsa["candidates"]) == 3
        assert rsa["target_correct"] is True and False in rsa["candidates_correct"]
        assert d.metadata["domain"] == "rsa_aggregate" and d.metadata["builder"] == "rsa_aggregate"
        target = by_id[rsa["target"]].metadata["segments"]
        parts = trace_parts(target, template.tokens.user)
        assert np.array_equal(  # the assistant turn is the target's, token for token
            np.concatenate([s.ids for s in d.metadata["segments"][2:]]),
            np.concatenate([s.ids for s in target[parts.problem + 1 :]]),
        )


def test_markovian_chunks_tile_each_long_trace(docs):
    context, carry, head = 512, 64, 16
    chunks = list(MarkovianChunks(context, carry, head).run(iter(docs)))
    by_trace: dict[str, list] = {}
    for c in chunks:
        by_trace.setdefault(c.metadata["chunk"]["trace"], []).append(c)
    long_docs = {d.id: d for d in docs if sum(len(s.ids) for s in d.metadata["segments"]) > context}
    assert set(by_trace) == set(long_docs) and len(long_docs) >= 3
    for trace_id, chain in by_trace.items():
        reasoning = np.concatenate(
            [s.ids for s in long_docs[trace_id].metadata["segments"] if s.kind == SEG_REASONING]
        )
        targets = []
        for k, c in enumerate(chain):
            segs = c.metadata["segments"]
            assert c.id == f"{trace_id}@chunk{k}" and c.metadata["chunk"]["index"] == k
            assert sum(len(s.ids) for s in segs) <= context
            targets += [s.ids for s in segs if s.kind == SEG_REASONING and not s.context]
            assert c.metadata["chunk"]["last"] == (k == len(chain) - 1)
        assert np.array_equal(np.concatenate(targets), reasoning)  # every reasoning token a target exactly once
    with pytest.raises(ValueError, match="carry"):
        MarkovianChunks(64, 40, 30)


def test_sample_files_round_trip_and_abort(tmp_path):
    rng = np.random.default_rng(0)

    def segments(i: int) -> list[Segment]:
        shape = [(5, 2, -1, False), (3, int(rng.integers(0, 50)), 0, bool(i % 2)), (4, 3, -1, False)]
        return [Segment(k, rng.integers(0, 99, n, dtype=np.uint32), t, c) for k, n, t, c in shape]

    samples = [
        BuiltSample(f"s{i}", "src", "d", "chat", segments(i), f"key{i % 3}", [True, False, None][i % 3],
                    "markovian_chunks", json.dumps({"i": i}))
        for i in range(40)
    ]  # fmt: skip
    writer = SampleWriter(tmp_path / "a.arrow", batch_tokens=100)  # several record batches
    for s in samples:
        writer.write(s)
    writer.close()
    back = list(read_samples(tmp_path / "a.arrow"))
    file = SampleFile(tmp_path / "a.arrow")
    assert len(file.batches) > 1 and len(file) == len(samples) and file.column("id") == [s.id for s in samples]
    for row in (39, 0, 17, 18, 5):  # random access across record batches
        assert (
            file[row].id == samples[row].id
            and file[row].segments[1].ids.tolist() == back[row].segments[1].ids.tolist()
        )
    assert [(b.id, b.problem_key, b.correct, b.provenance) for b in back] == [
        (s.id, s.problem_key, s.correct, s.provenance) for s in samples
    ]
    for b, s in zip(back, samples):
        assert [(x.kind, x.think, x.context, x.ids.tolist()) for x in b.segments] == [
            (x.kind, x.think, x.context, x.ids.tolist()) for x in s.segments
        ]
    writer = SampleWriter(tmp_path / "b.arrow")
    writer.write(samples[0])
    writer.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.arrow"]


def test_write_and_read_built_documents(docs, tmp_path):
    chunks = list(MarkovianChunks(512, 64, 16).run(iter(docs)))
    assert list(WriteBuilt(tmp_path).run(iter(chunks), 0, 1)) == []
    back = [built_document(s) for path in built_files(tmp_path, 0, 1) for s in read_samples(path)]
    assert [d.id for d in back] == [d.id for d in chunks]
    assert all(b.metadata["chunk"] == c.metadata["chunk"] for b, c in zip(back, chunks))
    with pytest.raises(FileNotFoundError, match="ttc-build"):
        built_files(tmp_path / "missing", 0, 1)


@pytest.mark.parametrize("policy", ["all", "assistant"])
def test_context_segments_never_carry_loss(policy):
    tokens = TemplateTokens(0, 1, 2, 3, 4, 5, 6, 7, 8)
    u = lambda *x: np.array(x, dtype=np.uint32)  # noqa: E731
    segs = [Segment(SEG_TEMPLATE, u(0, 4)), Segment(SEG_PROMPT, u(20, 21)), Segment(SEG_TEMPLATE, u(6, 5)),
            Segment(SEG_TEMPLATE, u(7), 0), Segment(SEG_REASONING, u(30, 31, 32), 0, True),
            Segment(SEG_REASONING, u(33, 34), 0)]  # fmt: skip
    mask = pack_item("s", segs, True, policy, tokens).loss_mask
    assert mask[7:10].tolist() == [0, 0, 0] and mask[10:].tolist() == [1, 1]  # context 0, target 1


def test_builder_options_are_checked_with_the_key_named(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"problem": "p", "solution": "s"}) + "\n")
    cases = [
        ({"rsa_aggregate": {"k": 0}}, "builders.rsa_aggregate.k"),
        ({"rsa_aggregate": {"k": 4, "min_traces": 3}}, "min_traces (3) must be at least k + 1 (5)"),
        ({"rsa_aggregate": {"prompt_template": "{problem} only"}}, "{candidates} exactly once"),
        ({"rsa_aggregate": {"tail_unit": "chars"}}, "tail_unit: found 'chars'"),
        ({"markovian_chunks": {"context": 1024}}, "exceeds trim.context (512)"),
        ({"markovian_chunks": {"carry": 400, "head": 200}}, "carry (400) + head (200) must be below context (512)"),
        ({"rsa": {}}, "builders.rsa: unknown key"),
    ]
    for builders, message in cases:
        manifest = tmp_path / "m.yaml"
        manifest.write_text(
            yaml.safe_dump(
                {"name": "t", "inputs": [{"name": "i", "path": str(data)}], "builders": builders,
                 "tokenizer": {"train": {"vocab_size": 1000}}, "trim": {"context": 512}, "pack": {"seq_len": 512},
                 "output": {"path": str(tmp_path / "out")}}
            )
        )  # fmt: skip
        with pytest.raises(ManifestError) as err:
            load_manifest(manifest)
        assert message in str(err.value), str(err.value)


# ---------------------------------------------------------------------------------------------- end to end
def reasonpipe(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(CLI + list(args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"reasonpipe {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


BUILDERS = {"rsa_aggregate": {"k": 2, "tau": 48, "per_problem": 2}, "markovian_chunks": {"carry": 96, "head": 16}}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict, Path]:
    root = tmp_path_factory.mktemp("ttc")
    info = make_corpus(root)
    manifest = write_manifest(
        root, info, inputs=["chat", "pool"], stages=[{"answer_verify": {}}], builders=BUILDERS,
        output={"path": str(root / "out"), "validation_fraction": 0.2},
    )  # fmt: skip
    reasonpipe("run", str(manifest))
    return root, info, manifest


def test_run_packs_all_three_kinds_and_validates(run):
    root, info, _ = run
    out = root / "out"
    assert validate(out) == []
    index = json.loads((out / "index.json").read_text())
    samples = [r for p in sorted((out / "samples").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    kinds = {r["builder"] for r in samples if r["status"] != "dropped"}
    assert kinds == {None, "rsa_aggregate", "markovian_chunks"}
    built = index["ttc"]
    n_problems = len(info["pool"])
    assert built["rsa_aggregate"]["samples"] == 2 * n_problems == sum(r["builder"] == "rsa_aggregate" for r in samples)
    assert built["rsa_aggregate"]["targets"]["incorrect"] == 0
    chains = {json.loads(r["provenance"])["trace"] for r in samples if r["builder"] == "markovian_chunks"}
    long_chats = sum(lt["file"] == "reasoning/chat.jsonl" for lt in info["long_traces"])
    assert built["markovian_chunks"]["chains"] == len(chains) >= long_chats > 0
    wrong = sum(len(g["wrong"]) for g in info["pool"])
    ver = index["verification"]["pool"]
    assert (ver["incorrect"], ver["correct"] + ver["incorrect"]) == (wrong, sum(len(g["ids"]) for g in info["pool"]))


def test_every_aggregation_sample_is_of_one_problem_in_the_shards(run, capsys):
    """Decoded from the shards (`inspect --rsa-sample`): the prompt holds its problem, and target and candidates are
    records of it."""
    root, _, _ = run
    out = root / "out"
    pool = [json.loads(line) for line in (root / "reasoning" / "pool.jsonl").read_text().splitlines()]
    problem_of = {f"pool/pool.jsonl:{i}": r["problem"] for i, r in enumerate(pool)}
    assert inspect_main([str(out), "--rsa-sample", "100", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)["rsa_samples"]
    assert len(items) == 2 * len({r["problem"] for r in pool})
    for it in items:
        ids = [it["target"]["id"], *(c["id"] for c in it["candidates"])]
        assert len({problem_of[i] for i in ids}) == 1
        assert it["prompt"].startswith(problem_of[ids[0]]) and "Candidate 2:\n" in it["prompt"]
        target = pool[int(ids[0].rsplit(":", 1)[1])]
        assert it["answer"] == target["solution"] and it["target"]["correct"] is True
    assert inspect_main([str(out), "--color", "never"]) == 0
    text = capsys.readouterr().out
    assert "Test-time-compute builders" in text and "Answer verification" in text and "targets verified" in text
    assert inspect_main([str(out), "--rsa-sample", "1", "--color", "never"]) == 0
    assert "--- user turn (the aggregation prompt) ---" in capsys.readouterr().out


def test_chunk_chains_tile_the_cached_traces_in_the_shards(run):
    """With `loss_mask: all`, the loss-1 tokens of a chain's windows, chunk after chunk, are exactly its trace's tokens
    (every token trained once); the rest of each chunk is the context its provenance counts."""
    import pyarrow as pa

    root, _, _ = run
    out = root / "out"
    (prep,) = (out / ".work").glob("prep-*")
    traces = {s.id: s for p in sorted((prep / "tokens").glob("*.arrow")) for s in read_cache(p)}
    samples = [r for p in sorted((out / "samples").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    tables = {}
    targets: dict[str, dict[int, np.ndarray]] = {}
    for r in samples:
        if r["builder"] != "markovian_chunks":
            continue
        path = out / ("shards" if r["split"] == "train" else "shards-val") / f"{r['shard']:05d}.arrow"
        table = tables.setdefault(path, pa.ipc.open_stream(pa.memory_map(str(path))).read_all())
        window = table.slice(r["row"], 1)
        names, offsets = window["sample_ids"][0].as_py(), window["doc_offsets"][0].as_py()
        a = offsets[names.index(r["id"])]
        b = a + r["tokens_after"]
        ids, loss, seg = (window[c][0].values.to_numpy()[a:b] for c in ("input_ids", "loss_mask", "segment"))
        info = json.loads(r["provenance"])
        assert int((loss == 0).sum()) == info["context_tokens"] and (info["context_tokens"] > 0) == (info["index"] > 0)
        targets.setdefault(info["trace"], {})[info["index"]] = ids[loss == 1]
    assert targets
    for trace_id, chunks in targets.items():
        assert sorted(chunks) == list(range(len(chunks)))  # no mixture here: every chunk is packed
        full = np.concatenate([s.ids for s in traces[trace_id].segments])
        assert np.array_equal(np.concatenate([chunks[k] for k in sorted(chunks)]), full)


def test_changing_tau_reruns_only_the_pack_phase(run, tmp_path):
    root, _, manifest = run
    m = yaml.safe_load(manifest.read_text())
    m["builders"]["rsa_aggregate"]["tau"] = 8
    m["output"]["path"] = str(tmp_path / "out2")
    m["output"]["work_dir"] = str(root / "out" / ".work")
    other = manifest.with_name("tau8.yaml")
    other.write_text(yaml.safe_dump(m))
    proc = reasonpipe("run", str(other))
    for name in ("canonical", "tokenizer", "tokenize"):
        assert f"{name}: already complete, skipped" in proc.stdout
    for name in ("ttc-route", "ttc-build", "pack"):
        assert f"{name}: done" in proc.stdout
    index = json.loads((tmp_path / "out2" / "index.json").read_text())
    assert 0 < index["ttc"]["rsa_aggregate"]["mean_tail_tokens"] <= 8


def test_a_share_for_samples_a_builder_cannot_build_is_a_clear_error(run, tmp_path):
    """k = 9 needs 10 traces per problem; the pool has 5: the mixture's share for RSA samples cannot be met."""
    root, _, manifest = run
    m = yaml.safe_load(manifest.read_text())
    m["builders"] = {"rsa_aggregate": {"k": 9}}
    m["mixture"] = {"by": "domain", "shares": {"rsa_aggregate": 0.2}}
    m["output"] = {"path": str(tmp_path / "out3"), "work_dir": str(root / "out" / ".work")}
    other = manifest.with_name("k9.yaml")
    other.write_text(yaml.safe_dump(m))
    proc = subprocess.run(CLI + ["run", str(other)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "mixture.shares.rsa_aggregate: 0.2, but builders.rsa_aggregate built no samples" in proc.stderr
    assert "problems have fewer than 10 traces" in proc.stderr
