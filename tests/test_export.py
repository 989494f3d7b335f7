"""`reasonpipe export megatron|hf` on outputs made by `reasonpipe run`: read back with an independent MMIDIDX reader
(written from Megatron's format description, not from our writer), with megatron-core's own IndexedDataset and
GPTDataset (an optional test extra), with `datasets.load_from_disk`, and `load_dataset("arrow")` on the shards."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from outputs import Output

from reasonpipe.pipeline import export_io
from reasonpipe.pipeline.cli import main
from reasonpipe.tokenizer.shards import ShardSet
from reasonpipe.trainer.loader import IGNORE, window_arrays

# numpy dtypes by the code Megatron's .idx stores (megatron/core/datasets/indexed_dataset.py, class DType)
MMIDIDX_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
                  8: np.uint16}  # fmt: skip


def read_mmidx(prefix: Path) -> tuple[type, np.ndarray, np.ndarray, list[np.ndarray]]:
    """An independent reader of Megatron's indexed dataset: (dtype, sequence lengths, document indices, sequences).

    .idx: magic b"MMIDIDX\\x00\\x00", <Q version (1), <B dtype code, <Q sequence count, <Q document-index count, then
    int32 lengths, int64 byte pointers into the .bin, int64 document indices. .bin: the sequences' raw elements."""
    raw = Path(f"{prefix}.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<Q", raw[9:17])[0] == 1
    dtype = MMIDIDX_DTYPES[raw[17]]
    n_seq, n_doc = struct.unpack("<QQ", raw[18:34])
    lengths = np.frombuffer(raw, np.int32, n_seq, 34)
    pointers = np.frombuffer(raw, np.int64, n_seq, 34 + 4 * n_seq)
    docs = np.frombuffer(raw, np.int64, n_doc, 34 + 12 * n_seq)
    assert len(raw) == 34 + 12 * n_seq + 8 * n_doc  # nothing after the document indices
    data = np.fromfile(f"{prefix}.bin", dtype=np.uint8)
    size = np.dtype(dtype).itemsize
    assert pointers[-1] + lengths[-1] * size == data.size  # the last sequence ends the .bin
    seqs = [data[p : p + n * size].view(dtype) for p, n in zip(pointers, lengths)]
    return dtype, lengths, docs, seqs


def megatron_samples(lengths: list[int], order: list[int], seq_length: int, extra: bool) -> list[list[tuple]]:
    """Megatron's GPT sample construction (helpers.cpp build_sample_idx + GPTDataset's query), re-stated: documents
    laid end to end in `order`, a sample every `seq_length` tokens reading `seq_length + extra` tokens, the last
    partial sample dropped. Returns each sample as its pieces (document, start, end)."""
    starts = np.cumsum([0] + [lengths[d] for d in order])
    total = int(starts[-1])
    samples = []
    for k in range((total - extra) // seq_length):
        lo, hi = k * seq_length, k * seq_length + seq_length + extra
        pieces = []
        for i, d in enumerate(order):
            a, b = max(lo, starts[i]), min(hi, starts[i + 1])
            if a < b:
                pieces.append((d, int(a - starts[i]), int(b - starts[i])))
        samples.append(pieces)
    return samples


def windows(out: Path, split: str = "train") -> ShardSet:
    return ShardSet(out, split)


def export(*argv: object) -> int:
    return main(["export", *map(str, argv)])


@pytest.fixture(scope="module")
def mixed(outputs) -> Output:
    return outputs.get("mixed")


@pytest.fixture(scope="module")
def exported(mixed: Output, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("mg") / "megatron"
    assert export("megatron", mixed.root, dest) == 0
    return dest


@pytest.fixture(scope="module")
def megatron() -> SimpleNamespace:
    """megatron-core's dataset classes (CPU-only use) and the README's dataset recipe; a clean skip when the optional
    extra is not installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Transformer Engine and Apex are not installed" (not needed for data)
        gpt = pytest.importorskip("megatron.core.datasets.gpt_dataset", reason="megatron-core is not installed")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
        from megatron.core.datasets.utils import Split
    import torch

    class ReasonpipeGPTDataset(gpt.GPTDataset):
        """The README's recipe: GPT samples with reasonpipe's exact loss mask, from the PREFIX_loss_mask side file."""

        def __init__(self, indexed_dataset, dataset_path, *args, **kwargs):
            super().__init__(indexed_dataset, dataset_path, *args, **kwargs)
            self.window_loss_mask = IndexedDataset(dataset_path + "_loss_mask")

        def __getitem__(self, idx):
            item = super().__getitem__(idx)
            if idx is not None:
                d, off = self.sample_index[self.shuffle_index[idx]]
                window = self.document_index[d + (off == self.config.sequence_length)]  # one document per window
                mask = torch.from_numpy(self.window_loss_mask[window].astype(np.float32))
                # the README writes this over item["loss_mask"]; kept apart here to compare it with Megatron's own
                item["exact_loss_mask"] = torch.cat([mask[1:], mask.new_zeros(1)])  # label t is token t+1
            return item

    return SimpleNamespace(gpt=gpt, IndexedDataset=IndexedDataset, Split=Split, Dataset=ReasonpipeGPTDataset)


def gpt_dataset(mg: SimpleNamespace, prefix: Path, out: Output, extra: bool, cache: Path, num_samples: int | None):
    """megatron-core's GPT dataset (the README recipe's subclass) over an export, configured as the README says."""
    special = json.loads((out.root / "index.json").read_text())["tokenizer"]["special_ids"]

    class Tokenizer:  # what GPTDataset reads of a tokenizer; the export's tokenizer/ folder gives these ids
        vocab_size, eod, pad = out.vocab_size, special["eos"], special["pad"]
        unique_identifiers = {"class": "Tokenizer"}

    cfg = mg.gpt.GPTDatasetConfig(
        random_seed=1234,
        sequence_length=out.seq_len,
        tokenizer=Tokenizer(),
        reset_position_ids=True,
        reset_attention_mask=True,
        eod_mask_loss=False,
        add_extra_token_to_sequence=extra,
        path_to_cache=str(cache),
        split="100,0,0",
    )
    ds = mg.IndexedDataset(str(prefix))
    return mg.Dataset(ds, str(prefix), np.arange(len(ds), dtype=np.int32), num_samples, mg.Split.train, cfg)


def window_of(g, i: int) -> int:
    """The window (Megatron document) that GPT sample i is, in the one-document-per-window layout."""
    d, off = g.sample_index[g.shuffle_index[i]]
    return int(g.document_index[d + (off == g.config.sequence_length)])


# ---------------------------------------------------------------------------------------------------- megatron
def test_megatron_export_reads_back_independently(mixed: Output, exported: Path) -> None:
    info = json.loads((exported / "reasonpipe-export.json").read_text())
    assert info["complete"] and info["kind"] == "megatron" and info["seq_len"] == mixed.seq_len
    for split, prefix in (("train", "train"), ("val", "val")):
        ss = windows(mixed.root, split)
        dtype, lengths, docs, seqs = read_mmidx(exported / prefix)
        assert dtype == np.uint16  # vocabulary < 65,500 tokens
        assert len(seqs) == len(ss) > 0 and set(lengths.tolist()) == {mixed.seq_len}
        assert docs.tolist() == list(range(len(ss) + 1))  # one document per window
        mdtype, _, mdocs, masks = read_mmidx(exported / f"{prefix}_loss_mask")
        assert mdtype == np.uint8 and np.array_equal(mdocs, docs)
        lines = (exported / f"{prefix}_windows.jsonl").read_text().splitlines()
        assert len(lines) == len(ss) == info["splits"][split]["windows"]
        for k, line in enumerate(lines):
            w, entry = ss[k], json.loads(line)
            shard, row = ss.locate(k)
            assert np.array_equal(seqs[k], w.input_ids) and np.array_equal(masks[k], w.loss_mask)
            assert entry == {
                "shard": ss.paths[shard].relative_to(mixed.root).as_posix(),
                "row": row,
                "sample_ids": w.sample_ids,
                "doc_offsets": w.doc_offsets.tolist(),
            }
        assert info["splits"][split]["eod_reset_mismatches"] == 0


@pytest.mark.parametrize("extra", [True, False])
def test_megatron_sample_construction_yields_our_windows(mixed: Output, exported: Path, extra: bool) -> None:
    """Each GPT sample's input tokens are one whole window; an atomic sample never straddles two samples."""
    _, lengths, _, seqs = read_mmidx(exported / "train")
    n, L = len(seqs), mixed.seq_len
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(n) for _ in range(3)]).tolist()  # 3 shuffled epochs, as Megatron does
    samples = megatron_samples(lengths.tolist(), order, L, extra)
    assert len(samples) == 3 * n - extra  # with the extra token, the window drawn last is never a sample
    for k, pieces in enumerate(samples):
        (doc, start, end), *rest = [p for p in pieces if p[2] > p[1]]
        assert (doc, start, end) == (order[k], 0, L)  # the input tokens: exactly window order[k]
        if extra:  # the one extra token: the label of the last position, the next window's first token
            assert rest == [(order[k + 1], 0, 1)]
        else:
            assert rest == []


def test_megatron_core_reads_the_export(mixed: Output, exported: Path, megatron, tmp_path: Path) -> None:
    """megatron-core's IndexedDataset and GPTDataset on the export: every sample is our window, the mapping file names
    its samples, and with --reset-position-ids/--reset-attention-mask Megatron sees our trainer's positions and
    document-causal attention; its loss mask is the trainer's except on the last position (label = next window)."""
    ss = windows(mixed.root)
    ds = megatron.IndexedDataset(str(exported / "train"))
    assert len(ds) == len(ss) and ds.index.dtype == np.uint16
    assert all(np.array_equal(ds[k], ss[k].input_ids) for k in range(len(ss)))
    lines = [json.loads(x) for x in (exported / "train_windows.jsonl").read_text().splitlines()]
    for extra in (True, False):
        g = gpt_dataset(megatron, exported / "train", mixed, extra, tmp_path / f"cache{extra}", 2 * len(ss))
        assert len(g) >= 2 * len(ss)  # two epochs were asked for
        for i in range(len(g)):
            item, k = g[i], window_of(g, i)
            w = ss[k]
            assert lines[k]["sample_ids"] == w.sample_ids
            ids, labels, pos, doc, _ = window_arrays(w, 0, mixed.seq_len)
            real = w.segment != 0
            assert np.array_equal(item["tokens"].numpy(), np.where(real, ids, 0))  # Megatron maps pads to id 0
            assert np.array_equal(item["position_ids"].numpy()[real], pos[real])
            allowed = ~item["attention_mask"][0].numpy()
            ours = np.tril(doc[:, None] == doc[None, :])
            assert np.array_equal(allowed[np.ix_(real, real)], ours[np.ix_(real, real)])
            trained, theirs = labels != IGNORE, item["loss_mask"].numpy() != 0
            assert np.array_equal(theirs[:-1], trained[:-1]) and not trained[-1]
            if not extra:  # with the extra token, Megatron trains the last position on the next window's first token
                assert not theirs[-1]


def test_megatron_side_loss_mask_gives_the_exact_mask(outputs, megatron, tmp_path: Path) -> None:
    """Under `pack.loss_mask: assistant` (prompt tokens without loss) Megatron's own mask cannot know the prompt; the
    README's dataset class with the side file trains exactly the labels our trainer trains."""
    out = outputs.get("mixed", loss_mask="assistant")
    dest = tmp_path / "mg"
    assert export("megatron", out.root, dest) == 0
    ss = windows(out.root)
    g = gpt_dataset(megatron, dest / "train", out, True, tmp_path / "cache", None)
    assert len(g) == len(ss) - 1  # one epoch: the window drawn last is never a sample
    differs = 0
    for i in range(len(g)):
        item = g[i]
        _, labels, *_ = window_arrays(ss[window_of(g, i)], 0, out.seq_len)
        assert np.array_equal(item["exact_loss_mask"].numpy() != 0, labels != IGNORE)
        differs += int(((item["loss_mask"].numpy() != 0) != (labels != IGNORE)).sum())
    assert differs > 0  # Megatron's built-in mask trains the prompts; the side file does not


@pytest.fixture(scope="module")
def big_vocab_export(mixed: Output, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mixed output as if its tokenizer had Gemma3's 262,272 tokens (ZAYA1's), exported."""
    tmp = tmp_path_factory.mktemp("big")
    out = Path(shutil.copytree(mixed.root, tmp / "out"))
    index = json.loads((out / "index.json").read_text())
    index["tokenizer"]["vocab_size"] = 262_272
    (out / "index.json").write_text(json.dumps(index))
    assert export("megatron", out, tmp / "mg") == 0
    return tmp / "mg"


def test_megatron_dtype_follows_the_vocabulary(mixed: Output, big_vocab_export: Path) -> None:
    """A vocabulary of >= 65,500 tokens exports int32 ids, as Megatron's preprocessing does."""
    dtype, _, _, seqs = read_mmidx(big_vocab_export / "train")
    ss = windows(mixed.root)
    assert dtype == np.int32 and all(np.array_equal(seqs[k], ss[k].input_ids) for k in range(len(ss)))


def test_megatron_core_reads_int32_ids(mixed: Output, big_vocab_export: Path, megatron) -> None:
    ds, ss = megatron.IndexedDataset(str(big_vocab_export / "train")), windows(mixed.root)
    assert ds.index.dtype == np.int32 and all(np.array_equal(ds[k], ss[k].input_ids) for k in range(len(ss)))


def test_megatron_warns_when_eos_does_not_end_documents(mixed: Output, tmp_path: Path, capsys) -> None:
    """If EOS also occurs inside documents (here: the index names end_turn as EOS), --reset-attention-mask would cut
    documents where doc_offsets does not: the export counts those windows and warns."""
    out = Path(shutil.copytree(mixed.root, tmp_path / "o"))
    index = json.loads((out / "index.json").read_text())
    index["tokenizer"]["special_ids"]["eos"] = index["tokenizer"]["special_ids"]["end_turn"]
    (out / "index.json").write_text(json.dumps(index))
    assert export("megatron", out, tmp_path / "mg") == 0
    info = json.loads((tmp_path / "mg" / "reasonpipe-export.json").read_text())
    n = info["splits"]["train"]["eod_reset_mismatches"]
    assert 0 < n <= mixed.train_windows and info["splits"]["train"]["eod_reset_mismatch_examples"]
    assert f"train: in {n} windows documents do not end exactly at EOS" in capsys.readouterr().err


def test_megatron_tokenizer_folder_loads_in_transformers(mixed: Output, exported: Path) -> None:
    """Megatron's HuggingFaceTokenizer is AutoTokenizer: its eod (= eos) and pad ids must be ours."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(exported / "tokenizer"))
    special = json.loads((mixed.root / "index.json").read_text())["tokenizer"]["special_ids"]
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (special["eos"], special["pad"], special["bos"])
    assert len(tok) == mixed.vocab_size


# ---------------------------------------------------------------------------------------------------- hf
def test_hf_export_loads_from_disk(mixed: Output, tmp_path: Path) -> None:
    import datasets

    assert export("hf", mixed.root, tmp_path / "hf") == 0
    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    assert set(dd) == {"train", "validation"}
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == (mixed.root / "tokenizer.json").read_bytes()
    for split, name in (("train", "train"), ("val", "validation")):
        ss, ds = windows(mixed.root, split), dd[name].with_format("numpy")
        assert ds.column_names == ["input_ids", "loss_mask", "segment", "doc_offsets", "sample_ids"]
        assert ds.features["input_ids"].length == mixed.seq_len and len(ds) == len(ss)
        for k in range(len(ss)):
            row, w = ds[k], ss[k]
            for col in ("input_ids", "loss_mask", "segment", "doc_offsets"):
                assert np.array_equal(row[col], getattr(w, col)), (split, k, col)
            assert row["sample_ids"].tolist() == w.sample_ids


def test_hf_export_of_compressed_shards(outputs, mixed: Output, tmp_path: Path) -> None:
    import datasets

    z = outputs.get("mixed", compression="zstd")
    assert export("hf", z.root, tmp_path / "z") == 0 and export("hf", mixed.root, tmp_path / "plain") == 0
    a, b = datasets.load_from_disk(str(tmp_path / "z")), datasets.load_from_disk(str(tmp_path / "plain"))
    for name in ("train", "validation"):
        assert a[name].data.table.equals(b[name].data.table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "z"]  # decompressed staging copies are gone


def test_load_dataset_arrow_on_the_shards(mixed: Output, tmp_path: Path) -> None:
    """The README's one-liner: `datasets.load_dataset("arrow", data_files=...)` straight on the shards."""
    import datasets

    files = {"train": str(mixed.root / "shards" / "*.arrow"), "validation": str(mixed.root / "shards-val" / "*.arrow")}
    dd = datasets.load_dataset("arrow", data_files=files, cache_dir=str(tmp_path / "cache"))
    for split, name in (("train", "train"), ("val", "validation")):
        ss, ds = windows(mixed.root, split), dd[name].with_format("numpy")
        assert len(ds) == len(ss)
        assert all(np.array_equal(ds[k]["input_ids"], ss[k].input_ids) for k in range(len(ss)))
        assert ds[len(ss) - 1]["sample_ids"].tolist() == ss[len(ss) - 1].sample_ids


# ---------------------------------------------------------------------------------------------------- careless use
@pytest.mark.parametrize("fmt", ["megatron", "hf"])
def test_export_twice_is_identical_and_replaces_the_previous_export(outputs, mixed, fmt, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    assert export(fmt, mixed.root, dest) == 0
    first = {p.relative_to(dest): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}
    assert export(fmt, mixed.root, dest) == 0
    again = {p.relative_to(dest): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}
    assert again == first
    no_val = outputs.get("mixed", validation_fraction=0.0)  # a re-run without validation, exported over the first
    assert export(fmt, no_val.root, dest) == 0
    assert not list(dest.glob("val*")) and not (dest / "validation").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest"]  # no staging or old folders left


def test_export_errors_name_the_file_and_leave_dest_alone(mixed: Output, tmp_path: Path, capsys) -> None:
    def err(*argv: object) -> str:
        assert export(*argv) == 2
        return capsys.readouterr().err

    assert "no index.json" in err("megatron", tmp_path, tmp_path / "d")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert "not an earlier reasonpipe export" in err("megatron", mixed.root, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert "is the output folder" in err("hf", mixed.root, mixed.root)
    assert "is the output folder or contains it" in err("hf", mixed.root, mixed.root.parent)

    out = Path(shutil.copytree(mixed.root, tmp_path / "o"))
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**index, "seq_len": "long"}))
    msg = err("megatron", out, tmp_path / "d")
    assert "index.json: seq_len: Input should be a valid integer" in msg and "found 'long'" in msg
    (out / "index.json").write_text(json.dumps({**index, "shards": []}))
    assert "lists no shards" in err("hf", out, tmp_path / "d")
    (out / "index.json").write_text("{oops")
    assert "not valid JSON" in err("megatron", out, tmp_path / "d")
    (out / "index.json").write_text(json.dumps(index))
    (out / "tokenizer.json").write_text((out / "tokenizer.json").read_text() + " ")
    assert "tokenizer.json: sha256 differs" in err("megatron", out, tmp_path / "d")
    shutil.copyfile(mixed.root / "tokenizer.json", out / "tokenizer.json")
    shard = out / index["shards"][2]["path"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    msg = err("hf", out, tmp_path / "d")
    assert index["shards"][2]["path"] in msg and ("unreadable" in msg or "rows" in msg)
    shard.unlink()
    assert f"{index['shards'][2]['path']}: missing" in err("megatron", out, tmp_path / "d")
    assert not (tmp_path / "d").exists() and not (tmp_path / "d.partial").exists()


def test_interrupted_export_leaves_the_previous_export(mixed: Output, tmp_path: Path, monkeypatch, capsys) -> None:
    """Ctrl-C half-way: exit 130, no traceback, DEST still holds the earlier export, nothing staged is left."""
    dest = tmp_path / "dest"
    assert export("megatron", mixed.root, dest) == 0
    before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    real = export_io.shard_batches

    def interrupted(src, entry):
        yield from real(src, entry)
        raise KeyboardInterrupt

    monkeypatch.setattr("reasonpipe.pipeline.export_megatron.shard_batches", interrupted)
    assert export("megatron", mixed.root, dest) == 130
    assert "interrupted" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    monkeypatch.undo()
    assert export("megatron", mixed.root, dest) == 0


def test_export_usage_errors_exit_2(capsys) -> None:
    for argv in (["export"], ["export", "parquet", "a", "b"], ["export", "megatron", "only-one"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "invalid choice: 'parquet'" in capsys.readouterr().err
