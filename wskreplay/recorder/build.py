"""Pieces of a trace shared by every import path: streams, segments and wire events of one
captured connection, placed on the trace's time line."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from wskreplay.formats import pieces
from wskreplay.formats.reference import reference_asked
from wskreplay.formats.tcpip import TCP_FIN, TCP_RST, TcpPackets
from wskreplay.policies import DEFAULT_RESET, ResetPolicy
from wskreplay.recorder import tcp
from wskreplay.recorder.correlate import merge_intervals
from wskreplay.trace.model import Direction, Event, SegmentTable, Stream

WINDOW = 4 << 20
"""Bytes of a stream assembled at a time when it is written (the writer's chunk size)."""


@dataclass
class StreamLayout:
    """Where each byte of one stream comes from, without holding the bytes: pieces of a
    capture buffer (the wire) and ``overlays`` (bytes the driver's events carried, which
    win over the wire's), minus ``holes`` (ranges forgotten on purpose, e.g. past a payload
    cap). Written a window at a time, so a stream never has to fit in memory."""

    socket: int
    direction: Direction
    length: int
    buffer: memoryview | None = None
    starts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ats: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    lens: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    overlays: list[tuple[int, bytes]] = field(default_factory=list)
    holes: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        socket: int,
        direction: Direction,
        length: int,
        wire: tcp.Direction | None = None,
        buffer: memoryview | None = None,
        overlays: list[tuple[int, bytes]] | None = None,
    ) -> StreamLayout:
        layout = cls(socket, direction, length, buffer, overlays=sorted(overlays or []))
        if wire is not None and buffer is not None:
            p = wire.pieces
            inside = p.start < length
            layout.starts = p.start[inside]
            layout.ats = p.at[inside]
            layout.lens = np.minimum(p.length[inside], length - layout.starts)
        return layout

    @property
    def ends(self) -> np.ndarray:
        if getattr(self, "_ends", None) is None or len(self._ends) != len(self.starts):
            self._ends = self.starts + self.lens
        return self._ends

    def _overlays_within(self, lo: int, hi: int) -> tuple[int, int]:
        """The run of (sorted) overlays that may reach into [lo, hi): from the first whose
        end, or an earlier one's, passes lo, to the last that starts before hi."""
        if not self.overlays:
            return 0, 0
        starts = getattr(self, "_overlay_starts", None)
        if starts is None or len(starts) != len(self.overlays):
            self._overlay_starts = np.array([o for o, _ in self.overlays], dtype=np.int64)
            ends = np.array([o + len(r) for o, r in self.overlays], dtype=np.int64)
            self._overlay_reach = np.maximum.accumulate(ends)
        first = int(np.searchsorted(self._overlay_reach, lo, side="right"))
        last = int(np.searchsorted(self._overlay_starts, hi, side="left"))
        return first, max(first, last)

    def gaps(self) -> list[tuple[int, int]]:
        starts = [self.starts, np.array([o for o, _ in self.overlays], dtype=np.int64)]
        ends = [
            self.ends,
            np.array([o + len(r) for o, r in self.overlays], dtype=np.int64),
        ]
        cs, ce = merge_intervals(np.concatenate(starts), np.concatenate(ends))
        gaps = complement(cs, ce, self.length)
        if not self.holes:
            return gaps
        lo = np.array([a for a, _ in gaps + self.holes], dtype=np.int64)
        hi = np.array([b for _, b in gaps + self.holes], dtype=np.int64)
        ms, me = merge_intervals(lo, np.minimum(hi, self.length))
        return list(zip(ms.tolist(), me.tolist(), strict=True))

    def window(self, lo: int, hi: int) -> bytearray:
        """Bytes [lo, hi) as assembled (gap bytes zero)."""
        out = bytearray(hi - lo)
        if len(self.starts) and self.buffer is not None:
            first = int(np.searchsorted(self.ends, lo, side="right"))
            last = int(np.searchsorted(self.starts, hi, side="left"))
            s = self.starts[first:last]
            a = np.maximum(s, lo)
            n = np.minimum(s + self.lens[first:last], hi) - a
            some = n > 0
            pieces.copy(
                out, (a - lo)[some], self.buffer, (self.ats[first:last] + a - s)[some], n[some]
            )
        first, last = self._overlays_within(lo, hi)
        for offset, raw in self.overlays[first:last]:
            a, b = max(offset, lo), min(offset + len(raw), hi)
            if a < b:
                out[a - lo : b - lo] = raw[a - offset : b - offset]
        for a, b in self.holes:
            a, b = max(a, lo), min(b, hi)
            if a < b:
                out[a - lo : b - lo] = bytes(b - a)
        return out

    def windows(self, lo: np.ndarray, hi: np.ndarray) -> bytearray:
        """``window(lo[i], hi[i])`` of every i, one after another, copied in one go where
        the stream is wire pieces alone (no overlays, no holes); a window at a time is the
        reference (``WSKREPLAY_PURE_PYTHON=1``)."""
        simple = not (self.overlays or self.holes) and self.buffer is not None
        if not simple or not len(self.starts) or reference_asked():
            ranges = zip(lo.tolist(), hi.tolist(), strict=True)
            return bytearray().join(self.window(a, b) for a, b in ranges)
        first = np.searchsorted(self.ends, lo, side="right")
        count = np.maximum(np.searchsorted(self.starts, hi, side="left") - first, 0)
        call = np.repeat(np.arange(len(lo)), count)
        piece = np.arange(len(call)) - np.repeat(np.cumsum(count) - count, count) + first[call]
        s = self.starts[piece]
        a = np.maximum(s, lo[call])
        n = np.minimum(s + self.lens[piece], hi[call]) - a
        placed = np.cumsum(hi - lo) - (hi - lo)
        out = bytearray(int((hi - lo).sum()))
        some = n > 0
        pieces.copy(
            out,
            (placed[call] + a - lo[call])[some],
            self.buffer,
            (self.ats[piece] + a - s)[some],
            n[some],
        )
        return out

    def spans(self, size: int = WINDOW) -> Iterator[tuple[int, memoryview]]:
        """(offset, bytes) of every byte present, in order, at most ``size`` at a time."""
        gaps = self.gaps()
        for lo in range(0, self.length, size):
            hi = min(lo + size, self.length)
            inside = [(max(a, lo), min(b, hi)) for a, b in gaps if a < hi and b > lo]
            if inside == [(lo, hi)]:
                continue
            view = memoryview(self.window(lo, hi))
            pos = lo
            for a, b in [*inside, (hi, hi)]:
                if a > pos:
                    yield pos, view[pos - lo : a - lo]
                pos = max(pos, b)

    def materialise(self) -> Stream:
        return Stream(
            self.socket, self.direction, self.length, self.window(0, self.length), self.gaps()
        )


def assemble_stream(
    socket: int,
    direction: Direction,
    length: int,
    wire: tcp.Direction | None,
    buffer: memoryview | None,
    overlays: list[tuple[int, bytes]] | None = None,
) -> Stream:
    """A whole stream in memory (see :class:`StreamLayout`)."""
    return StreamLayout.of(socket, direction, length, wire, buffer, overlays).materialise()


def complement(starts: np.ndarray, ends: np.ndarray, length: int) -> list[tuple[int, int]]:
    """The gaps of [0, length) that the disjoint sorted intervals leave."""
    edges_lo = np.concatenate(([0], ends))
    edges_hi = np.concatenate((starts, [length]))
    keep = edges_hi > edges_lo
    return list(zip(edges_lo[keep].tolist(), edges_hi[keep].tolist(), strict=True))


def connection_segments(
    conn: tcp.Connection, seg: TcpPackets, socket: int, *, local_is_client: bool, shift_ns: int
) -> SegmentTable:
    """The connection's segments with the recorded side's as OUT, times moved by
    ``shift_ns`` (onto the trace's zero)."""
    table = conn.segment_table(seg, socket, client_sends_out=local_is_client)
    cols = table.columns
    cols["time_ns"] = cols["time_ns"] + shift_ns
    return SegmentTable(cols)


def wire_events(
    conn: tcp.Connection,
    seg: TcpPackets,
    socket: int,
    *,
    local_is_client: bool,
    shift_ns: int,
    policy: ResetPolicy = DEFAULT_RESET,
) -> list[Event]:
    """Resets and FINs seen on the wire, as events naming who sent them. The first RST
    the other side would act on is the reset; one before it that the other side ignored
    (``policy``) is recorded with ``ignored``."""
    out = []
    accepted = conn.accepted_resets(seg, policy)
    pairs = ((conn.to_server, local_is_client), (conn.to_client, not local_is_client))
    for (d, by_local), acted in zip(pairs, accepted, strict=True):
        flags = seg.flags[d.rows]
        who = "local" if by_local else "peer"
        fin = np.flatnonzero(flags & TCP_FIN)
        if len(fin):
            t = int(seg.time_ns[d.rows[fin[0]]]) + shift_ns
            out.append(Event(t, "fin", socket, {"by": who, "source": "wire"}))
        rst = np.flatnonzero(flags & TCP_RST)
        first = np.flatnonzero(acted)
        stop = int(first[0]) if len(first) else None
        for k in rst.tolist():
            if stop is not None and k > stop:
                break
            t = int(seg.time_ns[d.rows[k]]) + shift_ns
            attrs = {"by": who, "source": "wire"}
            if k != stop:
                attrs["ignored"] = True
            out.append(Event(t, "reset", socket, attrs))
    return out


def endpoint_text(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
