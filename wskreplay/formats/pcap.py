"""pcap and pcapng: read into column arrays, write pcapng.

The reader walks record headers once with precompiled ``struct.Struct`` objects over a
``memoryview`` of the file (``mmap``; gzip files are inflated into memory first, up to a
limit) and returns a :class:`Frames` table: one row per captured frame with its UTC time in
nanoseconds, interface, link type, and where its bytes are in the buffer. No object is
built per packet. Damage (a record cut short, a length past the end of the file, a
timestamp that cannot be) stops the walk: the frames before it are returned together with
the error, so a caller can report a partial result as partial.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import DTypeLike

from wskreplay.errors import InputError
from wskreplay.formats.reference import accelerator, reference_asked

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
PCAPNG_IDB = 0x00000001
PCAPNG_OPB = 0x00000002
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

DIRECTION_UNKNOWN, DIRECTION_IN, DIRECTION_OUT = 0, 1, 2
MAX_GUNZIP_BYTES = 8 << 30
"""Largest capture a .gz file may inflate to (into a temporary file, not memory; a gzip
bomb stops here with an error)."""
INFLATE_STEP = 1 << 20
MAX_RECORD_BYTES = 1 << 28
"""Largest frame a record may claim (256 MiB); a bigger claim is a corrupt record."""


@dataclass
class Interface:
    linktype: int
    snaplen: int = 0
    tsresol: int = 1_000_000
    """Ticks per second of this interface's timestamps."""
    tsoffset: int = 0
    """Seconds added to every timestamp (pcapng if_tsoffset)."""
    name: str | None = None
    fcslen: int = 0
    """Bytes of frame check sequence at the end of every frame (pcapng if_fcslen)."""


@dataclass
class Frames:
    """Captured frames as columns; frame ``i`` is ``buffer[offset[i] : offset[i] + caplen[i]]``."""

    path: str
    format: str
    buffer: memoryview
    time_ns: np.ndarray
    interface: np.ndarray
    linktype: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    origlen: np.ndarray
    direction: np.ndarray
    interfaces: list[Interface] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    error: InputError | None = None
    """Damage that stopped the walk; the frames before it are all here."""
    notes: dict[str, int] = field(default_factory=dict)
    """Source-specific counts (e.g. PktMon appearances folded, drops) reported alongside."""
    skipped: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    """Packets the source held but could not present as frames: reason -> (link type
    counted under, how many, whether they could have carried TCP we would miss). Reported
    with the frames not decoded, never dropped silently."""
    wrapped_times: int = 0
    """Frames whose timestamp lies outside what int64 nanoseconds hold (years 1677..2262):
    pcapng allows them (unsigned 64-bit ticks); their time is kept modulo 2**64 ns."""
    first: int = 0
    """The index of frame 0 in the whole capture (:class:`FrameSlices` hands on slices)."""

    def __len__(self) -> int:
        return len(self.time_ns)

    def frame(self, i: int) -> memoryview:
        start = int(self.offset[i])
        return self.buffer[start : start + int(self.caplen[i])]

    def slice(self, lo: int, hi: int) -> Frames:
        """Frames ``lo:hi``, sharing this buffer."""
        cols = ("time_ns", "interface", "linktype", "offset", "caplen", "origlen", "direction")
        return replace(self, first=self.first + lo, **{c: getattr(self, c)[lo:hi] for c in cols})

    def release_pages(self) -> None:
        """When the frames are a mapped file: drop its pages from this process's memory
        (they stay in the page cache and come back when read), so reading a large capture
        piece by piece does not grow RSS with the file."""
        _release(getattr(self, "_keep", None))


class _Columns:
    """Growable per-frame columns, filled by the record walk."""

    def __init__(self) -> None:
        self.wrapped_times = 0
        self.ts: list[int] = []
        self.iface: list[int] = []
        self.offset: list[int] = []
        self.caplen: list[int] = []
        self.origlen: list[int] = []
        self.direction: list[int] = []


def _wrapped(cols: _Columns, ns: int) -> int:
    """``ns`` as a signed 64-bit count; a time outside 1677..2262 wraps modulo 2**64 (counted)."""
    if -(1 << 63) <= ns < 1 << 63:
        return ns
    cols.wrapped_times += 1
    return (ns + (1 << 63)) % (1 << 64) - (1 << 63)


def _load(path: str) -> tuple[memoryview, object, str | None]:
    """The file's bytes (inflated if gzip), an object keeping them alive, and whether a
    gzip stream ended early (then the bytes are what it held up to there)."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror}") from None
    with f:
        if f.read(2) == b"\x1f\x8b":
            f.seek(0)
            return _gunzip(f, path)
        if os.fstat(f.fileno()).st_size == 0:
            return memoryview(b""), None, None
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return memoryview(mm), mm, None


def _gunzip(f: BinaryIO, path: str) -> tuple[memoryview, object, str | None]:
    """Inflate every gzip member into an unnamed temporary file (in TMPDIR), at most
    MAX_GUNZIP_BYTES in all, a MiB at a time, and map it: memory stays bounded whatever
    the capture inflates to."""
    out = tempfile.TemporaryFile(prefix="wskreplay-gunzip-")
    total = 0
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    fed = False
    pending = b""
    while True:
        if not pending:
            pending = f.read(INFLATE_STEP)
            if not pending:
                break
        try:
            piece = inflater.decompress(pending, INFLATE_STEP)
        except zlib.error as exc:
            raise InputError(path, f"gzip data is corrupt after {total} bytes: {exc}") from None
        fed = True
        total += len(piece)
        if total > MAX_GUNZIP_BYTES:
            raise InputError(path, f"gzip inflates to more than {MAX_GUNZIP_BYTES} bytes")
        out.write(piece)
        pending = inflater.unconsumed_tail
        if inflater.eof:
            pending = inflater.unused_data + pending
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            fed = False
    if fed:
        rest = inflater.flush()
        total += len(rest)
        if total > MAX_GUNZIP_BYTES:
            raise InputError(path, f"gzip inflates to more than {MAX_GUNZIP_BYTES} bytes")
        out.write(rest)
    cut = (
        f"gzip stream cut short after {total} inflated bytes" if fed and not inflater.eof else None
    )
    out.flush()
    if not total:
        return memoryview(b""), None, cut
    mm = mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ)
    out.close()
    return memoryview(mm), mm, cut


def read_frames(path: str | os.PathLike[str]) -> Frames:
    """Every frame of a pcap or pcapng file (optionally gzip-compressed)."""
    path = os.fspath(path)
    buf, keep, gzip_cut = _load(path)
    if len(buf) < 4:
        raise InputError(path, f"not a capture: {len(buf)} bytes, too short for a header", 0)
    (magic_le,) = struct.unpack_from("<I", buf, 0)
    (magic_be,) = struct.unpack_from(">I", buf, 0)
    cols = _Columns()
    interfaces: list[Interface] = []
    comments: list[str] = []
    error: InputError | None = None
    if magic_le == PCAPNG_SHB:
        fmt = "pcapng"
        try:
            _walk_pcapng(path, buf, cols, interfaces, comments, lambda: _release(keep))
        except InputError as exc:
            error = exc
    elif magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        fmt = "pcap"
        try:
            _walk_pcap(path, buf, cols, interfaces, lambda: _release(keep))
        except InputError as exc:
            error = exc
    else:
        raise InputError(path, f"not a pcap or pcapng file (magic 0x{magic_le:08X})", 0)
    if error is None and gzip_cut:
        error = InputError(path, gzip_cut, len(buf))
    linktypes = np.array([i.linktype for i in interfaces] or [0], dtype=np.int32)
    if fmt == "pcap":
        iface = np.zeros(len(cols.ts), dtype=np.int32)
        cols.direction = np.zeros(len(cols.ts), dtype=np.uint8)
    else:
        iface = np.asarray(cols.iface, dtype=np.int32)
    frames = Frames(
        path=path,
        format=fmt,
        buffer=buf,
        time_ns=np.asarray(cols.ts, dtype=np.int64),
        interface=iface,
        linktype=linktypes[iface] if len(iface) else np.empty(0, np.int32),
        offset=np.asarray(cols.offset, dtype=np.int64),
        caplen=np.asarray(cols.caplen, dtype=np.int64),
        origlen=np.asarray(cols.origlen, dtype=np.int64),
        direction=np.asarray(cols.direction, dtype=np.uint8),
        interfaces=interfaces,
        comments=comments,
        error=error,
        wrapped_times=cols.wrapped_times,
    )
    frames._keep = keep  # type: ignore[attr-defined]
    _release(keep)
    return frames


RELEASE_RECORDS = 1 << 16
RELEASE_SPAN = 64 << 20
"""The walks release the capture's mapped pages every RELEASE_RECORDS records or every
RELEASE_SPAN bytes of file they move through, whichever comes first."""


def _release(keep: object) -> None:
    if isinstance(keep, mmap.mmap):
        keep.madvise(mmap.MADV_DONTNEED)


def _walk_pcap(
    path: str,
    buf: memoryview,
    cols: _Columns,
    interfaces: list[Interface],
    release: Callable[[], None],
) -> None:
    columns = GrowingColumns((np.int64,) * 4)
    try:
        for values, expected in pcap_slices(path, buf, interfaces, release):
            columns.add(values, expected)
    finally:
        cols.ts, cols.offset, cols.caplen, cols.origlen = columns.finish()


def pcap_slices(
    path: str, buf: memoryview, interfaces: list[Interface], release: Callable[[], None]
) -> Iterator[tuple[tuple[np.ndarray, ...], int]]:
    """A pcap file's frames a slice of the file at a time: each slice's time (ns), frame
    offset, captured and original length, and how many frames the file is expected to
    hold in all. Damage raises InputError after the frames before it."""
    if len(buf) < 24:
        raise InputError(path, f"pcap file header cut short: {len(buf)} of 24 bytes", 0)
    (magic,) = struct.unpack_from("<I", buf, 0)
    endian = "<" if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
    (magic,) = struct.unpack_from(endian + "I", buf, 0)
    nano = magic == PCAP_MAGIC_NS
    major, minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(endian + "HHiIII", buf, 4)
    if major != 2:
        raise InputError(path, f"unsupported pcap version {major}.{minor}", 4)
    interfaces.append(Interface(network & 0x0FFFFFFF, snaplen, 10**9 if nano else 10**6))
    frac_limit = 10**9 if nano else 10**6
    native = walk_accelerator()
    if native is None:
        slices: Iterator[tuple[np.ndarray, ...]] = iter([_gather_records(buf, endian, release)])
    else:
        slices = _native_records(native, buf, endian == ">", release)
    so_far, first_bad, at = 0, 0, np.empty(0, np.int64)
    for at, sec, frac, incl, orig, whole in slices:
        bad = (
            ~whole | (incl > MAX_RECORD_BYTES) | (at + 16 + incl > len(buf)) | (frac >= frac_limit)
        )
        first_bad = int(np.argmax(bad)) if bad.any() else len(at)
        keep = slice(0, first_bad)
        reached = int(at[-1]) + 16 + int(incl[-1]) if len(at) else len(buf)
        so_far += first_bad
        values = (
            sec[keep] * 1_000_000_000 + frac[keep] * (1 if nano else 1000),
            at[keep] + 16,
            incl[keep],
            orig[keep],
        )
        yield values, so_far * (len(buf) - 24) // max(1, reached - 24)
        if first_bad < len(at):
            break
    if first_bad < len(at):
        pos = int(at[first_bad])
        if not whole[first_bad]:
            what = f"record header cut short: {len(buf) - pos} of 16 bytes"
        elif incl[first_bad] > MAX_RECORD_BYTES:
            what = f"record claims a {incl[first_bad]}-byte frame (limit {MAX_RECORD_BYTES})"
        elif frac[first_bad] >= frac_limit:
            what = (
                f"timestamp fraction {frac[first_bad]} is not below {frac_limit} "
                f"({'ns' if nano else 'us'} resolution)"
            )
        else:
            what = (
                f"record cut short: frame of {incl[first_bad]} bytes, {len(buf) - pos - 16} present"
            )
        raise InputError(path, what, pos)


class NotSliceable(Exception):
    """The file holds what only the reference pcapng walk reads: read it whole."""


class FrameSlices:
    """A capture's frames as :class:`Frames` of a slice of the file each (``first``: the
    index of a slice's first frame in the file), so that a reader that takes them in turn
    never holds the whole file's frame columns (about 40 bytes a frame). After the last
    slice, ``count``, ``error`` (damage that stopped the walk) and ``whole`` (the
    :class:`Frames` of no frame, with the file's path, buffer and interfaces) say the rest.

    A pcapng file is walked by the fast walk (``pcapng_fast.packet_runs``); at a block
    only the reference reads, iterating raises NotSliceable."""

    def __init__(
        self, path: str, fmt: str, buf: memoryview, keep: object, gzip_cut: str | None
    ) -> None:
        self.path, self.format, self.buffer = path, fmt, buf
        self._keep, self._gzip_cut = keep, gzip_cut
        self.interfaces: list[Interface] = []
        self.comments: list[str] = []
        self.count = 0
        self.error: InputError | None = None

    def __iter__(self) -> Iterator[Frames]:
        for frames in self._pcap() if self.format == "pcap" else self._pcapng():
            frames.first = self.count
            self.count += len(frames)
            yield frames
        if self.error is None and self._gzip_cut:
            self.error = InputError(self.path, self._gzip_cut, len(self.buffer))

    def _release(self) -> None:
        _release(self._keep)

    def _pcap(self) -> Iterator[Frames]:
        try:
            for (ts, offset, caplen, origlen), _ in pcap_slices(
                self.path, self.buffer, self.interfaces, self._release
            ):
                n = len(ts)
                yield self._frames(
                    ts, np.zeros(n, np.int32), offset, caplen, origlen, np.zeros(n, np.uint8)
                )
        except InputError as exc:
            self.error = exc

    def _pcapng(self) -> Iterator[Frames]:
        from wskreplay.formats.pcapng_fast import NeedsReference, packet_runs

        if len(self.buffer) < 28:
            raise NotSliceable(self.path)
        runs = packet_runs(
            self.path,
            self.buffer,
            walk_accelerator(),
            self._release,
            self.interfaces,
            self.comments,
        )
        try:
            for columns, _ in runs:
                yield self._frames(*columns)
        except NeedsReference:
            raise NotSliceable(self.path) from None

    def _frames(
        self,
        ts: np.ndarray,
        iface: np.ndarray,
        offset: np.ndarray,
        caplen: np.ndarray,
        origlen: np.ndarray,
        direction: np.ndarray,
    ) -> Frames:
        linktypes = np.array([i.linktype for i in self.interfaces] or [0], dtype=np.int32)
        iface = iface.astype(np.int32, copy=False)
        frames = Frames(
            path=self.path,
            format=self.format,
            buffer=self.buffer,
            time_ns=ts,
            interface=iface,
            linktype=linktypes[iface],
            offset=offset,
            caplen=caplen,
            origlen=origlen,
            direction=direction.astype(np.uint8, copy=False),
            interfaces=self.interfaces,
            comments=self.comments,
            error=self.error,
        )
        frames._keep = self._keep  # type: ignore[attr-defined]
        return frames

    @property
    def whole(self) -> Frames:
        empty = np.empty(0, np.int64)
        return self._frames(empty, empty, empty, empty, empty, empty)


def frame_slices(path: str | os.PathLike[str]) -> FrameSlices | None:
    """A pcap or pcapng file's :class:`FrameSlices`; None for any other file."""
    path = os.fspath(path)
    buf, keep, gzip_cut = _load(path)
    if len(buf) < 24:
        return None
    (magic_le,) = struct.unpack_from("<I", buf, 0)
    (magic_be,) = struct.unpack_from(">I", buf, 0)
    if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        return FrameSlices(path, "pcap", buf, keep, gzip_cut)
    if magic_le == PCAPNG_SHB:
        return FrameSlices(path, "pcapng", buf, keep, gzip_cut)
    return None


WALK_SLICE_BYTES = 64 << 20
"""The compiled walks (pcap records, pcapng EPB runs) list this much file at a time:
listing a whole file at once held about 100 bytes a frame at the peak (a 10 GB capture:
1 GB), where a slice's list is a few MB."""


def _native_records(
    native: Any, buf: memoryview, big_endian: bool, release: Callable[[], None]
) -> Iterator[tuple[np.ndarray, ...]]:
    """``_walk.pcap_records`` a slice of the file at a time, as ``_gather_records`` gives
    them: a slice ends before the first record that does not lie wholly inside it (which
    starts the next), the last slice at the end of the file."""
    pos = 24
    while pos < len(buf):
        end = min(len(buf), pos + max(WALK_SLICE_BYTES, 16))
        raw = native.pcap_records(buf[:end], pos, big_endian, release)
        at, sec, frac, incl, orig = np.frombuffer(raw, np.int64).reshape(-1, 5).T
        if end < len(buf):
            outside = np.flatnonzero((at + 16 > end) | (at + 16 + incl > end))
            if len(outside) and outside[0] > 0:
                n = int(outside[0])
                at, sec, frac, incl, orig = at[:n], sec[:n], frac[:n], incl[:n], orig[:n]
        whole = at + 16 <= len(buf)
        yield at, sec, frac, incl, orig, whole
        if not len(at):
            return
        pos = int(at[-1]) + 16 + int(incl[-1])
        if pos < len(buf):
            release()  # (the C walk counts 64 MiB from where each slice starts)


class GrowingColumns:
    """Columns filled a part at a time, grown in place (``ndarray.resize``: realloc,
    which moves a large block's pages instead of copying them) to what the caller expects
    in all: the peak is the columns, where joining the parts at the end held the parts and
    the columns at once (about 60 bytes a frame more on a 10 GB capture)."""

    def __init__(self, dtypes: Sequence[DTypeLike]) -> None:
        self.n = 0
        self.columns = [np.empty(0, dtype) for dtype in dtypes]

    def add(self, values: tuple[np.ndarray, ...], expected: int) -> None:
        """Append ``values`` (one array a column); ``expected`` rows are expected in all."""
        end = self.n + len(values[0])
        if end > len(self.columns[0]):
            capacity = max(end, expected + expected // 64, len(self.columns[0]) * 5 // 4)
            for column in self.columns:
                column.resize(capacity, refcheck=False)
        for column, value in zip(self.columns, values, strict=True):
            column[self.n : end] = value
        self.n = end

    def finish(self) -> list[np.ndarray]:
        for column in self.columns:
            column.resize(self.n, refcheck=False)
        return self.columns


def walk_accelerator() -> Any:
    """The C twin of the walks' sequential loops (``formats/_walk.c``), or None: not built,
    or ``WSKREPLAY_PURE_PYTHON=1`` (the Python loops are the reference; a test keeps them
    identical)."""
    return accelerator("_walk")


def _gather_records(
    buf: memoryview, endian: str, release: Callable[[], None]
) -> tuple[np.ndarray, ...]:
    """The reference of ``_walk.pcap_records``: the record offsets, then their four header
    fields gathered for every whole header (zeros for one cut short), and which are whole."""
    at = np.array(_record_starts(buf, 24, endian, release), dtype=np.int64)
    raw = np.frombuffer(buf, dtype=np.uint8)
    words = np.ndarray((len(raw) - 3,), dtype=endian + "u4", buffer=raw, strides=(1,))
    whole = at + 16 <= len(buf)
    sec, frac, incl, orig = (np.zeros(len(at), np.int64) for _ in range(4))
    for lo, hi in release_spans(at, len(at)):
        part = slice(lo, hi)
        ok = whole[part]
        ok_at = at[part][ok]
        for k, col in enumerate((sec, frac, incl, orig)):
            col[part][ok] = words[ok_at + 4 * k]
        release()
    return at, sec, frac, incl, orig, whole


def _record_starts(
    buf: memoryview, pos: int, endian: str, release: Callable[[], None]
) -> list[int]:
    """Offsets of pcap record headers: the one loop that must follow each length field.
    ``release()`` as ``ReleaseClock`` says."""
    size = len(buf)
    incl_at = struct.Struct(endian + "8xI").unpack_from
    starts: list[int] = []
    add = starts.append
    clock = ReleaseClock(release, pos)
    try:
        while pos < size:
            add(pos)
            pos += 16 + incl_at(buf, pos)[0]
            clock.passed(pos)
    except struct.error:
        pass
    return starts


def release_spans(starts: np.ndarray, n: int) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` ranges of the ``n`` sorted record offsets ``starts``: at most
    RELEASE_RECORDS records, spanning at most RELEASE_SPAN bytes (one record at least)."""
    lo = 0
    while lo < n:
        reach = int(np.searchsorted(starts, int(starts[lo]) + RELEASE_SPAN, side="left"))
        hi = min(lo + RELEASE_RECORDS, max(reach, lo + 1), n)
        yield lo, hi
        lo = hi


def _options(buf: memoryview, start: int, end: int, endian: str) -> dict[int, list[bytes]]:
    """pcapng options in [start, end): code -> values. Stops at opt_endofopt or bad lengths."""
    opts: dict[int, list[bytes]] = {}
    pos = start
    hdr = struct.Struct(endian + "HH")
    while pos + 4 <= end:
        code, length = hdr.unpack_from(buf, pos)
        if code == 0 or pos + 4 + length > end:
            break
        opts.setdefault(code, []).append(bytes(buf[pos + 4 : pos + 4 + length]))
        pos += 4 + ((length + 3) & ~3)
    return opts


def _tsresol(raw: bytes) -> int:
    if len(raw) != 1:
        raise ValueError(f"if_tsresol of {len(raw)} bytes, expected 1")
    value = raw[0]
    exponent = value & 0x7F
    if exponent > 18:
        raise ValueError(f"if_tsresol {value:#x}")
    return 2**exponent if value & 0x80 else 10**exponent


def interface_block(path: str, buf: memoryview, pos: int, end: int, endian: str) -> Interface:
    """The interface an IDB at ``pos`` (ending at ``end``) describes."""
    linktype, _, snaplen = struct.unpack_from(endian + "HHI", buf, pos + 8)
    opts = _options(buf, pos + 16, end - 4, endian)
    info = Interface(linktype, snaplen, 10**6)
    try:
        if 9 in opts:
            info.tsresol = _tsresol(opts[9][0])
        if 14 in opts and len(opts[14][0]) == 8:
            info.tsoffset = struct.unpack(endian + "q", opts[14][0])[0]
    except ValueError as exc:
        raise InputError(path, f"interface block with bad option: {exc}", pos) from None
    if 2 in opts:
        info.name = opts[2][0].decode("utf-8", "replace")
    if 13 in opts and len(opts[13][0]) == 1:
        info.fcslen = opts[13][0][0]
    return info


def epb_direction(buf: memoryview, opt_start: int, opt_end: int, endian: str) -> int:
    """The direction an EPB's epb_flags option gives (DIRECTION_UNKNOWN without one)."""
    flag = DIRECTION_UNKNOWN
    if opt_start < opt_end:
        flags = _options(buf, opt_start, opt_end, endian).get(2)
        if flags and len(flags[0]) == 4:
            flag = struct.unpack(endian + "I", flags[0])[0] & 0x3
    return flag if flag in (DIRECTION_IN, DIRECTION_OUT) else DIRECTION_UNKNOWN


def _walk_pcapng(
    path: str,
    buf: memoryview,
    cols: _Columns,
    interfaces: list[Interface],
    comments: list[str],
    release: Callable[[], None],
) -> None:
    """The pcapng walk: the block-at-a-time reference, or, where a file allows it, the
    same result gathered with numpy (:mod:`wskreplay.formats.pcapng_fast`; a test keeps
    them identical). ``WSKREPLAY_PURE_PYTHON=1`` selects the reference. Both call
    ``release()`` as the pcap walk does (``ReleaseClock``)."""
    if not reference_asked():
        from wskreplay.formats.pcapng_fast import walk_pcapng_fast

        if walk_pcapng_fast(path, buf, cols, interfaces, comments, release):
            return
    _walk_pcapng_blocks(path, buf, cols, interfaces, comments, ReleaseClock(release))


class ReleaseClock:
    """Calls ``release()`` every RELEASE_RECORDS records or RELEASE_SPAN bytes of file a
    walk moves through, whichever comes first (``formats/_walk.c`` follows the same rule)."""

    def __init__(self, release: Callable[[], None], pos: int = 0) -> None:
        self.release = release
        self.records = 0
        self.since = pos

    def passed(self, pos: int) -> None:
        """One more record walked; the walk is now at ``pos``."""
        self.records += 1
        if not self.records % RELEASE_RECORDS or pos - self.since >= RELEASE_SPAN:
            self.release()
            self.since = pos


def _walk_pcapng_blocks(
    path: str,
    buf: memoryview,
    cols: _Columns,
    interfaces: list[Interface],
    comments: list[str],
    clock: ReleaseClock,
) -> None:
    size = len(buf)
    pos = 0
    endian = "<"
    section_ifaces: list[int] = []
    ts, iface, offset, caplen = cols.ts, cols.iface, cols.offset, cols.caplen
    origlen, direction = cols.origlen, cols.direction
    epb = {e: struct.Struct(e + "IIIIIII") for e in "<>"}
    head = {e: struct.Struct(e + "II") for e in "<>"}
    while pos < size:
        if size - pos < 12:
            raise InputError(path, f"block header cut short: {size - pos} of 12 bytes", pos)
        (btype,) = struct.unpack_from("<I", buf, pos)
        if btype == PCAPNG_SHB:
            if size - pos < 28:
                raise InputError(path, "section header block cut short", pos)
            (bom,) = struct.unpack_from("<I", buf, pos + 8)
            if bom == PCAPNG_BOM:
                endian = "<"
            elif bom == 0x4D3C2B1A:
                endian = ">"
            else:
                raise InputError(path, f"section header with bad byte-order magic 0x{bom:08X}", pos)
            major, minor = struct.unpack_from(endian + "HH", buf, pos + 12)
            if major != 1:
                raise InputError(path, f"unsupported pcapng section version {major}.{minor}", pos)
            section_ifaces = []
        btype, blen = head[endian].unpack_from(buf, pos)
        if blen < 12 or blen % 4 or blen > size - pos:
            what = "cut short" if blen > size - pos else "has an impossible length"
            raise InputError(
                path, f"block of type 0x{btype:08X} {what}: {blen} bytes, {size - pos} present", pos
            )
        end = pos + blen
        if btype == PCAPNG_EPB:
            if blen < 32:
                raise InputError(path, f"enhanced packet block too short: {blen} bytes", pos)
            _, _, ifid, ts_hi, ts_lo, incl, orig = epb[endian].unpack_from(buf, pos)
            if incl > blen - 32:
                raise InputError(path, f"packet of {incl} bytes in a {blen}-byte block", pos)
            if ifid >= len(section_ifaces):
                raise InputError(path, f"packet on undeclared interface {ifid}", pos)
            gi = section_ifaces[ifid]
            info = interfaces[gi]
            ticks = (ts_hi << 32) | ts_lo
            ts.append(
                _wrapped(
                    cols, ticks * 1_000_000_000 // info.tsresol + info.tsoffset * 1_000_000_000
                )
            )
            iface.append(gi)
            offset.append(pos + 28)
            caplen.append(incl)
            origlen.append(orig)
            direction.append(epb_direction(buf, pos + 28 + ((incl + 3) & ~3), end - 4, endian))
        elif btype == PCAPNG_IDB:
            if blen < 20:
                raise InputError(path, f"interface block too short: {blen} bytes", pos)
            section_ifaces.append(len(interfaces))
            interfaces.append(interface_block(path, buf, pos, end, endian))
        elif btype == PCAPNG_SPB:
            if blen < 16:
                raise InputError(path, f"simple packet block too short: {blen} bytes", pos)
            if not section_ifaces:
                raise InputError(path, "simple packet block before any interface", pos)
            (orig,) = struct.unpack_from(endian + "I", buf, pos + 8)
            info = interfaces[section_ifaces[0]]
            incl = min(orig, blen - 16, info.snaplen or orig)
            ts.append(ts[-1] if ts else 0)
            iface.append(section_ifaces[0])
            offset.append(pos + 12)
            caplen.append(incl)
            origlen.append(orig)
            direction.append(DIRECTION_UNKNOWN)
        elif btype == PCAPNG_OPB:
            if blen < 32:
                raise InputError(path, f"obsolete packet block too short: {blen} bytes", pos)
            ifid, _drops, ts_hi, ts_lo, incl, orig = struct.unpack_from(
                endian + "HHIIII", buf, pos + 8
            )
            if incl > blen - 32 or ifid >= len(section_ifaces):
                raise InputError(path, "malformed obsolete packet block", pos)
            gi = section_ifaces[ifid]
            ticks = (ts_hi << 32) | ts_lo
            ts.append(_wrapped(cols, ticks * 1_000_000_000 // interfaces[gi].tsresol))
            iface.append(gi)
            offset.append(pos + 28)
            caplen.append(incl)
            origlen.append(orig)
            direction.append(DIRECTION_UNKNOWN)
        elif btype == PCAPNG_SHB:
            opts = _options(buf, pos + 24, end - 4, endian)
            comments.extend(c.decode("utf-8", "replace") for c in opts.get(1, []))
        (trailer,) = struct.unpack_from(endian + "I", buf, end - 4)
        if trailer != blen:
            raise InputError(path, f"block length {blen} does not match its trailer {trailer}", pos)
        pos = end
        clock.passed(pos)


class PcapngWriter:
    """Writes pcapng: nanosecond timestamps, one interface per link type, EPB direction flags.

    A time before 1970 (negative) is written as its unsigned 64-bit value, the inverse of
    how the reader wraps times it cannot hold."""

    def __init__(self, fileobj: BinaryIO, *, comment: str | None = None, snaplen: int = 0) -> None:
        self._f = fileobj
        self._ifaces: dict[int, int] = {}
        self._snaplen = snaplen
        opts = _option(1, comment.encode()) if comment else b""
        body = (
            struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1) + opts + (_option(0, b"") if opts else b"")
        )
        self._block(PCAPNG_SHB, body)

    def _block(self, btype: int, body: bytes) -> None:
        length = 12 + len(body)
        self._f.write(struct.pack("<II", btype, length) + body + struct.pack("<I", length))

    def interface(self, linktype: int) -> int:
        if linktype not in self._ifaces:
            opts = _option(9, bytes([9])) + _option(0, b"")
            self._block(PCAPNG_IDB, struct.pack("<HHI", linktype, 0, self._snaplen) + opts)
            self._ifaces[linktype] = len(self._ifaces)
        return self._ifaces[linktype]

    def packet(
        self,
        time_ns: int,
        linktype: int,
        data: bytes | memoryview,
        *,
        origlen: int | None = None,
        direction: int = DIRECTION_UNKNOWN,
        comment: str | None = None,
    ) -> None:
        ifid = self.interface(linktype)
        opts = b""
        if direction in (DIRECTION_IN, DIRECTION_OUT):
            opts += _option(2, struct.pack("<I", direction))
        if comment:
            opts += _option(1, comment.encode())
        if opts:
            opts += _option(0, b"")
        pad = b"\0" * (-len(data) % 4)
        ticks = time_ns % (1 << 64)
        head = struct.pack(
            "<IIIII",
            ifid,
            ticks >> 32,
            ticks & 0xFFFFFFFF,
            len(data),
            len(data) if origlen is None else origlen,
        )
        self._block(PCAPNG_EPB, head + bytes(data) + pad + opts)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def write_pcapng(
    path: str | os.PathLike[str], frames: Frames, *, comment: str | None = None
) -> None:
    """Write every frame of ``frames`` to a pcapng file."""
    with open(path, "wb") as f:
        w = PcapngWriter(f, comment=comment)
        for i in range(len(frames)):
            w.packet(
                int(frames.time_ns[i]),
                int(frames.linktype[i]),
                frames.frame(i),
                origlen=int(frames.origlen[i]),
                direction=int(frames.direction[i]),
            )
