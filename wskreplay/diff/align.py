"""Which socket and which call of one trace corresponds to which of the other.

Sockets: by their endpoints (local and remote address:port), else in order of id. Calls,
per socket: in order (a replay issues exactly the recorded calls), or by a sequence
alignment on (length, flags, payload digest), so that a call inserted or removed by
another driver version shows as that, not as every later call differing."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

import numpy as np

from wskreplay.diff.streambytes import same_bytes
from wskreplay.errors import InputError
from wskreplay.formats import ntstatus as nt
from wskreplay.trace.inplace import StreamInFile
from wskreplay.trace.model import Direction, Trace
from wskreplay.trace.spill import RELEASE_EVERY, release


@dataclass(frozen=True)
class Alignment:
    """Aligned call indices of one socket pair: ``a[k]`` in trace A goes with ``b[k]`` in
    trace B; -1 where a call has no counterpart (only B has it: inserted; only A: removed)."""

    a: np.ndarray
    b: np.ndarray
    same_key: np.ndarray | None = None
    """Sequence alignment: where the pair's keys (length, flags, payload digest) are equal,
    so their bytes need no comparison; None when not known (in-order alignment)."""


def match_sockets(
    a: Trace, b: Trace, mapping: dict[int, int] | None = None
) -> list[tuple[int | None, int | None]]:
    """(socket of A, socket of B) pairs; None where a socket has no counterpart. ``mapping``
    pairs sockets explicitly (A's id -> B's id) before the endpoints are looked at."""

    def endpoints(trace: Trace, sid: int) -> tuple:
        s = trace.sockets[sid]
        return (s.local_addr, s.local_port, s.remote_addr, s.remote_port)

    by_endpoint = {endpoints(b, sid): sid for sid in sorted(b.sockets)}
    pairs: list[tuple[int | None, int | None]] = []
    taken: set[int] = set()
    unmatched_a = []
    for sa, sb in (mapping or {}).items():
        if sa not in a.sockets or sb not in b.sockets:
            raise InputError(None, f"--map-socket {sa}={sb}: no socket {sa} in A or {sb} in B")
        pairs.append((sa, sb))
        taken.add(sb)
    for sid in sorted(a.sockets):
        if mapping and sid in mapping:
            continue
        other = by_endpoint.get(endpoints(a, sid))
        if other is not None and other not in taken and any(endpoints(a, sid)):
            pairs.append((sid, other))
            taken.add(other)
        else:
            unmatched_a.append(sid)
    rest_b = [sid for sid in sorted(b.sockets) if sid not in taken]
    for sa, sb in zip(unmatched_a, rest_b, strict=False):
        pairs.append((sa, sb))
    pairs += [(sa, None) for sa in unmatched_a[len(rest_b) :]]
    pairs += [(None, sb) for sb in rest_b[len(unmatched_a) :]]
    return sorted(pairs, key=lambda p: (p[0] is None, p[0] if p[0] is not None else p[1]))


def calls_of(trace: Trace, sid: int | None) -> np.ndarray:
    """Indices of the socket's calls, in issue order."""
    if sid is None:
        return np.empty(0, np.int64)
    return trace.calls.rows_of(sid)


def align_in_order(ia: np.ndarray, ib: np.ndarray) -> Alignment:
    n = max(len(ia), len(ib))
    a = np.full(n, -1, np.int64)
    b = np.full(n, -1, np.int64)
    a[: len(ia)] = ia
    b[: len(ib)] = ib
    return Alignment(a, b)


def call_keys(trace: Trace, index: np.ndarray) -> list[tuple]:
    """What identifies a call across two recordings: its length, flags and payload digest
    (None where the trace does not hold the bytes). ``index``: calls of one socket."""
    calls = trace.calls
    lengths = calls.column("length")[index].tolist()
    flags = calls.column("flags")[index].tolist()
    starts = calls.column("stream_offset")[index].tolist()
    accepted = nt.success_mask(calls.column("status")[index]).tolist()
    sockets = calls.column("socket")[index].tolist()
    digests: list[bytes | None] = [None] * len(lengths)
    for direction, wanted in ((Direction.OUT, True), (Direction.UNSENT, False)):
        rows = [k for k, ok in enumerate(accepted) if ok == wanted]
        if not rows:
            continue
        stream = trace.streams.get((sockets[rows[0]], direction))
        if stream is None or stream.data is None:
            continue
        data = stream.data if isinstance(stream.data, StreamInFile) else memoryview(stream.data)
        size, gaps = len(stream.data), stream.gaps
        blake = hashlib.blake2b
        hashed = 0
        for k in rows:
            start, end = starts[k], starts[k] + lengths[k]
            if end <= size and not (gaps and any(x < end and start < y for x, y in gaps)):
                digests[k] = blake(data[start:end], digest_size=8).digest()
                hashed += lengths[k]
                if hashed >= RELEASE_EVERY:
                    release(stream.data)
                    hashed = 0
    return list(zip(lengths, flags, digests, strict=True))


def keys_all_equal(a: Trace, ia: np.ndarray, b: Trace, ib: np.ndarray) -> bool:
    """Whether :func:`call_keys` would give the same list for both sides, decided from
    whole columns and streams: the same lengths, flags, acceptance and stream offsets, and
    streams of the same bytes and gaps (or absent, or redacted, on both sides)."""
    if len(ia) != len(ib):
        return False
    ca, cb = a.calls, b.calls
    for name in ("length", "flags", "stream_offset"):
        if not np.array_equal(ca.column(name)[ia], cb.column(name)[ib]):
            return False
    accepted = nt.success_mask(ca.column("status")[ia])
    if not np.array_equal(accepted, nt.success_mask(cb.column("status")[ib])):
        return False
    sid_a, sid_b = int(ca.column("socket")[ia[0]]), int(cb.column("socket")[ib[0]])
    for direction, rows in ((Direction.OUT, accepted), (Direction.UNSENT, ~accepted)):
        if not rows.any():
            continue
        sa, sb = a.streams.get((sid_a, direction)), b.streams.get((sid_b, direction))
        held_a = sa is not None and sa.data is not None
        held_b = sb is not None and sb.data is not None
        if held_a != held_b:
            return False
        if held_a and (
            sa.gaps != sb.gaps or not same_bytes(sa.data, sb.data)  # type: ignore[union-attr]
        ):
            return False
    return True


def align_by_sequence(a: Trace, ia: np.ndarray, b: Trace, ib: np.ndarray) -> Alignment:
    """Longest matching blocks of equal keys pair up; a replaced run pairs element-wise
    (changed calls), its excess is inserted or removed. Where every key is equal (what a
    replay of the same calls usually gives) the answer is the one block, found without
    hashing a call (:func:`keys_all_equal`)."""
    if len(ia) and keys_all_equal(a, ia, b, ib):
        return Alignment(ia.copy(), ib.copy(), np.ones(len(ia), bool))
    matcher = difflib.SequenceMatcher(None, call_keys(a, ia), call_keys(b, ib), autojunk=False)
    parts_a: list[np.ndarray] = []
    parts_b: list[np.ndarray] = []
    parts_same: list[np.ndarray] = []
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "delete":
            parts_a.append(ia[a0:a1])
            parts_b.append(np.full(a1 - a0, -1, np.int64))
        elif op == "insert":
            parts_a.append(np.full(b1 - b0, -1, np.int64))
            parts_b.append(ib[b0:b1])
        else:
            run = align_in_order(ia[a0:a1], ib[b0:b1])
            parts_a.append(run.a)
            parts_b.append(run.b)
        parts_same.append(np.full(len(parts_a[-1]), op == "equal"))
    if not parts_a:
        empty = np.empty(0, np.int64)
        return Alignment(empty, empty, np.empty(0, bool))
    return Alignment(np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(parts_same))
