"""Writing traces: :class:`TraceWriter` streams (a recording never has to fit in memory)
and :func:`write_trace` writes a whole :class:`~wskreplay.trace.model.Trace`; a file
appears under its name only once complete."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from wskreplay import __version__
from wskreplay.errors import OutputError
from wskreplay.formats.wskt import (
    MAX_BLOCK_ROWS,
    BlockType,
    BlockWriter,
    pack_body,
)
from wskreplay.trace.blocks import (
    DEFAULT_BLOCK_ROWS,
    DEFAULT_REDACT_PIECE,
    DEFAULT_STREAM_CHUNK,
    calls_block,
    events_entry,
    segments_block,
    socket_to_wire,
    stream_entry,
)
from wskreplay.trace.inplace import window
from wskreplay.trace.model import (
    CallTable,
    Clock,
    ColumnTable,
    DigestPiece,
    Direction,
    Event,
    SegmentTable,
    Socket,
    Stream,
    Trace,
    digest_pieces,
)


@dataclass
class _PendingRows:
    """Rows of one block type waiting to fill a block."""

    block_type: BlockType
    encode: Callable[[Any], tuple[dict[str, Any], dict[str, Any]]]
    tables: list[ColumnTable] = field(default_factory=list)
    rows: int = 0


class TraceWriter:
    """Streams a trace into a .wskt file.

    Calls and segments are buffered into blocks of ``block_rows`` rows; sockets, stream
    chunks and events are written as they come. With ``redact=True`` stream bytes are
    replaced by sha256 pieces that end at every call boundary (so redacted traces still
    compare call by call) and span at most ``redact_piece`` bytes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        metadata: dict[str, Any] | None = None,
        clock: Clock | None = None,
        zstd_level: int | None = 3,
        redact: bool = False,
        block_rows: int = DEFAULT_BLOCK_ROWS,
        stream_chunk: int = DEFAULT_STREAM_CHUNK,
        redact_piece: int = DEFAULT_REDACT_PIECE,
        write_behind: bool = False,
    ) -> None:
        """``write_behind``: blocks are compressed and written in a thread of the writer's
        own while the next ones are encoded (:meth:`BlockWriter.write_behind`), for a
        whole trace written at once (:func:`write_trace`). A writer fed as a recording
        has each block written before the call that made it returns."""
        if not 1 <= block_rows <= MAX_BLOCK_ROWS:
            raise ValueError(f"block_rows must be in [1, {MAX_BLOCK_ROWS}]")
        self.path = os.fspath(path)
        self.redact = redact
        self.block_rows = block_rows
        self.stream_chunk = stream_chunk
        self.redact_piece = redact_piece
        self._pending_calls = _PendingRows(BlockType.CALLS, calls_block)
        self._pending_segments = _PendingRows(BlockType.SEGMENTS, segments_block)
        self._call_ends: dict[tuple[int, int], list[np.ndarray]] = {}
        self._closed = False
        clock = clock or Clock()
        meta = {
            "metadata": dict(metadata or {}),
            "clock": {
                "zero_utc_ns": clock.zero_utc_ns,
                "type": clock.clock_type,
                "qpc_frequency": clock.qpc_frequency,
            },
            "redacted": redact,
            "tool": f"wskreplay {__version__}",
        }
        self._f, staged = _create_staged(self.path)
        try:
            self._blocks = BlockWriter(self._f, zstd_level=zstd_level, path=self.path)
            self._blocks.write(BlockType.META, pack_body(meta), {})
            if staged is not None:
                os.replace(staged, self.path)
            if write_behind:
                self._blocks.write_behind()
        except BaseException:
            _close_quietly(self._f)
            if staged is not None and os.path.exists(staged):
                os.remove(staged)
            raise

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._blocks.abandon()
            _close_quietly(self._f)

    def add_sockets(self, sockets: Iterable[Socket]) -> None:
        """Record sockets (again with the same id to update, e.g. with their close time)."""
        records = [socket_to_wire(s) for s in sockets]
        if records:
            self._blocks.write(
                BlockType.SOCKETS, pack_body({"sockets": records}), {"n": len(records)}
            )

    def add_calls(self, table: CallTable) -> None:
        if not len(table):
            return
        if self.redact:
            sock = table.column("socket").astype(np.int64)
            status = table.column("status").astype(np.int64)
            direction = np.where((status >> 30) <= 1, int(Direction.OUT), int(Direction.UNSENT))
            ends = (table.column("stream_offset") + table.column("length")).astype(np.int64)
            for key in set(zip(sock.tolist(), direction.tolist(), strict=True)):
                mask = (sock == key[0]) & (direction == key[1])
                self._call_ends.setdefault(key, []).append(
                    np.concatenate(
                        [table.column("stream_offset")[mask].astype(np.int64), ends[mask]]
                    )
                )
        self._add_rows(self._pending_calls, table)

    def add_segments(self, table: SegmentTable) -> None:
        self._add_rows(self._pending_segments, table)

    def _add_rows(self, pending: _PendingRows, table: ColumnTable) -> None:
        if len(table):
            pending.tables.append(table)
            pending.rows += len(table)
            if pending.rows >= self.block_rows:
                self._flush_rows(pending, final=False)

    def _flush_rows(self, pending: _PendingRows, *, final: bool) -> None:
        """Write every full block of pending rows (and the last short one when ``final``)."""
        table = type(pending.tables[0]).concat(pending.tables) if pending.tables else None
        start = 0
        while table is not None and (
            len(table) - start >= self.block_rows or (final and start < len(table))
        ):
            part = table.take(slice(start, start + self.block_rows))
            body, entry = pending.encode(part)
            self._blocks.write(pending.block_type, pack_body(body), entry)
            start += len(part)
        rest = table.take(slice(start, None)) if table is not None and start else table
        pending.tables = [rest] if rest is not None and len(rest) else []
        pending.rows = len(rest) if rest is not None else 0

    def add_stream_data(
        self, socket: int, direction: Direction, offset: int, data: bytes | memoryview
    ) -> None:
        """Stream bytes at ``offset``; chunks of one stream may come in any order."""
        view = memoryview(data)
        for start in range(0, len(view), self.stream_chunk):
            piece = view[start : start + self.stream_chunk]
            at = offset + start
            if self.redact:
                body = {
                    "s": socket,
                    "d": int(direction),
                    "o": at,
                    "n": len(piece),
                    "h": [
                        [p.length, p.sha256]
                        for p in digest_pieces(
                            at, piece, self._boundaries(socket, direction), self.redact_piece
                        )
                    ],
                }
                self._blocks.write(BlockType.STREAM, pack_body(body), stream_entry(body))
            else:
                body = {"s": socket, "d": int(direction), "o": at, "b": piece}
                if self._blocks.compressing and _compressible(piece):
                    self._blocks.write(BlockType.STREAM, pack_body(body), stream_entry(body))
                else:
                    self._blocks.write_stored(
                        BlockType.STREAM,
                        [stream_body_head(socket, int(direction), at, len(piece)), piece],
                        stream_entry(body),
                    )

    def add_stream_digests(
        self, socket: int, direction: Direction, pieces: list[DigestPiece]
    ) -> None:
        """Pieces of an already redacted stream (copying a redacted trace)."""
        for p in pieces:
            body = {
                "s": socket,
                "d": int(direction),
                "o": p.offset,
                "n": p.length,
                "h": [[p.length, p.sha256]],
            }
            self._blocks.write(BlockType.STREAM, pack_body(body), stream_entry(body))

    def add_stream_gap(self, socket: int, direction: Direction, offset: int, length: int) -> None:
        """``length`` bytes at ``offset`` are known to exist but the sources lack them."""
        body = {"s": socket, "d": int(direction), "o": offset, "n": length, "gap": True}
        self._blocks.write(BlockType.STREAM, pack_body(body), stream_entry(body))

    def _boundaries(self, socket: int, direction: Direction) -> np.ndarray:
        parts = self._call_ends.get((socket, int(direction)), [])
        if len(parts) > 1:
            self._call_ends[(socket, int(direction))] = parts = [np.concatenate(parts)]
        return parts[0] if parts else np.empty(0, np.int64)

    def add_events(self, events: Iterable[Event]) -> None:
        events = list(events)
        if events:
            records = [
                {"t": e.time_ns, "k": e.kind, "s": e.socket, "a": dict(e.attrs)} for e in events
            ]
            self._blocks.write(
                BlockType.EVENTS, pack_body({"events": records}), events_entry(events)
            )

    def flush(self) -> None:
        """Write every buffered call and segment now (blocks may then be short)."""
        self._flush_rows(self._pending_calls, final=True)
        self._flush_rows(self._pending_segments, final=True)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
            self._blocks.finish()
        except BaseException:
            self._blocks.abandon()
            _close_quietly(self._f)
            self._closed = True
            raise
        self._f.close()
        self._closed = True


def _create_staged(path: str) -> tuple[BinaryIO, str | None]:
    """The output file, opened for writing. Where a file can be renamed while open
    (POSIX), it is written under a temporary name until its header and META block are
    flushed, then renamed into place: a writer killed at any point leaves either no file or
    one that ``verify`` reads (never an empty or headless one). Returns the file and the
    temporary name still to be renamed (None when written in place)."""
    if os.name != "posix":
        return open(path, "wb"), None
    staged = f"{path}.{os.getpid()}.new"
    try:
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    except OSError as exc:
        raise OutputError(path, f"cannot create: {exc.strerror or exc}") from None
    return os.fdopen(fd, "wb"), staged


def _close_quietly(f: BinaryIO) -> None:
    """Close a file whose writing already failed (its buffer may fail to flush again)."""
    try:
        f.close()
    except OSError:
        pass


def stream_body_head(socket: int, direction: int, offset: int, length: int) -> bytes:
    """The msgpack of a stream chunk's body (``{"s", "d", "o", "b"}``) up to its payload:
    followed by the ``length`` payload bytes, it is ``pack_body`` of the body."""
    keys = pack_body({"s": socket, "d": direction, "o": offset})
    if length < 1 << 8:
        size = struct.pack(">BB", 0xC4, length)
    elif length < 1 << 16:
        size = struct.pack(">BH", 0xC5, length)
    else:
        size = struct.pack(">BI", 0xC6, length)
    return b"\x84" + keys[1:] + pack_body("b") + size


def _compressible(data: memoryview) -> bool:
    """Whether zstd is worth running on ``data``, judged from its first 64 KiB."""
    import zstandard

    sample = bytes(data[: 64 << 10])
    return len(zstandard.ZstdCompressor(level=1).compress(sample)) < 0.9 * len(sample)


def write_trace(path: str | os.PathLike[str], trace: Trace, **options: Any) -> None:
    """Write a whole trace (see :class:`TraceWriter` for ``options``). Its streams may
    still be in their own trace file (``streams="in-place"``), read as they are written: if
    one of them turns out damaged, or anything else but the output fails, the file written
    so far is removed, so a failed write never leaves a shorter trace where a whole one was
    asked for. An output error (a full disk) leaves it, readable, as for any writer."""
    w = TraceWriter(
        path, metadata=trace.metadata, clock=trace.clock, **{"write_behind": True, **options}
    )
    try:
        with w:
            w.add_sockets(trace.sockets.values())
            w.add_calls(trace.calls)
            w.flush()
            w.add_segments(trace.segments)
            w.flush()
            for stream in trace.streams.values():
                _write_stream(w, stream)
            w.add_events(trace.events)
    except OutputError:
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(w.path)
        raise


def _write_stream(w: TraceWriter, stream: Stream) -> None:
    if stream.digests is not None:
        w.add_stream_digests(stream.socket, stream.direction, stream.digests)
    pos = 0
    for start, end in sorted(stream.gaps):
        if start > pos:
            _write_stream_data(w, stream, pos, start)
        w.add_stream_gap(stream.socket, stream.direction, start, end - start)
        pos = end
    if stream.length > pos:
        _write_stream_data(w, stream, pos, stream.length)


def _write_stream_data(w: TraceWriter, stream: Stream, start: int, end: int) -> None:
    """Bytes ``[start, end)`` of the stream, a chunk at a time: a stream left in its trace
    file is read one chunk at a time, never assembled."""
    if stream.data is None:
        return
    for at in range(start, end, w.stream_chunk):
        piece = window(stream.data, at, min(at + w.stream_chunk, end))
        w.add_stream_data(stream.socket, stream.direction, at, piece)
