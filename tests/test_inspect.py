"""`reasonpipe inspect`: stats, sample decoding, validation (incl. the AP invariant), JSON, plots, compare."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from outputs import REAL
from tamper import rewrite_shard

from reasonpipe.pipeline.inspect_cli import main
from reasonpipe.pipeline.inspect_stats import compute_stats
from reasonpipe.pipeline.inspect_validate import validate

ANSI = re.compile(r"\x1b\[[0-9;]*m")


# every output here is made by `reasonpipe run` (tests/outputs.py): chat samples (prompts without loss) to trim and
# drop, plain text to split, malformed records and duplicates to reject
MIXED = {"loss_mask": "assistant"}


@pytest.fixture(scope="module")
def base(outputs) -> Path:
    return outputs.get("mixed", **MIXED).root


@pytest.fixture
def out(base: Path, tmp_path: Path) -> Path:
    """A private copy of the base output, free to tamper with."""
    return Path(shutil.copytree(base, tmp_path / "copy"))


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict]:
    code, stdout, _ = run(capsys, *argv, "--json")
    return code, json.loads(stdout)


def samples(out: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / "samples").glob("*.parquet")))


# ---------------------------------------------------------------------------------------------------- stats
def test_stats_accounting_identities(base: Path) -> None:
    st = compute_stats(base)
    index = json.loads((base / "index.json").read_text())
    df = samples(base)
    for split in ("train", "val"):
        t = st["totals"][split]
        for key in ("windows", "tokens", "real_tokens"):
            assert t[key] == index["totals"][split][key]
        # every token of every placed sample lands in the shards exactly once: real tokens = sum of tokens_after
        placed = df.filter((pl.col("split") == split) & (pl.col("status") != "dropped"))
        assert t["real_tokens"] == placed["tokens_after"].sum()
        assert t["tokens"] == t["windows"] * st["seq_len"]
    assert sum(st["samples"]["by_status"].values()) == st["samples"]["total"] == df.height
    for view in ("by_domain", "by_source"):
        mix = st["mixture"][view]
        assert sum(m["share"] for m in mix) == pytest.approx(1.0)
        assert sum(m["tokens"] for m in mix) == st["totals"]["all"]["real_tokens"]
    achieved = {
        m["name"]: {"tokens": m["tokens"], "share": pytest.approx(m["share"])} for m in st["mixture"]["by_domain"]
    }
    assert achieved == index["mixture"]["achieved"]
    tr = st["trim"]
    assert tr["fit"] + tr["trimmed"] + tr["dropped"] == tr["samples"] == index["trim"]["samples"]
    assert tr["trimmed"] > 0 and tr["dropped"] > 0 and tr["fit"] > 0
    assert 0 < tr["reasoning_kept_fraction"] < 1
    assert tr["reasoning_kept_dist"]["count"] == tr["trimmed"]
    assert tr["tokens_after_dist"]["max"] <= tr["context"]
    for s in st["stages"]:
        assert s["read"] == s["kept"] + s["rejected_total"] + s["duplicates"]
    counts = [r["count"] for r in st["top_rejections"]]
    assert counts == sorted(counts, reverse=True)


def test_default_view_plain_when_piped(base: Path, capsys: pytest.CaptureFixture) -> None:
    code, stdout, _ = run(capsys, base)
    st = compute_stats(base)
    assert code == 0 and not ANSI.search(stdout) and "┃" not in stdout
    for title in ("Totals", "Mixture by domain", "Mixture by source", "Trimming", "Stages", "Top rejection reasons"):
        assert f"== {title}" in stdout
    assert f"{st['totals']['train']['real_tokens']:,}" in stdout
    assert f"vocab {st['tokenizer']['vocab_size']:,}" in stdout
    assert st["top_rejections"][0]["reason"] in stdout


def test_default_view_rich_on_terminal(base: Path, capsys: pytest.CaptureFixture) -> None:
    code, stdout, _ = run(capsys, base, "--color", "always")
    assert code == 0 and ANSI.search(stdout) and "┃" in stdout
    assert "Mixture by domain" in ANSI.sub("", stdout)


def test_default_view_warns_on_missing_shard(out: Path, capsys: pytest.CaptureFixture) -> None:
    (out / "shards" / "00004.arrow").unlink()
    code, stdout, _ = run(capsys, out)
    assert code == 0 and "== Warnings" in stdout and "shards/00004.arrow: unreadable" in stdout
    code, _, err = run(capsys, out, "--validate", "--sample", 40)
    assert code == 1 and "invalid: shards/00004.arrow: [missing]" in err


def test_unreadable_output_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, tmp_path)
    assert code == 2 and "index.json" in err


# ---------------------------------------------------------------------------------------------------- samples
def test_sample_markers_and_determinism(base: Path, capsys: pytest.CaptureFixture) -> None:
    code, first, _ = run(capsys, base, "--sample", 3, "--seed", 7)
    _, again, _ = run(capsys, base, "--sample", 3, "--seed", 7)
    assert code == 0 and first == again
    assert first.count("=== shards/") == 3 and "--- document 0" in first
    # pack.loss_mask assistant: the role header and prompt carry no loss; think tags, reasoning, answer and the
    # assistant's end of turn do
    for marker in ("[template -loss]<|bos|>", "[prompt -loss]", "[template]<think>", "[reasoning]", "[answer]",
                   "[template]<|end_turn|>[/template][template -loss]<|eos|>"):  # fmt: skip
        assert marker in first
    _, rich, _ = run(capsys, base, "--sample", 3, "--seed", 7, "--color", "always")
    assert ANSI.search(rich) and "[prompt" not in rich


def test_sample_json_runs_cover_windows(base: Path, capsys: pytest.CaptureFixture) -> None:
    from tokenizers import Tokenizer

    from reasonpipe.pipeline.inspect_stats import flat, read_shard

    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    _, rep = run_json(capsys, base, "--sample", 5, "--seed", 2, "--split", "val")
    wins = rep["samples"]
    assert len(wins) == 5 and len({(w["shard"], w["row"]) for w in wins}) == 5
    for w in wins:
        assert w["shard"].startswith("shards-val/")
        t = read_shard(base / w["shard"]).slice(w["row"], 1)
        ids, loss, seg = (flat(t.column(c)) for c in ("input_ids", "loss_mask", "segment"))
        assert [d["sample_id"] for d in w["documents"]] == t.column("sample_ids")[0].as_py()
        pos = 0
        for d in w["documents"]:
            assert d["start"] == pos
            for r in d["runs"]:
                assert r["start"] == pos and r["end"] > pos
                assert set(loss[r["start"] : r["end"]]) == {int(r["loss"])}  # loss-masked spans are exact
                if r["segment"] != "pad":
                    assert r["text"] == tok.decode(ids[r["start"] : r["end"]].tolist(), skip_special_tokens=False)
                else:
                    assert not seg[r["start"] : r["end"]].any()
                pos = r["end"]
        assert pos == w["tokens"] == len(ids)


# ---------------------------------------------------------------------------------------------------- validate
def test_validate_clean_output(base: Path, capsys: pytest.CaptureFixture) -> None:
    assert validate(base) == []
    code, stdout, _ = run(capsys, base, "--validate")
    assert code == 0 and "OK" in stdout


def problems_of(capsys: pytest.CaptureFixture, out: Path) -> list[dict]:
    code, rep = run_json(capsys, out, "--validate")
    assert code == 1 and not rep["validation"]["ok"]
    return rep["validation"]["problems"]


def test_validate_flipped_byte(out: Path, capsys: pytest.CaptureFixture) -> None:
    path = out / "shards" / "00002.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    probs = problems_of(capsys, out)
    assert {"where": "shards/00002.arrow", "check": "checksum"} in [
        {k: p[k] for k in ("where", "check")} for p in probs
    ]
    code, _, err = run(capsys, out, "--validate")
    assert code == 1 and "shards/00002.arrow" in err and "checksum" in err


def test_validate_truncated_shard(out: Path, capsys: pytest.CaptureFixture) -> None:
    path = out / "shards" / "00001.arrow"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    checks = {p["check"] for p in problems_of(capsys, out) if p["where"] == "shards/00001.arrow"}
    assert {"size", "checksum"} <= checks and checks & {"unreadable", "rows"}


def test_validate_missing_shard(out: Path, capsys: pytest.CaptureFixture) -> None:
    (out / "shards-val" / "00000.arrow").unlink()
    probs = problems_of(capsys, out)
    assert any(p["where"] == "shards-val/00000.arrow" and p["check"] == "missing" for p in probs)


def test_validate_tampered_index(out: Path, capsys: pytest.CaptureFixture) -> None:
    index = json.loads((out / "index.json").read_text())
    index["shards"][3]["real_tokens"] += 1
    index["totals"]["train"]["windows"] += 1
    (out / "index.json").write_text(json.dumps(index))
    probs = problems_of(capsys, out)
    where = index["shards"][3]["path"]
    assert any(p["where"] == where and p["check"] == "real_tokens" for p in probs)
    assert any(p["where"] == "index.json" and "totals.train.windows" in p["message"] for p in probs)


def test_validate_index_schema(out: Path, capsys: pytest.CaptureFixture) -> None:
    index = json.loads((out / "index.json").read_text())
    index["seq_len"] = "long"
    del index["shards"][0]["sha256"]
    (out / "index.json").write_text(json.dumps(index))
    msgs = [p["message"] for p in problems_of(capsys, out) if p["check"] == "schema"]
    assert any(m.startswith("seq_len:") for m in msgs) and any(m.startswith("shards.0.sha256:") for m in msgs)


def test_validate_unindexed_shard_and_bad_token(out: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copy(out / "shards" / "00000.arrow", out / "shards" / "00999.arrow")
    vocab = json.loads((out / "index.json").read_text())["tokenizer"]["vocab_size"]

    def bad_token(cols: dict) -> None:
        cols["input_ids"][1, 3] = vocab + 5

    rewrite_shard(out, "shards/00000.arrow", bad_token)
    probs = problems_of(capsys, out)
    assert any(p["where"] == "shards/00999.arrow" and p["check"] == "unindexed" for p in probs)
    assert any(
        p["where"] == "shards/00000.arrow" and p["check"] == "token_ids" and "row 1" in p["message"] for p in probs
    )


def _atomic_last_docs(out: Path) -> pl.DataFrame:
    """Atomic samples that are the last document of their window, with the window's document count."""
    from reasonpipe.pipeline.inspect_stats import read_shard

    df = samples(out).filter(pl.col("status").is_in(["fit", "trimmed"]) & (pl.col("split") == "train"))
    rows = []
    for r in df.iter_rows(named=True):
        ids = read_shard(out / f"shards/{r['shard']:05d}.arrow", ["sample_ids"]).column(0)[r["row"]].as_py()
        if ids[-1] == r["id"]:
            rows.append(r | {"n_docs": len(ids)})
    return pl.DataFrame(rows)


def test_validate_ap_split_sample(out: Path, capsys: pytest.CaptureFixture) -> None:
    """A re-signed shard where an atomic sample 'continues' into the next window: only the AP check can see it."""
    cand = _atomic_last_docs(out)
    index = json.loads((out / "index.json").read_text())
    rows_of = {e["path"]: e["rows"] for e in index["shards"]}
    r = next(r for r in cand.iter_rows(named=True) if r["row"] + 1 < rows_of[f"shards/{r['shard']:05d}.arrow"])
    shard = f"shards/{r['shard']:05d}.arrow"

    def continue_into_next(cols: dict) -> None:
        cols["sample_ids"][r["row"] + 1][0] = r["id"]

    rewrite_shard(out, shard, continue_into_next)
    probs = problems_of(capsys, out)
    assert any(p["where"] == shard and p["check"] == "ap_split" and r["id"] in p["message"] for p in probs)


def test_validate_ap_answer_cut(out: Path, capsys: pytest.CaptureFixture) -> None:
    """An atomic sample whose closing template (answer end) was overwritten by padding."""
    r = _atomic_last_docs(out).row(0, named=True)
    shard = f"shards/{r['shard']:05d}.arrow"
    pad = json.loads((out / "index.json").read_text())["tokenizer"]["special_ids"]["pad"]

    def cut_answer_end(cols: dict) -> None:
        seg = cols["segment"][r["row"]]
        end = int(np.flatnonzero(seg)[-1]) + 1
        cols["input_ids"][r["row"], end - 3 : end] = pad
        cols["segment"][r["row"], end - 3 : end] = 0
        cols["loss_mask"][r["row"], end - 3 : end] = 0

    rewrite_shard(out, shard, cut_answer_end)
    probs = [p for p in problems_of(capsys, out) if p["where"] == shard]
    checks = {p["check"] for p in probs}
    assert {"ap_tokens", "ap_end"} <= checks and all(r["id"] in p["message"] for p in probs)


def test_validate_samples_placement(out: Path, capsys: pytest.CaptureFixture) -> None:
    f = sorted((out / "samples").glob("*.parquet"))[0]
    df = pl.read_parquet(f)
    i = df["status"].to_list().index("fit")
    df = df.with_columns(
        pl.when(pl.int_range(df.height) == i).then(pl.col("row") + 1).otherwise(pl.col("row")).alias("row")
    )
    df.write_parquet(f)
    sid = df["id"][i]
    assert any(p["check"] == "placement" and sid in p["message"] for p in problems_of(capsys, out))


# -------------------------------------------------------------------------------------------- json, plots, compare
def test_json_stable_keys(base: Path, capsys: pytest.CaptureFixture) -> None:
    code, rep = run_json(capsys, base)
    assert code == 0
    assert list(rep) == [
        "inspect_version",
        "output",
        "stats",
        "samples",
        "validation",
        "compare",
        "plots",
        "rsa_samples",
    ]
    assert rep["samples"] is rep["validation"] is rep["compare"] is rep["plots"] is rep["rsa_samples"] is None
    assert set(rep["stats"]) == {
        "output", "name", "format_version", "tool_version", "seq_len", "compression", "tokenizer", "totals",
        "shards", "samples", "mixture", "trim", "copies", "stages", "top_rejections", "packing", "decontamination",
        "warnings", "ttc",
    }  # fmt: skip
    assert set(rep["stats"]["totals"]) == {"train", "val", "all"}
    _, top2 = run_json(capsys, base, "--top", 2)
    assert top2["stats"]["top_rejections"] == rep["stats"]["top_rejections"][:2]
    assert rep["stats"] == json.loads(json.dumps(compute_stats(base)))


def test_plots(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, rep = run_json(capsys, base, "--plot", tmp_path / "plots")
    assert code == 0 and [Path(p).name for p in rep["plots"]] == [
        "lengths.png",
        "mixture.png",
        "shard_tokens.png",
        "rejections.png",
    ]
    for p in rep["plots"]:
        data = Path(p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_compare_4k_vs_32k_style(base: Path, outputs, capsys: pytest.CaptureFixture) -> None:
    """Same corpus trimmed to a shorter context: more trimming, fewer reasoning tokens kept."""
    short = outputs.get("mixed", **MIXED, context=64).root
    code, rep = run_json(capsys, base, "--compare", short)
    assert code == 0 and rep["compare"]["same_tokenizer"]
    m = {r["metric"]: r for r in rep["compare"]["rows"]}
    assert (m["trim.context"]["a"], m["trim.context"]["b"], m["trim.context"]["delta"]) == (128, 64, -64)
    assert m["trim.dropped"]["b"] >= m["trim.dropped"]["a"]
    assert m["trim.reasoning_kept"]["b"] < m["trim.reasoning_kept"]["a"]
    assert m["trim.tokens_before"]["delta"] == 0  # same corpus
    shares = [r for r in rep["compare"]["rows"] if r["metric"].startswith("mixture.by_domain.")]
    assert sum(r["a"] for r in shares) == pytest.approx(1.0) and sum(r["b"] for r in shares) == pytest.approx(1.0)
    _, stdout, _ = run(capsys, base, "--compare", short)
    assert "Compare" in stdout and "trim.reasoning_kept" in stdout


# ---------------------------------------------------------------------------------------------------- variants
def test_compressed_shards_match_uncompressed(base: Path, outputs) -> None:
    z = outputs.get("mixed", **MIXED, compression="zstd").root
    assert validate(z) == []
    a, b = compute_stats(base), compute_stats(z)
    assert a["totals"]["train"]["real_tokens"] == b["totals"]["train"]["real_tokens"]
    assert a["trim"] == b["trim"] and a["mixture"] == b["mixture"]


@pytest.mark.skipif(not REAL.is_dir(), reason="real data folder absent")
def test_real_gsm8k_and_peps(outputs, capsys: pytest.CaptureFixture) -> None:
    out = outputs.get("real", limit=80).root
    assert validate(out) == []
    code, rep = run_json(capsys, out, "--sample", 2)
    assert code == 0 and rep["stats"]["trim"]["samples"] == 80
    answers = [
        r["text"] for w in rep["samples"] for d in w["documents"] for r in d["runs"] if r["segment"] == "answer"
    ]
    assert answers and all(a.strip() for a in answers)


# ---------------------------------------------------------------------------------------------------- real writer
def test_output_of_the_real_writer(out: Path, capsys: pytest.CaptureFixture) -> None:
    """On the run's own trimming and packing: the AP check catches a trimmed sample whose EOS is padded over."""
    assert validate(out) == []
    st = compute_stats(out)
    index = json.loads((out / "index.json").read_text())
    assert st["trim"]["trimmed"] > 0 and st["trim"]["dropped"] > 0
    achieved = {
        m["name"]: {"tokens": m["tokens"], "share": pytest.approx(m["share"])} for m in st["mixture"]["by_domain"]
    }
    assert achieved == index["mixture"]["achieved"]
    for split in ("train", "val"):
        assert st["totals"][split]["real_tokens"] == index["totals"][split]["real_tokens"]

    # the AP check on the real layout: an atomic sample's end-of-turn/EOS overwritten by padding is caught
    df = samples(out).filter(pl.col("status") == "trimmed")
    r = df.row(0, named=True)
    shard = f"{'shards' if r['split'] == 'train' else 'shards-val'}/{r['shard']:05d}.arrow"

    def cut(cols: dict) -> None:
        row = r["row"]
        i = cols["sample_ids"][row].index(r["id"])
        end = cols["doc_offsets"][row][i] + r["tokens_after"]
        cols["input_ids"][row, end - 2 : end] = index["tokenizer"]["special_ids"]["pad"]
        cols["segment"][row, end - 2 : end] = 0
        cols["loss_mask"][row, end - 2 : end] = 0

    rewrite_shard(out, shard, cut)
    probs = problems_of(capsys, out)
    assert any(p["where"] == shard and p["check"].startswith("ap_") and r["id"] in p["message"] for p in probs)
