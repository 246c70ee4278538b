"""A trace made to measure pacing: one socket, small sends at log-uniformly spread gaps
(10 us to 10 ms by default) whose completions the recording does not hold, so no call
waits for another and every issue time is the schedule alone."""

from __future__ import annotations

import numpy as np

from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.trace.model import CallTable, Clock, Direction, Socket, Stream, Trace


def pacing_trace(
    calls: int = 2000,
    *,
    min_gap_ns: int = 10_000,
    max_gap_ns: int = 10_000_000,
    size: int = 64,
    nodelay: bool = False,
    seed: int = 0,
) -> Trace:
    """``nodelay``: every call with WSK_FLAG_NODELAY, so each is one segment on the wire."""
    rng = np.random.default_rng(seed)
    gaps = np.exp(rng.uniform(np.log(min_gap_ns), np.log(max_gap_ns), calls)).astype(np.int64)
    gaps[0] = 0
    issue = 1_000_000 + np.cumsum(gaps)
    length = np.full(calls, size, np.int64)
    cols = {
        "seq": np.arange(calls),
        "socket": np.zeros(calls, np.int64),
        "issue_ns": issue,
        "return_ns": issue + 2_000,
        "flags": np.full(calls, wsk.WSK_FLAG_NODELAY if nodelay else 0, np.int64),
        "offset": np.zeros(calls, np.int64),
        "length": length,
        "status": np.full(calls, nt.STATUS_PENDING),
        "completed": np.zeros(calls, np.int64),
        "completion_ns": np.zeros(calls, np.int64),
        "completion_status": np.zeros(calls, np.int64),
        "information": np.zeros(calls, np.int64),
        "irp": np.uint64(0xFFFFC00000000000) + np.arange(calls, dtype=np.uint64) * np.uint64(0x200),
        "irql": np.zeros(calls, np.int64),
        "stream_offset": np.arange(calls) * size,
        "control_len": np.full(calls, -1),
    }
    payload = bytearray(rng.integers(0, 256, calls * size, dtype=np.uint8).tobytes())
    trace = Trace(
        metadata={"source": "pacing_trace", "gaps_ns": [min_gap_ns, max_gap_ns], "seed": seed},
        clock=Clock(0, "synthetic"),
        sockets={0: Socket(0, remote_addr="192.0.2.2", remote_port=5001, local_port=49152)},
    )
    trace.calls = CallTable(cols)
    trace.streams[(0, Direction.OUT)] = Stream(0, Direction.OUT, len(payload), payload)
    return trace
