"""What the wire shows of a trace's calls: when each call's first byte went out, and how
each outbound stream was cut into segments."""

from __future__ import annotations

import numpy as np

from wskreplay.formats import ntstatus as nt
from wskreplay.formats.tcpip import TCP_FIN, TCP_PSH, TCP_RST
from wskreplay.trace.model import Direction, Trace


def first_wire_ns(trace: Trace) -> np.ndarray:
    """Per call, when its first byte first appeared in an outbound segment; -1 when it never
    did (refused, empty, or not captured)."""
    calls, seg = trace.calls, trace.segments
    out = np.full(len(calls), -1, np.int64)
    accepted = nt.success_mask(calls.column("status")) & (calls.column("length") > 0)
    lengths, seqs, times = seg.column("length"), seg.column("seq"), seg.column("time_ns")
    for sid in trace.sockets:
        rows = seg.rows_of(sid, Direction.OUT)
        rows = rows[lengths[rows] > 0]
        mine = calls.rows_of(sid)
        mine = mine[accepted[mine]]
        if not len(rows) or not len(mine):
            continue
        reach = np.maximum.accumulate((seqs[rows] + lengths[rows]).astype(np.int64))
        first_byte = calls.column("stream_offset")[mine].astype(np.int64) + 1
        k = np.searchsorted(reach, first_byte, side="left")
        seen = k < len(reach)
        out[mine[seen]] = times[rows[k[seen]]]
    return out


def segmentation(trace: Trace, sid: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and PSH/FIN/RST flags of each outbound segment carrying data, a FIN or a
    RST, in time order."""
    seg = trace.segments
    rows = seg.rows_of(sid, Direction.OUT)
    flags = seg.column("flags")[rows] & (TCP_PSH | TCP_FIN | TCP_RST)
    lengths = seg.column("length")[rows]
    keep = (lengths > 0) | (flags & (TCP_FIN | TCP_RST) != 0)
    return lengths[keep], flags[keep]
