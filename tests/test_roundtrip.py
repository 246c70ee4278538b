"""Any trace model value written to .wskt and read back is equal."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wskreplay.formats import ntstatus
from wskreplay.formats.wskt import BlockType, BlockWriter, pack_body
from wskreplay.generators.synth import synth_trace
from wskreplay.trace import TraceReader, read_trace, write_trace
from wskreplay.trace.model import Direction, Trace
from wskreplay.trace.writer import stream_body_head

from .strategies import traces

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _round_trip(trace: Trace, **options) -> Trace:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.wskt"
        write_trace(path, trace, **options)
        return read_trace(path)


@given(traces())
@SETTINGS
def test_round_trip_compressed(trace):
    assert _round_trip(trace, block_rows=7, stream_chunk=50) == trace


@given(traces())
@SETTINGS
def test_round_trip_uncompressed(trace):
    assert _round_trip(trace, zstd_level=None, block_rows=1000) == trace


def _call_boundaries(trace: Trace, socket: int, direction: Direction) -> set[int]:
    calls = trace.calls
    kind = np.array(
        [
            int(Direction.OUT if ntstatus.is_success(s) else Direction.UNSENT)
            for s in calls.column("status").tolist()
        ],
        dtype=np.int64,
    )
    mine = (calls.column("socket") == socket) & (kind == int(direction))
    starts = calls.column("stream_offset")[mine].astype(np.int64)
    return set(starts.tolist()) | set(
        (starts + calls.column("length")[mine].astype(np.int64)).tolist()
    )


@given(traces())
@SETTINGS
def test_round_trip_redacted(trace):
    back = _round_trip(trace, redact=True, block_rows=5, stream_chunk=64, redact_piece=40)
    for name in ("metadata", "clock", "sockets", "calls", "segments", "events"):
        assert getattr(back, name) == getattr(trace, name), name
    assert back.streams.keys() == trace.streams.keys()
    for key, original in trace.streams.items():
        red = back.streams[key]
        assert red.data is None and red.redacted
        assert (red.length, red.gaps) == (original.length, original.gaps)
        covered = 0
        cuts = _call_boundaries(trace, *key)
        for piece in red.digests:
            chunk = bytes(original.data[piece.offset : piece.offset + piece.length])
            assert hashlib.sha256(chunk).digest() == piece.sha256
            assert 0 < piece.length <= 40
            assert not any(piece.offset < c < piece.offset + piece.length for c in cuts)
            covered += piece.length
        assert covered == original.present_bytes


def test_redacted_file_holds_no_payload(tmp_path):
    trace = synth_trace(calls=300, sockets=3, seed=11)
    path = tmp_path / "r.wskt"
    write_trace(path, trace, redact=True, zstd_level=None)
    raw = path.read_bytes()
    for stream in trace.streams.values():
        data = bytes(stream.data)
        for start in range(0, len(data) - 16, 997):
            assert data[start : start + 16] not in raw
    with TraceReader(path) as reader:
        assert reader.redacted and reader.payload_bytes() == 0


def test_synthetic_trace_round_trips_with_default_options(tmp_path):
    trace = synth_trace(calls=5000, sockets=6, seed=2)
    path = tmp_path / "s.wskt"
    write_trace(path, trace)
    assert read_trace(path) == trace


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**40),
    st.sampled_from([int(Direction.OUT), int(Direction.IN)]),
    st.integers(0, 2**62),
    st.one_of(st.sampled_from([0, 1, 255, 256, 65535, 65536, 1 << 20]), st.integers(0, 1 << 17)),
)
def test_a_stream_body_head_and_its_payload_are_the_packed_body(socket, direction, offset, n):
    """The writer stores an incompressible stream chunk as the head of its body and its
    payload, never joined: together they are msgpack's bytes of the whole body, every
    size of bin header included."""
    payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
    body = {"s": socket, "d": direction, "o": offset, "b": payload}
    assert stream_body_head(socket, direction, offset, n) + payload == pack_body(body)


def test_a_block_stored_in_parts_is_the_block_written_whole(tmp_path):
    parts = [b"\x84head", memoryview(bytes(range(256)) * 300)]
    files = []
    for name in ("whole", "parts"):
        path = tmp_path / name
        with open(path, "wb") as f:
            blocks = BlockWriter(f)
            if name == "whole":
                blocks.write(BlockType.STREAM, b"".join(parts), {"k": 1}, compress=False)
            else:
                blocks.write_stored(BlockType.STREAM, parts, {"k": 1})
            blocks.finish()
        files.append(path.read_bytes())
    assert files[0] == files[1]
