"""Parameter counts of a ModelConfig, computed analytically (no need to allocate an 8B model).

    python -m reasonpipe.trainer.params zaya1-8b      # or tiny / small
Active = everything except the experts a token does not use (top-1: one expert per layer).
"""

from __future__ import annotations

import argparse

from reasonpipe.trainer.config import PRESETS, ModelConfig, preset


def count_params(cfg: ModelConfig) -> dict[str, int]:
    d, r, e = cfg.hidden_size, cfg.router_hidden_size, cfg.num_experts
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    c = q + kv  # conv channels
    attn = (q + 2 * kv) * d + c * cfg.cca_time0 + c + c * cfg.head_dim * cfg.cca_time1 + c
    attn += cfg.num_key_value_heads + q * d
    norms_and_scaling = 2 * d + 2 * 4 * d
    router = d * r + r + r + 2 * (r * r + r) + r * cfg.num_router_classes  # down, norm, fc1, fc2, out
    eda = r * (cfg.num_layers - 1)  # router_states_scale on every MoE layer but the first
    one_expert = 3 * cfg.moe_intermediate_size * d
    per_layer_dense = attn + norms_and_scaling + router
    embedding = cfg.vocab_size * d * (1 if cfg.tie_word_embeddings else 2)
    top = 2 * d + d  # input scale/bias, final norm
    total_no_emb = cfg.num_layers * (per_layer_dense + e * one_expert) + eda + top
    active_no_emb = cfg.num_layers * (per_layer_dense + one_expert) + eda + top
    return {
        "total": total_no_emb + embedding,
        "active": active_no_emb + embedding,
        "total_no_embedding": total_no_emb,
        "active_no_embedding": active_no_emb,
        "embedding": embedding,
        "experts": cfg.num_layers * e * one_expert,
    }


def format_counts(name: str, counts: dict[str, int]) -> str:
    rows = [f"| {k} | {v:,} | {v / 1e9:.3f}B |" for k, v in counts.items()]
    return "\n".join([f"### {name}", "| quantity | parameters | billions |", "|---|---:|---:|", *rows])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Print parameter counts of a model preset.")
    ap.add_argument("preset", choices=sorted(PRESETS), nargs="?", default="zaya1-8b")
    args = ap.parse_args(argv)
    print(format_counts(args.preset, count_params(preset(args.preset))))


if __name__ == "__main__":
    main()
