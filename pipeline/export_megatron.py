"""`reasonpipe export megatron OUT DEST`: the windows of an OUTPUT folder as Megatron-LM indexed datasets.

Megatron's indexed dataset (`megatron/core/datasets/indexed_dataset.py`) is a `.bin` of raw token ids and an `.idx`:
the 9-byte magic `MMIDIDX\\x00\\x00`, version `<Q` 1, dtype code `<B`, sequence count `<Q`, document-index length
`<Q`, then int32 sequence lengths, int64 byte pointers of the sequences in the `.bin`, and int64 document indices
(the sequence index where each document starts, then the sequence count). Token dtype by vocabulary size as
Megatron's `tools/preprocess_data.py` picks it (`DType.optimal_dtype`): uint16 below 65,500 tokens, else int32.

Layout: every window is one sequence and one document of exactly seq_len tokens, in index order.

    DEST/train.bin, train.idx                  the windows of shards/ (tokens)
    DEST/train_loss_mask.bin, .idx             their loss_mask column, same layout, uint8 (1 = train on this token)
    DEST/train_windows.jsonl                   line k = document k: {"shard", "row", "sample_ids", "doc_offsets"}
    DEST/val.*                                 the same for shards-val/ (when the output has validation windows)
    DEST/tokenizer/                            tokenizer.json + tokenizer_config.json: Megatron's HuggingFaceTokenizer
                                               then has eod = our EOS and pad = our PAD
    DEST/reasonpipe-export.json                provenance, counts, dtypes and the Megatron settings below

Why windows map 1:1 onto Megatron's GPT samples. GPTDataset shuffles the *documents* (here: whole windows), lays
them end to end and cuts a sample every `--seq-length` tokens, reading `seq_length + 1` tokens
(`add_extra_token_to_sequence`, on in Megatron-LM: tokens = text[:-1], labels = text[1:]). With every document
exactly seq_len long and `--seq-length` = seq_len, sample i is the i-th window of the shuffled order, whole: a cut
never lands inside a window, so an atomic (AP-trimmed) sample never straddles two Megatron samples, however Megatron
shuffles, splits or repeats epochs. The extra token is the first token of the next window drawn and only a label:
Megatron trains the window's last position on it, which our trainer does not (the loss-mask side file gives the
exact mask). Samples: (N*epochs*L - 1) // L = N*epochs - 1, so the window drawn last is not a sample. With
megatron-core's `add_extra_token_to_sequence=False` a sample is exactly one window (labels rolled, the last one pad,
masked). Documents inside a window end with EOS, so `--reset-position-ids --reset-attention-mask` restart positions
and attention after each EOS exactly where doc_offsets starts a document (checked here for every window).

Memory is bounded: shards stream batch by batch, the mapping is written line by line, and the .idx (all lengths
equal) is written in fixed-size chunks at the end.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from reasonpipe.pipeline.export_io import (
    ExportError,
    SourceOutput,
    open_output,
    shard_batches,
    staged_dest,
    write_marker,
)

MAGIC = b"MMIDIDX\x00\x00"
DTYPE_CODES = {
    np.uint8: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.float64: 6,
    np.float32: 7,
    np.uint16: 8,
}
IDX_CHUNK = 1 << 20  # sequences per .idx write


def token_dtype(vocab_size: int) -> type[np.integer]:
    """Megatron's choice for token ids (`DType.optimal_dtype(vocab_size)` in `tools/preprocess_data.py`)."""
    return np.uint16 if vocab_size < 65500 else np.int32


class FixedIndexedWriter:
    """Writes `prefix.bin` / `prefix.idx` where every sequence has `length` elements and is its own document."""

    def __init__(self, prefix: Path, dtype: type[np.integer], length: int) -> None:
        self.prefix, self.dtype, self.length = prefix, np.dtype(dtype), length
        self.count = 0
        self._bin = open(f"{prefix}.bin", "wb")  # noqa: SIM115 - closed in close()

    def add(self, rows: np.ndarray) -> None:
        """Append rows (n, length) as n sequences/documents."""
        if rows.ndim != 2 or rows.shape[1] != self.length:
            raise ValueError(f"rows must have shape (n, {self.length}), got {rows.shape}")
        self._bin.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.count += len(rows)

    def close(self) -> None:
        self._bin.close()
        n, step = self.count, self.length * self.dtype.itemsize
        with open(f"{self.prefix}.idx", "wb") as f:
            f.write(MAGIC + struct.pack("<Q", 1) + struct.pack("<B", DTYPE_CODES[self.dtype.type]))
            f.write(struct.pack("<Q", n) + struct.pack("<Q", n + 1))
            for lo in range(0, n, IDX_CHUNK):  # sequence lengths
                f.write(np.full(min(IDX_CHUNK, n - lo), self.length, np.int32).tobytes())
            for lo in range(0, n, IDX_CHUNK):  # byte offsets of the sequences in the .bin
                f.write((np.arange(lo, min(lo + IDX_CHUNK, n), dtype=np.int64) * step).tobytes())
            for lo in range(0, n + 1, IDX_CHUNK):  # document k starts at sequence k; the last entry is n
                f.write(np.arange(lo, min(lo + IDX_CHUNK, n + 1), dtype=np.int64).tobytes())


def eod_boundaries_match(ids: np.ndarray, segment: np.ndarray, offsets: pa.ListArray, eod: int) -> np.ndarray:
    """Per window: do "a new document starts after each EOD" (Megatron's reset) and doc_offsets agree on the real
    tokens? Padding (after the real tokens) is ignored: it carries no loss and comes after every real token."""
    n, length = ids.shape
    real_end = np.count_nonzero(segment, axis=1)  # real tokens come first, padding last
    pos = np.arange(length)
    inside = (pos >= 1) & (pos[None, :] < real_end[:, None])
    megatron = np.zeros((n, length), bool)
    megatron[:, 1:] = ids[:, :-1] == eod
    ours = np.zeros((n, length), bool)
    starts = offsets.offsets.to_numpy()
    values = offsets.flatten().to_numpy().astype(np.int64)
    rows = np.repeat(np.arange(n), np.diff(starts))
    ours[rows, values] = True
    return ~((megatron ^ ours) & inside).any(axis=1)


def _tokenizer_folder(src: SourceOutput, folder: Path) -> dict[str, str]:
    """tokenizer.json + the config transformers' AutoTokenizer (and so Megatron's HuggingFaceTokenizer) reads."""
    from tokenizers import Tokenizer

    folder.mkdir()
    shutil.copyfile(src.root / src.index.tokenizer.path, folder / "tokenizer.json")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    special = src.index.tokenizer.special_ids
    names = {key: tok.id_to_token(getattr(special, key)) for key in ("bos", "eos", "pad")}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names["bos"],
        "eos_token": names["eos"],
        "pad_token": names["pad"],
        "model_max_length": src.seq_len,
    }
    (folder / "tokenizer_config.json").write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2) + b"\n")
    return names


def _export_split(src: SourceOutput, split: str, folder: Path) -> dict[str, Any]:
    """DEST/{split}.bin/.idx, {split}_loss_mask.bin/.idx and {split}_windows.jsonl from the split's shards."""
    prefix = split
    vocab, eod = src.index.tokenizer.vocab_size, src.index.tokenizer.special_ids.eos
    tokens = FixedIndexedWriter(folder / prefix, token_dtype(vocab), src.seq_len)
    masks = FixedIndexedWriter(folder / f"{prefix}_loss_mask", np.uint8, src.seq_len)
    mismatched: list[dict[str, Any]] = []
    n_mismatched = 0
    with open(folder / f"{prefix}_windows.jsonl", "wb") as mapping:
        for entry in src.shards(split):
            row = 0
            for batch in shard_batches(src, entry):
                ids, mask, seg = (
                    batch.column(c).flatten().to_numpy().reshape(-1, src.seq_len)
                    for c in ("input_ids", "loss_mask", "segment")
                )
                if ids.size and int(ids.max()) >= vocab:
                    bad = int(np.argmax(ids.max(axis=1) >= vocab))
                    raise ExportError(
                        f"{src.root / entry.path}: row {row + bad} holds token id {int(ids[bad].max())} >= vocab "
                        f"size {vocab}; the shard does not match its tokenizer"
                    )
                tokens.add(ids)
                masks.add(mask)
                offsets = batch.column("doc_offsets")
                ok = eod_boundaries_match(ids, seg, offsets, eod)
                for r in np.flatnonzero(~ok):
                    n_mismatched += 1
                    if len(mismatched) < 10:
                        mismatched.append({"shard": entry.path, "row": row + int(r)})
                for r, (sids, offs) in enumerate(
                    zip(batch.column("sample_ids").to_pylist(), offsets.to_pylist(), strict=True)
                ):
                    line = {"shard": entry.path, "row": row + r, "sample_ids": sids, "doc_offsets": offs}
                    mapping.write(orjson.dumps(line) + b"\n")
                row += batch.num_rows
    tokens.close()
    masks.close()
    return {
        "prefix": prefix,
        "windows": tokens.count,
        "token_dtype": np.dtype(tokens.dtype).name,
        "eod_reset_mismatches": n_mismatched,
        "eod_reset_mismatch_examples": mismatched,
    }


def megatron_settings(src: SourceOutput, dest: Path, splits: dict[str, Any]) -> dict[str, Any]:
    """The Megatron-LM arguments under which its GPT samples are our windows (see the module doc)."""
    args = [f"--seq-length {src.seq_len}", f"--train-data-path {dest}/train"]
    if "val" in splits:
        args.append(f"--valid-data-path {dest}/val")
    args += ["--tokenizer-type HuggingFaceTokenizer", f"--tokenizer-model {dest}/tokenizer"]
    args += ["--reset-position-ids", "--reset-attention-mask"]
    return {
        "args": args,
        "not": ["--eod-mask-loss (EOS tokens carry loss in our windows)"],
        "samples": "windows x epochs - 1 with add_extra_token_to_sequence (Megatron-LM), windows x epochs without",
        "loss_mask": (
            "Megatron trains label t (= token t+1) of a window unless it is pad, the last one included; the exact "
            "mask of label t is PREFIX_loss_mask[window][t+1], 0 for the last (README: ReasonpipeGPTDataset)"
        ),
    }


def export_megatron(output: str | Path, dest: str | Path) -> dict[str, Any]:
    """Export OUTPUT's train (and val) windows to DEST; returns what `reasonpipe-export.json` records."""
    src = open_output(output)
    with staged_dest(dest, src) as folder:
        names = _tokenizer_folder(src, folder / "tokenizer")
        splits = {s: _export_split(src, s, folder) for s in ("train", "val") if src.shards(s)}
        info = {
            "kind": "megatron",
            **src.provenance(),
            "format": "Megatron-LM MMIDIDX v1, one document per window",
            "special_tokens": names,
            "splits": splits,
            "megatron": megatron_settings(src, Path(dest).absolute(), splits),
        }
        write_marker(folder, info)
    return info
