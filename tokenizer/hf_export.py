"""The tokenizer files of a Hugging Face export: `tokenizer.json` + `tokenizer_config.json` with a chat template that
renders exactly as tokenizer/template.py does, so `AutoTokenizer.apply_chat_template` gives the pipeline's ids.

    <bos> { <role> content <end_turn> }* <eos>            (a finished conversation, as the shards hold it)
    <bos> { <role> content <end_turn> }* <assistant>       (add_generation_prompt=True: the model continues)
    assistant content = [<think> reasoning </think>] answer  (reasoning: the message's `reasoning` or
                                                             `reasoning_content`)

The exported tokenizer.json is the prepared one (`vocab.prepare`: nothing added at the start of an encode, no
post-processor) with special tokens matched in text, which is how a chat template's string marks them. Every text
piece sits between two special tokens, so encoding the rendered string splits it into the same pieces the pipeline
encodes one by one: the ids are equal. One difference remains, by construction of string templates: a message
whose text contains a special token's literal string (e.g. "<think>") is encoded as that special token here, and as
plain text by the pipeline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from reasonpipe.tokenizer.vocab import TEMPLATE_KEYS, TemplateTokens, load_tokenizer

CHAT_TEMPLATE = (
    "{{- bos -}}"
    "{%- for m in messages -%}"
    "{%- if m['role'] not in roles -%}"
    "{{- raise_exception('role ' ~ m['role'] ~ ': allowed system, user, assistant') -}}"
    "{%- endif -%}"
    "{{- roles[m['role']] -}}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set r = m.get('reasoning') or m.get('reasoning_content') -%}"
    "{%- if r -%}{{- think_open ~ r ~ think_close -}}{%- endif -%}"
    "{%- endif -%}"
    "{{- m['content'] or '' -}}{{- end_turn -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- roles['assistant'] -}}{%- else -%}{{- eos -}}{%- endif -%}"
)


def chat_template(tokens: dict[str, str]) -> str:
    """The Jinja chat template with the token strings of one tokenizer filled in (tokens: template key -> string)."""
    roles = {r: tokens[r] for r in ("system", "user", "assistant")}
    preamble = "".join(
        f"{{%- set {k} = {json.dumps(tokens[k])} -%}}" for k in ("bos", "eos", "end_turn", "think_open", "think_close")
    )
    return preamble + f"{{%- set roles = {json.dumps(roles)} -%}}" + CHAT_TEMPLATE


def write_hf_tokenizer(tokenizer_file: str | Path, ids: TemplateTokens, out_dir: str | Path, max_length: int) -> Path:
    """Write out_dir/tokenizer.json and tokenizer_config.json for the tokenizer the shards were encoded with."""
    tok = load_tokenizer(tokenizer_file)
    strings = {k: tok.id_to_token(i) for k, i in ids.as_dict().items()}
    missing = sorted(k for k, s in strings.items() if s is None)
    if missing:
        size = tok.get_vocab_size()
        raise ValueError(f"{tokenizer_file}: special ids {missing} are not in this tokenizer (vocab {size})")
    tok.encode_special_tokens = False  # a chat template marks special tokens by their strings
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": strings["bos"],
        "eos_token": strings["eos"],
        "pad_token": strings["pad"],
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "chat_template": chat_template(strings),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


_SET = re.compile(r'\{%- set (\w+) = ("(?:[^"\\]|\\.)*"|\{[^%]*\}) -%\}')


def hf_template_strings(config: dict[str, Any]) -> dict[str, str]:
    """The template key -> token string map of a tokenizer_config.json written by `write_hf_tokenizer` (read back
    from its chat template's preamble and pad token); KeyError naming what is missing."""
    found = {name: json.loads(value) for name, value in _SET.findall(config.get("chat_template") or "")}
    roles = found.pop("roles", {})
    strings = {**{k: v for k, v in found.items() if isinstance(v, str)}, **roles, "pad": config.get("pad_token")}
    missing = [k for k in TEMPLATE_KEYS if not isinstance(strings.get(k), str)]
    if missing:
        raise KeyError(f"no token for {missing} in its chat_template / pad_token (not written by export-hf?)")
    return {k: strings[k] for k in TEMPLATE_KEYS}
