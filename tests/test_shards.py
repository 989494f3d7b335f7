"""Shard contract: schema, atomic writes, zero-copy memory-mapped reads (pyarrow, datasets, polars), ShardSet."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from reasonpipe.tokenizer.shards import ShardSet, ShardWriter, open_shard, sha256_file, shard_schema

SEQ = 64


@dataclass
class Win:
    input_ids: np.ndarray
    loss_mask: np.ndarray
    segment: np.ndarray
    doc_offsets: list[int]
    sample_ids: list[str]


def make_windows(n: int, seed: int = 0, seq_len: int = SEQ) -> list[Win]:
    """Windows of 1-3 documents with a padded tail, like the packer's output."""
    rng = np.random.default_rng(seed)
    out = []
    for w in range(n):
        ndocs = int(rng.integers(1, 4))
        cuts = np.sort(rng.choice(np.arange(1, seq_len), ndocs - 1, replace=False)) if ndocs > 1 else []
        offsets = [0, *map(int, cuts)]
        real = int(rng.integers(offsets[-1] + 1, seq_len + 1))
        ids = rng.integers(0, 2**32 - 1, seq_len, dtype=np.uint32)
        seg = rng.integers(1, 6, seq_len).astype(np.uint8)
        ids[real:], seg[real:] = 0, 0
        mask = (seg != 0).astype(np.uint8)
        out.append(Win(ids, mask, seg, offsets, [f"w{w}/d{d}" for d in range(ndocs)]))
    return out


def write_output(tmp: Path, windows: list[Win], rows_per_shard: int) -> Path:
    """A minimal OUTPUT folder (train shards + index.json) for ShardSet."""
    with ShardWriter(tmp / "shards" / "{k:05d}.arrow", SEQ, rows_per_shard=rows_per_shard) as w:
        w.write_windows(windows)
    entries = [{**s.to_dict(), "path": str(Path(s.path).relative_to(tmp)), "split": "train"} for s in w.stats]
    (tmp / "index.json").write_text(json.dumps({"seq_len": SEQ, "shards": entries}))
    return tmp


def test_write_read_round_trip_and_stats(tmp_path: Path) -> None:
    wins = make_windows(600)
    with ShardWriter(tmp_path / "s-{k:03d}.arrow", SEQ, rows_per_shard=250) as w:
        w.write_windows(wins)
    stats = w.stats
    assert [s.rows for s in stats] == [250, 250, 100]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-000.arrow", "s-001.arrow", "s-002.arrow"]  # no temp left
    got = []
    for s in stats:
        t = open_shard(s.path)
        assert t.schema.equals(shard_schema(SEQ))
        assert s.tokens == t.num_rows * SEQ
        assert s.real_tokens == int(np.count_nonzero(t.column("segment").combine_chunks().flatten().to_numpy()))
        assert s.sha256 == sha256_file(s.path) and s.bytes == Path(s.path).stat().st_size
        got.extend(t.to_pylist())
    for row, win in zip(got, wins, strict=True):
        assert row["input_ids"] == win.input_ids.tolist()
        assert row["loss_mask"] == win.loss_mask.tolist()
        assert row["segment"] == win.segment.tolist()
        assert row["doc_offsets"] == win.doc_offsets
        assert row["sample_ids"] == win.sample_ids


def test_write_batch_equals_write(tmp_path: Path) -> None:
    wins = make_windows(300, seed=1)
    with ShardWriter(tmp_path / "a.arrow", SEQ) as a:
        a.write_windows(wins)
    cols = {
        "input_ids": np.stack([w.input_ids for w in wins]),
        "loss_mask": np.stack([w.loss_mask for w in wins]),
        "segment": np.stack([w.segment for w in wins]),
        "doc_offsets": [w.doc_offsets for w in wins],
        "sample_ids": [w.sample_ids for w in wins],
    }
    with ShardWriter(tmp_path / "b.arrow", SEQ) as b:
        b.write_batch({k: v[:7] for k, v in cols.items()})  # uneven pieces across buffer boundaries
        b.write_batch({k: v[7:] for k, v in cols.items()})
    assert a.stats[0].sha256 == b.stats[0].sha256


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "x.arrow", SEQ, batch_rows=4) as w:
        w.write_windows(make_windows(10))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_rejects_wrong_length_and_bad_options(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path / "x.arrow", SEQ)
    with pytest.raises(ValueError, match="seq_len is 64"):
        w.write(make_windows(1, seq_len=32)[0])
    with pytest.raises(ValueError, match=r"\{k\}"):
        ShardWriter(tmp_path / "x.arrow", SEQ, rows_per_shard=10)
    with pytest.raises(ValueError, match="compression"):
        ShardWriter(tmp_path / "x.arrow", SEQ, compression="gzip")  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compressed_shards_read_back(tmp_path: Path, compression: str) -> None:
    wins = make_windows(50)
    with ShardWriter(tmp_path / "c.arrow", SEQ, compression=compression) as w:  # type: ignore[arg-type]
        w.write_windows(wins)
    rows = open_shard(tmp_path / "c.arrow").to_pylist()
    assert [r["input_ids"] for r in rows] == [x.input_ids.tolist() for x in wins]
    ss = ShardSet.from_paths([tmp_path / "c.arrow"], SEQ)
    assert len(ss) == 50 and ss[49].sample_ids == wins[49].sample_ids
    assert ss[7].doc_offsets.tolist() == wins[7].doc_offsets


def test_pyarrow_memory_map_is_zero_copy(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "z.arrow", SEQ) as w:
        w.write_windows(make_windows(2000))
    before = pa.total_allocated_bytes()
    table = open_shard(tmp_path / "z.arrow")
    ids = table.column("input_ids").chunk(0).flatten().to_numpy(zero_copy_only=True)
    assert table.nbytes > 500_000
    assert pa.total_allocated_bytes() - before < 10_000  # buffers point into the map, nothing was read into memory
    assert ids.dtype == np.uint32 and not ids.flags.writeable


def test_datasets_from_file_memory_maps(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    wins = make_windows(1000)
    with ShardWriter(tmp_path / "d.arrow", SEQ) as w:
        w.write_windows(wins)
    before = pa.total_allocated_bytes()
    ds = datasets.Dataset.from_file(str(tmp_path / "d.arrow"))
    assert pa.total_allocated_bytes() - before < 10_000
    assert len(ds) == 1000 and ds.data.nbytes > 400_000
    assert ds.features["input_ids"].length == SEQ
    row = ds.with_format("numpy")[123]
    assert np.array_equal(row["input_ids"], wins[123].input_ids)
    assert row["sample_ids"].tolist() == wins[123].sample_ids


def test_polars_reads_stream_and_mapped_table(tmp_path: Path) -> None:
    pl = pytest.importorskip("polars")
    wins = make_windows(500)
    with ShardWriter(tmp_path / "p.arrow", SEQ) as w:
        w.write_windows(wins)
    from_map = pl.from_arrow(open_shard(tmp_path / "p.arrow"))
    from_stream = pl.read_ipc_stream(tmp_path / "p.arrow")
    for df in (from_map, from_stream):
        assert df.schema["input_ids"] == pl.Array(pl.UInt32, SEQ)
        assert df.height == 500
        assert df["input_ids"][77].to_list() == wins[77].input_ids.tolist()
        assert df["doc_offsets"][77].to_list() == wins[77].doc_offsets
        assert df["sample_ids"][77].to_list() == wins[77].sample_ids
    assert from_map.equals(from_stream)
    # the whole token matrix as one (rows, seq_len) numpy array
    mat = from_map["input_ids"].to_numpy()
    assert mat.shape == (500, SEQ) and np.array_equal(mat[3], wins[3].input_ids)


def test_shardset_random_access(tmp_path: Path) -> None:
    wins = make_windows(1100, seed=3)
    root = write_output(tmp_path, wins, rows_per_shard=300)
    ss = ShardSet(root)
    assert len(ss) == 1100 and len(ss.paths) == 4
    assert ss.locate(0) == (0, 0) and ss.locate(299) == (0, 299) and ss.locate(300) == (1, 0)
    assert ss.locate(-1) == (3, 199)
    order = np.random.default_rng(0).permutation(1100)
    for i in order[:300]:
        rec, win = ss[int(i)], wins[int(i)]
        assert rec.input_ids.dtype == np.uint32 and rec.input_ids.shape == (SEQ,)
        assert np.array_equal(rec.input_ids, win.input_ids)
        assert np.array_equal(rec.loss_mask, win.loss_mask)
        assert np.array_equal(rec.segment, win.segment)
        assert rec.doc_offsets.tolist() == win.doc_offsets
        assert rec.sample_ids == win.sample_ids
    with pytest.raises(IndexError):
        ss[1100]
    assert ShardSet(root, split="val").__len__() == 0


def test_shardset_detects_index_mismatch(tmp_path: Path) -> None:
    root = write_output(tmp_path, make_windows(20), rows_per_shard=10)
    index = json.loads((root / "index.json").read_text())
    index["shards"][1]["rows"] = 11
    (root / "index.json").write_text(json.dumps(index))
    ss = ShardSet(root)
    with pytest.raises(ValueError, match="index.json says 11"):
        ss[15]
