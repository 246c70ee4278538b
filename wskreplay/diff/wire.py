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
    for sid in trace.sockets:
        rows = (
            (seg.column("socket") == sid)
            & (seg.column("direction") == int(Direction.OUT))
            & (seg.column("length") > 0)
        )
        mine = np.flatnonzero(accepted & (calls.column("socket") == sid))
        if not rows.any() or not len(mine):
            continue
        order = np.argsort(seg.column("time_ns")[rows], kind="stable")
        times = seg.column("time_ns")[rows][order].astype(np.int64)
        reach = np.maximum.accumulate(
            (seg.column("seq")[rows] + seg.column("length")[rows])[order].astype(np.int64)
        )
        first_byte = calls.column("stream_offset")[mine].astype(np.int64) + 1
        k = np.searchsorted(reach, first_byte, side="left")
        seen = k < len(reach)
        out[mine[seen]] = times[k[seen]]
    return out


def segmentation(trace: Trace, sid: int) -> list[tuple[int, int]]:
    """(length, PSH/FIN/RST flags) of each outbound segment carrying data, a FIN or a RST,
    in time order."""
    seg = trace.segments
    flags = seg.column("flags").astype(np.int64) & (TCP_PSH | TCP_FIN | TCP_RST)
    rows = (
        (seg.column("socket") == sid)
        & (seg.column("direction") == int(Direction.OUT))
        & ((seg.column("length") > 0) | (flags & (TCP_FIN | TCP_RST) != 0))
    )
    index = np.flatnonzero(rows)
    index = index[np.argsort(seg.column("time_ns")[index], kind="stable")]
    return list(zip(seg.column("length")[index].tolist(), flags[index].tolist(), strict=True))
