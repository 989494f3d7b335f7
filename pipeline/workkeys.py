"""Work keys: what each phase's results depend on, so an edit re-runs exactly the phases it affects.

A `WorkKey` is a JSON tree of parts and its digest names the phase's folder (`WORK/prep-<digest>`,
`WORK/pack-<digest>`); the tree is saved beside the results as `key.json`, so `plan` and `run` can say why a phase
is redone ("prep: input gsm file gsm.jsonl changed").

prep (read, adapt, normalise, stages, tokenizer training, tokenisation):
  config     the manifest's inputs, stages, tokenizer, seed; the task count; --limit
  inputs     {input name: {file (relative to the input): content digest}}
  files      {stage label: {file: digest}} every file a stage option names (decontamination benchmarks, models)
  tokenizer  {path: digest} of `tokenizer.path` (a trained tokenizer is made inside prep, from the parts above)
  code       code versions (pipeline/hashing.py) of ingest, of each stage and of tokenisation; library versions
pack (mixture sampling, AP trimming, packing, shards, the output folder):
  prep       the prep digest
  config     trim, pack, context, builders (when active), mixture, output
  code       the code version of the builders and mixture/trim/pack/finalize
Executor kind and worker counts are left out: they do not change a byte of the results.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonpipe.pipeline.hashing import HashCache, code_version, library_versions
from reasonpipe.pipeline.manifest import LoadedManifest
from reasonpipe.pipeline.readers import InputSource
from reasonpipe.pipeline.registry import stage_class

KEY_FILE = "key.json"
INGEST_CODE = (
    "reasonpipe.pipeline.readers",
    "reasonpipe.pipeline.adapters",
    "reasonpipe.pipeline.steps",
    "reasonpipe.docio",
    "reasonpipe.filters.exclusions",
)
TOKENIZE_CODE = ("reasonpipe.tokenizer.steps",)
PACK_CODE = (
    "reasonpipe.tokenizer.steps",
    "reasonpipe.trimming.step",
    "reasonpipe.tokenizer.index",
    "reasonpipe.pipeline.tail",
    "reasonpipe.pipeline.ttc",
)


@dataclass
class WorkKey:
    phase: str  # "prep" | "pack"
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, KEY_FILE)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"phase": self.phase, "digest": self.digest, "parts": self.parts}, f, sort_keys=True, indent=1)
        os.replace(tmp, path)

    @staticmethod
    def load(folder: str) -> WorkKey | None:
        try:
            with open(os.path.join(folder, KEY_FILE), encoding="utf-8") as f:
                data = json.load(f)
            return WorkKey(data["phase"], data["parts"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _paths_in(value: Any) -> list[Path]:
    """Every `Path` inside a stage's validated options (files it will read)."""
    if isinstance(value, Path):
        return [value]
    if hasattr(value, "__pydantic_fields__"):
        return [p for name in type(value).__pydantic_fields__ for p in _paths_in(getattr(value, name))]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_in(v)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _paths_in(v)]
    return []


def _shown(path: str, base: Path) -> str:
    """A path as the user wrote it, roughly: relative to the manifest's folder when inside it."""
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def prep_key(loaded: LoadedManifest, sources: list[InputSource], limit: int | None, hashes: HashCache) -> WorkKey:
    raw, m = loaded.raw, loaded.manifest
    config = {k: raw.get(k) for k in ("inputs", "stages", "tokenizer", "seed")}
    config |= {"tasks": m.executor.tasks, "limit": limit}
    inputs = {}
    for s in sources:
        files: dict[str, str] = {}
        for f in s.files:
            if os.path.isdir(f):  # hf_disk: a folder
                files |= {os.path.join(os.path.basename(f), r): d for r, d in hashes.tree(f).items()}
            else:
                files[os.path.relpath(f, s.root) if "://" not in f else f] = hashes.file(f)
        inputs[s.name] = files
    stage_files = {}
    code = {"libraries": library_versions(), "ingest": code_version(*INGEST_CODE)}
    for spec in loaded.stages:
        code[f"stage {spec.label}"] = code_version(stage_class(spec.name).__module__)
        found = {_shown(str(p), loaded.base_dir): hashes.tree(str(p)) for p in _paths_in(spec.options)}
        if found:
            stage_files[spec.label] = found
    code["tokenize"] = code_version(*TOKENIZE_CODE)
    tokenizer = {}
    if m.tokenizer.path is not None:
        path = loaded.resolve(str(m.tokenizer.path))
        tokenizer[_shown(path, loaded.base_dir)] = hashes.tree(path)
    parts = {"config": config, "inputs": inputs, "files": stage_files, "tokenizer": tokenizer, "code": code}
    return WorkKey("prep", parts)


def pack_key(loaded: LoadedManifest, prep: WorkKey) -> WorkKey:
    m = loaded.manifest
    config = {"trim": m.trim.model_dump(mode="json"), "pack": m.pack.model_dump(mode="json"), "context": m.context}
    config |= {"builders": m.builders.model_dump(mode="json")} if m.builders.active else {}
    config |= {"mixture": m.mixture.model_dump(mode="json") if m.mixture else None}
    config |= {"output": m.output.model_dump(mode="json", exclude={"keep_intermediate"})}  # it changes no output
    parts = {"prep": prep.digest, "config": config, "code": {"pack": code_version(*PACK_CODE)}}
    return WorkKey("pack", parts)


# why a phase is redone ---------------------------------------------------------------------------------------------
def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}.{key}").items()} or {prefix: {}}
    return {prefix: value}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def changes(old: WorkKey, new: WorkKey) -> list[str]:
    """What differs between two keys of a phase, one short phrase per change."""
    out: list[str] = []
    a, b = old.parts, new.parts
    if a.get("prep") != b.get("prep"):
        out.append("its prep phase changed")
    flat_a, flat_b = _flat(a.get("config", {}), "config"), _flat(b.get("config", {}), "config")
    for key in sorted(set(flat_a) | set(flat_b)):
        if flat_a.get(key) != flat_b.get(key):
            name = key.removeprefix("config.")
            out.append(f"manifest {name} changed ({_short(flat_a.get(key))} -> {_short(flat_b.get(key))})")
    for section, what in (("inputs", "input {} file {}"), ("files", "stage {} file {}")):
        old_s, new_s = a.get(section, {}), b.get(section, {})
        for owner in sorted(set(old_s) | set(new_s)):
            fa, fb = old_s.get(owner, {}), new_s.get(owner, {})
            for path in sorted(set(fa) | set(fb)):
                if fa.get(path) != fb.get(path):
                    state = "new" if path not in fa else "removed" if path not in fb else "changed"
                    out.append(f"{what.format(owner, path)} {state}")
    ta, tb = a.get("tokenizer", {}), b.get("tokenizer", {})
    if ta != tb:
        out.append("tokenizer file " + ", ".join(sorted(set(ta) | set(tb))) + " changed")
    ca, cb = a.get("code", {}), b.get("code", {})
    for name in sorted(set(ca) | set(cb)):
        if ca.get(name) != cb.get(name):
            out.append("library versions changed" if name == "libraries" else f"code of {name} changed")
    return out


def previous_key(work: str, phase: str, hint: str | None = None) -> WorkKey | None:
    """The key to compare with: the folder `hint` names (e.g. the one the output was built from), else the newest
    key of that phase in the work folder."""
    if hint and (key := WorkKey.load(os.path.join(work, f"{phase}-{hint}"))):
        return key
    found = sorted(glob.glob(os.path.join(work, f"{phase}-*", KEY_FILE)), key=os.path.getmtime)
    return WorkKey.load(os.path.dirname(found[-1])) if found else None
