"""The capture reader's details, and pcapng written by wskreplay as Wireshark reads it."""

from __future__ import annotations

import gzip
import subprocess

import numpy as np
import pytest

from wskreplay.errors import InputError
from wskreplay.formats import pcap

from . import capgen
from .conftest import SHARED_DATA

CAPTURES = sorted((SHARED_DATA / "pcap").glob("*"))


def tshark_frames(path, *fields: str) -> list[list[str]]:
    args = ["tshark", "-r", str(path), "-o", "frame.generate_md5_hash:TRUE", "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_written_pcapng_reads_back_in_tshark_identically(path, tmp_path):
    frames = pcap.read_frames(path)
    out = tmp_path / "out.pcapng"
    pcap.write_pcapng(out, frames, comment="written by wskreplay tests")
    fields = ("frame.md5_hash", "frame.len", "frame.cap_len", "frame.time_epoch")
    original = tshark_frames(path, *fields)[: len(frames)]
    written = tshark_frames(out, *fields)
    assert len(written) == len(frames) == len(original)
    for ours, theirs in zip(written, original, strict=True):
        assert ours[:3] == theirs[:3]
    if not frames.wrapped_times:
        assert [w[3] for w in written] == [o[3] for o in original]
        assert [int(w[3].replace(".", "")) for w in written] == frames.time_ns.tolist()


def test_direction_flags_and_comments(tmp_path):
    out = tmp_path / "dir.pcapng"
    frame = capgen.tcp_frame(
        capgen.Endpoint("192.0.2.1", 1), capgen.Endpoint("192.0.2.2", 2), 1, 0, 2
    )
    with open(out, "wb") as f:
        w = pcap.PcapngWriter(f)
        w.packet(
            1_700_000_000_000_000_001, 1, frame, direction=pcap.DIRECTION_OUT, comment="call 7"
        )
        w.packet(1_700_000_000_000_000_002, 1, frame, direction=pcap.DIRECTION_IN)
        w.packet(1_700_000_000_000_000_003, 101, frame[14:])
    rows = tshark_frames(out, "frame.packet_flags_direction", "frame.comment", "frame.time_epoch")
    assert [r[0] for r in rows] == ["0x00000002", "0x00000001", ""]
    assert rows[0][1] == "call 7"
    assert rows[2][2] == "1700000000.000000003"
    back = pcap.read_frames(out)
    assert back.direction.tolist() == [2, 1, 0] and back.linktype.tolist() == [1, 1, 101]


def test_interfaces_resolutions_and_offsets():
    multi = pcap.read_frames(SHARED_DATA / "pcap" / "zeek__pcapng-multi-interface.pcapng")
    assert {i.tsresol for i in multi.interfaces} == {10**6, 10**9}
    many = pcap.read_frames(SHARED_DATA / "pcap" / "pcapplusplus__many_interfaces-1.pcapng")
    assert len(many.interfaces) == 11 and set(many.linktype.tolist()) == {0, 1}


def test_pcapng_if_tsoffset_and_power_of_two_resolution(tmp_path):
    import struct

    def block(btype, body):
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    opts = (
        struct.pack("<HH", 9, 1)
        + bytes([0x80 | 10])
        + b"\0\0\0"
        + struct.pack("<HHq", 14, 8, 1000)
        + struct.pack("<HH", 0, 0)
    )
    data = (
        block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
        + block(1, struct.pack("<HHI", 1, 0, 0) + opts)
        + block(6, struct.pack("<IIIII", 0, 0, 3 * 1024, 4, 4) + b"abcd")
    )
    path = tmp_path / "res.pcapng"
    path.write_bytes(data)
    frames = pcap.read_frames(path)
    assert frames.time_ns.tolist() == [1000 * 10**9 + 3 * 10**9]


def test_gzip_capture_equals_its_content(tmp_path):
    plain = SHARED_DATA / "pcap" / "zeek__tcp_ssh-dups.pcap"
    gz = tmp_path / "ssh.pcap.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = pcap.read_frames(plain), pcap.read_frames(gz)
    assert np.array_equal(a.time_ns, b.time_ns) and np.array_equal(a.caplen, b.caplen)
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(gz.read_bytes()[: len(gz.read_bytes()) // 2])
    partial = pcap.read_frames(cut)
    assert partial.error is not None and 0 < len(partial) < len(a)


def test_snaplen_cut_frames_are_data_the_capture_lacks():
    frames = pcap.read_frames(SHARED_DATA / "pcap" / "zeek__tcp_truncated-header.pcap")
    assert (
        frames.error is None
        and np.all(frames.caplen <= 68)
        and np.all(frames.origlen > frames.caplen)
    )


@pytest.mark.parametrize(
    "data, what",
    [
        (b"", "too short"),
        (b"\xd4\xc3\xb2\xa1" + b"\0" * 10, "pcap file header cut short"),
        (b"\x0a\x0d\x0d\x0a" + b"\0" * 30, "bad byte-order magic"),
    ],
)
def test_malformed_headers(tmp_path, data, what):
    path = tmp_path / "bad.pcap"
    path.write_bytes(data)
    try:
        frames = pcap.read_frames(path)
    except InputError as exc:
        assert what in str(exc)
    else:
        assert frames.error is not None and what in str(frames.error)
