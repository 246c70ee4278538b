"""When a socket's recorded bytes left, as the replay's model of the path needs it: each
segment's departure from the bottleneck, and stand-ins for bytes the capture never showed
sent (a mirror port or a capture that dropped frames) but the peer acknowledged."""

from __future__ import annotations

import numpy as np

from wskreplay.formats.tcpip import TCP_ACK, TCP_RST
from wskreplay.replayer.peer import HEADER_BYTES
from wskreplay.trace.model import Direction, Trace


def serialization_ns(length: np.ndarray, rate_bps: int | None) -> np.ndarray:
    """How long segments of ``length`` payload bytes take on the bottleneck (0: no rate),
    as the replay's path serializes them (``peer.HEADER_BYTES`` counted)."""
    if not rate_bps:
        return np.zeros(len(length), np.int64)
    return (length + HEADER_BYTES) * 8 * 1_000_000_000 // rate_bps


def departures(captured: np.ndarray, length: np.ndarray, rate_bps: int | None) -> np.ndarray:
    """When each outbound segment left the bottleneck: its capture time, or the moment the
    segments before it had been serialized at ``rate_bps`` if later (a capture taken
    upstream of the bottleneck shows a burst microseconds apart; the peer still received
    it at the link's rate, and the replay's path sends it so)."""
    if not rate_bps or not len(captured):
        return captured
    before = np.concatenate(([0], np.cumsum(serialization_ns(length, rate_bps))[:-1]))
    return np.maximum.accumulate(captured - before) + before


def missed_sends(
    trace: Trace, socket: int, captured_time: np.ndarray, captured_end: np.ndarray, rtt_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """(time, end) stand-ins for the socket's outbound bytes the peer acknowledged before
    the capture showed them sent (``captured_time``/``captured_end``: the captured data
    segments, in time order): each such acknowledgement proves the bytes up to its value
    left at the latest one RTT before it arrived, and that is when the replay takes them to
    have left. Empty when the capture saw every acknowledged byte go."""
    seg = trace.segments
    acks = (
        (seg.column("socket") == socket)
        & (seg.column("direction") == int(Direction.IN))
        & (seg.column("flags") & TCP_ACK != 0)
        & (seg.column("flags") & TCP_RST == 0)
    )
    if not acks.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ack_time = seg.column("time_ns")[acks].astype(np.int64)
    ack = seg.column("ack")[acks].astype(np.int64)
    if len(captured_end):
        k = np.searchsorted(captured_time, ack_time, side="right")
        reach = np.maximum.accumulate(captured_end)
        seen = np.where(k > 0, reach[np.maximum(k - 1, 0)], 0)
    else:
        seen = np.zeros(len(ack), np.int64)
    missed = ack > seen
    return ack_time[missed] - rtt_ns, ack[missed]


def merged(
    time: np.ndarray, end: np.ndarray, extra_time: np.ndarray, extra_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two (time, end) series as one in time order (the first's entries first on ties)."""
    if not len(extra_time):
        return time, end
    t = np.concatenate((time, extra_time))
    e = np.concatenate((end, extra_end))
    order = np.argsort(t, kind="stable")
    return t[order], e[order]
