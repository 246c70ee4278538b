"""The replay's streams, copied a run of calls at a time (replayer/replayed_streams.py),
equal the call-by-call loop they replaced, on real traces with their replayed statuses and
on hypothesis traces with gaps, redacted and missing streams, short and overlapping calls,
and statuses that move calls between OUT and UNSENT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.formats import ntstatus as nt
from wskreplay.replayer.engine import ReplayOptions, replay
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.replayed_streams import merged_gaps, replayed_streams
from wskreplay.trace import read_trace
from wskreplay.trace.inplace import window
from wskreplay.trace.model import Direction, Stream, Trace

from .conftest import REPO, imported_captures
from .strategies import call_tables, streams

STATUSES = [0, 0x103, 0xC00000B6, 0xC000020D, 0xE0570001]


def streams_call_by_call(
    trace: Trace, socket_of: list[int], length_of: list[int], status: list[int]
) -> tuple[dict[tuple[int, Direction], Stream], list[int]]:
    """The reference: each call's bytes appended in call order, its gaps cut one by one."""
    recorded_offset = trace.calls.column("stream_offset").tolist()
    recorded_dir = [
        Direction.OUT if nt.is_success(int(x)) else Direction.UNSENT
        for x in trace.calls.column("status")
    ]
    out: dict[tuple[int, Direction], Stream] = {}
    offsets = []
    for i, (sid, length) in enumerate(zip(socket_of, length_of, strict=True)):
        direction = Direction.OUT if nt.is_success(int(status[i])) else Direction.UNSENT
        stream = out.setdefault((sid, direction), Stream(sid, direction))
        offsets.append(stream.length)
        source = trace.streams.get((sid, recorded_dir[i]))
        start = recorded_offset[i]
        base = stream.length
        if source is None or source.data is None:
            stream.gaps.append((base, base + length))
            stream.data += bytes(length)
        else:
            piece = bytes(source.data[start : start + length])
            stream.data += piece + bytes(length - len(piece))
            if len(piece) < length:
                stream.gaps.append((base + len(piece), base + length))
            for a, b in source.gaps:
                lo, hi = max(a, start), min(b, start + len(piece))
                if lo < hi:
                    stream.gaps.append((base + lo - start, base + hi - start))
        stream.length += length
    for stream in out.values():
        stream.gaps = merged_gaps(stream.gaps)
    return out, offsets


def assert_both_agree(trace: Trace, status: list[int]) -> int:
    """The run-at-a-time streams equal the reference's; how many of them are a recorded
    stream's own data, shared rather than copied."""
    socket_of = trace.calls.column("socket").tolist()
    length_of = trace.calls.column("length").tolist()
    cols = {"stream_offset": np.zeros(len(trace.calls), np.int64)}
    got = replayed_streams(trace, socket_of, length_of, status, cols)
    want, offsets = streams_call_by_call(trace, socket_of, length_of, status)
    assert list(got) == list(want)
    for key, stream in want.items():
        mine = got[key]
        assert (mine.length, mine.gaps) == (stream.length, stream.gaps), key
        assert bytes(window(mine.data, 0, mine.length)) == bytes(stream.data), key
    assert cols["stream_offset"].tolist() == offsets
    recorded = [s.data for s in trace.streams.values()]
    return sum(any(s.data is data for data in recorded) for s in got.values())


def real_traces(tmp_path) -> list[Path]:
    captures = ("zeek__tcp_missing-syn.pcap", "pcapplusplus__650HttpResponses.pcap")
    return sorted((REPO / "traces").glob("*.wskt")) + imported_captures(tmp_path, captures)


@pytest.mark.parametrize("streams_read", ["memory", "in-place"])
def test_real_traces_replayed_and_with_every_status_flipped(streams_read, tmp_path):
    """Read whole or left in the file (``replay`` on the emulator reads in place), the
    recorded streams give the reference's bytes; a stream the replay takes whole and in
    order is the recorded one, shared."""
    gapped = shared = 0
    for path in real_traces(tmp_path):
        trace = read_trace(path, streams=streams_read)
        gapped += any(s.gaps for s in trace.streams.values())
        replayed = replay(trace, ReplayOptions(load_profile()))
        shared += assert_both_agree(trace, replayed.calls.column("status").tolist())
        flipped = [0xC000020D if nt.is_success(int(s)) else 0 for s in trace.calls.column("status")]
        assert_both_agree(trace, flipped)
    assert gapped, "no real trace with gaps: the gap cutting went untested"
    assert shared, "no replayed stream was a recorded one: the sharing went untested"


@st.composite
def traces_with_streams(draw) -> tuple[Trace, list[int]]:
    calls = draw(call_tables(max_rows=40))
    trace = Trace(calls=calls)
    for sid in range(4):
        for direction in (Direction.OUT, Direction.UNSENT):
            kind = draw(st.sampled_from(["absent", "redacted", "held"]))
            if kind == "redacted":
                trace.streams[(sid, direction)] = Stream(sid, direction, 10, None)
            elif kind == "held":
                trace.streams[(sid, direction)] = draw(streams(sid, direction))
    contiguous = draw(st.booleans())
    if contiguous:
        cols = calls.columns
        offsets = np.zeros(len(calls), np.int64)
        for sid in range(4):
            for ok in (True, False):
                rows = np.flatnonzero(
                    (cols["socket"] == sid) & (nt.success_mask(cols["status"]) == ok)
                )
                sizes = cols["length"][rows].astype(np.int64)
                offsets[rows] = np.cumsum(sizes) - sizes
        cols["stream_offset"] = offsets
        trace.calls = type(calls)(cols, calls.control_blob)
    status = draw(st.lists(st.sampled_from(STATUSES), min_size=len(calls), max_size=len(calls)))
    return trace, status


@settings(max_examples=300, deadline=None)
@given(traces_with_streams())
def test_hypothesis_traces(case):
    trace, status = case
    assert_both_agree(trace, status)
