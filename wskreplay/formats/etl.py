"""ETL (Event Tracing for Windows log file) reader.

Layouts are in shared/reference/etl-facts.md. A file is a sequence of buffers, each walked
by its own BufferSize (relogged files lie in the logfile header), filled up to its
``Offset``; compressed buffers (BufferFlag 0x40) hold LZ77 XPRESS that inflates to
``Offset - 0x48`` bytes. Records inside are 8-byte aligned and start with a header whose
type is byte 2 of the first u32 (when byte 3 has 0xC0 set) or a WPP TRACE_MESSAGE (byte 3
0x90). Buffers are per CPU: events come out merged into time order, buffer by buffer,
without loading the whole file.
"""

from __future__ import annotations

import functools
import heapq
import mmap
import os
import struct
import tempfile
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from wskreplay.errors import InputError
from wskreplay.formats import xpress

BUFFER_HEADER_SIZE = 0x48
BUFFER_COMPRESSED = 0x40
FILETIME_UNIX_EPOCH = 116_444_736_000_000_000
MAX_BUFFER_BYTES = 64 << 20
MAX_UNZIPPED_BYTES = 8 << 30
"""The most an .etl inside a .zip may inflate to (into a temporary file, not memory)."""
"""Largest buffer (stored or inflated) the reader accepts; bigger claims are damage."""

_BUFFER = struct.Struct("<III4xq16xB")
_BUFFER_FILL = struct.Struct("<IHH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
EVENT_HEADER = struct.Struct("<HBBHHIIq16sHBBBBHQQ16s")
"""EVENT_HEADER (0x50 bytes): Size, HeaderType, MarkerFlags, Flags, EventProperty, ThreadId,
ProcessId, TimeStamp, ProviderId, Id, Version, Channel, Level, Opcode, Task, Keyword,
ProcessorTime, ActivityId."""
_EXT_ITEM = struct.Struct("<HHHH")

SYSTEM_32, SYSTEM_64 = 0x01, 0x02
COMPACT_32, COMPACT_64 = 0x03, 0x04
MOF_32, MOF_64 = 0x0A, 0x14
INSTANCE_32, INSTANCE_64 = 0x0B, 0x15
PERFINFO_32, PERFINFO_64 = 0x10, 0x11
EVENT_32, EVENT_64 = 0x12, 0x13
WPP_MESSAGE = 0x100
"""Pseudo header type for WPP TRACE_MESSAGE records (exposed raw)."""

HEADER_SIZES = {
    SYSTEM_32: 0x20,
    SYSTEM_64: 0x20,
    COMPACT_32: 0x18,
    COMPACT_64: 0x18,
    MOF_32: 0x30,
    MOF_64: 0x30,
    INSTANCE_32: 0x48,
    INSTANCE_64: 0x48,
    PERFINFO_32: 0x10,
    PERFINFO_64: 0x10,
    EVENT_32: 0x50,
    EVENT_64: 0x50,
}
SIZE_AT_4 = {SYSTEM_32, SYSTEM_64, COMPACT_32, COMPACT_64, PERFINFO_32, PERFINFO_64}
TIME_AT = {
    SYSTEM_32: 0x10,
    SYSTEM_64: 0x10,
    COMPACT_32: 0x10,
    COMPACT_64: 0x10,
    PERFINFO_32: 0x08,
    PERFINFO_64: 0x08,
    MOF_32: 0x10,
    MOF_64: 0x10,
    INSTANCE_32: 0x10,
    INSTANCE_64: 0x10,
    EVENT_32: 0x10,
    EVENT_64: 0x10,
}
CLOCKS = {1: "qpc", 2: "system-time", 3: "cycles"}


@dataclass(frozen=True, slots=True)
class ExtendedItem:
    type: int
    data: bytes


@dataclass(slots=True)
class EtlEvent:
    """One record. Kernel (SYSTEM/compact/PERFINFO) records have no provider GUID; their
    ``id`` is the HookId (group << 8 | type). Slotted: a pass may hold many."""

    header_type: int
    pointer_size: int
    timestamp: int
    """Raw clock value; ``ts_ns`` is the UTC time in nanoseconds."""
    ts_ns: int
    provider_guid: str | None
    id: int
    version: int = 0
    channel: int = 0
    level: int = 0
    opcode: int = 0
    task: int = 0
    keyword: int = 0
    pid: int = 0
    tid: int = 0
    flags: int = 0
    extended: list[ExtendedItem] = field(default_factory=list)
    payload: bytes = b""
    buffer_offset: int = 0
    record_offset: int = 0
    """Offset of the record inside its (inflated) buffer."""
    payload_offset: int = 0
    """Offset of the payload inside its (inflated) buffer."""


@dataclass
class LogfileHeader:
    os_build: str
    pointer_size: int
    clock: str
    perf_freq: int
    start_filetime: int
    end_filetime: int
    header_timestamp: int
    events_lost: int
    buffers_lost: int
    cpu_mhz: int
    processors: int
    buffer_size: int
    last_flush_filetime: int = 0
    """The latest buffer flush time (FILETIME at +0x10 of each buffer header)."""

    @property
    def start_ns(self) -> int:
        return filetime_to_ns(self.start_filetime)

    @property
    def end_ns(self) -> int:
        """The later of the header's EndTime and the last buffer flush: relogged files (and
        ones copied while their session ran) keep an EndTime that precedes their last
        events, but no event is written after the buffer holding it was flushed."""
        return filetime_to_ns(max(self.end_filetime, self.last_flush_filetime))


def filetime_to_ns(filetime: int) -> int:
    return (filetime - FILETIME_UNIX_EPOCH) * 100


def guid_text(raw: bytes | memoryview) -> str:
    """A GUID's canonical lower-case text (first three fields little-endian on disk)."""
    return _guid_text(bytes(raw))


@functools.lru_cache(maxsize=4096)
def _guid_text(raw: bytes) -> str:
    """A recording names a handful of providers in millions of events: each text once."""
    return str(uuid.UUID(bytes_le=raw))


@dataclass
class BufferInfo:
    offset: int
    size: int
    fill: int
    flags: int
    type: int
    cpu: int
    compressed: bool
    flush_filetime: int = 0
    """When the buffer was flushed (FILETIME at +0x10 of its header)."""


class EtlFile:
    """Buffers and events of one .etl file (or a .zip holding exactly one)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._data, self._keep = _load(self.path)
        self.buffers = self._walk_buffers()
        if not self.buffers:
            raise InputError(self.path, "no ETL buffer in the file", 0)
        self.header = self._logfile_header()
        self.header.last_flush_filetime = max(b.flush_filetime for b in self.buffers)

    def release_pages(self) -> None:
        """Drop the file's pages from this process's memory (they stay in the page cache
        and come back when read again): keeps a long read from growing RSS with the file."""
        if isinstance(self._keep, mmap.mmap):
            self._keep.madvise(mmap.MADV_DONTNEED)

    def _walk_buffers(self) -> list[BufferInfo]:
        data, size = self._data, len(self._data)
        out: list[BufferInfo] = []
        pos = 0
        while pos < size:
            if size - pos < BUFFER_HEADER_SIZE:
                raise InputError(
                    self.path, f"buffer header cut short: {size - pos} of 72 bytes", pos
                )
            bsize = _U32.unpack_from(data, pos)[0]
            fill, bflags, btype = _BUFFER_FILL.unpack_from(data, pos + 0x30)
            cpu = data[pos + 0x28]
            if bflags & 0x20:
                cpu = _U16.unpack_from(data, pos + 0x28)[0]
            if bsize < BUFFER_HEADER_SIZE or bsize > MAX_BUFFER_BYTES or bsize > size - pos:
                raise InputError(
                    self.path,
                    f"buffer size {bsize} runs past the end of the file ({size - pos} bytes left)"
                    if bsize > size - pos
                    else f"impossible buffer size {bsize}",
                    pos,
                )
            compressed = bool(bflags & BUFFER_COMPRESSED)
            if (
                fill < BUFFER_HEADER_SIZE
                or fill > MAX_BUFFER_BYTES
                or (not compressed and fill > bsize)
            ):
                raise InputError(self.path, f"buffer fill level {fill} outside [72, {bsize}]", pos)
            flush = struct.unpack_from("<q", data, pos + 0x10)[0]
            out.append(BufferInfo(pos, bsize, fill, bflags, btype, cpu, compressed, flush))
            pos += bsize
            if not len(out) & 0x3FF:
                self.release_pages()
        self.release_pages()
        return out

    def buffer_bytes(self, info: BufferInfo) -> bytes | memoryview:
        """The buffer with its header, inflated when compressed, up to its fill level."""
        raw = self._data[info.offset : info.offset + info.size]
        if not info.compressed:
            return raw[: info.fill]
        body = xpress.decompress_or_raise(
            raw[BUFFER_HEADER_SIZE:],
            info.fill - BUFFER_HEADER_SIZE,
            path=self.path,
            offset=info.offset,
        )
        return bytes(raw[:BUFFER_HEADER_SIZE]) + body

    def _logfile_header(self) -> LogfileHeader:
        first = self.buffers[0]
        buf = self.buffer_bytes(first)
        at = BUFFER_HEADER_SIZE
        if len(buf) < at + 0x20 + 0x118:
            raise InputError(
                self.path, "first buffer too short for the logfile header", first.offset
            )
        marker = _U32.unpack_from(buf, at)[0]
        kind = (marker >> 16) & 0xFF
        if (marker >> 24) & 0xC0 != 0xC0 or kind not in (SYSTEM_32, SYSTEM_64):
            raise InputError(
                self.path,
                f"first record is not a logfile header (marker 0x{marker:08X})",
                first.offset + at,
            )
        ts = struct.unpack_from("<q", buf, at + 0x10)[0]
        h = at + 0x20
        buffer_size, _version, build, processors = struct.unpack_from("<IIII", buf, h)
        end_time = struct.unpack_from("<q", buf, h + 0x10)[0]
        pointer_size, events_lost, cpu_mhz = struct.unpack_from("<III", buf, h + 0x2C)
        if pointer_size == 8:
            perf, start, clock, lost = struct.unpack_from("<qqII", buf, h + 0x100)
        else:
            perf, start, clock, lost = struct.unpack_from("<qqII", buf, h + 0xF8)
        return LogfileHeader(
            os_build=f"{_version & 0xFF}.{(_version >> 8) & 0xFF}.{build}",
            pointer_size=pointer_size,
            clock=CLOCKS.get(clock, f"unknown({clock})"),
            perf_freq=perf,
            start_filetime=start,
            end_filetime=end_time,
            header_timestamp=ts,
            events_lost=events_lost,
            buffers_lost=lost,
            cpu_mhz=cpu_mhz,
            processors=processors,
            buffer_size=buffer_size,
        )

    def to_ns(
        self, timestamp: int, offset: int | None = None, buffer_offset: int | None = None
    ) -> int:
        """A record's raw timestamp as UTC nanoseconds, by the logfile's clock type; one
        that does not fit in 64 bits of nanoseconds (years 1678-2262) is an error naming
        the record (its offset, in the buffer at ``buffer_offset`` when given)."""
        h = self.header
        if h.clock == "system-time":
            ns = filetime_to_ns(timestamp)
        else:
            freq = h.perf_freq if h.clock == "qpc" else h.cpu_mhz * 1_000_000
            if freq <= 0:
                raise InputError(
                    self.path, f"logfile header clock frequency {freq} is not positive", 0
                )
            ticks = (timestamp - h.header_timestamp) * 10_000_000 // freq
            ns = filetime_to_ns(h.start_filetime + ticks)
        if not -(1 << 63) <= ns < 1 << 63:
            where = "" if buffer_offset is None else f"buffer at {buffer_offset}: "
            raise InputError(
                self.path,
                f"{where}timestamp {timestamp} is outside the years 1678-2262 "
                "that 64-bit nanoseconds hold",
                offset,
            )
        return ns

    def _records(self, info: BufferInfo) -> Iterator[tuple[bytes | memoryview, int, int, int]]:
        """(buffer bytes, record offset, record size, header type) for each record; the
        reference of ``_walk.etl_records``."""
        buf = self.buffer_bytes(info)
        pos = BUFFER_HEADER_SIZE
        end = len(buf)
        u32, u16 = _U32.unpack_from, _U16.unpack_from
        while pos + 4 <= end:
            marker = u32(buf, pos)[0]
            if marker == 0xFFFFFFFF:
                break
            top = marker >> 24
            if top & 0xC0 == 0xC0:
                kind = (marker >> 16) & 0xFF
                if kind not in HEADER_SIZES:
                    raise InputError(
                        self.path,
                        f"buffer at {info.offset}: unknown record header type 0x{kind:02X}",
                        pos,
                    )
                size_at = pos + (4 if kind in SIZE_AT_4 else 0)
                if size_at + 2 > end:
                    raise InputError(
                        self.path,
                        f"buffer at {info.offset}: record header cut short at the buffer's end",
                        pos,
                    )
                size = u16(buf, size_at)[0]
                need = HEADER_SIZES[kind]
            elif top == 0x90:
                kind, size, need = WPP_MESSAGE, marker & 0xFFFF, 8
            else:
                raise InputError(
                    self.path, f"buffer at {info.offset}: no record header (0x{marker:08X})", pos
                )
            if size < need or pos + size > end:
                raise InputError(
                    self.path,
                    f"buffer at {info.offset}: record of {size} bytes "
                    f"(header needs {need}, {end - pos} left)",
                    pos,
                )
            yield buf, pos, size, kind
            pos += (size + 7) & ~7

    def buffer_events(self, info: BufferInfo) -> Iterator[EtlEvent]:
        """The records of one buffer, in buffer order."""
        for buf, pos, size, kind in self._records(info):
            yield self._event(buf, pos, size, kind, info)

    def count_records(self) -> tuple[Counter[tuple[str | None, int]], dict[str | None, EtlEvent]]:
        """Records per (provider GUID, id) without building an event per record, and the
        first full event of each provider (to name it)."""
        raw: Counter[tuple[bytes | None, int]] = Counter()
        first: dict[bytes | None, EtlEvent] = {}
        u16 = _U16.unpack_from
        for info in self.buffers:
            for buf, pos, size, kind in self._records(info):
                if kind in (EVENT_32, EVENT_64):
                    key = (bytes(buf[pos + 0x18 : pos + 0x28]), u16(buf, pos + 0x28)[0])
                elif kind in (MOF_32, MOF_64, INSTANCE_32, INSTANCE_64):
                    key = (bytes(buf[pos + 0x18 : pos + 0x28]), buf[pos + 4])
                elif kind == WPP_MESSAGE:
                    key = (None, 0)
                else:
                    key = (None, u16(buf, pos + 6)[0])
                if key[0] not in first:
                    first[key[0]] = self._event(buf, pos, size, kind, info)
                raw[key] += 1
        counts: Counter[tuple[str | None, int]] = Counter()
        for (guid, eid), n in raw.items():
            counts[(guid_text(guid) if guid is not None else None, eid)] += n
        return counts, {(guid_text(g) if g is not None else None): ev for g, ev in first.items()}

    def _event(
        self, buf: bytes | memoryview, pos: int, size: int, kind: int, info: BufferInfo
    ) -> EtlEvent:
        pointer = (
            8 if kind in (SYSTEM_64, COMPACT_64, MOF_64, INSTANCE_64, PERFINFO_64, EVENT_64) else 4
        )
        if kind == WPP_MESSAGE:
            return EtlEvent(
                kind,
                pointer,
                0,
                0,
                None,
                0,
                payload=bytes(buf[pos : pos + size]),
                buffer_offset=info.offset,
                record_offset=pos,
                payload_offset=pos,
            )
        ts = struct.unpack_from("<q", buf, pos + TIME_AT[kind])[0]
        event = EtlEvent(
            kind,
            pointer,
            ts,
            self.to_ns(ts, pos, info.offset),
            None,
            0,
            buffer_offset=info.offset,
            record_offset=pos,
        )
        if kind in (EVENT_32, EVENT_64):
            (
                _size,
                _htype,
                _marker,
                eflags,
                _prop,
                tid,
                pid,
                _ts,
                guid,
                eid,
                version,
                channel,
                level,
                opcode,
                task,
                keyword,
                _processor_time,
                _activity,
            ) = EVENT_HEADER.unpack_from(buf, pos)
            event.provider_guid = guid_text(guid)
            event.id, event.version, event.channel, event.level = eid, version, channel, level
            event.opcode, event.task, event.keyword = opcode, task, keyword
            event.pid, event.tid, event.flags = pid, tid, eflags
            at = pos + 0x50
            end = pos + size
            if eflags & 1:
                more = True
                while more:
                    if at + 8 > end:
                        raise InputError(
                            self.path, f"buffer at {info.offset}: extended item cut short", at
                        )
                    _reserved, etype, linkage, dsize = _EXT_ITEM.unpack_from(buf, at)
                    if at + 8 + dsize > end:
                        raise InputError(
                            self.path,
                            f"buffer at {info.offset}: extended item of "
                            f"{dsize} bytes runs past its record",
                            at,
                        )
                    event.extended.append(ExtendedItem(etype, bytes(buf[at + 8 : at + 8 + dsize])))
                    at += 8 + ((dsize + 7) & ~7)
                    more = bool(linkage & 1)
            event.payload_offset = min(at, end)
            event.payload = bytes(buf[event.payload_offset : end])
        elif kind in (MOF_32, MOF_64, INSTANCE_32, INSTANCE_64):
            event.provider_guid = guid_text(buf[pos + 0x18 : pos + 0x28])
            event.id, event.level = buf[pos + 4], buf[pos + 5]
            event.version = _U16.unpack_from(buf, pos + 6)[0]
            event.opcode = event.id
            event.tid, event.pid = struct.unpack_from("<II", buf, pos + 8)
            event.payload_offset = pos + HEADER_SIZES[kind]
            event.payload = bytes(buf[event.payload_offset : pos + size])
        else:
            if kind in (SYSTEM_32, SYSTEM_64, COMPACT_32, COMPACT_64):
                event.id = _U16.unpack_from(buf, pos + 6)[0]
                event.tid, event.pid = struct.unpack_from("<II", buf, pos + 8)
            else:
                event.id = _U16.unpack_from(buf, pos + 6)[0]
            event.version = _U16.unpack_from(buf, pos)[0]
            event.payload_offset = pos + HEADER_SIZES[kind]
            event.payload = bytes(buf[event.payload_offset : pos + size])
        return event

    def events(self) -> Iterator[EtlEvent]:
        """Every record, merged across per-CPU buffers into time order (stable by file order)."""
        per_cpu: dict[int, list[BufferInfo]] = {}
        for info in self.buffers:
            per_cpu.setdefault(info.cpu, []).append(info)
        streams = [self._cpu_stream(buffers) for buffers in per_cpu.values()]
        yield from heapq.merge(
            *streams, key=lambda e: e.timestamp if e.header_type != WPP_MESSAGE else 0
        )

    def _cpu_stream(self, buffers: list[BufferInfo]) -> Iterator[EtlEvent]:
        for info in buffers:
            yield from self.buffer_events(info)


def _load(path: str) -> tuple[bytes | memoryview, object]:
    if zipfile.is_zipfile(path):
        return _unzip(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror}") from None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise InputError(path, "empty file: no ETL buffer", 0)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return memoryview(mm), mm


def _unzip(path: str) -> tuple[bytes | memoryview, object]:
    """The one .etl of a zip archive, inflated into an unnamed temporary file (in TMPDIR)
    and mapped: at most MAX_UNZIPPED_BYTES, whatever the archive's headers claim."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.lower().endswith(".etl")]
            if len(names) != 1:
                raise InputError(
                    path, f"zip archive must hold exactly one .etl file, has {len(names)}"
                )
            info = z.getinfo(names[0])
            if info.file_size > MAX_UNZIPPED_BYTES:
                raise InputError(
                    path,
                    f"{names[0]} inflates to {info.file_size} bytes "
                    f"(limit {MAX_UNZIPPED_BYTES >> 30} GiB)",
                )
            out = tempfile.TemporaryFile(prefix="wskreplay-unzip-")
            with z.open(info) as src:
                copied = 0
                while chunk := src.read(min(1 << 20, MAX_UNZIPPED_BYTES + 1 - copied)):
                    out.write(chunk)
                    copied += len(chunk)
                    if copied > MAX_UNZIPPED_BYTES:
                        raise InputError(
                            path, f"{names[0]} inflates to more than {MAX_UNZIPPED_BYTES} bytes"
                        )
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise InputError(path, f"zip archive is damaged: {exc}") from None
    except OSError as exc:
        raise InputError(path, f"cannot inflate: {exc.strerror or exc}") from None
    out.flush()
    if not copied:
        raise InputError(path, f"{names[0]} is empty: no ETL buffer", 0)
    mm = mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ)
    out.close()
    return memoryview(mm), mm
