"""The demo corpus (data/demo/) and the CI corpus generator: determinism, counts, planted items, correct arithmetic."""

from __future__ import annotations

import ast
import csv
import gzip
import itertools
import json
import re
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from corpus import load_generator, make_corpus, write_manifest

from reasonpipe.filters.normalize import Normalization, tokens

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
gen = load_generator()


# ---------------------------------------------------------------------------------------------------- readers
def read_records(path: Path) -> list[dict]:
    """All records of one demo input file or `datasets` folder (valid JSON lines only for jsonl)."""
    name = path.name
    if path.is_dir():  # datasets save_to_disk: Arrow stream files
        rows = []
        for f in sorted(path.glob("*.arrow")):
            rows += pa.ipc.open_stream(pa.memory_map(str(f))).read_all().to_pylist()
        return rows
    if name.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    if name.endswith(".arrow"):
        return pa.ipc.open_stream(pa.memory_map(str(path))).read_all().to_pylist()
    if name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    data = path.read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    elif name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def split_trace(rec: dict) -> tuple[str, str]:
    """(reasoning, visible final answer) of a long-trace record in any of the four reasoning schemas."""
    if "messages" in rec:
        text = rec["messages"][-1]["content"]
    elif "completion" in rec:
        text = rec["completion"]
    elif "response" in rec:
        m = re.fullmatch(r"<Thought>\n(.*)\n</Thought>\n<Output>\n(.*)\n</Output>", rec["response"], re.S)
        return m[1], m[2]
    else:
        reasoning, _, answer = rec["solution"].rpartition("\n\n")
        return reasoning, answer
    m = re.fullmatch(r"<think>\n(.*)\n</think>\n\n(.*)", text, re.S)
    return m[1], m[2]


# -------------------------------------------------------------------------------- independent answer checkers
def solve_ledger(question: str) -> int:
    rows = re.findall(r"^\| [a-z' ]+ \| \$(\d+) \| ([\d | ]+) \|$", question, re.M)
    assert rows
    return sum(int(price) * sum(int(u) for u in units.split(" | ")) for price, units in rows)


def _parse_linear(eq: str) -> tuple[list[int], int]:
    lhs, rhs = eq.split(" = ")
    coeffs = {"x": 0, "y": 0, "z": 0}
    for sign, mag, var in re.findall(r"([-+]?)\s*(\d*)([xyz])", lhs):
        coeffs[var] = (-1 if sign == "-" else 1) * (int(mag) if mag else 1)
    return [coeffs["x"], coeffs["y"], coeffs["z"]], int(rhs)


def solve_systems(question: str) -> int:
    total = Fraction(0)
    for line in re.findall(r"^System \d+: (.*)$", question, re.M):
        eqs = [_parse_linear(e) for e in re.findall(r"\$([^$]+)\$", line)]
        A, b = [r for r, _ in eqs], [v for _, v in eqs]

        def det(m):
            return (
                m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
            )

        d = det(A)
        for k in range(3):
            total += Fraction(det([[b[i] if j == k else A[i][j] for j in range(3)] for i in range(3)]), d)
    assert total.denominator == 1
    return int(total)


def solve_savings(question: str) -> int:
    start = int(re.search(r"(?:with|begins at) \$(\d+)", question)[1])
    dep = int(re.search(r"deposits? \$(\d+)", question)[1])
    fee = int(re.search(r"\$(\d+) (?:account )?fee", question)[1])
    bonus = int(re.search(r"\$(\d+) (?:loyalty )?bonus", question)[1])
    months = int(re.search(r"(?:after|end of month) (\d+)", question)[1])
    costs = {int(m): int(c) for m, c in re.findall(r"in month (\d+) \w+ pays for [^(]+\(\$(\d+)\)", question)}
    bal = start
    for m in range(1, months + 1):
        bal += dep - fee + (bonus if m % 3 == 0 else 0) - costs.get(m, 0)
    return bal


SOLVERS = {"ledger": solve_ledger, "systems": solve_systems, "savings": solve_savings}


def question_of(rec: dict) -> str:
    if "messages" in rec:
        return [t for t in rec["messages"] if t["role"] == "user"][-1]["content"]
    return rec.get("problem") or rec.get("prompt") or rec["instruction"]


def norm_words(text: str) -> set[str]:
    return set(re.sub(r"[^\w\s]", " ", text.lower()).split())


# ----------------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def planted() -> dict:
    return json.loads((DEMO / "PLANTED.json").read_text())


@pytest.fixture(scope="module")
def demo_records(planted) -> dict[str, list[dict]]:
    return {f: read_records(DEMO / f) for f in planted["files"]}


def test_demo_is_reproducible_byte_for_byte(tmp_path):
    gen.build(tmp_path / "demo", gen.Plan(), seed=0)
    ours = sorted(p.relative_to(tmp_path / "demo") for p in (tmp_path / "demo").rglob("*") if p.is_file())
    committed = sorted(p.relative_to(DEMO) for p in DEMO.rglob("*") if p.is_file() and p.name != "README.md")
    committed = [p for p in committed if p.name != "huge_50mb.jsonl"]  # only written with --huge
    assert ours == committed
    for rel in ours:
        assert (tmp_path / "demo" / rel).read_bytes() == (DEMO / rel).read_bytes(), rel


def test_demo_counts_and_planted_kinds(planted, demo_records):
    for f, n in planted["files"].items():
        assert len(demo_records[f]) == n, f
    corpus = sum(len(r) for f, r in demo_records.items() if not f.startswith("benchmarks/"))
    assert corpus >= 500
    assert len(demo_records["benchmarks/mini_gsm.jsonl"]) == 50
    for kind in ["long_traces", "exact_duplicates", "near_duplicates", "problem_duplicates", "leaked", "malformed",
                 "overlong_prompt", "no_reasoning"]:  # fmt: skip
        assert planted["counts"][kind] == len(planted[kind]) > 0, kind
    assert len(planted["leaked"]) == 10
    languages = {r["language"] for f, rs in demo_records.items() if f.startswith("code/") for r in rs}
    assert languages == {"python", "javascript", "rust", "c", "sql", "bash"}
    formats = {Path(f).suffix for f in planted["files"]} | {"hf" for f in planted["files"] if f.startswith("hf/")}
    assert {".gz", ".zst", ".parquet", ".csv", ".arrow", ".jsonl", "hf"} <= formats
    total_mb = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file()) / 2**20
    assert total_mb < 8


def _by_id(demo_records, file: str, rid: str) -> dict:
    return next(r for r in demo_records[file] if r["id"] == rid)


def test_long_traces_are_long_correct_and_answered(planted, demo_records):
    assert len(planted["long_traces"]) >= 50
    for lt in planted["long_traces"]:
        rec = _by_id(demo_records, lt["file"], lt["id"])
        reasoning, final = split_trace(rec)
        assert len(reasoning) > 20_000, lt
        checked, errors = gen.check_arithmetic(reasoning)
        assert checked >= 50 and errors == [], (lt, errors[:3])
        assert SOLVERS[lt["family"]](question_of(rec)) == lt["answer"], lt
        assert re.search(rf"(?<![\d-]){lt['answer']}(?!\d)", final), (lt, final[-200:])


def test_arithmetic_checker_catches_a_wrong_step():
    assert gen.check_arithmetic("so 37 × 24 = 37 × 20 + 37 × 4 = 740 + 148 = 888.") == (1, [])
    assert gen.check_arithmetic("then 12 + (-5) = 7 and (-84) / (-12) = 7") == (2, [])
    checked, errors = gen.check_arithmetic("so 37 × 24 = 878, then 2x + 3 = 9")
    assert checked == 1 and errors == ["37 × 24 = 878"]


def test_planted_duplicates_and_leaks_point_at_real_records(planted, demo_records):
    for dup in planted["exact_duplicates"]:
        a, b = _by_id(demo_records, *dup["of"]), _by_id(demo_records, *dup["dup"])
        assert {k: v for k, v in a.items() if k != "id"} == {k: v for k, v in b.items() if k != "id"}
    for dup in planted["near_duplicates"]:
        a, b = _by_id(demo_records, *dup["of"]), _by_id(demo_records, *dup["dup"])
        wa, wb = norm_words(json.dumps(a)), norm_words(json.dumps(b))
        assert a != b and len(wa & wb) / len(wa | wb) > 0.8, dup
    bench = demo_records["benchmarks/mini_gsm.jsonl"]
    for leak in planted["leaked"]:
        q = question_of(_by_id(demo_records, leak["file"], leak["id"])) if "gsm" not in leak["file"] else None
        q = q or _by_id(demo_records, leak["file"], leak["id"])["question"]
        original = bench[leak["benchmark_index"]]["question"]
        assert q != original
        wa, wb = norm_words(q), norm_words(original)
        assert len(wa & wb) / len(wa | wb) > 0.8, leak


def test_python_documents_parse(demo_records):
    for f, recs in demo_records.items():
        for r in recs:
            if f.startswith("code/") and r["language"] == "python":
                ast.parse(r["content"])


def test_malformed_lines_are_malformed(planted):
    for bad in planted["malformed"]:
        line = (DEMO / bad["file"]).read_bytes().splitlines()[bad["line"]]
        reason = bad["reason"]
        if reason == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                line.decode("utf-8")
            continue
        if reason == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
            continue
        rec = json.loads(line)
        if reason == "not_an_object":
            assert not isinstance(rec, dict)
        elif reason == "huge":
            assert len(line) > 2_000_000
        elif "messages" in rec:
            msgs = rec["messages"]
            assert not isinstance(msgs, list) or not msgs or any(
                t.get("role") not in ("system", "user", "assistant") or "content" not in t
                or t["content"].count("<think>") != t["content"].count("</think>") for t in msgs
            )  # fmt: skip
        else:
            assert not isinstance(rec.get("text"), str) or rec["text"] == ""


def test_ci_corpus_deterministic_and_accounted(tmp_path):
    a = make_corpus(tmp_path / "a", seed=3)
    make_corpus(tmp_path / "b", seed=3)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert 100 <= a["counts"]["samples"] <= 220
    for f, n in a["files"].items():
        assert len(read_records(tmp_path / "a" / f)) == n, f
    for kind in [
        "long_traces",
        "exact_duplicates",
        "near_duplicates",
        "problem_duplicates",
        "leaked",
        "overlong_prompt",
    ]:
        assert a["counts"][kind] >= 1, kind
    for lt in a["long_traces"]:
        assert lt["reasoning_chars"] > 2048  # > 512 tokens at ~4 chars/token
    assert make_corpus(tmp_path / "c", seed=4)["long_traces"] != a["long_traces"]
    manifest = write_manifest(tmp_path / "a", a, trim={"context": 256}, executor=None, inputs=["chat", "web", "bad"])
    import yaml

    m = yaml.safe_load(manifest.read_text())
    assert m["trim"] == {"context": 256} and "executor" not in m
    assert [i["name"] for i in m["inputs"]] == ["chat", "web", "bad"]
    for entry in m["inputs"]:
        assert (tmp_path / "a" / entry["path"]).exists(), entry
    assert (tmp_path / "a" / m["stages"][2]["decontaminate"]["benchmarks"][0]["path"]).exists()


# ------------------------------------------------------------------------------ realism: no accidental overlaps
def record_text(rec: dict) -> str:
    """All text of a record (every field but the id), as one string."""
    return "\n".join(
        json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v for k, v in rec.items() if k != "id"
    )


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """n-token shingles by the token rule of the MinHash stage (words, numbers, single operators)."""
    t = tokens(text, Normalization())
    return set(zip(*(t[i:] for i in range(n))))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


FAMILIES = {  # files whose records are compared pairwise (same schema and domain)
    "math prose": ["math/prose.parquet"],
    "code": ["code/python.jsonl", "code/python_more.jsonl", "code/javascript.jsonl", "code/rust.jsonl", "code/c.jsonl",
             "code/sql.jsonl", "code/bash.jsonl"],
    "web": ["prose/web.csv"],
    "short problems": ["reasoning/gsm.jsonl", "hf/gsm_extra", "reasoning/solutions.jsonl", "math/exercises.arrow"],
    "traces": ["reasoning/chat.jsonl.gz", "reasoning/prompt_completion.jsonl.zst", "reasoning/marco.jsonl"],
    "trace pool": ["reasoning/pool.jsonl"],  # several traces of one problem: different texts all the same
}  # fmt: skip


def test_only_planted_documents_are_near_duplicates(planted, demo_records):
    """Generated documents are genuinely different texts: the only pairs at MinHash's Jaccard threshold (0.5 on
    3-token shingles) are the planted near/exact duplicates, which sit well above it."""
    near = {frozenset([d["of"][1], d["dup"][1]]) for d in planted["near_duplicates"] + planted["exact_duplicates"]}
    for family, files in FAMILIES.items():
        recs = [r for f in files for r in demo_records[f]]
        sets = [(r["id"], shingles(record_text(r))) for r in recs]
        for (ia, sa), (ib, sb) in itertools.combinations(sets, 2):
            if min(len(sa), len(sb)) < 0.5 * max(len(sa), len(sb)):
                continue  # Jaccard < 0.5 anyway
            j = jaccard(sa, sb)
            if frozenset([ia, ib]) in near:
                assert j >= 0.7, (family, ia, ib, j)
            else:
                assert j < 0.5, (family, ia, ib, j)


def word_grams(text: str, n: int) -> set[tuple[str, ...]]:
    """n-grams of words and numbers (operators and punctuation separate), as decontamination counts them."""
    words = re.findall(r"[0-9a-z_\x80-\U0010ffff]+", text.lower())
    return set(zip(*(words[i:] for i in range(n))))


def test_benchmark_shares_ngrams_only_with_the_leaks(planted, demo_records):
    """The benchmark's phrasings are disjoint from the corpus: only the leaked records share a word 8-gram with it
    (stricter than the pipeline's 13-grams), and every leak does."""
    bench = set()
    for item in demo_records["benchmarks/mini_gsm.jsonl"]:
        bench |= word_grams(item["question"], 8) | word_grams(item["answer"], 8)
    hits = {
        r["id"]
        for f, recs in demo_records.items()
        if not f.startswith("benchmarks/")
        for r in recs
        if word_grams(record_text(r), 8) & bench
    }
    assert hits == {leak["id"] for leak in planted["leaked"]}


def norm_problem(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def test_problem_duplicates_form_groups_of_one_problem(planted, demo_records):
    """Each planted problem appears three times (GSM original + the same slight rewording as a chat sample and as a
    MATH-style solution) with the same numbers and similar wording, but the documents are not near duplicates."""
    groups: dict[tuple, list] = {}
    for d in planted["problem_duplicates"]:
        groups.setdefault(tuple(d["of"]), []).append(tuple(d["dup"]))
    assert len(groups) == 10 and all(len(g) == 2 for g in groups.values())

    def grams(text: str) -> set[str]:
        t = norm_problem(text)
        return {t[i : i + 5] for i in range(len(t) - 4)}

    for of, dups in groups.items():
        members = [_by_id(demo_records, *of)] + [_by_id(demo_records, *d) for d in dups]
        questions = [question_of(r) if "question" not in r else r["question"] for r in members]
        assert len({tuple(re.findall(r"\d+", q)) for q in questions}) == 1, questions
        for a, b in itertools.combinations(questions, 2):
            assert jaccard(grams(a), grams(b)) >= 0.7, (a, b)
        for a, b in itertools.combinations(members, 2):
            assert jaccard(shingles(record_text(a)), shingles(record_text(b))) < 0.5, (a["id"], b["id"])


def test_trace_pool_has_several_traces_per_problem_some_wrong(planted, demo_records):
    """reasoning/pool.jsonl: each problem has several traces, at least one right and one wrong; a wrong trace states
    another answer than the gold one, a right trace states the gold."""
    records = {r["id"]: r for r in demo_records["reasoning/pool.jsonl"]}
    assert len(planted["pool"]) == 8 and sum(len(g["ids"]) for g in planted["pool"]) == len(records) == 48
    for group in planted["pool"]:
        recs = [records[i] for i in group["ids"]]
        assert len({r["problem"] for r in recs}) == 1 and {r["gold"] for r in recs} == {group["gold"]}
        assert 0 < len(group["wrong"]) < len(recs)
        for r in recs:
            stated = re.findall(r"-?\d[\d,]*", r["solution"])[-1].replace(",", "")
            assert (stated != group["gold"]) == (r["id"] in group["wrong"]), r


def test_filter_plants_are_the_only_filter_negatives(planted, demo_records):
    """Answers without reasoning are planted (and listed); every other reasoning record has a trace of >= 20 words
    and no stray think tag (the overlong-prompt sample too, so that it reaches trimming)."""
    bare = {d["id"] for d in planted["no_reasoning"]}
    assert len(bare) == 6
    for f in ["reasoning/chat.jsonl.gz", "reasoning/prompt_completion.jsonl.zst"]:
        for r in demo_records[f]:
            turns = r.get("messages") or [{"role": "assistant", "content": r["completion"]}]
            assistant = [t["content"] for t in turns if t["role"] == "assistant"]
            others = [t["content"] for t in turns if t["role"] != "assistant"]
            assert not any("<think>" in t or "</think>" in t for t in others), r["id"]
            traces = [m[1] for t in assistant for m in [re.search(r"<think>\n(.*)\n</think>", t, re.S)] if m]
            if r["id"] in bare:
                assert not traces, r["id"]
            else:
                assert traces and len(traces[-1].split()) >= 20, r["id"]
    for item in planted["overlong_prompt"]:
        assert item["prompt_chars"] > 20_000
