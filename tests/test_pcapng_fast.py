"""The numpy pcapng walk (wskreplay/formats/pcapng_fast.py) gives exactly what the
block-at-a-time reference gives: the same frames, interfaces, comments and error, on every
shared pcapng capture and on generated files with every block kind, option, resolution
and offset, whole and damaged (``WSKREPLAY_PURE_PYTHON=1`` selects the reference); on the
generated files, with the EPB runs followed by the C walk and by its Python loop."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.formats import pcap, pcapng_fast

from .conftest import SHARED_DATA

COLUMNS = ("time_ns", "interface", "linktype", "offset", "caplen", "origlen", "direction")


def read_outcome(path) -> object:
    """What reading ``path`` gives: the frames' columns, interfaces, comments, error and
    wrapped times, or the refusal."""
    try:
        frames = pcap.read_frames(path)
    except Exception as exc:  # noqa: BLE001 - a refusal is compared too
        return type(exc).__name__, str(exc)
    return (
        [getattr(frames, c).tolist() for c in COLUMNS],
        frames.interfaces,
        frames.comments,
        str(frames.error),
        frames.wrapped_times,
    )


def both_ways(path, monkeypatch) -> tuple[object, object]:
    out = []
    for pure in ("1", "0"):
        monkeypatch.setenv("WSKREPLAY_PURE_PYTHON", pure)
        out.append(read_outcome(path))
    return out[0], out[1]


@pytest.mark.parametrize(
    "path",
    sorted(p for p in SHARED_DATA.glob("*/*") if ".pcapng" in p.name),
    ids=lambda p: p.name,
)
def test_every_shared_pcapng_capture(path, monkeypatch):
    reference, fast = both_ways(path, monkeypatch)
    assert fast == reference


def block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = len(body) + 12
    return struct.pack("<II", btype, size) + body + struct.pack("<I", size)


def option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(comment: str | None) -> bytes:
    opts = option(1, comment.encode()) + option(0, b"") if comment else b""
    return block(pcap.PCAPNG_SHB, struct.pack("<IHHq", pcap.PCAPNG_BOM, 1, 0, -1) + opts)


def idb(linktype: int, tsresol: int | None, tsoffset: int | None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += option(9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(14, struct.pack("<q", tsoffset))
    if opts:
        opts += option(0, b"")
    return block(pcap.PCAPNG_IDB, struct.pack("<HHI", linktype, 0, 0) + opts)


def epb(ifid: int, ticks: int, data: bytes, flags: int | None) -> bytes:
    body = struct.pack("<IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data) + 3)
    body += data + b"\0" * (-len(data) % 4)
    if flags is not None:
        body += option(2, struct.pack("<I", flags)) + option(0, b"")
    return block(pcap.PCAPNG_EPB, body)


def damaged(body: bytes, data: st.DataObject) -> bytes:
    """``body`` whole, cut short, or with one byte changed, as hypothesis draws it."""
    how = data.draw(st.sampled_from(["whole", "cut", "flip"]))
    at = data.draw(st.integers(0, len(body) - 1))
    if how == "cut":
        return body[:at]
    if how == "flip":
        return body[:at] + bytes([body[at] ^ data.draw(st.integers(1, 255))]) + body[at + 1 :]
    return body


blocks = st.one_of(
    st.builds(
        idb,
        st.sampled_from([1, 101, 127]),
        st.none() | st.sampled_from([3, 6, 9, 12, 0x80 | 20, 19]),
        st.none() | st.integers(-(1 << 40), 1 << 40),
    ),  # fmt: skip
    st.builds(
        epb,
        st.integers(0, 3),
        st.integers(0, (1 << 64) - 1) | st.integers(0, 1 << 52),
        st.binary(max_size=40),
        st.none() | st.integers(0, 3),
    ),  # fmt: skip
    st.builds(lambda d: block(3, struct.pack("<I", len(d)) + d), st.binary(max_size=20)),
    st.builds(lambda d: block(0x0BAD, d), st.binary(max_size=20)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.none() | st.text(max_size=10), st.lists(blocks, max_size=12), st.data(), st.integers(1, 300)
)
def test_generated_files_whole_and_damaged(tmp_path_factory, comment, parts, data, slice_bytes):
    """The C run takes the file a slice of ``slice_bytes`` at a time (64 MiB in use), so
    that blocks straddle the slices' ends."""
    body = damaged(shb(comment) + idb(1, None, None) + b"".join(parts), data)
    path = tmp_path_factory.mktemp("ng") / "x.pcapng"
    path.write_bytes(body)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(pcap, "WALK_SLICE_BYTES", slice_bytes)
        reference, fast = both_ways(path, monkeypatch)
        monkeypatch.setattr(pcapng_fast, "walk_accelerator", lambda: None)
        fast_without_c = read_outcome(path)
    assert fast == reference
    assert fast_without_c == fast, "the fast walk's C run and its Python loop differ"


@pytest.mark.parametrize("slice_bytes", [1, 100, 1000, 64 << 20])
def test_the_fast_walk_takes_a_plain_file(monkeypatch, slice_bytes):
    """It is the path taken where it can be (not a fallback to the reference for all),
    however small the slices the C run takes the file in."""
    from wskreplay.formats.pcapng_fast import walk_pcapng_fast

    monkeypatch.setattr(pcap, "WALK_SLICE_BYTES", slice_bytes)
    body = shb("hi") + idb(1, None, None) + b"".join(epb(0, 10**15 + i, b"x" * i, None)
                                                   for i in range(50))  # fmt: skip
    cols = pcap._Columns()
    interfaces: list = []
    comments: list = []
    assert walk_pcapng_fast("x", memoryview(body), cols, interfaces, comments, lambda: None)
    assert np.array_equal(cols.ts, (10**15 + np.arange(50)) * 1000)
    assert comments == ["hi"] and len(interfaces) == 1
