"""Encoder backends for the chat template's text pieces: Hugging Face `tokenizers` (the reference) or `gigatoken`.

An encoder turns a list of texts into their token ids back to back (read-only uint32) and the tokens per text; it
never adds specials and is only given texts without special-token strings (the template encodes those with
`tokenizers`, which can keep them literal). `gigatoken` (optional: `pip install 'reasonpipe[gigatoken]'`) loads the
same prepared tokenizer.json and encodes 10-50x faster on one thread (BENCHMARKS.md); it is used only while it
agrees with `tokenizers` on a hash-chosen sample of each batch (see `ChatTemplate.encode_batch_checked`).

`gigatoken` keeps a cache of every distinct pre-token it has seen, which grows with the corpus (~80 bytes per
distinct pre-token, measured): the encoder is rebuilt after `RENEW_CHARS` characters, which bounds that memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Literal

import numpy as np
import xxhash
from tokenizers import Tokenizer

Backend = Literal["auto", "tokenizers", "gigatoken"]
BACKENDS = ("auto", "tokenizers", "gigatoken")
RENEW_CHARS = 1 << 25  # rebuild gigatoken's encoder (and its pre-token cache) after this many characters
PARITY_EVERY = 64  # about one text in PARITY_EVERY (chosen by a hash of its content) is also encoded by tokenizers


def readonly(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


class TokenizersEncoder:
    """The reference: `Tokenizer.encode_batch_fast` (the same ids as `encode_batch`, no offsets computed)."""

    name = "tokenizers"

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        encs = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        lens = np.fromiter(map(len, encs), dtype=np.int64, count=len(encs))
        flat = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.uint32, count=int(lens.sum()))
        return readonly(flat), lens


class GigatokenEncoder:
    """`gigatoken` on the calling thread (our parallelism is tasks and encode-ahead threads), rebuilt every
    `RENEW_CHARS` characters to bound its pre-token cache. Not thread-safe: one per thread."""

    name = "gigatoken"

    def __init__(self, spec: str) -> None:
        import gigatoken

        self._gigatoken, self._spec = gigatoken, spec
        self._encoder = gigatoken.Tokenizer.from_json(spec)
        self._chars = 0

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        self._chars += sum(map(len, texts))
        if self._chars > RENEW_CHARS:
            self._encoder, self._chars = self._gigatoken.Tokenizer.from_json(self._spec), 0
        layout = self._encoder.encode_batch(list(texts), parallel=False).layout  # one flat buffer + offsets
        offsets = np.asarray(layout.offsets, dtype=np.int64)
        flat = np.asarray(layout.content.data, dtype=np.uint32)[offsets[0] : offsets[-1]]  # a view: keeps the buffer
        return readonly(flat), np.diff(offsets)


def gigatoken_available() -> bool:
    try:
        import gigatoken  # noqa: F401
    except ImportError:
        return False
    return True


def make_fast_encoder(tokenizer: Tokenizer, backend: Backend) -> GigatokenEncoder | None:
    """The gigatoken encoder `backend` asks for, or None (then `tokenizers` encodes everything).

    "tokenizers": None. "gigatoken": it must be installed (a precise error otherwise). "auto": gigatoken when it is
    installed and loads this tokenizer, else None. A tokenizer gigatoken cannot load gives None with a log line."""
    if backend not in BACKENDS:
        raise ValueError(f"tokenizer.backend: got {backend!r}, allowed: {', '.join(BACKENDS)}")
    if backend == "tokenizers" or (backend == "auto" and not gigatoken_available()):
        return None
    if not gigatoken_available():
        raise ValueError(
            "tokenizer.backend: gigatoken is not installed; `pip install 'reasonpipe[gigatoken]'` "
            "or set backend: auto (uses it when installed) or tokenizers"
        )
    try:
        return GigatokenEncoder(tokenizer.to_str())
    except Exception as exc:  # noqa: BLE001 - any load failure means: use the reference
        log_warning(f"gigatoken cannot load this tokenizer ({type(exc).__name__}: {exc}); encoding with tokenizers")
        return None


def parity_sample(texts: Sequence[str]) -> list[int]:
    """Indices of the texts checked against the reference: a stable hash of each text's content picks ~1/64."""
    digests = (xxhash.xxh64_intdigest(t.encode("utf-8", "surrogatepass")) for t in texts)
    return [i for i, d in enumerate(digests) if d % PARITY_EVERY == 0]


def first_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> int | None:
    """Index of the first text whose ids differ between two `encode_flat` results, None when they agree."""
    (ids_a, lens_a), (ids_b, lens_b) = a, b
    if np.array_equal(lens_a, lens_b) and np.array_equal(ids_a, ids_b):
        return None
    ends_a, ends_b = np.cumsum(lens_a), np.cumsum(lens_b)
    for i in range(len(lens_a)):
        if lens_a[i] != lens_b[i] or not np.array_equal(
            ids_a[ends_a[i] - lens_a[i] : ends_a[i]], ids_b[ends_b[i] - lens_b[i] : ends_b[i]]
        ):
            return i
    return None


def log_warning(message: str) -> None:
    """A warning in the task's log (datatrove tasks log through loguru; elsewhere the standard logger)."""
    try:
        from loguru import logger
    except ImportError:
        from logging import getLogger

        logger = getLogger("reasonpipe")
    logger.warning(message)
