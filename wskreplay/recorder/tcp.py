"""TCP stream reassembly, per connection and direction, as Wireshark does it.

Rules (each matches what ``tshark -z follow,tcp,raw`` outputs, checked by the tests):

- Offsets count from the byte after the SYN; without a SYN in a direction, from the lowest
  sequence number seen in it (tshark starts at the first segment seen and ignores earlier
  bytes that arrive later; wskreplay keeps every captured byte). Sequence numbers are
  unwrapped past 2**32.
- Bytes are delivered in sequence order, as Wireshark's follow does: a segment that
  reaches the next expected byte delivers what it carries beyond it; an out-of-order
  segment waits until the stream reaches it. So when copies of the same bytes differ, **the
  copy that first continued the stream wins**: for retransmissions that is the first copy
  to arrive; for an out-of-order segment overlapped by a later in-order one, the in-order
  one. Bytes no segment carried (lost, or cut
  by the capture's snap length) are gaps ``[start, end)``: never filled in, never shifting
  later bytes. ``bytes`` and ``sha256`` cover the bytes present, gaps excluded.
- A 4-tuple is one connection for the whole capture.
"""

from __future__ import annotations

import heapq
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import pcap, pieces
from wskreplay.formats.reference import reference_asked
from wskreplay.formats.tcpip import (
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    DecodeOptions,
    DecodeReport,
    JoinedBuffer,
    TcpPackets,
    decode,
    endpoint,
    tcp_options,
)
from wskreplay.formats.wskt import FAULT_AROUND_BYTES
from wskreplay.policies import Flow, ResetPolicy, accepted_resets
from wskreplay.recorder.limits import MAX_CONNECTIONS
from wskreplay.trace.model import Direction as Direction_
from wskreplay.trace.model import SegmentTable

Buffer = memoryview | JoinedBuffer
"""Where segment payloads are: the capture's bytes (and any reassembled datagrams)."""
WRAP = 1 << 32


@dataclass
class Pieces:
    """Where a stream's bytes are: ``length[i]`` bytes at stream offset ``start[i]`` are at
    ``at[i]`` in the capture buffer; sorted by ``start``, never overlapping."""

    start: np.ndarray
    at: np.ndarray
    length: np.ndarray

    @classmethod
    def of(cls, rows: list[tuple[int, int, int]]) -> Pieces:
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
        return cls(arr[:, 0], arr[:, 1], arr[:, 2])

    def gaps(self, length: int) -> list[tuple[int, int]]:
        """Ranges of [0, length) that no piece covers."""
        ends = self.start + self.length
        reached = np.concatenate(([0], np.maximum.accumulate(ends)[:-1])) if len(ends) else ends
        holes = np.flatnonzero(self.start > reached)
        gaps = list(zip(reached[holes].tolist(), self.start[holes].tolist(), strict=True))
        last = int(ends.max()) if len(ends) else 0
        if length > last:
            gaps.append((last, length))
        return gaps


@dataclass
class Direction:
    """One direction of a connection: its bytes (as pieces of the capture buffer) and gaps."""

    pieces: Pieces = field(default_factory=lambda: Pieces.of([]))
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
    window_known: str = "announced"
    """How this direction's windows are in bytes: ``announced`` (both SYNs gave the
    scale, or none offered one), ``inferred`` (no handshake captured: the smallest scale
    under which the other side never had more bytes in flight than the window allowed),
    ``unknown`` (no handshake and no such evidence: the raw values, which must not limit
    a replay)."""
    timestamps: bool = False
    """Whether this direction's SYN offered TCP timestamps."""
    syn: bool = False
    """Whether the capture saw this direction's SYN (else offsets start at the first byte
    seen, which need not be the connection's first)."""

    def sender_mss(self, other: Direction) -> int | None:
        """The most payload a segment of this direction carries: the MSS the other side
        announced in its SYN, or this side's own if smaller (its own reflects its link's
        MTU, which caps what it sends too: RFC 9293 section 3.7.1, MMS_S), less the 12
        bytes of the timestamp option when both SYNs offered it (RFC 7323); None when the
        capture missed the other side's SYN."""
        if other.mss is None:
            return None
        mss = other.mss if self.mss is None else min(other.mss, self.mss)
        return mss - (12 if self.timestamps and other.timestamps else 0)

    def shift(self, delta: int, acks: Direction) -> None:
        """Renumber this stream from ``delta`` bytes later (the bytes before are a gap);
        ``acks`` is the other direction, whose acknowledgements count this stream."""
        self.pieces = Pieces(self.pieces.start + delta, self.pieces.at, self.pieces.length)
        self.rel_seq = self.rel_seq + delta
        self.gaps = [(0, delta), *((a + delta, b + delta) for a, b in self.gaps)]
        self.length += delta
        acks.rel_ack = np.where(acks.rel_ack != 0, acks.rel_ack + delta, 0)

    @property
    def present(self) -> int:
        return int(self.pieces.length.sum())

    def flow(self, seg: TcpPackets) -> Flow:
        """This direction's segments as stream offsets (for the shared policies)."""
        return Flow(
            time=seg.time_ns[self.rows],
            seq=self.rel_seq,
            length=seg.payload_len[self.rows],
            flags=seg.flags[self.rows],
            ack=self.rel_ack,
            window=self.window,
            syn=self.syn,
        )

    def chunks(self, buffer: Buffer) -> Iterator[memoryview]:
        for at, n in zip(self.pieces.at.tolist(), self.pieces.length.tolist(), strict=True):
            yield buffer[at : at + n]

    def sha256(self, buffer: Buffer, read: Callable[[int], None] = lambda cost: None) -> str:
        """The bytes present, hashed; ``read`` is told what the reads may have mapped of
        the capture (``pieces.sha256``)."""
        return sha256_of([self], buffer, read)[0]


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
    encapsulations: list[tuple[str, ...]] = field(default_factory=list)
    """What carried the connection's segments (``["ethernet", "vlan 10", "ipv4"]``), in
    order of first appearance; usually one."""
    opener_known: bool = True
    """Whether the capture shows who connected (the SYN's sender, or the SYN-ACK's
    receiver); without either, ``client`` is the first packet's sender."""

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

    def accepted_resets(
        self, seg: TcpPackets, policy: ResetPolicy
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks over each direction's rows (to the server, to the client): the RSTs the
        other side would act on (:func:`~wskreplay.policies.accepted_resets`)."""
        known = self.to_server.syn and self.to_client.syn
        return (
            accepted_resets(
                policy, self.to_server.flow(seg), self.to_client.flow(seg), window_known=known
            ),
            accepted_resets(
                policy, self.to_client.flow(seg), self.to_server.flow(seg), window_known=known
            ),
        )

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
    report: DecodeReport
    buffer: Buffer
    """Where the segments' payload offsets point (see :class:`~wskreplay.formats.tcpip.Decoded`)."""


def _unwrap(values: np.ndarray, base: int) -> np.ndarray:
    """Sequence numbers relative to ``base``, unwrapped past 2**32 in arrival order."""
    rel = (values - base) % WRAP
    if len(rel) == 0:
        return rel
    step = np.diff(rel)
    step = (step + WRAP // 2) % WRAP - WRAP // 2
    first = rel[0] - WRAP if rel[0] >= WRAP // 2 else rel[0]
    return np.concatenate(([first], first + np.cumsum(step)))


def _assemble(starts: np.ndarray, lens: np.ndarray, offs: np.ndarray, buffer: Buffer) -> Pieces:
    """Pieces of the stream, delivered in sequence order (see the module's rules).

    The union of all segments is built with one sort by (start, arrival). Which copy of an
    overlapping range is delivered only matters when the copies differ, so overlaps are
    compared byte for byte, and only a direction where they differ is assembled again in
    Wireshark's exact delivery order."""
    keep = lens > 0
    starts, lens, offs = starts[keep], lens[keep], offs[keep]
    if len(starts) == 0:
        return Pieces.of([])
    ends = starts + lens
    order = np.lexsort((np.arange(len(starts)), starts))
    s, e, o = starts[order], ends[order], offs[order]
    reached = np.maximum.accumulate(np.concatenate(([s[0]], e[:-1])))
    new_start = np.maximum(s, reached)
    adds = e > new_start
    p_start, p_end = new_start[adds], e[adds]
    p_off = o[adds] + (p_start - s[adds])
    overlapping = np.flatnonzero(s < reached)
    if len(overlapping) and not _copies_agree(
        s[overlapping],
        np.minimum(e, reached)[overlapping],
        o[overlapping],
        p_start,
        p_end,
        p_off,
        buffer,
    ):
        return Pieces.of(_assemble_with_holes(starts.tolist(), ends.tolist(), offs.tolist()))
    return Pieces(p_start, p_off, p_end - p_start)


def _copies_agree(
    a: np.ndarray,
    b: np.ndarray,
    off: np.ndarray,
    p_start: np.ndarray,
    p_end: np.ndarray,
    p_off: np.ndarray,
    buffer: Buffer,
) -> bool:
    """Whether each copy ``[a, b)`` (at buffer ``off``) equals the assembled bytes there."""
    first = np.searchsorted(p_end, a, side="right")
    for lo, hi, at, k in zip(a.tolist(), b.tolist(), off.tolist(), first.tolist(), strict=True):
        pos = lo
        while pos < hi:
            ps, pe, po = int(p_start[k]), int(p_end[k]), int(p_off[k])
            stop = min(hi, pe)
            if buffer[at + pos - lo : at + stop - lo] != buffer[po + pos - ps : po + stop - ps]:
                return False
            pos = stop
            k += 1
    return True


def _assemble_with_holes(
    starts: list[int], ends: list[int], offs: list[int]
) -> list[tuple[int, int, int]]:
    """Wireshark's in-order delivery: a segment that reaches the next expected byte delivers
    what it has beyond it; one that starts further on waits until the stream reaches it
    (earliest arrival first among those that then can). Segments still waiting when the
    input ends lie past a gap: delivery resumes at the lowest of them."""
    pieces: list[tuple[int, int, int]] = []
    waiting: list[tuple[int, int, int, int]] = []
    next_byte = min(starts)

    def deliver(s: int, e: int, off: int) -> None:
        nonlocal next_byte
        if e > next_byte:
            pieces.append((next_byte, off + next_byte - s, e - next_byte))
            next_byte = e

    def drain() -> None:
        while waiting and waiting[0][0] <= next_byte:
            ready = []
            while waiting and waiting[0][0] <= next_byte:
                ready.append(heapq.heappop(waiting))
            ready.sort(key=lambda w: w[3])
            for s, e, off, _ in ready:
                deliver(s, e, off)

    for k, (s, e, off) in enumerate(zip(starts, ends, offs, strict=True)):
        if s <= next_byte:
            deliver(s, e, off)
            if waiting:
                drain()
        else:
            heapq.heappush(waiting, (s, e, off, k))
    while waiting:
        next_byte = waiting[0][0]
        drain()
    return pieces


def _direction(seg: TcpPackets, rows: np.ndarray, buffer: Buffer) -> Direction:
    d = Direction(rows=rows, segments=len(rows))
    if not len(rows):
        return d
    seq = seg.seq[rows]
    flags = seg.flags[rows]
    syn = np.flatnonzero(flags & TCP_SYN)
    d.syn = bool(len(syn))
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
        d.mss, d.wscale, d.timestamps = opts.get("mss"), opts.get("wscale"), "ts" in opts
    rel = _unwrap(seq, d.base)
    rel = rel + (flags & TCP_SYN != 0)
    if not len(syn):
        data = seg.payload_len[rows] > 0
        low = int(rel[data].min()) if data.any() else int(rel.min())
        d.base = (d.base + low) % WRAP
        rel = rel - low
    d.rel_seq = rel
    lens = seg.captured_len[rows]
    d.pieces = _assemble(rel, lens, seg.payload_offset[rows], buffer)
    carried = seg.payload_len[rows] > 0
    d.length = int((rel + seg.payload_len[rows])[carried].max()) if carried.any() else 0
    d.gaps = d.pieces.gaps(d.length)
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


@dataclass(frozen=True)
class CaptureOptions:
    """How a capture is read into connections."""

    max_connections: int = MAX_CONNECTIONS
    decode: DecodeOptions = field(default_factory=DecodeOptions)


def _infer_window_scale(seg: TcpPackets, d: Direction, other: Direction) -> None:
    """Without the handshake, the scale of ``d``'s windows: the smallest under which
    ``other`` never had more bytes unacknowledged than ``d``'s latest window allowed."""
    if not len(d.rows) or not len(other.rows):
        d.window_known = "unknown"
        return
    t_win = seg.time_ns[d.rows]
    data = seg.payload_len[other.rows] > 0
    t_data = seg.time_ns[other.rows][data]
    ends = (other.rel_seq + seg.payload_len[other.rows])[data]
    k = np.searchsorted(t_win, t_data, side="right") - 1
    seen = k >= 0
    acked = np.maximum.accumulate(d.rel_ack)[k[seen]]
    window = d.window[k[seen]]
    flight = ends[seen] - acked
    need = (flight > window) & (window > 0)
    if not need.any():
        d.window_known = "unknown"
        return
    ratio = flight[need] / window[need]
    scale = int(min(14, max(0, int(np.ceil(np.log2(ratio.max()))))))
    d.wscale = scale
    d.window = d.window << scale
    d.window_known = "inferred"


def reassemble(frames: pcap.Frames, options: CaptureOptions | None = None) -> Reassembly:
    options = options or CaptureOptions()
    max_connections = options.max_connections
    decoded = decode(frames, options.decode)
    seg = decoded.segments
    groups = group_by_connection(seg)
    if len(groups) > max_connections:
        raise connection_limit_error(frames.path, len(groups), max_connections)
    connections = connections_of(
        seg, groups, decoded.buffer, decoded.report.paths.paths, PageReleaser(frames)
    )
    frames.release_pages()
    counts = {"packets": len(frames), "tcp_packets": len(seg)}
    return Reassembly(frames, seg, connections, counts, decoded.report, decoded.buffer)


def _connection_keys(seg: TcpPackets) -> Callable[[int], np.ndarray]:
    """Column ``k`` (0..5) of each row's direction-independent 4-tuple key: the lower
    endpoint's address halves and port, then the other's. Made when asked: all six at once
    held 48 bytes a segment."""
    a_is_src = (seg.src_hi < seg.dst_hi) | (
        (seg.src_hi == seg.dst_hi)
        & ((seg.src_lo < seg.dst_lo) | ((seg.src_lo == seg.dst_lo) & (seg.sport <= seg.dport)))
    )
    pairs = [(seg.src_hi, seg.dst_hi), (seg.src_lo, seg.dst_lo), (seg.sport, seg.dport)]

    def key_column(k: int) -> np.ndarray:
        a, b = pairs[k % 3] if k < 3 else pairs[k % 3][::-1]
        return np.where(a_is_src, a, b).astype(np.uint64, copy=False)

    return key_column


def connection_hashes(
    seg: TcpPackets, key_column: Callable[[int], np.ndarray] | None = None
) -> np.ndarray:
    """A 64-bit hash of each row's 4-tuple, the same in either direction (``key_column``:
    ``_connection_keys(seg)``, where the caller has it already)."""
    key_column = key_column or _connection_keys(seg)
    h = np.full(len(seg), 0xCBF29CE484222325, dtype=np.uint64)
    for k in range(6):
        h = (h ^ key_column(k)) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(29)
    return h


def connection_limit_error(path: str, connections: int, limit: int) -> InputError:
    return InputError(
        path,
        f"{connections:,} TCP connections, more than the limit of {limit:,} "
        "(raise it with --max-connections; each costs about 11 KB of memory)",
    )


def connections_of(
    seg: TcpPackets,
    groups: list[np.ndarray],
    buffer: Buffer,
    paths: list[tuple[str, ...]],
    pages: PageReleaser,
) -> list[Connection]:
    """The connection of each group of rows: one at a time by :func:`_connection` (the
    reference) or all at once by :mod:`tcp_batch`."""
    if reference_asked():
        return [_connection(seg, rows, buffer, paths) for rows in groups]
    from wskreplay.recorder import tcp_batch

    return tcp_batch.connections(seg, groups, buffer, paths, read=pages.note)


def group_by_connection(seg: TcpPackets) -> list[np.ndarray]:
    """Rows of each 4-tuple (either direction), in order of first appearance.

    Rows are grouped by :func:`connection_hashes` with one sort; a group whose rows do not
    all share one key (a hash collision) is split exactly."""
    if not len(seg):
        return []
    key_column = _connection_keys(seg)
    h = connection_hashes(seg, key_column)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    del h
    bounds = np.flatnonzero(hs[1:] != hs[:-1]) + 1
    del hs
    starts = np.concatenate(([0], bounds))
    first_of = np.repeat(order[starts], np.diff(np.concatenate((starts, [len(order)]))))
    same = np.ones(len(order), dtype=bool)
    for k in range(6):
        col = key_column(k)
        same &= col[order] == col[first_of]
    del first_of
    groups = np.split(order, bounds)
    if not same.all():
        cols = [key_column(k) for k in range(6)]
        exact = []
        for g in groups:
            keys = np.stack([c[g] for c in cols], axis=1)
            _, inv = np.unique(keys, axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            exact.extend(g[inv == k] for k in range(int(inv.max()) + 1))
        groups = exact
    groups.sort(key=lambda g: int(g[0]))
    return groups


def _connection(
    seg: TcpPackets, rows: np.ndarray, buffer: Buffer, paths: list[tuple[str, ...]]
) -> Connection:
    flags = seg.flags[rows]
    syn_only = np.flatnonzero((flags & TCP_SYN != 0) & (flags & TCP_ACK == 0))
    syn_ack = np.flatnonzero((flags & TCP_SYN != 0) & (flags & TCP_ACK != 0))
    first = rows[syn_only[0]] if len(syn_only) else rows[0]
    client = (int(seg.src_hi[first]), int(seg.src_lo[first]), int(seg.sport[first]))
    server = (int(seg.dst_hi[first]), int(seg.dst_lo[first]), int(seg.dport[first]))
    if not len(syn_only) and len(syn_ack):
        answer = rows[syn_ack[0]]
        client = (int(seg.dst_hi[answer]), int(seg.dst_lo[answer]), int(seg.dport[answer]))
        server = (int(seg.src_hi[answer]), int(seg.src_lo[answer]), int(seg.sport[answer]))
    from_client = (
        (seg.src_hi[rows] == client[0])
        & (seg.src_lo[rows] == client[1])
        & (seg.sport[rows] == client[2])
    )
    to_server = _direction(seg, rows[from_client], buffer)
    to_client = _direction(seg, rows[~from_client], buffer)
    _finish_direction(seg, to_server, to_client)
    _finish_direction(seg, to_client, to_server)
    if not (to_server.syn and to_client.syn):
        _infer_window_scale(seg, to_server, to_client)
        _infer_window_scale(seg, to_client, to_server)
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
        encapsulations=_paths_in_order(seg.path[rows], paths),
        opener_known=bool(len(syn_only) or len(syn_ack)),
    )


def _paths_in_order(ids: np.ndarray, paths: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The distinct paths among ``ids``, in order of first appearance (usually one)."""
    if not len(ids) or (ids == ids[0]).all():
        return [paths[int(ids[0])]] if len(ids) else []
    uniq, first = np.unique(ids, return_index=True)
    return [paths[int(p)] for p in uniq[np.argsort(first)]]


HASH_THREADS = min(4, os.cpu_count() or 1)
"""Streams hashed at once by ``streams_summary`` when the hashing is compiled: it runs
without the GIL, so each thread keeps a core busy."""


def _direction_summary(d: Direction, digest: str) -> dict:
    return {
        "bytes": d.present,
        "sha256": digest,
        "segments": d.segments,
        "gaps": [[s, e] for s, e in d.gaps],
    }


class PageReleaser:
    """Releases the capture's mapped pages once the reads since the last release may have
    mapped RELEASE_SPAN bytes, so a walk over every stream (hashing, dumping) keeps a
    bounded part of the capture resident, however its connections interleave, on any
    number of threads.

    What the reads may have mapped is bounded by their cost (each piece its length and
    the pages the kernel maps around a fault); once that bound is reached, the file pages
    the process holds (``/proc/self/statm``) say whether it was: far less where a
    stream's pieces share pages (on a 1,113-connection capture, releasing by the cost
    alone made 465 releases where 10 do, and cost 30% of the hashing: each release makes
    the other threads' reads fault again)."""

    def __init__(self, frames: pcap.Frames) -> None:
        self.frames = frames
        self.read = 0
        self.resident = _file_pages()
        self._lock = threading.Lock()

    def note(self, cost: int) -> None:
        with self._lock:
            self.read += cost
            if self.read < pcap.RELEASE_SPAN:
                return
            self.read = 0
            resident = _file_pages()
            if resident is not None and self.resident is not None:
                if resident - self.resident < pcap.RELEASE_SPAN:
                    return
        self.frames.release_pages()
        with self._lock:
            self.resident = _file_pages()


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _file_pages() -> int | None:
    """Bytes of file-backed pages the process has resident; None where Linux's /proc
    does not say."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[2]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def sha256_of(
    directions: list[Direction], buffer: Buffer, read: Callable[[int], None] = lambda cost: None
) -> list[str]:
    """Each direction's sha256 (``pieces.sha256``, in one call)."""
    runs = [(d.pieces.at, d.pieces.length) for d in directions]
    return pieces.sha256(buffer, runs, FAULT_AROUND_BYTES, read)


def _digests(directions: list[Direction], buffer: Buffer, pages: PageReleaser) -> list[str]:
    """Each direction's sha256, on HASH_THREADS threads when the hashing is compiled (in
    Python it would hold the GIL: one at a time), each thread given a few runs of
    directions of about equal numbers of pieces. Hashing while ``reassemble`` runs was
    tried and is slower: a thread done with a stream waits for the GIL
    (docs/performance.md)."""
    if pieces.pieces_accelerator() is None or HASH_THREADS < 2 or len(directions) < 2:
        return sha256_of(directions, buffer, pages.note)
    counts = np.cumsum([len(d.pieces.at) + 1 for d in directions])
    marks = np.linspace(0, counts[-1], 4 * HASH_THREADS + 1)[1:-1]
    cuts = [0, *np.searchsorted(counts, marks, side="right").tolist(), len(directions)]

    def run(lo: int, hi: int) -> list[str]:
        return sha256_of(directions[lo:hi], buffer, pages.note)

    with ThreadPoolExecutor(HASH_THREADS) as pool:
        runs = pool.map(run, cuts[:-1], cuts[1:])
        return [digest for run_digests in runs for digest in run_digests]


def streams_head(path: str, packets: int, tcp_packets: int, report: DecodeReport) -> dict:
    """The ``wskreplay streams --json`` document's fields before its connections."""
    return {
        "file": path,
        "packets": packets,
        "tcp_packets": tcp_packets,
        **report.as_dict(),
    }


def connection_summary(c: Connection, to_server_sha256: str, to_client_sha256: str) -> dict:
    """One connection of the ``wskreplay streams --json`` document (times are UTC ns)."""
    return {
        "client": c.client_text,
        "server": c.server_text,
        **_encapsulation(c),
        "first_ns": c.first_ns,
        "last_ns": c.last_ns,
        "syn": c.syn,
        "fin": c.fin,
        "rst": c.rst,
        "client_to_server": _direction_summary(c.to_server, to_server_sha256),
        "server_to_client": _direction_summary(c.to_client, to_client_sha256),
    }


def summaries(connections: list[Connection], buffer: Buffer, pages: PageReleaser) -> list[dict]:
    """Each connection's :func:`connection_summary`, its streams hashed."""
    directions = [d for c in connections for d in (c.to_server, c.to_client)]
    each = iter(_digests(directions, buffer, pages))
    return [connection_summary(c, next(each), next(each)) for c in connections]


def streams_summary(result: Reassembly) -> dict:
    """The ``wskreplay streams --json`` document (times are UTC nanoseconds)."""
    doc = {
        **streams_head(
            result.frames.path, len(result.frames), result.counts["tcp_packets"], result.report
        ),
        "connections": summaries(result.connections, result.buffer, PageReleaser(result.frames)),
    }
    result.frames.release_pages()
    return doc


def _encapsulation(c: Connection) -> dict:
    doc: dict = {"encapsulation": list(c.encapsulations[0]) if c.encapsulations else []}
    if len(c.encapsulations) > 1:
        doc["encapsulations"] = [list(p) for p in c.encapsulations]
    return doc


def dump_streams(result: Reassembly, folder: str) -> list[str]:
    """Write each direction's bytes present (gaps left out) to ``folder``; return the paths."""
    os.makedirs(folder, exist_ok=True)
    pages = PageReleaser(result.frames)
    paths = [
        path
        for i, c in enumerate(result.connections)
        for path in dump_connection(c, result.buffer, folder, f"{i:05d}", pages)
    ]
    result.frames.release_pages()
    return paths


def dump_connection(
    c: Connection, buffer: Buffer, folder: str, stem: str, pages: PageReleaser
) -> list[str]:
    """Write ``c``'s two directions to ``folder/STEM-client_to_server.bin`` and
    ``...-server_to_client.bin``; return the paths."""
    paths = []
    for name, d in (("client_to_server", c.to_server), ("server_to_client", c.to_client)):
        path = os.path.join(folder, f"{stem}-{name}.bin")
        with open(path, "wb") as f:
            for chunk in d.chunks(buffer):
                f.write(chunk)
                pages.note(len(chunk) + FAULT_AROUND_BYTES)
        paths.append(path)
    return paths
