"""Reliability: runs are safe under change, faults and misuse (issue 13 points 1-4, 6, 7; issue 12 point 6).

Each test is a careless user's week: edit an input and re-run, swap the tokenizer, point the output at the wrong
folder, start a run twice, Ctrl-C it, fill the disk, write a YAML bomb, break the accounting. A tiny corpus (a
GSM-style file, a folder of notes, a benchmark) keeps every pipeline run to a few seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from datatrove.io import get_datafolder

from reasonpipe.docio import doc_file, read_docs
from reasonpipe.pipeline import cli
from reasonpipe.pipeline.compile import compile_plan
from reasonpipe.pipeline.hashing import HashCache, _closure, _module, code_version
from reasonpipe.pipeline.inspect_validate import validate
from reasonpipe.pipeline.manifest import ManifestError, load_manifest
from reasonpipe.pipeline.run import RunError, _reset_output, encoded_tokenizer_sha
from reasonpipe.pipeline.workdir import LOCK, MARKER, FolderError, remove_owned
from reasonpipe.tokenizer.shards import sha256_file
from reasonpipe.tokenizer.vocab import save_tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "reasonpipe.pipeline.cli"]
WORDS = "apples pears boxes trains coins marbles pencils stamps shells cards".split()


# ---------------------------------------------------------------------------------------------------- the corpus
def question(i: int) -> str:
    a, b = 3 + i % 7, 2 + i % 5
    return f"Question {i}: Sam has {a} {WORDS[i % 10]} and buys {b} more bags of {a} each. How many does he have?"


def make_corpus(root: Path, n_gsm: int = 24, n_notes: int = 20) -> None:
    """data/gsm.jsonl (GSM-style), data/notes/*.jsonl (plain text), bench/bench.jsonl (a benchmark)."""
    (root / "data" / "notes").mkdir(parents=True, exist_ok=True)
    (root / "bench").mkdir(exist_ok=True)
    with open(root / "data" / "gsm.jsonl", "w") as f:
        for i in range(n_gsm):
            a, b = 3 + i % 7, 2 + i % 5
            steps = f"He buys {b} * {a} = {a * b} more. So {a} + {a * b} = {a + a * b} in total."
            f.write(json.dumps({"question": question(i), "answer": f"{steps}\n#### {a + a * b}"}) + "\n")
    for part in range(2):
        with open(root / "data" / "notes" / f"part{part}.jsonl", "w") as f:
            for i in range(n_notes // 2):
                words = " ".join(WORDS[(i + k) % 10] for k in range(40))
                f.write(json.dumps({"text": f"Note {part}-{i}. The {words}."}) + "\n")
    item = "A train leaves at noon at sixty miles an hour; when does it reach the city ninety miles away?"
    (root / "bench" / "bench.jsonl").write_text(json.dumps({"question": item, "answer": "1:30 pm"}) + "\n")
    old = time.time() - 3600  # not "racy": file digests may be memoised
    for p in root.rglob("*.jsonl"):
        os.utime(p, (old, old))


def write_manifest(root: Path, name: str = "m", **overrides) -> Path:
    manifest = {
        "name": "tiny",
        "inputs": [
            {"name": "gsm", "path": "data/gsm.jsonl", "schema": "problem_solution", "domain": "math"},
            {"name": "notes", "path": "data/notes/", "format": "jsonl", "schema": "text", "domain": "web"},
        ],
        "stages": [
            {"decontaminate": {"benchmarks": [{"name": "bench", "path": "bench/bench.jsonl", "fields": ["question"]}]}}
        ],
        "tokenizer": {"train": {"vocab_size": 600, "sample_docs": 200}},
        "trim": {"context": 256},
        "pack": {"seq_len": 256},
        "output": {"path": "out"},
        "executor": {"kind": "local", "tasks": 2, "workers": 2},
    }
    for key, value in overrides.items():
        manifest[key] = value
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def rp(capsys, *args: str) -> tuple[int, str, str]:
    """`reasonpipe ARGS` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def rp_process(*args: str) -> subprocess.Popen:
    """`reasonpipe ARGS` as its own process group (a terminal's Ctrl-C goes to the whole group)."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen(CLI + [str(a) for a in args], cwd=ROOT, start_new_session=True, env=env, **pipes)


def tokenizer_file(root: Path, name: str, vocab: int, upper: bool = False) -> Path:
    """A tokenizer with reasonpipe's special tokens, trained on the corpus (or on its upper-cased text: another
    vocabulary, in which the corpus' ids mean other strings)."""
    texts = [json.loads(line)["question"] for line in open(root / "data" / "gsm.jsonl")] * 3
    texts += [f"The {w} and {v}." for w in WORDS for v in WORDS]
    texts = [t.upper() for t in texts] if upper else texts
    return save_tokenizer(train_tokenizer(texts, vocab, 1, None), root / name)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A corpus run to the end once (copy it before changing anything)."""
    root = tmp_path_factory.mktemp("finished")
    make_corpus(root)
    manifest = write_manifest(root)
    proc = subprocess.run(CLI + ["run", str(manifest)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def copy_of(finished: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(finished, root, symlinks=True)
    return root


def index(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


# ---------------------------------------------------------------------------------------------------- 1. change
def test_an_input_edited_in_place_redoes_prep_and_plan_says_why(finished, tmp_path, capsys):
    root = copy_of(finished, tmp_path)
    before = index(root / "out")
    gsm = root / "data" / "gsm.jsonl"
    gsm.write_text(gsm.read_text().replace("Sam has", "Ann has"))  # same size, same path
    code, out, _ = rp(capsys, "plan", root / "m.yaml")
    assert code == 0 and "redo: input gsm file gsm.jsonl changed" in out, out
    assert "pack " in out and "its prep phase changed" in out
    code, out, _ = rp(capsys, "run", root / "m.yaml")
    assert code == 0 and "nothing to do" not in out
    after = index(root / "out")
    assert after["run_fingerprint"] != before["run_fingerprint"]
    assert "nothing to do" in rp(capsys, "run", root / "m.yaml")[1]


def test_a_changed_benchmark_file_redoes_decontamination(finished, tmp_path, capsys):
    root = copy_of(finished, tmp_path)
    assert index(root / "out")["decontamination"].get("bench", 0) == 0
    with open(root / "bench" / "bench.jsonl", "a") as f:  # now one of the corpus' questions is a benchmark item
        f.write(json.dumps({"question": question(5)}) + "\n")
    code, out, _ = rp(capsys, "plan", root / "m.yaml")
    assert code == 0 and "stage 01-decontaminate file bench/bench.jsonl changed" in out, out
    assert rp(capsys, "run", root / "m.yaml")[0] == 0
    assert index(root / "out")["decontamination"]["bench"] >= 1  # the planted item (and its near-copies)


def test_a_replaced_tokenizer_with_only_pack_changed_is_never_shipped_with_old_shards(tmp_path, capsys):
    """The issue's worst case: replace tokenizer.json at the same path, change only `pack`, re-run."""
    make_corpus(tmp_path)
    tokenizer_file(tmp_path, "tok.json", 700)
    manifest = write_manifest(tmp_path, tokenizer={"path": "tok.json"})
    assert rp(capsys, "run", manifest)[0] == 0
    plan = compile_plan(load_manifest(manifest))  # the plan of that run
    assert encoded_tokenizer_sha(plan) == sha256_file(tmp_path / "tok.json")
    new = tokenizer_file(tmp_path, "tok.json", 700, upper=True)  # another vocabulary, same path
    with pytest.raises(RunError, match="refusing to ship .*tok.json.*tokenised with another tokenizer"):
        encoded_tokenizer_sha(plan)  # what a run whose tokenizer is replaced after tokenisation meets
    write_manifest(tmp_path, tokenizer={"path": "tok.json"}, pack={"seq_len": 512})
    code, out, _ = rp(capsys, "run", manifest)
    assert code == 0 and "tokenizer file tok.json changed" in out, out
    idx = index(tmp_path / "out")
    assert idx["tokenizer"]["sha256"] == idx["encoded_with_tokenizer_sha256"] == sha256_file(new)
    assert validate(tmp_path / "out") == []
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    rows = pa.ipc.open_stream(pa.memory_map(str(tmp_path / "out" / "shards" / "00000.arrow"))).read_all()
    text = "".join(tok.decode(ids) for ids in rows["input_ids"].to_pylist())
    assert "How many does he have?" in text  # decodes to the corpus, not to another vocabulary's garbage


def test_validate_names_a_tokenizer_the_shards_were_not_encoded_with(finished, tmp_path):
    root = copy_of(finished, tmp_path)
    out = root / "out"
    from tokenizers import Tokenizer

    other = Tokenizer.from_file(str(out / "tokenizer.json"))  # one more token: ids stay valid, only the sha tells
    other.add_tokens(["<|extra|>"])
    other.save(str(out / "tokenizer.json"))
    idx = index(out)
    idx["tokenizer"] |= {"sha256": sha256_file(out / "tokenizer.json"), "vocab_size": other.get_vocab_size()}
    (out / "index.json").write_text(json.dumps(idx))
    problems = validate(out)
    assert [(p.where, p.check) for p in problems] == [("tokenizer.json", "encoded_with")], problems


def test_file_digests_are_memoised_by_path_size_mtime_and_inode(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("aaaa\n")
    stamp = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(stamp, stamp))
    first = HashCache(str(tmp_path))
    digest = first.file(str(path))
    first.save()
    with open(path, "r+") as f:  # same size, same inode, same mtime: the memo answers (nothing is read)
        f.write("bbbb\n")
    os.utime(path, ns=(stamp, stamp))
    memo = HashCache(str(tmp_path))
    assert memo.file(str(path)) == digest and memo.hashed == 0
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))  # the stat tuple changed: read again
    again = HashCache(str(tmp_path))
    assert again.file(str(path)) != digest and again.hashed == 1
    fresh = tmp_path / "fresh.jsonl"  # modified just now: hashed, not memoised (a same-tick edit could hide)
    fresh.write_text("x\n")
    again.file(str(fresh))
    assert str(fresh) not in again.entries


def test_code_version_covers_every_module_a_stage_runs(tmp_path, monkeypatch):
    modules = dict(_closure(("reasonpipe.filters.minhash",)))
    assert {"reasonpipe.filters.normalize", "reasonpipe.filters.minhash_core", "reasonpipe.filters.stage"} <= set(
        modules
    )
    assert not any(m.startswith("reasonpipe.pipeline.") for m in modules)  # wiring is not followed
    pkg = tmp_path / "reasonpipe_probe"  # a package of our own: an import inside a function is followed too
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "stage.py").write_text("def run():\n    from reasonpipe_probe import helper\n    return helper.X\n")
    (pkg / "helper.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_version("reasonpipe_probe.stage")
    (pkg / "helper.py").write_text("X = 2\n")
    _closure.cache_clear()
    _module.cache_clear()
    assert code_version("reasonpipe_probe.stage") != before


# ---------------------------------------------------------------------------------------------------- 2. user files
def _refused(capsys, root: Path, manifest: Path, key: str, needle: str) -> None:
    before = sorted(str(p) for p in root.rglob("*"))
    for command in ("plan", "run"):
        code, _, err = rp(capsys, command, manifest)
        assert code == 2 and key in err and needle in err, (command, err)
        assert "Traceback" not in err
    assert sorted(str(p) for p in root.rglob("*")) == before  # nothing written, nothing removed


@pytest.mark.parametrize(
    "case, output, needle",
    [
        ("an input folder", "data/notes", "is inside input 'notes'"),
        ("inside an input folder", "data/notes/out", "is inside input 'notes'"),
        ("a folder holding inputs", "data", "input 'gsm'"),
        ("the filesystem root", "/", "is /"),
        ("the home folder", "~", "home folder"),
        ("the manifest's folder", ".", "holds this manifest"),
        ("an existing file", "readme.txt", "is not a folder"),
        ("a folder of the user's", "mine", "not created by reasonpipe"),
    ],
)
def test_an_output_that_could_hurt_user_files_is_refused(tmp_path, capsys, case, output, needle):
    make_corpus(tmp_path)
    (tmp_path / "readme.txt").write_text("the user's notes\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("\\documentclass{article}\n")
    manifest = write_manifest(tmp_path, output={"path": output})
    _refused(capsys, tmp_path, manifest, "output.path", needle)


def test_a_work_dir_inside_an_input_is_refused(tmp_path, capsys):
    make_corpus(tmp_path)
    manifest = write_manifest(tmp_path, output={"path": "out", "work_dir": "data/notes/cache"})
    _refused(capsys, tmp_path, manifest, "output.work_dir", "is inside input 'notes'")


def test_users_samples_parquet_in_the_output_folder_survives(tmp_path, capsys):
    """The issue's case: a run (even --force) deleted a user's samples/*.parquet kept in the output folder."""
    make_corpus(tmp_path)
    mine = tmp_path / "out" / "samples" / "mine.parquet"
    mine.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2, 3]}), mine)
    digest = hashlib.sha256(mine.read_bytes()).hexdigest()
    manifest = write_manifest(tmp_path)
    for args in (["run", manifest], ["run", manifest, "--force"]):
        code, _, err = rp(capsys, *args)
        assert code == 2 and "output.path" in err and "not created by reasonpipe" in err, err
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == digest
    assert not (tmp_path / "out" / MARKER).exists()


def test_force_removes_only_what_reasonpipe_wrote(finished, tmp_path):
    root = copy_of(finished, tmp_path)
    out = root / "out"
    (out / "my-notes.txt").write_text("keep me\n")
    plan = compile_plan(load_manifest(root / "m.yaml"))
    _reset_output(plan)
    assert (out / "my-notes.txt").read_text() == "keep me\n" and (out / MARKER).is_file()
    assert not any((out / name).exists() for name in ("index.json", "shards", "samples", "exclusions"))
    assert not list((out / ".work").glob("p*-*"))
    with pytest.raises(FolderError, match="no .reasonpipe marker"):
        remove_owned(root / "data" / "gsm.jsonl", root / "data")  # never inside a folder that is not ours
    with pytest.raises(FolderError, match="not inside"):
        remove_owned(root / "data", out)


# ---------------------------------------------------------------------------------------------------- 3. one at a time
def _wait_for(predicate, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_second_run_of_the_same_output_is_refused_while_the_first_runs(tmp_path):
    make_corpus(tmp_path)
    manifest = write_manifest(tmp_path)
    other = write_manifest(tmp_path, "other", executor={"kind": "local", "tasks": 1})  # another manifest, same output
    first = rp_process("run", manifest)
    lock = tmp_path / "out" / LOCK
    assert _wait_for(lambda: lock.exists() and lock.read_text().strip())
    os.killpg(first.pid, signal.SIGSTOP)  # frozen mid-run, holding its lock, however slow the machine is
    try:
        for m in (manifest, other):
            second = subprocess.run(CLI + ["run", str(m)], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert second.returncode == 3, second.stderr
            assert "another reasonpipe run is using" in second.stderr and f"pid {first.pid}" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert validate(tmp_path / "out") == []


def test_a_stale_lock_of_a_dead_run_is_taken_over(finished, tmp_path, capsys):
    root = copy_of(finished, tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    holder = {"pid": dead.pid, "host": socket.gethostname(), "started": "yesterday"}
    (root / "out" / LOCK).write_text(json.dumps(holder))  # what a SIGKILLed run leaves (flock itself is free)
    (root / "out" / "index.json").unlink()  # so the run has work to do
    code, out, _ = rp(capsys, "run", root / "m.yaml")
    assert code == 0 and "took over the lock" in out and f"pid {dead.pid}" in out, out
    assert (root / "out" / LOCK).read_text() == ""  # released cleanly


KILLER = """
import os, signal, sys
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters.base_filter import BaseFilter
from reasonpipe.filters.exclusions import exclusion_writer
from reasonpipe.docio import DocWriter

def docs(data, rank, world_size):
    for i in range(50):
        if i == 25 and os.environ.get("KILL"):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-write: half the documents are written
        yield Document(text=f"document {i} " * 200, id=str(i))

class RejectAll(BaseFilter):
    def filter(self, doc):
        return False, "rejected"

out, kind = sys.argv[1], sys.argv[2]
writer = DocWriter(out + "/data") if kind == "documents" else RejectAll(exclusion_writer(out + "/data"))
LocalPipelineExecutor([docs, writer], tasks=1, workers=1, logging_dir=out + "/logs").run()
"""


@pytest.mark.parametrize("kind", ["documents", "exclusions"])
def test_a_task_killed_mid_write_leaves_no_partial_file_and_no_completion_marker(tmp_path, kind):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = subprocess.run([sys.executable, script, tmp_path, kind], env=os.environ | {"KILL": "1"}, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert not list((tmp_path / "logs").glob("completions/*"))
    name = doc_file(0) if kind == "documents" else "00000.jsonl.gz"
    assert not (tmp_path / "data" / name).exists()  # only a temporary file, never the final name
    subprocess.run([sys.executable, script, tmp_path, kind], check=True, timeout=120)  # the re-run completes
    assert [p.name for p in (tmp_path / "logs" / "completions").iterdir()] == ["00000"]
    if kind == "documents":
        ids = [doc.id for doc in read_docs(get_datafolder(str(tmp_path / "data")), name)]
    else:
        with gzip.open(tmp_path / "data" / name, "rt") as f:
            ids = [json.loads(line)["id"] for line in f]
    assert ids == [str(i) for i in range(50)]


# ---------------------------------------------------------------------------------------------------- 4. Ctrl-C
def running_in_group(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies left to a container's init do not count)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("kind", ["local", "dask"])
def test_ctrl_c_stops_workers_and_driver_within_seconds_and_a_rerun_resumes(tmp_path, kind):
    make_corpus(tmp_path, n_gsm=100, n_notes=100)
    manifest = write_manifest(tmp_path, executor={"kind": kind, "tasks": 4, "workers": 2})
    proc = rp_process("run", manifest)
    started = lambda: list((tmp_path / "out" / ".work").glob("prep-*/runs/*/completions/*"))  # noqa: E731
    assert _wait_for(started), proc.communicate()
    assert proc.poll() is None, "the run ended before Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: every process of the foreground group
    sent = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 15, "the driver took too long to stop"
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "interrupted:" in err and "Re-run the same command to resume" in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one clear line
    assert _wait_for(lambda: not running_in_group(proc.pid), 5), "a worker outlived the driver"
    # the re-run resumes (locally: same task count, same bytes on every engine, no cluster to start)
    rerun = subprocess.run(CLI + ["run", manifest, "--executor", "local"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "runs complete, resumes" in rerun.stdout  # the finished tasks are kept
    assert validate(tmp_path / "out") == []


_BLOCKED_WORKER = """
import os, signal, sys, threading, time
import multiprocess
from reasonpipe.pipeline import executors
signal.signal(signal.SIGTERM, executors._kill_children_and_exit)  # what a run's process has
os.register_at_fork(after_in_child=executors._worker_signals)
lock = multiprocess.Lock()
lock.acquire()
pid = os.fork()
if pid == 0:  # an idle worker: another thread that takes signals, the main one blocked on the pool's queue lock
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    lock.acquire()
    os._exit(0)
time.sleep(0.5)
os.kill(pid, signal.SIGTERM)  # what Pool.terminate sends at the end of every run
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(0 if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM else 3)
    time.sleep(0.05)
os.kill(pid, signal.SIGKILL)
sys.exit(4)
"""


def test_a_worker_blocked_on_a_lock_dies_at_sigterm_whichever_thread_takes_it():
    """A run's forked processes take SIGTERM with the kernel's default action: a Python handler runs only in the main
    thread, and a worker idle on the pool's queue lock hung the run (the pool waits for it forever)."""
    proc = subprocess.run([sys.executable, "-c", _BLOCKED_WORKER], cwd=ROOT, timeout=60)
    assert proc.returncode == 0


# ---------------------------------------------------------------------------------------------------- 5. manifests
@pytest.mark.timeout(60)
def test_a_yaml_alias_bomb_fails_fast_with_little_memory(tmp_path):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: bomb\ninputs: *a9\n")
    tracemalloc.start()
    start = time.monotonic()
    with pytest.raises(ManifestError, match="billion laughs"):
        load_manifest(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.monotonic() - start < 5 and peak < 50 << 20


def test_duplicate_keys_are_an_error_naming_the_line(tmp_path):
    make_corpus(tmp_path)
    text = write_manifest(tmp_path).read_text()
    path = tmp_path / "dup.yaml"
    path.write_text(text + "pack: {seq_len: 4096}\n")  # a second `pack:` would silently win
    with pytest.raises(ManifestError) as exc:
        load_manifest(path)
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("pack:"))
    last = len(text.splitlines()) + 1
    assert exc.value.problems == [f"dup.yaml:{last}: duplicate key 'pack' (first set on line {first}); keep one"]


def test_plan_validates_tokenizer_benchmarks_and_inputs_before_any_work(tmp_path, capsys):
    make_corpus(tmp_path)
    (tmp_path / "tok.json").write_text('{"not": "a tokenizer"}')
    (tmp_path / "empty").mkdir()
    (tmp_path / "bench" / "bench.jsonl").write_text('{"question": "q"}\n{broken\n')
    (tmp_path / "bench" / "other.jsonl").write_text('{"prompt": "q"}\n')
    inputs = [{"name": "gsm", "path": "data/gsm.jsonl"}, {"name": "empty", "path": "empty", "format": "jsonl"}]
    benchmarks = [{"name": n, "path": f"bench/{n}.jsonl", "fields": ["question"]} for n in ("bench", "other")]
    manifest = write_manifest(
        tmp_path, inputs=inputs, tokenizer={"path": "tok.json"}, stages=[{"decontaminate": {"benchmarks": benchmarks}}]
    )
    code, out, err = rp(capsys, "plan", manifest)
    assert code == 2 and "Traceback" not in err
    assert ": tokenizer.path: " in err and "does not load as a tokenizer" in err
    assert "inputs[1].path: " in err and "holds no jsonl file" in err
    assert "stages[0].decontaminate.benchmarks[0].path: " in err and "does not parse" in err
    assert "stages[0].decontaminate.benchmarks[1].fields: ['question'] in no record" in err
    assert not (tmp_path / "out").exists()


def test_dangling_symlinks_warn_and_strict_makes_them_errors(tmp_path, capsys):
    make_corpus(tmp_path)
    (tmp_path / "data" / "notes" / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    manifest = write_manifest(tmp_path)
    code, out, _ = rp(capsys, "plan", manifest)
    assert code == 0 and "warning" in out and "gone.jsonl (dangling symlink)" in out, out
    code, _, err = rp(capsys, "plan", manifest, "--strict")
    assert code == 2 and "gone.jsonl (dangling symlink)" in err and "--strict" in err


def test_a_symlink_loop_is_a_clean_error(tmp_path, capsys):
    make_corpus(tmp_path)
    (tmp_path / "loop.jsonl").symlink_to(tmp_path / "loop.jsonl")
    manifest = write_manifest(tmp_path, inputs=[{"name": "loop", "path": "loop.jsonl"}])
    code, _, err = rp(capsys, "plan", manifest)
    assert code == 2 and "inputs[0].path: " in err and "is a symlink loop" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------- 6. clean errors
ENOSPC_RUN = """
import errno, os, sys
from reasonpipe import docio
from reasonpipe.pipeline import cli

def full_disk(self, data, rank=0, world_size=1):
    for doc in data:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        yield doc

docio.DocWriter.run = full_disk
sys.exit(cli.main(["run", sys.argv[1]]))
"""


def test_a_full_disk_is_one_clean_message_and_a_rerun_resumes(tmp_path):
    make_corpus(tmp_path)
    manifest = write_manifest(tmp_path)
    full = subprocess.run([sys.executable, "-c", ENOSPC_RUN, manifest], capture_output=True, text=True, timeout=300)
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert "No space left on device" in full.stderr and "re-run the same command" in full.stderr
    assert str(tmp_path / "out" / ".work" / "prep-") in full.stderr  # the folder it was writing
    rerun = subprocess.run(CLI + ["run", str(manifest)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and validate(tmp_path / "out") == []


def test_an_unreadable_input_is_a_clean_error(tmp_path, capsys, monkeypatch):
    make_corpus(tmp_path)
    manifest = write_manifest(tmp_path)
    locked = str(tmp_path / "data" / "notes" / "part1.jsonl")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != locked and real(p, mode))  # as if chmod 000
    code, _, err = rp(capsys, "plan", manifest)
    assert code == 2 and f"cannot read {locked}: permission denied" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "mode", [[], ["--json"], ["--sample", "2"], ["--validate"], ["--plot", "PLOTS"], ["--compare"]]
)
def test_inspect_of_a_folder_without_index_exits_2_in_every_mode(finished, tmp_path, capsys, mode):
    empty = tmp_path / "not-an-output"
    empty.mkdir()
    args = [a.replace("PLOTS", str(tmp_path / "plots")) for a in mode]
    if mode == ["--compare"]:  # either side missing
        assert rp(capsys, "inspect", finished / "out", "--compare", empty)[0] == 2
        args = ["--compare", str(finished / "out")]
    code, _, err = rp(capsys, "inspect", empty, *args)
    assert code == 2 and "index.json" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------- 7. accounting
def test_an_accounting_identity_that_does_not_hold_fails_the_run_naming_the_stage(finished, tmp_path, capsys):
    root = copy_of(finished, tmp_path)
    work = root / "out" / ".work"
    # a stage that lost a document without counting it: its step forwarded one less than it read
    stats = next(work.glob("prep-*/runs/*-canonical/stats/00000.json"))
    steps = json.loads(stats.read_text())
    step = next(s for s in steps if "decontaminat" in s["name"].lower())
    forwarded = step["stats"]["forwarded"]
    step["stats"]["forwarded"] = (
        forwarded - 1 if isinstance(forwarded, int) else forwarded | {"total": forwarded["total"] - 1}
    )
    stats.write_text(json.dumps(steps))
    (root / "out" / "index.json").unlink()
    code, _, err = rp(capsys, "run", root / "m.yaml")
    assert code == 1 and "accounting does not add up" in err and "01-decontaminate" in err, err
    assert not (root / "out" / "index.json").exists()  # no output whose counts do not add up
