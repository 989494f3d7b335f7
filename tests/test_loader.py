"""Shard loader: global order (epochs, mixtures), data-parallel split, exact resume, window tensors, eval split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonpipe.trainer.loader import (
    IGNORE,
    GlobalOrder,
    Prefetcher,
    ShardLoader,
    Source,
    check_sources,
    eval_batches,
    quotas,
    window_arrays,
)


@pytest.fixture(scope="module")
def shards(outputs):
    return outputs.get("gsm8k")  # made by `reasonpipe run` (tests/outputs.py)


@pytest.fixture(scope="module")
def shards_b(outputs):
    return outputs.get("gsm8k", samples=200, seed=1)


def test_single_source_order_is_a_permutation_per_epoch() -> None:
    order = GlobalOrder([37], [1.0], seed=5)
    for epoch in range(3):
        got = [order(epoch * 37 + i)[1] for i in range(37)]
        assert sorted(got) == list(range(37))
    assert [order(i) for i in range(37)] != [order(37 + i) for i in range(37)]  # epochs are reshuffled
    assert [order(i) for i in range(50)] == [GlobalOrder([37], [1.0], seed=5)(i) for i in range(50)]
    assert [order(i) for i in range(50)] != [GlobalOrder([37], [1.0], seed=6)(i) for i in range(50)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), min_size=1, max_size=6), st.integers(8, 5000))
def test_quotas_apportion_the_block(weights: list[float], block: int) -> None:
    q = quotas(weights, block)
    assert q.sum() == block
    exact = np.asarray(weights) / sum(weights) * block
    assert np.all(np.abs(q - exact) < 1.0)


def test_mixture_shares_and_per_source_epochs() -> None:
    sizes, weights, block = [10, 1000], [3.0, 1.0], 64
    order = GlobalOrder(sizes, weights, seed=0, block=block)
    picks = [order(k) for k in range(block * 20)]
    src = np.array([s for s, _ in picks])
    share = (src == 0).mean()
    assert share == pytest.approx(0.75, abs=1 / block)
    # the small source is repeated epoch by epoch: each run of 10 of its samples is a permutation of its windows
    small = [w for s, w in picks if s == 0]
    for e in range(len(small) // 10):
        assert sorted(small[e * 10 : (e + 1) * 10]) == list(range(10))
    big = [w for s, w in picks if s == 1]
    assert len(set(big)) == len(big)  # fewer than one epoch: no repeats


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ranks_partition_each_global_batch(shards, world: int) -> None:
    src = [Source.open(str(shards.root))]
    full = ShardLoader(src, 256, global_batch=8, micro_batch=8, seed=3)
    ranks = [ShardLoader(src, 256, 8, 8 // world if world < 8 else 1, r, world, seed=3) for r in range(world)]
    for _ in range(3):
        want = full.next_global_batch()[0].input_ids
        got = torch.cat([torch.cat([b.input_ids for b in ld.next_global_batch()]) for ld in ranks])
        assert torch.equal(got, want)


def test_resume_with_another_world_size_continues_the_same_stream(shards) -> None:
    src = [Source.open(str(shards.root))]
    ref = ShardLoader(src, 256, 8, 2, seed=1)
    stream = [torch.cat([b.input_ids for b in ref.next_global_batch()]) for _ in range(4)]
    two = [ShardLoader(src, 256, 8, 2, r, 2, seed=1) for r in range(2)]
    for ld in two:
        ld.next_global_batch()
        ld.next_global_batch()
    state = two[0].state_dict()
    assert state == two[1].state_dict() and state["consumed"] == 16
    one = ShardLoader(src, 256, 8, 4, seed=1)
    one.load_state_dict(json.loads(json.dumps(state)))
    for g in (2, 3):
        assert torch.equal(torch.cat([b.input_ids for b in one.next_global_batch()]), stream[g])
    other_seed = ShardLoader(src, 256, 8, 4, seed=2)
    with pytest.raises(ValueError, match="seed"):
        other_seed.load_state_dict(state)


def test_window_tensors_follow_the_shard_contract(shards) -> None:
    ss = Source.open(str(shards.root)).train
    seen_restart = False
    for i in range(0, len(ss), 7):
        rec = ss[i]
        ids, labels, pos, doc, lseg = window_arrays(rec, 0, 256)
        offs = np.asarray(rec.doc_offsets)
        assert offs[0] == 0 and np.array_equal(ids, rec.input_ids.astype(np.int64))
        assert np.all(pos[offs] == 0)  # positions restart at every document start
        assert np.all(np.diff(doc) >= 0) and np.all(np.diff(pos)[np.diff(doc) == 0] == 1)
        seen_restart |= offs.size > 1
        nxt_mask = rec.loss_mask[1:].astype(bool)
        assert np.array_equal(labels[:-1][nxt_mask], rec.input_ids[1:][nxt_mask].astype(np.int64))
        assert np.all(labels[:-1][~nxt_mask] == IGNORE) and labels[-1] == IGNORE
        assert np.array_equal(lseg[:-1][nxt_mask], rec.segment[1:][nxt_mask])
        pad = rec.segment == 0
        if pad.any():
            assert np.all(doc[pad] == doc.max()) and doc[pad][0] == len(offs)
    assert seen_restart


def test_sub_windows_tile_the_shard_window(shards) -> None:
    rec = Source.open(str(shards.root)).train[3]
    full = window_arrays(rec, 0, 256)
    halves = [window_arrays(rec, p, 128) for p in (0, 1)]
    for k in (0, 1, 2, 4):  # ids, labels (incl. the one crossing the cut), positions, label segments
        assert np.array_equal(np.concatenate([h[k] for h in halves]), full[k])


def test_loader_with_shorter_seq_len_uses_every_sub_window(shards) -> None:
    src = [Source.open(str(shards.root))]
    n = len(src[0].train)
    ld = ShardLoader(src, 128, global_batch=2 * n, micro_batch=2 * n)
    got = sorted(row.tobytes() for row in ld.next_global_batch()[0].input_ids.numpy())
    want = sorted(
        src[0].train[i].input_ids[h * 128 : (h + 1) * 128].astype(np.int64).tobytes() for i in range(n) for h in (0, 1)
    )
    assert got == want  # one epoch of sub-windows = every half window exactly once


def test_memory_map_is_zero_copy(shards) -> None:
    before = pa.total_allocated_bytes()
    src = Source.open(str(shards.root))
    recs = [src.train[i] for i in range(len(src.train))]
    shard_bytes = sum(s["bytes"] for s in src.index["shards"])
    assert sum(r.input_ids.nbytes for r in recs) > shard_bytes / 2
    assert pa.total_allocated_bytes() - before < shard_bytes / 10  # token arrays point into the map
    assert not recs[0].input_ids.flags.writeable


def test_eval_batches_cover_the_val_windows_once(shards, shards_b) -> None:
    srcs = [Source.open(str(shards.root)), Source.open(str(shards_b.root))]
    n_val = min(len(srcs[0].val), 10) + min(len(srcs[1].val), 10)
    per_rank = [list(eval_batches(srcs, 256, 10, 3, r, 3)) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1  # same number of forwards on every rank
    trained = [int((b.labels != IGNORE).any(1).sum()) for bs in per_rank for b in bs]
    assert sum(trained) == n_val
    single = list(eval_batches(srcs, 256, 10, 64, 0, 1))
    all_tok = sum(int((b.labels != IGNORE).sum()) for b in single)
    assert all_tok == sum(int((b.labels != IGNORE).sum()) for bs in per_rank for b in bs)


def test_mixture_of_two_outputs(shards, shards_b) -> None:
    srcs = [Source.open(str(shards.root), 1.0), Source.open(str(shards_b.root), 3.0)]
    ld = ShardLoader(srcs, 256, global_batch=64, micro_batch=64, seed=0)
    picks = [ld.order(k)[0] for k in range(4096)]
    assert np.mean(np.array(picks) == 1) == pytest.approx(0.75, abs=1e-3)


def test_check_sources_errors(shards, tmp_path: Path) -> None:
    src = Source.open(str(shards.root))
    with pytest.raises(ValueError, match=r"vocab_size 512 > model vocab_size 300"):
        check_sources([src], 300, 256)
    with pytest.raises(ValueError, match="not a multiple of train.seq_len 100"):
        check_sources([src], 512, 100)
    check_sources([src], 512, 128)
    with pytest.raises(FileNotFoundError):
        Source.open(str(tmp_path / "missing"))


def test_fsspec_url_is_cached_locally(shards, tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for f in shards.root.rglob("*"):
        if f.is_file():
            fs.pipe(f"/remote/{f.relative_to(shards.root)}", f.read_bytes())
    src = Source.open("memory://remote", cache_dir=tmp_path / "cache")
    local = Source.open(str(shards.root))
    assert src.root.parent == tmp_path / "cache" and len(src.train) == len(local.train)
    assert np.array_equal(src.train[5].input_ids, local.train[5].input_ids)
    assert Source.open("memory://remote", cache_dir=tmp_path / "cache").root == src.root  # reused


def test_prefetcher_yields_the_same_batches_and_state(shards) -> None:
    src = [Source.open(str(shards.root))]
    plain = ShardLoader(src, 256, 8, 4, seed=9)
    ahead = ShardLoader(src, 256, 8, 4, seed=9)
    pre = Prefetcher(ahead)
    try:
        for g in range(3):
            want, got = plain.next_global_batch(), pre.next()
            assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(want, got))
            assert ahead.consumed == plain.consumed == (g + 1) * 8  # the prefetched batch is not yet consumed
        ahead.load_state_dict(plain.state_dict() | {"consumed": 0})  # a rewind (resume) is honoured
        assert torch.equal(
            pre.next()[0].input_ids, ShardLoader(src, 256, 8, 4, seed=9).next_global_batch()[0].input_ids
        )
    finally:
        pre.close()
