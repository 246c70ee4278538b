"""Frames in, TCP segments and a report out: the walk run over a capture a chunk of
frames at a time, then over the IP datagrams reassembled from fragments."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np

from wskreplay.formats import pcap
from wskreplay.formats.layers import ip, link, tunnels, wifi  # noqa: F401  (the handlers)
from wskreplay.formats.layers.fragments import Completed, Reassembler
from wskreplay.formats.layers.link import LINKTYPE_CODE
from wskreplay.formats.layers.report import PRIORITY, DecodeReport
from wskreplay.formats.layers.walk import (
    Outcome,
    PathTable,
    Reason,
    Units,
    Walk,
    WalkOptions,
    reason_text,
)
from wskreplay.formats.reference import accelerator

DECODE_CHUNK = 1 << 14
"""Frames decoded at a time: each field is gathered from every frame of a chunk at once,
and a chunk of 16,384 frames spans few enough pages that those gathers stay within the
CPU's TLB (131,072 frames: 15% slower, docs/performance.md)."""
DECODE_CHUNK_BYTES = 64 << 20
"""A chunk also ends where its frames span this much of the capture: a capture of jumbo
frames would otherwise map gigabytes between two releases of its pages."""
MAX_REASSEMBLY_DEPTH = 4
"""Fragments inside reassembled datagrams are reassembled again, this many levels deep."""


@dataclass
class TcpPackets:
    """The TCP segments among a capture's frames, as columns (row = segment), in capture
    order. Offsets index the decode's :attr:`Decoded.buffer`."""

    frame: np.ndarray
    time_ns: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray
    window: np.ndarray
    header_offset: np.ndarray
    """Buffer offset of the TCP header (options are read from here for SYNs)."""
    header_len: np.ndarray
    payload_offset: np.ndarray
    payload_len: np.ndarray
    """TCP payload bytes the segment carried on the wire (from the IP length)."""
    captured_len: np.ndarray
    """Of those, bytes present in the capture (fewer when the snap length cut the frame)."""
    captured_header_len: np.ndarray
    path: np.ndarray
    """Encapsulation path id (:attr:`DecodeReport.paths`)."""

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def concat(cls, parts: Sequence[TcpPackets]) -> TcpPackets:
        if len(parts) == 1:
            return parts[0]
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    @classmethod
    def empty(cls) -> TcpPackets:
        return cls(
            **{f.name: np.empty(0, _COLUMN_TYPES.get(f.name, np.int64)) for f in fields(cls)}
        )

    def take(self, rows: np.ndarray) -> TcpPackets:
        return TcpPackets(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


_COLUMN_TYPES = {
    "src_hi": np.uint64,
    "src_lo": np.uint64,
    "dst_hi": np.uint64,
    "dst_lo": np.uint64,
    "path": np.int32,
}
"""The :class:`TcpPackets` columns that are not int64 (addresses as the walk keeps them)."""


class _SegmentColumns:
    """The chunks' segments written in place, one after another, into columns sized for
    one segment a frame: no concatenation at the end, and no second copy of every column
    at the peak (pages never written cost no memory). Grown when A-MSDUs make more."""

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self.columns = {
            f.name: np.empty(capacity, _COLUMN_TYPES.get(f.name, np.int64))
            for f in fields(TcpPackets)
        }

    def add(self, part: TcpPackets) -> None:
        end = self.n + len(part)
        if end > len(self.columns["frame"]):
            grown = max(end, 2 * len(self.columns["frame"]))
            for name, column in self.columns.items():
                bigger = np.empty(grown, column.dtype)
                bigger[: self.n] = column[: self.n]
                self.columns[name] = bigger
        for name, column in self.columns.items():
            column[self.n : end] = getattr(part, name)
        self.n = end

    def packets(self) -> TcpPackets:
        return TcpPackets(**{name: column[: self.n] for name, column in self.columns.items()})


class JoinedBuffer:
    """The capture's bytes followed by bytes the decoder made (reassembled datagrams),
    sliced as one: a slice never spans two parts (a segment lies in one datagram)."""

    def __init__(self, parts: list[memoryview | bytes]) -> None:
        self.parts = [memoryview(p) for p in parts]
        self.starts = np.cumsum([0, *(len(p) for p in self.parts)]).tolist()

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, key: slice) -> memoryview:
        start = key.start or 0
        k = min(bisect.bisect_right(self.starts, start) - 1, len(self.parts) - 1)
        base = self.starts[k]
        stop = key.stop if key.stop is not None else len(self)
        return self.parts[k][start - base : stop - base]


@dataclass(frozen=True)
class DecodeOptions:
    tunnel_ports: tuple[tuple[str, int], ...] = ()
    """Extra UDP ports for tunnels, e.g. ``(("vxlan", 8472),)``."""

    def walk_options(self) -> WalkOptions:
        extra: dict[str, tuple[int, ...]] = {}
        for name, port in self.tunnel_ports:
            extra[name] = (*extra.get(name, ()), port)
        return WalkOptions(udp_tunnels=tunnels.port_table(extra))


@dataclass
class Decoded:
    segments: TcpPackets
    report: DecodeReport
    buffer: memoryview | JoinedBuffer
    """Where the segments' offsets point: the capture, and any reassembled datagrams."""


def _chunks(frames: pcap.Frames, rows: int, span: int) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` ranges of at most ``rows`` frames, and, where the frames lie in file
    order, spanning at most ``span`` bytes of it (one frame at least)."""
    n, offsets = len(frames), frames.offset
    in_order = n < 2 or bool(np.all(offsets[1:] >= offsets[:-1]))
    lo = 0
    while lo < n:
        hi = min(lo + rows, n)
        if in_order:
            reach = int(np.searchsorted(offsets, int(offsets[lo]) + span, side="left"))
            hi = min(hi, max(reach, lo + 1))
        yield lo, hi
        lo = hi


class DecodeParts:
    """The decode a part at a time: each chunk's segments in capture order, then those of
    the datagrams reassembled from fragments (whose frames may be earlier). ``report`` and
    ``buffer`` are whole once the parts are all taken, and ``reassembled`` says whether
    the last parts came from fragments (:func:`decode` then orders all rows by frame).

    ``slices``: the frames as consecutive :class:`~pcap.Frames` of a part of the capture
    each (``pcap.FrameSlices``), taken in turn instead of ``frames`` (which then only
    gives the buffer): frame numbers are the whole capture's. Either way, only the times
    of the frames that complete a datagram are kept for the datagrams' walk at the end."""

    def __init__(
        self,
        frames: pcap.Frames,
        options: DecodeOptions | None = None,
        chunk: int = DECODE_CHUNK,
        chunk_bytes: int = DECODE_CHUNK_BYTES,
        slices: Iterable[pcap.Frames] | None = None,
    ) -> None:
        self.frames = frames
        self.slices = slices
        self.walk_options = (options or DecodeOptions()).walk_options()
        self.chunk, self.chunk_bytes = chunk, chunk_bytes
        self.report = DecodeReport()
        self.buffer: memoryview | JoinedBuffer = frames.buffer
        self.reassembled = False

    def __iter__(self) -> Iterator[TcpPackets]:
        report = self.report
        sink = Reassembler()
        completing: dict[int, int] = {}
        for frames in self.slices if self.slices is not None else [self.frames]:
            times, linktypes = (
                _Shifted(frames.time_ns, frames.first),
                _Shifted(frames.linktype, frames.first),
            )
            for lo, hi in _chunks(frames, self.chunk, self.chunk_bytes):
                units = _initial_units(frames, lo, hi)
                units.frame += frames.first
                w = Walk(frames.buffer, units, report.paths, self.walk_options, sink)
                _take_plain_tcp(w, frames.buffer)
                done = len(sink.completed)
                w.run()
                report.add_units(
                    w.u.frame,
                    w.u.code,
                    w.u.arg,
                    w.u.path,
                    linktypes,
                    one_per_frame=not w.u.order.any(),
                )
                for c in sink.completed[done:]:
                    completing[c.frame] = int(frames.time_ns[c.frame - frames.first])
                yield _segments(w, times, 0, None)
                frames.release_pages()
        frames = self.frames
        for reason, (linktype, n, could_carry_tcp) in frames.skipped.items():
            report.skipped(linktype, reason, n, warn=could_carry_tcp)
        if sink.completed or sink.failed or sink.pending:
            extra, more = _reassembled(
                _Times(completing), sink, report, self.walk_options, len(frames.buffer)
            )
            if extra:
                self.buffer = JoinedBuffer([frames.buffer, *extra])
            self.reassembled = bool(more)
            yield from more


class _Shifted:
    """A slice's column indexed by the whole capture's frame numbers."""

    def __init__(self, column: np.ndarray, first: int) -> None:
        self.column, self.first = column, first

    def __getitem__(self, frames: np.ndarray) -> np.ndarray:
        return self.column[frames - self.first]


class _Times:
    """The times of the frames that completed a datagram, indexed by frame number."""

    def __init__(self, times: dict[int, int]) -> None:
        self.times = times

    def __getitem__(self, frames: np.ndarray) -> np.ndarray:
        return np.array([self.times[f] for f in frames.tolist()], np.int64)


def decode(
    frames: pcap.Frames,
    options: DecodeOptions | None = None,
    chunk: int = DECODE_CHUNK,
    chunk_bytes: int = DECODE_CHUNK_BYTES,
) -> Decoded:
    """Every TCP segment of ``frames``, a chunk at a time (a mapped capture's pages go
    between chunks, so a large file is not held in memory); the chunks do not change the
    result."""
    parts = DecodeParts(frames, options, chunk, chunk_bytes)
    columns = _SegmentColumns(len(frames))
    for part in parts:
        columns.add(part)
    segments = columns.packets()
    if parts.reassembled and len(segments) and (np.diff(segments.frame) < 0).any():
        segments = segments.take(np.argsort(segments.frame, kind="stable"))
    return Decoded(segments, parts.report, parts.buffer)


def _initial_units(frames: pcap.Frames, lo: int, hi: int) -> Units:
    u = Units.empty(hi - lo)
    u.frame[:] = np.arange(lo, hi)
    u.pos[:] = frames.offset[lo:hi]
    u.end[:] = u.pos + frames.caplen[lo:hi]
    linktype = frames.linktype[lo:hi].astype(np.int64)
    u.arg[:] = linktype
    values = [int(linktype[0])] if (linktype == linktype[0]).all() else np.unique(linktype).tolist()
    for value in values:
        rows = slice(None) if len(values) == 1 else linktype == value
        code = LINKTYPE_CODE.get(value)
        if code is None:
            u.code[rows] = Outcome.UNDECODED
            u.arg[rows] = int(Reason.LINK_TYPE) << 32 | (value & 0xFFFFFFFF)
        else:
            u.code[rows] = code
    fcs = [i for i, iface in enumerate(frames.interfaces) if iface.fcslen]
    if fcs:
        iface = frames.interface[lo:hi]
        for i in fcs:
            u.end[iface == i] -= frames.interfaces[i].fcslen
    return u


def _take_plain_tcp(w: Walk, buffer: memoryview) -> None:
    """Take the chunk's plain Ethernet/IP/TCP frames to their outcome in C before the walk
    (``formats/_layers.c``: the walk's own rules, for those layers only; every other unit
    is left to the walk, the reference, which ``WSKREPLAY_PURE_PYTHON=1`` runs alone).

    Only the paths the walk has already named are given: a path named here first would
    take an id the walk would have given in another order."""
    native = accelerator("_layers")
    if native is None:
        return
    ids = w.paths.known
    ethernet = ids(0, "ethernet")
    if ethernet < 0:
        return
    u = w.u
    native.plain_tcp(
        buffer,
        u.pos,
        u.end,
        u.code,
        u.path,
        u.ip_path,
        u.ip_end,
        u.src_hi,
        u.src_lo,
        u.dst_hi,
        u.dst_lo,
        ethernet,
        ids(ethernet, "ipv4"),
        ids(ethernet, "ipv6"),
    )


def _segments(
    w: Walk, time_ns: _Shifted | _Times, base: int, frame_of: np.ndarray | None
) -> TcpPackets:
    """The TCP columns of the walk's TCP units (``frame_of`` maps a unit's frame field to
    the capture's frame; ``base`` shifts buffer offsets)."""
    u = w.u
    rows = np.flatnonzero(u.code == Outcome.TCP)
    if u.order.any():
        rows = rows[np.lexsort((u.order[rows], u.frame[rows]))]
    l4 = u.pos[rows]
    ports_seq = w.be(l4, 8, inside=True)
    ack_flags = w.be(l4 + 8, 8, inside=True)
    header = ((ack_flags >> np.uint64(28)) & np.uint64(0xF)).astype(np.int64) * 4
    payload = l4 + header
    wire = u.ip_end[rows] - payload
    end = u.end[rows]
    frame = u.frame[rows] if frame_of is None else frame_of[u.frame[rows]]
    return TcpPackets(
        frame=frame,
        time_ns=time_ns[frame],
        src_hi=u.src_hi[rows],
        src_lo=u.src_lo[rows],
        dst_hi=u.dst_hi[rows],
        dst_lo=u.dst_lo[rows],
        sport=(ports_seq >> np.uint64(48)).astype(np.int64),
        dport=((ports_seq >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64),
        seq=(ports_seq & np.uint64(0xFFFFFFFF)).astype(np.int64),
        ack=(ack_flags >> np.uint64(32)).astype(np.int64),
        flags=((ack_flags >> np.uint64(16)) & np.uint64(0x1FF)).astype(np.int64),
        window=(ack_flags & np.uint64(0xFFFF)).astype(np.int64),
        header_offset=l4 + base,
        header_len=header,
        payload_offset=payload + base,
        payload_len=wire,
        captured_len=np.clip(end - payload, 0, wire),
        captured_header_len=np.clip(end - l4, 0, header),
        path=u.path[rows].astype(np.int32),
    )


def _reassembled(
    time_ns: _Times,
    sink: Reassembler,
    report: DecodeReport,
    options: WalkOptions,
    base: int,
) -> tuple[list[bytes], list[TcpPackets]]:
    """Walk the datagrams ``sink`` completed (and those completed inside them, a few
    levels deep); settle the report of every frame that held a fragment."""
    sink.finish()
    members: list[list[int]] | None = None
    completing: np.ndarray | None = None
    blobs: list[bytes] = []
    parts: list[TcpPackets] = []
    for _ in range(MAX_REASSEMBLY_DEPTH):
        _settle_failed(report, sink, members)
        done = sink.completed
        if not done:
            break
        real_members = [
            [f for i in c.frames for f in members[i]] if members is not None else c.frames
            for c in done
        ]
        real_completing = np.array(
            [c.frame if completing is None else int(completing[c.frame]) for c in done], np.int64
        )
        blob = b"".join(c.payload for c in done)
        nested = Reassembler()
        w = Walk(blob, _datagram_units(done, report.paths), report.paths, options, nested)
        _resume(w, done)
        w.run()
        parts.append(_segments(w, time_ns, base, real_completing))
        _settle_completed(report, w, real_members)
        blobs.append(blob)
        base += len(blob)
        nested.finish()
        sink, members, completing = nested, real_members, real_completing
    for frame in list(report.deferred):
        report.resolve(frame, 0, int(Outcome.UNDECODED), reason_text(Reason.TOO_DEEP, 0))
    return blobs, parts


def _datagram_units(done: list[Completed], paths: PathTable) -> Units:
    u = Units.empty(len(done))
    sizes = np.array([len(c.payload) for c in done], np.int64)
    u.pos[:] = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    u.end[:] = u.pos + sizes
    u.ip_end[:] = u.end
    u.frame[:] = np.arange(len(done))
    for k, c in enumerate(done):
        u.src_hi[k], u.src_lo[k], u.dst_hi[k], u.dst_lo[k] = c.addresses
        u.ip_path[k] = c.ip_path
        u.path[k] = paths.child(c.ip_path, f"ipv{c.version} (reassembled)")
    return u


def _resume(w: Walk, done: list[Completed]) -> None:
    proto = np.array([c.proto for c in done], np.int64)
    ip.next_protocol(w, np.arange(len(done)), proto, w.u.pos.copy())


def _settle_completed(report: DecodeReport, w: Walk, members: list[list[int]]) -> None:
    """Every frame of a reassembled datagram gets the datagram's outcome."""
    u = w.u
    order = np.lexsort((PRIORITY[u.code], u.frame))
    seen: set[int] = set()
    for row in order.tolist():
        dg = int(u.frame[row])
        if dg in seen:
            continue
        seen.add(dg)
        code = int(u.code[row])
        if code == Outcome.FRAGMENT:
            continue
        reason = None
        if code == Outcome.UNDECODED:
            packed = int(u.arg[row])
            reason = reason_text(packed >> 32, packed & 0xFFFFFFFF)
        for frame in members[dg]:
            report.resolve(frame, int(u.path[row]), code, reason)


def _settle_failed(
    report: DecodeReport, sink: Reassembler, members: list[list[int]] | None
) -> None:
    """Fragments that made no datagram (never completed, dropped at the limit), and
    duplicates of completed ones (decoded; their bytes are in the datagram already)."""
    for f, p in sink.duplicates:
        for frame in members[f] if members is not None else [f]:
            report.resolve(frame, p, int(Outcome.OTHER), None)
    sink.duplicates = []
    for frames_, paths_, reason in sink.failed:
        text = reason_text(reason, 0)
        for f, p in zip(frames_, paths_, strict=True):
            for frame in members[f] if members is not None else [f]:
                report.resolve(frame, p, int(Outcome.UNDECODED), text)
    sink.failed = []
