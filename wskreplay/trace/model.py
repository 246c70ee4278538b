"""The trace model: a :class:`Trace` (metadata, clock, sockets, the call and segment
tables, streams, events) and what is asked of one as a whole; plain data, no I/O. Every
name of the trace's records and tables is importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wskreplay.trace.records import (
    Clock,
    DigestPiece,
    Direction,
    Event,
    Segment,
    SendCall,
    Socket,
    Stream,
    digest_pieces,
    split_points,
)
from wskreplay.trace.tables import (
    CALL_SCHEMA,
    COMPLETED,
    COMPLETION_UNKNOWN,
    NOT_COMPLETED,
    SEGMENT_SCHEMA,
    CallTable,
    ColumnTable,
    SegmentTable,
)


@dataclass
class Trace:
    metadata: dict[str, Any] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)
    sockets: dict[int, Socket] = field(default_factory=dict)
    calls: CallTable = field(default_factory=CallTable.empty)
    streams: dict[tuple[int, Direction], Stream] = field(default_factory=dict)
    segments: SegmentTable = field(default_factory=SegmentTable.empty)
    events: list[Event] = field(default_factory=list)

    @property
    def redacted(self) -> bool:
        return any(s.redacted for s in self.streams.values())

    def stream(self, socket: int, direction: Direction) -> Stream:
        key = (socket, Direction(direction))
        if key not in self.streams:
            self.streams[key] = Stream(socket, Direction(direction))
        return self.streams[key]

    def call_payload(self, i: int) -> bytes | None:
        """The bytes call ``i`` handed to WSK, or None when the trace does not hold them."""
        call = self.calls[i]
        stream = self.streams.get((call.socket, call.direction))
        if stream is None or stream.data is None:
            return None
        end = call.stream_offset + call.length
        if end > stream.length or any(s < end and call.stream_offset < e for s, e in stream.gaps):
            return None
        return bytes(stream.data[call.stream_offset : end])


def time_span_ns(trace: Trace, socket: int | None = None) -> tuple[int, int] | None:
    """The first and last moment the trace (or one of its sockets) shows: calls issued
    and returned, completions, segments and events; None when it shows nothing."""
    calls, seg = trace.calls, trace.segments
    mine = calls.column("socket") == socket if socket is not None else np.ones(len(calls), bool)
    times: list[int] = []
    if mine.any():
        times += [
            int(calls.column("issue_ns")[mine].min()),
            int(calls.column("return_ns")[mine].max()),
        ]
        done = mine & (calls.column("completed") == COMPLETED)
        if done.any():
            times.append(int(calls.column("completion_ns")[done].max()))
    if len(seg):
        column = seg.column("time_ns")
        if socket is not None:
            column = column[seg.column("socket") == socket]
        if len(column):
            times += [int(column.min()), int(column.max())]
    times += [e.time_ns for e in trace.events if socket is None or e.socket == socket]
    return (min(times), max(times)) if times else None


def awaited_calls(calls: CallTable) -> np.ndarray:
    """Per call, the call it waited for (index, or -1): the latest of its socket's calls
    that the recording completed at or before it was issued, itself excluded. A driver
    that issues a call after a completion was evidently waiting for it: the replay waits
    for the same completion, and diff measures the call's issue time from it."""
    n = len(calls)
    out = np.full(n, -1, np.int64)
    issue = calls.column("issue_ns").astype(np.int64)
    completion = calls.column("completion_ns").astype(np.int64)
    done = calls.column("completed") == COMPLETED
    for mine in calls.rows_by(("socket",), "issue_ns").values():
        finished = mine[done[mine]]
        if not len(finished):
            continue
        finished = finished[np.lexsort((finished, completion[finished]))]
        at = np.searchsorted(completion[finished], issue[mine], side="right") - 1
        awaited = np.where(at >= 0, finished[np.maximum(at, 0)], -1)
        out[mine] = np.where(awaited == mine, -1, awaited)
    return out


__all__ = [
    "CALL_SCHEMA",
    "COMPLETED",
    "COMPLETION_UNKNOWN",
    "NOT_COMPLETED",
    "SEGMENT_SCHEMA",
    "CallTable",
    "Clock",
    "ColumnTable",
    "DigestPiece",
    "Direction",
    "Event",
    "Segment",
    "SegmentTable",
    "SendCall",
    "Socket",
    "Stream",
    "Trace",
    "awaited_calls",
    "digest_pieces",
    "split_points",
    "time_span_ns",
]
