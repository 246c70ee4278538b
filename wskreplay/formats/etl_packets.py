"""Packets inside ETL (PktMon and NDIS-PacketCapture events) as the same
:class:`~wskreplay.formats.pcap.Frames` table the pcap reader returns, so reassembly and
``streams`` work on an ``.etl`` as on a capture.

Microsoft-Windows-NDIS-PacketCapture (``netsh trace start capture=yes``) logs a frame as
one or more fragment events (1001: u32 MiniportIfIndex, u32 LowerIfIndex, u32
FragmentSize, the fragment; newer versions append more after it, so the fragment is read
by its size, never to the end of the event). A frame ends at the event whose keywords hold
PACKET_END (0x80000000); PACKET_START (0x40000000) begins a new one. Keywords also give the
direction (0x100000000 send, 0x200000000 receive) and the medium (0x10000 native 802.11,
0x200 raw IP, else Ethernet). The frame's time is its first fragment's.

Microsoft-Windows-PktMon logs one event per component a packet crosses; one frame is
kept per packet, the appearance nearest the wire (see :mod:`.pktmon` for how appearances
are grouped and chosen, and where the event layouts come from). Drop events (170) are
packets a component discarded: they are counted, never presented as wire frames. Packet
types that are not a link layer (PktMon's HTTP type) are counted as not decoded.
"""

from __future__ import annotations

import mmap
import struct
import tempfile
from array import array
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import etl_batch, event_metadata, pcap, pieces, pktmon
from wskreplay.formats.etl import BufferInfo, EtlEvent, EtlFile

PKTMON_PROVIDER = pktmon.PROVIDER
PKTMON_PACKET, PKTMON_DROP = pktmon.PACKET, pktmon.DROP
NDIS_PROVIDER = "2ed6006e-4729-4609-b423-3ee7bcd678ef"
NDIS_FRAGMENT = 1001
KW_RAW_IP, KW_NATIVE_802_11 = 0x200, 0x10000
KW_PACKET_START, KW_PACKET_END = 0x40000000, 0x80000000
KW_SEND, KW_RECEIVE = 0x100000000, 0x200000000
LINKTYPE_IEEE802_11 = pktmon.LINKTYPE_IEEE802_11
NOT_A_FRAME = -1
"""The report's link type for PktMon appearances that hold no frame."""
HTTP_PACKET_TYPE = 4
"""http.sys logs the HTTP payload of packets whose frames the layers below log too."""
PACKET_TYPE_NAMES = {0: "unknown", HTTP_PACKET_TYPE: "HTTP"}


def _linktype(packet_type: int, frame: bytes | memoryview) -> int:
    if packet_type == 1:
        return pcap.LINKTYPE_ETHERNET
    if packet_type == 3:
        return pcap.LINKTYPE_RAW
    if packet_type == 2:
        ethernet = len(frame) >= 14 and (frame[12] << 8 | frame[13]) in pktmon.ETHERNET_TYPES
        return pcap.LINKTYPE_ETHERNET if ethernet else LINKTYPE_IEEE802_11
    return -1


class _Columns:
    """One row per PktMon appearance, in arrival order (compact: a long recording holds
    millions). Filled a row at a time by the reference, or all at once from the columns
    ``etl_batch`` gathers."""

    NAMES = {
        "packet": "q",
        "time": "q",
        "component": "i",
        "edge": "i",
        "direction": "b",
        "linktype": "h",
        "original": "i",
        "buffer": "q",
        "at": "i",
        "length": "i",
    }

    def __init__(self) -> None:
        self._rows = {name: array(code) for name, code in self.NAMES.items()}
        self._arrays: dict[str, np.ndarray] | None = None
        self._append = [col.append for col in self._rows.values()]

    def add(self, *values: int) -> None:
        for append, value in zip(self._append, values, strict=True):
            append(value)

    def fill(self, arrays: dict[str, np.ndarray]) -> None:
        """Every row at once, a column each, with the types of the row-at-a-time columns."""
        self._arrays = {
            name: np.ascontiguousarray(arrays[name], dtype=np.dtype(code))
            for name, code in self.NAMES.items()
        }

    def __len__(self) -> int:
        return len(self.numpy("packet"))

    def numpy(self, name: str) -> np.ndarray:
        if self._arrays is not None:
            return self._arrays[name]
        col = self._rows[name]
        return np.frombuffer(col, dtype=col.typecode)


class _PktMon:
    """The PktMon events of one pass over a file."""

    def __init__(self, path: str, schemas: dict[tuple[int, int], event_metadata.EventSchema]):
        self.path = path
        self.schemas = dict(schemas)
        self.used: dict[tuple[int, int], event_metadata.EventSchema] = {}
        self.layouts: dict[tuple[int, int], pktmon.PacketLayout] = {}
        self.components = pktmon.Components()
        self.rows = _Columns()
        self.ids = pktmon.PacketIds()
        self.drops = 0
        self.not_frames: Counter[int] = Counter()
        self.relayout = False
        """A schema came after events of its kind were read another way: read again."""
        self.held_error: InputError | None = None
        """The first event the built-in layout could not read, before the file said
        anything about its layout: an error only if the file never does."""
        self.ndis_unfinished = 0
        self.early: etl_batch.EarlyFrames | None = None
        """The frames the batch pass wrote as it read (``_frames`` takes them if they are
        the frames file it would write)."""

    def schema(self, ev: EtlEvent) -> event_metadata.EventSchema:
        return self.schema_for((ev.id, ev.version), ev.record_offset)

    def schema_for(self, key: tuple[int, int], where: int) -> event_metadata.EventSchema:
        """The schema events of ``key`` are read with from here on (the file's, else the
        built-in one)."""
        schema = self.schemas.get(key) or pktmon.BUILTIN.get(key)
        if schema is None:
            raise InputError(
                self.path,
                f"PktMon event {key[0]} version {key[1]}: the file describes no layout for "
                "it and the built-in one is for version 0; not read",
                where,
            )
        self.used.setdefault(key, schema)
        return schema

    def learn(self, ev: EtlEvent) -> None:
        """An EventMetadata schema; one for PktMon replaces the built-in layout."""
        schema = event_metadata.decode_event_info(ev.payload, self.path, ev.record_offset)
        if schema.provider_guid != pktmon.PROVIDER:
            return
        key = (schema.event_id, schema.version)
        used = self.used.get(key)
        if (used is not None and not _same_layout(used, schema)) or self.held_error:
            self.relayout = True
        self.schemas[key] = schema

    def event(self, ev: EtlEvent) -> None:
        if self.relayout:
            return
        try:
            self._event(ev)
        except InputError as exc:
            if (ev.id, ev.version) in self.schemas:
                raise
            self.held_error = self.held_error or exc

    def _event(self, ev: EtlEvent) -> None:
        if ev.id in (pktmon.PACKET, pktmon.DROP):
            self.packet(ev)
        elif ev.id in (pktmon.COMPONENT, pktmon.COMPONENT_PROPERTY, pktmon.EDGE):
            values = pktmon.component_values(
                self.schema(ev), ev.payload, self.path, ev.record_offset
            )
            if values is not None:
                self.components.add(ev.id, values)

    def packet(self, ev: EtlEvent) -> None:
        key = (ev.id, ev.version)
        layout = self.layouts.get(key)
        if layout is None:
            layout = self.layouts[key] = pktmon.packet_layout(self.schema(ev), self.path)
        if len(ev.payload) < layout.fixed.size:
            raise InputError(
                self.path,
                f"PktMon event {ev.id} of {len(ev.payload)} bytes, "
                f"the fixed part needs {layout.fixed.size}",
                ev.record_offset,
            )
        f = layout.unpack(ev.payload)
        logged = f["LoggedPayloadSize"]
        start = layout.fixed.size
        frame = ev.payload[start : start + logged]
        if len(frame) != logged:
            raise InputError(
                self.path,
                f"PktMon event claims {logged} logged bytes, {len(ev.payload) - start} present",
                ev.record_offset,
            )
        if ev.id == pktmon.DROP:
            self.drops += 1
            return
        linktype = _linktype(f["PacketType"], frame)
        if linktype < 0:
            self.not_frames[f["PacketType"]] += 1
            return
        for name in pktmon.NARROW_FIELDS:
            if f[name] > pktmon.NARROW_MAX:
                raise InputError(
                    self.path,
                    f"PktMon event's {name} {f[name]} is above {pktmon.NARROW_MAX} "
                    "(a layout giving it more than 31 bits)",
                    ev.record_offset,
                )
        component, edge = f["ComponentId"], f["EdgeId"]
        if f["AppearanceCount"]:
            pid = self.ids.numbered(f["PktGroupId"], ev.ts_ns)
        else:
            content = pktmon.network_bytes(frame, linktype)
            pid = self.ids.by_content(ev.ts_ns, component, edge, content)
        dirtag = f["DirTag"]
        direction = (
            pcap.DIRECTION_IN
            if dirtag in pktmon.INBOUND_TAGS
            else pcap.DIRECTION_OUT
            if dirtag in pktmon.OUTBOUND_TAGS
            else pcap.DIRECTION_UNKNOWN
        )
        self.rows.add(
            pid,
            ev.ts_ns,
            component,
            edge,
            direction,
            linktype,
            f["OriginalPayloadSize"],
            ev.buffer_offset,
            ev.payload_offset + start,
            logged,
        )

    def chosen(self) -> np.ndarray:
        """Row of each packet's frame: the appearance nearest the wire; among equals the
        first of an inbound packet and the last of an outbound one."""
        rows = self.rows
        if not len(rows):
            return np.empty(0, np.int64)
        packet = rows.numpy("packet")
        seen, first = np.unique(packet, return_index=True)
        if len(seen) == len(packet):
            return np.arange(len(packet), dtype=np.int64)
        comp, edge = rows.numpy("component"), rows.numpy("edge")
        key = comp.astype(np.int64) << 32 | edge.astype(np.int64)
        pairs, inverse = np.unique(key, return_inverse=True)
        unknown = 1 << 30
        per_pair = [self.components.distance(k >> 32, k & 0xFFFFFFFF) for k in pairs.tolist()]
        distance = np.array([unknown if d is None else d for d in per_pair], np.int64)
        distance = distance[inverse.reshape(-1)]
        order = np.arange(len(packet))
        first_of = np.empty(int(packet.max()) + 1, np.int64)
        first_of[seen] = first
        outbound = rows.numpy("direction")[first_of[packet]] == pcap.DIRECTION_OUT
        tie = np.where(outbound, -order, order)
        best = np.lexsort((tie, distance, packet))
        keep = np.concatenate(([True], packet[best][1:] != packet[best][:-1]))
        return np.sort(best[keep])


def _same_layout(a: event_metadata.EventSchema, b: event_metadata.EventSchema) -> bool:
    def shape(s: event_metadata.EventSchema) -> list[tuple]:
        return [(p.name, p.in_type, p.flags & 0x17, p.count, p.size) for p in s.properties]

    return shape(a) == shape(b)


def etl_frames(
    path: str,
    *,
    etl: EtlFile | None = None,
    other: Callable[[EtlEvent], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pcap.Frames:
    """The packets an ``.etl`` holds (PktMon: one per packet; NDIS: fragments
    assembled), in time order. Every other event is handed to ``other`` in the same pass,
    so a caller that also wants them reads the file once. ``progress(done, total)`` is told
    how many bytes of the file were read, now and then."""
    etl = etl if etl is not None else EtlFile(path)
    reader = _PktMon(path, {})
    others: deque[EtlEvent] = deque()
    dispatch = Dispatch(path, reader, others.append)
    if etl_batch.read(path, etl, reader, dispatch, progress):
        while others and other is not None:
            other(others.popleft())  # each event let go as what other keeps of it is made
        return _frames(path, etl, reader, dispatch.finish())
    del others
    reader = _PktMon(path, {})
    ndis = _read(path, etl, reader, other, progress)
    if reader.relayout:
        reader = _PktMon(path, reader.schemas)
        _read(path, etl, reader, None, progress)
    if reader.held_error is not None:
        raise reader.held_error
    return _frames(path, etl, reader, ndis)


def _read(
    path: str,
    etl: EtlFile,
    reader: _PktMon,
    other: Callable[[EtlEvent], None] | None,
    progress: Callable[[int, int], None] | None,
) -> list[tuple[int, bytes, int, int, int]]:
    """One pass over every event, in time order: the reference of ``etl_batch.read``."""
    dispatch = Dispatch(path, reader, other)
    total = etl.buffers[-1].offset + etl.buffers[-1].size
    for count, ev in enumerate(etl.events()):
        if not count & 0x3FFF:
            etl.release_pages()
            if progress is not None:
                progress(ev.buffer_offset, total)
        dispatch(ev)
    return dispatch.finish()


class Dispatch:
    """Where each event of a pass goes: NDIS fragments into frames, PktMon events and
    EventMetadata schemas to the PktMon reader, every other event to ``other``."""

    def __init__(
        self, path: str, reader: _PktMon, other: Callable[[EtlEvent], None] | None
    ) -> None:
        self.path, self.reader, self.other = path, reader, other
        self.ndis: list[tuple[int, bytes, int, int, int]] = []
        self.pending: tuple[int, bytearray, int] | None = None

    def __call__(self, ev: EtlEvent) -> None:
        if ev.provider_guid == NDIS_PROVIDER and ev.id == NDIS_FRAGMENT:
            self.pending = _ndis_fragment(self.path, ev, self.pending, self.ndis)
        elif ev.provider_guid == PKTMON_PROVIDER:
            self.reader.event(ev)
        elif (
            ev.provider_guid == event_metadata.PROVIDER_GUID and ev.id == event_metadata.EVENT_INFO
        ):
            self.reader.learn(ev)
        elif self.other is not None:
            self.other(ev)

    def finish(self) -> list[tuple[int, bytes, int, int, int]]:
        """The NDIS frames; a frame whose last fragment never came is counted."""
        self.reader.ndis_unfinished = int(self.pending is not None)
        return self.ndis


def _ndis_fragment(
    path: str,
    ev: EtlEvent,
    pending: tuple[int, bytearray, int] | None,
    done: list[tuple[int, bytes, int, int, int]],
) -> tuple[int, bytearray, int] | None:
    if len(ev.payload) < 12:
        raise InputError(
            path,
            f"buffer at {ev.buffer_offset}: NDIS fragment event of "
            f"{len(ev.payload)} bytes, the header needs 12",
            ev.record_offset,
        )
    size = struct.unpack_from("<I", ev.payload, 8)[0]
    if 12 + size > len(ev.payload):
        raise InputError(
            path,
            f"buffer at {ev.buffer_offset}: NDIS fragment claims {size} "
            f"bytes, {len(ev.payload) - 12} present",
            ev.record_offset,
        )
    if ev.keyword & KW_PACKET_START or pending is None:
        pending = (ev.ts_ns, bytearray(), ev.keyword)
    pending[1].extend(ev.payload[12 : 12 + size])
    if not ev.keyword & KW_PACKET_END:
        return pending
    ts, data, keyword = pending
    kw = keyword | ev.keyword
    linktype = (
        pcap.LINKTYPE_RAW
        if kw & KW_RAW_IP
        else LINKTYPE_IEEE802_11
        if kw & KW_NATIVE_802_11
        else pcap.LINKTYPE_ETHERNET
    )
    direction = (
        pcap.DIRECTION_OUT
        if kw & KW_SEND
        else pcap.DIRECTION_IN
        if kw & KW_RECEIVE
        else pcap.DIRECTION_UNKNOWN
    )
    done.append((ts, bytes(data), len(data), direction, linktype))
    return None


def _frames(
    path: str, etl: EtlFile, reader: _PktMon, ndis: list[tuple[int, bytes, int, int, int]]
) -> pcap.Frames:
    """The chosen PktMon appearances and the NDIS frames, in time order (PktMon's first
    among equal times)."""
    rows = reader.rows
    chosen = reader.chosen()
    pick = {name: rows.numpy(name)[chosen].astype(np.int64) for name in _Columns.NAMES}
    ndis_time, ndis_length, ndis_direction, ndis_linktype = (
        np.array([frame[k] for frame in ndis], dtype=np.int64) for k in (0, 2, 3, 4)
    )
    time_ns = np.concatenate((pick["time"], ndis_time))
    order = np.argsort(time_ns, kind="stable")
    caplen = np.concatenate((pick["length"], ndis_length))[order]
    offset = np.zeros(len(order), np.int64)
    np.cumsum(caplen[:-1], out=offset[1:])
    linktype = np.concatenate((pick["linktype"], ndis_linktype))[order]
    linktypes, interface = np.unique(linktype, return_inverse=True)
    placed = np.empty(len(order), np.int64)
    placed[order] = offset
    total = int(caplen.sum())
    early = reader.early
    if early is not None and early.is_file(total, chosen, placed, ndis):
        buffer, spill = early.mapped()
    else:
        if early is not None:
            early.close()
        buffer, spill = _copy_frames(
            etl,
            total,
            (pick["buffer"], pick["at"], pick["length"], placed[: len(chosen)]),
            [
                (data, int(to))
                for (_, data, *_), to in zip(ndis, placed[len(chosen) :], strict=True)
            ],
        )
    frames = pcap.Frames(
        path=path,
        format="etl",
        buffer=buffer,
        time_ns=time_ns[order],
        interface=interface.reshape(-1).astype(np.int32),
        linktype=linktype.astype(np.int32),
        offset=offset,
        caplen=caplen,
        origlen=np.concatenate((pick["original"], ndis_length))[order],
        direction=np.concatenate((pick["direction"], ndis_direction))[order].astype(np.uint8),
        interfaces=[pcap.Interface(int(lt), 0, 10**9) for lt in linktypes.tolist()],
    )
    frames._keep = spill  # type: ignore[attr-defined]
    frames.notes = {
        "pktmon_appearances": len(rows),
        "pktmon_packets": len(chosen),
        "pktmon_drops": reader.drops,
        "pktmon_not_frames": sum(reader.not_frames.values()),
        "ndis_frames": len(ndis),
        "ndis_unfinished_frames": reader.ndis_unfinished,
    }
    frames.skipped = {
        f"PktMon appearances of packet type {t} ({PACKET_TYPE_NAMES.get(t, 'unknown')})": (
            NOT_A_FRAME,
            n,
            t != HTTP_PACKET_TYPE,
        )
        for t, n in sorted(reader.not_frames.items())
    }
    return frames


def _copy_frames(
    etl: EtlFile,
    total: int,
    pktmon_frames: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ndis_frames: list[tuple[bytes, int]],
) -> tuple[memoryview, mmap.mmap | None]:
    """One buffer of ``total`` bytes holding every chosen frame where the frame table puts
    it, and the map behind it.

    A PktMon frame is given by where it lies (buffer offset, offset in the inflated buffer,
    length) and where it goes, and is copied in a second pass over its buffer, so the
    frames are held once, never as per-event copies as well. They are written to an
    unnamed temporary file and mapped: like a pcap's, their pages can leave memory once
    read (``release_pages``), so a large recording does not have to fit in RAM. The file
    is written with ``pwrite`` a batch at a time (writing through the map costs a page
    fault a page, 8x slower)."""
    if not total:
        return memoryview(b""), None
    with tempfile.TemporaryFile(prefix="wskreplay-frames-") as spill:
        spill.truncate(total)
        fd = spill.fileno()
        for data, to in ndis_frames:
            etl_batch.write_at(fd, data, to)
        buffer, at, length, to = pktmon_frames
        by_buffer = np.argsort(buffer, kind="stable")
        in_order = buffer[by_buffer]
        infos = {b.offset: b for b in etl.buffers}
        wanted = [infos[o] for o in np.unique(buffer).tolist()]
        for batch, parts in etl_batch.inflated(etl, wanted):
            lo = np.searchsorted(in_order, batch[0].offset, side="left")
            hi = np.searchsorted(in_order, batch[-1].offset, side="right")
            mine = by_buffer[lo:hi]
            _write_frames(fd, batch, parts, buffer[mine], at[mine], length[mine], to[mine])
            etl.release_pages()
        out = mmap.mmap(fd, total, access=mmap.ACCESS_READ)
    return memoryview(out), out


def _write_frames(
    fd: int,
    batch: list[BufferInfo],
    parts: list[bytes | memoryview],
    buffer: np.ndarray,
    at: np.ndarray,
    length: np.ndarray,
    to: np.ndarray,
) -> None:
    """The frames that lie in ``batch``'s inflated buffers (one row each: its buffer, where
    in it, its length, where it goes), gathered in the order they go in the file and
    written a run of adjacent frames at a time."""
    offsets = np.array([b.offset for b in batch], np.int64)
    sizes = np.array([len(p) for p in parts], np.int64)
    base = np.cumsum(sizes) - sizes
    mine = np.argsort(to, kind="stable")
    source = base[np.searchsorted(offsets, buffer[mine])] + at[mine]
    n = length[mine]
    staged_at = np.cumsum(n) - n
    staged = bytearray(int(n.sum()))
    pieces.copy(staged, staged_at, b"".join(parts), source, n)
    dest = to[mine]
    breaks = np.flatnonzero(dest[1:] != dest[:-1] + n[:-1]) + 1
    firsts = np.concatenate(([0], breaks)).tolist()
    ends = np.concatenate((breaks, [len(mine)])).tolist()
    view = memoryview(staged)
    for first, end in zip(firsts, ends, strict=True):
        lo = int(staged_at[first])
        hi = int(staged_at[end - 1] + n[end - 1])
        etl_batch.write_at(fd, view[lo:hi], int(dest[first]))


def read_capture(path: str) -> pcap.Frames:
    """Frames of a pcap, a pcapng (either optionally gzipped) or an ``.etl`` (or a zip of one)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b" or head in (
        b"\xd4\xc3\xb2\xa1",
        b"\xa1\xb2\xc3\xd4",
        b"\x4d\x3c\xb2\xa1",
        b"\xa1\xb2\x3c\x4d",
        b"\x0a\x0d\x0d\x0a",
    ):
        return pcap.read_frames(path)
    if path.lower().endswith((".etl", ".zip")):
        return etl_frames(path)
    return pcap.read_frames(path)
