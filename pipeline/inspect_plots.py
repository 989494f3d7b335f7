"""`reasonpipe inspect --plot DIR`: PNG plots of an OUTPUT folder (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from reasonpipe.pipeline.inspect_stats import samples_frame

PLOT_FILES = ("lengths.png", "mixture.png", "shard_tokens.png", "rejections.png")


def make_plots(out: str | Path, stats: dict[str, Any], plot_dir: str | Path) -> list[str]:
    """Write the four plots to plot_dir; returns their paths (in PLOT_FILES order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_dir / f for f in PLOT_FILES]

    # 1. sample length before / after trimming (chat samples; dropped ones only count "before")
    chat = (
        samples_frame(out)
        .filter(pl.col("status") != "plain")
        .select("status", "tokens_before", "tokens_after")
        .collect()
    )
    fig, ax = plt.subplots(figsize=(8, 4.5))
    before = chat["tokens_before"].to_numpy()
    after = chat.filter(pl.col("status") != "dropped")["tokens_after"].to_numpy()
    if len(before):
        hi = max(int(before.max()), 1)
        bins = min(60, max(10, len(before) // 5))
        ax.hist(before, bins=bins, range=(0, hi), alpha=0.55, label=f"before trimming ({len(before):,})")
        ax.hist(after, bins=bins, range=(0, hi), alpha=0.55, label=f"after trimming ({len(after):,} kept)")
    if stats["trim"].get("context"):
        ax.axvline(stats["trim"]["context"], color="k", ls="--", lw=1, label=f"context {stats['trim']['context']:,}")
    ax.set(xlabel="tokens per sample", ylabel="samples", title="Sample length before / after AP trimming")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    # 2. mixture shares (achieved bars, target markers)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, view in zip(axes, ("by_domain", "by_source")):
        mix = stats["mixture"][view]
        names = [m["name"] for m in mix]
        ax.bar(names, [m["share"] for m in mix], label="achieved")
        targets = [(i, m["target"]) for i, m in enumerate(mix) if m["target"] is not None]
        if targets:
            ax.scatter(
                [i for i, _ in targets], [t for _, t in targets], color="red", marker="_", s=400, label="target"
            )
        ax.set(title=f"Mixture {view.replace('_', ' ')} (packed tokens)", ylabel="share")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)

    # 3. tokens per shard (real vs pad), coloured by split
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(stats["shards"]) + 2), 4.5))
    sh = stats["shards"]
    x = range(len(sh))
    real = [s["real_tokens"] for s in sh]
    pad = [s["tokens"] - s["real_tokens"] for s in sh]
    colors = ["tab:blue" if s["split"] == "train" else "tab:orange" for s in sh]
    ax.bar(x, real, color=colors, label="real tokens (blue train, orange val)")
    ax.bar(x, pad, bottom=real, color="lightgrey", label="padding")
    ax.set(xlabel="shard", ylabel="tokens", title="Tokens per shard")
    ax.set_xticks(list(x), [Path(s["path"]).stem if len(sh) <= 40 else "" for s in sh], rotation=90, fontsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)

    # 4. rejection reasons (all stages, duplicates included)
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(4, len(stats["top_rejections"])) + 1.5))
    top = stats["top_rejections"][::-1]
    ax.barh([f"{r['stage']}: {r['reason']}" for r in top], [r["count"] for r in top])
    ax.set(xlabel="samples", title="Top rejection reasons")
    fig.tight_layout()
    fig.savefig(paths[3], dpi=100)
    plt.close(fig)
    return [str(p) for p in paths]
