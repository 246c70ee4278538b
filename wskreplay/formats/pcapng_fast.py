"""The pcapng walk with numpy: the block loop only follows lengths and keeps where each
Enhanced Packet Block starts; their fields, checks and timestamps are gathered for all of
them at once, as the pcap walk does for its records. Only the blocks with options are
read one by one (their epb_flags).

It takes the files whose every block it can vouch for: one little-endian section, EPBs
and interface blocks (any other block is skipped as the reference skips it), timestamps
at a power-of-ten resolution within 1677..2262. For anything else, or any block the
reference would refuse, it changes nothing and answers False: the caller then runs the
reference (``pcap._walk_pcapng_blocks``), which also reports the error where there is
one. tests/test_pcapng_fast.py keeps both identical.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import pcap
from wskreplay.formats.pcap import (
    DIRECTION_UNKNOWN,
    PCAPNG_BOM,
    PCAPNG_EPB,
    PCAPNG_IDB,
    PCAPNG_OPB,
    PCAPNG_SHB,
    PCAPNG_SPB,
    GrowingColumns,
    Interface,
    ReleaseClock,
    _Columns,
    _options,
    epb_direction,
    interface_block,
    release_spans,
    walk_accelerator,
)

_HEAD = struct.Struct("<II").unpack_from
_WORD = struct.Struct("<I").unpack_from
_HALF = struct.Struct("<H").unpack_from
INT64_MAX = (1 << 63) - 1
POWERS_OF_TEN = {10**k: k for k in range(19)}
"""The resolutions if_tsresol can give in base 10 (10**0 .. 10**18 ticks a second)."""


def walk_pcapng_fast(
    path: str,
    buf: memoryview,
    cols: _Columns,
    interfaces: list[Interface],
    comments: list[str],
    release: Callable[[], None],
) -> bool:
    """Fill ``cols``, ``interfaces`` and ``comments`` as the reference walk would, and say
    True; or change nothing and say False. ``release()`` is called as the reference walk
    calls it, as the blocks are walked and as their fields are gathered."""
    if interfaces or cols.ts or len(buf) < 28:
        return False
    native = walk_accelerator()
    found = _blocks(path, buf, native, release)
    if found is None:
        return False
    packets, found_ifaces, found_comments = found
    cols.ts, cols.iface, cols.offset, cols.caplen, cols.origlen, cols.direction = packets
    interfaces.extend(found_ifaces)
    comments.extend(found_comments)
    return True


PACKET_TYPES = (np.int64, np.int32, np.int64, np.int64, np.int64, np.uint8)
"""The types of ``_packets``' columns: time, interface, offset, lengths, direction."""


class NeedsReference(Exception):
    """A block the fast walk cannot vouch for: the reference walk reads the file."""


def _blocks(
    path: str, buf: memoryview, native: Any, release: Callable[[], None]
) -> tuple[list[np.ndarray], list[Interface], list[str]] | None:
    """The EPBs' columns (``_packets``), the interfaces and the section's comments; None
    where a block needs the reference."""
    columns = GrowingColumns(PACKET_TYPES)
    ifaces: list[Interface] = []
    notes: list[str] = []
    try:
        for packets, expected in packet_runs(path, buf, native, release, ifaces, notes):
            columns.add(packets, expected)
    except NeedsReference:
        return None
    return columns.finish(), ifaces, notes


def packet_runs(
    path: str,
    buf: memoryview,
    native: Any,
    release: Callable[[], None],
    ifaces: list[Interface],
    notes: list[str],
) -> Iterator[tuple[tuple[np.ndarray, ...], int]]:
    """The EPBs' columns (``_packets``) a run at a time, and how many EPBs the file is
    expected to hold in all; ``ifaces`` and ``notes`` (the section's comments) grow as
    their blocks are met. Raises NeedsReference where a block needs the reference. Runs
    of EPBs are followed and their fields read by ``native`` (the C walk of
    ``formats/_walk.c``) where it is built, each run's columns made as it is read (a
    run's fields are 64 bytes an EPB, the columns 37); else here, and the fields
    gathered at the end, in one run."""
    size = len(buf)
    epb_at = array.array("q")
    add = epb_at.append
    idb_at: list[int] = []
    pos = seen = 0
    clock = ReleaseClock(release)
    try:
        while pos < size:
            if native is not None:
                reach = max(pcap.WALK_SLICE_BYTES, _HEAD(buf, pos)[1] if size - pos >= 8 else 0)
                sliced = min(size, pos + reach)
                rows, pos = native.pcapng_epb_run(buf[:sliced], pos, PCAPNG_EPB, release)
                if rows:
                    fields = np.frombuffer(rows, np.int64).reshape(-1, EPB_FIELDS)
                    del rows
                    packets = _packets(buf, fields, len(ifaces), ifaces, release)
                    if packets is None:
                        raise NeedsReference
                    seen += len(fields)
                    del fields
                    yield packets, seen * size // max(1, pos)
                    del packets
                if pos >= size:
                    break
                if pos == sliced or _runs_past(buf, pos, sliced):
                    release()  # (the C run counts 64 MiB from where each slice starts)
                    continue
            btype, blen = _HEAD(buf, pos)
            if btype == PCAPNG_EPB:
                if native is not None or blen < 32 or blen % 4 or blen > size - pos:
                    raise NeedsReference  # (the C run stops at an EPB only when it is unsound)
                add(pos)
                pos += blen
                clock.passed(pos)
                continue
            if size - pos < 12 or blen < 12 or blen % 4 or blen > size - pos:
                raise NeedsReference
            end = pos + blen
            if btype == PCAPNG_SHB:
                if pos != 0 or blen < 28 or _WORD(buf, pos + 8)[0] != PCAPNG_BOM:
                    raise NeedsReference
                if _HALF(buf, pos + 12)[0] != 1:
                    raise NeedsReference
                opts = _options(buf, pos + 24, end - 4, "<")
                notes.extend(c.decode("utf-8", "replace") for c in opts.get(1, []))
            elif btype == PCAPNG_IDB:
                if blen < 20:
                    raise NeedsReference
                ifaces.append(interface_block(path, buf, pos, end, "<"))
                idb_at.append(pos)
            elif btype in (PCAPNG_SPB, PCAPNG_OPB):
                raise NeedsReference
            if _WORD(buf, end - 4)[0] != blen:
                raise NeedsReference
            pos = end
    except (struct.error, InputError):
        raise NeedsReference from None
    if native is None and len(epb_at):
        at = np.asarray(epb_at, dtype=np.int64)
        fields = _gather_fields(buf, at, release)
        declared = np.searchsorted(np.asarray(idb_at, dtype=np.int64), at)
        packets = _packets(buf, fields, declared, ifaces, release)
        if packets is None:
            raise NeedsReference
        yield packets, len(at)


def _runs_past(buf: memoryview, pos: int, sliced: int) -> bool:
    """Whether the block at ``pos`` is a sound EPB that the slice ending at ``sliced`` cut
    (the C run stopped there for the slice's end, not for the block)."""
    if len(buf) - pos < 8:
        return False
    btype, blen = _HEAD(buf, pos)
    return btype == PCAPNG_EPB and blen >= 32 and not blen % 4 and sliced < pos + blen <= len(buf)


EPB_FIELDS = 8
"""Per EPB: offset, total length, interface id, timestamp high and low words, captured and
original length, trailing length (what ``_walk.pcapng_epb_run`` reads)."""


def _gather_fields(buf: memoryview, at: np.ndarray, release: Callable[[], None]) -> np.ndarray:
    """The EPB_FIELDS values of the EPBs at ``at``, gathered (the C walk's reference)."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    words = np.ndarray((len(raw) - 3,), dtype="<u4", buffer=raw, strides=(1,))
    fields = np.empty((len(at), EPB_FIELDS), np.int64)
    fields[:, 0] = at
    for lo, hi in release_spans(at, len(at)):
        part = at[lo:hi]
        for k in range(1, EPB_FIELDS - 1):
            fields[lo:hi, k] = words[part + 4 * k]
        fields[lo:hi, EPB_FIELDS - 1] = words[part + fields[lo:hi, 1] - 4]
        release()
    return fields


def _packets(
    buf: memoryview,
    fields: np.ndarray,
    declared: np.ndarray | int,
    ifaces: list[Interface],
    release: Callable[[], None],
) -> tuple[np.ndarray, ...] | None:
    """Per EPB (``fields``: EPB_FIELDS values each): time (ns), interface, frame offset,
    captured and original length, direction; None where one needs the reference.
    ``declared``: how many interfaces the file had declared before each EPB (or all)."""
    n = len(fields)
    at, blen, ifid, ticks_hi, ticks_lo, incl, orig, trailer = fields.T
    ticks = (ticks_hi.astype(np.uint64) << np.uint64(32)) | ticks_lo.astype(np.uint64)
    end = at + blen
    if (incl > blen - 32).any() or (ifid >= declared).any() or (trailer != blen).any():
        return None
    ts = np.empty(n, np.int64)
    for gi in np.unique(ifid).tolist():
        mine = ifid == gi
        got = _nanoseconds(ticks[mine], ifaces[gi])
        if got is None:
            return None
        ts[mine] = got
    opt_start = at + 28 + ((incl + 3) & ~3)
    direction = np.full(n, DIRECTION_UNKNOWN, np.uint8)
    clock = ReleaseClock(release, int(at[0]))
    for i in np.flatnonzero(opt_start < end - 4).tolist():
        direction[i] = epb_direction(buf, int(opt_start[i]), int(end[i]) - 4, "<")
        clock.passed(int(end[i]))
    return ts, ifid, at + 28, incl, orig, direction


def _nanoseconds(ticks: np.ndarray, info: Interface) -> np.ndarray | None:
    """``ticks * 10**9 // tsresol + tsoffset * 10**9`` as the reference computes it, for a
    power-of-ten resolution and times that fit in 64 bits; None otherwise."""
    resol, offset = info.tsresol, info.tsoffset * 1_000_000_000
    exponent = POWERS_OF_TEN.get(resol)
    if exponent is None:
        return None
    lo, hi = int(ticks.min()), int(ticks.max())
    if not -INT64_MAX - 1 <= offset <= INT64_MAX:
        return None
    if exponent <= 9:
        scale = 10 ** (9 - exponent)
        if hi * scale > INT64_MAX or hi * scale + offset > INT64_MAX:
            return None
        if lo * scale + offset < -INT64_MAX - 1:
            return None
        return ticks.astype(np.int64) * scale + offset
    divisor = 10 ** (exponent - 9)
    if hi // divisor + offset > INT64_MAX or lo // divisor + offset < -INT64_MAX - 1:
        return None
    return (ticks // np.uint64(divisor)).astype(np.int64) + offset
