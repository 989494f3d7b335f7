"""Load a trained model for generation: a `reasonpipe train` run folder or a `reasonpipe export-hf` folder.

    run folder   config.json (model section), data.json (the shards it trained on: tokenizer sha256 and special ids),
                 tokenizer.json (their tokenizer), checkpoints/step_N/ (the newest sound one is loaded)
    HF folder    config.json + model.safetensors, tokenizer.json, tokenizer_config.json (the chat template's token
                 strings give the template ids back)

Either way the result carries the pipeline's own `ChatTemplate` over the tokenizer the shards were encoded with, so
prompts render exactly as training samples did. A run folder also names its training output; when that output's
`index.json` is readable, its manifest's `builders.rsa_aggregate` options (the aggregation prompt the model was
trained on) are kept for the RSA harness. Every problem is a `LoadError` naming the path and the fix.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from reasonpipe.tokenizer.template import ChatTemplate
from reasonpipe.tokenizer.vocab import TemplateTokens, load_tokenizer, resolve_template
from reasonpipe.trainer.model import ZayaLM
from reasonpipe.trimming.ttc_config import RSAConfig

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "bf16", "fp32"]


class LoadError(ValueError):
    """A model folder that cannot be used; the message names the path and what to do."""


@dataclass
class LoadedModel:
    model: ZayaLM
    template: ChatTemplate
    source: str  # what was loaded, for messages ("runs/tiny checkpoints/step_0000300", "an HF folder ...")
    bf16: bool  # decode under bf16 autocast (a GPU with precision auto or bf16)
    rsa: RSAConfig | None  # the training manifest's rsa_aggregate options, when known
    rsa_origin: str  # where `rsa` came from, or why it is unknown

    @property
    def tokens(self) -> TemplateTokens:
        return self.template.tokens

    @property
    def device(self) -> torch.device:
        return self.model.head_weight.device


def _json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LoadError(f"{path} not found ({what})") from None
    except (OSError, ValueError) as e:
        raise LoadError(f"{path}: unreadable ({e}); it is {what}") from None


def pick_device(device: Device) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise LoadError("--device cuda: no CUDA/ROCm device is visible to torch; use --device cpu or auto")
    return torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")


def load_model(
    path: str | Path, device: Device = "auto", precision: Precision = "auto", threads: int | None = None
) -> LoadedModel:
    """The model, chat template and (for a run) the trained RSA options of a run folder or an HF folder; `threads`
    sets torch's CPU intra-op threads (decoding a small model is many tiny ops: extra threads mostly wait)."""
    root = Path(path)
    if threads is not None:
        if threads < 1:
            raise LoadError(f"--threads {threads}: give 1 or more")
        torch.set_num_threads(threads)
    if not root.is_dir():
        raise LoadError(f"{root}: no such folder; give a `reasonpipe train --out` run folder or an export-hf folder")
    dev = pick_device(device)
    if precision == "bf16" and dev.type != "cuda":
        raise LoadError("--precision bf16 decodes under CUDA autocast; on CPU use --precision fp32 (or auto)")
    if (root / "data.json").exists() or (root / "checkpoints").is_dir():
        model, template, source, rsa, origin = _load_run(root)
    elif (root / "model.safetensors").exists() or (root / "model.safetensors.index.json").exists():
        model, template, source = _load_hf(root)
        rsa, origin = None, "an HF folder does not record its training manifest"
    else:
        raise LoadError(
            f"{root}: neither a run folder (data.json, checkpoints/) nor an HF folder (model.safetensors); give the "
            "folder of `reasonpipe train --out` or of `reasonpipe export-hf`"
        )
    vocab = template.tokenizer.get_vocab_size()
    if model.cfg.vocab_size < vocab:
        raise LoadError(f"{root}: the model has {model.cfg.vocab_size} embeddings but its tokenizer {vocab} tokens")
    model.to(dev).eval()
    return LoadedModel(model, template, source, dev.type == "cuda" and precision != "fp32", rsa, origin)


def _load_run(root: Path) -> tuple[ZayaLM, ChatTemplate, str, RSAConfig | None, str]:
    from reasonpipe.tokenizer.shards import sha256_file
    from reasonpipe.trainer import checkpoint as C
    from reasonpipe.trainer.config import ModelConfig
    from reasonpipe.trainer.export import sound_checkpoint

    config = _json(root / "config.json", "the run's configuration, written by `reasonpipe train`")
    try:
        cfg = ModelConfig.from_dict(config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise LoadError(f"{root / 'config.json'}: no usable 'model' section ({e})") from None
    data = _json(root / "data.json", "what the run trained on, written by `reasonpipe train` before step 0")
    try:
        source = data["sources"][0]
        tok_info = source["tokenizer"]
        ids = TemplateTokens(**tok_info["special_ids"])
    except (KeyError, IndexError, TypeError) as e:
        raise LoadError(f"{root / 'data.json'}: no tokenizer record ({e}); re-run `reasonpipe train`") from None
    tok_file = root / "tokenizer.json"
    if not tok_file.is_file() or sha256_file(tok_file) != tok_info.get("sha256"):
        raise LoadError(
            f"{tok_file}: missing or not the tokenizer the run trained on (sha256 {tok_info.get('sha256')} in "
            "data.json); copy the training output's tokenizer.json there"
        )
    try:
        ckpt = sound_checkpoint(root)
        model = ZayaLM(cfg)
        C.load_model_weights(ckpt, model)
    except (FileNotFoundError, C.CheckpointError, ValueError, RuntimeError) as e:
        raise LoadError(f"{root}: {e}; train it first (`reasonpipe train --out {root}`)") from None
    rsa, origin = _trained_rsa(Path(str(source.get("path", ""))))
    return model, ChatTemplate(load_tokenizer(tok_file), ids), f"{root} ({ckpt.name})", rsa, origin


def _load_hf(root: Path) -> tuple[ZayaLM, ChatTemplate, str]:
    from reasonpipe.tokenizer.hf_export import hf_template_strings

    config = _json(root / "tokenizer_config.json", "the tokenizer settings and chat template export-hf writes")
    try:
        strings = hf_template_strings(config)
        tok = load_tokenizer(root / "tokenizer.json")
        ids = resolve_template(tok, strings)
    except Exception as e:  # KeyError, ValueError, FileNotFoundError, or tokenizers' bare Exception for a bad file
        raise LoadError(f"{root}: its tokenizer files do not give the chat template ({e}); re-export it") from None
    try:
        model = ZayaLM.from_hf(root)
    except (KeyError, ValueError, OSError, RuntimeError) as e:
        raise LoadError(f"{root}: the weights do not load ({e}); re-export it with `reasonpipe export-hf`") from None
    return model, ChatTemplate(tok, ids), f"{root} (HF folder)"


def _trained_rsa(output: Path) -> tuple[RSAConfig | None, str]:
    """The `builders.rsa_aggregate` options of the training output's manifest (None when it had none or is gone)."""
    index = output / "index.json"
    try:
        manifest = json.loads(index.read_text()).get("manifest") or {}
    except (OSError, ValueError):
        return None, f"the training output {index} is not readable here"
    raw = (manifest.get("builders") or {}).get("rsa_aggregate")
    if raw is None:
        return None, f"the training manifest ({index}) has no builders.rsa_aggregate"
    try:
        return RSAConfig.model_validate(raw), f"builders.rsa_aggregate of {index}"
    except ValueError as e:
        print(f"warning: {index}: builders.rsa_aggregate does not validate ({e}); using the defaults", file=sys.stderr)
        return None, f"{index}'s builders.rsa_aggregate is invalid"
