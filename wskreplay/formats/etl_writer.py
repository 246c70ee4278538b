"""Writes real-layout ETL files: for test fixtures and synthetic field recordings.

One logger on one CPU: a first buffer with the logfile header record (SYSTEM_TRACE_HEADER +
TRACE_LOGFILE_HEADER + logger and file names), then buffers of EVENT_HEADER records (64-bit
form), 8-byte aligned, optionally compressed with LZ77 XPRESS (BufferFlag 0x40) like
pktmon and relogged files. The header buffer is never compressed, so its EndTime and
buffer count can be filled in when the writer closes. Clock: QPC at ``qpc_frequency``.
"""

from __future__ import annotations

import struct
import uuid
from typing import BinaryIO

from wskreplay.formats import event_metadata, pktmon, xpress
from wskreplay.formats import tracelogging as tl
from wskreplay.formats.etl import (
    BUFFER_COMPRESSED,
    BUFFER_HEADER_SIZE,
    EVENT_HEADER,
    FILETIME_UNIX_EPOCH,
)
from wskreplay.formats.etl_packets import (
    NDIS_FRAGMENT,
    NDIS_PROVIDER,
    PKTMON_PACKET,
    PKTMON_PROVIDER,
)

LOGFILE_HEADER_SIZE = 0x118
_EXT_ITEM = struct.Struct("<HHHH")


def _filetime(ns: int) -> int:
    return ns // 100 + FILETIME_UNIX_EPOCH


class EtlWriter:
    def __init__(
        self,
        fileobj: BinaryIO,
        *,
        start_ns: int,
        qpc_start: int = 1_000_000_000,
        qpc_frequency: int = 10_000_000,
        buffer_size: int = 64 << 10,
        compress: bool = False,
        os_build: tuple[int, int, int] = (10, 0, 22631),
        logger_name: str = "wskreplay",
    ) -> None:
        self._f = fileobj
        self.start_ns = start_ns
        self.qpc_start = qpc_start
        self.qpc_frequency = qpc_frequency
        self.buffer_size = buffer_size
        self.compress = compress
        self._records = bytearray()
        self._last_ns = start_ns
        self._buffers = 0
        self._sequence = 0
        names = (
            logger_name.encode("utf-16-le")
            + b"\0\0"
            + "wskreplay.etl".encode("utf-16-le")
            + b"\0\0"
        )
        header = bytearray(LOGFILE_HEADER_SIZE)
        struct.pack_into(
            "<IIII", header, 0, buffer_size, os_build[0] | os_build[1] << 8, os_build[2], 1
        )
        struct.pack_into("<IIII", header, 0x18, 156250, 0, 0x9, 0)
        struct.pack_into("<IIII", header, 0x28, 0, 8, 0, 3000)
        struct.pack_into(
            "<qqqII", header, 0xF8, _filetime(start_ns), qpc_frequency, _filetime(start_ns), 1, 0
        )
        record = (
            struct.pack(
                "<HBBHHIIqII",
                2,
                0x02,
                0xC0,
                0x20 + len(header) + len(names),
                0,
                4,
                4,
                qpc_start,
                0,
                0,
            )
            + bytes(header)
            + names
        )
        self._header_at = BUFFER_HEADER_SIZE + 0x20
        self._append(record)
        self._flush(header_buffer=True)

    def qpc(self, ns: int) -> int:
        """The QPC value of UTC time ``ns`` on this log's clock."""
        return self.qpc_start + (ns - self.start_ns) * self.qpc_frequency // 1_000_000_000

    def event(
        self,
        ns: int,
        provider_guid: str,
        event_id: int = 0,
        *,
        payload: bytes = b"",
        extended: list[tuple[int, bytes]] | None = None,
        version: int = 0,
        channel: int = 0,
        level: int = 4,
        opcode: int = 0,
        task: int = 0,
        keyword: int = 0,
        pid: int = 4,
        tid: int = 8,
    ) -> None:
        """One EVENT_HEADER record at UTC time ``ns``."""
        items = bytearray()
        extended = extended or []
        for i, (etype, data) in enumerate(extended):
            more = 1 if i + 1 < len(extended) else 0
            items += _EXT_ITEM.pack(0, etype, more, len(data)) + data + b"\0" * (-len(data) % 8)
        size = EVENT_HEADER.size + len(items) + len(payload)
        if size > 0xFFFF:
            raise ValueError(f"event of {size} bytes does not fit a record (64 KiB)")
        head = EVENT_HEADER.pack(
            size,
            0x13,
            0xC0,
            1 if extended else 0,
            0,
            tid,
            pid,
            self.qpc(ns),
            uuid.UUID(provider_guid).bytes_le,
            event_id,
            version,
            channel,
            level,
            opcode,
            task,
            keyword,
            0,
            b"\0" * 16,
        )
        self._last_ns = max(self._last_ns, ns)
        self._append(head + bytes(items) + payload)

    def tracelogging(
        self,
        ns: int,
        provider: str,
        provider_guid: str,
        event: str,
        fields: list[tuple[str, int]],
        values: list,
        *,
        keyword: int = 0,
        level: int = 4,
    ) -> None:
        """A TraceLogging event: schema and provider traits in extended items 11 and 12."""
        self.event(
            ns,
            provider_guid,
            0,
            channel=tl.CHANNEL_TRACELOGGING,
            level=level,
            keyword=keyword,
            payload=tl.encode_payload(fields, values),
            extended=[
                (tl.EXT_SCHEMA, tl.encode_schema(event, fields)),
                (tl.EXT_TRAITS, tl.encode_traits(provider)),
            ],
        )

    def pktmon_packet(
        self,
        ns: int,
        group: int,
        frame: bytes,
        *,
        appearance: int = 1,
        dirtag: int = 4,
        packet_type: int = 1,
        component: int = 1,
        edge: int = 0,
        original: int | None = None,
    ) -> None:
        """A PktMon event 160 (version-0 layout): one appearance of one packet at one
        component."""
        fixed = struct.pack(
            "<QHHHHHHHIIHH",
            group,
            1,
            appearance,
            dirtag,
            packet_type,
            component,
            edge,
            0,
            0,
            0,
            len(frame) if original is None else original,
            len(frame),
        )
        self.event(ns, PKTMON_PROVIDER, PKTMON_PACKET, payload=fixed + frame, keyword=0x10)

    def pktmon_component(
        self,
        ns: int,
        component: int,
        kind: int,
        name: str,
        description: str,
        properties: dict[int, int],
        edges: dict[int, str],
    ) -> None:
        """The events PktMon logs about one component: 20 (what it is), 30 (each numeric
        property) and 90 (each edge)."""

        def utf16z(text: str) -> bytes:
            return text.encode("utf-16-le") + b"\0\0"

        payload = struct.pack("<HH", component, kind) + utf16z(name) + utf16z(description)
        self.event(ns, PKTMON_PROVIDER, pktmon.COMPONENT, payload=payload, keyword=2)
        for prop, value in properties.items():
            payload = struct.pack("<HHI", component, prop, value)
            self.event(ns, PKTMON_PROVIDER, pktmon.COMPONENT_PROPERTY, payload=payload, keyword=2)
        for edge, edge_name in edges.items():
            payload = (
                struct.pack("<H", component)
                + utf16z(edge_name)
                + struct.pack("<HHQQHQQ", edge, 3, 0, 0, 4, 0, 0)
            )
            self.event(ns, PKTMON_PROVIDER, pktmon.EDGE, payload=payload, keyword=2)

    def event_schema(self, ns: int, schema: event_metadata.EventSchema) -> None:
        """A Microsoft-Windows-EventMetadata event 32 describing ``schema``."""
        self.event(
            ns,
            event_metadata.PROVIDER_GUID,
            event_metadata.EVENT_INFO,
            opcode=event_metadata.EVENT_INFO,
            level=0,
            payload=event_metadata.encode_event_info(schema),
            pid=0,
            tid=0,
        )

    def raw_record(self, record: bytes | memoryview, ns: int | None = None) -> None:
        """A record copied as it is (any header type), e.g. to rewrite another log."""
        if ns is not None:
            self._last_ns = max(self._last_ns, ns)
        self._append(bytes(record))

    def ndis_fragment(
        self, ns: int, fragment: bytes, keyword: int, *, trailer: bytes = b""
    ) -> None:
        """An NDIS-PacketCapture event 1001 holding one fragment of a frame."""
        payload = struct.pack("<III", 7, 0, len(fragment)) + fragment + trailer
        self.event(ns, NDIS_PROVIDER, NDIS_FRAGMENT, payload=payload, keyword=keyword)

    def _append(self, record: bytes) -> None:
        padded = record + b"\0" * (-len(record) % 8)
        if len(padded) > self.buffer_size - BUFFER_HEADER_SIZE:
            raise ValueError(
                f"record of {len(record)} bytes does not fit a {self.buffer_size}-byte buffer"
            )
        if BUFFER_HEADER_SIZE + len(self._records) + len(padded) > self.buffer_size:
            self._flush()
        self._records += padded

    def _flush(self, *, header_buffer: bool = False) -> None:
        if not self._records:
            return
        fill = BUFFER_HEADER_SIZE + len(self._records)
        body = bytes(self._records)
        flags = 0x1
        size = self.buffer_size
        if self.compress and not header_buffer:
            body = xpress.compress(body)
            flags |= BUFFER_COMPRESSED
            size = BUFFER_HEADER_SIZE + len(body)
        else:
            body += b"\0" * (self.buffer_size - fill)
        head = bytearray(BUFFER_HEADER_SIZE)
        struct.pack_into(
            "<IIIiqq", head, 0, size, fill, fill, 0, _filetime(self._last_ns), self._sequence
        )
        struct.pack_into(
            "<BBHIIHH", head, 0x28, 0, 0, 0x21, 3, fill, flags, 4 if header_buffer else 0
        )
        self._f.write(bytes(head) + body)
        self._sequence += 1
        self._buffers += 1
        self._records = bytearray()

    def close(self) -> None:
        """Write the last buffer and the logfile header's EndTime and buffer count."""
        self._flush()
        end = self._f.tell()
        self._f.seek(self._header_at + 0x10)
        self._f.write(struct.pack("<q", _filetime(self._last_ns)))
        self._f.seek(self._header_at + 0x24)
        self._f.write(struct.pack("<I", self._buffers))
        self._f.seek(end)
        self._f.flush()
