"""The C hashing of a stream's pieces (wskreplay/formats/_pieces.c) gives the digests and
the reports of what was read that the Python reference gives: on every shared capture
(the whole ``streams`` document, hashed on threads), on generated pieces, and it refuses
pieces outside the buffer before reading any."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.formats import pcap, pieces
from wskreplay.recorder import tcp

from .conftest import SHARED_DATA


def test_the_extension_is_built():
    assert pieces.pieces_accelerator() is not None


def streams_document(path, *, native: bool) -> dict:
    with pytest.MonkeyPatch.context() as m:
        if not native:
            m.setattr(pieces, "pieces_accelerator", lambda: None)
        return tcp.streams_summary(tcp.reassemble(pcap.read_frames(path)))


CAPTURES = sorted(p for p in SHARED_DATA.glob("*/*") if ".pcap" in p.name)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_shared_capture(path):
    try:
        python = streams_document(path, native=False)
    except Exception as exc:  # noqa: BLE001 - a refusal must be the same refusal
        with pytest.raises(type(exc), match="^" + re.escape(str(exc)) + "$"):
            streams_document(path, native=True)
        return
    assert streams_document(path, native=True) == python


def test_streams_are_hashed_on_threads(monkeypatch):
    """A shared capture of 284 connections hashed on four threads and on one: the same
    document."""
    path = SHARED_DATA / "replay" / "pcapplusplus__650HttpResponses.pcap"
    monkeypatch.setattr(tcp, "HASH_THREADS", 4)
    threaded = streams_document(path, native=True)
    assert len(threaded["connections"]) > 1
    monkeypatch.setattr(tcp, "HASH_THREADS", 1)
    assert streams_document(path, native=True) == threaded


def both(buffer: bytes, runs: list[tuple[list[int], list[int]]], overhead: int):
    """Digests and read reports of the C hashing and of the reference, for ``runs``."""
    results = []
    for native in (True, False):
        reads: list[int] = []
        with pytest.MonkeyPatch.context() as m:
            if not native:
                m.setattr(pieces, "pieces_accelerator", lambda: None)
            digests = pieces.sha256(
                memoryview(buffer),
                [(np.array(a, dtype=np.int64), np.array(n, dtype=np.int64)) for a, n in runs],
                overhead,
                reads.append,
            )
        results.append((digests, reads))
    return results


@st.composite
def scattered(draw):
    size = draw(st.integers(0, 4096))
    buffer = draw(st.binary(min_size=size, max_size=size))
    spans = draw(
        st.lists(st.tuples(st.integers(0, size), st.integers(0, size)).map(sorted), max_size=40)
    )
    return buffer, [a for a, _ in spans], [b - a for a, b in spans]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(scattered(), min_size=1, max_size=4),
    st.sampled_from([0, 1, 4096, 65536, pieces.READ_STEP]),
)
def test_generated_pieces(cases, overhead):
    """Runs of pieces over one buffer (the first case's), hashed in one call."""
    buffer = cases[0][0]
    runs = [
        ([a for a, n in zip(at, length, strict=True) if a + n <= len(buffer)],
         [n for a, n in zip(at, length, strict=True) if a + n <= len(buffer)])
        for _, at, length in cases
    ]  # fmt: skip
    native, python = both(buffer, runs, overhead)
    assert native == python
    for digest, (at, length) in zip(native[0], runs, strict=True):
        joined = b"".join(buffer[a : a + n] for a, n in zip(at, length, strict=True))
        assert digest == hashlib.sha256(joined).hexdigest()
    assert sum(native[1]) == sum(sum(n) + overhead * len(n) for _, n in runs)


def test_reads_are_reported_every_step():
    buffer = bytes(range(256)) * 64
    at = list(range(0, 16384, 16))
    native, python = both(buffer, [(at, [16] * len(at))], pieces.READ_STEP // 100)
    assert native == python
    assert len(native[1]) == 11 and all(r >= pieces.READ_STEP for r in native[1][:-1])


def test_no_runs_and_empty_runs():
    assert both(b"abc", [], 0) == [([], []), ([], [])]
    native, python = both(b"abc", [([], []), ([0], [3]), ([], [])], 5)
    assert native == python
    assert native[0][0] == native[0][2] == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("at", "length", "bounds", "error", "message"),
    [
        ([0, 100], [10, 1], [0, 2], ValueError, r"piece 1 \(1 bytes at 100\) outside the source"),
        ([-1], [1], [0, 1], ValueError, r"piece 0 \(1 bytes at -1\) outside the source"),
        ([0], [-1], [0, 1], ValueError, "outside the source"),
        ([0, 1], [1], [0, 1], ValueError, "differ in size"),
        ([0, 1], [1, 1], [0, 1], ValueError, "bounds must run from 0 to the number of pieces"),
        ([0, 1], [1, 1], [1, 2], ValueError, "bounds must run from 0 to the number of pieces"),
        ([0, 1], [1, 1], [], ValueError, "bounds must run from 0 to the number of pieces"),
        ([0, 1], [1, 1], [0, 2, 1, 2], ValueError, "bounds 1 and 2 out of order"),
    ],
)
def test_pieces_outside_the_buffer_or_bad_bounds_are_refused(at, length, bounds, error, message):
    native = pieces.pieces_accelerator()
    reads: list[int] = []
    with pytest.raises(error, match=message):
        native.sha256(
            bytes(100),
            np.array(at, np.int64),
            np.array(length, np.int64),
            np.array(bounds, np.int64),
            0,
            1,
            reads.append,
        )
    assert reads == []


def test_vectors_must_be_int64():
    native = pieces.pieces_accelerator()
    one = np.zeros(1, np.int64)
    with pytest.raises(TypeError, match="at: expected a vector of int64"):
        native.sha256(bytes(8), np.zeros(1, np.int32), one, np.array([0, 1]), 0, 1, print)


def test_an_error_in_the_read_report_stops_the_hash():
    def refuse(cost: int) -> None:
        raise OSError(f"cannot release after {cost}")

    with pytest.raises(OSError, match="cannot release after 20"):
        pieces.sha256(memoryview(bytes(64)), [(np.array([0, 10]), np.array([10, 10]))], 0, refuse)
