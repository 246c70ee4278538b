"""Reading traces: :class:`TraceReader` gives random access through the footer index,
:func:`read_trace` the whole :class:`~wskreplay.trace.model.Trace`."""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import columns as colcodec
from wskreplay.formats.wskt import (
    CALL_COLUMNS,
    FAULT_AROUND_BYTES,
    MAX_BLOCK_ROWS,
    MAX_GAP_BYTES,
    SEGMENT_COLUMNS,
    BlockRef,
    BlockType,
    Damage,
    WsktFile,
)
from wskreplay.trace.blocks import (
    FILE_HEADER_SIZE,
    calls_entry,
    entry_ok,
    events_entry,
    is_event,
    segments_entry,
    socket_from_wire,
    stream_entry,
)
from wskreplay.trace.inplace import StreamInFile
from wskreplay.trace.model import (
    CallTable,
    Clock,
    DigestPiece,
    Direction,
    Event,
    SegmentTable,
    Socket,
    Stream,
    Trace,
)
from wskreplay.trace.spill import StreamSink
from wskreplay.trace.tables import DeferredColumns


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
            if not entry_ok(entry) or not FILE_HEADER_SIZE <= entry["o"] < offset:
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
            return calls_entry(self._calls(ref))
        if ref.type == BlockType.SEGMENTS:
            return segments_entry(self._segments(ref))
        if ref.type == BlockType.STREAM:
            return stream_entry(self._stream_body(ref))
        if ref.type == BlockType.EVENTS:
            return events_entry(self._events(ref))
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
        self._blocks_at = {b.ref.offset: b for b in self.blocks}
        self._last_chunk: tuple[int, bytes] | None = None
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
            return [socket_from_wire(rec) for rec in records]
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
            if all(is_event(e) for e in events):
                return events
            raise ValueError
        except (TypeError, KeyError, ValueError, AttributeError):
            raise InputError(self.path, "malformed event record", ref.offset) from None

    def call_blocks(self, socket: int | None = None) -> Iterator[CallTable]:
        for b in self._call_blocks:
            if socket is None or socket in b.entry.get("s", ()):
                table = self._calls(b.ref)
                yield table if socket is None else table.take(table.column("socket") == socket)

    def calls(self, socket: int | None = None, *, defer: Iterable[str] = ()) -> CallTable:
        """The calls (of one socket); the ``defer`` columns are decoded when first read."""
        if socket is not None:
            return CallTable.concat(self.call_blocks(socket))
        table = self._table(BlockType.CALLS, frozenset(defer))
        assert isinstance(table, CallTable)
        return table

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

    def segments(self, socket: int | None = None, *, defer: Iterable[str] = ()) -> SegmentTable:
        """The segments (of one socket); the ``defer`` columns are decoded when first read."""
        if socket is not None:
            return SegmentTable.concat(self.segment_blocks(socket))
        table = self._table(BlockType.SEGMENTS, frozenset(defer))
        assert isinstance(table, SegmentTable)
        return table

    def _table(self, kind: BlockType, defer: frozenset[str]) -> CallTable | SegmentTable:
        """Every block of a kind as one table, each block's columns copied into place as it
        is decoded (the blocks are never all held at once). Deferred columns are left out
        and decoded from the blocks again, together, when first read."""
        cls: type[CallTable] | type[SegmentTable] = (
            CallTable if kind == BlockType.CALLS else SegmentTable
        )
        blocks = [b for b in self.blocks if b.ref.type == kind]
        rows = sum(b.entry.get("n", 0) for b in blocks)
        wanted = [name for name, _ in cls.SCHEMA if name not in defer]
        blobs: list[bytes] = []
        cols = self._columns(cls, blocks, rows, wanted, blobs)
        columns: Mapping[str, np.ndarray] = cols
        if defer:
            load = partial(self._columns, cls, blocks, rows)
            columns = DeferredColumns(cols, defer, load, rows, dict(cls.SCHEMA))
        if cls is CallTable:
            return CallTable(columns, b"".join(blobs))
        return SegmentTable(columns)

    def _columns(
        self,
        cls: type[CallTable] | type[SegmentTable],
        blocks: list[BlockInfo],
        rows: int,
        names: list[str],
        blobs: list[bytes] | None = None,
    ) -> dict[str, np.ndarray]:
        """The named columns of every block, copied into place block by block (and each
        calls block's control blob appended to ``blobs``)."""
        dtypes = dict(cls.SCHEMA)
        cols = {name: np.empty(rows, dtypes[name]) for name in names}
        at = 0
        for b in blocks:
            part = self._calls(b.ref) if cls is CallTable else self._segments(b.ref)
            n = len(part)
            if at + n > rows:
                raise InputError(self.path, f"more rows than the index's {rows}", b.ref.offset)
            for name, arr in cols.items():
                arr[at : at + n] = part.column(name)
            if blobs is not None and isinstance(part, CallTable):
                blobs.append(part.control_blob)
            at += n
        if at != rows:
            raise InputError(self.path, f"the blocks hold {at} rows, the index says {rows}")
        self.file.release_pages()
        return cols

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

    def stream(self, socket: int, direction: Direction, *, in_place: bool = False) -> Stream:
        """One stream, assembled a chunk at a time: in memory up to SPILL_BYTES, else in an
        unnamed temporary file that is mapped (its pages and the trace's are released as it
        is written, so reading a long stream does not hold it in memory). With
        ``in_place``, its bytes stay in this file (:class:`StreamInFile`, read while the
        reader stays open; a stream whose chunks overlap is assembled all the same)."""
        blocks = [
            b
            for b in self.blocks
            if b.ref.type == BlockType.STREAM
            and b.entry["s"][0] == socket
            and b.entry["sd"] == int(direction)
        ]
        return _assemble_stream(self, socket, Direction(direction), blocks, in_place=in_place)

    def _chunk_body(self, info: BlockInfo) -> dict[str, Any]:
        """A stream chunk's body, which must agree with its index entry (offset, size,
        kind: data, digests or gap)."""
        c = self._stream_body(info.ref)
        found = (c["o"], len(c["b"]) if "b" in c else c["n"], stream_entry(c)["k"])
        if found != (info.entry["so"], info.entry["sn"], info.entry["k"]):
            raise InputError(
                self.path, "stream chunk disagrees with its index entry", info.ref.offset
            )
        return c

    def stream_chunk(self, offset: int) -> bytes:
        """The bytes of the data chunk whose block is at ``offset``, checked against its
        index entry; the last one asked for is kept."""
        if self._last_chunk is not None and self._last_chunk[0] == offset:
            return self._last_chunk[1]
        info = self._blocks_at[offset]
        data = self._chunk_body(info)["b"]
        start = max(info.ref.offset - FAULT_AROUND_BYTES, 0)
        self.file.release_range(start, info.ref.end + FAULT_AROUND_BYTES - start)
        self._last_chunk = (offset, data)
        return data

    def read(self, *, streams: str = "memory", defer: Iterable[str] = ()) -> Trace:
        """The whole trace. ``streams="in-place"`` leaves stream bytes in the file
        (:meth:`stream`); ``defer`` names call and segment columns decoded when first read.
        Both read from the file later: the reader must stay open while the trace is used."""
        if streams not in ("memory", "in-place"):
            raise ValueError(f"unknown streams mode {streams!r}")
        defer = frozenset(defer)
        unknown = defer - {name for name, _ in (*CallTable.SCHEMA, *SegmentTable.SCHEMA)}
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}")
        in_place = streams == "in-place"
        return Trace(
            metadata=dict(self.metadata),
            clock=self.clock,
            sockets=dict(self.sockets),
            calls=self.calls(defer=defer & {name for name, _ in CallTable.SCHEMA}),
            streams={key: self.stream(*key, in_place=in_place) for key in self.stream_keys()},
            segments=self.segments(defer=defer & {name for name, _ in SegmentTable.SCHEMA}),
            events=self.events(),
        )


def _assemble_stream(
    reader: TraceReader,
    socket: int,
    direction: Direction,
    blocks: list[BlockInfo],
    *,
    in_place: bool = False,
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
    if in_place and not has_digests:
        chunks = [
            (b.entry["so"], b.entry["sn"], b.ref.offset) for b in blocks if b.entry["k"] != "gap"
        ]
        if all(x[0] + x[1] <= y[0] for x, y in itertools.pairwise(chunks)):
            data = StreamInFile(length, chunks, reader.stream_chunk)
            return Stream(socket, direction, length, data, gaps)
    sink = None if has_digests else StreamSink(length)
    digests: list[DigestPiece] | None = [] if has_digests else None
    for b in blocks:
        if b.entry["k"] == "gap":
            continue
        c = reader._chunk_body(b)
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


def read_trace(
    path: str | os.PathLike[str], *, streams: str = "memory", defer: Iterable[str] = ()
) -> Trace:
    """The whole trace. ``streams="in-place"`` leaves stream bytes in the file
    (:class:`~wskreplay.trace.inplace.StreamInFile`), ``defer`` the named columns (decoded
    on first read); with either, the file stays open while the trace is used, and a damaged
    chunk is reported when it is read."""
    defer = tuple(defer)
    if streams == "in-place" or defer:
        reader = TraceReader(path)
        try:
            return reader.read(streams=streams, defer=defer)
        except BaseException:
            reader.close()
            raise
    with TraceReader(path) as reader:
        return reader.read(streams=streams)
