"""Train or load a `tokenizers` tokenizer and resolve the chat template's special tokens.

Segments are encoded independently and concatenated (see template.py), so a tokenizer must not add anything at the
start of an encode: `load_tokenizer` turns off ByteLevel `add_prefix_space`, Metaspace `prepend_scheme` and
`Prepend` normalizers, and we never let the tokenizer add BOS/EOS itself (`add_special_tokens=False`). Special tokens
are encoded as plain text when they occur inside content (`encode_special_tokens = True`): a literal "<think>" in a
reasoning trace never turns into the control token. A given tokenizer is used with its own vocabulary: the template
maps our roles to token strings that must already exist in it; the vocabulary is never grown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# template key -> token string of the tokenizers we train
DEFAULT_TEMPLATE: dict[str, str] = {
    "bos": "<|bos|>",
    "eos": "<|eos|>",
    "pad": "<|pad|>",
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
    "end_turn": "<|end_turn|>",
    "think_open": "<think>",
    "think_close": "</think>",
}
TEMPLATE_KEYS = tuple(DEFAULT_TEMPLATE)


@dataclass(frozen=True)
class TemplateTokens:
    """Ids of the template's special tokens (uint32 range)."""

    bos: int
    eos: int
    pad: int
    system: int
    user: int
    assistant: int
    end_turn: int
    think_open: int
    think_close: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def role(self, role: str) -> int:
        return {"system": self.system, "user": self.user, "assistant": self.assistant}[role]


def check_template_keys(template: Mapping[str, str]) -> None:
    unknown = sorted(set(template) - set(TEMPLATE_KEYS))
    if unknown:
        raise ValueError(f"tokenizer.template: unknown key(s) {unknown}; allowed: {list(TEMPLATE_KEYS)}")


def template_strings(template: Mapping[str, str] | None) -> dict[str, str]:
    """The full key -> token string map: `template` over the defaults."""
    template = dict(template or {})
    check_template_keys(template)
    return {**DEFAULT_TEMPLATE, **template}


def resolve_template(tokenizer: Tokenizer, template: Mapping[str, str] | None = None) -> TemplateTokens:
    """Map template keys to ids of tokens that already exist in `tokenizer`; a missing token is an error."""
    strings = template_strings(template)
    ids: dict[str, int] = {}
    for key, token in strings.items():
        tid = tokenizer.token_to_id(token)
        if tid is None:
            raise ValueError(
                f"tokenizer.template.{key}: token {token!r} is not in the tokenizer's vocabulary "
                f"(size {tokenizer.get_vocab_size()}); the vocabulary is never grown: map '{key}' to a token it has"
            )
        ids[key] = tid
    return TemplateTokens(**ids)


# prefix handling -------------------------------------------------------------------------------------------------


def _no_prefix(node: Any) -> Any:
    """Strip start-of-text prefixing from a tokenizer.json (sub)tree (pre_tokenizer, normalizer, decoder)."""
    if isinstance(node, list):
        return [x for x in (_no_prefix(n) for n in node) if x is not None]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "Prepend":  # normalizer adding "▁" before the text (sentencepiece style)
        return None
    node = {k: _no_prefix(v) if k in ("pretokenizers", "normalizers", "decoders") else v for k, v in node.items()}
    if kind == "ByteLevel" and "add_prefix_space" in node:
        node["add_prefix_space"] = False
    if kind == "Metaspace":
        node["prepend_scheme"] = "never"
        node.pop("add_prefix_space", None)
    if kind == "Strip" and node.get("start", 0):  # decoder stripping the space a Prepend added
        node["start"] = 0
    if kind == "Sequence":
        for key in ("pretokenizers", "normalizers", "decoders"):
            if key in node and not node[key]:
                return None
    return node


def prepared_spec(tokenizer: Tokenizer) -> str:
    """The tokenizer.json text of `prepare(tokenizer)`: `tokenizer`'s own text when it is prepared already (one that
    `load_tokenizer` or `prepare` made), without a rebuild of ~0.2 s at 32k tokens. The files training writes still
    need preparing: their ByteLevel decoder adds a prefix space."""
    text = tokenizer.to_str()
    spec = json.loads(text)
    new = {**spec, "post_processor": None, "truncation": None, "padding": None}
    for key in ("normalizer", "pre_tokenizer", "decoder"):
        if spec.get(key) is not None:
            new[key] = _no_prefix(spec[key])
    return text if new == spec else json.dumps(new)


def prepare(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of `tokenizer` that adds nothing at the start of an encode and no post-processing specials."""
    tok = Tokenizer.from_str(prepared_spec(tokenizer))
    tok.encode_special_tokens = True
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a local tokenizer.json, prepared for segment-wise encoding (see `prepare`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"tokenizer.path: {path} does not exist (tokenizers load from local files only)")
    return prepare(Tokenizer.from_file(str(path)))


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Write tokenizer.json atomically (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(tokenizer.to_str(), encoding="utf-8")
    os.replace(tmp, path)
    return path


# training --------------------------------------------------------------------------------------------------------


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    template: Mapping[str, str] | None = None,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE on `texts`; the template's special tokens get the first ids (bos = 0, ...).

    Training is deterministic for the same texts in the same order.
    """
    strings = template_strings(template)
    specials = list(dict.fromkeys(strings.values()))
    if vocab_size < 256 + len(specials):
        raise ValueError(f"tokenizer.train.vocab_size: {vocab_size} is below 256 bytes + {len(specials)} specials")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.encode_special_tokens = True
    return tok


def newline_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of the tokens whose text ends with a newline (where trimming may snap a cut back to)."""
    size = tokenizer.get_vocab_size()
    texts = tokenizer.decode_batch([[i] for i in range(size)], skip_special_tokens=True)
    return [i for i, t in enumerate(texts) if t.endswith("\n")]
