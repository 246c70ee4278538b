"""`wskreplay replay` on the emulator leaves the recorded stream bytes in the trace file:
they are read once, while the replay is written. The file it writes is byte for byte the
one a replay of the trace read whole writes, on the shipped traces and real captures; the
writer cuts a stream left in a file into the same chunks as one in memory, whatever the
two files' chunk sizes; and a damaged chunk found while writing fails the replay in one
line and leaves no file."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from wskreplay.formats.wskt import BLOCK_HEADER_SIZE, BlockType
from wskreplay.replayer.engine import ReplayOptions, replay
from wskreplay.replayer.profile import load_profile
from wskreplay.trace import TraceReader, read_trace, write_trace
from wskreplay.trace.digest import file_sha256
from wskreplay.trace.inplace import StreamInFile
from wskreplay.trace.model import Direction

from .conftest import REPO, assert_one_line_error, imported_captures, run_cli
from .test_diff_in_place import stream_layouts, written_layout

SHIPPED = ("field.wskt", "sample.wskt", "smb2-inferred.wskt")
CAPTURES = ("zeek__smb_smb2_100_small_files.pcap", "zeek__tcp_missing-syn.pcap")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> list:
    shipped = [REPO / "traces" / name for name in SHIPPED]
    return shipped + imported_captures(tmp_path_factory.mktemp("imported"), CAPTURES)


@pytest.mark.parametrize("timing", [("--asap",), ()], ids=["asap", "recorded"])
def test_the_replay_writes_what_a_replay_of_the_whole_read_writes(recorded, timing, tmp_path):
    speed = None if timing else 1.0
    for path in recorded:
        assert any(
            isinstance(s.data, StreamInFile)
            for s in read_trace(path, streams="in-place").streams.values()
        ), path
        cli, whole = tmp_path / "cli.wskt", tmp_path / "whole.wskt"
        proc = run_cli("replay", str(path), *timing, "--jobs", "1", "-o", str(cli))
        assert proc.returncode == 0, proc.stderr
        options = ReplayOptions(load_profile("windows-tcpip"), speed)
        write_trace(whole, replay(read_trace(path), options, source_sha256=file_sha256(path)))
        assert cli.read_bytes() == whole.read_bytes(), path.name


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layout=stream_layouts(), out_chunk=stream_layouts().map(lambda layout: layout[2]))
def test_a_stream_left_in_its_file_is_written_as_the_same_stream_in_memory(
    layout, out_chunk, tmp_path
):
    path = written_layout(tmp_path / "s.wskt", layout)
    for options in ({}, {"redact": True}, {"zstd_level": None}):
        written = []
        for streams in ("memory", "in-place"):
            out = tmp_path / f"{streams}.wskt"
            write_trace(out, read_trace(path, streams=streams), stream_chunk=out_chunk, **options)
            written.append(out.read_bytes())
        assert written[0] == written[1], options


@pytest.mark.parametrize("direction", [Direction.OUT, Direction.IN], ids=["sent", "received"])
def test_a_damaged_chunk_fails_the_replay_in_one_line_and_leaves_no_file(direction, tmp_path):
    """A chunk of the sent bytes is read while the replay is written; one of the received
    bytes, which this replay does not take, after it. Either way the error names the trace
    and the chunk, and the replay written is removed (an old file of that name goes too)."""
    source = REPO / "traces" / "smb2-inferred.wskt"
    with TraceReader(source) as reader:
        (chunk,) = [
            b.ref
            for b in reader.blocks
            if b.ref.type == BlockType.STREAM and b.entry["sd"] == int(direction)
        ]
    raw = bytearray(source.read_bytes())
    raw[chunk.offset + BLOCK_HEADER_SIZE + chunk.stored_len - 1] ^= 0xFF
    damaged = tmp_path / "damaged.wskt"
    damaged.write_bytes(raw)
    out = tmp_path / "out.wskt"
    out.write_bytes(b"an older replay")
    proc = run_cli("replay", str(damaged), "--asap", "-o", str(out))
    assert_one_line_error(proc, "damaged.wskt", str(chunk.offset), "checksum")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.wskt"]
