"""Manifest validation: one error listing every problem, each with file, line, key path, found and allowed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reasonpipe.pipeline.manifest import ManifestError, load_manifest

GOOD = """\
name: t
seed: 3
inputs:
  - {name: gsm, path: gsm.jsonl, schema: problem_solution, domain: math}
  - {name: docs, path: docs/, format: jsonl, domain: web}
stages:
  - exact_dedup: {}
tokenizer: {train: {vocab_size: 1000}}
trim: {context: 256}
pack: {seq_len: 512}
output: {path: out}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "gsm.jsonl").write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n')
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "a.jsonl").write_text('{"text": "hello"}\n')
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ManifestError) as exc:
        load_manifest(write(tmp_path, text))
    return exc.value.problems


def test_good_manifest_resolves_relative_paths(tmp_path):
    loaded = load_manifest(write(tmp_path, GOOD))
    m = loaded.manifest
    assert m.context == 256 and m.pack.seq_len == 512 and m.executor.kind == "local"
    assert loaded.resolve(m.output.path) == str(tmp_path / "out")
    assert [s.label for s in loaded.stages] == ["01-exact_dedup"]


def test_wrong_enum_names_line_key_found_and_allowed(tmp_path):
    (msg,) = problems(tmp_path, GOOD.replace("format: jsonl", "format: jsnl"))
    assert msg.startswith("m.yaml:5: inputs[1].format: found 'jsnl'; allowed:")
    assert "'parquet'" in msg and "'hf_disk'" in msg


def test_unknown_keys_stage_names_and_missing_files_reported_together(tmp_path):
    text = GOOD.replace("pack: {seq_len: 512}", "pack: {seq_len: 512, colour: red}")
    text = text.replace("exact_dedup: {}", "exact_dedupe: {}").replace("gsm.jsonl, schema", "nope.jsonl, schema")
    found = problems(tmp_path, text)
    assert any(p.startswith("m.yaml:10: pack.colour: unknown key") for p in found)
    assert any("stages[0].exact_dedupe: unknown stage 'exact_dedupe'; allowed:" in p and "minhash" in p for p in found)
    assert any(p.startswith("m.yaml:4: inputs[0].path: no file matches") for p in found)


def test_stage_option_errors_use_the_stage_key_path(tmp_path):
    (msg,) = problems(tmp_path, GOOD.replace("exact_dedup: {}", "exact_dedup: {bogus: 1}"))
    assert msg.startswith("m.yaml:7: stages[0].exact_dedup.bogus: unknown key")


def test_missing_required_and_wrong_types(tmp_path):
    text = GOOD.replace("output: {path: out}\n", "").replace("seed: 3", "seed: three")
    found = problems(tmp_path, text)
    assert any("seed:" in p and "'three'" in p for p in found)
    assert any(p.endswith("output: required key is missing") for p in found)


def test_context_larger_than_window_is_refused(tmp_path):
    (msg,) = problems(tmp_path, GOOD.replace("context: 256", "context: 1024"))
    assert "trim.context (1024) exceeds pack.seq_len (512)" in msg


def test_overrides_apply_to_dotted_keys(tmp_path):
    loaded = load_manifest(write(tmp_path, GOOD), {"executor.tasks": 5, "executor.kind": "dask"})
    assert loaded.manifest.executor.tasks == 5 and loaded.manifest.executor.kind == "dask"


def test_not_yaml_and_not_a_mapping(tmp_path):
    assert "not valid YAML" in problems(tmp_path, "name: [unclosed\n")[0]
    assert "must be a mapping" in problems(tmp_path, "- a\n- b\n")[0]
