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

Microsoft-Windows-PktMon logs one event per component a packet crosses (same PktGroupId,
rising AppearanceCount). Policy: one frame per packet group, the appearance **closest to
the wire**: the first for inbound packets (the NIC saw it first), the last for outbound
ones (the NIC saw it last). Its time is then the time the packet met the wire, which is
what a capture on the wire shows and what send-to-wire latency needs. Drop events (170)
are packets a component discarded: they are counted, never presented as wire frames.
"""

from __future__ import annotations

import mmap
import struct
import tempfile
from collections.abc import Callable

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import pcap
from wskreplay.formats.etl import EtlEvent, EtlFile

PKTMON_PROVIDER = "4d4f80d9-c8bd-4d73-bb5b-19c90402c5ac"
PKTMON_PACKET, PKTMON_DROP = 160, 170
NDIS_PROVIDER = "2ed6006e-4729-4609-b423-3ee7bcd678ef"
NDIS_FRAGMENT = 1001
KW_RAW_IP, KW_NATIVE_802_11 = 0x200, 0x10000
KW_PACKET_START, KW_PACKET_END = 0x40000000, 0x80000000
KW_SEND, KW_RECEIVE = 0x100000000, 0x200000000
_FIXED = struct.Struct("<QHHHHHHHIIHH")
INBOUND_TAGS = {1, 3, 5}
OUTBOUND_TAGS = {2, 4, 6}
LINKTYPE_IEEE802_11 = 105


def _linktype(packet_type: int, frame: bytes) -> int:
    if packet_type == 1:
        return pcap.LINKTYPE_ETHERNET
    if packet_type == 3:
        return pcap.LINKTYPE_RAW
    if packet_type == 2:
        ethertype = frame[12:14] if len(frame) >= 14 else b""
        ethernet = ethertype in (b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x08\x06")
        return pcap.LINKTYPE_ETHERNET if ethernet else LINKTYPE_IEEE802_11
    return -1


def etl_frames(
    path: str,
    *,
    etl: EtlFile | None = None,
    other: Callable[[EtlEvent], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pcap.Frames:
    """The packets an ``.etl`` holds (PktMon: one per packet group; NDIS: fragments
    assembled), in time order. Every other event is handed to ``other`` in the same pass,
    so a caller that also wants them reads the file once. ``progress(done, total)`` is told
    how many bytes of the file were read, now and then."""
    etl = etl if etl is not None else EtlFile(path)
    best: dict[int, tuple[int, int, tuple[int, int, int], int, int, int]] = {}
    order: list[int] = []
    drops = appearances = unknown = 0
    ndis: list[tuple[int, int, bytes, int, int, int]] = []
    pending: tuple[int, bytearray, int] | None = None
    total = etl.buffers[-1].offset + etl.buffers[-1].size
    for count, ev in enumerate(etl.events()):
        if not count & 0x3FFF:
            etl.release_pages()
            if progress is not None:
                progress(ev.buffer_offset, total)
        if ev.provider_guid == NDIS_PROVIDER and ev.id == NDIS_FRAGMENT:
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
            if ev.keyword & KW_PACKET_END:
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
                ndis.append((0, ts, bytes(data), len(data), direction, linktype))
                pending = None
            continue
        if ev.provider_guid != PKTMON_PROVIDER or ev.id not in (PKTMON_PACKET, PKTMON_DROP):
            if other is not None:
                other(ev)
            continue
        if len(ev.payload) < _FIXED.size:
            raise InputError(
                path,
                f"PktMon event {ev.id} of {len(ev.payload)} bytes, "
                f"the fixed part needs {_FIXED.size}",
                ev.record_offset,
            )
        (
            group,
            _num,
            appearance,
            dirtag,
            ptype,
            _comp,
            _edge,
            _filt,
            _dr,
            _dl,
            original,
            logged,
        ) = _FIXED.unpack_from(ev.payload)
        frame = ev.payload[_FIXED.size : _FIXED.size + logged]
        if len(frame) != logged:
            raise InputError(
                path,
                f"PktMon event claims {logged} logged bytes, "
                f"{len(ev.payload) - _FIXED.size} present",
                ev.record_offset,
            )
        if ev.id == PKTMON_DROP:
            drops += 1
            continue
        appearances += 1
        direction = (
            pcap.DIRECTION_IN
            if dirtag in INBOUND_TAGS
            else pcap.DIRECTION_OUT
            if dirtag in OUTBOUND_TAGS
            else pcap.DIRECTION_UNKNOWN
        )
        linktype = _linktype(ptype, frame)
        if linktype < 0:
            unknown += 1
            continue
        at = ev.payload_offset + _FIXED.size
        entry = (
            appearance,
            ev.ts_ns,
            (ev.buffer_offset, at, logged),
            original,
            direction,
            linktype,
        )
        if group not in best:
            order.append(group)
            best[group] = entry
        else:
            keep_later = direction == pcap.DIRECTION_OUT
            if (appearance > best[group][0]) == keep_later:
                best[group] = entry
    chosen = sorted([best.pop(g) for g in order] + ndis, key=lambda e: e[1])
    buffer, spill = _copy_frames(etl, [e[2] for e in chosen])
    caplens = [len(e[2]) if isinstance(e[2], bytes) else e[2][2] for e in chosen]
    offsets = np.concatenate(([0], np.cumsum(caplens, dtype=np.int64)[:-1])) if chosen else []
    linktypes = sorted({e[5] for e in chosen})
    iface_of = {lt: i for i, lt in enumerate(linktypes)}
    frames = pcap.Frames(
        path=path,
        format="etl",
        buffer=buffer,
        time_ns=np.array([e[1] for e in chosen], dtype=np.int64),
        interface=np.array([iface_of[e[5]] for e in chosen], dtype=np.int32),
        linktype=np.array([e[5] for e in chosen], dtype=np.int32),
        offset=np.array(offsets, dtype=np.int64),
        caplen=np.array(caplens, dtype=np.int64),
        origlen=np.array([e[3] for e in chosen], dtype=np.int64),
        direction=np.array([e[4] for e in chosen], dtype=np.uint8),
        interfaces=[pcap.Interface(lt, 0, 10**9) for lt in linktypes],
    )
    frames._keep = spill  # type: ignore[attr-defined]
    frames.notes = {
        "pktmon_appearances": appearances,
        "pktmon_packets": len(best),
        "pktmon_drops": drops,
        "pktmon_unknown_packet_type": unknown,
        "ndis_frames": len(ndis),
        "ndis_unfinished_frames": int(pending is not None),
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
