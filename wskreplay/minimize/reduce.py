"""Smaller traces cut from a bigger one, kept consistent: the candidates minimisation tries.

A candidate keeps some calls, each with a prefix of its bytes. Everything that counts
stream offsets is re-derived from what is kept, per socket and direction:

- the driver's streams (OUT for accepted calls, UNSENT for refused ones) are the kept byte
  ranges back to back, and each kept call's ``stream_offset`` points into them;
- outbound wire segments keep the parts of their bytes that are kept, at the new offsets
  (a segment whose bytes are all gone goes; zero-length ones, SYN, FIN, pure ACKs, stay,
  their sequence number moved to the new offset); inbound segments acknowledge the new
  offsets. The recorded peer, which the replay derives from these segments, then reacts to
  the reduced stream as the recorded one reacted to the same bytes.

Inbound streams, events and timings are kept as recorded: the peer's own data does not
depend on the driver's bytes in the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from wskreplay.formats import ntstatus as nt
from wskreplay.trace.model import CallTable, Direction, SegmentTable, Stream, Trace


@dataclass(frozen=True)
class Selection:
    """Which calls of the original trace a candidate keeps, and how many bytes of each."""

    rows: np.ndarray
    """Indices into the original trace's calls, increasing."""
    lengths: np.ndarray
    """Bytes kept of each selected call (a prefix), <= its recorded length."""

    @classmethod
    def everything(cls, trace: Trace) -> Selection:
        n = len(trace.calls)
        return cls(np.arange(n, dtype=np.int64), trace.calls.column("length").astype(np.int64))

    def of_rows(self, rows: np.ndarray) -> Selection:
        """The selection restricted to ``rows`` (a subset of its own rows)."""
        keep = np.isin(self.rows, rows)
        return Selection(self.rows[keep], self.lengths[keep])

    def with_length(self, row: int, length: int) -> Selection:
        lengths = self.lengths.copy()
        lengths[np.searchsorted(self.rows, row)] = length
        return Selection(self.rows, lengths)

    @property
    def bytes(self) -> int:
        return int(self.lengths.sum())


class _OffsetMap:
    """Maps offsets of an original stream onto the stream of only the kept ranges."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray) -> None:
        order = np.argsort(starts, kind="stable")
        self.starts, self.ends = starts[order], ends[order]
        self.before = np.concatenate(([0], np.cumsum(self.ends - self.starts)))

    def point(self, offsets: np.ndarray) -> np.ndarray:
        """Kept bytes before each offset (the ranges are sorted and disjoint, so all but the
        last range starting before an offset lie wholly before it)."""
        if not len(self.starts):
            return np.zeros(len(offsets), np.int64)
        k = np.searchsorted(self.starts, offsets, side="left")
        j = np.maximum(k - 1, 0)
        last = np.minimum(offsets, self.ends[j]) - self.starts[j]
        return np.where(k > 0, self.before[j] + last, 0)

    def kept(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The kept parts of [lo, hi), as original offsets."""
        k0 = int(np.searchsorted(self.ends, lo, side="right"))
        k1 = int(np.searchsorted(self.starts, hi, side="left"))
        return [
            (max(lo, int(self.starts[k])), min(hi, int(self.ends[k])))
            for k in range(k0, k1)
            if max(lo, int(self.starts[k])) < min(hi, int(self.ends[k]))
        ]


def candidate(trace: Trace, selection: Selection) -> Trace:
    """The trace of only the selected calls (with their kept bytes), re-derived."""
    calls = trace.calls
    rows = selection.rows
    table = calls.take(rows)
    cols = table.columns
    socket = cols["socket"].astype(np.int64)
    status = cols["status"].astype(np.int64)
    direction = np.where(nt.success_mask(status), int(Direction.OUT), int(Direction.UNSENT))
    old_offset = cols["stream_offset"].astype(np.int64)
    new_length = selection.lengths.astype(np.int64)
    new_offset = np.zeros(len(rows), np.int64)
    maps: dict[tuple[int, int], _OffsetMap] = {}
    streams: dict[tuple[int, Direction], Stream] = {}
    for key in sorted(set(zip(socket.tolist(), direction.tolist(), strict=True))):
        mine = np.flatnonzero((socket == key[0]) & (direction == key[1]))
        starts, ends = old_offset[mine], old_offset[mine] + new_length[mine]
        new_offset[mine] = np.concatenate(([0], np.cumsum(new_length[mine])[:-1]))
        maps[key] = _OffsetMap(starts, ends)
        source = trace.streams.get((key[0], Direction(key[1])))
        if source is not None:
            streams[(key[0], Direction(key[1]))] = _cut_stream(source, maps[key])
    for key, stream in trace.streams.items():
        if key[1] == Direction.IN and key[0] in set(socket.tolist()):
            streams[key] = stream
    info = cols["information"].astype(np.int64)
    old_length = cols["length"].astype(np.int64)
    cols = {
        **cols,
        "seq": np.arange(len(rows), dtype=np.int64),
        "length": new_length,
        "stream_offset": new_offset,
        "information": np.where(info >= old_length, new_length, np.minimum(info, new_length)),
    }
    kept_sockets = set(socket.tolist())
    return replace(
        trace,
        sockets={s: v for s, v in trace.sockets.items() if s in kept_sockets},
        calls=CallTable(cols, table.control_blob),
        streams=streams,
        segments=_cut_segments(trace.segments, maps, kept_sockets),
        events=[e for e in trace.events if e.socket is None or e.socket in kept_sockets],
        metadata=dict(trace.metadata),
    )


def _cut_stream(source: Stream, offsets: _OffsetMap) -> Stream:
    if source.data is None:
        length = int(offsets.before[-1])
        return Stream(source.socket, source.direction, length, None, [], [])
    data = bytearray()
    gaps: list[tuple[int, int]] = []
    for lo, hi in zip(offsets.starts.tolist(), offsets.ends.tolist(), strict=True):
        at = len(data)
        data += source.data[lo:hi]
        for g0, g1 in source.gaps:
            a, b = max(g0, lo), min(g1, hi)
            if a < b:
                gaps.append((at + a - lo, at + b - lo))
    return Stream(source.socket, source.direction, len(data), data, gaps)


def _cut_segments(
    segments: SegmentTable, maps: dict[tuple[int, int], _OffsetMap], sockets: set[int]
) -> SegmentTable:
    cols = segments.columns
    rows: dict[str, list[int]] = {name: [] for name in cols}
    empty = _OffsetMap(np.empty(0, np.int64), np.empty(0, np.int64))
    for i in range(len(segments)):
        sid = int(cols["socket"][i])
        if sid not in sockets:
            continue
        row = {name: int(cols[name][i]) for name in cols}
        if row["direction"] == Direction.IN:
            out = maps.get((sid, int(Direction.OUT)), empty)
            row["ack"] = int(out.point(np.array([row["ack"]]))[0])
            _append(rows, row)
            continue
        out = maps.get((sid, int(Direction.OUT)), empty)
        lo, hi = row["seq"], row["seq"] + row["length"]
        if lo == hi:
            row["seq"] = int(out.point(np.array([lo]))[0])
            _append(rows, row)
            continue
        for a, b in out.kept(lo, hi):
            _append(rows, {**row, "seq": int(out.point(np.array([a]))[0]), "length": b - a})
    if not rows["socket"]:
        return SegmentTable.empty()
    return SegmentTable({name: np.array(values, np.int64) for name, values in rows.items()})


def _append(rows: dict[str, list[int]], row: dict[str, int]) -> None:
    for name, value in row.items():
        rows[name].append(value)
