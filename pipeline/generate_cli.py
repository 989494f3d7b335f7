"""`reasonpipe generate MODEL (--prompt TEXT | --prompts FILE)`: chat completions from a run or an HF export.

    reasonpipe generate runs/tiny --prompt "What is 12 * 7?"
    reasonpipe generate runs/tiny --prompts prompts.jsonl --out completions.jsonl --temperature 0.7 --top-p 0.95

FILE is JSON lines (`.jsonl`, `.jsonl.gz`, `.ndjson`: one object per line with `messages` [{role, content}], or a
`prompt` / `question` / `problem` string; optional `system` and `id`) or any other file as text lines, one prompt per
non-empty line. Each record becomes one user turn (after a system turn with --system) rendered by the pipeline's
template (pipeline/completion.py). Without --out the completions are printed; `--out FILE` writes JSON lines
(`--out -`: to stdout), one per prompt: id, prompt, prompt_tokens, output, reasoning, answer, closed_reasoning,
tokens, stopped, stop. The file is written whole or not at all (Ctrl-C leaves no partial file).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonpipe.pipeline.generation_args import UsageError, add_model_args, sampling_from

JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".json")
PROMPT_FIELDS = ("prompt", "question", "problem")


@dataclass(frozen=True)
class PromptItem:
    id: str
    messages: list[dict[str, Any]]
    system: str | None = None

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None


def read_prompts(path: str | Path) -> list[PromptItem]:
    """The prompts of a file (module doc); UsageError naming the file and line of the first bad record."""
    path = Path(path)
    items: list[PromptItem] = []
    as_json = path.name.endswith(JSON_SUFFIXES)
    for n, line in _lines(path):
        if not line.strip():
            continue
        if not as_json:
            items.append(PromptItem(f"{path.name}:{n}", [{"role": "user", "content": line.rstrip("\n")}]))
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise UsageError(f"{path}:{n}: not JSON ({e}); write one JSON object per line, or use a .txt") from None
        items.append(_record_item(record, f"{path}:{n}", f"{path.name}:{n}"))
    if not items:
        raise UsageError(f"{path}: no prompts in it")
    return items


def _record_item(record: Any, where: str, default_id: str) -> PromptItem:
    if not isinstance(record, dict):
        raise UsageError(f"{where}: a {type(record).__name__}, expected an object with 'messages' or 'prompt'")
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise UsageError(f"{where}: 'system' must be a string")
    rid = str(record["id"]) if record.get("id") is not None else default_id
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise UsageError(f"{where}: 'messages' must be a list of {{role, content}} objects")
        return PromptItem(rid, messages, system)
    for field in PROMPT_FIELDS:
        if isinstance(record.get(field), str):
            return PromptItem(rid, [{"role": "user", "content": record[field]}], system)
    raise UsageError(f"{where}: no 'messages' list or string field {', '.join(map(repr, PROMPT_FIELDS))}")


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write text lines to `path` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def add_generate_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one user message")
    src.add_argument("--prompts", metavar="FILE", help="JSON lines (messages / prompt fields) or text lines")
    p.add_argument("--out", help="write JSON lines here ('-': stdout) instead of printing the completions")


# ------------------------------------------------------------------------------------------------------ command
def run_generate(args: argparse.Namespace) -> int:
    from reasonpipe.pipeline.completion import (
        PromptError,
        Throughput,
        complete,
        completion_record,
        conversation,
        generation_prompt,
        render_turns,
    )
    from reasonpipe.pipeline.load_model import load_model

    sampling = sampling_from(args)
    one = [PromptItem("prompt", [{"role": "user", "content": args.prompt}])]
    items = read_prompts(args.prompts) if args.prompts else one
    out = None if args.out in (None, "-") else Path(args.out)
    if out is not None and args.prompts and out.resolve() == Path(args.prompts).resolve():
        raise UsageError(f"--out {out} is the prompts file; write the completions elsewhere")
    loaded = load_model(args.model, args.device, args.precision, args.threads)
    prompts = []
    for item in items:
        try:
            turns = conversation(item.messages, item.system if item.system is not None else args.system)
        except PromptError as e:
            raise UsageError(f"{item.id}: {e}") from None
        prompts.append(generation_prompt(render_turns(loaded.template, turns), loaded.tokens, sampling.think))
    warn_context(loaded, max(len(p) for p in prompts), sampling.max_new_tokens)
    speed = Throughput()
    done = complete(loaded, prompts, sampling, throughput=speed)
    records = [
        {"id": item.id, "prompt": item.text, "prompt_tokens": len(ids), **completion_record(loaded.template, c)}
        for item, ids, c in zip(items, prompts, done)
    ]
    if args.out is None:
        for r in records:
            print(f"### {r['id']} ({r['tokens']} tokens, {'stopped at ' + r['stop'] if r['stopped'] else 'cut'})")
            print(f"{r['prompt']}\n---\n{r['output']}\n")
    elif out is None:
        for r in records:
            print(json.dumps(r, ensure_ascii=False))
    else:
        write_atomic(out, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    where = "" if out is None else f" -> {out}"
    print(f"{len(records)} completions, {speed.tokens} tokens in {speed.seconds:.1f}s "
          f"({speed.tokens_per_second:,.0f} tokens/s) from {loaded.source}{where}", file=sys.stderr)  # fmt: skip
    return 0


def warn_context(loaded, prompt_tokens: int, max_new_tokens: int) -> None:
    """A warning when prompt + new tokens run past the positions the model was trained on."""
    seq_len = loaded.model.cfg.seq_len
    if prompt_tokens + max_new_tokens > seq_len:
        print(f"warning: the longest prompt ({prompt_tokens} tokens) + --max-new-tokens {max_new_tokens} exceeds the "
              f"model's {seq_len} positions: it never saw positions that far", file=sys.stderr)  # fmt: skip
