"""`wskreplay diff` reads traces in place: stream bytes stay in the file (compared chunk by
chunk), columns no comparison reads stay undecoded. Everything it sees equals the trace
read whole, its reports equal the reference path's (WSKREPLAY_PURE_PYTHON=1) on real
traces, and a damaged chunk is reported even where the comparison never needed it."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wskreplay.diff import UNREAD_COLUMNS, DiffOptions, diff_traces
from wskreplay.formats.columns import sort_by_keys
from wskreplay.formats.wskt import BLOCK_HEADER_SIZE, BlockType
from wskreplay.trace import TraceReader, TraceWriter, read_trace, write_trace
from wskreplay.trace.inplace import StreamInFile, window
from wskreplay.trace.model import CallTable, Direction, SegmentTable, Socket, Trace

from .conftest import (
    REPO,
    assert_one_line_error,
    imported_captures,
    run_cli,
    run_measured,
)

TRACES = REPO / "traces"
SHIPPED = ("field.wskt", "sample.wskt", "smb2-inferred.wskt")
CAPTURES = (
    "zeek__dce-rpc_mapi.pcap",
    "zeek__smb_smb2_100_small_files.pcap",
    "pcapplusplus__650HttpResponses.pcap",
    "zeek__tcp_missing-syn.pcap",
)


@pytest.fixture(scope="module")
def real_traces(tmp_path_factory) -> list:
    """The shipped traces and real captures imported with inferred calls."""
    shipped = [TRACES / name for name in SHIPPED]
    return shipped + imported_captures(tmp_path_factory.mktemp("imported"), CAPTURES)


def assert_same_trace(in_place: Trace, whole: Trace) -> None:
    assert in_place.metadata == whole.metadata and in_place.sockets == whole.sockets
    assert in_place.calls == whole.calls and in_place.segments == whole.segments
    assert in_place.events == whole.events
    assert in_place.calls.control_blob == whole.calls.control_blob
    assert in_place.streams.keys() == whole.streams.keys()
    for key, stream in whole.streams.items():
        mine = in_place.streams[key]
        assert (mine.length, mine.gaps, mine.digests) == (
            stream.length,
            stream.gaps,
            stream.digests,
        )
        if stream.data is None:
            assert mine.data is None
        else:
            assert bytes(window(mine.data, 0, mine.length)) == bytes(stream.data)


def test_real_traces_read_in_place_equal_the_whole_read(real_traces):
    kinds = set()
    for path in real_traces:
        in_place = read_trace(path, streams="in-place", defer=UNREAD_COLUMNS)
        kinds |= {type(s.data).__name__ for s in in_place.streams.values()}
        assert_same_trace(in_place, read_trace(path))
    assert "StreamInFile" in kinds


def test_deferred_columns_are_decoded_only_when_read():
    trace = read_trace(TRACES / "sample.wskt", streams="in-place", defer=("irp", "ack"))
    whole = read_trace(TRACES / "sample.wskt")
    assert trace.calls._cols.pending("irp") and trace.segments._cols.pending("ack")
    assert np.array_equal(trace.calls.column("length"), whole.calls.column("length"))
    assert trace.calls._cols.pending("irp")
    assert np.array_equal(trace.calls.column("irp"), whole.calls.column("irp"))
    assert not trace.calls._cols.pending("irp")
    assert trace.segments[3] == whole.segments[3] and not trace.segments._cols.pending("ack")
    copied = copy.deepcopy(trace)
    assert type(copied.calls._cols) is dict and copied.calls == whole.calls
    for key, stream in copy.deepcopy(
        read_trace(TRACES / "sample.wskt", streams="in-place")
    ).streams.items():
        assert isinstance(stream.data, bytearray) and stream.data == whole.streams[key].data
    with pytest.raises(ValueError, match="unknown columns"):
        read_trace(TRACES / "sample.wskt", defer=("nonsense",))


def _diff_json(a, b, align: str, tmp_path, *, reference: bool) -> dict:
    out = tmp_path / f"{a.name}-{b.name}-{align}-{reference}.json"
    env = {**os.environ, "WSKREPLAY_PURE_PYTHON": "1" if reference else "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "wskreplay", "diff", str(a), str(b), "--align", align,
         "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(out.read_text())


def _mutants(path, tmp_path) -> list:
    """Real changes of a real trace: a byte of one call, one call removed, one status."""
    trace = read_trace(path)
    out = []
    key = max(trace.streams, key=lambda k: trace.streams[k].length)
    changed = copy.deepcopy(trace)
    data = changed.streams[key].data
    data[len(data) // 2] ^= 0x5A
    out.append(changed)
    cols = {name: arr.copy() for name, arr in trace.calls.columns.items()}
    cols["status"][len(cols["status"]) // 3] = 0xC000000D
    status = copy.deepcopy(trace)
    status.calls = CallTable(cols, trace.calls.control_blob)
    out.append(status)
    keep = np.ones(len(trace.calls), bool)
    keep[len(keep) // 2] = False
    removed = copy.deepcopy(trace)
    removed.calls = trace.calls.take(keep)
    out.append(removed)
    paths = []
    for k, mutant in enumerate(out):
        p = tmp_path / f"{path.stem}-mutant{k}.wskt"
        write_trace(p, mutant)
        paths.append(p)
    return paths


@pytest.mark.parametrize("name", ["sample.wskt", "smb2-inferred.wskt"])
def test_diff_reports_equal_the_reference_path(name, tmp_path):
    a = TRACES / name
    replay = tmp_path / f"{name}-replay.wskt"
    proc = run_cli("replay", str(a), "--target", "emulator", "-o", str(replay))
    assert proc.returncode == 0, proc.stderr
    pairs = [(a, replay), *((a, m) for m in _mutants(a, tmp_path))]
    differing = 0
    for x, y in pairs:
        for align in ("order", "sequence"):
            fast = _diff_json(x, y, align, tmp_path, reference=False)
            assert fast == _diff_json(x, y, align, tmp_path, reference=True)
            differing += not fast["equal"]
    assert differing >= 5


def test_imported_captures_diff_as_the_reference_path(real_traces, tmp_path):
    imported = real_traces[len(SHIPPED) :]
    for a, b in zip(imported, imported[1:], strict=False):
        fast = _diff_json(a, b, "sequence", tmp_path, reference=False)
        assert not fast["equal"]
        assert fast == _diff_json(a, b, "sequence", tmp_path, reference=True)


def _write_in_small_chunks(path, trace: Trace) -> None:
    with TraceWriter(path, metadata=trace.metadata, clock=trace.clock, stream_chunk=4096) as w:
        w.add_sockets(trace.sockets.values())
        w.add_calls(trace.calls)
        w.add_segments(trace.segments)
        for (sid, direction), stream in trace.streams.items():
            w.add_stream_data(sid, direction, 0, bytes(stream.data))


def test_a_damaged_chunk_no_comparison_needed_is_still_reported(tmp_path):
    """B differs from A in the first byte of a 12 MiB stream whose last chunk is damaged in
    A: aligned in order, the comparison stops in its first window and never needs the
    damaged chunk, and the diff still fails naming it."""
    data = bytearray(np.random.default_rng(7).bytes(12 << 20))
    a, b = tmp_path / "a.wskt", tmp_path / "b.wskt"
    for path in (a, b):
        with TraceWriter(path) as w:
            w.add_sockets([Socket(1)])
            w.add_stream_data(1, Direction.OUT, 0, data)
        data[0] ^= 0xFF
    with TraceReader(a) as reader:
        chunks = [blk.ref for blk in reader.blocks if blk.ref.type == BlockType.STREAM]
    assert len(chunks) == 3
    last = max(chunks, key=lambda ref: ref.offset)
    raw = bytearray(a.read_bytes())
    raw[last.offset + BLOCK_HEADER_SIZE + last.stored_len - 1] ^= 0xFF
    damaged = tmp_path / "damaged.wskt"
    damaged.write_bytes(raw)
    proc = run_cli("diff", str(a), str(b), "--align", "order", "--json", "-")
    assert proc.returncode == 1 and json.loads(proc.stdout)["wire_mismatches"] == 1
    proc = run_cli("diff", str(damaged), str(b), "--align", "order")
    assert_one_line_error(proc, "damaged.wskt", str(last.offset), "checksum")


@st.composite
def stream_layouts(draw):
    """A stream written as pieces at offsets (overlapping or not), with gaps."""
    length = draw(st.integers(0, 3000))
    pieces = []
    for _ in range(draw(st.integers(0, 8))):
        start = draw(st.integers(0, max(length - 1, 0)))
        size = draw(st.integers(1, max(length - start, 1)))
        kind = draw(st.sampled_from(["random", "zeros", "gap"]))
        pieces.append((start, min(size, length - start), kind))
    chunk = draw(st.sampled_from([7, 64, 1000, 4096]))
    windows = draw(st.lists(st.tuples(st.integers(-5, length + 5), st.integers(-5, length + 5))))
    return length, pieces, chunk, windows, draw(st.integers(0, 2**32 - 1))


def written_layout(path: Path, layout: tuple) -> Path:
    """A trace of one stream written as ``layout`` says (chunks of its chunk size)."""
    _, pieces, chunk, _, seed = layout
    rng = np.random.default_rng(seed)
    with TraceWriter(path, stream_chunk=chunk) as w:
        w.add_sockets([Socket(1)])
        for start, size, kind in pieces:
            if size <= 0:
                continue
            if kind == "gap":
                w.add_stream_gap(1, Direction.OUT, start, size)
            else:
                data = rng.bytes(size) if kind == "random" else bytes(size)
                w.add_stream_data(1, Direction.OUT, start, data)
    return path


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layout=stream_layouts())
def test_stream_windows_equal_the_assembled_bytes(layout, tmp_path):
    windows = layout[3]
    path = written_layout(tmp_path / "s.wskt", layout)
    whole = read_trace(path)
    in_place = read_trace(path, streams="in-place")
    assert whole.streams.keys() == in_place.streams.keys()
    for key, stream in whole.streams.items():
        mine = in_place.streams[key]
        assert mine.gaps == stream.gaps and mine.length == stream.length
        expected = bytes(stream.data)
        assert bytes(window(mine.data, 0, mine.length)) == expected
        for lo, hi in windows:
            assert bytes(mine.data[lo:hi]) == expected[lo:hi]
            assert (
                bytes(window(mine.data, max(lo, 0), max(hi, 0)))
                == expected[max(lo, 0) : max(hi, 0)]
            )


def test_overlapping_chunks_are_assembled(tmp_path):
    path = tmp_path / "overlap.wskt"
    with TraceWriter(path) as w:
        w.add_sockets([Socket(1)])
        w.add_stream_data(1, Direction.OUT, 0, b"a" * 100)
        w.add_stream_data(1, Direction.OUT, 50, b"b" * 100)
    stream = read_trace(path, streams="in-place").streams[(1, Direction.OUT)]
    assert not isinstance(stream.data, StreamInFile)
    assert bytes(stream.data) == bytes(read_trace(path).streams[(1, Direction.OUT)].data)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 300).flatmap(
        lambda n: st.lists(
            st.tuples(
                st.sampled_from(["u1", "u4", "u8", "i8"]),
                st.lists(st.integers(0, 70_000), min_size=n, max_size=n),
            ),
            min_size=1,
            max_size=3,
        )
    )
)
def test_sorting_by_keys_is_lexsort(keys):
    arrays = [np.array(values, dtype) if dtype != "u1" else np.array(values, "u8") % 256
              for dtype, values in keys]  # fmt: skip
    assert np.array_equal(sort_by_keys(arrays), np.lexsort(arrays[::-1]))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(-50, 50)), max_size=200)
)
def test_rows_by_groups_in_order(rows):
    n = len(rows)
    cols = {name: np.zeros(n, dtype) for name, dtype in SegmentTable.SCHEMA}
    cols["socket"] = np.array([r[0] for r in rows], "u4")
    cols["direction"] = np.array([r[1] for r in rows], "u1")
    cols["time_ns"] = np.array([r[2] for r in rows], "i8")
    table = SegmentTable(cols)
    groups = table.rows_by(("socket", "direction"), "time_ns")
    expected: dict = {}
    for i in sorted(range(n), key=lambda i: (rows[i][2], i)):
        expected.setdefault((rows[i][0], rows[i][1]), []).append(i)
    assert {k: v.tolist() for k, v in groups.items()} == expected
    for (sid, direction), index in expected.items():
        assert table.rows_of(sid, Direction(direction)).tolist() == index


def test_diff_in_process_of_in_place_traces_equals_whole(tmp_path):
    a = read_trace(TRACES / "field.wskt")
    b_path = _mutants(TRACES / "field.wskt", tmp_path)[0]
    whole = diff_traces(a, read_trace(b_path), DiffOptions(align="sequence"))
    in_place = diff_traces(
        read_trace(TRACES / "field.wskt", streams="in-place", defer=UNREAD_COLUMNS),
        read_trace(b_path, streams="in-place", defer=UNREAD_COLUMNS),
        DiffOptions(align="sequence"),
    )
    assert not whole.equal and in_place.as_json() == whole.as_json()


def test_diffing_a_2_gb_trace_keeps_little_of_it_resident(tmp_path):
    """Both sides' streams are read chunk by chunk and every chunk's pages (and those the
    kernel mapped around them) are released: the diff of a 2 GB trace with itself peaks
    near the interpreter's own size, where reading it whole would hold 4 GB."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from load_big_trace import write_big_trace

    path = tmp_path / "big.wskt"
    write_big_trace(path, 2)
    proc, peak_kib = run_measured([sys.executable, "-m", "wskreplay", "diff", str(path), str(path)])
    assert proc.returncode == 0, proc.stderr
    assert peak_kib < 150 << 10, f"peak RSS {peak_kib} KiB"
