"""Hostile traces: every length is bounded, every bad value is a one-line error."""

from __future__ import annotations

import io
import struct
import zlib

import msgpack
import pytest
import zstandard

from wskreplay.errors import InputError
from wskreplay.formats.wskt import (
    BLOCK_HEADER,
    BLOCK_SYNC,
    MAX_BLOCK_ROWS,
    BlockType,
    BlockWriter,
    file_header,
    pack_body,
)
from wskreplay.trace import read_trace, verify

from .conftest import assert_one_line_error, run_cli

META = pack_body({"metadata": {}, "clock": {"zero_utc_ns": 0, "type": "qpc"}, "redacted": False})


def _file(tmp_path, blocks, entries=None, name="h.wskt"):
    buf = io.BytesIO()
    w = BlockWriter(buf)
    w.write(BlockType.META, META, {})
    for i, (btype, body) in enumerate(blocks):
        w.write(
            btype,
            body if isinstance(body, bytes) else pack_body(body),
            (entries or {}).get(
                i, {"n": 0, "k0": 0, "k1": 0, "t0": 0, "t1": 0, "s": [], "sd": 0, "so": 0, "sn": 0}
            ),
        )
    w.finish()
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return path


def test_constant_columns_cannot_claim_unbounded_rows(tmp_path):
    cols = {"seq": {"w": 0, "b": 1}}
    path = _file(tmp_path, [(BlockType.CALLS, {"n": MAX_BLOCK_ROWS + 1, "cols": cols, "ctl": b""})])
    with pytest.raises(InputError, match="row count"):
        read_trace(path)
    assert_one_line_error(run_cli("info", str(path)), str(path), "row count")


def test_a_huge_gap_is_refused_before_any_allocation(tmp_path):
    chunk = {"s": 0, "d": 0, "o": 0, "n": 1 << 60, "gap": True}
    path = _file(
        tmp_path,
        [(BlockType.STREAM, chunk)],
        {0: {"s": [0], "sd": 0, "so": 0, "sn": 1 << 60, "k": "gap"}},
    )
    with pytest.raises(InputError, match="bytes of gaps"):
        read_trace(path)


def test_malformed_index_entries_are_index_damage(tmp_path):
    path = _file(
        tmp_path,
        [(BlockType.CALLS, {"n": 0, "cols": {}, "ctl": b""})],
        {0: {"n": 0, "k0": "zero", "k1": 0, "t0": 0, "t1": 0, "s": []}},
    )
    assert_one_line_error(run_cli("info", str(path)), str(path), "malformed index entry")
    report = verify(path)
    assert report.index == "damaged" and report.blocks["CALLS"] == 1


@pytest.mark.parametrize(
    "record, what",
    [
        ({"id": 0, "local_port": "http"}, "bad socket record"),
        ({"id": "zero"}, "bad socket record"),
        (7, "bad socket record"),
    ],
)
def test_bad_socket_records(tmp_path, record, what):
    path = _file(tmp_path, [(BlockType.SOCKETS, {"sockets": [record]})], {0: {"n": 1}})
    assert_one_line_error(run_cli("info", str(path)), str(path), what)


BAD_BODIES = {
    "not-a-map": (msgpack.packb(5), "is not a map"),
    "reserved-byte": (b"\xc1", "not valid msgpack"),
    "deep-nesting": (b"\x91" * 200_000 + b"\x90", "not valid msgpack"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_undecodable_bodies(tmp_path, case):
    body, what = BAD_BODIES[case]
    path = _file(tmp_path, [(BlockType.CALLS, body)])
    assert_one_line_error(run_cli("info", str(path)), str(path), what)
    path = _file(tmp_path, [(BlockType.EVENTS, body)], name="ev.wskt")
    with pytest.raises(InputError, match=what):
        read_trace(path)


@pytest.mark.parametrize(
    "events", [[{"t": "noon", "k": "close"}], [5], [{"t": 1, "k": "x", "a": 3}]]
)
def test_malformed_events(tmp_path, events):
    path = _file(tmp_path, [(BlockType.EVENTS, {"events": events})])
    with pytest.raises(InputError, match="malformed event record"):
        read_trace(path)


def _raw_block(btype, codec, stored, raw_len):
    head = BLOCK_HEADER.pack(BLOCK_SYNC, btype, codec, 0, len(stored), raw_len, zlib.crc32(stored))
    return head + struct.pack("<I", zlib.crc32(head)) + stored


def test_zstd_bomb_and_lying_lengths(tmp_path):
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))
    cases = {
        "bomb": _raw_block(BlockType.EVENTS, 1, bomb, 100),
        "over_limit": _raw_block(BlockType.EVENTS, 0, b"\x80", 1 << 30),
        "short_raw": _raw_block(
            BlockType.EVENTS, 1, zstandard.ZstdCompressor().compress(pack_body({"events": []})), 2
        ),
    }
    for name, block in cases.items():
        path = tmp_path / f"{name}.wskt"
        path.write_bytes(file_header() + _raw_block(BlockType.META, 0, META, len(META)) + block)
        report = verify(path)
        assert not report.intact and report.blocks["META"] == 1, name
        assert len(report.damages) == 1, name
        proc = run_cli("verify", str(path))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, name
