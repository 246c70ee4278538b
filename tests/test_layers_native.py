"""The C pass over plain Ethernet/IP/TCP frames (wskreplay/formats/_layers.c) leaves the
decode exactly as the layer walk alone makes it: the same TCP segment columns, the same
report and the same encapsulation path ids, on every shared capture and ETL recording, on
the benchmark's generated capture, and on hypothesis-generated frames whose Ethernet,
IPv4, IPv6 and TCP headers sit on either side of every rule the walk applies."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wskreplay.formats import pcap
from wskreplay.formats.etl_packets import read_capture
from wskreplay.formats.layers import decode as decoding
from wskreplay.formats.layers.walk import Outcome, PathTable, Walk, WalkOptions
from wskreplay.formats.reference import accelerator

from .capgen import write_pcap, write_pcapng
from .conftest import REPO, SHARED_DATA
from .decode_oracle import both_decodes

sys.path.insert(0, str(REPO / "benchmarks"))
from gen_capture import generate  # noqa: E402

CAPTURES = sorted(p for p in SHARED_DATA.glob("*/*") if ".pcap" in p.name or p.suffix == ".etl") + [
    REPO / "traces" / "field.etl"
]


def assert_same_decode(frames: pcap.Frames, chunk: int = decoding.DECODE_CHUNK) -> dict:
    native, reference = both_decodes(frames, chunk)
    assert native == reference
    return native


def test_the_extension_is_built():
    assert accelerator("_layers") is not None


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
@pytest.mark.parametrize("chunk", [decoding.DECODE_CHUNK, 7])
def test_every_shared_capture(path, chunk):
    assert_same_decode(read_capture(str(path)), chunk)


def test_the_generated_benchmark_capture(tmp_path):
    path = tmp_path / "generated.pcap"
    generate(str(path), 20_000, seed=5, per_connection=50)
    assert len(assert_same_decode(pcap.read_frames(path), 4096)["columns"]["frame"][1]) > 19_000


def plain_frame(version: int) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", 1234, 80, 1, 2, 5 << 4, 0x18, 512, 0, 0) + b"data"
    if version == 4:
        ip = struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, bytes(4), bytes(4)
        )
        return bytes(12) + b"\x08\x00" + ip + tcp
    ip = struct.pack(">IHBB16s16s", 6 << 28, len(tcp), 6, 64, bytes(16), bytes(16))
    return bytes(12) + b"\x86\xdd" + ip + tcp


def test_the_pass_takes_plain_frames_and_leaves_the_rest(tmp_path):
    """Once the walk has named the paths, the pass takes the plain frames to TCP with the
    walk's columns and leaves a VLAN-tagged frame, an unnamed path and a cut header."""
    vlan = plain_frame(4)[:12] + b"\x81\x00\x00\x0a" + plain_frame(4)[12:]
    frames_in = [plain_frame(4), plain_frame(6), vlan, plain_frame(4)[:40]]
    path = tmp_path / "mixed.pcap"
    write_pcap(path, [(k, f) for k, f in enumerate(frames_in)])
    frames = pcap.read_frames(path)
    paths = PathTable()
    ethernet = paths.child(0, "ethernet")
    v4 = paths.child(ethernet, "ipv4")
    w = Walk(frames.buffer, decoding._initial_units(frames, 0, 4), paths, WalkOptions())
    decoding._take_plain_tcp(w, frames.buffer)
    assert w.u.code.tolist() == [Outcome.TCP, 16, 16, 16]
    assert w.u.path[0] == v4 and w.u.ip_path[0] == ethernet
    assert w.u.pos[0] == frames.offset[0] + 34
    assert w.u.src_lo[0] == 0xFFFF << 32 and w.u.ip_end[0] == frames.offset[0] + 58


def test_malformed_columns_are_refused():
    native = accelerator("_layers")
    n = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="code"):
        native.plain_tcp(b"", n, n, n, *(np.zeros(3, np.int32),) * 2, n, *(n,) * 4, 1, 2, 3)
    with pytest.raises(ValueError, match="end"):
        short = np.zeros(2, np.int64)
        code = np.zeros(3, np.int16)
        ids = np.zeros(3, np.int32)
        native.plain_tcp(b"", n, short, code, ids, ids, n, *(n,) * 4, 1, 2, 3)


def often(usual, *others):
    """The usual value three times in four, else one of the others."""
    return st.one_of(st.just(usual), st.just(usual), st.just(usual), st.sampled_from(others))


def _ipv4(draw, payload: bytes) -> bytes:
    ihl = draw(often(5, 6, 4, 0, 15))
    options = bytes(max(ihl - 5, 0) * 4)
    total_kind = draw(often("right", "zero", "short", "any"))
    right = 20 + len(options) + len(payload)
    total = {
        "right": right,
        "zero": 0,
        "short": draw(st.integers(0, max(ihl * 4 - 1, 0))),
        "any": draw(st.integers(0, 0xFFFF)),
    }[total_kind]
    version = draw(often(4, 6, 5))
    flags = draw(often(0, 0x4000, 0x8000, 0x2000, 0x0001, 0x2010))
    proto = draw(often(6, 17, 44, 0, 50))
    head = struct.pack(">BBHHHBBH", version << 4 | ihl, 0, total, 7, flags, 64, proto, 0) + draw(
        st.binary(min_size=8, max_size=8)
    )
    return head + options + payload


def _ipv6(draw, payload: bytes) -> bytes:
    length = draw(often(len(payload), 0, draw(st.integers(0, 0xFFFF))))
    version = draw(often(6, 4))
    nh = draw(often(6, 0, 44, 17, 59))
    addresses = draw(st.binary(min_size=32, max_size=32))
    return struct.pack(">IHBB", version << 28, length, nh, 64) + addresses + payload


@st.composite
def frames(draw) -> bytes:
    offset = draw(often(5, 6, 8, 15, 4, 0))
    tcp = (
        draw(st.binary(min_size=12, max_size=12))
        + bytes([offset << 4, draw(st.integers(0, 255))])
        + draw(st.binary(min_size=6, max_size=6))
        + bytes(max(offset - 5, 0) * 4)
        + draw(st.binary(max_size=24))
    )
    etype = draw(often(0x0800, 0x86DD, 0x86DD, 0x0800, 0x8100, 0x0806, 0x05DC, 0x88E5))
    if etype == 0x86DD:
        body = _ipv6(draw, tcp)
    elif etype == 0x8100:
        body = b"\x00\x0a\x08\x00" + _ipv4(draw, tcp)
    else:
        body = _ipv4(draw, tcp)
    frame = draw(st.binary(min_size=12, max_size=12)) + struct.pack(">H", etype) + body
    tcp_at = len(frame) - len(tcp)
    frame += draw(st.binary(max_size=6))
    cut = draw(often("none", "anywhere", "in the TCP header"))
    if cut == "anywhere":
        frame = frame[: draw(st.integers(0, len(frame)))]
    elif cut == "in the TCP header":
        frame = frame[: tcp_at + draw(st.integers(0, 20))]
    return frame


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(frames(), min_size=8, max_size=60),
    st.integers(1, 8),
    st.booleans(),
)
def test_generated_frames(tmp_path_factory, frame_list, chunk, as_pcapng):
    """Two plain frames first, so the walk names their paths in the first chunks and the
    C pass meets the generated frames in the later ones."""
    path = tmp_path_factory.mktemp("layers") / "generated.cap"
    first = [plain_frame(4), plain_frame(6)]
    packets = [(k * 1000, f) for k, f in enumerate(first + frame_list)]
    (write_pcapng if as_pcapng else write_pcap)(path, packets)
    assert_same_decode(pcap.read_frames(path), chunk)
