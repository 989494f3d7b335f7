"""`reasonpipe export-hf RUN_DIR OUT_DIR`: a run's newest sound checkpoint as a folder transformers loads end to end.

    config.json              ZayaConfig: the trained shape, vocab size and bos/eos/pad ids of the shards' tokenizer
    model.safetensors        the weights (our balancing moments are training state and stay out)
    tokenizer.json           the tokenizer the run trained on (RUN_DIR/tokenizer.json, checked against data.json)
    tokenizer_config.json    special tokens and the pipeline's chat template (tokenizer/hf_export.py)
    generation_config.json   bos, pad, and eos = [end_turn, eos]: generation stops at the end of the assistant turn

`AutoTokenizer.from_pretrained(OUT_DIR)` and `ZayaForCausalLM.from_pretrained(OUT_DIR).generate(...)` work on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from reasonpipe.tokenizer.hf_export import write_hf_tokenizer
from reasonpipe.tokenizer.shards import sha256_file
from reasonpipe.tokenizer.vocab import TemplateTokens
from reasonpipe.trainer import checkpoint as C
from reasonpipe.trainer.config import ModelConfig
from reasonpipe.trainer.model import ZayaLM


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found ({what}); is {path.parent} a `reasonpipe train` run folder?")
    return json.loads(path.read_text())


def sound_checkpoint(run: Path) -> Path:
    """The newest checkpoint that matches its manifest (sizes and sha256); broken ones are named on stderr."""
    found = C.list_checkpoints(run)
    if not found:
        raise FileNotFoundError(f"no checkpoints/step_*/ under {run}")
    for _, path in reversed(found):
        problem = C.verify(path)
        if problem is None:
            return path
        print(f"warning: skipping {path}: {problem}", file=sys.stderr)
    raise ValueError(f"no sound checkpoint under {run}/checkpoints (all are incomplete or damaged)")


def export_run(run_dir: str | Path, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write the HF folder; returns the checkpoint it was made from."""
    run, out = Path(run_dir), Path(out_dir)
    cfg = ModelConfig.from_dict(_read_json(run / "config.json", "the run's config")["model"])
    source = _read_json(run / "data.json", "what the run trained on")["sources"][0]
    tok_file, want = run / "tokenizer.json", source["tokenizer"]["sha256"]
    if not tok_file.is_file() or sha256_file(tok_file) != want:
        raise ValueError(f"{tok_file}: missing or not the tokenizer the run trained on (sha256 {want} in data.json)")
    ids = TemplateTokens(**source["tokenizer"]["special_ids"])
    ckpt = sound_checkpoint(run)
    model = ZayaLM(cfg)
    C.load_model_weights(ckpt, model)
    model.save_hf(out, dtype=dtype)
    write_hf_tokenizer(tok_file, ids, out, max_length=cfg.seq_len)
    gen = {"bos_token_id": ids.bos, "pad_token_id": ids.pad, "eos_token_id": [ids.end_turn, ids.eos]}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return ckpt


def main(run_dir: str, out_dir: str) -> int:
    """CLI entry: exit 0, or 2 with one clear line on stderr."""
    try:
        ckpt = export_run(run_dir, out_dir)
    except (ValueError, FileNotFoundError, KeyError, C.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out_dir} from {ckpt}: loads with AutoTokenizer / ZayaForCausalLM.from_pretrained")
    return 0
