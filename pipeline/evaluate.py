"""`reasonpipe eval MODEL --benchmark FILE`: answer accuracy on a local benchmark, sampled or with Markovian RSA.

    reasonpipe eval runs/tiny --benchmark gsm8k_test.jsonl                      # greedy, one answer per problem
    reasonpipe eval runs/tiny --benchmark math.jsonl --samples 8 --temperature 0.7   # pass@k, majority vote
    reasonpipe eval runs/tiny --benchmark gsm8k_test.jsonl --rsa 8,4,3 --tail 512    # Markovian RSA (rsa_harness.py)

Benchmarks: JSON lines (`.jsonl`, `.jsonl.gz`) or parquet. The problem is `question`, `problem` or `prompt`; the gold
answer `answer` (GSM8K's `... #### 72`, or a bare answer) or `solution` (MATH: its last `\\boxed{}`); `--field
question=KEY --field answer=KEY [--field id=KEY]` maps other names. A model's final answer is its text after
`</think>` (all of it when it opened no think block), judged against the gold with `filters.answers.judge`
(math-verify offline, exact match after normalisation otherwise; `--method`). A verdict that cannot be made (no
answer, unparseable) counts as wrong and its reason is tallied.

Scoring: with `--samples N` each problem is sampled N times (seeded); pass@k is the unbiased estimator
1 - C(n - c, k) / C(n, k) for k = 1, 2, 4, ... N; the majority vote takes the most common answer (by its normalised
form, empty answers left out, ties to the earliest sample) and judges it. With `--rsa N,K,T` each round's population
is scored the same way and the final answer is the last round's majority.

Writes OUT/results.jsonl (one line per problem) and OUT/summary.json (default OUT: RUN/eval/<benchmark name>), each
whole or not at all, and prints the summary.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonpipe.filters.answers import METHODS, judge, normalize_answer
from reasonpipe.pipeline.generate_cli import write_atomic
from reasonpipe.pipeline.generation_args import UsageError, add_model_args, sampling_from

if TYPE_CHECKING:
    from reasonpipe.pipeline.completion import Completion

QUESTION_FIELDS = ("question", "problem", "prompt")
GOLD_FIELDS = ("answer", "solution")
FIELD_KEYS = ("question", "answer", "id")


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    gold: str  # the reference text (a whole solution is fine: `judge` takes its `####` / `\boxed{}` answer)


def parse_fields(pairs: Sequence[str] | None) -> dict[str, str]:
    """`--field name=KEY` pairs as {name: KEY}; names: question (or problem), answer (or solution), id."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, key = pair.partition("=")
        name = {"problem": "question", "solution": "answer"}.get(name.strip(), name.strip())
        if not sep or not key.strip() or name not in FIELD_KEYS:
            raise UsageError(f"--field {pair!r}: write NAME=KEY with NAME one of {', '.join(FIELD_KEYS)}")
        out[name] = key.strip()
    return out


def _records(path: Path) -> list[tuple[str, Any]]:
    """(where, record) of every record of a benchmark file."""
    if not path.is_file():
        raise UsageError(f"--benchmark {path}: no such file")
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's errors for a file that is not parquet
            raise UsageError(f"{path}: not a readable parquet file ({e})") from None
        return [(f"{path} row {i}", r) for i, r in enumerate(rows)]
    opener = gzip.open if path.name.endswith(".gz") else open
    out = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        out.append((f"{path}:{n}", json.loads(line)))
                    except ValueError as e:
                        raise UsageError(f"{path}:{n}: not JSON ({e}); a benchmark is JSON lines or parquet") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    return out


def read_benchmark(path: str | Path, fields: dict[str, str] | None = None, limit: int | None = None) -> list[Problem]:
    """The problems of a benchmark file (module doc); UsageError naming the file, line and field."""
    path, fields = Path(path), fields or {}
    problems = []
    for n, (where, record) in enumerate(_records(path)):
        if limit is not None and len(problems) >= limit:
            break
        if not isinstance(record, dict):
            raise UsageError(f"{where}: a {type(record).__name__}, expected an object")
        question = _field(record, where, fields.get("question"), QUESTION_FIELDS, "question")
        gold = _field(record, where, fields.get("answer"), GOLD_FIELDS, "answer")
        rid = record.get(fields.get("id", "id"))
        problems.append(Problem(str(rid) if rid is not None else str(n), question, gold))
    if not problems:
        raise UsageError(f"{path}: no problems in it")
    return problems


def _field(record: dict, where: str, key: str | None, defaults: tuple[str, ...], name: str) -> str:
    keys = (key,) if key else defaults
    for k in keys:
        value = record.get(k)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            return value
    have = ", ".join(sorted(map(str, record))) or "none"
    raise UsageError(f"{where}: no {name} in field {' / '.join(map(repr, keys))} (fields: {have}); map it with "
                     f"--field {name}=KEY")  # fmt: skip


# ------------------------------------------------------------------------------------------------------ scoring
def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of n samples with c correct (Chen et al. 2021)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... and n itself."""
    return sorted({2**i for i in range(n.bit_length()) if 2**i <= n} | {n})


def majority(answers: Sequence[str | None]) -> int | None:
    """The index of the first answer of the most common normalised form (empty ones left out), or None."""
    keys = [normalize_answer(a) if a and a.strip() else None for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return None
    top = max(counts.values())
    return next(i for i, k in enumerate(keys) if k and counts[k] == top)


@dataclass(frozen=True)
class Judged:
    answer: str  # the model's final answer text
    correct: bool  # unknown counts as wrong
    verdict: str  # "correct", "incorrect" or "unknown:<reason>"
    predicted: str | None  # the answer as compared


def judge_answer(gold: str, answer: str, method: str) -> Judged:
    v = judge(gold, answer, method)  # type: ignore[arg-type]
    verdict = "correct" if v.correct else "incorrect" if v.correct is False else f"unknown:{v.reason}"
    return Judged(answer, bool(v.correct), verdict, v.predicted)


def score(problem: Problem, answers: Sequence[str], method: str) -> dict[str, Any]:
    """Per-problem scores of its sampled answers: verdicts, pass@k, the majority answer and its verdict."""
    judged = [judge_answer(problem.gold, a, method) for a in answers]
    n, c = len(judged), sum(j.correct for j in judged)
    top = majority(answers)
    maj = judged[top] if top is not None else None
    return {
        "judged": judged,
        "correct": c,
        "pass": {k: pass_at_k(n, c, k) for k in ks(n)},
        "majority": maj.answer if maj else None,
        "majority_correct": bool(maj and maj.correct),
    }


def population_summary(scores: Sequence[dict[str, Any]], completions: Sequence[Sequence[Completion]]) -> dict:
    """Accuracy figures over problems (scores) and output statistics over every completion."""
    flat = [c for row in completions for c in row]
    opened = [c for c in flat if c.closed is not None]
    n = len(completions[0]) if completions else 0
    verdicts = Counter(j.verdict for s in scores for j in s["judged"])
    out = {
        "accuracy": _mean(s["correct"] / n for s in scores) if n else 0.0,  # = pass@1
        "pass_at_k": {str(k): _mean(s["pass"][k] for s in scores) for k in ks(n)} if n else {},
        "majority_accuracy": _mean(s["majority_correct"] for s in scores),
        "mean_output_tokens": _mean(len(c.ids) for c in flat),
        "opened_reasoning": len(opened) / len(flat) if flat else 0.0,
        "closed_reasoning": sum(bool(c.closed) for c in opened) / len(opened) if opened else None,
        "stopped": sum(c.stopped for c in flat) / len(flat) if flat else 0.0,
        "verdicts": dict(sorted(verdicts.items())),
    }
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


# ------------------------------------------------------------------------------------------------------ command
def add_eval_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--benchmark", required=True, metavar="FILE", help="JSON lines or parquet with problems + answers")
    p.add_argument("--field", action="append", metavar="NAME=KEY", help="question=KEY, answer=KEY, id=KEY")
    p.add_argument("--samples", type=int, default=1, help="samples per problem (pass@k, majority; --temperature > 0)")
    p.add_argument("--limit", type=int, help="the first N problems only")
    p.add_argument("--method", choices=METHODS, default="auto", help="answer comparison (filters/answers.py)")
    p.add_argument("--rsa", metavar="N,K,T", help="Markovian RSA: N traces, K candidates per prompt, T rounds")
    p.add_argument("--tail", type=int, metavar="TAU", help="RSA tail length (default: the training manifest's tau)")
    p.add_argument("--out", help="folder for results.jsonl and summary.json (default RUN/eval/<benchmark name>)")


def _rsa_shape(args: argparse.Namespace, loaded) -> Any:
    from reasonpipe.pipeline.rsa_harness import RSAShape

    try:
        n, k, t = (int(x) for x in args.rsa.split(","))
    except ValueError:
        raise UsageError(f"--rsa {args.rsa!r}: write N,K,T (e.g. 8,4,3)") from None
    tau = args.tail if args.tail is not None else (loaded.rsa.tau if loaded.rsa else None)
    if tau is None:
        raise UsageError(f"--rsa: give --tail TAU ({loaded.rsa_origin}, so there is no trained tail length)")
    try:
        return RSAShape(n, k, t, tau)
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_eval(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.load_model import load_model

    sampling = sampling_from(args)
    if args.samples < 1 or (args.limit is not None and args.limit < 1):
        raise UsageError("--samples and --limit must be >= 1")
    if args.rsa and args.samples != 1:
        raise UsageError("--rsa sets the number of traces (N); drop --samples")
    if args.samples > 1 and sampling.temperature == 0:
        raise UsageError(f"--samples {args.samples} with greedy decoding gives {args.samples} equal answers; set "
                         "--temperature (e.g. 0.7)")  # fmt: skip
    if args.tail is not None and not args.rsa:
        raise UsageError("--tail is the RSA tail length: give --rsa N,K,T too")
    problems = read_benchmark(args.benchmark, parse_fields(args.field), args.limit)
    out = Path(args.out) if args.out else Path(args.model) / "eval" / Path(args.benchmark).name.split(".")[0]
    loaded = load_model(args.model, args.device, args.precision, args.threads)
    if args.rsa:
        results, summary = _eval_rsa(args, loaded, problems, sampling)
    else:
        results, summary = _eval_samples(args, loaded, problems, sampling)
    summary = {"model": loaded.source, "benchmark": str(args.benchmark), "problems": len(problems),
               "sampling": sampling.model_dump(), "method": args.method, **summary}  # fmt: skip
    write_atomic(out / "results.jsonl", (json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    write_atomic(out / "summary.json", [json.dumps(summary, indent=2, ensure_ascii=False) + "\n"])
    print_summary(summary)
    print(f"wrote {out / 'results.jsonl'} and {out / 'summary.json'}", file=sys.stderr)
    return 0


def _eval_samples(args, loaded, problems, sampling) -> tuple[list[dict], dict]:
    from reasonpipe.pipeline.completion import (
        Throughput,
        complete,
        completion_record,
        conversation,
        generation_prompt,
        render_turns,
    )
    from reasonpipe.pipeline.generate_cli import warn_context

    t, n = loaded.template, args.samples
    prompts = []
    for p in problems:
        turns = conversation([{"role": "user", "content": p.question}], args.system)
        prompts.append(generation_prompt(render_turns(t, turns), loaded.tokens, sampling.think))
    warn_context(loaded, max(map(len, prompts)), sampling.max_new_tokens)
    speed = Throughput()
    done = complete(loaded, [ids for ids in prompts for _ in range(n)], sampling, throughput=speed)
    rows = [done[i * n : (i + 1) * n] for i in range(len(problems))]
    results, scores = [], []
    for p, ids, row in zip(problems, prompts, rows):
        s = score(p, [t.decode(c.answer) for c in row], args.method)
        scores.append(s)
        samples = [{**completion_record(t, c), "correct": j.correct, "verdict": j.verdict, "predicted": j.predicted}
                   for c, j in zip(row, s["judged"])]  # fmt: skip
        results.append({"id": p.id, "question": p.question, "gold": p.gold, "prompt_tokens": len(ids),
                        "correct": s["correct"], "samples": samples, "majority": s["majority"],
                        "majority_correct": s["majority_correct"]})  # fmt: skip
    summary = {"samples": n, **population_summary(scores, rows), **_speed(speed)}
    return results, summary


def _eval_rsa(args, loaded, problems, sampling) -> tuple[list[dict], dict]:
    from reasonpipe.pipeline.completion import PromptError, completion_record
    from reasonpipe.pipeline.generate_cli import warn_context
    from reasonpipe.pipeline.rsa_harness import RSAHarness

    shape = _rsa_shape(args, loaded)
    harness = RSAHarness(loaded, shape, sampling, loaded.rsa, args.system)
    try:
        prompts = [harness.problem_prompt(p.question) for p in problems]
    except PromptError as e:
        raise UsageError(f"{args.benchmark}: {e}") from None
    warn_context(loaded, max(p.bound for p in prompts), sampling.max_new_tokens)
    run = harness.run(prompts)
    t = loaded.template
    per_round, results = [], [{"id": p.id, "question": p.question, "gold": p.gold, "rounds": []} for p in problems]
    for r, population in enumerate(run.rounds):
        scores = [score(p, [t.decode(c.answer) for c in row], args.method) for p, row in zip(problems, population)]
        per_round.append({"round": r, "max_prompt_tokens": run.max_prompt_tokens[r],
                          **population_summary(scores, population)})  # fmt: skip
        for item, s, row in zip(results, scores, population):
            last = r == len(run.rounds) - 1
            traces = [completion_record(t, c) if last else {"answer": t.decode(c.answer), "tokens": len(c.ids)}
                      for c in row]  # fmt: skip
            for trace, j in zip(traces, s["judged"]):
                trace.update(correct=j.correct, verdict=j.verdict)
            item["rounds"].append({"round": r, "traces": traces, "majority": s["majority"],
                                   "majority_correct": s["majority_correct"]})  # fmt: skip
    for item in results:
        item["final"], item["final_correct"] = item["rounds"][-1]["majority"], item["rounds"][-1]["majority_correct"]
    o = harness.options
    summary = {
        "rsa": {"n": shape.n, "k": shape.k, "rounds": shape.t, "tau": shape.tau, "tail_unit": o.tail_unit,
                "include_answer_in_tail": o.include_answer_in_tail, "templates": loaded.rsa_origin
                if loaded.rsa else f"defaults ({loaded.rsa_origin})"},
        "accuracy": per_round[-1]["majority_accuracy"],  # the final answer: the last round's majority
        "max_prompt_tokens": max(run.max_prompt_tokens),
        "prompt_bound": run.bound,
        "per_round": per_round,
        **_speed(run.throughput),
    }  # fmt: skip
    return results, summary


def _speed(s) -> dict[str, Any]:
    return {"generated_tokens": s.tokens, "seconds": round(s.seconds, 3), "tokens_per_second": s.tokens_per_second}


def print_summary(s: dict[str, Any]) -> None:
    head = f"{s['model']} on {s['benchmark']}: {s['problems']} problems"
    if "rsa" in s:
        r = s["rsa"]
        print(f"{head}, Markovian RSA N={r['n']} K={r['k']} T={r['rounds']} tau={r['tau']} {r['tail_unit']}")
        print("| round | accuracy (mean over traces) | majority accuracy | mean output tokens | max prompt tokens |")
        print("|---|---|---|---|---|")
        for x in s["per_round"]:
            print(f"| {x['round']} | {x['accuracy']:.3f} | {x['majority_accuracy']:.3f} | "
                  f"{x['mean_output_tokens']:.1f} | {x['max_prompt_tokens']} |")  # fmt: skip
        print(f"final accuracy (last round's majority) {s['accuracy']:.3f}; prompts <= {s['max_prompt_tokens']} "
              f"tokens (bound {s['prompt_bound']})")  # fmt: skip
    else:
        print(f"{head}, {s['samples']} sample(s) each")
        print(f"accuracy {s['accuracy']:.3f}" + "".join(f", pass@{k} {v:.3f}" for k, v in s["pass_at_k"].items()
                                                         if k != "1")
              + (f", majority {s['majority_accuracy']:.3f}" if s["samples"] > 1 else ""))  # fmt: skip
        closed = "n/a" if s["closed_reasoning"] is None else f"{s['closed_reasoning']:.0%}"
        print(f"mean output tokens {s['mean_output_tokens']:.1f}, opened reasoning {s['opened_reasoning']:.0%}, "
              f"closed it {closed}, stopped {s['stopped']:.0%}")  # fmt: skip
        print("verdicts: " + ", ".join(f"{k} {v}" for k, v in s["verdicts"].items()))
    print(f"{s['generated_tokens']} tokens in {s['seconds']:.1f}s ({s['tokens_per_second']:,.0f} tokens/s)")
