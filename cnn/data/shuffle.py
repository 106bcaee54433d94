"""The per-epoch training order: grain's ``index_shuffle`` permutation, computed for many positions at once.

``grain.experimental.index_shuffle(p, max_index=n - 1, seed=s, rounds=4)`` maps a position ``p`` to the
example read there: a Simon block cipher (block ``B = max(16, ceil(log2(n - 1)))`` bits rounded up to even,
round keys from C++'s ``std::seed_seq{s}``) applied until the value falls in ``[0, n)`` (cycle walking).
Grain computes one position per Python call (about 3.4 us each here, 0.2 s for a 60,000-example epoch);
``index_shuffle`` below runs the same cipher over a numpy array of positions (about 2 ms for the same epoch)
and gives the same numbers (``tests/data/test_shuffle.py`` compares them with grain's), so the order does
not depend on whether grain is installed.
"""

from __future__ import annotations

import functools
import math

import numpy as np

_MASK32 = 0xFFFFFFFF


def _seed_seq_generate(seed: int, count: int) -> list:
    """``std::seed_seq{seed}.generate(first, first + count)``: the C++ standard's algorithm ([rand.util.seedseq])."""
    v = [seed & _MASK32]
    s, n = len(v), count
    b = [0x8B8B8B8B] * n
    t = 11 if n >= 623 else 7 if n >= 68 else 5 if n >= 39 else 3 if n >= 7 else (n - 1) // 2
    p = (n - t) // 2
    q = p + t
    m = max(s + 1, n)

    def scramble(x: int) -> int:
        return (x ^ (x >> 27)) & _MASK32

    for k in range(m):
        r1 = (1664525 * scramble(b[k % n] ^ b[(k + p) % n] ^ b[(k - 1) % n])) & _MASK32
        r2 = (r1 + (s if k == 0 else k % n + v[k - 1] if k <= s else k % n)) & _MASK32
        b[(k + p) % n] = (b[(k + p) % n] + r1) & _MASK32
        b[(k + q) % n] = (b[(k + q) % n] + r2) & _MASK32
        b[k % n] = r2
    for k in range(m, m + n):
        r3 = (1566083941 * scramble((b[k % n] + b[(k + p) % n] + b[(k - 1) % n]) & _MASK32)) & _MASK32
        r4 = (r3 - k % n) & _MASK32
        b[(k + p) % n] ^= r3
        b[(k + q) % n] ^= r4
        b[k % n] = r4
    return b


@functools.lru_cache(maxsize=64)
def _cipher(max_index: int, seed: int, rounds: int) -> tuple:
    """(word bits, word mask, round keys) of the cipher grain uses for ``[0, max_index]``."""
    block = int(math.ceil(math.log2(max_index)))
    block = max(block + block % 2, 16)
    word = block // 2
    mask = (1 << word) - 1
    keys = tuple(np.uint64(key & mask) for key in _seed_seq_generate(seed, rounds))
    return np.uint64(word), np.uint64(mask), keys


def _encrypt(values: np.ndarray, word, mask, keys, rounds: int) -> np.ndarray:
    """One pass of grain's Simon cipher over uint64 ``values`` (blocks of two ``word``-bit halves)."""
    def rotl(x, r):
        r = np.uint64(r)
        return ((x << r) | (x >> (word - r))) & mask

    def mix(x):
        return (rotl(x, 1) & rotl(x, 8)) ^ rotl(x, 2)

    left, right = (values >> word) & mask, values & mask
    for i in range(0, rounds, 2):
        left = left ^ mix(right) ^ keys[i]
        right = right ^ mix(left) ^ keys[i + 1]
    return (left << word) | right


_SMALL = 2**14  # below this many examples the cipher's 2^16 block is walked as a whole table


@functools.lru_cache(maxsize=8)
def _small_order(max_index: int, seed: int, rounds: int) -> np.ndarray:
    """The whole order of a small epoch. Cycle walking would take ~65536 / n passes of the cipher per call
    (the block is never under 16 bits); instead the cipher maps every block value once and pointer jumping
    finds each value's first successor inside the epoch (at most 16 rounds over 65,536 entries)."""
    word, mask, keys = _cipher(max_index, seed, rounds)
    jump = _encrypt(np.arange(1 << (2 * int(word)), dtype=np.uint64), word, mask, keys, rounds)
    limit = np.uint64(max_index)
    while True:
        outside = jump > limit
        if not outside[:max_index + 1].any():
            return jump[:max_index + 1].astype(np.int64)
        jump = np.where(outside, jump[jump.astype(np.int64)], jump)


def index_shuffle(positions, *, max_index: int, seed: int, rounds: int = 4) -> np.ndarray:
    """int64 array: ``grain.experimental.index_shuffle(p, max_index=max_index, seed=seed, rounds=rounds)`` for
    every ``p`` in ``positions`` (integers in ``[0, max_index]``)."""
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size and (positions.min() < 0 or positions.max() > max_index):
        raise ValueError(f"positions must lie in [0, {max_index}]")
    if rounds < 4 or rounds % 2:
        raise ValueError(f"rounds={rounds}; expected an even number >= 4")
    if max_index == 0:
        return np.zeros_like(positions)
    seed = int(seed) & _MASK32
    if max_index < _SMALL:
        return _small_order(int(max_index), seed, int(rounds))[positions]
    word, mask, keys = _cipher(int(max_index), seed, int(rounds))
    flat = positions.reshape(-1).astype(np.uint64)
    out = np.empty_like(flat)
    pending, value = np.arange(flat.size), flat
    while pending.size:  # cycle walking: encrypt again until the value is a position of the epoch
        value = _encrypt(value, word, mask, keys, rounds)
        inside = value <= np.uint64(max_index)
        out[pending[inside]] = value[inside]
        pending, value = pending[~inside], value[~inside]
    return out.astype(np.int64).reshape(positions.shape)
