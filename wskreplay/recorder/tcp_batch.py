"""Every connection of a capture reassembled at once: the rules of ``tcp._connection`` (the
reference, one connection at a time) computed for all directions of all connections with
whole-column numpy operations, so that the cost is per segment, not per connection (about
60 small numpy calls a connection made ``streams`` of 100,000 short connections take 15 s).

What stays per connection or per direction, in Python, is what is rare: the TCP options of
a SYN, streams whose overlapping copies differ (``tcp._copies_agree`` and Wireshark's
delivery order), streams with gaps, connections on several encapsulations, and window
scales inferred without a handshake. ``tests/test_tcp_batch.py`` checks that every field
of every connection equals the reference's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wskreplay.formats.pcap import RELEASE_SPAN
from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpPackets, tcp_options
from wskreplay.formats.wskt import FAULT_AROUND_BYTES
from wskreplay.recorder.tcp import (
    WRAP,
    Buffer,
    Connection,
    Direction,
    Pieces,
    _assemble,
    _assemble_with_holes,
    _copies_agree,
    _infer_window_scale,
    _paths_in_order,
)

_KEY_LIMIT = 1 << 62
"""Keys of the segmented running maximum must stay below this (else: per direction)."""


class _Segments:
    """Runs of consecutive rows (``counts[k]`` rows from ``starts[k]``), possibly empty."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = counts
        self.starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.ends = self.starts + counts
        self.filled = counts > 0

    def each(self, values: np.ndarray) -> np.ndarray:
        """A per-run value repeated for each of the run's rows."""
        return np.repeat(values, self.counts)

    def reduce(self, ufunc: np.ufunc, values: np.ndarray, empty: int) -> np.ndarray:
        """``ufunc`` over each run's rows; ``empty`` for an empty run."""
        out = np.full(len(self.counts), empty, dtype=values.dtype)
        if len(values):
            out[self.filled] = ufunc.reduceat(values, self.starts[self.filled])
        return out

    def first(self, mask: np.ndarray) -> np.ndarray:
        """Per run, the row index of its first row where ``mask``; -1 where none."""
        at = np.where(mask, np.arange(len(mask)), len(mask))
        found = self.reduce(np.minimum, at, len(mask))
        return np.where(found < len(mask), found, -1)

    def cumsum(self, values: np.ndarray) -> np.ndarray:
        """The running sum of ``values`` within each run."""
        total = np.cumsum(values)
        before = np.zeros(len(self.counts), dtype=total.dtype)
        before[self.filled] = total[self.starts[self.filled]] - values[self.starts[self.filled]]
        return total - self.each(before)


def _unwrap(values: np.ndarray, base_per_row: np.ndarray, runs: _Segments) -> np.ndarray:
    """``tcp._unwrap`` for every run: sequence numbers relative to each run's base,
    unwrapped past 2**32 in arrival order."""
    rel = (values - base_per_row) % WRAP
    steps = np.empty(len(rel), dtype=np.int64)
    if len(rel):
        steps[1:] = (np.diff(rel) + WRAP // 2) % WRAP - WRAP // 2
    firsts = runs.starts[runs.filled]
    head = rel[firsts]
    steps[firsts] = np.where(head >= WRAP // 2, head - WRAP, head)
    return runs.cumsum(steps)


def _running_max_before(
    values: np.ndarray, firsts: np.ndarray, runs: _Segments
) -> np.ndarray | None:
    """Per row, the largest of ``values`` over the earlier rows of its run, and ``firsts``
    (per row) for a run's first row; None when the keys would not fit in 64 bits."""
    prev = np.empty(len(values), dtype=np.int64)
    if len(values):
        prev[1:] = values[:-1]
    heads = runs.starts[runs.filled]
    prev[heads] = firsts[heads]
    low = runs.reduce(np.minimum, np.minimum(prev, values), 0)
    high = runs.reduce(np.maximum, np.maximum(prev, values), 0)
    span = int((high - low).max()) + 1 if len(values) else 1
    if span * (len(runs.counts) + 1) >= _KEY_LIMIT:
        return None
    offset = np.arange(len(runs.counts), dtype=np.int64) * span - low
    keyed = np.maximum.accumulate(prev + runs.each(offset))
    return keyed - runs.each(offset)


BATCH_SEGMENTS = 1 << 17
"""Connections are reassembled together until their segments reach this many: the working
arrays are a few dozen columns of a batch's length, not of the capture's (the 682k-packet
capture's peak: 247 -> 166 MB traced)."""


def connections(
    seg: TcpPackets,
    groups: list[np.ndarray],
    buffer: Buffer,
    paths: list[tuple[str, ...]],
    read: Callable[[int], None] = lambda cost: None,
) -> list[Connection]:
    """``[tcp._connection(seg, rows, buffer, paths) for rows in groups]``, computed a batch of
    connections at a time (each connection's result is its own rows').

    ``read`` is told what the reads of a mapped capture may have mapped (as
    ``tcp.sha256_of`` tells it): the 64 KiB around each SYN header read for its options,
    and after each batch, whatever its other reads (overlapping copies compared), enough
    to make it look. Never let go, those pages held 500 MB of the 1M-packet capture."""
    out: list[Connection] = []
    batch: list[np.ndarray] = []
    filled = 0
    for rows in groups:
        batch.append(rows)
        filled += len(rows)
        if filled >= BATCH_SEGMENTS:
            out += _at_once(seg, batch, buffer, paths, read)
            read(RELEASE_SPAN)
            batch, filled = [], 0
    return out + _at_once(seg, batch, buffer, paths, read)


def _at_once(
    seg: TcpPackets,
    groups: list[np.ndarray],
    buffer: Buffer,
    paths: list[tuple[str, ...]],
    read: Callable[[int], None],
) -> list[Connection]:
    n = len(groups)
    if not n:
        return []
    rows = np.concatenate(groups).astype(np.int64)
    conn = _Segments(np.array([len(g) for g in groups], dtype=np.int64))
    cid = conn.each(np.arange(n))
    flags = seg.flags[rows]
    syn, ack = (flags & TCP_SYN) != 0, (flags & TCP_ACK) != 0
    syn_only, syn_ack = conn.first(syn & ~ack), conn.first(syn & ack)
    opener = np.where(syn_only >= 0, syn_only, conn.starts)
    answer = (syn_only < 0) & (syn_ack >= 0)
    by_answer = rows[np.where(answer, syn_ack, opener)]
    by_opener = rows[opener]
    client = [
        np.where(answer, seg.dst_hi[by_answer], seg.src_hi[by_opener]),
        np.where(answer, seg.dst_lo[by_answer], seg.src_lo[by_opener]),
        np.where(answer, seg.dport[by_answer], seg.sport[by_opener]),
    ]
    server = [
        np.where(answer, seg.src_hi[by_answer], seg.dst_hi[by_opener]),
        np.where(answer, seg.src_lo[by_answer], seg.dst_lo[by_opener]),
        np.where(answer, seg.sport[by_answer], seg.dport[by_opener]),
    ]
    from_client = (
        (seg.src_hi[rows] == conn.each(client[0]))
        & (seg.src_lo[rows] == conn.each(client[1]))
        & (seg.sport[rows] == conn.each(client[2]))
    )
    key = 2 * cid + (~from_client)
    order = np.argsort(key, kind="stable")
    drows = rows[order]
    runs = _Segments(np.bincount(key, minlength=2 * n).astype(np.int64))
    directions = _directions(seg, drows, runs, buffer, read)

    times = seg.time_ns[rows]
    first_ns = conn.reduce(np.minimum, times, 0).tolist()
    last_ns = conn.reduce(np.maximum, times, 0).tolist()
    any_flags = conn.reduce(np.bitwise_or, flags, 0)
    path = seg.path[rows]
    one_path = conn.reduce(np.minimum, path, 0) == conn.reduce(np.maximum, path, 0)
    first_path = path[conn.starts].tolist()
    opener_known = ((syn_only >= 0) | (syn_ack >= 0)).tolist()
    clients = list(zip(*(c.tolist() for c in client), strict=True))
    servers = list(zip(*(s.tolist() for s in server), strict=True))
    out = []
    for c in range(n):
        to_server, to_client = directions[2 * c], directions[2 * c + 1]
        if not (to_server.syn and to_client.syn):
            _infer_window_scale(seg, to_server, to_client)
            _infer_window_scale(seg, to_client, to_server)
        flags_c = int(any_flags[c])
        if one_path[c]:
            encapsulations = [paths[first_path[c]]]
        else:
            encapsulations = _paths_in_order(seg.path[groups[c]], paths)
        out.append(
            Connection(
                client=clients[c],
                server=servers[c],
                first_ns=first_ns[c],
                last_ns=last_ns[c],
                syn=bool(flags_c & TCP_SYN),
                fin=bool(flags_c & TCP_FIN),
                rst=bool(flags_c & TCP_RST),
                to_server=to_server,
                to_client=to_client,
                encapsulations=encapsulations,
                opener_known=opener_known[c],
            )
        )
    return out


def _directions(
    seg: TcpPackets,
    drows: np.ndarray,
    runs: _Segments,
    buffer: Buffer,
    read: Callable[[int], None],
) -> list[Direction]:
    """``tcp._direction`` then ``tcp._finish_direction`` for every direction; direction
    ``2c`` is connection ``c``'s client to server, ``2c + 1`` the other way."""
    count = len(runs.counts)
    seq = seg.seq[drows]
    flags = seg.flags[drows]
    syn_row = (flags & TCP_SYN) != 0
    first_syn = runs.first(syn_row)
    has_syn = first_syn >= 0
    base = np.where(has_syn, (seq[np.maximum(first_syn, 0)] + 1) % WRAP, 0)
    rel = _unwrap(seq, runs.each(base), runs) + syn_row
    payload_len = seg.payload_len[drows]
    data = payload_len > 0
    big = np.iinfo(np.int64).max
    low_data = runs.reduce(np.minimum, np.where(data, rel, big), big)
    low_all = runs.reduce(np.minimum, rel, 0)
    low = np.where(has_syn, 0, np.where(low_data < big, low_data, low_all))
    base = np.where(has_syn, base, (base + low) % WRAP)
    rel = rel - runs.each(low)
    small = np.iinfo(np.int64).min
    ends = np.where(data, rel + payload_len, small)
    length = runs.reduce(np.maximum, ends, small)
    length = np.where(length > small, length, 0)
    window = seg.window[drows]
    pieces, gapless = _assemble_all(
        rel, seg.captured_len[drows], seg.payload_offset[drows], runs, length, buffer
    )

    other = np.arange(count) ^ 1
    other_filled = runs.filled[other]
    acks = _unwrap(seg.ack[drows], runs.each(base[other]), runs)
    acks = np.where(runs.each(other_filled), acks, 0)
    rel_ack = np.where((flags & TCP_ACK) != 0, acks, 0)

    mss: list[int | None] = [None] * count
    wscale: list[int | None] = [None] * count
    timestamps = [False] * count
    for d in np.flatnonzero(has_syn).tolist():
        read(FAULT_AROUND_BYTES)
        at = int(drows[first_syn[d]])
        start = int(seg.header_offset[at])
        opts = tcp_options(bytes(buffer[start : start + int(seg.captured_header_len[at])]))
        mss[d], wscale[d], timestamps[d] = opts.get("mss"), opts.get("wscale"), "ts" in opts
    shift = np.array(
        [
            wscale[d] if wscale[d] is not None and wscale[d ^ 1] is not None else 0
            for d in range(count)
        ],
        dtype=np.int64,
    )
    if shift.any():
        window = np.where(syn_row, window, window << runs.each(shift))

    starts, ends_ = runs.starts.tolist(), runs.ends.tolist()
    bases, lengths, syns = base.tolist(), length.tolist(), has_syn.tolist()
    out = []
    for d in range(count):
        a, b = starts[d], ends_[d]
        out.append(
            Direction(
                rows=drows[a:b],
                segments=b - a,
                syn=syns[d],
                base=bases[d],
                mss=mss[d],
                wscale=wscale[d],
                timestamps=timestamps[d],
                rel_seq=rel[a:b],
                pieces=pieces[d],
                length=lengths[d],
                gaps=[] if gapless[d] else pieces[d].gaps(lengths[d]),
                window=window[a:b],
                rel_ack=rel_ack[a:b],
            )
        )
    return out


def _assemble_all(
    rel: np.ndarray,
    lens: np.ndarray,
    offs: np.ndarray,
    runs: _Segments,
    length: np.ndarray,
    buffer: Buffer,
) -> tuple[list[Pieces], list[bool]]:
    """``tcp._assemble`` for every direction, and whether each has no gap (``Pieces.gaps``
    would find none)."""
    count = len(runs.counts)
    keep = lens > 0
    group = np.repeat(np.arange(count), runs.counts)[keep]
    kept = _Segments(np.bincount(group, minlength=count).astype(np.int64))
    starts, lens, offs = rel[keep], lens[keep], offs[keep]
    order = np.lexsort((np.arange(len(starts)), starts, group))
    s, o = starts[order], offs[order]
    e = s + lens[order]
    reached = _running_max_before(e, s, kept)
    if reached is None:
        return _assemble_each(starts, lens, offs, kept, length, buffer)
    new_start = np.maximum(s, reached)
    adds = e > new_start
    p_start, p_end = new_start[adds], e[adds]
    p_off = o[adds] + (p_start - s[adds])
    p_runs = _Segments(np.bincount(group[order][adds], minlength=count).astype(np.int64))
    overlapped = kept.reduce(np.bitwise_or, s < reached, False)

    # Pieces.gaps finds none where the pieces (disjoint, in order) follow each other from
    # offset 0 or before, up to the stream's known extent.
    first = p_runs.reduce(np.minimum, p_start, 0)
    last = p_runs.reduce(np.maximum, p_end, 0)
    joined = np.ones(len(p_start), dtype=bool)
    if len(p_start):
        joined[1:] = p_start[1:] == p_end[:-1]
    joined[p_runs.starts[p_runs.filled]] = True
    follow = p_runs.reduce(np.bitwise_and, joined, True) & (first <= 0) & (length <= last)
    gapless = np.where(p_runs.filled, follow, length <= 0)

    out: list[Pieces] = []
    p_len = p_end - p_start
    lo, hi = p_runs.starts.tolist(), p_runs.ends.tolist()
    klo, khi = kept.starts.tolist(), kept.ends.tolist()
    gapless_list = gapless.tolist()
    overlapped_list = overlapped.tolist()
    for d in range(count):
        a, b = lo[d], hi[d]
        pieces = Pieces(p_start[a:b], p_off[a:b], p_len[a:b])
        if overlapped_list[d]:
            ka, kb = klo[d], khi[d]
            ov = np.flatnonzero(s[ka:kb] < reached[ka:kb])
            agree = _copies_agree(
                s[ka:kb][ov],
                np.minimum(e[ka:kb], reached[ka:kb])[ov],
                o[ka:kb][ov],
                p_start[a:b],
                p_end[a:b],
                p_off[a:b],
                buffer,
            )
            if not agree:
                pieces = Pieces.of(
                    _assemble_with_holes(
                        starts[ka:kb].tolist(),
                        (starts[ka:kb] + lens[ka:kb]).tolist(),
                        offs[ka:kb].tolist(),
                    )
                )
                gapless_list[d] = False
        out.append(pieces)
    return out, gapless_list


def _assemble_each(
    starts: np.ndarray,
    lens: np.ndarray,
    offs: np.ndarray,
    kept: _Segments,
    length: np.ndarray,
    buffer: Buffer,
) -> tuple[list[Pieces], list[bool]]:
    """``tcp._assemble`` a direction at a time (streams too far apart for one sort key)."""
    out = []
    for a, b in zip(kept.starts.tolist(), kept.ends.tolist(), strict=True):
        out.append(_assemble(starts[a:b], lens[a:b], offs[a:b], buffer))
    return out, [False] * len(out)
