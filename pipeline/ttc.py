"""The test-time-compute builders in the pack phase: their runs, their samples for mixture planning, index blocks.

With a `builders:` section (trimming/ttc_config.py) the pack phase gains, before the pack run:

    ttc-route (rsa_aggregate only)   CacheReader -> RouteTraces(route/)          traces by problem, T partitions
    ttc-build                        [CacheReader -> MarkovianChunks] -> [RSAAggregate(route/)] -> WriteBuilt(built/)

and the sizes and pack runs read `built/` after the token cache (`built_dir`), so built samples are mixture-sampled,
AP-trimmed, packed and written like any chat sample; their provenance reaches `samples/` (`builder`, `provenance`).
Everything lives under the pack folder, keyed by the pack fingerprint (which covers `builders`).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from reasonpipe.pipeline.accounting import run_stats
from reasonpipe.pipeline.runs import Plan, RunSpec
from reasonpipe.pipeline.steps import Progress


def _dirs(plan: Plan) -> tuple[str, str]:
    return os.path.join(plan.pack_dir, "ttc", "route"), os.path.join(plan.pack_dir, "ttc", "built")


def word_start_ids(tokenizer) -> list[int]:
    """Ids of the tokens whose text starts with whitespace: where a word begins (for `tail_unit: words`)."""
    texts = tokenizer.decode_batch([[i] for i in range(tokenizer.get_vocab_size())], skip_special_tokens=True)
    return [i for i, t in enumerate(texts) if t[:1].isspace()]


def build_runs(plan: Plan, tokenizer_path: str) -> list[RunSpec]:
    """The builder runs of the pack phase (none without a `builders` section); `tokenizer_path`: the run's own."""
    m = plan.loaded.manifest
    cfg = m.builders
    if not cfg.active:
        return []
    route, built = _dirs(plan)
    tasks = m.executor.tasks
    tokens = os.path.join(plan.prep_dir, "tokens")
    runs = []
    rsa = cfg.rsa_aggregate

    def route_steps() -> list:
        from reasonpipe.tokenizer.steps import CacheReader
        from reasonpipe.trimming.ttc_steps import RouteTraces

        return [CacheReader(tokens), Progress("ttc-route"), RouteTraces(route, tasks, rsa.domains)]

    def build_steps() -> list:
        from reasonpipe.tokenizer.steps import CacheReader
        from reasonpipe.tokenizer.template import ChatTemplate
        from reasonpipe.tokenizer.vocab import load_tokenizer, resolve_template
        from reasonpipe.trimming.ttc_steps import MarkovianChunks, RSAAggregate, WriteBuilt

        steps: list = []
        if cfg.markovian_chunks is not None:
            mk = cfg.markovian_chunks
            context, carry, head = mk.sizes(m.context)
            steps += [CacheReader(tokens), Progress("ttc-build")]
            steps.append(MarkovianChunks(context, carry, head, mk.domains, mk.output_domain))
        if rsa is not None:
            tok = load_tokenizer(tokenizer_path)
            template = ChatTemplate(tok, resolve_template(tok, m.tokenizer.template))
            encoded = rsa.template().encode(lambda text: template.encode_texts([text])[0], rsa.k)
            steps.append(
                RSAAggregate(
                    route, encoded, template.tokens.user, rsa.tau, rsa.per_problem, rsa.traces_needed,
                    rsa.include_answer_in_tail, rsa.require_correct_target, rsa.require_incorrect_candidate,
                    budget=m.context, seed=m.seed, output_domain=rsa.output_domain,
                    word_starts=word_start_ids(tok) if rsa.tail_unit == "words" else None,
                )
            )  # fmt: skip
        return steps + [WriteBuilt(built)]

    if rsa is not None:
        runs.append(RunSpec("ttc-route", "pack", tasks, os.path.join(plan.pack_dir, "runs", "ttc-route"), route_steps))
    runs.append(RunSpec("ttc-build", "pack", tasks, os.path.join(plan.pack_dir, "runs", "ttc-build"), build_steps))
    return runs


def built_dir(plan: Plan) -> str | None:
    """The folder of the built samples, which the sizes and pack runs read after the token cache (None without
    `builders`)."""
    return _dirs(plan)[1] if plan.loaded.manifest.builders.active else None


def check_mixture(plan: Plan) -> None:
    """Before mixture planning: a share named for a builder's samples when it built none is a manifest problem."""
    from reasonpipe.pipeline.manifest import ManifestError

    m = plan.loaded.manifest
    if m.mixture is None or m.mixture.by != "domain":
        return
    built = _counters(plan, "ttc-build")
    problems = []
    for name, cfg, count in (
        ("rsa_aggregate", m.builders.rsa_aggregate, "samples"),
        ("markovian_chunks", m.builders.markovian_chunks, "chunks"),
    ):
        if cfg is not None and m.mixture.shares.get(cfg.output_domain, 0) > 0 and not built.get(count):
            why = (
                f"{int(built.get('problems_too_few_traces', 0))} of {int(built.get('problems', 0))} problems have "
                f"fewer than {cfg.traces_needed} traces"
                if name == "rsa_aggregate"
                else f"no trace of its domains is longer than {cfg.sizes(m.context)[0]} tokens with room to chunk"
            )
            problems.append(
                f"mixture.shares.{cfg.output_domain}: {m.mixture.shares[cfg.output_domain]}, but builders.{name} "
                f"built no samples ({why}); change the builder's options or drop the share"
            )
    if problems:
        raise ManifestError(plan.loaded.path, problems)


def output_groups(plan: Plan) -> list[str]:
    """The mixture groups the builders add (by domain: their output domains; by source they join their traces')."""
    m = plan.loaded.manifest
    if m.mixture is None or m.mixture.by != "domain":
        return []
    cfg = m.builders
    return [c.output_domain for c in (cfg.rsa_aggregate, cfg.markovian_chunks) if c is not None]


def _counters(plan: Plan, name: str) -> Counter:
    total: Counter = Counter()
    for run in plan.runs:
        if run.name == name:
            for step in run_stats(run.logging_dir):
                total.update(step)
    return total


def _prefixed(counters: Counter, prefix: str) -> dict[str, int]:
    return {k.removeprefix(prefix): int(v) for k, v in sorted(counters.items()) if k.startswith(prefix)}


def index_block(plan: Plan) -> dict[str, Any] | None:
    """`index.json` "ttc": what each builder read, built and skipped, with its resolved options."""
    m = plan.loaded.manifest
    cfg = m.builders
    if not cfg.active:
        return None
    build = _counters(plan, "ttc-build")
    out: dict[str, Any] = {}
    if cfg.rsa_aggregate is not None:
        c = cfg.rsa_aggregate
        samples = int(build.get("samples", 0))
        out["rsa_aggregate"] = {
            "options": c.model_dump(exclude={"prompt_template", "candidate_template", "answer_template"}),
            "traces_routed": int(_counters(plan, "ttc-route").get("routed", 0)),
            **{k: int(build.get(k, 0)) for k in ("problems", "problems_too_few_traces", "problems_without_sample")},
            "samples": samples,
            "targets": {v: int(build.get(f"targets_{v}", 0)) for v in ("correct", "unknown", "incorrect")},
            "mean_tail_tokens": build.get("tail_tokens", 0) / (samples * c.k) if samples else 0.0,
            "skipped": _prefixed(build, "skipped_"),
        }
    if cfg.markovian_chunks is not None:
        c = cfg.markovian_chunks
        context, carry, head = c.sizes(m.context)
        out["markovian_chunks"] = {
            "options": {"context": context, "carry": carry, "head": head, "domains": c.domains},
            "traces": int(build.get("traces", 0)),
            "chains": int(build.get("chains", 0)),
            "chunks": int(build.get("chunks", 0)),
            "skipped": _prefixed(build, "traces_"),
        }
    return out


def verification(table: list[dict]) -> dict[str, Any]:
    """`index.json` "verification": answer_verify's verdicts per source, from the stage table's counters."""
    by_source: dict[str, Counter] = {}
    for row in table:
        if row["stage"] != "answer_verify":
            continue
        for key, n in row["extra"].items():
            for verdict in ("correct", "incorrect", "unknown"):
                if key.startswith(f"verify_{verdict}_"):
                    by_source.setdefault(key.removeprefix(f"verify_{verdict}_"), Counter())[verdict] += int(n)
    out = {}
    for source, c in sorted(by_source.items()):
        judged = c["correct"] + c["incorrect"]
        out[source] = {
            "correct": c["correct"],
            "incorrect": c["incorrect"],
            "unknown": c["unknown"],
            "correct_rate": c["correct"] / judged if judged else None,  # over the traces that could be judged
        }
    return out
