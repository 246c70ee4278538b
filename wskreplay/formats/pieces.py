"""The sha256 of a stream whose bytes are scattered pieces of a buffer (its payloads inside
a mapped capture).

``formats/_pieces.c`` hashes the pieces of many streams in one call, with OpenSSL and the
GIL released, so that the streams of a capture can be hashed on several threads; Python
would make one ``update`` call a piece (454,000 for a 682,000-packet capture), and a call
a stream (200,000 for a capture of 100,000 short connections). Without it
(not built, or ``WSKREPLAY_PURE_PYTHON=1``) each piece is hashed in Python: the
reference, which a test keeps identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from wskreplay.formats.layers.decode import JoinedBuffer
from wskreplay.formats.reference import accelerator

READ_STEP = 8 << 20
"""How much reading a caller is told about at a time (``sha256``'s ``read``)."""


def pieces_accelerator() -> Any:
    """The C hashing of pieces (``formats/_pieces.c``), or None: not built, or the
    reference asked for."""
    return accelerator("_pieces")


def sha256(
    buffer: memoryview | JoinedBuffer,
    runs: list[tuple[np.ndarray, np.ndarray]],
    overhead: int,
    read: Callable[[int], None],
) -> list[str]:
    """For each run ``(at, length)`` of pieces, the hex sha256 of ``buffer[at[i] : at[i] +
    length[i]]`` over its pieces in order.

    ``read(cost)`` is called whenever the pieces hashed since its last call cost at least
    READ_STEP, and at the end of each run for the rest: a piece costs its length plus
    ``overhead`` (the pages the kernel maps around a read of a mapped file), so that a
    caller can release pages by what the reads may have mapped."""
    native = pieces_accelerator()
    if native is None or isinstance(buffer, JoinedBuffer):
        return [sha256_reference(buffer, at, length, overhead, read) for at, length in runs]
    sizes = [len(at) for at, _ in runs]
    bounds = np.zeros(len(runs) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    empty = np.empty(0, np.int64)
    at = np.concatenate([r[0] for r in runs], dtype=np.int64) if runs else empty
    length = np.concatenate([r[1] for r in runs], dtype=np.int64) if runs else empty
    digests = native.sha256(buffer, at, length, bounds, overhead, READ_STEP, read)
    return [d.hex() for d in digests]


def sha256_reference(
    buffer: memoryview | JoinedBuffer,
    at: np.ndarray,
    length: np.ndarray,
    overhead: int,
    read: Callable[[int], None],
) -> str:
    """One run of ``sha256`` in Python, a piece at a time: the reference the C twin is
    tested against."""
    h = hashlib.sha256()
    cost = 0
    for a, n in zip(at.tolist(), length.tolist(), strict=True):
        h.update(buffer[a : a + n])
        cost += n + overhead
        if cost >= READ_STEP:
            read(cost)
            cost = 0
    if cost:
        read(cost)
    return h.hexdigest()


def copy(target: Any, to: np.ndarray, source: Any, at: np.ndarray, length: np.ndarray) -> None:
    """``target[to[i] : to[i] + length[i]] = source[at[i] : at[i] + length[i]]`` for every
    piece; a piece outside either buffer is a ValueError before anything is copied."""
    native = pieces_accelerator()
    if native is None or isinstance(source, JoinedBuffer):
        copy_reference(target, to, source, at, length)
        return
    as64 = [np.ascontiguousarray(v, dtype=np.int64) for v in (to, at, length)]
    native.copy(target, as64[0], source, as64[1], as64[2])


def copy_reference(
    target: Any, to: np.ndarray, source: Any, at: np.ndarray, length: np.ndarray
) -> None:
    """``copy`` a piece at a time in Python: the reference of the C twin."""
    pieces = list(zip(to.tolist(), at.tolist(), length.tolist(), strict=True))
    for t, a, n in pieces:
        if min(t, a, n) < 0 or a + n > len(source) or t + n > len(target):
            raise ValueError(f"piece ({n} bytes from {a} to {t}) is outside its buffers")
    for t, a, n in pieces:
        target[t : t + n] = source[a : a + n]
