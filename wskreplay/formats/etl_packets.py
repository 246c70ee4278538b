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
from collections import Counter
from collections.abc import Callable

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import event_metadata, pcap, pktmon
from wskreplay.formats.etl import EtlEvent, EtlFile

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
        ethertype = bytes(frame[12:14]) if len(frame) >= 14 else b""
        ethernet = ethertype in (b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x08\x06")
        return pcap.LINKTYPE_ETHERNET if ethernet else LINKTYPE_IEEE802_11
    return -1


class _Columns:
    """One row per PktMon appearance, in arrival order (compact: a long recording holds
    millions)."""

    def __init__(self) -> None:
        self.packet = array("q")
        self.time = array("q")
        self.component = array("i")
        self.edge = array("i")
        self.direction = array("b")
        self.linktype = array("h")
        self.original = array("i")
        self.buffer = array("q")
        self.at = array("i")
        self.length = array("i")

    def add(self, *values: int) -> None:
        for col, value in zip(
            (
                self.packet,
                self.time,
                self.component,
                self.edge,
                self.direction,
                self.linktype,
                self.original,
                self.buffer,
                self.at,
                self.length,
            ),
            values,
            strict=True,
        ):
            col.append(value)

    def numpy(self, name: str) -> np.ndarray:
        return np.frombuffer(getattr(self, name), dtype=getattr(self, name).typecode)


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

    def schema(self, ev: EtlEvent) -> event_metadata.EventSchema:
        key = (ev.id, ev.version)
        schema = self.schemas.get(key) or pktmon.BUILTIN.get(key)
        if schema is None:
            raise InputError(
                self.path,
                f"PktMon event {ev.id} version {ev.version}: the file describes no layout for "
                "it and the built-in one is for version 0; not read",
                ev.record_offset,
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
        if not len(rows.packet):
            return np.empty(0, np.int64)
        packet = rows.numpy("packet")
        comp, edge = rows.numpy("component"), rows.numpy("edge")
        pairs = np.unique(np.stack([comp, edge], axis=1), axis=0)
        unknown = 1 << 30
        table = {
            (c, e): d if (d := self.components.distance(c, e)) is not None else unknown
            for c, e in pairs.tolist()
        }
        key = comp.astype(np.int64) << 32 | edge.astype(np.int64)
        lookup = {c << 32 | e: d for (c, e), d in table.items()}
        uniq, inverse = np.unique(key, return_inverse=True)
        distance = np.array([lookup[k] for k in uniq.tolist()], np.int64)[inverse.reshape(-1)]
        order = np.arange(len(packet))
        first_of = np.full(int(packet.max()) + 1, len(packet), np.int64)
        np.minimum.at(first_of, packet, order)
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
    ndis: list[tuple[int, bytes, int, int, int]] = []
    pending: tuple[int, bytearray, int] | None = None
    total = etl.buffers[-1].offset + etl.buffers[-1].size
    for count, ev in enumerate(etl.events()):
        if not count & 0x3FFF:
            etl.release_pages()
            if progress is not None:
                progress(ev.buffer_offset, total)
        if ev.provider_guid == NDIS_PROVIDER and ev.id == NDIS_FRAGMENT:
            pending = _ndis_fragment(path, ev, pending, ndis)
        elif ev.provider_guid == PKTMON_PROVIDER:
            reader.event(ev)
        elif (
            ev.provider_guid == event_metadata.PROVIDER_GUID and ev.id == event_metadata.EVENT_INFO
        ):
            reader.learn(ev)
        elif other is not None:
            other(ev)
    reader.ndis_unfinished = int(pending is not None)
    return ndis


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
    rows = reader.rows
    chosen = reader.chosen()
    pick = {name: rows.numpy(name)[chosen] for name in ("time", "direction", "linktype")}
    where = [
        (int(b), int(a), int(n))
        for b, a, n in zip(
            rows.numpy("buffer")[chosen].tolist(),
            rows.numpy("at")[chosen].tolist(),
            rows.numpy("length")[chosen].tolist(),
            strict=True,
        )
    ]
    entries = [
        (int(t), w, int(o), int(d), int(lt))
        for t, w, o, d, lt in zip(
            pick["time"].tolist(),
            where,
            rows.numpy("original")[chosen].tolist(),
            pick["direction"].tolist(),
            pick["linktype"].tolist(),
            strict=True,
        )
    ]
    entries += [(ts, data, n, d, lt) for ts, data, n, d, lt in ndis]
    entries.sort(key=lambda e: e[0])
    buffer, spill = _copy_frames(etl, [e[1] for e in entries])
    caplens = [len(e[1]) if isinstance(e[1], bytes) else e[1][2] for e in entries]
    offsets = np.concatenate(([0], np.cumsum(caplens, dtype=np.int64)[:-1])) if entries else []
    linktypes = sorted({e[4] for e in entries})
    iface_of = {lt: i for i, lt in enumerate(linktypes)}
    frames = pcap.Frames(
        path=path,
        format="etl",
        buffer=buffer,
        time_ns=np.array([e[0] for e in entries], dtype=np.int64),
        interface=np.array([iface_of[e[4]] for e in entries], dtype=np.int32),
        linktype=np.array([e[4] for e in entries], dtype=np.int32),
        offset=np.array(offsets, dtype=np.int64),
        caplen=np.array(caplens, dtype=np.int64),
        origlen=np.array([e[2] for e in entries], dtype=np.int64),
        direction=np.array([e[3] for e in entries], dtype=np.uint8),
        interfaces=[pcap.Interface(lt, 0, 10**9) for lt in linktypes],
    )
    frames._keep = spill  # type: ignore[attr-defined]
    frames.notes = {
        "pktmon_appearances": len(rows.packet),
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
    etl: EtlFile, sources: list[bytes | tuple[int, int, int]]
) -> tuple[memoryview, mmap.mmap | None]:
    """One buffer holding every chosen frame in order, and the map behind it.

    A PktMon frame is given by where it lies (buffer offset, offset in the inflated
    buffer, length) and copied in a second pass over its buffer, so the frames are held
    once, never as per-event copies as well. They are written to an unnamed temporary file
    and mapped: like a pcap's, their pages can leave memory once read (``release_pages``),
    so a large recording does not have to fit in RAM."""
    sizes = [len(x) if isinstance(x, bytes) else x[2] for x in sources]
    total = sum(sizes)
    if not total:
        return memoryview(b""), None
    with tempfile.TemporaryFile(prefix="wskreplay-frames-") as spill:
        spill.truncate(total)
        out = mmap.mmap(spill.fileno(), total)
    by_buffer: dict[int, list[tuple[int, int, int]]] = {}
    dst = 0
    for src, n in zip(sources, sizes, strict=True):
        if isinstance(src, bytes):
            out[dst : dst + n] = src
        else:
            by_buffer.setdefault(src[0], []).append((src[1], n, dst))
        dst += n
    infos = {b.offset: b for b in etl.buffers}
    for k, offset in enumerate(sorted(by_buffer)):
        raw = etl.buffer_bytes(infos[offset])
        for at, n, to in by_buffer[offset]:
            out[to : to + n] = raw[at : at + n]
        if k % 1024 == 1023:
            etl.release_pages()
            out.madvise(mmap.MADV_DONTNEED)
    etl.release_pages()
    out.madvise(mmap.MADV_DONTNEED)
    return memoryview(out), out


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
