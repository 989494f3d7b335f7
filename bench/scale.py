"""End-to-end scaling: the real-sample stage list on 1x / 4x / 16x corpora, wall time and peak memory per run.

    python bench/scale.py [--sizes 1 4 16] [--fraction 1] [--tasks 4 --workers 2] [--repeat 1]
                          [--baseline /path/to/old/.venv/bin/reasonpipe --baseline-sizes 4] [--free-language-id]

Corpus: every input of manifests/real-sample.yaml (../shared/data/real) plus, for an Nx corpus, N-1 perturbed copies
of each record: 90% of copies have 30% of their words replaced (new documents that survive dedup), 10% have 5%
replaced (near-duplicates that MinHash must remove). Structure is kept (keys, `#### n` answers, think tags, LaTeX
commands), so every stage has its usual work. The manifest is real-sample.yaml with its inputs pointed at the copies.
`--fraction F` makes 1x the first F of every input's records (a quicker sweep of the same shape of data).

Each configuration runs `reasonpipe run` in a subprocess from scratch; a sampler thread reads the process tree's RSS
every 0.05 s and attributes it to the datatrove run in progress (parsed from the driver's `[i/N] name: done` lines):
per run it reports wall seconds, the driver's peak RSS and the peak RSS of the largest single task process. With
`--baseline`, the same sizes also run with another reasonpipe executable (e.g. an older commit's venv), interleaved
with ours (ours, theirs, ours, theirs, ... for `--repeat` rounds), so both see the same machine load.
`--free-language-id` adds a third side: ours with lingua's results replayed from an untimed recording run
(bench/lang_replay.py), the floor for any language identifier; its outputs are compared with ours (sha256 of every
shard, shards-val and samples file) and the line says whether they are identical. An output folder left by an
earlier invocation is deleted before its run (it would make the run a resume).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifests" / "real-sample.yaml"
WORD = re.compile(r"(?<![<\\/&])\b[A-Za-z]{4,}\b(?![>(])")
DONE = re.compile(r"^\[(\d+)/(\d+)\] (\S+): (done in|already complete)(?:.*\((\d+) tasks\))?")
START = re.compile(r"^reasonpipe run .*: (\d+) datatrove runs")


def perturb(value, rng: random.Random, vocab: list[str], fraction: float):
    """`value` with `fraction` of the words in every string replaced by vocabulary words (keys untouched)."""
    if isinstance(value, str):
        return WORD.sub(lambda m: rng.choice(vocab) if rng.random() < fraction else m.group(0), value)
    if isinstance(value, list):
        return [perturb(v, rng, vocab, fraction) for v in value]
    if isinstance(value, dict):
        return {k: v if k in ("id", "role", "task_id") else perturb(v, rng, vocab, fraction) for k, v in value.items()}
    return value


def build_corpus(manifest: dict, base: Path, copies: int, fraction: float, out: Path) -> tuple[dict, int, int]:
    """Write `copies` x (the first `fraction` of) every input, originals first, under `out`; return the manifest's
    inputs, bytes, records."""
    out.mkdir(parents=True, exist_ok=True)
    inputs, total_bytes, total_records = [], 0, 0
    for inp in manifest["inputs"]:
        files = sorted(Path(p) for p in glob.glob(str(base / inp["path"])))
        records = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
        records = records[: max(1, round(len(records) * fraction))]
        vocab = sorted({w for r in records[:2000] for w in WORD.findall(json.dumps(r))})[:20000] or ["word"]
        path = out / f"{inp['name']}.jsonl"
        with open(path, "w") as f:
            for copy in range(copies):
                for i, rec in enumerate(records):
                    if copy:
                        rng = random.Random(f"{inp['name']}:{i}:{copy}")
                        rec = perturb(rec, rng, vocab, 0.05 if rng.random() < 0.1 else 0.30)
                    f.write(json.dumps(rec) + "\n")
        total_bytes += path.stat().st_size
        total_records += copies * len(records)
        inputs.append({**inp, "path": str(path)})
    return inputs, total_bytes, total_records


class Sampler(threading.Thread):
    """Peak RSS of the driver and of its largest descendant, per datatrove run (the run in progress)."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.proc, self.current, self.stop = psutil.Process(proc.pid), 1, False
        self.peaks: dict[int, list[int]] = {}

    def run(self) -> None:
        while not self.stop:
            try:
                driver = self.proc.memory_info().rss
                tasks = [c.memory_info().rss for c in self.proc.children(recursive=True) if c.is_running()]
            except psutil.Error:
                tasks, driver = [], 0
            peak = self.peaks.setdefault(self.current, [0, 0])
            peak[0], peak[1] = max(peak[0], driver), max([peak[1], *tasks])
            time.sleep(0.05)


def run_once(exe: list[str], manifest: Path, out: Path, tasks: int, workers: int) -> dict:
    """One `reasonpipe run` of `manifest` from scratch (`exe`: the command that stands for `reasonpipe`)."""
    shutil.rmtree(out, ignore_errors=True)  # an output left by an earlier invocation would make the run a resume
    cmd = [*exe, "run", str(manifest), "--tasks", str(tasks), "--workers", str(workers)]
    env = {**os.environ, "COLUMNS": "200"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sampler = Sampler(proc)
    sampler.start()
    runs, last, log = [], start, []
    for line in proc.stdout:
        log.append(line)
        if m := DONE.match(line.strip()):
            now = time.perf_counter()
            runs.append({"run": m.group(3), "seconds": now - last, "tasks": int(m.group(5) or 0)})
            last, sampler.current = now, int(m.group(1)) + 1
    proc.wait()
    sampler.stop = True
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{''.join(log[-30:])}")
    for i, r in enumerate(runs, 1):
        driver, task = sampler.peaks.get(i, [0, 0])
        r |= {"driver_mib": driver / 2**20, "task_mib": task / 2**20}
    finalize = sampler.peaks.get(len(runs) + 1, [0, 0])
    runs.append({"run": "finalize", "seconds": time.perf_counter() - last, "tasks": 0,
                 "driver_mib": finalize[0] / 2**20, "task_mib": finalize[1] / 2**20})  # fmt: skip
    return {"seconds": time.perf_counter() - start, "runs": runs}


def outputs_digest(out: Path) -> dict[str, str]:
    """sha256 of every file of the outputs that training reads (shards, shards-val, samples)."""
    files = sorted(f for d in ("shards", "shards-val", "samples") for f in (out / d).rglob("*") if f.is_file())
    return {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def side_output(work: Path, side: str, size: int, rep: int) -> Path:
    return work / f"out-{side}-{size}x-{rep}"


def side_manifest(work: Path, bench: dict, side: str, size: int, rep: int) -> tuple[Path, Path]:
    """The manifest of one side's run and its output folder."""
    out, m = side_output(work, side, size, rep), work / f"manifest-{side}-{size}x-{rep}.yaml"
    m.write_text(yaml.safe_dump({**bench, "output": {**bench["output"], "path": str(out)}}))
    return m, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--fraction", type=float, default=1.0, help="1x = this share of every input's records")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--reasonpipe", default=str(Path(sys.executable).with_name("reasonpipe")))
    parser.add_argument("--baseline", help="another reasonpipe executable to run at --baseline-sizes, interleaved")
    parser.add_argument("--baseline-sizes", type=int, nargs="*", default=[4])
    parser.add_argument("--free-language-id", action="store_true",
                        help="add a side that replays lingua's recorded results (bench/lang_replay.py)")  # fmt: skip
    parser.add_argument("--work", help="folder for corpora and outputs (default: a temporary folder)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()

    manifest = yaml.safe_load(MANIFEST.read_text())
    base = MANIFEST.parent
    work = Path(args.work or tempfile.mkdtemp(prefix="rp-scale-"))
    results = []
    for size in args.sizes:
        inputs, nbytes, nrec = build_corpus(manifest, base, size, args.fraction, work / f"corpus-{size}x")
        bench = {**manifest, "inputs": inputs, "name": f"scale-{size}x"}
        for stage in bench["stages"]:  # benchmark files resolve against the real manifest's folder
            for b in (stage.get("decontaminate") or {}).get("benchmarks", []):
                b["path"] = str((base / b["path"]).resolve())
        sides = [("ours", [args.reasonpipe])]
        if args.baseline and size in args.baseline_sizes:
            sides.append(("baseline", [args.baseline]))
        if args.free_language_id:  # an untimed run records lingua's results; the side replays them
            table = work / f"lang-table-{size}x"
            shutil.rmtree(table, ignore_errors=True)
            replay = [sys.executable, str(ROOT / "bench" / "lang_replay.py")]
            m, out = side_manifest(work, bench, "record", size, 0)
            run_once([*replay, "record", str(table), "--"], m, out, args.tasks, args.workers)
            sides.append(("free-language-id", [*replay, "replay", str(table), "--"]))
        for rep in range(args.repeat):
            for side, exe in sides:
                m, out = side_manifest(work, bench, side, size, rep)
                res = run_once(exe, m, out, args.tasks, args.workers)
                res |= {"side": side, "size": size, "rep": rep, "mb": nbytes / 1e6, "docs": nrec}
                results.append(res)
                note = ""
                if side == "free-language-id":  # a floor only if it did the same work: the same outputs
                    identical = outputs_digest(out) == outputs_digest(side_output(work, "ours", size, rep))
                    note = ", outputs identical to ours" if identical else ", OUTPUTS DIFFER FROM OURS"
                print(f"{side} {size}x rep {rep}: {res['seconds']:.1f}s, {res['mb'] / res['seconds']:.2f} MB/s{note}",
                      flush=True)  # fmt: skip
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def report(results: list[dict], args) -> None:
    print(f"\ntasks {args.tasks}, workers {args.workers}, {os.cpu_count()} CPUs; min over {args.repeat} repetition(s)")
    print("| side | size | docs | MB | end-to-end s | MB/s |")
    print("|---|---|---|---|---|---|")
    best: dict[tuple[str, int], dict] = {}
    for r in results:
        key = (r["side"], r["size"])
        if key not in best or r["seconds"] < best[key]["seconds"]:
            best[key] = r
    for (side, size), r in sorted(best.items()):
        mbs = r["mb"] / r["seconds"]
        print(f"| {side} | {size}x | {r['docs']:,} | {r['mb']:.0f} | {r['seconds']:.1f} | {mbs:.2f} |")
    ours = sorted((size, r) for (side, size), r in best.items() if side == "ours")
    print("\n| run | " + " | ".join(f"{s}x s | {s}x driver MiB | {s}x task MiB" for s, _ in ours) + " |")
    print("|---|" + "---|---|---|" * len(ours))
    for i, run in enumerate(ours[0][1]["runs"]):
        cells = []
        for _, r in ours:
            x = r["runs"][i] if i < len(r["runs"]) else {"seconds": 0, "driver_mib": 0, "task_mib": 0}
            cells.append(f"{x['seconds']:.1f} | {x['driver_mib']:.0f} | {x['task_mib']:.0f}")
        print(f"| {run['run']} | " + " | ".join(cells) + " |")
    if len(ours) >= 2:
        (s0, a), (s1, b) = ours[-2], ours[-1]
        print(f"\n{s0}x -> {s1}x: time x{b['seconds'] / a['seconds']:.2f} for x{s1 / s0:.0f} data "
              f"({b['seconds'] / a['seconds'] / (s1 / s0):.2f} of linear)")  # fmt: skip
        # runs of one task, and the driver, must stay flat; a partitioned run's tasks hold their share of the corpus.
        # A run shorter than the sampling interval may have no sample of a process kind: nothing to compare there.
        growth = [(y[kind] / x[kind], x["run"], kind.removesuffix("_mib"), kind == "driver_mib" or x["tasks"] == 1)
                  for x, y in zip(a["runs"], b["runs"]) for kind in ("task_mib", "driver_mib")
                  if x[kind] and y[kind]]  # fmt: skip
        worst, single = max(growth), max(g for g in growth if g[3])
        print(f"largest peak-RSS growth {s0}x -> {s1}x: {worst[1]} ({worst[2]} x{worst[0]:.2f}); of one-task runs "
              f"and the driver: {single[1]} ({single[2]} x{single[0]:.2f})")  # fmt: skip
    for size in args.baseline_sizes:
        if ("ours", size) in best and ("baseline", size) in best:
            o, t = best[("ours", size)], best[("baseline", size)]
            print(f"{size}x: ours {o['mb'] / o['seconds']:.2f} MB/s vs baseline {t['mb'] / t['seconds']:.2f} MB/s "
                  f"= x{t['seconds'] / o['seconds']:.2f}")  # fmt: skip
            if ("free-language-id", size) in best:
                f = best[("free-language-id", size)]
                ratio = t["seconds"] / f["seconds"]
                print(f"{size}x: free language id {f['mb'] / f['seconds']:.2f} MB/s = x{ratio:.2f} the baseline's "
                      "(a floor for any language identifier)")  # fmt: skip


if __name__ == "__main__":
    main()
