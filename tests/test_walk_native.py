"""The C loops of the capture walks (wskreplay/formats/_walk.c) find exactly the records and
blocks the Python loops find: every shared capture, generated pcap files whole, cut and
damaged, both byte orders and resolutions (generated pcapng files: tests/test_pcapng_fast.py)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.formats import pcap, pcapng_fast

from .conftest import SHARED_DATA
from .test_pcapng_fast import damaged, epb, idb, read_outcome, shb


def both_loops(path) -> tuple[object, object]:
    native = read_outcome(path)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pcap, "walk_accelerator", lambda: None)
        m.setattr(pcapng_fast, "walk_accelerator", lambda: None)
        python = read_outcome(path)
    return native, python


def test_the_extension_is_built():
    assert pcap.walk_accelerator() is not None


@pytest.mark.parametrize(
    "path",
    sorted(p for p in SHARED_DATA.glob("*/*") if ".pcap" in p.name),
    ids=lambda p: p.name,
)
def test_every_shared_capture(path):
    native, python = both_loops(path)
    assert native == python


def pcap_file(big: bool, nano: bool, records: list[tuple[int, int, bytes, int]]) -> bytes:
    e = ">" if big else "<"
    magic = pcap.PCAP_MAGIC_NS if nano else pcap.PCAP_MAGIC_US
    head = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    return head + b"".join(
        struct.pack(e + "IIII", sec, frac, len(data), len(data) + extra) + data
        for sec, frac, data, extra in records
    )


records = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.integers(0, 1_100_000_000),
        st.binary(max_size=60),
        st.integers(0, 5),
    ),  # fmt: skip
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.booleans(), records, st.data(), st.integers(1, 400))
def test_generated_pcap_whole_and_damaged(tmp_path_factory, big, nano, recs, data, slice_bytes):
    """Whole files and damaged ones, the C walk taking the file a slice of ``slice_bytes``
    at a time (64 MiB in use), so that records and headers straddle the slices' ends."""
    body = damaged(pcap_file(big, nano, recs), data)
    path = tmp_path_factory.mktemp("pcap") / "x.pcap"
    path.write_bytes(body)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pcap, "WALK_SLICE_BYTES", slice_bytes)
        native, python = both_loops(path)
    assert native == python


@pytest.mark.parametrize(
    "path",
    sorted(p for p in SHARED_DATA.glob("*/*") if ".pcap" in p.name and ".pcapng" not in p.name),
    ids=lambda p: p.name,
)
def test_every_shared_pcap_a_few_kilobytes_at_a_time(path, monkeypatch):
    expected = read_outcome(path)
    monkeypatch.setattr(pcap, "WALK_SLICE_BYTES", 3000)
    assert read_outcome(path) == expected


def test_pcapng_pages_are_released_every_65536_blocks(monkeypatch, tmp_path):
    """The C run, the fast walk's Python loop and the reference walk each release the
    mapped pages every 65,536 blocks (the gathers after the fast walk's Python loop release
    too), and once more at the end."""
    path = tmp_path / "many.pcapng"
    path.write_bytes(shb(None) + idb(1, None, None) + epb(0, 1, b"", None) * 200_000)
    releases = {}
    for name, native in (("c", pcap.walk_accelerator()), ("python", None), ("reference", None)):
        calls: list[int] = []
        monkeypatch.setattr(pcap, "_release", lambda keep, calls=calls: calls.append(1))
        monkeypatch.setattr(pcapng_fast, "walk_accelerator", lambda native=native: native)
        monkeypatch.setenv("WSKREPLAY_PURE_PYTHON", "1" if name == "reference" else "0")
        assert len(pcap.read_frames(path)) == 200_000
        releases[name] = len(calls)
    assert releases == {"c": 3 + 1, "python": 3 + 4 + 1, "reference": 3 + 1}


def test_pages_are_released_every_65536_records():
    body = memoryview(pcap_file(False, False, [(1, 0, b"", 0)] * 200_000))
    calls = []
    records = pcap.walk_accelerator().pcap_records(body, 24, False, lambda: calls.append(1))
    python = pcap._record_starts(body, 24, "<", lambda: calls.append(2))
    assert len(records) == 5 * 8 * 200_000 and len(python) == 200_000
    assert calls == [1, 1, 1, 2, 2, 2]
