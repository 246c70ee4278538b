"""Stream bytes too long to hold in memory: written to an unnamed temporary file (in
TMPDIR) and mapped read-only, so a 10 GB trace can be read and diffed in bounded memory.

A mapped stream is used like a ``bytearray`` (``len``, slices, ``memoryview``); whoever
walks one end to end calls :func:`release` now and then, so the pages it touched leave the
process (they stay in the page cache, and come back from it when read again).
"""

from __future__ import annotations

import mmap
import os
import tempfile

from wskreplay.errors import OutputError
from wskreplay.formats.wskt import RELEASE_BYTES

SPILL_BYTES = 64 << 20
"""Streams longer than this are spilled to a temporary file."""
RELEASE_EVERY = RELEASE_BYTES
"""Bytes a walker reads or writes between two releases of the pages it touched."""

StreamBytes = bytearray | mmap.mmap


class StreamSink:
    """The bytes of one stream of known length, written at their offsets."""

    def __init__(self, length: int, spill_bytes: int = SPILL_BYTES) -> None:
        self.length = length
        self.spilled = length > spill_bytes
        self._since_release = 0
        self._buf: bytearray | None = None
        if self.spilled:
            self._file = tempfile.TemporaryFile(prefix="wskreplay-stream-")
            self._file.truncate(length)
        else:
            self._buf = bytearray(length)

    def write(self, offset: int, data: bytes | memoryview) -> bool:
        """Place ``data`` at ``offset`` (inside the length); True when another RELEASE_EVERY
        bytes have gone by, so the caller may release the pages it read them from."""
        if self._buf is not None:
            self._buf[offset : offset + len(data)] = data
        else:
            try:
                os.pwrite(self._file.fileno(), data, offset)
            except OSError as exc:
                raise OutputError(
                    tempfile.gettempdir(),
                    f"cannot spill a stream of {self.length} bytes: {exc.strerror or exc}",
                ) from None
        self._since_release += len(data)
        if self._since_release >= RELEASE_EVERY:
            self._since_release = 0
            return True
        return False

    def finish(self) -> StreamBytes:
        if self._buf is not None:
            return self._buf
        mm = mmap.mmap(self._file.fileno(), self.length, access=mmap.ACCESS_READ)
        self._file.close()
        return mm


def release(data: object) -> None:
    """Drop a mapped stream's pages from this process's memory (no-op for a bytearray)."""
    if isinstance(data, mmap.mmap):
        data.madvise(mmap.MADV_DONTNEED)
