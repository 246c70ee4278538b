"""TCP stream reassembly, per connection and direction, as Wireshark does it.

Rules (each matches what ``tshark -z follow,tcp,raw`` outputs, checked by the tests):

- Offsets count from the byte after the SYN; without a SYN in a direction, from the lowest
  sequence number seen in it. Sequence numbers are unwrapped past 2**32.
- Retransmitted bytes are kept once. When overlapping copies differ, **the first copy to
  arrive wins** (tshark's follow output keeps the bytes it already had).
- Out-of-order segments are placed at their offset. Bytes no segment carried (lost, or cut
  by the capture's snap length) are gaps ``[start, end)``: never filled in, never shifting
  later bytes. ``bytes`` and ``sha256`` cover the bytes present, gaps excluded.
- A 4-tuple is one connection for the whole capture.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from wskreplay.formats import pcap
from wskreplay.formats.tcpip import (
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    TcpPackets,
    decode_tcp,
    endpoint,
    tcp_options,
)
from wskreplay.model import Direction as Direction_
from wskreplay.model import SegmentTable

WRAP = 1 << 32


@dataclass
class Direction:
    """One direction of a connection: its bytes (as pieces of the capture buffer) and gaps."""

    pieces: list[tuple[int, int, int]] = field(default_factory=list)
    """(stream offset, buffer offset, length), sorted by stream offset, not overlapping."""
    gaps: list[tuple[int, int]] = field(default_factory=list)
    length: int = 0
    """Known extent of the stream: the end of the last byte any segment carried."""
    segments: int = 0
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Rows of the TcpPackets table that belong to this direction, in arrival order."""
    rel_seq: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    rel_ack: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    window: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    base: int = 0
    mss: int | None = None
    wscale: int | None = None

    @property
    def present(self) -> int:
        return sum(n for _, _, n in self.pieces)

    def chunks(self, buffer: memoryview) -> Iterator[memoryview]:
        for _, at, n in self.pieces:
            yield buffer[at : at + n]

    def sha256(self, buffer: memoryview) -> str:
        h = hashlib.sha256()
        for chunk in self.chunks(buffer):
            h.update(chunk)
        return h.hexdigest()


@dataclass
class Connection:
    client: tuple[int, int, int]
    server: tuple[int, int, int]
    first_ns: int
    last_ns: int
    syn: bool
    fin: bool
    rst: bool
    to_server: Direction
    to_client: Direction

    def segment_table(
        self, seg: TcpPackets, socket: int, *, client_sends_out: bool = True
    ) -> SegmentTable:
        """This connection's segments in the trace model, in capture order.

        ``client_sends_out``: the client is the recorded driver (its segments are OUT).
        """
        rows = np.concatenate([self.to_server.rows, self.to_client.rows])
        out = int(Direction_.OUT if client_sends_out else Direction_.IN)
        direction = np.concatenate(
            [np.full(len(self.to_server.rows), out), np.full(len(self.to_client.rows), 1 - out)]
        )
        cols = {
            "time_ns": seg.time_ns[rows],
            "socket": np.full(len(rows), socket),
            "direction": direction,
            "length": seg.payload_len[rows],
            "seq": np.concatenate([self.to_server.rel_seq, self.to_client.rel_seq]),
            "flags": seg.flags[rows],
            "ack": np.concatenate([self.to_server.rel_ack, self.to_client.rel_ack]),
            "window": np.concatenate([self.to_server.window, self.to_client.window]),
        }
        order = np.argsort(rows, kind="stable")
        return SegmentTable({k: np.asarray(v)[order] for k, v in cols.items()})

    @property
    def client_text(self) -> str:
        return endpoint(*self.client)

    @property
    def server_text(self) -> str:
        return endpoint(*self.server)


@dataclass
class Reassembly:
    frames: pcap.Frames
    segments: TcpPackets
    connections: list[Connection]
    counts: dict[str, int]


def _unwrap(values: np.ndarray, base: int) -> np.ndarray:
    """Sequence numbers relative to ``base``, unwrapped past 2**32 in arrival order."""
    rel = (values - base) % WRAP
    if len(rel) == 0:
        return rel
    step = np.diff(rel)
    step = (step + WRAP // 2) % WRAP - WRAP // 2
    first = rel[0] - WRAP if rel[0] >= WRAP // 2 else rel[0]
    return np.concatenate(([first], first + np.cumsum(step)))


def _assemble(starts: np.ndarray, lens: np.ndarray, offs: np.ndarray) -> list[tuple[int, int, int]]:
    """Pieces of the stream; where copies overlap, the first to arrive wins."""
    keep = lens > 0
    starts, lens, offs = starts[keep], lens[keep], offs[keep]
    if len(starts) == 0:
        return []
    ends = starts + lens
    prior_end = np.maximum.accumulate(np.concatenate(([starts[0]], ends[:-1])))
    if np.all(starts <= prior_end):
        # No segment opens a hole: coverage stays one interval and each segment adds
        # what lies past everything before it.
        new_start = np.maximum(starts, prior_end)
        adds = ends > new_start
        return list(
            zip(
                new_start[adds].tolist(),
                (offs + new_start - starts)[adds].tolist(),
                (ends - new_start)[adds].tolist(),
                strict=True,
            )
        )
    return _assemble_with_holes(starts.tolist(), ends.tolist(), offs.tolist())


def _assemble_with_holes(
    starts: list[int], ends: list[int], offs: list[int]
) -> list[tuple[int, int, int]]:
    iv_start: list[int] = []
    iv_end: list[int] = []
    pieces: list[tuple[int, int, int]] = []
    for s, e, off in zip(starts, ends, offs, strict=True):
        i = bisect.bisect_right(iv_end, s)
        if i == len(iv_start) and iv_end and iv_end[-1] == s:
            pieces.append((s, off, e - s))
            iv_end[-1] = e
            continue
        pos, j = s, i
        while pos < e:
            if j < len(iv_start) and iv_start[j] <= pos:
                pos = max(pos, iv_end[j])
                j += 1
                continue
            stop = min(e, iv_start[j]) if j < len(iv_start) else e
            pieces.append((pos, off + pos - s, stop - pos))
            pos = stop
        lo = bisect.bisect_left(iv_end, s)
        hi = bisect.bisect_right(iv_start, e)
        if lo < hi:
            s, e = min(s, iv_start[lo]), max(e, iv_end[hi - 1])
        iv_start[lo:hi] = [s]
        iv_end[lo:hi] = [e]
    pieces.sort()
    return pieces


def _gaps(pieces: list[tuple[int, int, int]], length: int) -> list[tuple[int, int]]:
    gaps: list[tuple[int, int]] = []
    pos = 0
    for start, _, n in pieces:
        if start > pos:
            gaps.append((pos, start))
        pos = max(pos, start + n)
    if length > pos:
        gaps.append((pos, length))
    return gaps


def _direction(seg: TcpPackets, rows: np.ndarray, buffer: memoryview) -> Direction:
    d = Direction(rows=rows, segments=len(rows))
    if not len(rows):
        return d
    seq = seg.seq[rows]
    flags = seg.flags[rows]
    syn = np.flatnonzero(flags & TCP_SYN)
    if len(syn):
        d.base = (int(seq[syn[0]]) + 1) % WRAP
        header = bytes(
            buffer[
                int(seg.header_offset[rows[syn[0]]]) : int(
                    seg.header_offset[rows[syn[0]]] + seg.captured_header_len[rows[syn[0]]]
                )
            ]
        )
        opts = tcp_options(header)
        d.mss, d.wscale = opts.get("mss"), opts.get("wscale")
    rel = _unwrap(seq, d.base)
    rel = rel + (flags & TCP_SYN != 0)
    if not len(syn):
        data = seg.payload_len[rows] > 0
        low = int(rel[data].min()) if data.any() else int(rel.min())
        d.base = (d.base + low) % WRAP
        rel = rel - low
    d.rel_seq = rel
    lens = seg.captured_len[rows]
    d.pieces = _assemble(rel, lens, seg.payload_offset[rows])
    carried = seg.payload_len[rows] > 0
    d.length = int((rel + seg.payload_len[rows])[carried].max()) if carried.any() else 0
    d.gaps = _gaps(d.pieces, d.length)
    d.window = seg.window[rows]
    return d


def _finish_direction(seg: TcpPackets, d: Direction, other: Direction) -> None:
    """Acks relative to the other direction's stream, windows scaled as announced."""
    if not len(d.rows):
        return
    flags = seg.flags[d.rows]
    rel = (
        _unwrap(seg.ack[d.rows], other.base) if len(other.rows) else np.zeros(len(d.rows), np.int64)
    )
    d.rel_ack = np.where(flags & TCP_ACK != 0, rel, 0)
    if d.wscale is not None and other.wscale is not None:
        d.window = np.where(flags & TCP_SYN != 0, d.window, d.window << d.wscale)


def reassemble(frames: pcap.Frames) -> Reassembly:
    seg, counts = decode_tcp(frames)
    n = len(seg)
    a_is_src = (seg.src_hi < seg.dst_hi) | (
        (seg.src_hi == seg.dst_hi)
        & ((seg.src_lo < seg.dst_lo) | ((seg.src_lo == seg.dst_lo) & (seg.sport <= seg.dport)))
    )
    key = (
        np.stack(
            [
                np.where(a_is_src, seg.src_hi, seg.dst_hi).view(np.int64),
                np.where(a_is_src, seg.src_lo, seg.dst_lo).view(np.int64),
                np.where(a_is_src, seg.sport, seg.dport),
                np.where(a_is_src, seg.dst_hi, seg.src_hi).view(np.int64),
                np.where(a_is_src, seg.dst_lo, seg.src_lo).view(np.int64),
                np.where(a_is_src, seg.dport, seg.sport),
            ],
            axis=1,
        )
        if n
        else np.empty((0, 6), np.int64)
    )
    connections: list[Connection] = []
    if n:
        _, inverse = np.unique(key, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        groups = np.split(order, bounds)
        groups.sort(key=lambda g: g[0])
        for rows in groups:
            connections.append(_connection(seg, rows, frames.buffer))
    counts = {**counts, "packets": len(frames)}
    return Reassembly(frames, seg, connections, counts)


def _connection(seg: TcpPackets, rows: np.ndarray, buffer: memoryview) -> Connection:
    flags = seg.flags[rows]
    syn_only = np.flatnonzero((flags & TCP_SYN != 0) & (flags & TCP_ACK == 0))
    first = rows[syn_only[0]] if len(syn_only) else rows[0]
    client = (int(seg.src_hi[first]), int(seg.src_lo[first]), int(seg.sport[first]))
    server = (int(seg.dst_hi[first]), int(seg.dst_lo[first]), int(seg.dport[first]))
    from_client = (
        (seg.src_hi[rows] == client[0])
        & (seg.src_lo[rows] == client[1])
        & (seg.sport[rows] == client[2])
    )
    to_server = _direction(seg, rows[from_client], buffer)
    to_client = _direction(seg, rows[~from_client], buffer)
    _finish_direction(seg, to_server, to_client)
    _finish_direction(seg, to_client, to_server)
    times = seg.time_ns[rows]
    return Connection(
        client=client,
        server=server,
        first_ns=int(times.min()),
        last_ns=int(times.max()),
        syn=bool((flags & TCP_SYN).any()),
        fin=bool((flags & TCP_FIN).any()),
        rst=bool((flags & TCP_RST).any()),
        to_server=to_server,
        to_client=to_client,
    )


def _direction_summary(d: Direction, buffer: memoryview) -> dict:
    return {
        "bytes": d.present,
        "sha256": d.sha256(buffer),
        "segments": d.segments,
        "gaps": [[s, e] for s, e in d.gaps],
    }


def streams_summary(result: Reassembly) -> dict:
    """The ``wskreplay streams --json`` document (times are UTC nanoseconds)."""
    buffer = result.frames.buffer
    return {
        "file": result.frames.path,
        "packets": result.counts["packets"],
        "tcp_packets": result.counts["tcp_packets"],
        "connections": [
            {
                "client": c.client_text,
                "server": c.server_text,
                "first_ns": c.first_ns,
                "last_ns": c.last_ns,
                "syn": c.syn,
                "fin": c.fin,
                "rst": c.rst,
                "client_to_server": _direction_summary(c.to_server, buffer),
                "server_to_client": _direction_summary(c.to_client, buffer),
            }
            for c in result.connections
        ],
    }


def dump_streams(result: Reassembly, folder: str) -> list[str]:
    """Write each direction's bytes present (gaps left out) to ``folder``; return the paths."""
    import os

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, c in enumerate(result.connections):
        for name, d in (("client_to_server", c.to_server), ("server_to_client", c.to_client)):
            path = os.path.join(folder, f"{i:05d}-{name}.bin")
            with open(path, "wb") as f:
                for chunk in d.chunks(result.frames.buffer):
                    f.write(chunk)
            paths.append(path)
    return paths
