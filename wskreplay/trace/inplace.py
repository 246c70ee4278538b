"""Stream bytes left where the trace file holds them.

``read_trace(path, streams="in-place")`` gives each stream a :class:`StreamInFile`
instead of its assembled bytes: the stream's chunks stay in the (mapped) trace file, and a
read decodes the chunks it covers, one cached at a time per file. A diff of two 400 MB
traces then compares their streams chunk by chunk in a few MiB of memory, and spends no
time assembling bytes it reads once. Slices, ``len`` and :func:`window` work on it as on
the assembled ``bytearray``; bytes no chunk holds (gaps) read as zeros, as there.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence

ChunkLoader = Callable[[int], "bytes | memoryview"]
"""Returns the bytes of the chunk stored at a file offset, checked against its index entry."""


class StreamInFile:
    """A stream's bytes as chunks of the trace file: ``(stream offset, size, file offset)``,
    sorted by stream offset and not overlapping."""

    def __init__(self, length: int, chunks: Sequence[tuple[int, int, int]], load: ChunkLoader):
        self.length = length
        self.chunks = list(chunks)
        self._starts = [start for start, _, _ in self.chunks]
        self._load = load
        self._loaded: set[int] = set()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice):
            raise TypeError("a stream in the file is read by slices")
        start, stop, step = index.indices(self.length)
        if step != 1:
            raise ValueError("a stream in the file is read by contiguous slices")
        return bytes(self.window(start, stop))

    def window(self, start: int, end: int) -> bytes | memoryview:
        """Bytes ``[start, end)`` (clipped to the stream): a view of the chunk when one
        chunk holds them all, else joined (zeros where no chunk holds them)."""
        start, end = max(start, 0), min(end, self.length)
        if end <= start:
            return b""
        k = max(bisect.bisect_right(self._starts, start) - 1, 0)
        pieces: list[bytes | memoryview] = []
        at = start
        while at < end:
            if k >= len(self.chunks) or self.chunks[k][0] >= end:
                pieces.append(bytes(end - at))
                break
            offset, size, where = self.chunks[k]
            if offset > at:
                pieces.append(bytes(offset - at))
                at = offset
            if offset + size > at:
                stop = min(offset + size, end)
                data = self._chunk(where)
                pieces.append(memoryview(data)[at - offset : stop - offset])
                at = stop
            k += 1
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _chunk(self, where: int) -> bytes | memoryview:
        self._loaded.add(where)
        return self._load(where)

    def __reduce__(self) -> tuple:
        """Copied or pickled as the assembled bytes (the chunks are read from a file)."""
        return (bytearray, (bytes(self.window(0, self.length)),))

    def check_unread(self) -> None:
        """Load every chunk no read has touched, so a damaged one is reported even when
        nothing needed its bytes."""
        for _, _, where in self.chunks:
            if where not in self._loaded:
                self._chunk(where)


def window(data: bytes | bytearray | memoryview | object, start: int, end: int) -> memoryview:
    """Bytes ``[start, end)`` of stream data of any kind (assembled, mapped or in the
    file), without copying where the data allows."""
    if isinstance(data, StreamInFile):
        return memoryview(data.window(start, end))
    return memoryview(data)[start:end]  # type: ignore[call-overload]


def check_unread(streams: Iterable[object]) -> None:
    """:meth:`StreamInFile.check_unread` for each stream held in the file."""
    for stream in streams:
        data = getattr(stream, "data", None)
        if isinstance(data, StreamInFile):
            data.check_unread()
