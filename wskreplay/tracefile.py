"""Traces on disk: the trace model written to and read from .wskt files.

:class:`TraceWriter` streams (a recording never has to fit in memory), :class:`TraceReader`
gives random access through the footer index, :func:`verify` and :func:`recover` deal with
files a crashed recorder left behind.
"""

from __future__ import annotations

import bisect
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from wskreplay import __version__
from wskreplay.errors import InputError, OutputError
from wskreplay.formats import columns as colcodec
from wskreplay.formats.wskt import (
    CALL_COLUMNS,
    FILE_HEADER,
    FORMAT_MAJOR,
    MAX_BLOCK_ROWS,
    MAX_GAP_BYTES,
    SEGMENT_COLUMNS,
    BlockRef,
    BlockType,
    BlockWriter,
    Damage,
    WsktFile,
    pack_body,
)
from wskreplay.model import (
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
from wskreplay.spill import StreamSink

FILE_HEADER_SIZE = FILE_HEADER.size
DEFAULT_BLOCK_ROWS = 65536
DEFAULT_STREAM_CHUNK = 4 << 20
DEFAULT_REDACT_PIECE = 64 << 10
FAULT_AROUND_BYTES = 64 << 10
"""What touching one block header maps (the kernel maps pages around a fault): counted so
walking the index of a file of many blocks releases its pages as reading bodies does."""


def _socket_to_wire(s: Socket) -> dict[str, Any]:
    return {
        "id": s.id,
        "category": s.category,
        "family": s.family,
        "local_addr": s.local_addr,
        "local_port": s.local_port,
        "remote_addr": s.remote_addr,
        "remote_port": s.remote_port,
        "origin": s.origin,
        "open_ns": s.open_ns,
        "close_ns": s.close_ns,
        "handle": s.handle,
    }


def _socket_from_wire(d: Any) -> Socket:
    if not isinstance(d, dict) or not isinstance(d.get("id"), int):
        raise ValueError("socket record without an integer id")
    known = {k: d[k] for k in _SOCKET_TYPES if k in d}
    for key, value in known.items():
        if not isinstance(value, _SOCKET_TYPES[key]) or isinstance(value, bool):
            raise ValueError(f"socket field {key!r} has type {type(value).__name__}")
    return Socket(**known)


def _is_event(e: Event) -> bool:
    return (
        isinstance(e.time_ns, int)
        and isinstance(e.kind, str)
        and isinstance(e.attrs, dict)
        and (e.socket is None or isinstance(e.socket, int))
    )


_SOCKET_TYPES = {
    "id": int,
    "category": str,
    "family": int,
    "local_addr": str,
    "local_port": int,
    "remote_addr": str,
    "remote_port": int,
    "origin": str,
    "open_ns": int,
    "close_ns": (int, type(None)),
    "handle": int,
}


def _entry_ok(entry: dict[str, Any]) -> bool:
    """Whether an index entry has the fields its block type needs, with the right types."""
    ints = {
        BlockType.CALLS: ("n", "k0", "k1", "t0", "t1"),
        BlockType.SEGMENTS: ("n", "t0", "t1"),
        BlockType.EVENTS: ("n", "t0", "t1"),
        BlockType.STREAM: ("sd", "so", "sn"),
    }
    kind = entry.get("t")
    if not all(isinstance(entry.get(k), int) for k in ints.get(kind, ())):
        return False
    if kind in (BlockType.CALLS, BlockType.SEGMENTS, BlockType.STREAM):
        s = entry.get("s")
        if not isinstance(s, list) or not all(isinstance(x, int) for x in s):
            return False
    if kind == BlockType.STREAM:
        return len(entry["s"]) == 1 and entry["sd"] in (0, 1, 2) and entry["so"] >= 0 <= entry["sn"]
    return True


def _span(values: np.ndarray) -> tuple[int, int]:
    """(min, max), or (0, -1) for no values: an empty range no query matches."""
    return (int(values.min()), int(values.max())) if len(values) else (0, -1)


def _calls_entry(table: CallTable) -> dict[str, Any]:
    k0, k1 = _span(table.column("seq"))
    t0, t1 = _span(table.column("issue_ns"))
    s = np.unique(table.column("socket")).tolist()
    return {"n": len(table), "k0": k0, "k1": k1, "t0": t0, "t1": t1, "s": s}


def _segments_entry(table: SegmentTable) -> dict[str, Any]:
    t0, t1 = _span(table.column("time_ns"))
    return {"n": len(table), "t0": t0, "t1": t1, "s": np.unique(table.column("socket")).tolist()}


def _events_entry(events: list[Event]) -> dict[str, Any]:
    t0, t1 = _span(np.array([e.time_ns for e in events], dtype=np.int64))
    return {"n": len(events), "t0": t0, "t1": t1}


def _stream_entry(body: dict[str, Any]) -> dict[str, Any]:
    n = len(body["b"]) if "b" in body else body["n"]
    kind = "data" if "b" in body else ("digest" if "h" in body else "gap")
    return {"s": [body["s"]], "sd": body["d"], "so": body["o"], "sn": n, "k": kind}


def _calls_block(part: CallTable) -> tuple[dict[str, Any], dict[str, Any]]:
    cols = colcodec.encode_columns(CALL_COLUMNS, part.columns)
    return {"n": len(part), "cols": cols, "ctl": part.control_blob}, _calls_entry(part)


def _segments_block(part: SegmentTable) -> tuple[dict[str, Any], dict[str, Any]]:
    cols = colcodec.encode_columns(SEGMENT_COLUMNS, part.columns)
    return {"n": len(part), "cols": cols}, _segments_entry(part)


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
    ) -> None:
        if not 1 <= block_rows <= MAX_BLOCK_ROWS:
            raise ValueError(f"block_rows must be in [1, {MAX_BLOCK_ROWS}]")
        self.path = os.fspath(path)
        self.redact = redact
        self.block_rows = block_rows
        self.stream_chunk = stream_chunk
        self.redact_piece = redact_piece
        self._pending_calls = _PendingRows(BlockType.CALLS, _calls_block)
        self._pending_segments = _PendingRows(BlockType.SEGMENTS, _segments_block)
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
            _close_quietly(self._f)

    def add_sockets(self, sockets: Iterable[Socket]) -> None:
        """Record sockets (again with the same id to update, e.g. with their close time)."""
        records = [_socket_to_wire(s) for s in sockets]
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
                self._blocks.write(BlockType.STREAM, pack_body(body), _stream_entry(body))
            else:
                body = {"s": socket, "d": int(direction), "o": at, "b": piece}
                compressible = self._blocks.compressing and _compressible(piece)
                self._blocks.write(
                    BlockType.STREAM, pack_body(body), _stream_entry(body), compress=compressible
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
            self._blocks.write(BlockType.STREAM, pack_body(body), _stream_entry(body))

    def add_stream_gap(self, socket: int, direction: Direction, offset: int, length: int) -> None:
        """``length`` bytes at ``offset`` are known to exist but the sources lack them."""
        body = {"s": socket, "d": int(direction), "o": offset, "n": length, "gap": True}
        self._blocks.write(BlockType.STREAM, pack_body(body), _stream_entry(body))

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
                BlockType.EVENTS, pack_body({"events": records}), _events_entry(events)
            )

    def flush(self) -> None:
        """Write every buffered call and segment now (blocks may then be short)."""
        self._flush_rows(self._pending_calls, final=True)
        self._flush_rows(self._pending_segments, final=True)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._blocks.finish()
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


def _compressible(data: memoryview) -> bool:
    """Whether zstd is worth running on ``data``, judged from its first 64 KiB."""
    import zstandard

    sample = bytes(data[: 64 << 10])
    return len(zstandard.ZstdCompressor(level=1).compress(sample)) < 0.9 * len(sample)


def write_trace(path: str | os.PathLike[str], trace: Trace, **options: Any) -> None:
    """Write a whole in-memory trace (see :class:`TraceWriter` for ``options``)."""
    with TraceWriter(path, metadata=trace.metadata, clock=trace.clock, **options) as w:
        w.add_sockets(trace.sockets.values())
        w.add_calls(trace.calls)
        w.flush()
        w.add_segments(trace.segments)
        w.flush()
        for stream in trace.streams.values():
            _write_stream(w, stream)
        w.add_events(trace.events)


def _write_stream(w: TraceWriter, stream: Stream) -> None:
    if stream.digests is not None:
        w.add_stream_digests(stream.socket, stream.direction, stream.digests)
    pos = 0
    for start, end in sorted(stream.gaps):
        if stream.data is not None and start > pos:
            w.add_stream_data(
                stream.socket, stream.direction, pos, memoryview(stream.data)[pos:start]
            )
        w.add_stream_gap(stream.socket, stream.direction, start, end - start)
        pos = end
    if stream.data is not None and stream.length > pos:
        w.add_stream_data(
            stream.socket, stream.direction, pos, memoryview(stream.data)[pos : stream.length]
        )


@dataclass
class BlockInfo:
    ref: BlockRef
    entry: dict[str, Any]


class TraceReader:
    """Random access to a .wskt trace: by call number, by time, by socket.

    An intact file is read through its footer index; a damaged one (no trailer, a bad
    block) raises :class:`InputError`. With ``mode="scan"`` the footer is not used: every
    intact block is found by walking and decoding the file, and ``damages`` says what was
    lost (``verify`` and ``recover`` read this way).
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: str = "index") -> None:
        if mode not in ("index", "scan"):
            raise ValueError(f"unknown mode {mode!r}")
        self.file = WsktFile(path)
        self.path = self.file.path
        self.damages: list[Damage] = []
        try:
            indexed = None if mode == "scan" else self._from_index()
            if indexed is None and mode == "index":
                raise InputError(
                    self.path,
                    "no valid footer index: the trace is incomplete or damaged "
                    "(run 'wskreplay verify' / 'wskreplay recover')",
                    self.file.size,
                )
            self.indexed = indexed is not None
            self.blocks = indexed if indexed is not None else self._from_scan()
            self._load_head()
        except BaseException:
            self.file.close()
            raise

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _from_index(self) -> list[BlockInfo] | None:
        offset = self.file.trailer_index_offset()
        if offset is None:
            return None
        try:
            ref = self.file.block_at(offset)
            body = self.file.body(ref)
        except InputError:
            return None
        if ref.type != BlockType.INDEX or not isinstance(body, dict):
            return None
        entries = body.get("blocks")
        if not isinstance(entries, list):
            return None
        blocks = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("o"), int):
                raise InputError(self.path, "index entry without a block offset", offset)
            if not _entry_ok(entry) or not FILE_HEADER_SIZE <= entry["o"] < offset:
                raise InputError(
                    self.path, f"malformed index entry for offset {entry['o']}", offset
                )
            bref = self.file.block_at(entry["o"])
            self.file.note_read(FAULT_AROUND_BYTES)
            if bref.type != entry.get("t"):
                raise InputError(
                    self.path,
                    f"index says block type {entry.get('t')}, header says {bref.type}",
                    bref.offset,
                )
            blocks.append(BlockInfo(bref, entry))
        return blocks

    def _from_scan(self) -> list[BlockInfo]:
        refs, self.damages = self.file.scan()
        blocks = []
        for ref in refs:
            if ref.type == BlockType.INDEX:
                continue
            self.file.note_read(ref.end - ref.offset)
            try:
                entry = self._entry_from_body(ref)
            except InputError as exc:
                self.damages.append(Damage(ref.offset, ref.end - ref.offset, exc.what))
                continue
            blocks.append(BlockInfo(ref, entry))
        self.damages.sort(key=lambda d: d.offset)
        return blocks

    def _entry_from_body(self, ref: BlockRef) -> dict[str, Any]:
        if ref.type == BlockType.CALLS:
            return _calls_entry(self._calls(ref))
        if ref.type == BlockType.SEGMENTS:
            return _segments_entry(self._segments(ref))
        if ref.type == BlockType.STREAM:
            return _stream_entry(self._stream_body(ref))
        if ref.type == BlockType.EVENTS:
            return _events_entry(self._events(ref))
        if ref.type == BlockType.SOCKETS:
            return {"n": len(self._sockets(ref))}
        self._map_body(ref)
        return {}

    def _map_body(self, ref: BlockRef) -> dict[str, Any]:
        body = self.file.body(ref)
        if not isinstance(body, dict):
            raise InputError(self.path, f"block type {ref.type} body is not a map", ref.offset)
        return body

    def _load_head(self) -> None:
        meta_blocks = [b for b in self.blocks if b.ref.type == BlockType.META]
        self.metadata: dict[str, Any] = {}
        self.clock = Clock()
        self.redacted = False
        self.tool = None
        if meta_blocks:
            body = self._map_body(meta_blocks[0].ref)
            self.metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            c = body.get("clock") if isinstance(body.get("clock"), dict) else {}
            try:
                self.clock = Clock(
                    int(c.get("zero_utc_ns", 0)),
                    str(c.get("type", "synthetic")),
                    c.get("qpc_frequency"),
                )
            except (TypeError, ValueError):
                raise InputError(self.path, "bad clock record", meta_blocks[0].ref.offset) from None
            self.redacted = bool(body.get("redacted", False))
            self.tool = body.get("tool")
        elif self.indexed:
            raise InputError(self.path, "no META block", FILE_HEADER_SIZE)
        self.sockets: dict[int, Socket] = {}
        for b in self.blocks:
            if b.ref.type == BlockType.SOCKETS:
                for sock in self._sockets(b.ref):
                    self.sockets[sock.id] = sock
        self._call_blocks = [b for b in self.blocks if b.ref.type == BlockType.CALLS]
        self._call_k0 = [b.entry.get("k0", 0) for b in self._call_blocks]

    @property
    def format_version(self) -> str:
        return f"{self.file.header.major}.{self.file.header.minor}"

    def _check_rows(self, n: Any, ref: BlockRef, kind: str) -> None:
        if not isinstance(n, int) or not 0 <= n <= MAX_BLOCK_ROWS:
            raise InputError(
                self.path, f"{kind} block row count {n!r} outside [0, {MAX_BLOCK_ROWS}]", ref.offset
            )

    def _sockets(self, ref: BlockRef) -> list[Socket]:
        records = self._map_body(ref).get("sockets", [])
        try:
            return [_socket_from_wire(rec) for rec in records]
        except (TypeError, ValueError) as exc:
            raise InputError(self.path, f"bad socket record: {exc}", ref.offset) from None

    def _calls(self, ref: BlockRef) -> CallTable:
        body = self._map_body(ref)
        n = body.get("n")
        self._check_rows(n, ref, "calls")
        cols = colcodec.decode_columns(
            CALL_COLUMNS, body.get("cols"), n, path=self.path, offset=ref.offset
        )
        blob = body.get("ctl", b"")
        try:
            return CallTable(cols, blob if isinstance(blob, bytes) else b"")
        except ValueError as exc:
            raise InputError(self.path, f"bad calls block: {exc}", ref.offset) from None

    def _segments(self, ref: BlockRef) -> SegmentTable:
        body = self._map_body(ref)
        n = body.get("n")
        self._check_rows(n, ref, "segments")
        cols = colcodec.decode_columns(
            SEGMENT_COLUMNS, body.get("cols"), n, path=self.path, offset=ref.offset
        )
        return SegmentTable(cols)

    def _stream_body(self, ref: BlockRef) -> dict[str, Any]:
        body = self._map_body(ref)
        ok = all(isinstance(body.get(k), int) and body[k] >= 0 for k in ("s", "d", "o"))
        if ok and "b" in body:
            ok = isinstance(body["b"], bytes)
        elif ok:
            ok = isinstance(body.get("n"), int) and body["n"] >= 0
            if ok and "h" in body:
                h = body["h"]
                ok = (
                    isinstance(h, list)
                    and all(
                        isinstance(p, list)
                        and len(p) == 2
                        and isinstance(p[0], int)
                        and p[0] >= 0
                        and isinstance(p[1], bytes)
                        for p in h
                    )
                    and sum(p[0] for p in h) == body["n"]
                )
        if not ok or body.get("d") not in (0, 1, 2):
            raise InputError(self.path, "malformed stream chunk", ref.offset)
        return body

    def _events(self, ref: BlockRef) -> list[Event]:
        records = self._map_body(ref).get("events", [])
        try:
            events = [Event(r["t"], r["k"], r.get("s"), r.get("a") or {}) for r in records]
            if all(_is_event(e) for e in events):
                return events
            raise ValueError
        except (TypeError, KeyError, ValueError, AttributeError):
            raise InputError(self.path, "malformed event record", ref.offset) from None

    def call_blocks(self, socket: int | None = None) -> Iterator[CallTable]:
        for b in self._call_blocks:
            if socket is None or socket in b.entry.get("s", ()):
                table = self._calls(b.ref)
                yield table if socket is None else table.take(table.column("socket") == socket)

    def calls(self, socket: int | None = None) -> CallTable:
        return CallTable.concat(self.call_blocks(socket))

    def call_column(self, name: str) -> np.ndarray:
        """One call field for every call, as a numpy array."""
        return np.concatenate(
            [t.column(name) for t in self.call_blocks()]
            or [np.empty(0, dict(CallTable.SCHEMA)[name])]
        )

    def call(self, seq: int) -> Any:
        """The call with sequence number ``seq`` (calls are stored in sequence order)."""
        i = bisect.bisect_right(self._call_k0, seq) - 1
        for b in self._call_blocks[max(i, 0) : i + 2]:
            if b.entry.get("k0", 0) <= seq <= b.entry.get("k1", -1):
                table = self._calls(b.ref)
                hits = np.flatnonzero(table.column("seq") == seq)
                if len(hits):
                    return table[int(hits[0])]
        raise KeyError(seq)

    def calls_between(self, t0: int, t1: int) -> CallTable:
        """Calls issued in [t0, t1) ns, reading only the blocks that can hold them."""
        parts = []
        for b in self._call_blocks:
            if b.entry.get("t1", 0) >= t0 and b.entry.get("t0", 0) < t1:
                table = self._calls(b.ref)
                issue = table.column("issue_ns")
                parts.append(table.take((issue >= t0) & (issue < t1)))
        return CallTable.concat(parts)

    def segment_blocks(self, socket: int | None = None) -> Iterator[SegmentTable]:
        for b in self.blocks:
            if b.ref.type == BlockType.SEGMENTS and (
                socket is None or socket in b.entry.get("s", ())
            ):
                table = self._segments(b.ref)
                yield table if socket is None else table.take(table.column("socket") == socket)

    def segments(self, socket: int | None = None) -> SegmentTable:
        return SegmentTable.concat(self.segment_blocks(socket))

    def events(self) -> list[Event]:
        out: list[Event] = []
        for b in self.blocks:
            if b.ref.type == BlockType.EVENTS:
                out.extend(self._events(b.ref))
        return out

    def stream_keys(self) -> list[tuple[int, Direction]]:
        keys = {
            (b.entry["s"][0], Direction(b.entry["sd"]))
            for b in self.blocks
            if b.ref.type == BlockType.STREAM
        }
        return sorted(keys)

    def stream_lengths(self) -> dict[tuple[int, Direction], int]:
        """Each stream's length from the index alone (no stream bytes are read)."""
        out: dict[tuple[int, Direction], int] = {}
        for b in self.blocks:
            if b.ref.type == BlockType.STREAM:
                key = (b.entry["s"][0], Direction(b.entry["sd"]))
                out[key] = max(out.get(key, 0), b.entry["so"] + b.entry["sn"])
        return out

    def payload_bytes(self) -> int:
        """Stream bytes physically stored in the file (0 when redacted)."""
        return sum(
            b.entry["sn"]
            for b in self.blocks
            if b.ref.type == BlockType.STREAM and b.entry.get("k") == "data"
        )

    def stream(self, socket: int, direction: Direction) -> Stream:
        """One stream, assembled a chunk at a time: in memory up to SPILL_BYTES, else in an
        unnamed temporary file that is mapped (its pages and the trace's are released as it
        is written, so reading a long stream does not hold it in memory)."""
        blocks = [
            b
            for b in self.blocks
            if b.ref.type == BlockType.STREAM
            and b.entry["s"][0] == socket
            and b.entry["sd"] == int(direction)
        ]
        return _assemble_stream(self, socket, Direction(direction), blocks)

    def read(self) -> Trace:
        """The whole trace in memory."""
        return Trace(
            metadata=dict(self.metadata),
            clock=self.clock,
            sockets=dict(self.sockets),
            calls=self.calls(),
            streams={key: self.stream(*key) for key in self.stream_keys()},
            segments=self.segments(),
            events=self.events(),
        )


def _assemble_stream(
    reader: TraceReader, socket: int, direction: Direction, blocks: list[BlockInfo]
) -> Stream:
    """One stream from its chunks; gaps are what no data or digest chunk covers. Spans
    come from the index entries, and each chunk's body must agree with its entry."""
    blocks = sorted(blocks, key=lambda b: b.entry["so"])
    spans = [(b.entry["so"], b.entry["so"] + b.entry["sn"]) for b in blocks]
    length = max((end for _, end in spans), default=0)
    covered = sorted(span for b, span in zip(blocks, spans, strict=True) if b.entry["k"] != "gap")
    gaps: list[tuple[int, int]] = []
    pos = 0
    for start, end in covered:
        if start > pos:
            gaps.append((pos, start))
        pos = max(pos, end)
    if pos < length:
        gaps.append((pos, length))
    has_digests = reader.redacted or any(b.entry["k"] == "digest" for b in blocks)
    missing = sum(end - start for start, end in gaps)
    if not has_digests and missing > MAX_GAP_BYTES:
        raise InputError(
            reader.path,
            f"stream {socket}/{direction.name}: {missing} bytes of gaps, more than the "
            f"{MAX_GAP_BYTES} that can be held in memory",
        )
    sink = None if has_digests else StreamSink(length)
    digests: list[DigestPiece] | None = [] if has_digests else None
    for b in blocks:
        if b.entry["k"] == "gap":
            continue
        c = reader._stream_body(b.ref)
        size = len(c["b"]) if "b" in c else c["n"]
        if c["o"] != b.entry["so"] or size != b.entry["sn"]:
            raise InputError(
                reader.path, "stream chunk disagrees with its index entry", b.ref.offset
            )
        if "b" in c and sink is not None:
            if sink.write(c["o"], c["b"]):
                reader.file.release_pages()
        elif "h" in c and digests is not None:
            at = c["o"]
            for n, digest in c["h"]:
                digests.append(DigestPiece(at, n, digest))
                at += n
    data = sink.finish() if sink is not None else None
    reader.file.release_pages()
    return Stream(socket, direction, length, data, gaps, digests)


def read_trace(path: str | os.PathLike[str]) -> Trace:
    with TraceReader(path) as reader:
        return reader.read()


@dataclass
class VerifyReport:
    path: str
    format_version: str
    size: int
    intact: bool
    blocks: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    segments: int = 0
    sockets: int = 0
    first_issue_ns: int | None = None
    last_issue_ns: int | None = None
    damages: list[Damage] = field(default_factory=list)
    index: str = "missing"

    @property
    def readable(self) -> bool:
        return sum(self.blocks.values()) > 0


def _index_state(reader: TraceReader) -> str:
    """``valid`` when the footer index describes exactly the blocks a scan finds."""
    if reader.file.trailer_index_offset() is None:
        return "missing"
    try:
        indexed = reader._from_index()
    except InputError:
        return "damaged"
    if indexed is None:
        return "damaged"

    def described(blocks: list[BlockInfo]) -> list[Any]:
        known = BlockType._value2member_map_
        return [
            (
                b.ref.offset,
                b.ref.type,
                {k: v for k, v in b.entry.items() if k not in ("o", "t")}
                if b.ref.type in known
                else None,
            )
            for b in blocks
        ]

    return "valid" if described(indexed) == described(reader.blocks) else "damaged"


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Read every block of a trace and say what is intact and what is damaged.

    Raises :class:`InputError` when the file is not a .wskt trace at all.
    """
    with TraceReader(path, mode="scan") as reader:
        index_state = _index_state(reader)
        report = VerifyReport(
            reader.path,
            reader.format_version,
            reader.file.size,
            intact=False,
            damages=list(reader.damages),
            index=index_state,
        )
        for b in reader.blocks:
            report.blocks[
                BlockType(b.ref.type).name
                if b.ref.type in BlockType._value2member_map_
                else f"type{b.ref.type}"
            ] += 1
            if b.ref.type == BlockType.CALLS and b.entry["n"]:
                report.calls += b.entry["n"]
                t0, t1 = b.entry["t0"], b.entry["t1"]
                report.first_issue_ns = (
                    t0 if report.first_issue_ns is None else min(report.first_issue_ns, t0)
                )
                report.last_issue_ns = (
                    t1 if report.last_issue_ns is None else max(report.last_issue_ns, t1)
                )
            elif b.ref.type == BlockType.SEGMENTS:
                report.segments += b.entry["n"]
        report.sockets = len(reader.sockets)
        report.intact = index_state == "valid" and not report.damages and report.blocks["META"] == 1
        return report


def recover(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> VerifyReport:
    """Write to ``out`` a valid trace holding every intact block of ``path``."""
    report = verify(path)
    if not report.readable:
        raise InputError(os.fspath(path), "nothing recoverable: no intact block")
    with TraceReader(path, mode="scan") as reader:
        metadata = dict(reader.metadata)
        metadata["recovered"] = {
            "from": os.path.basename(os.fspath(path)),
            "damages": [[d.offset, d.length, d.what] for d in reader.damages],
            "meta_block_lost": not any(b.ref.type == BlockType.META for b in reader.blocks),
        }
        try:
            f = open(out, "wb")
        except OSError as exc:
            raise OutputError(os.fspath(out), f"cannot create: {exc.strerror or exc}") from None
        with f:
            writer = BlockWriter(f, zstd_level=3, path=os.fspath(out))
            meta = {
                "metadata": metadata,
                "clock": {
                    "zero_utc_ns": reader.clock.zero_utc_ns,
                    "type": reader.clock.clock_type,
                    "qpc_frequency": reader.clock.qpc_frequency,
                },
                "redacted": reader.redacted,
                "tool": f"wskreplay {__version__}",
            }
            writer.write(BlockType.META, pack_body(meta), {})
            for b in reader.blocks:
                if b.ref.type in (BlockType.META, BlockType.INDEX):
                    continue
                head, stored = reader.file.raw_block(b.ref)
                writer.write_raw(head, stored, b.ref.type, b.entry)
            writer.finish()
    return report


__all__ = [
    "FORMAT_MAJOR",
    "TraceReader",
    "TraceWriter",
    "VerifyReport",
    "read_trace",
    "recover",
    "verify",
    "write_trace",
]
