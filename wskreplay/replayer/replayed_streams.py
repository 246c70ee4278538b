"""The byte streams of a replay: what each replayed call handed WSK, filed by its replayed
status.

The bytes are copied a run of calls at a time: consecutive calls of one output stream whose
recorded bytes follow each other in one recorded stream are one slice copy, and a recorded
gap is cut against the run, not against every call. ``tests/test_replayed_streams.py``
holds the call-by-call loop this replaces and checks both agree.
"""

from __future__ import annotations

import bisect

import numpy as np

from wskreplay.formats import ntstatus as nt
from wskreplay.trace.inplace import window
from wskreplay.trace.model import Direction, Stream, StreamData, Trace


def replayed_streams(
    trace: Trace,
    socket_of: list[int] | np.ndarray,
    length_of: list[int] | np.ndarray,
    status: list[int] | np.ndarray,
    cols: dict[str, np.ndarray],
) -> dict[tuple[int, Direction], Stream]:
    """The bytes the replayed calls handed WSK, each call to OUT or UNSENT by its replayed
    status, with ``cols["stream_offset"]`` set to each call's offset in its new stream.
    Each call takes its recorded bytes (``trace``'s stream of its recorded direction, from
    its recorded offset); bytes the recording lacks (no stream, a redacted one, past its
    end, or in one of its gaps) are zeros in a gap, at the same place in the call.
    Streams are keyed in the order of their first call."""
    n = len(socket_of)
    streams: dict[tuple[int, Direction], Stream] = {}
    if not n:
        return streams
    sockets = np.asarray(socket_of, np.int64)
    lengths = np.asarray(length_of, np.int64)
    out_dir = np.where(nt.success_mask(np.asarray(status, np.uint64)), 0, 1)
    recorded_dir = np.where(nt.success_mask(trace.calls.column("status")), 0, 1)
    recorded_at = trace.calls.column("stream_offset")
    offsets = cols["stream_offset"]
    directions = (Direction.OUT, Direction.UNSENT)
    keys = np.stack([sockets, out_dir])
    order = np.lexsort((np.arange(n), out_dir, sockets))
    change = np.flatnonzero((np.diff(keys[:, order], axis=1) != 0).any(axis=0)) + 1
    groups = np.split(order, change)
    groups.sort(key=lambda rows: int(rows[0]))
    for rows in groups:
        sid, direction = int(sockets[rows[0]]), directions[int(out_dir[rows[0]])]
        sizes = lengths[rows]
        base = np.cumsum(sizes) - sizes
        offsets[rows] = base
        sources = [trace.streams.get((sid, d)) for d in directions]
        streams[(sid, direction)] = _one_stream(
            sid, direction, sources, recorded_dir[rows], recorded_at[rows], sizes, base
        )
    return streams


def _one_stream(
    sid: int,
    direction: Direction,
    sources: list[Stream | None],
    source_of: np.ndarray,
    recorded_at: np.ndarray,
    sizes: np.ndarray,
    base: np.ndarray,
) -> Stream:
    """The stream of one socket and direction: its calls' sizes and offsets (``base``),
    each taking its bytes from ``sources[source_of]`` at ``recorded_at``."""
    total = int(sizes.sum())
    gaps: list[tuple[int, int]] = []
    held = np.array([_held(s) for s in sources], np.int64)
    missing = held[source_of] < 0
    start = np.minimum(recorded_at, np.maximum(held[source_of], 0).astype(np.uint64))
    start = start.astype(np.int64)
    piece = np.clip(held[source_of] - start, 0, sizes)
    for k in np.flatnonzero(missing | (piece < sizes)).tolist():
        gaps.append((int(base[k] + piece[k]), int(base[k] + sizes[k])))
    follows = np.zeros(len(sizes), bool)
    follows[1:] = (
        (source_of[1:] == source_of[:-1])
        & (start[1:] == start[:-1] + sizes[:-1])
        & (piece[:-1] == sizes[:-1])
        & ~missing[:-1]
    )
    firsts = np.flatnonzero(~follows)
    copied = np.add.reduceat(piece, firsts).tolist()
    ends = np.append(base[firsts[1:]], total).tolist()
    source_gaps = [_SourceGaps(s.gaps if s is not None else []) for s in sources]
    whole = _whole_source(sources, source_of, start, copied, total)
    if whole is not None:
        gaps += source_gaps[int(source_of[0])].within(0, total, 0)
        return Stream(sid, direction, total, whole, merged_gaps(gaps))
    parts: list[memoryview | bytes] = []
    try:
        for k, size, end in zip(firsts.tolist(), copied, ends, strict=True):
            source = sources[int(source_of[k])]
            lo, at = int(start[k]), int(base[k])
            if size and source is not None and source.data is not None:
                parts.append(window(source.data, lo, lo + size))
                gaps += source_gaps[int(source_of[k])].within(lo, lo + size, at - lo)
            else:
                size = 0
            if end - at > size:
                parts.append(bytes(end - at - size))
        data = bytearray().join(parts)
    finally:
        for part in parts:
            if isinstance(part, memoryview):
                part.release()
    return Stream(sid, direction, total, data, merged_gaps(gaps))


def _whole_source(
    sources: list[Stream | None],
    source_of: np.ndarray,
    start: np.ndarray,
    copied: list[int],
    total: int,
) -> StreamData | None:
    """The recorded stream's data itself, when the calls take all of it, in order, and
    nothing else: the replayed stream is then the same bytes, shared rather than copied."""
    if len(copied) != 1 or copied[0] != total or not total or int(start[0]) != 0:
        return None
    source = sources[int(source_of[0])]
    if source is None or source.data is None or _held(source) != total:
        return None
    return source.data


def _held(stream: Stream | None) -> int:
    """How many bytes of a recorded stream a call can take; -1 when it holds none."""
    if stream is None or stream.data is None:
        return -1
    return len(stream.data)


class _SourceGaps:
    """A recorded stream's gaps, joined and sorted, found by bisection."""

    def __init__(self, gaps: list[tuple[int, int]]) -> None:
        joined = merged_gaps(gaps)
        self.starts = [a for a, _ in joined]
        self.ends = [b for _, b in joined]

    def within(self, lo: int, hi: int, shift: int) -> list[tuple[int, int]]:
        """The parts of the gaps inside ``[lo, hi)``, moved by ``shift``."""
        out = []
        j = bisect.bisect_right(self.ends, lo)
        while j < len(self.starts) and self.starts[j] < hi:
            a, b = max(self.starts[j], lo), min(self.ends[j], hi)
            if a < b:
                out.append((a + shift, b + shift))
            j += 1
        return out


def merged_gaps(gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``gaps`` sorted, with overlapping or touching ones joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(gaps):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
