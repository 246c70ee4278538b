"""PktMon packet events read a batch of buffers at a time: the fast path of
:func:`~wskreplay.formats.etl_packets.etl_frames`.

A recording is mostly PktMon packet events (one per packet and component). The reference
(``etl_packets._read``) builds an :class:`~wskreplay.formats.etl.EtlEvent` for every record
and reads each packet's fields with ``struct``, some 15 us an event. Here a batch of
inflated buffers (inflated on ``INFLATE_THREADS`` threads) is walked in C
(``_walk.etl_records``) and the fixed fields of all its packet events are gathered with
numpy; only the other events (the driver's own, PktMon's components, schemas, NDIS
fragments) are built as events, and after the pass they go where the reference sends them
(:class:`~wskreplay.formats.etl_packets.Dispatch`), in the reference's time order.
Numbered appearances become packets with one sort; appearances that are not numbered
(Windows 11 24H2 and later) are grouped by content as the reference groups them, in its
order, their bytes read again from the buffers (``_Pass._ids_in_order``).

The result is the reference's or nothing: :func:`read` returns None and the caller takes
the reference pass whenever this one could differ from it or meets anything it does not
handle (:class:`Unsupported`): a per-CPU stream whose time goes back (the reference's merge
then depends on the heap's order), packet events with extended items or
outside EVENT records, a packet layout the file changes after using it, a time outside
64-bit nanoseconds, and any damage (the reference names it).
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import event_metadata, pcap, pieces, pktmon
from wskreplay.formats.etl import (
    EVENT_32,
    EVENT_64,
    FILETIME_UNIX_EPOCH,
    HEADER_SIZES,
    PERFINFO_32,
    PERFINFO_64,
    WPP_MESSAGE,
    BufferInfo,
    EtlEvent,
    EtlFile,
)
from wskreplay.formats.reference import accelerator

BATCH_BYTES = 8 << 20
"""Inflated bytes walked at a time."""
INFLATE_THREADS = 2
PACKET_SHARE = 2
"""The batch pass is taken when at least 1 in PACKET_SHARE records of the first batch is
a packet event (0: always); with fewer, building the other events dominates and the
reference pass, which streams them, is faster."""
EVENT_HEADER_SIZE = HEADER_SIZES[EVENT_64]
_PKTMON_GUID = np.frombuffer(uuid.UUID(pktmon.PROVIDER).bytes_le, np.uint8)
ROW_TYPES = {
    "key": np.int64,
    "rank": np.int32,
    "seq": np.int64,
    "time": np.int64,
    "group": np.uint64,
    "numbered": np.bool_,
    "component": np.int32,
    "edge": np.int32,
    "direction": np.int8,
    "linktype": np.int16,
    "original": np.int32,
    "buffer": np.int64,
    "at": np.int32,
    "length": np.int32,
}
"""The columns kept of every packet appearance until the pass ends (the row-at-a-time
columns' types, and what orders them)."""
MERGE_KEYS = ("key", "rank", "seq")
ID_BLOCK = 4096
"""Appearances grouped by the C twin of ``pktmon.PacketIds`` per call (the buffers they
need are held meanwhile)."""
RELEASE_BUFFERS = 256
"""Buffers inflated again (to group unnumbered appearances) between releases of the file's
pages."""
_MAX_TICKS_PER_SECOND = 10**11
"""Clock frequencies above this could overflow the int64 tick arithmetic: the reference."""


class Unsupported(Exception):
    """This file needs the reference pass; the message says why."""


def read(
    path: str,
    etl: EtlFile,
    reader: Any,
    dispatch: Callable[[EtlEvent], None],
    progress: Callable[[int, int], None] | None,
) -> bool:
    """Fill ``reader`` (an ``etl_packets._PktMon``) with the file's PktMon packets and hand
    every other event to ``dispatch``, in time order, as the reference pass does. False
    when the reference pass must do it; ``reader`` and ``dispatch`` may then have seen part
    of the file and are to be dropped."""
    native = accelerator("_walk")
    if native is None:
        return False
    walk = _Pass(path, etl, native)
    try:
        with _no_cyclic_gc():
            walk.run(progress)
        for _key, _rank, _seq, item in walk.handed_on():
            if isinstance(item, tuple):
                walk.check_first_use(reader, item)
            else:
                dispatch(item)
        if reader.relayout or reader.held_error is not None:
            raise Unsupported("the file's PktMon schemas change a layout once used")
    except (Unsupported, InputError):
        if walk.early is not None:
            walk.early.close()
        return False
    walk.fill(reader)
    return True


class _Pass:
    def __init__(self, path: str, etl: EtlFile, native: Any) -> None:
        self.path, self.etl, self.native = path, etl, native
        self.rank: dict[int, int] = {}
        """Each CPU's place in the reference's merge (the order its first buffer comes)."""
        self.last_key: dict[int, int] = {}
        self.seq = 0
        self.batches: list[dict[str, np.ndarray]] = []
        self.control: list[tuple[int, int, int, EtlEvent]] = []
        self.schemas: dict[tuple[int, int], event_metadata.EventSchema] = {}
        """PktMon schemas the file gave so far, in file order."""
        self.layouts: dict[tuple[int, int], pktmon.PacketLayout] = {}
        """The layout each kind of packet event was gathered with."""
        self.first_use: dict[tuple[int, int], tuple[int, int, int]] = {}
        """(time key, rank, seq) of the first packet event of each kind, in merge order."""
        self.drops = 0
        self.not_frames: dict[int, int] = {}
        self.early: EarlyFrames | None = EarlyFrames()

    def run(self, progress: Callable[[int, int], None] | None) -> None:
        etl = self.etl
        total = etl.buffers[-1].offset + etl.buffers[-1].size
        for batch, parts in inflated(etl, etl.buffers):
            if progress is not None:
                progress(batch[0].offset, total)
            self._batch(batch, parts)
            etl.release_pages()

    def _batch(self, batch: list[BufferInfo], parts: list[Any]) -> None:
        sizes = np.array([len(p) for p in parts], np.int64)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        data = b"".join(parts)
        bounds = np.stack([starts, ends], axis=1).astype(np.int64)
        rows, bad = self.native.etl_records(data, bounds.tobytes())
        if bad >= 0:
            raise Unsupported(f"buffer at {batch[bad].offset} is damaged")
        rec = np.frombuffer(rows, np.int64).reshape(-1, 4)
        pos, size, kind, buf = (rec[:, k] for k in range(4))
        u8 = np.frombuffer(data, np.uint8)
        rank = np.array([self.rank.setdefault(i.cpu, len(self.rank)) for i in batch], np.int64)
        rank = rank[buf]
        seq = self.seq + np.arange(len(pos), dtype=np.int64)
        self.seq += len(pos)
        wpp = kind == WPP_MESSAGE
        time_at = np.where((kind == PERFINFO_32) | (kind == PERFINFO_64), 0x08, 0x10)
        key = _le(u8, np.where(wpp, 0, pos + time_at), 8).view(np.int64)
        key = np.where(wpp, 0, key)
        self._check_monotone(rank, key)
        event = (kind == EVENT_32) | (kind == EVENT_64)
        ev_pos = np.where(event, pos, 0)
        pktmon_event = event & (_bytes_at(u8, ev_pos + 0x18, 16) == _PKTMON_GUID).all(axis=1)
        eid = _le(u8, ev_pos + 0x28, 2)
        packet = pktmon_event & ((eid == pktmon.PACKET) | (eid == pktmon.DROP))
        if PACKET_SHARE and self.seq == len(pos) and packet.sum() * PACKET_SHARE < len(pos):
            raise Unsupported("few packet events: the reference pass is as fast")
        if (_le(u8, ev_pos + 4, 2)[packet] & 1).any():
            raise Unsupported("PktMon packet events with extended items")
        self._control(
            batch, memoryview(data), starts, ends, ~packet, pos, size, kind, buf, key, rank, seq
        )
        if not packet.any():
            return
        sel = np.flatnonzero(packet)
        offsets = np.array([i.offset for i in batch], np.int64)
        version = u8[pos[sel] + 0x2A].astype(np.int64)
        kinds = eid[sel].astype(np.int64) << 8 | version
        for code in np.unique(kinds).tolist():
            mine = sel[kinds == code]
            self._packets(
                (code >> 8, code & 0xFF),
                u8,
                pos[mine],
                size[mine],
                key[mine],
                rank[mine],
                seq[mine],
                starts[buf[mine]],
                offsets[buf[mine]],
            )

    def _control(
        self,
        batch: list[BufferInfo],
        data: memoryview,
        starts: np.ndarray,
        ends: np.ndarray,
        mask: np.ndarray,
        *columns: np.ndarray,
    ) -> None:
        """Build the events that are not PktMon packets, as the reference does."""
        at = starts.tolist()
        views = [data[a:b] for a, b in zip(at, ends.tolist(), strict=True)]
        build, control = self.etl._event, self.control
        for pos, size, kind, b, key, rank, seq in zip(
            *(c[mask].tolist() for c in columns), strict=True
        ):
            ev = build(views[b], pos - at[b], size, kind, batch[b])
            if ev.provider_guid == pktmon.PROVIDER and ev.id in (pktmon.PACKET, pktmon.DROP):
                raise Unsupported("a PktMon packet event outside an EVENT record")
            if ev.provider_guid == event_metadata.PROVIDER_GUID:
                self._note_schema(ev)
            control.append((key, rank, seq, ev))

    def _check_monotone(self, rank: np.ndarray, key: np.ndarray) -> None:
        """Every CPU's records must come in time order: the reference's merge is a sort
        then, and this pass's is the same sort."""
        order = np.argsort(rank, kind="stable")
        r, k = rank[order], key[order]
        same = r[1:] == r[:-1]
        if (same & (k[1:] < k[:-1])).any():
            raise Unsupported("a CPU's events go back in time")
        starts = np.flatnonzero(np.concatenate(([True], ~same)))
        ends = np.concatenate((starts[1:], [len(r)])) - 1
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            cpu = int(r[s])
            if k[s] < self.last_key.get(cpu, k[s]):
                raise Unsupported("a CPU's events go back in time")
            self.last_key[cpu] = int(k[e])

    def _note_schema(self, ev: EtlEvent) -> None:
        """An EventMetadata event: a PktMon schema as the file gives it. One given twice,
        or after packets of its kind were gathered in an earlier batch, leaves the file
        to the reference (which may well agree: this pass does not judge)."""
        if ev.id != event_metadata.EVENT_INFO:
            return
        schema = event_metadata.decode_event_info(ev.payload, self.path, ev.record_offset)
        if schema.provider_guid != pktmon.PROVIDER:
            return
        key = (schema.event_id, schema.version)
        if key in self.schemas or key in self.layouts:
            raise Unsupported(f"PktMon event {key} described again or after use")
        self.schemas[key] = schema

    def _packets(
        self,
        kind: tuple[int, int],
        u8: np.ndarray,
        pos: np.ndarray,
        size: np.ndarray,
        key: np.ndarray,
        rank: np.ndarray,
        seq: np.ndarray,
        buffer_start: np.ndarray,
        buffer_offset: np.ndarray,
    ) -> None:
        schema = self.schemas.get(kind) or pktmon.BUILTIN.get(kind)
        if schema is None:
            raise Unsupported(f"PktMon event {kind} has no layout")
        layout = pktmon.packet_layout(schema, self.path)
        if not self.layouts.setdefault(kind, layout).same(layout):
            raise Unsupported(f"PktMon event {kind} read with two layouts")
        first = np.lexsort((seq, rank, key))[0]
        mark = (int(key[first]), int(rank[first]), int(seq[first]))
        self.first_use[kind] = min(self.first_use.get(kind, mark), mark)
        payload = pos + EVENT_HEADER_SIZE
        room = size - EVENT_HEADER_SIZE - layout.fixed.size
        if (room < 0).any():
            raise Unsupported("a PktMon event shorter than its fixed part")
        f = {name: _le(u8, payload + at, width) for name, at, width in layout.fields}
        logged = f["LoggedPayloadSize"].astype(np.int64)
        if (logged > room).any():
            raise Unsupported("a PktMon event with fewer bytes than it claims")
        if kind[0] == pktmon.DROP:
            self.drops += len(pos)
            return
        frame = payload + layout.fixed.size
        ptype = f["PacketType"].astype(np.int64)
        ethertype = _le(u8, np.where(logged >= 14, frame + 12, 0), 2).byteswap()
        ethernet = (ptype == 1) | (
            (ptype == 2) & (logged >= 14) & np.isin(ethertype, pktmon.ETHERNET_TYPES)
        )
        linktype = np.select(
            [ethernet, ptype == 3, ptype == 2],
            [pcap.LINKTYPE_ETHERNET, pcap.LINKTYPE_RAW, pktmon.LINKTYPE_IEEE802_11],
            -1,
        )
        framed = linktype >= 0
        for t, n in zip(*np.unique(ptype[~framed], return_counts=True), strict=True):
            self.not_frames[int(t)] = self.not_frames.get(int(t), 0) + int(n)
        if any((f[name][framed] > pktmon.NARROW_MAX).any() for name in pktmon.NARROW_FIELDS):
            raise Unsupported("a PktMon field above 31 bits (the reference names it)")
        dirtag = f["DirTag"].astype(np.int64)
        direction = np.select(
            [
                np.isin(dirtag, sorted(pktmon.INBOUND_TAGS)),
                np.isin(dirtag, sorted(pktmon.OUTBOUND_TAGS)),
            ],
            [pcap.DIRECTION_IN, pcap.DIRECTION_OUT],
            pcap.DIRECTION_UNKNOWN,
        )
        self.batches.append(
            {
                name: np.ascontiguousarray(column[framed], dtype=ROW_TYPES[name])
                for name, column in (
                    ("key", key),
                    ("rank", rank),
                    ("seq", seq),
                    ("group", f["PktGroupId"]),
                    ("numbered", f["AppearanceCount"] != 0),
                    ("component", f["ComponentId"]),
                    ("edge", f["EdgeId"]),
                    ("direction", direction),
                    ("linktype", linktype),
                    ("original", f["OriginalPayloadSize"]),
                    ("buffer", buffer_offset),
                    ("at", frame - buffer_start),
                    ("length", logged),
                )
            }
        )
        self.batches[-1]["time"] = self._to_ns(key[framed])
        if self.early is not None:
            groups = f["PktGroupId"][framed]
            if (f["AppearanceCount"][framed] == 0).any() or len(np.unique(groups)) < len(groups):
                self.early.close()
                self.early = None
            else:
                self.batches[-1]["early_at"] = self.early.write(u8, frame[framed], logged[framed])

    def _to_ns(self, ts: np.ndarray) -> np.ndarray:
        """``EtlFile.to_ns`` of many timestamps, or Unsupported where int64 could overflow
        (the reference then reports a time outside the years 1678-2262)."""
        h = self.etl.header
        ts = ts.astype(np.int64)
        if not len(ts):
            return ts
        edge = max(abs(int(ts.min())), abs(int(ts.max())), abs(h.header_timestamp))
        if edge >= 1 << 61:
            raise Unsupported("timestamps near the int64 limit")
        if h.clock == "system-time":
            filetime = ts
        else:
            freq = h.perf_freq if h.clock == "qpc" else h.cpu_mhz * 1_000_000
            if not 0 < freq <= _MAX_TICKS_PER_SECOND:
                raise Unsupported(f"clock frequency {freq}")
            whole, rest = np.divmod(ts - h.header_timestamp, freq)
            if int(np.abs(whole).max()) >= 1 << 38:
                raise Unsupported("timestamps too far from the start")
            filetime = h.start_filetime + whole * 10_000_000 + rest * 10_000_000 // freq
        since = filetime - FILETIME_UNIX_EPOCH
        limit = (1 << 63) // 100 - 1
        if int(since.min()) < -limit or int(since.max()) > limit:
            raise Unsupported("a time outside 64-bit nanoseconds")
        return since * 100

    def handed_on(self) -> list[tuple[int, int, int, Any]]:
        """The other events and each packet kind's first use, in the reference's order."""
        items: list[tuple[int, int, int, Any]] = self.control
        items += [(*mark, kind) for kind, mark in self.first_use.items()]
        items.sort()  # (time, rank, seq) never ties: seq numbers every record
        return items

    def check_first_use(self, reader: Any, kind: tuple[int, int]) -> None:
        """The reference reads every event of a kind with the layout of its first one's
        time: the one gathered with must be it."""
        layout = pktmon.packet_layout(reader.schema_for(kind, 0), self.path)
        if not layout.same(self.layouts[kind]):
            raise Unsupported(f"PktMon event {kind} is described after its first use")

    def fill(self, reader: Any) -> None:
        """The packets' rows, in the reference's order, each column gathered and put in
        order on its own (a recording holds millions of rows)."""

        def column(name: str) -> np.ndarray:
            parts = [b.pop(name) for b in self.batches]
            return np.concatenate(parts) if parts else np.empty(0, ROW_TYPES[name])

        order = np.lexsort((column("seq"), column("rank"), column("key")))
        rows = {name: column(name)[order] for name in ROW_TYPES if name not in MERGE_KEYS}
        if self.early is not None and self.batches:
            reader.early = self.early.in_order(column("early_at")[order])
        elif self.early is not None:
            self.early.close()
        self.batches.clear()
        numbered = rows.pop("numbered")
        if numbered.all():
            rows["packet"] = _numbered_ids(rows.pop("group"), rows["time"])
        else:
            rows["packet"] = self._ids_in_order(rows, numbered)
            del rows["group"]
        reader.rows.fill(rows)
        reader.drops = self.drops
        reader.not_frames.update(self.not_frames)

    def _ids_in_order(self, rows: dict[str, np.ndarray], numbered: np.ndarray) -> np.ndarray:
        """``pktmon.PacketIds`` over every appearance in the reference's order, as the
        reference calls it: by group where numbered, else by the network bytes, read again
        from the inflated buffers. Rows of one CPU come in its buffers' order, so about one
        buffer a CPU is held at a time, each let go after its last row.

        Its C twin (``formats/_pktmon.c``) takes ID_BLOCK rows a call, with the buffers
        those rows need; ``_ids_one_by_one`` is the reference."""
        native = accelerator("_pktmon")
        if native is None:
            return self._ids_one_by_one(rows, numbered)
        ids = native.PacketIds(
            gap_ns=pktmon.APPEARANCE_GAP_NS,
            span_ns=pktmon.NUMBERED_SPAN_NS,
            match_bytes=pktmon.MATCH_BYTES,
            ethernet=pcap.LINKTYPE_ETHERNET,
            ieee80211=pktmon.LINKTYPE_IEEE802_11,
        )
        n = len(numbered)
        out = np.empty(n, np.int64)
        by_content = ~numbered
        buffer = rows["buffer"]
        last_row = _last_rows(buffer, np.flatnonzero(by_content))
        infos = {b.offset: b for b in self.etl.buffers}
        held: dict[int, Any] = {}
        inflated = 0

        def block(name: str, lo: int, hi: int) -> np.ndarray:
            column = (numbered if name == "numbered" else rows[name])[lo:hi]
            if name == "group":
                return column.view(np.int64)
            return np.ascontiguousarray(column, np.int64)

        for lo in range(0, n, ID_BLOCK):
            hi = min(lo + ID_BLOCK, n)
            wanted = by_content[lo:hi]
            for b in np.unique(buffer[lo:hi][wanted]).tolist():
                if b not in held:
                    held[b] = self.etl.buffer_bytes(infos[b])
                    inflated += 1
                    if not inflated % RELEASE_BUFFERS:
                        self.etl.release_pages()
            offsets = np.array(sorted(held), np.int64)
            which = np.full(hi - lo, -1, np.int64)
            which[wanted] = np.searchsorted(offsets, buffer[lo:hi][wanted])
            ids.assign(
                out[lo:hi],
                *(block(name, lo, hi) for name in ("time", "group", "numbered")),
                which,
                *(
                    block(name, lo, hi)
                    for name in ("at", "length", "linktype", "component", "edge")
                ),
                [held[b] for b in offsets.tolist()],
            )
            for b in [b for b in held if last_row[b] < hi]:
                del held[b]
        self.etl.release_pages()
        return out

    def _ids_one_by_one(self, rows: dict[str, np.ndarray], numbered: np.ndarray) -> np.ndarray:
        ids = pktmon.PacketIds()
        out = np.empty(len(numbered), np.int64)
        by_content = np.flatnonzero(~numbered)
        buffer = rows["buffer"]
        last_row = _last_rows(buffer, by_content)
        infos = {b.offset: b for b in self.etl.buffers}
        held: dict[int, Any] = {}
        inflated = 0
        columns = (rows["time"], rows["group"], numbered, buffer, rows["at"], rows["length"])
        columns += (rows["linktype"], rows["component"], rows["edge"])
        for i, (t, group, by_group, b, at, n, linktype, component, edge) in enumerate(
            _rows_of(columns)
        ):
            if by_group:
                out[i] = ids.numbered(group, t)
                continue
            raw = held.get(b)
            if raw is None:
                raw = held[b] = self.etl.buffer_bytes(infos[b])
                inflated += 1
                if not inflated % RELEASE_BUFFERS:
                    self.etl.release_pages()
            content = pktmon.network_bytes(raw[at : at + n], linktype)
            out[i] = ids.by_content(t, component, edge, content)
            if last_row[b] == i:
                del held[b]
        self.etl.release_pages()
        return out


class EarlyFrames:
    """Every PktMon frame, written to a spill in the first pass as its batch is read, in
    the hope that the frames file ``etl_packets._copy_frames`` would write is exactly
    this one: so it is when every packet has one appearance and the file's order is the
    time order (a one-CPU recording of the NICs, the default of ``pktmon start -c``).
    Then the frames need no second pass over the buffers. Written while every appearance
    read is numbered and its group new in its batch (else given up at once: a recording
    of every component would write each packet several times); ``etl_packets._frames``
    checks the rest, every frame's place, before it takes the file."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="wskreplay-frames-")
        self.size = 0
        self.at: np.ndarray | None = None

    def write(self, u8: np.ndarray, source: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Append the frames at ``source`` (``length`` bytes each) in ``u8``; where each went."""
        length = length.astype(np.int64)
        staged_at = np.cumsum(length) - length
        staged = bytearray(int(length.sum()))
        pieces.copy(staged, staged_at, u8, source.astype(np.int64), length)
        write_at(self.file.fileno(), staged, self.size)
        out = staged_at + self.size
        self.size += len(staged)
        return out

    def in_order(self, at: np.ndarray) -> EarlyFrames:
        """Where each row's frame went, rows in the reference's order."""
        self.at = at
        return self

    def is_file(self, total: int, chosen: np.ndarray, placed: np.ndarray, ndis: list) -> bool:
        """Whether this is the frames file ``_copy_frames`` would write: no NDIS frame, and
        every chosen frame (each row written, none left out) exactly where it would put it."""
        return (
            total > 0
            and not ndis
            and self.at is not None
            and self.size == total
            and len(chosen) == len(self.at)
            and np.array_equal(self.at[chosen], placed[: len(chosen)])
        )

    def mapped(self) -> tuple[memoryview, mmap.mmap]:
        """The frames file, mapped read-only (its pages can leave memory once read)."""
        out = mmap.mmap(self.file.fileno(), self.size, access=mmap.ACCESS_READ)
        self.file.close()
        return memoryview(out), out

    def close(self) -> None:
        self.file.close()


def write_at(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """All of ``data`` at ``offset`` of the file (``pwrite`` may write less at a time)."""
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _last_rows(buffer: np.ndarray, rows: np.ndarray) -> dict[int, int]:
    """Each buffer's last row among ``rows`` (found with numpy: a dict made from every
    row's Python ints left 90 MB of the heap behind for a million rows)."""
    uniq, from_end = np.unique(buffer[rows][::-1], return_index=True)
    return dict(zip(uniq.tolist(), rows[len(rows) - 1 - from_end].tolist(), strict=True))


def _rows_of(columns: tuple[np.ndarray, ...], step: int = 1 << 16) -> Iterator[tuple]:
    """The columns' rows as Python values, ``step`` rows made at a time."""
    for lo in range(0, len(columns[0]), step):
        yield from zip(*(c[lo : lo + step].tolist() for c in columns), strict=True)


def _numbered_ids(group: np.ndarray, time_ns: np.ndarray) -> np.ndarray:
    """``pktmon.PacketIds.numbered`` over appearances in time order: an appearance opens a
    new packet unless its group's previous one is at most NUMBERED_SPAN_NS older."""
    n = len(group)
    if not n:
        return np.empty(0, np.int64)
    by_group = np.lexsort((np.arange(n), group))
    g, t = group[by_group], time_ns[by_group]
    new = np.ones(n, bool)
    new[1:] = (g[1:] != g[:-1]) | (t[1:] - t[:-1] > pktmon.NUMBERED_SPAN_NS)
    opened = np.empty(n, bool)
    opened[by_group] = new
    ids = np.cumsum(opened) - 1
    last_opened = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    out = np.empty(n, np.int64)
    out[by_group] = ids[by_group][last_opened]
    return out


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The pass holds an event object for every record that is not a packet until the
    end; Python's cyclic collector would walk all of them again and again as they pile
    up (none is part of a cycle)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def inflated(
    etl: EtlFile, buffers: list[BufferInfo]
) -> Iterator[tuple[list[BufferInfo], list[Any]]]:
    """The buffers in batches of about BATCH_BYTES inflated, each with ``etl.buffer_bytes``
    of its buffers. They are inflated on INFLATE_THREADS threads (the XPRESS decoder runs
    without the GIL), the next batch while the caller works on this one."""

    def start(batch: list[BufferInfo]) -> list[Future[list[Any]]]:
        shares = [batch[k::INFLATE_THREADS] for k in range(INFLATE_THREADS)]
        return [
            pool.submit(lambda share=share: [etl.buffer_bytes(i) for i in share])
            for share in shares
        ]

    with ThreadPoolExecutor(INFLATE_THREADS) as pool:
        batches = _batches(buffers)
        pending = start(batches[0]) if batches else []
        for k, batch in enumerate(batches):
            current = pending
            pending = start(batches[k + 1]) if k + 1 < len(batches) else []
            parts: list[Any] = [None] * len(batch)
            for j, future in enumerate(current):
                parts[j::INFLATE_THREADS] = future.result()
            yield batch, parts


def _batches(buffers: list[BufferInfo]) -> list[list[BufferInfo]]:
    out: list[list[BufferInfo]] = [[]]
    filled = 0
    for info in buffers:
        if filled >= BATCH_BYTES:
            out.append([])
            filled = 0
        out[-1].append(info)
        filled += info.fill
    return [b for b in out if b]


def _bytes_at(u8: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    return u8[at[:, None] + np.arange(width)]


def _le(u8: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """The little-endian unsigned integer of ``width`` bytes at each offset."""
    if not len(at):
        return np.empty(0, f"<u{width}")
    return np.ascontiguousarray(_bytes_at(u8, at, width)).view(f"<u{width}").reshape(-1)
