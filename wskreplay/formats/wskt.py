"""The .wskt compact trace format: checksummed msgpack blocks, a footer index, no policy.

Layout (docs/format.md has every byte)::

    file header (16 B) | block | block | ... | INDEX block | trailer (16 B)

Each block is a 24-byte header (sync, type, codec, lengths, body CRC-32, header CRC-32) and
a body that is one msgpack value, optionally zstd-compressed. Every block decodes on its
own, so a file cut anywhere keeps every block before the cut, and a damaged block is
skipped by resynchronising on the next valid block header.
"""

from __future__ import annotations

import mmap
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, BinaryIO, Final

import msgpack
import zstandard

from wskreplay.errors import InputError, OutputError
from wskreplay.formats.checksum import crc32
from wskreplay.formats.columns import ColumnSpec, check_dependencies

MAGIC = b"\x89WSKT\r\n\x1a"
FORMAT_MAJOR = 1
FORMAT_MINOR = 1
FILE_HEADER = struct.Struct("<8sHHI")
BLOCK_SYNC = b"WSKB"
BLOCK_HEADER = struct.Struct("<4sBBHIII")
BLOCK_HEADER_SIZE = BLOCK_HEADER.size + 4
TRAILER = struct.Struct("<Q8s")
TRAILER_MAGIC = b"WSKTEND\n"
MAX_BLOCK_BYTES = 256 << 20
"""Largest stored or decoded block body; a header claiming more is damage, not a request."""
MAX_BLOCK_ROWS = 1 << 20
"""Most rows a CALLS or SEGMENTS block may hold (bounds what constant columns expand to)."""
MAX_GAP_BYTES = 1 << 28
"""Most bytes of gaps a stream may have for it to be assembled in memory."""
RELEASE_BYTES = 64 << 20
"""Bytes read through a file's mapping between two releases of its pages."""
FAULT_AROUND_BYTES = 64 << 10
"""What touching one byte of a mapped file can map (Linux maps the pages around a fault):
counted by whoever reads a mapping piece by piece, so its releases keep up."""


class BlockType(IntEnum):
    META = 1
    SOCKETS = 2
    CALLS = 3
    SEGMENTS = 4
    STREAM = 5
    EVENTS = 6
    INDEX = 7


class Codec(IntEnum):
    NONE = 0
    ZSTD = 1


CALL_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("seq", "u8", "delta"),
    ColumnSpec("socket", "u4"),
    ColumnSpec("issue_ns", "i8", "delta"),
    ColumnSpec("return_ns", "i8", "minus", base="issue_ns"),
    ColumnSpec("flags", "u4"),
    ColumnSpec("offset", "u8"),
    ColumnSpec("length", "u8"),
    ColumnSpec("status", "u4"),
    ColumnSpec("completed", "u1"),
    ColumnSpec("completion_ns", "i8", "minus", base="issue_ns", mask="completed"),
    ColumnSpec("completion_status", "u4"),
    ColumnSpec("information", "u8", "minus", base="length", mask="completed"),
    ColumnSpec("irp", "u8"),
    ColumnSpec("irql", "i1", default=-1),
    ColumnSpec("stream_offset", "u8", "next", group=("socket",), length="length"),
    ColumnSpec("control_len", "i4", default=-1),
)

SEGMENT_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("time_ns", "i8", "delta"),
    ColumnSpec("socket", "u4"),
    ColumnSpec("direction", "u1"),
    ColumnSpec("length", "u4"),
    ColumnSpec("seq", "u8", "next", group=("socket", "direction"), length="length"),
    ColumnSpec("flags", "u2"),
    ColumnSpec("ack", "u8", "next", group=("socket", "direction")),
    ColumnSpec("window", "u4", "next", group=("socket", "direction")),
)


check_dependencies(CALL_COLUMNS)
check_dependencies(SEGMENT_COLUMNS)


@dataclass(frozen=True)
class FileHeader:
    major: int
    minor: int
    flags: int


@dataclass(frozen=True)
class BlockRef:
    """Where a block is and what its header says; its body is read on demand."""

    offset: int
    type: int
    codec: int
    stored_len: int
    raw_len: int
    body_crc: int

    @property
    def end(self) -> int:
        return self.offset + BLOCK_HEADER_SIZE + self.stored_len


@dataclass(frozen=True)
class Damage:
    offset: int
    length: int
    what: str


def pack_body(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_block(
    btype: int, body: bytes, *, compressor: zstandard.ZstdCompressor | None = None
) -> tuple[bytes, bytes]:
    """Header and stored body of one block (the body compressed when ``compressor`` is given)."""
    _check_body_size(len(body))
    codec = Codec.NONE
    stored: bytes = body
    if compressor is not None:
        packed = compressor.compress(body)
        if len(packed) < len(body):
            codec, stored = Codec.ZSTD, packed
    return block_header(btype, codec, len(stored), len(body), crc32(stored)), stored


def block_header(btype: int, codec: int, stored_len: int, raw_len: int, body_crc: int) -> bytes:
    """A block's header, its own CRC included."""
    head = BLOCK_HEADER.pack(BLOCK_SYNC, int(btype), int(codec), 0, stored_len, raw_len, body_crc)
    return head + struct.pack("<I", crc32(head))


def _check_body_size(size: int) -> None:
    if size > MAX_BLOCK_BYTES:
        raise ValueError(f"block body of {size} bytes exceeds {MAX_BLOCK_BYTES}")


def file_header(minor: int = FORMAT_MINOR) -> bytes:
    return FILE_HEADER.pack(MAGIC, FORMAT_MAJOR, minor, 0)


class BlockWriter:
    """Appends blocks to a binary file and finishes it with an INDEX block and trailer.

    Each block is flushed to the OS as soon as it is written, so a writer killed at any
    point leaves every block it had finished readable. A failed write (a full disk) is an
    :class:`OutputError` naming ``path``; the blocks before it stay readable.

    After :meth:`write_behind`, blocks are compressed and written by a thread of the
    writer's own, in the order given, while the caller encodes the next ones (zstd and
    the file's writes let go of the GIL); a failure there is raised by the next call
    here. :meth:`finish` waits for them; :meth:`abandon` drops what is still queued.
    """

    def __init__(
        self,
        fileobj: BinaryIO,
        *,
        zstd_level: int | None = 3,
        minor: int = FORMAT_MINOR,
        path: str = "<trace>",
    ):
        self._f = fileobj
        self.path = path
        self._compressor = (
            zstandard.ZstdCompressor(level=zstd_level, write_content_size=True)
            if zstd_level is not None
            else None
        )
        self._pos = 0
        self._append(file_header(minor))
        self.entries: list[dict[str, Any]] = []
        self._behind: _WriteBehind | None = None

    @property
    def compressing(self) -> bool:
        return self._compressor is not None

    def write_behind(self) -> None:
        """Write the blocks from now on in the writer's own thread (see the class)."""
        if self._behind is None:
            self._behind = _WriteBehind()

    def _append(self, *parts: bytes | memoryview) -> None:
        try:
            for part in parts:
                self._f.write(part)
            self._f.flush()
        except OSError as exc:
            raise OutputError(
                self.path,
                f"cannot write at offset {self._pos}: {exc.strerror or exc} (what was "
                "written before is readable: 'wskreplay verify' / 'wskreplay recover')",
            ) from None
        self._pos += sum(len(p) for p in parts)

    def write(
        self, btype: int, body: bytes, entry: dict[str, Any], *, compress: bool = True
    ) -> None:
        compressor = self._compressor if compress else None

        def encoded() -> None:
            head, stored = encode_block(btype, body, compressor=compressor)
            self._add(btype, head, stored, entry)

        self._run(encoded)

    def write_stored(
        self, btype: int, parts: list[bytes | memoryview], entry: dict[str, Any]
    ) -> None:
        """A block stored uncompressed whose body is ``parts`` joined: the same block as
        :meth:`write` of the joined body without compression, written without joining
        them (a stream chunk's payload is not copied into its body)."""
        size = sum(len(p) for p in parts)
        _check_body_size(size)

        def stored() -> None:
            crc = 0
            for part in parts:
                crc = crc32(part, crc)
            self._add(btype, block_header(btype, Codec.NONE, size, size, crc), parts, entry)

        self._run(stored)

    def write_raw(self, head: bytes, stored: bytes, btype: int, entry: dict[str, Any]) -> None:
        """Copy an already encoded block (used by ``recover``)."""
        self._run(lambda: self._add(btype, head, [stored], entry))

    def _run(self, job: Callable[[], None]) -> None:
        if self._behind is None:
            job()
        else:
            self._behind.put(job)

    def _add(
        self,
        btype: int,
        head: bytes,
        body: bytes | list[bytes | memoryview],
        entry: dict[str, Any],
    ) -> None:
        """Append a block (its header, then its stored body, whole or in parts) and
        index it."""
        offset = self._pos
        self._append(head, *(body if isinstance(body, list) else [body]))
        self.entries.append({"o": offset, "t": int(btype), **entry})

    def finish(self) -> None:
        if self._behind is not None:
            behind, self._behind = self._behind, None
            behind.wait()
        index_offset = self._pos
        head, stored = encode_block(
            BlockType.INDEX, pack_body({"blocks": self.entries}), compressor=self._compressor
        )
        self._append(head, stored, TRAILER.pack(index_offset, TRAILER_MAGIC))

    def abandon(self) -> None:
        """Stop writing: the blocks still queued are dropped, and the writer's thread has
        ended when this returns (the caller may then close or remove the file)."""
        if self._behind is not None:
            behind, self._behind = self._behind, None
            behind.stop()


class _WriteBehind:
    """Jobs run in order by a thread of their own; the first failure is kept, the jobs
    after it are dropped, and it is raised to the caller by :meth:`put` or :meth:`wait`."""

    _DEPTH: Final = 8
    """Jobs queued at most (each holds a block's body)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(self._DEPTH)
        self._failure: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="wskt-write-behind", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._failure is None and not self._stopping:
                try:
                    job()
                except BaseException as exc:  # raised in the caller's thread
                    self._failure = exc

    def put(self, job: Callable[[], None]) -> None:
        self._raise_failure()
        self._jobs.put(job)

    def wait(self) -> None:
        """Run every queued job, then end the thread; raise the first failure."""
        self._jobs.put(None)
        self._thread.join()
        self._raise_failure()

    def stop(self) -> None:
        self._stopping = True
        self._jobs.put(None)
        self._thread.join()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


def unpack_body(data: bytes | memoryview) -> Any:
    """msgpack with no code execution: ext types stay opaque, lengths bounded by ``data``."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


class WsktFile:
    """Random and sequential access to the blocks of a .wskt file, through ``mmap``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._fd = open(self.path, "rb")
        except OSError as exc:
            raise InputError(self.path, f"cannot open: {exc.strerror}") from None
        self.size = os.fstat(self._fd.fileno()).st_size
        self._map: mmap.mmap | None = None
        self._buf: memoryview | bytes = b""
        if self.size:
            self._map = mmap.mmap(self._fd.fileno(), 0, access=mmap.ACCESS_READ)
            self._buf = memoryview(self._map)
        self.header = self._read_header()
        self._dctx = zstandard.ZstdDecompressor()
        self._read_since_release = 0

    def release_pages(self) -> None:
        """Drop the file's pages from this process's memory (they stay in the page cache):
        keeps a long read from growing RSS with the file."""
        self._read_since_release = 0
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)

    def release_range(self, offset: int, length: int) -> None:
        """Drop the pages of ``[offset, offset + length)`` from this process's memory."""
        if self._map is not None and length > 0:
            start = offset - offset % mmap.PAGESIZE
            self._map.madvise(mmap.MADV_DONTNEED, start, min(offset + length, self.size) - start)

    def note_read(self, n: int) -> None:
        """Count ``n`` bytes read through the mapping; release the pages every 64 MiB."""
        self._read_since_release += n
        if self._read_since_release >= RELEASE_BYTES:
            self.release_pages()

    def close(self) -> None:
        """Release the mapping; one still referenced (say by a traceback) is left to the GC."""
        try:
            if isinstance(self._buf, memoryview):
                self._buf.release()
            if self._map is not None:
                self._map.close()
        except BufferError:
            pass
        self._buf = b""
        self._map = None
        self._fd.close()

    def __enter__(self) -> WsktFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_header(self) -> FileHeader:
        if self.size < FILE_HEADER.size:
            raise InputError(
                self.path, f"not a .wskt trace: {self.size} bytes, the file header needs 16", 0
            )
        magic, major, minor, flags = FILE_HEADER.unpack_from(self._buf, 0)
        if magic != MAGIC:
            raise InputError(self.path, "not a .wskt trace: bad magic bytes", 0)
        if major > FORMAT_MAJOR:
            raise InputError(
                self.path,
                f"written in trace format {major}.{minor}; this wskreplay reads format "
                f"{FORMAT_MAJOR}.x: upgrade wskreplay",
                8,
            )
        if major < 1:
            raise InputError(self.path, f"unknown trace format version {major}.{minor}", 8)
        return FileHeader(major, minor, flags)

    def block_at(self, offset: int) -> BlockRef:
        """The block whose header is at ``offset``; its lengths are checked against the file."""
        if self.size - offset < BLOCK_HEADER_SIZE:
            raise InputError(
                self.path,
                f"block header truncated: {max(self.size - offset, 0)} of "
                f"{BLOCK_HEADER_SIZE} bytes present",
                offset,
            )
        fields = BLOCK_HEADER.unpack_from(self._buf, offset)
        sync, btype, codec, _reserved, stored_len, raw_len, body_crc = fields
        (head_crc,) = struct.unpack_from("<I", self._buf, offset + BLOCK_HEADER.size)
        if sync != BLOCK_SYNC:
            raise InputError(self.path, "expected a block header (sync bytes 'WSKB')", offset)
        if crc32(self._buf[offset : offset + BLOCK_HEADER.size]) != head_crc:
            raise InputError(self.path, "block header checksum mismatch", offset)
        if stored_len > MAX_BLOCK_BYTES or raw_len > MAX_BLOCK_BYTES:
            raise InputError(
                self.path,
                f"block claims {max(stored_len, raw_len)} bytes, limit is {MAX_BLOCK_BYTES}",
                offset,
            )
        avail = self.size - offset - BLOCK_HEADER_SIZE
        if stored_len > avail:
            raise InputError(
                self.path, f"block body truncated: {avail} of {stored_len} bytes present", offset
            )
        if codec not in (Codec.NONE, Codec.ZSTD):
            raise InputError(self.path, f"unknown block codec {codec}", offset)
        return BlockRef(offset, btype, codec, stored_len, raw_len, body_crc)

    def stored(self, ref: BlockRef) -> memoryview | bytes:
        start = ref.offset + BLOCK_HEADER_SIZE
        return self._buf[start : start + ref.stored_len]

    def raw_block(self, ref: BlockRef) -> tuple[bytes, bytes]:
        return bytes(self._buf[ref.offset : ref.offset + BLOCK_HEADER_SIZE]), bytes(
            self.stored(ref)
        )

    def check(self, ref: BlockRef) -> None:
        if crc32(self.stored(ref)) != ref.body_crc:
            raise InputError(self.path, "block body checksum mismatch", ref.offset)

    def body(self, ref: BlockRef) -> Any:
        """The block's decoded msgpack value, after its checksum and sizes are verified."""
        self.check(ref)
        data = self.stored(ref)
        if ref.codec == Codec.ZSTD:
            try:
                data = self._dctx.decompress(data, max_output_size=ref.raw_len)
            except zstandard.ZstdError as exc:
                raise InputError(
                    self.path, f"zstd block does not decompress: {exc}", ref.offset
                ) from None
        if len(data) != ref.raw_len:
            raise InputError(
                self.path,
                f"block decodes to {len(data)} bytes, header says {ref.raw_len}",
                ref.offset,
            )
        try:
            return unpack_body(data)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise InputError(
                self.path, f"block body is not valid msgpack: {exc}", ref.offset
            ) from None

    def trailer_index_offset(self) -> int | None:
        """Offset of the INDEX block the trailer names, or None when there is no trailer."""
        if self.size < FILE_HEADER.size + TRAILER.size:
            return None
        offset, magic = TRAILER.unpack_from(self._buf, self.size - TRAILER.size)
        if magic != TRAILER_MAGIC or not FILE_HEADER.size <= offset < self.size - TRAILER.size:
            return None
        return offset

    def _next_sync(self, start: int) -> int:
        """The next offset >= ``start`` holding a block header whose checksum is valid."""
        buf = self._map
        assert buf is not None
        pos = start
        while True:
            pos = buf.find(BLOCK_SYNC, pos)
            if pos < 0:
                return self.size
            try:
                self.block_at(pos)
                return pos
            except InputError as exc:
                if "truncated" in exc.what and "body" in exc.what:
                    return pos
                pos += 1

    def scan(self) -> tuple[list[BlockRef], list[Damage]]:
        """Walk every block from the start, tolerating damage.

        Returns the blocks whose header and body are intact and every damaged range with
        what was wrong there; stops at the trailer that follows the INDEX block.
        """
        refs: list[BlockRef] = []
        damages: list[Damage] = []
        pos = FILE_HEADER.size
        trailer_at = self.size - TRAILER.size if self.trailer_index_offset() is not None else None
        while pos < self.size:
            if pos == trailer_at and refs and refs[-1].type == BlockType.INDEX:
                break
            try:
                ref = self.block_at(pos)
            except InputError as exc:
                nxt = self._next_sync(pos + 1)
                damages.append(Damage(pos, nxt - pos, exc.what))
                pos = nxt
                continue
            try:
                self.check(ref)
            except InputError as exc:
                damages.append(Damage(pos, ref.end - pos, exc.what))
            else:
                refs.append(ref)
            self.note_read(ref.end - pos)
            pos = ref.end
        self.release_pages()
        return refs, damages

    def iter_blocks(self, refs: list[BlockRef]) -> Iterator[tuple[BlockRef, Any]]:
        for ref in refs:
            yield ref, self.body(ref)
