"""The ``streams`` command's work: a capture's connections summarised (and dumped), in
memory that does not grow with the capture.

A small capture is reassembled whole (:func:`tcp.reassemble`). A large one is decoded
once, its segments spilled to a temporary file part by part while the last part that
holds each connection is noted; the parts are then read back a window at a time, and each
connection is reassembled, hashed and let go in the window that holds its last segment.
A large pcap or pcapng file is also read a slice of the file at a time
(``pcap.FrameSlices``), so that not even its frame columns are held whole. What stays in
memory is a slice, a window, the segments of the connections still open at its end, and
one summary per connection. Each connection is reassembled from the same rows in the same
order as the whole capture's, so the document is the same, connection for connection
(``tests/test_capture_streams.py``).

A connection open across the whole capture (one bulk transfer) still holds all its
segments until the end: the bound is on the segments of the connections open at once.
``.etl`` captures, and pcapng files the fast walk cannot vouch for, have their frame
columns (about 40 bytes a frame) built whole before the windows.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields

import numpy as np

from wskreplay.errors import OutputError
from wskreplay.formats import pcap
from wskreplay.formats.etl_packets import read_capture
from wskreplay.formats.layers.decode import DECODE_CHUNK, DecodeParts, TcpPackets
from wskreplay.formats.layers.report import DecodeReport
from wskreplay.recorder import tcp

WINDOWED_FRAMES = 1 << 18
"""Captures of more frames than this are read a window at a time."""
WINDOW_SEGMENTS = 1 << 16
"""Segments read back at a time, at least: a window also takes as many segments as the
connections still open carry over into it, so that regrouping what they carry costs a
bounded share (a connection open through the whole capture is regrouped O(log n) times,
not once a window). ``streams`` of the 2M-packet capture peaked at 228 MB with windows of
2**16 segments, at 652 MB with windows of 2**20."""

PARTIAL_DUMP = ".wskreplay-partial-"
"""How a connection's dumped files are named until its place in the document is known."""


WINDOWED_FILE_BYTES = 256 << 20
"""pcap and pcapng files larger than this are read a slice of the file at a time
(``pcap.FrameSlices``): not even their frame columns are held whole."""


@dataclass
class CaptureStreams:
    document: dict
    """The ``streams --json`` document."""
    dumped: list[str]
    report: DecodeReport
    frames: pcap.Frames
    """The capture's frames (of a capture read in slices: none, with its error)."""


def streams_of_file(
    path: str,
    options: tcp.CaptureOptions,
    dump_dir: str | None = None,
    *,
    windowed_file_bytes: int = WINDOWED_FILE_BYTES,
    **sizes: int,
) -> CaptureStreams:
    """The capture at ``path`` (pcap, pcapng, ``.etl``): :func:`capture_streams`, or for
    a pcap or pcapng file over ``windowed_file_bytes``, the same a slice of the file at a
    time (a pcapng file that needs the reference walk is then read whole)."""
    slices = None
    if os.path.getsize(path) > windowed_file_bytes:
        slices = pcap.frame_slices(path)
    if slices is not None:
        windows = {k: v for k, v in sizes.items() if k != "windowed_frames"}
        try:
            return _Windowed(slices.whole, options, dump_dir, slices=slices, **windows).run()
        except pcap.NotSliceable:
            pass
    return capture_streams(read_capture(path), options, dump_dir, **sizes)


def capture_streams(
    frames: pcap.Frames,
    options: tcp.CaptureOptions,
    dump_dir: str | None = None,
    *,
    windowed_frames: int = WINDOWED_FRAMES,
    window_segments: int = WINDOW_SEGMENTS,
    decode_chunk: int = DECODE_CHUNK,
) -> CaptureStreams:
    """``frames``' connections summarised, and each direction's bytes written to
    ``dump_dir`` when given (``tcp.dump_streams``' names)."""
    if len(frames) <= windowed_frames:
        result = tcp.reassemble(frames, options)
        document = tcp.streams_summary(result)
        dumped = tcp.dump_streams(result, dump_dir) if dump_dir else []
        return CaptureStreams(document, dumped, result.report, frames)
    return _Windowed(
        frames, options, dump_dir, window_segments=window_segments, decode_chunk=decode_chunk
    ).run()


class _Spill:
    """Segment columns written one part after another to an unnamed temporary file."""

    def __init__(self) -> None:
        try:
            self._file = tempfile.TemporaryFile(prefix="wskreplay-segments-")
        except OSError as exc:
            raise OutputError(
                tempfile.gettempdir(), f"cannot spill decoded segments: {exc.strerror or exc}"
            ) from None
        empty = TcpPackets.empty()
        self.dtypes = {f.name: getattr(empty, f.name).dtype for f in fields(TcpPackets)}
        self.parts: list[tuple[int, int]] = []
        self._end = 0

    def add(self, part: TcpPackets) -> None:
        self.parts.append((self._end, len(part)))
        for name, dtype in self.dtypes.items():
            data = memoryview(np.ascontiguousarray(getattr(part, name), dtype)).cast("B")
            while data:
                try:
                    written = os.pwrite(self._file.fileno(), data, self._end)
                except OSError as exc:
                    raise OutputError(
                        tempfile.gettempdir(),
                        f"cannot spill decoded segments: {exc.strerror or exc}",
                    ) from None
                self._end += written
                data = data[written:]

    def read(self, k: int) -> TcpPackets:
        at, n = self.parts[k]
        columns = {}
        for name, dtype in self.dtypes.items():
            column = np.empty(n, dtype)
            got = os.preadv(self._file.fileno(), [memoryview(column).cast("B")], at)
            if got != column.nbytes:
                raise OutputError(
                    tempfile.gettempdir(),
                    f"spilled segments cut short: {got} of {column.nbytes} bytes at {at}",
                )
            columns[name] = column
            at += got
        return TcpPackets(**columns)

    def close(self) -> None:
        self._file.close()


class _Windowed:
    def __init__(
        self,
        frames: pcap.Frames,
        options: tcp.CaptureOptions,
        dump_dir: str | None,
        *,
        window_segments: int = WINDOW_SEGMENTS,
        decode_chunk: int = DECODE_CHUNK,
        slices: pcap.FrameSlices | None = None,
    ) -> None:
        self.frames, self.options, self.dump_dir = frames, options, dump_dir
        self.slices = slices
        self.window_segments, self.decode_chunk = window_segments, decode_chunk
        self.pages = tcp.PageReleaser(frames)
        self.summaries: list[tuple[tuple[int, int], dict]] = []
        """Each connection's summary, keyed by its place in the document."""
        self.dumped: list[tuple[tuple[int, int], str, list[str]]] = []
        """Each connection's dumped files (its key, their temporary stem, their paths)."""
        self.tcp_packets = 0
        self.by_frame = False
        """Whether the whole decode orders its rows by frame (``decode.decode``)."""

    def run(self) -> CaptureStreams:
        decoding = DecodeParts(
            self.frames, self.options.decode, self.decode_chunk, slices=self.slices
        )
        spill = _Spill()
        try:
            last_part, in_order = self._spill(decoding, spill)
            self.by_frame = decoding.reassembled and not in_order
            self._reassemble(spill, decoding, last_part)
        except BaseException:
            self._remove_partial_dumps()
            raise
        finally:
            spill.close()
        self.frames.release_pages()
        self.summaries.sort(key=lambda item: item[0])
        packets = len(self.frames)
        if self.slices is not None:
            self.frames, packets = self.slices.whole, self.slices.count
        head = tcp.streams_head(self.frames.path, packets, self.tcp_packets, decoding.report)
        document = {**head, "connections": [summary for _, summary in self.summaries]}
        return CaptureStreams(document, self._name_dumps(), decoding.report, self.frames)

    def _spill(
        self, decoding: DecodeParts, spill: _Spill
    ) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
        """Decode into ``spill``; return each connection hash's last part (hashes sorted)
        and whether the frames came in order."""
        hashes: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        in_order, last_frame = True, -1
        for k, part in enumerate(decoding):
            spill.add(part)
            if not len(part):
                continue
            unique = np.unique(tcp.connection_hashes(part))
            hashes.append(unique)
            parts.append(np.full(len(unique), k, np.int64))
            frame = part.frame
            in_order = in_order and frame[0] >= last_frame and not (np.diff(frame) < 0).any()
            last_frame = int(frame[-1])
        self.tcp_packets = sum(n for _, n in spill.parts)
        if not hashes:
            return (np.empty(0, np.uint64), np.empty(0, np.int64)), in_order
        every = np.concatenate(hashes)
        order = np.argsort(every, kind="stable")
        every, at = every[order], np.concatenate(parts)[order]
        starts = np.flatnonzero(np.concatenate(([True], every[1:] != every[:-1])))
        limit = self.options.max_connections
        if len(starts) > limit:
            raise tcp.connection_limit_error(self.frames.path, len(starts), limit)
        return (every[starts], np.maximum.reduceat(at, starts)), in_order

    def _reassemble(
        self,
        spill: _Spill,
        decoding: DecodeParts,
        last_part: tuple[np.ndarray, np.ndarray],
    ) -> None:
        """Read ``spill`` back a window at a time, closing the connections each completes.
        Rows keep the whole decode's order: spilled order, or by frame (stable) where the
        whole decode sorts by frame (``by_frame``)."""
        carried, carried_seq = TcpPackets.empty(), np.empty(0, np.int64)
        window: list[TcpPackets] = []
        filled, seq = 0, 0
        for k in range(len(spill.parts)):
            part = spill.read(k)
            window.append(part)
            filled += len(part)
            if filled < max(self.window_segments, len(carried)) and k < len(spill.parts) - 1:
                continue
            table = TcpPackets.concat([carried, *window])
            rows_seq = np.concatenate([carried_seq, np.arange(seq, seq + filled)])
            seq += filled
            window, filled = [], 0
            if self.by_frame:
                order = np.argsort(table.frame, kind="stable")
                table, rows_seq = table.take(order), rows_seq[order]
            carried, carried_seq = self._close(table, rows_seq, k, last_part, decoding)
            self.frames.release_pages()

    def _close(
        self,
        table: TcpPackets,
        rows_seq: np.ndarray,
        k: int,
        last_part: tuple[np.ndarray, np.ndarray],
        decoding: DecodeParts,
    ) -> tuple[TcpPackets, np.ndarray]:
        """Reassemble the connections of ``table`` whose last part is ``k`` or earlier;
        return the rows of the others."""
        groups = tcp.group_by_connection(table)
        if not groups:
            return table, rows_seq
        firsts = np.array([g[0] for g in groups], np.int64)
        hashes, lasts = last_part
        group_hash = tcp.connection_hashes(table.take(firsts))
        done = lasts[np.searchsorted(hashes, group_hash)] <= k
        closing = [g for g, d in zip(groups, done.tolist(), strict=True) if d]
        open_rows = [g for g, d in zip(groups, done.tolist(), strict=True) if not d]
        emitted = len(self.summaries) + len(closing)
        if emitted > self.options.max_connections:
            raise tcp.connection_limit_error(
                self.frames.path, emitted, self.options.max_connections
            )
        connections = tcp.connections_of(
            table, closing, decoding.buffer, decoding.report.paths.paths, self.pages
        )
        keys = [
            (int(table.frame[g[0]]) if self.by_frame else 0, int(rows_seq[g[0]])) for g in closing
        ]
        for key, summary in zip(
            keys, tcp.summaries(connections, decoding.buffer, self.pages), strict=True
        ):
            self.summaries.append((key, summary))
        if self.dump_dir:
            os.makedirs(self.dump_dir, exist_ok=True)
            for key, c in zip(keys, connections, strict=True):
                stem = f"{PARTIAL_DUMP}{len(self.dumped)}"
                paths = tcp.dump_connection(c, decoding.buffer, self.dump_dir, stem, self.pages)
                self.dumped.append((key, stem, paths))
        if not open_rows:
            return table.take(np.empty(0, np.int64)), rows_seq[:0]
        rows = np.sort(np.concatenate(open_rows))
        return table.take(rows), rows_seq[rows]

    def _remove_partial_dumps(self) -> None:
        if self.dump_dir and os.path.isdir(self.dump_dir):
            for name in os.listdir(self.dump_dir):
                if name.startswith(PARTIAL_DUMP):
                    os.unlink(os.path.join(self.dump_dir, name))

    def _name_dumps(self) -> list[str]:
        """The dumped files renamed by their connection's place in the document."""
        out = []
        self.dumped.sort(key=lambda item: item[0])
        for i, (_, stem, paths) in enumerate(self.dumped):
            for path in paths:
                name = os.path.basename(path)[len(stem) :]
                final = os.path.join(os.path.dirname(path), f"{i:05d}{name}")
                os.replace(path, final)
                out.append(final)
        return out
