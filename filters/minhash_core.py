"""Vectorised hashing for near-dedup and decontamination: tokens, n-grams, MinHash, LSH bands, verification.

Pure numpy, no datatrove and no files. A batch of texts is processed at once: texts are joined into one UTF-8 buffer,
token/n-gram hashes come from polynomial prefix hashes over that buffer (one pass of array ops, no per-token Python),
and MinHash signatures are one `(grams x hashes)` multiply-add plus a segmented minimum.

Hash layout: every batch function returns `(values, offsets)` where the values of text i are
`values[offsets[i]:offsets[i + 1]]`. All hashes are deterministic (fixed constants, seeded parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

U64 = np.uint64
_P = U64(0x9E3779B97F4A7C15)  # odd multiplier of the byte polynomial
_P_INV = U64(pow(0x9E3779B97F4A7C15, -1, 1 << 64))
_GRAM_MULT = np.random.default_rng(0x5EED).integers(1, 2**63, size=64, dtype=np.uint64) * U64(2) + U64(1)

# byte classes: 0 separates, 1 word character, 2 operator (a token on its own); see filters/normalize.py
_CLASS = np.zeros(256, dtype=np.uint8)
for _c in b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_":
    _CLASS[_c] = 1
_CLASS[0x80:] = 1
for _c in b"+-*/=<>^%&|~\\":
    _CLASS[_c] = 2
_WORDS_ONLY = np.where(_CLASS == 2, 0, _CLASS).astype(np.uint8)  # operators as separators

_powers: dict[str, np.ndarray] = {}


def _pow_table(kind: str, n: int) -> np.ndarray:
    """P^i (kind "p") or P^-i (kind "inv") for i < n, cached and grown by doubling."""
    table = _powers.get(kind)
    if table is None or len(table) < n:
        size = max(n, 2 * len(table) if table is not None else 1 << 16)
        base = _P if kind == "p" else _P_INV
        table = np.full(size, base, dtype=np.uint64)
        table[0] = 1
        np.cumprod(table, out=table)  # wraps modulo 2^64
        _powers[kind] = table
    return table[:n]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial hashes over all 64 bits."""
    x = x ^ (x >> U64(30))
    x = x * U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> U64(27))
    x = x * U64(0x94D049BB133111EB)
    return x ^ (x >> U64(31))


def _buffer(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of the texts joined by "\\n", and the byte offset where each text starts (plus the end)."""
    joined = "\n".join(texts) + "\n"
    if joined.isascii():  # one encode; a text's length in bytes is its length in characters
        lens, raw = map(len, texts), joined.encode("ascii")
    else:
        encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
        lens, raw = map(len, encoded), b"\n".join(encoded) + b"\n"
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(lens, dtype=np.int64, count=len(texts)) + 1, out=starts[1:])
    return np.frombuffer(raw, dtype=np.uint8), starts


def _prefix_hash(data: np.ndarray) -> np.ndarray:
    """H[i] = sum_{j<i} (b_j + 1) P^j mod 2^64, so a span's hash is (H[e] - H[s]) * P^-s."""
    prefix = np.zeros(len(data) + 1, dtype=np.uint64)
    np.cumsum((data.astype(np.uint64) + U64(1)) * _pow_table("p", len(data)), out=prefix[1:])
    return prefix


def _span_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """64-bit hashes of the byte spans data[starts[i]:ends[i]]: equal bytes give equal hashes wherever they stand."""
    prefix = _prefix_hash(data)
    return mix64((prefix[ends] - prefix[starts]) * _pow_table("inv", len(data))[starts])


def token_hashes(texts: list[str], operators: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the tokens of each (already `prepare`d) text, by the token rule of filters/normalize.py.

    `operators=False` treats operator characters as separators (words and numbers only).
    """
    data, text_starts = _buffer(texts)
    cls = (_CLASS if operators else _WORDS_ONLY)[data]
    word = cls == 1
    prev_word = np.concatenate(([False], word[:-1]))
    next_word = np.concatenate((word[1:], [False]))
    op = cls == 2
    starts = np.flatnonzero((word & ~prev_word) | op)
    ends = np.flatnonzero((word & ~next_word) | op) + 1
    values = _span_hashes(data, starts, ends)
    offsets = np.searchsorted(starts, text_starts)
    return values, offsets


def char_ngram_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the UTF-8 byte n-grams of each text; a non-empty text shorter than n gives one gram (itself)."""
    data, text_starts = _buffer(texts)
    lens = np.diff(text_starts) - 1
    counts = np.where(lens >= n, lens - n + 1, (lens > 0).astype(np.int64))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    text_of = np.repeat(np.arange(len(texts)), counts)
    starts = text_starts[:-1][text_of] + (np.arange(offsets[-1]) - offsets[:-1][text_of])
    ends = np.minimum(starts + n, text_starts[:-1][text_of] + lens[text_of])
    values = _span_hashes(data, starts, ends)
    return values, offsets


def ngram_hashes(
    tokens: np.ndarray, offsets: np.ndarray, n: int, whole_if_short: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the n-grams of consecutive token hashes within each text.

    A text with 0 < len < n tokens gives one gram of all its tokens when `whole_if_short` (its hash equals that of
    the same tokens as a len-gram elsewhere), none otherwise.
    """
    if n > len(_GRAM_MULT):
        raise ValueError(f"n-gram size {n} exceeds the supported maximum {len(_GRAM_MULT)}")
    lens = np.diff(offsets)
    short = (lens > 0) & (lens < n) if whole_if_short else np.zeros(len(lens), dtype=bool)
    counts = np.where(lens >= n, lens - n + 1, short.astype(np.int64))
    out_offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(counts, out=out_offsets[1:])
    text_of = np.repeat(np.arange(len(lens)), counts)
    starts = offsets[:-1][text_of] + (np.arange(out_offsets[-1]) - out_offsets[:-1][text_of])
    size = np.minimum(n, lens[text_of])  # tokens in each gram
    ends = starts + size
    padded = np.concatenate((tokens, np.zeros(n, dtype=np.uint64)))
    acc = np.zeros(len(starts), dtype=np.uint64)
    for k in range(n):
        acc += np.where(starts + k < ends, padded[starts + k], U64(0)) * _GRAM_MULT[k]
    return mix64(acc ^ size.astype(np.uint64)), out_offsets


def ngram_hashes_by_size(
    tokens: np.ndarray, offsets: np.ndarray, sizes: list[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """`ngram_hashes(tokens, offsets, n, whole_if_short=False)` for every n in `sizes`, in one pass: the running sum
    over the window of every start position grows one token at a time and is read off at each wanted size (the same
    sum mod 2^64, so the same hashes), max(sizes) contiguous array passes instead of sum(sizes) gathers."""
    if max(sizes, default=0) > len(_GRAM_MULT):
        raise ValueError(f"n-gram size {max(sizes)} exceeds the supported maximum {len(_GRAM_MULT)}")
    lens = np.diff(offsets)
    text_of = np.repeat(np.arange(len(lens)), lens)
    room = offsets[1:][text_of] - np.arange(len(tokens))  # tokens from each position to the end of its text
    padded = np.concatenate((tokens, np.zeros(max(sizes, default=0), dtype=np.uint64)))
    acc = np.zeros(len(tokens), dtype=np.uint64)
    out = {}
    for k in range(max(sizes, default=0)):
        acc += padded[k : k + len(tokens)] * _GRAM_MULT[k]
        if k + 1 in sizes:
            starts = np.flatnonzero(room >= k + 1)
            counts = np.maximum(lens - k, 0)
            gram_offsets = np.zeros(len(lens) + 1, dtype=np.int64)
            np.cumsum(counts, out=gram_offsets[1:])
            out[k + 1] = mix64(acc[starts] ^ U64(k + 1)), gram_offsets
    return out


class MinHasher:
    """`bands` x `rows` MinHash functions h(x) = high 32 bits of (a x + b mod 2^64), a odd, from `seed`."""

    # grams per multiply-add block: its (hashes x chunk) uint64 buffer (8 MB at 128 hashes) stays in the L3 cache
    # beside another task's; at 16384 grams it did not, and signing was 2.5-3x slower (bench/minhash_sign.py)
    def __init__(self, bands: int, rows: int, seed: int, chunk: int = 8192):
        rng = np.random.default_rng(seed)
        self.bands, self.rows, self.chunk = bands, rows, chunk
        self.a = rng.integers(0, 2**63, size=bands * rows, dtype=np.uint64) * U64(2) + U64(1)
        self.b = rng.integers(0, 2**63, size=bands * rows, dtype=np.uint64)
        self.band_mult = rng.integers(0, 2**63, size=rows, dtype=np.uint64) * U64(2) + U64(1)

    def signatures(self, grams: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(texts, bands*rows) uint32 signatures; rows of texts without grams are all 0xFFFFFFFF."""
        n_texts = len(offsets) - 1
        sig = np.full((n_texts, len(self.a)), np.iinfo(np.uint64).max, dtype=np.uint64)
        nonempty = np.flatnonzero(np.diff(offsets) > 0)
        starts = offsets[:-1][nonempty]
        buf = np.empty((len(self.a), self.chunk), dtype=np.uint64)  # hashes x grams: reductions run along rows
        a, b = self.a[:, None], self.b[:, None]
        for lo in range(0, len(grams), self.chunk):
            hi = min(lo + self.chunk, len(grams))
            # texts overlapping [lo, hi): their local starts, clipped to the chunk
            first = np.searchsorted(starts, lo, side="right") - 1
            last = np.searchsorted(starts, hi, side="left")
            docs = nonempty[max(first, 0) : last]
            local = np.maximum(offsets[:-1][docs], lo) - lo
            phv = buf[:, : hi - lo]
            np.multiply(a, grams[None, lo:hi], out=phv)
            phv += b
            sig[docs] = np.minimum(sig[docs], np.minimum.reduceat(phv, local, axis=1).T)
        return (sig >> U64(32)).astype(np.uint32)

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(texts, bands) uint64 keys: equal keys <=> (almost surely) equal band of `rows` MinHash values."""
        grouped = sig.reshape(len(sig), self.bands, self.rows).astype(np.uint64)
        return mix64((grouped * self.band_mult).sum(axis=2, dtype=np.uint64))


def band_pairs(keys: np.ndarray, ids: np.ndarray, max_run: int = 64) -> np.ndarray:
    """Candidate pairs (id_a < id_b) of items with equal `keys` (one LSH band).

    A run of equal keys of up to `max_run` items gives all its pairs; a longer run (mass duplication) gives each
    member paired with the run's first member and with its predecessor, linear in the run length.
    """
    order = np.lexsort((ids, keys))
    k, i = keys[order], ids[order]
    same = np.flatnonzero(k[1:] == k[:-1]) + 1  # positions continuing a run
    if len(same) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    run_start = np.ones(len(k), dtype=bool)
    run_start[same] = False
    starts = np.flatnonzero(run_start)
    lengths = np.diff(np.append(starts, len(k)))
    head = np.repeat(starts, lengths)  # run start of every position
    run_len = np.repeat(lengths, lengths)
    found = [np.stack([i[head[same]], i[same]], axis=1), np.stack([i[same - 1], i[same]], axis=1)]
    small = same[run_len[same] <= max_run]  # positions in short runs: pair with every earlier member
    for d in range(2, int(run_len[small].max(initial=1))):
        pos = small[small - d >= head[small]]
        found.append(np.stack([i[pos - d], i[pos]], axis=1))
    return unique_pairs(np.concatenate(found))


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Sorted distinct (a, b) rows with a < b."""
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    pairs = pairs[order]
    keep = np.ones(len(pairs), dtype=bool)
    keep[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
    return pairs[keep]


def _sorted_per_text(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each text's values sorted in place of its span, and the text of each."""
    n = len(offsets) - 1
    text = np.repeat(np.arange(n, dtype=np.uint16 if n <= 1 << 16 else np.int64), np.diff(offsets))
    # sort by value, then stably by text: a 16-bit stable sort is a radix sort (1.7-2.3x lexsort's two merge sorts)
    by_value = np.argsort(values)
    order = by_value[np.argsort(text[by_value], kind="stable")]
    return values[order], text[order]


def _run_starts(values: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Where a run of equal values of one text begins, in sorted (text, value) order."""
    first = np.ones(len(values), dtype=bool)
    first[1:] = (values[1:] != values[:-1]) | (text[1:] != text[:-1])
    return first


def distinct_per_text(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each text's gram hashes sorted and without repeats (the set the Jaccard similarity is computed on)."""
    values, text = _sorted_per_text(values, offsets)
    keep = _run_starts(values, text)
    out = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(np.bincount(text[keep], minlength=len(offsets) - 1), out=out[1:])
    return values[keep], out


def multiset_hashes(items: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per list of strings, the sorted distinct hashes of its elements as a set in which the k-th occurrence of a
    string is an element of its own, so set intersection counts multiset intersection ((values, offsets) layout)."""
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, items), dtype=np.int64, count=len(items)), out=offsets[1:])
    flat = [s for strings in items for s in strings]
    if not flat:
        return np.zeros(0, dtype=np.uint64), offsets
    data, starts = _buffer(flat)
    values = _span_hashes(data, starts[:-1], starts[1:] - 1)  # each string without the "\n" after it
    values, text = _sorted_per_text(values, offsets)
    first = _run_starts(values, text)
    position = np.arange(len(values))
    k = position - np.maximum.accumulate(np.where(first, position, 0)) + 1  # occurrence number within the run
    return distinct_per_text(mix64(values ^ (k.astype(np.uint64) * _P)), offsets)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sets given as sorted unique arrays (reference for `pair_intersections`)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def segment_indices(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of `arange(starts[i], starts[i] + lens[i])` over i, without a Python loop."""
    starts, lens = np.asarray(starts, dtype=np.int64), np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    before = np.cumsum(lens) - lens  # output position where each segment starts
    return np.repeat(starts - before, lens) + np.arange(total, dtype=np.int64)


def pair_intersections(values: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|S_a & S_b| for every pair (a[i], b[i]) of sets S_j = values[offsets[j]:offsets[j + 1]] (each duplicate-free).

    Every member of every set, keyed by (set, value) as `mix64(value ^ salt[set])`, goes into one sorted table; the
    members of the smaller set of each pair are looked up under the other set's salt, sorted first so the binary
    searches walk the table in order (random-order lookups were 6x slower). A few array passes, no Python object per
    pair; exact unless two different (set, value) keys coincide (mix64 is a bijection: probability ~ lookups x
    table / 2^64, ~1e-6 for a chunk of 4M values).
    """
    lens = np.diff(offsets)
    swap = lens[b] > lens[a]  # look up the smaller set of each pair
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    salt = mix64(np.arange(len(lens), dtype=np.uint64) + _P)
    table = np.sort(mix64(values ^ np.repeat(salt, lens)))
    lb = lens[b]
    query = mix64(values[segment_indices(offsets[b], lb)] ^ np.repeat(salt[a], lb))
    order = np.argsort(query)
    query = query[order]
    if len(table) == 0:
        return np.zeros(len(a), dtype=np.int64)
    hit = table[np.minimum(np.searchsorted(table, query), len(table) - 1)] == query
    return np.bincount(np.repeat(np.arange(len(a)), lb)[order[hit]], minlength=len(a))


def components(edges: np.ndarray, n: int) -> np.ndarray:
    """Connected component of each of `n` nodes given `(E, 2)` edges, as its smallest member (vectorised
    union-find: hook every edge's larger root onto the smaller one, compress paths, repeat until no edge spans two
    roots)."""
    parent = np.arange(n, dtype=np.int64)
    a, b = edges[:, 0], edges[:, 1]
    while True:
        ra, rb = parent[a], parent[b]
        spans = ra != rb
        if not spans.any():
            return parent
        np.minimum.at(parent, np.maximum(ra, rb)[spans], np.minimum(ra, rb)[spans])
        while True:  # pointer jumping: every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def greedy_keep(
    edges: np.ndarray,
    rank: np.ndarray,
    keep: int = 1,
    similar: Callable[[int, int], bool] | None = None,
) -> np.ndarray:
    """Which nodes of a similarity graph to remove: visiting nodes best first (`rank[node]`, distinct, smaller =
    better), a node is removed when it is similar to `keep` or more already kept nodes, else kept.

    `edges`: `(E, 2)` node indices in `[0, len(rank))`. "Similar" means an edge, or, for a kept node that a removed
    neighbour was similar to, `similar(node, kept)` (checked on demand, so incomplete candidate lists still reach the
    kept documents). Returns, per node, -1 when kept, else the best kept node it is similar to. Unlike connected
    components, a chain A~B~C with A not similar to C removes only B: nothing is removed for its similarity to a
    removed document. Python work is per node (a CSR slice each), not per edge.
    """
    n = len(rank)
    both = np.concatenate((edges, edges[:, ::-1])) if len(edges) else np.zeros((0, 2), dtype=np.int64)
    both = both[np.lexsort((rank[both[:, 1]], both[:, 0]))]  # neighbours of a node come best first
    ptr = np.searchsorted(both[:, 0], np.arange(n + 1))
    adj = both[:, 1]
    state = np.full(n, -2, dtype=np.int64)  # -2 not visited yet, -1 kept, >= 0 removed (best kept match)
    similar_kept: dict[int, list[int]] = {}  # removed node -> the kept nodes it is similar to, best first
    for node in np.argsort(rank, kind="stable").tolist():
        nb = adj[ptr[node] : ptr[node + 1]]
        found = nb[state[nb] == -1].tolist()
        if similar is not None and len(found) < keep:
            via = nb[state[nb] >= 0].tolist()
            indirect = {k for m in via for k in similar_kept[m]} - set(found)
            found += [k for k in sorted(indirect, key=lambda k: rank[k]) if similar(node, k)]
        if len(found) >= keep:
            found.sort(key=lambda k: rank[k])
            similar_kept[node] = found
            state[node] = found[0]
        else:
            state[node] = -1
    return state


def lsh_threshold(bands: int, rows: int) -> float:
    """The similarity at which a pair becomes a candidate with probability ~1/2: (1/b)^(1/r)."""
    return (1 / bands) ** (1 / rows)
