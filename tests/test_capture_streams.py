"""`streams` of a large capture a window at a time: the same document and the same dumped
files as reassembling the whole capture at once, on every shared capture, with windows and
decode chunks small enough that connections span many of them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from wskreplay.errors import InputError, OutputError
from wskreplay.formats import pcap
from wskreplay.formats.etl_packets import read_capture
from wskreplay.recorder import capture_streams
from wskreplay.recorder.capture_streams import PARTIAL_DUMP, streams_of_file
from wskreplay.recorder.capture_streams import capture_streams as streams_of
from wskreplay.recorder.tcp import CaptureOptions

from .conftest import SHARED_DATA

CAPTURES = sorted(
    p for p in SHARED_DATA.glob("*/*") if ".pcap" in p.name or p.name == "demikernel__PktMon.etl"
)
SMALL = {"window_segments": 50, "decode_chunk": 7}
"""Windows of 50 segments, decode chunks of 7 frames: connections straddle both."""


def whole(path: Path, dump_dir: Path | None = None) -> capture_streams.CaptureStreams:
    return streams_of(
        read_capture(str(path)),
        CaptureOptions(),
        str(dump_dir) if dump_dir else None,
        windowed_frames=1 << 40,
    )


def windowed(path: Path, dump_dir: Path | None = None, **sizes: int):
    return streams_of(
        read_capture(str(path)),
        CaptureOptions(),
        str(dump_dir) if dump_dir else None,
        windowed_frames=0,
        **(sizes or SMALL),
    )


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_windows_give_the_whole_captures_document(path):
    assert windowed(path).document == whole(path).document


def in_slices(path: Path, dump_dir: Path | None = None, **sizes: int):
    """``streams`` of ``path`` as the command reads a large pcap: a slice of the file at a
    time (``pcap.FrameSlices``; pcapng and .etl files are read whole)."""
    return streams_of_file(
        str(path),
        CaptureOptions(),
        str(dump_dir) if dump_dir else None,
        windowed_file_bytes=0,
        **(sizes or SMALL),
    )


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_a_capture_read_in_slices_gives_the_whole_captures_document(path, monkeypatch):
    """Slices of 3,000 bytes of file (64 MiB in use): frames are numbered across slices,
    fragments complete in a later slice than they began, damage ends the last slice; pcap
    and pcapng files are sliced (the pcapng files the fast walk takes)."""
    monkeypatch.setattr(pcap, "WALK_SLICE_BYTES", 3000)
    assert (pcap.frame_slices(str(path)) is not None) == (".pcap" in path.name)
    expected = whole(path)
    got = in_slices(path)
    assert got.document == expected.document
    assert str(got.frames.error) == str(expected.frames.error)


def test_pcapng_files_the_fast_walk_cannot_vouch_for_are_read_whole():
    """A pcapng file with a block only the reference walk reads (here: big-endian) is
    not sliceable: its slices stop at once, and ``streams`` reads it whole instead."""
    path = SHARED_DATA / "pcap" / "gopacket__be_test901.pcapng"
    sliced = pcap.frame_slices(str(path))
    assert sliced is not None
    with pytest.raises(pcap.NotSliceable):
        list(sliced)
    got = in_slices(path)
    assert got.document == whole(path).document and len(got.frames) > 0
    plain = SHARED_DATA / "pcap" / "pcapplusplus__many_interfaces-1.pcapng"
    assert sum(len(f) for f in pcap.frame_slices(str(plain))) == len(read_capture(str(plain)))


@pytest.mark.parametrize(
    "name",
    [
        "pcap/zeek__tcp_reassembly.pcap",
        "replay/zeek__tunnels_gtp_gtp1_gn_normal_incl_fragmentation.pcap",
    ],
)
def test_windows_of_one_segment_and_chunks_of_one_frame(name):
    path = SHARED_DATA / name
    got = windowed(path, window_segments=1, decode_chunk=1).document
    assert got == whole(path).document


def test_the_windows_are_used_and_connections_carried_across_them(monkeypatch):
    """The equality above is not that of one window: on a capture of 284 connections, the
    windows close connections in many steps and carry open ones into the next."""
    closes: list[tuple[int, int]] = []
    real_close = capture_streams._Windowed._close

    def counting(self, table, rows_seq, k, last_part, decoding):
        carried, _ = real_close(self, table, rows_seq, k, last_part, decoding)
        closes.append((len(table), len(carried)))
        return carried, _

    monkeypatch.setattr(capture_streams._Windowed, "_close", counting)
    doc = windowed(SHARED_DATA / "replay" / "pcapplusplus__650HttpResponses.pcap").document
    assert len(doc["connections"]) == 284
    assert len(closes) >= 10
    assert sum(1 for _, carried in closes if carried) >= 5


@pytest.mark.parametrize(
    "name",
    [
        "replay/pcapplusplus__650HttpResponses.pcap",
        "replay/zeek__tunnels_gtp_gtp1_gn_normal_incl_fragmentation.pcap",
        "replay/zeek__erspan.pcap",
        "pcap/zeek__http_1000-requests-one-dropped-response.pcap.gz",
    ],
)
def test_windows_dump_the_same_files(name, tmp_path):
    path = SHARED_DATA / name
    expected = whole(path, tmp_path / "whole")
    got = windowed(path, tmp_path / "windowed")
    names = sorted(os.path.basename(p) for p in expected.dumped)
    assert sorted(os.path.basename(p) for p in got.dumped) == names
    assert sorted(os.listdir(tmp_path / "windowed")) == names
    for n in names:
        assert (tmp_path / "windowed" / n).read_bytes() == (tmp_path / "whole" / n).read_bytes()


def test_the_connection_limit_holds_in_windows():
    path = SHARED_DATA / "replay" / "pcapplusplus__650HttpResponses.pcap"
    with pytest.raises(InputError, match="284 TCP connections, more than the limit of 283"):
        streams_of(read_capture(str(path)), CaptureOptions(max_connections=283), windowed_frames=0)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_mount(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


SMB = SHARED_DATA / "replay" / "zeek__smb_smb2_100_small_files.pcap"


@needs_root
def test_a_full_temporary_folder_is_an_error_naming_it(small_mount, monkeypatch):
    """The decoded segments go to TMPDIR: one too small for them stops the command with
    one line naming it."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(small_mount))
    with pytest.raises(OutputError) as err:
        streams_of(read_capture(str(SMB)), CaptureOptions(), windowed_frames=0)
    assert str(small_mount) in str(err.value)
    assert "cannot spill decoded segments: No space left on device" in str(err.value)


@needs_root
def test_a_dump_cut_short_leaves_no_file_under_a_temporary_name(small_mount, tmp_path):
    """A connection's files are named by its place in the document once every connection
    is known; a dump that fails before then removes what it had written."""
    with pytest.raises(OSError, match="No space left"):
        windowed(SMB, small_mount / "dump")
    assert not [p for p in (small_mount / "dump").iterdir() if p.name.startswith(PARTIAL_DUMP)]
    assert whole(SMB).document == windowed(SMB, tmp_path / "dump").document


def test_a_segment_from_fragments_keeps_its_place_among_its_connections_rows(tmp_path):
    """A connection seen mid-way (no SYN) whose first segment came in IP fragments: the
    fragments' datagram is decoded after every chunk, and its segment must still be the
    connection's first row, as in the whole decode: that row's sender is the client."""
    from . import capgen
    from . import rewrap as rw

    server, client = capgen.Endpoint("10.0.0.2", 445), capgen.Endpoint("10.0.0.1", 50000)
    first = capgen.tcp_frame(server, client, 1000, 5000, 0x18, bytes(range(200)))
    frames = [(k, rw.ethernet(0x0800, p)) for k, p in enumerate(rw.fragment_ipv4(first[14:]))]
    for k in range(40):
        data = capgen.tcp_frame(client, server, 5000 + 10 * k, 1200, 0x18, b"c" * 10)
        frames.append((100 + k, data))
    path = tmp_path / "mid-way.pcap"
    capgen.write_pcap(path, frames)
    expected = whole(path).document
    assert expected["connections"][0]["client"] == "10.0.0.2:445"
    assert windowed(path).document == expected
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pcap, "WALK_SLICE_BYTES", 100)
        assert in_slices(path).document == expected
