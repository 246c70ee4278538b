"""IPv4 and IPv6 fragment reassembly, bounded.

Fragments are keyed by IP version, addresses, identification (and protocol, for IPv4)
and the encapsulation they came through, and taken in capture order. A datagram is
complete when its last fragment (no More Fragments flag) is in and every byte before it is
covered; where fragments overlap, the first to arrive wins. A fragment whose bytes the
capture cut (snap length) leaves its datagram incomplete. The completed datagram belongs
to the frame that completed it, as in Wireshark.

A fragment that arrives again after its datagram was completed (a duplicate: same key,
bytes equal to what the datagram holds there) is decoded as such, not as the start of a
new datagram; the last :data:`MAX_REMEMBERED_BYTES` of completed datagrams are kept for
this.

What a hostile capture can make this hold is bounded: at most :data:`MAX_HELD_BYTES` of
fragment bytes and :data:`MAX_PENDING` unfinished datagrams (the oldest is dropped first,
its frames reported as dropped at the limit), and no datagram past 65,535 bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from wskreplay.formats.layers.walk import Fragments, Reason, Walk

MAX_HELD_BYTES = 64 << 20
MAX_PENDING = 65_536
MAX_DATAGRAM = 65_535
MAX_REMEMBERED_BYTES = 16 << 20


@dataclass
class Datagram:
    version: int
    proto: int
    addresses: tuple[int, int, int, int]
    ip_path: int
    frames: list[int] = field(default_factory=list)
    paths: list[int] = field(default_factory=list)
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    total: int | None = None
    held: int = 0
    damaged: bool = False
    """A fragment was cut by the capture or lies past 65,535 bytes: it cannot complete."""

    def complete(self) -> bytes | None:
        if self.total is None or self.damaged:
            return None
        reached = 0
        for start, data in sorted(self.pieces, key=lambda p: p[0]):
            if start > reached:
                return None
            reached = max(reached, start + len(data))
        if reached < self.total:
            return None
        out = bytearray(self.total)
        for start, data in reversed(self.pieces):
            out[start : start + len(data)] = data[: max(0, self.total - start)]
        return bytes(out)


@dataclass
class Completed:
    """A reassembled datagram: its IP payload, and the frames it was made of."""

    frame: int
    order: int
    version: int
    proto: int
    addresses: tuple[int, int, int, int]
    ip_path: int
    payload: bytes
    frames: list[int]
    paths: list[int]


class Reassembler:
    """The walk's fragment sink: collects fragments as the chunks of a capture are
    walked, in capture order, and completes datagrams."""

    def __init__(self) -> None:
        self.pending: OrderedDict[tuple, Datagram] = OrderedDict()
        self.completed: list[Completed] = []
        self.failed: list[tuple[list[int], list[int], Reason]] = []
        self.duplicates: list[tuple[int, int]] = []
        """(frame, path) of fragments that repeat part of a completed datagram."""
        self.held = 0
        self._done: OrderedDict[tuple, bytes] = OrderedDict()
        self._remembered = 0

    def add(self, w: Walk, fragments: Fragments) -> None:
        u = w.u
        rows = fragments.rows
        order = np.lexsort((u.order[rows], u.frame[rows]))
        cols = [
            u.frame[rows],
            u.order[rows],
            u.path[rows],
            u.ip_path[rows],
            u.src_hi[rows],
            u.src_lo[rows],
            u.dst_hi[rows],
            u.dst_lo[rows],
            fragments.ident,
            fragments.offset,
            fragments.more,
            fragments.payload,
            u.end[rows],
            u.ip_end[rows],
            fragments.proto,
        ]
        for values in zip(*(c[order].tolist() for c in cols), strict=True):
            self._one(w, fragments.version, *values)

    def _one(
        self,
        w: Walk,
        version: int,
        frame: int,
        order: int,
        path: int,
        ip_path: int,
        src_hi: int,
        src_lo: int,
        dst_hi: int,
        dst_lo: int,
        ident: int,
        offset: int,
        more: bool,
        at: int,
        end: int,
        ip_end: int,
        proto: int,
    ) -> None:
        addresses = (src_hi, src_lo, dst_hi, dst_lo)
        key = (version, addresses, ident, proto if version == 4 else None, ip_path)
        wire = max(0, ip_end - at)
        data = w.raw[at : at + max(0, min(end, ip_end) - at)].tobytes()
        d = self.pending.get(key)
        if d is None:
            done = self._done.get(key)
            if done is not None and data == done[offset : offset + len(data)] and data:
                self.duplicates.append((frame, path))
                return
            d = Datagram(version, proto, addresses, ip_path)
            self.pending[key] = d
            self._evict()
        d.frames.append(frame)
        d.paths.append(path)
        if len(data) < wire or offset + wire > MAX_DATAGRAM:
            d.damaged = True
        if offset == 0 and version == 6:
            d.proto = proto
        if not more:
            d.total = offset + wire
        if data and not d.damaged:
            d.pieces.append((offset, data))
            d.held += len(data)
            self.held += len(data)
        payload = d.complete()
        if payload is not None:
            del self.pending[key]
            self.held -= d.held
            self._remember(key, payload)
            self.completed.append(
                Completed(
                    frame, order, version, d.proto, addresses, ip_path, payload, d.frames, d.paths
                )
            )
        while self.held > MAX_HELD_BYTES and self.pending:
            self._drop_oldest()

    def _remember(self, key: tuple, payload: bytes) -> None:
        old = self._done.pop(key, None)
        self._remembered += len(payload) - (len(old) if old is not None else 0)
        self._done[key] = payload
        while self._remembered > MAX_REMEMBERED_BYTES and self._done:
            self._remembered -= len(self._done.popitem(last=False)[1])

    def _evict(self) -> None:
        while len(self.pending) > MAX_PENDING:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, d = self.pending.popitem(last=False)
        self.held -= d.held
        self.failed.append((d.frames, d.paths, Reason.FRAGMENT_LIMIT))

    def finish(self) -> None:
        """Datagrams still unfinished when the capture ends."""
        for d in self.pending.values():
            self.failed.append((d.frames, d.paths, Reason.FRAGMENT_INCOMPLETE))
        self.pending.clear()
        self.held = 0
