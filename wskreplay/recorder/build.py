"""Pieces of a trace shared by every import path: streams, segments and wire events of one
captured connection, placed on the trace's time line."""

from __future__ import annotations

import numpy as np

from wskreplay.formats.tcpip import TCP_FIN, TCP_RST, TcpPackets
from wskreplay.model import Direction, Event, SegmentTable, Stream
from wskreplay.recorder import tcp
from wskreplay.recorder.correlate import merge_intervals


def assemble_stream(
    socket: int,
    direction: Direction,
    length: int,
    wire: tcp.Direction | None,
    buffer: memoryview | None,
    overlays: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
) -> Stream:
    """A stream of ``length`` bytes: the wire's bytes, then ``overlays`` (offset, bytes) on
    top (what the driver handed WSK wins over what the wire showed); the rest are gaps."""
    data = bytearray(length)
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    if wire is not None and buffer is not None and len(wire.pieces.start):
        p = wire.pieces
        inside = p.start < length
        for s, at, n in zip(
            p.start[inside].tolist(), p.at[inside].tolist(), p.length[inside].tolist(), strict=True
        ):
            n = min(n, length - s)
            data[s : s + n] = buffer[at : at + n]
        starts.append(p.start[inside])
        ends.append(np.minimum(p.start[inside] + p.length[inside], length))
    if overlays:
        for offset, raw in overlays:
            data[offset : offset + len(raw)] = raw
        starts.append(np.array([o for o, _ in overlays], dtype=np.int64))
        ends.append(np.array([o + len(r) for o, r in overlays], dtype=np.int64))
    cs, ce = merge_intervals(
        np.concatenate(starts) if starts else np.empty(0, np.int64),
        np.concatenate(ends) if ends else np.empty(0, np.int64),
    )
    return Stream(socket, direction, length, data, complement(cs, ce, length))


def complement(starts: np.ndarray, ends: np.ndarray, length: int) -> list[tuple[int, int]]:
    """The gaps of [0, length) that the disjoint sorted intervals leave."""
    edges_lo = np.concatenate(([0], ends))
    edges_hi = np.concatenate((starts, [length]))
    keep = edges_hi > edges_lo
    return list(zip(edges_lo[keep].tolist(), edges_hi[keep].tolist(), strict=True))


def add_gaps(stream: Stream, ranges: list[tuple[int, int]]) -> None:
    """Forget the bytes of ``ranges`` (zeroed, recorded as gaps)."""
    if not ranges or stream.data is None:
        return
    for s, e in ranges:
        stream.data[s:e] = bytes(e - s)
    lo = np.array([s for s, _ in stream.gaps] + [s for s, _ in ranges], dtype=np.int64)
    hi = np.array([e for _, e in stream.gaps] + [e for _, e in ranges], dtype=np.int64)
    ms, me = merge_intervals(lo, hi)
    stream.gaps = list(zip(ms.tolist(), me.tolist(), strict=True))


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
    conn: tcp.Connection, seg: TcpPackets, socket: int, *, local_is_client: bool, shift_ns: int
) -> list[Event]:
    """Resets and FINs seen on the wire, as events naming who sent them."""
    out = []
    for d, by_local in ((conn.to_server, local_is_client), (conn.to_client, not local_is_client)):
        flags = seg.flags[d.rows]
        who = "local" if by_local else "peer"
        for mask, kind in ((TCP_RST, "reset"), (TCP_FIN, "fin")):
            hit = np.flatnonzero(flags & mask)
            if len(hit):
                t = int(seg.time_ns[d.rows[hit[0]]]) + shift_ns
                out.append(Event(t, kind, socket, {"by": who, "source": "wire"}))
    return out


def endpoint_text(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
