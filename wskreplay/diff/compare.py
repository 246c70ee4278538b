"""The comparisons: statuses, timing against tolerances, and the wire.

Every difference is one :class:`Difference` with its class (``kind``), the socket, the
calls it concerns in each trace (indices; None where a trace lacks it) and a one-line
detail. Classes, in the order reports list them:

- ``socket``: a socket only one trace has;
- ``inserted`` / ``removed``: a call only B / only A has (sequence alignment);
- ``status``, ``completion_status``, ``information``, ``completed``: the returned
  NTSTATUS, the completion NTSTATUS, Information, or whether the IRP completed at all;
- ``timing``: a call's time beyond its metric's tolerance (docs/diff.md); per call when
  the calls are aligned in order (a replay), not between two recordings, whose single
  calls' times are not comparable (``DiffOptions.per_call_timing``);
- ``distribution``: a latency quantile that moved beyond its bootstrap CI, the minimum
  shift and the noise of a second baseline (``distributions``);
- ``wire``: a stream's bytes (the first differing offset, with context and the calls
  that sent those bytes);
- ``segmentation``: how a stream was cut into segments, and their PSH/FIN/RST flags;
  tolerated unless ``DiffOptions.segmentation == "strict"`` (then it counts).

Only what both traces know is compared (docs/emulator.md, "Unknown is a value"): a
completion either trace marks unknown, a completion B shows after the end of A (the
recording could not have seen it), and stream bytes either trace lacks (gaps) are counted
in :attr:`DiffResult.not_compared`, never reported as differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wskreplay.diff.align import (
    Alignment,
    align_by_sequence,
    align_in_order,
    calls_of,
    match_sockets,
)
from wskreplay.diff.distributions import Shift, shifts
from wskreplay.diff.runs import Run, runs
from wskreplay.diff.streambytes import first_difference
from wskreplay.diff.tolerance import (
    METRICS,
    Tolerance,
    _duration,
    default_tolerances,
)
from wskreplay.diff.wire import first_wire_ns, segmentation
from wskreplay.formats import ntstatus as nt
from wskreplay.trace.model import (
    COMPLETED,
    COMPLETION_UNKNOWN,
    NOT_COMPLETED,
    Direction,
    Stream,
    Trace,
    awaited_calls,
    time_span_ns,
)

KINDS = (
    "socket",
    "inserted",
    "removed",
    "status",
    "completion_status",
    "information",
    "completed",
    "timing",
    "distribution",
    "wire",
    "segmentation",
)
CONTEXT_BYTES = 16
UNREAD_COLUMNS = ("offset", "irp", "irql", "ack", "window")
"""Call and segment columns no comparison reads: ``diff`` leaves them in the file
(``read_trace(defer=...)``) unless a report asks for whole rows."""


@dataclass(frozen=True)
class Difference:
    kind: str
    socket: int | None
    """The socket in trace A (in B for a socket or call only B has)."""
    call_a: int | None
    call_b: int | None
    detail: str
    a: Any = None
    b: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "socket": self.socket,
            "call_a": self.call_a,
            "call_b": self.call_b,
            "detail": self.detail,
            "a": self.a,
            "b": self.b,
        }


@dataclass(frozen=True)
class DiffOptions:
    align: str = "auto"
    """``order``, ``sequence``, or ``auto``: in order when B is a replay of A (its
    metadata says so), by sequence alignment when they are independent recordings."""
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    """Overrides of the default tolerances (``tolerance.default_tolerances``: the
    emulator's, or a real stack's when either trace ran on one)."""
    segmentation: str = "tolerate"
    """``tolerate``: segmentation differences are reported, not counted; ``strict``."""
    per_call_timing: bool | None = None
    """Compare each call's times against the tolerances; None: when aligned in order."""
    min_shift: float = 0.05
    """The smallest relative move of a latency quantile that counts."""
    socket_map: Mapping[int, int] = field(default_factory=dict)
    """Sockets paired explicitly (A's id -> B's id); the others by endpoints, then order."""
    timing: bool = True
    """Compare timing at all (each call's times, latency distributions); chaos runs, which
    perturb timing on purpose and set its differences aside, skip that work."""
    tolerated: bool = True
    """Work out what is reported but not counted (``DiffResult.tolerated``); chaos runs,
    which look only at what counts, skip that work."""


@dataclass
class DiffResult:
    align: str
    calls_compared: int
    differences: list[Difference]
    """What counts: any of these makes the traces differ."""
    tolerated: list[Difference]
    """Reported, not counted (segmentation by default)."""
    shifts: list[Shift] = field(default_factory=list)
    """Every latency quantile compared, whatever its verdict."""
    dissections: list[dict[str, Any]] = field(default_factory=list)
    """With ``--dissect``: per wire difference, the protocol fields that differ."""
    not_compared: dict[str, int] = field(
        default_factory=lambda: {"completions": 0, "stream_bytes": 0}
    )
    """Values one trace does not know: calls whose completion was not compared, stream
    bytes (either trace's gaps) not compared."""
    runs: list[Run] = field(default_factory=list)
    """The differences grouped into runs of consecutive calls (:mod:`.runs`)."""
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    """The timing tolerances applied, and what their defaults were for."""
    tolerance_basis: str = "emulator"

    @property
    def equal(self) -> bool:
        return not self.differences

    def count(self, *kinds: str) -> int:
        return sum(1 for d in self.differences if d.kind in kinds)

    def as_json(self) -> dict[str, Any]:
        """The documented JSON report (docs/diff.md)."""
        return {
            "equal": self.equal,
            "align": self.align,
            "calls_compared": self.calls_compared,
            "status_mismatches": self.count(
                "status", "completion_status", "information", "completed"
            ),
            "timing_violations": self.count("timing"),
            "wire_mismatches": self.count("wire"),
            "inserted": self.count("inserted"),
            "removed": self.count("removed"),
            "unmatched_sockets": self.count("socket"),
            "segmentation_differences": sum(
                1 for d in self.differences + self.tolerated if d.kind == "segmentation"
            ),
            "distribution_shifts": self.count("distribution"),
            "not_compared": dict(self.not_compared),
            "tolerances": {
                "defaults": self.tolerance_basis,
                **{metric: str(tol) for metric, tol in self.tolerances.items()},
            },
            "runs": [r.as_dict() for r in self.runs],
            "differences": [d.as_dict() for d in self.differences],
            "tolerated": [d.as_dict() for d in self.tolerated],
            "distributions": [s.as_dict() for s in self.shifts],
            "dissections": self.dissections,
        }


def is_replay_of(a: Trace, b: Trace) -> bool:
    return b.metadata.get("source") == "replay" or a.metadata.get("source") == "replay"


_NO_WIRE = (np.empty(0, np.int64), np.empty(0, np.int64))


def diff_traces(
    a: Trace, b: Trace, options: DiffOptions | None = None, *, noise: Trace | None = None
) -> DiffResult:
    """Every difference between trace A (the baseline) and trace B; ``noise``, a second
    recording of the baseline, tells timing noise from a shift."""
    options = options or DiffOptions()
    align = options.align
    if align == "auto":
        align = "order" if is_replay_of(a, b) else "sequence"
    per_call_timing = options.per_call_timing
    if per_call_timing is None:
        per_call_timing = align == "order"
    per_call_timing = per_call_timing and options.timing
    basis, tolerances = default_tolerances(a.metadata, b.metadata)
    tolerances.update(options.tolerances)
    differences: list[Difference] = []
    tolerated: list[Difference] = []
    not_compared = {"completions": 0, "stream_bytes": 0}
    compared = 0
    wire_a, wire_b = (first_wire_ns(a), first_wire_ns(b)) if options.timing else _NO_WIRE
    end_a = (time_span_ns(a) or (0, 0))[1]
    sockets = match_sockets(a, b, dict(options.socket_map))
    basis_of_timing: _TimingBasis | None = None
    aligned: list[tuple[int, Alignment]] = []
    for sa, sb in sockets:
        if sa is None or sb is None:
            only = "B" if sa is None else "A"
            sid = sb if sa is None else sa
            detail = f"socket {sid} only in {only}"
            differences.append(Difference("socket", sid, None, None, detail))
            continue
        ia, ib = calls_of(a, sa), calls_of(b, sb)
        pairs = align_in_order(ia, ib) if align == "order" else align_by_sequence(a, ia, b, ib)
        compared += int(((pairs.a >= 0) & (pairs.b >= 0)).sum())
        differences += _unpaired(a, b, sa, pairs)
        aligned.append((sa, pairs))
        if per_call_timing:
            if basis_of_timing is None:
                basis_of_timing = _TimingBasis.of(a, b, (wire_a, wire_b))
            differences += _timing(a, b, sa, pairs, tolerances, basis_of_timing)
        directions = (Direction.OUT, Direction.IN) if align == "order" else (Direction.IN,)
        if align != "order":
            differences += _call_bytes(a, b, sa, sb, pairs)
        for direction in directions:
            found, unknown = _stream_bytes(a, b, sa, sb, direction)
            differences += found
            not_compared["stream_bytes"] += unknown
        if options.segmentation == "strict":
            differences += _segmentation(a, b, sa, sb)
        elif options.tolerated:
            tolerated += _segmentation(a, b, sa, sb)
    found, not_compared["completions"] = _statuses(a, b, aligned, end_a)
    differences += found
    baseline = None
    if noise is not None:
        mapping = {
            sa: sc for sa, sc in match_sockets(a, noise) if sa is not None and sc is not None
        }
        baseline = (noise, first_wire_ns(noise), mapping)
    floor = {metric: tol.absolute_ns for metric, tol in tolerances.items()}
    moved = (
        shifts(
            a, b, sockets, (wire_a, wire_b), noise=baseline, min_shift=options.min_shift,
            floor_ns=floor,
        )
        if options.timing
        else []
    )  # fmt: skip
    for shift in moved:
        if shift.verdict in ("regression", "improvement", "noise"):
            d = Difference(
                "distribution", shift.socket, None, None, shift.describe(), shift.as_dict()
            )
            (tolerated if shift.verdict == "noise" else differences).append(d)
    order = {kind: k for k, kind in enumerate(KINDS)}
    differences.sort(key=lambda d: (order[d.kind], d.socket or 0, d.call_a or d.call_b or 0))
    return DiffResult(
        align,
        compared,
        differences,
        tolerated,
        moved,
        not_compared=not_compared,
        runs=runs(differences, KINDS, _call_ranks(a, differences)),
        tolerances=tolerances,
        tolerance_basis=basis,
    )


def _call_ranks(trace: Trace, differences: list[Difference]) -> dict[int, int]:
    """Call index -> its position among its socket's calls (in index order), for the calls
    the differences name."""
    wanted = np.array(sorted({d.call_a for d in differences if d.call_a is not None}), np.int64)
    sockets = trace.calls.column("socket")[wanted]
    ranks = np.empty(len(wanted), np.int64)
    for sid in np.unique(sockets).tolist():
        mine = sockets == sid
        members = np.sort(trace.calls.rows_of(sid))
        ranks[mine] = np.searchsorted(members, wanted[mine])
    return dict(zip(wanted.tolist(), ranks.tolist(), strict=True))


def _unpaired(a: Trace, b: Trace, sid: int, pairs: Alignment) -> list[Difference]:
    out = []
    length_a, length_b = a.calls.column("length"), b.calls.column("length")
    for k in np.flatnonzero(pairs.a < 0).tolist():
        j = int(pairs.b[k])
        detail = f"call {j} of B ({int(length_b[j])} bytes) not in A"
        out.append(Difference("inserted", sid, None, j, detail))
    for k in np.flatnonzero(pairs.b < 0).tolist():
        i = int(pairs.a[k])
        detail = f"call {i} of A ({int(length_a[i])} bytes) not in B"
        out.append(Difference("removed", sid, i, None, detail))
    return out


def _statuses(
    a: Trace, b: Trace, aligned: list[tuple[int, Alignment]], end_a: int
) -> tuple[list[Difference], int]:
    """Returned and completion statuses and Information, and whether each IRP completed,
    where both traces know, over every socket's aligned pairs at once; and how many
    completions could not be compared."""
    paired = [(sid, p, (p.a >= 0) & (p.b >= 0)) for sid, p in aligned]
    none = [np.empty(0, np.int64)]
    ia = np.concatenate(none + [p.a[m] for _, p, m in paired]).astype(np.int64)
    ib = np.concatenate(none + [p.b[m] for _, p, m in paired]).astype(np.int64)
    sids = np.concatenate(none + [np.full(int(m.sum()), sid, np.int64) for sid, _, m in paired])
    ca, cb = a.calls, b.calls
    out: list[Difference] = []
    state_a, state_b = ca.column("completed")[ia], cb.column("completed")[ib]
    done_a, done_b = state_a == COMPLETED, state_b == COMPLETED
    after_a = (state_a == NOT_COMPLETED) & done_b & (cb.column("completion_ns")[ib] > end_a)
    known = (state_a != COMPLETION_UNKNOWN) & (state_b != COMPLETION_UNKNOWN) & ~after_a
    checks = [
        ("status", "returned", np.ones(len(ia), bool), True),
        ("completed", "completed", known, False),
        ("completion_status", "completion status", done_a & done_b, True),
        ("information", "Information", done_a & done_b, False),
    ]
    for kind, label, where, symbolic in checks:
        va = ca.column(kind)[ia].astype(np.int64)
        vb = cb.column(kind)[ib].astype(np.int64)
        for k in np.flatnonzero(where & (va != vb)).tolist():
            x, y = int(va[k]), int(vb[k])
            shown = (nt.describe(x), nt.describe(y)) if symbolic else (x, y)
            out.append(
                Difference(
                    kind,
                    int(sids[k]),
                    int(ia[k]),
                    int(ib[k]),
                    f"call {int(ia[k])}: {label} {shown[0]} in A, {shown[1]} in B",
                    x,
                    y,
                )
            )
    return out, int((~known).sum())


def issue_anchors(a: Trace, b: Trace) -> tuple[int, int]:
    """Where issue times count from in A and in B: A's first call, and the same moment in
    B's time when B is a replay that says where it started (``metadata.replay.origin_ns``:
    the replay's time zero, the recording's times divided by its speed after it), else B's
    own first call. A late first call of a replay is then judged on its own, not passed to
    every call after it."""
    issue_a, issue_b = a.calls.column("issue_ns"), b.calls.column("issue_ns")
    first_a = int(issue_a.min()) if len(issue_a) else 0
    first_b = int(issue_b.min()) if len(issue_b) else 0
    replay = b.metadata.get("replay")
    speed = replay_speed(b.metadata)
    if b.metadata.get("source") == "replay" and isinstance(replay, Mapping) and speed:
        origin = replay.get("origin_ns")
        if isinstance(origin, int):
            first_b = origin + int((first_a - origin) / speed)
    return first_a, first_b


def _metric_values(
    trace: Trace, index: np.ndarray, wire: np.ndarray, first: int
) -> dict[str, np.ndarray]:
    """Per aligned call, each timing metric (ns), the issue time from ``first``; -1 where
    it has no value."""
    calls = trace.calls
    issue = calls.column("issue_ns")[index].astype(np.int64)
    completed = calls.column("completed")[index] == COMPLETED
    completion = calls.column("completion_ns")[index].astype(np.int64) - issue
    on_wire = wire[index]
    return {
        "issue": issue - first,
        "return": calls.column("return_ns")[index].astype(np.int64) - issue,
        "completion": np.where(completed, completion, -1),
        "wire": np.where(on_wire >= 0, on_wire - issue, -1),
    }


def replay_speed(metadata: Mapping[str, Any]) -> float | None:
    """The speed a replay ran at (its recorded times divided by it; None: as fast as
    possible); 1.0 for a trace that is no replay. A replay's issue times are compared
    with the recording's divided by it; latencies are compared as they are."""
    replay = metadata.get("replay")
    if metadata.get("source") != "replay" or not isinstance(replay, Mapping):
        return 1.0
    speed = replay.get("speed", 1.0)
    return float(speed) if isinstance(speed, int | float) and speed > 0 else None


@dataclass(frozen=True)
class _TimingBasis:
    """What every socket's per-call timing is measured against, found once per diff."""

    anchors: tuple[int, int]
    speed: float | None
    awaited: np.ndarray
    """``awaited_calls`` of A's calls."""
    wire: tuple[np.ndarray, np.ndarray]

    @classmethod
    def of(cls, a: Trace, b: Trace, wire: tuple[np.ndarray, np.ndarray]) -> _TimingBasis:
        anchors = issue_anchors(a, b)
        return cls(anchors, replay_speed(b.metadata), awaited_calls(a.calls), wire)


def _awaited_lateness(
    a: Trace,
    b: Trace,
    ia: np.ndarray,
    ib: np.ndarray,
    basis: _TimingBasis,
) -> tuple[np.ndarray, np.ndarray]:
    """Per aligned pair: the call A's call waited for (``awaited_calls``, -1 for none) and
    how much later, from each trace's anchor (:func:`issue_anchors`), B completed it than
    A did (0 where not later or not completed in both). A replayed call waits for that completion
    (docs/emulator.md, "Dependencies"), so this much of its lateness is the completion's,
    already judged on the awaited call, not its own."""
    awaited = basis.awaited[ia]
    speed = 1.0 if basis.speed is None else basis.speed
    partner = np.full(len(a.calls), -1, np.int64)
    partner[ia] = ib
    in_b = np.where(awaited >= 0, partner[np.maximum(awaited, 0)], -1)
    done_b = b.calls.column("completed") == COMPLETED
    known = (in_b >= 0) & done_b[np.maximum(in_b, 0)]
    first_a, first_b = basis.anchors
    done_at_a = a.calls.column("completion_ns").astype(np.int64)[np.maximum(awaited, 0)] - first_a
    done_at_a = (done_at_a / speed).astype(np.int64)
    done_at_b = b.calls.column("completion_ns").astype(np.int64)[np.maximum(in_b, 0)] - first_b
    late = np.where(known, np.maximum(done_at_b - done_at_a, 0), 0)
    return np.where(known, awaited, -1), late


def _timing(
    a: Trace,
    b: Trace,
    sid: int,
    pairs: Alignment,
    tolerances: Mapping[str, Tolerance],
    basis: _TimingBasis,
) -> list[Difference]:
    both = (pairs.a >= 0) & (pairs.b >= 0)
    ia, ib = pairs.a[both], pairs.b[both]
    (wire_a, wire_b), anchors, speed = basis.wire, basis.anchors, basis.speed
    va, vb = _metric_values(a, ia, wire_a, anchors[0]), _metric_values(b, ib, wire_b, anchors[1])
    awaited, late = _awaited_lateness(a, b, ia, ib, basis)
    if speed is not None:
        va["issue"] = (va["issue"] / speed).astype(np.int64)
    vb["issue"] = vb["issue"] - late
    out: list[Difference] = []
    for metric in METRICS:
        if metric == "issue" and speed is None:
            continue  # as fast as possible: no schedule to keep
        tol = tolerances[metric]
        x, y = va[metric], vb[metric]
        known = (x >= 0) & (y >= 0) if metric != "issue" else np.ones(len(x), bool)
        beyond = known & (np.abs(y - x) > tol.absolute_ns + tol.relative * np.abs(x))
        for k in np.flatnonzero(beyond).tolist():
            delta = int(y[k] - x[k])
            shown_b = int(y[k])
            waited = ""
            if metric == "issue" and late[k]:
                shown_b += int(late[k])
                waited = (
                    f"; not counting the {_duration(int(late[k]))} by which call "
                    f"{int(awaited[k])}'s completion, which it waited for, came later"
                )
            out.append(
                Difference(
                    "timing",
                    sid,
                    int(ia[k]),
                    int(ib[k]),
                    f"call {int(ia[k])}: {METRICS[metric]} {_duration(int(x[k]))} in A, "
                    f"{_duration(shown_b)} in B ({'+' if delta >= 0 else ''}{_duration(delta)}, "
                    f"tolerance {tol}{waited})",
                    {"metric": metric, "ns": int(x[k])},
                    {"metric": metric, "ns": int(y[k])},
                )
            )
    return out


def _call_at(trace: Trace, sid: int, direction: Direction, offset: int) -> int | None:
    """The call whose bytes hold ``offset`` of the socket's stream (OUT or UNSENT)."""
    if direction == Direction.IN:
        return None
    calls = trace.calls
    mine = np.flatnonzero(
        (calls.column("socket") == sid)
        & (nt.success_mask(calls.column("status")) == (direction == Direction.OUT))
    )
    start = calls.column("stream_offset")[mine].astype(np.int64)
    end = start + calls.column("length")[mine].astype(np.int64)
    hit = np.flatnonzero((start <= offset) & (offset < end))
    return int(mine[hit[0]]) if len(hit) else None


def _known_ranges(length: int, gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges of ``[0, length)`` outside ``gaps``."""
    out, at = [], 0
    for start, end in sorted(gaps):
        if start > at:
            out.append((at, min(start, length)))
        at = max(at, end)
    if at < length:
        out.append((at, length))
    return [(x, y) for x, y in out if y > x]


def _both_known(n: int, xa: Stream | None, xb: Stream | None) -> list[tuple[int, int]]:
    """The ranges of ``[0, n)`` neither stream marks as a gap."""
    gaps = [*(xa.gaps if xa is not None else []), *(xb.gaps if xb is not None else [])]
    return _known_ranges(n, gaps)


def _stream_bytes(
    a: Trace, b: Trace, sa: int, sb: int, direction: Direction
) -> tuple[list[Difference], int]:
    """The first byte where the streams differ, comparing only bytes both hold; and how
    many bytes one of them lacks."""
    xa, xb = a.streams.get((sa, direction)), b.streams.get((sb, direction))
    if xa is None and xb is None:
        return [], 0
    la = xa.length if xa is not None else 0
    lb = xb.length if xb is not None else 0
    name = "outbound" if direction == Direction.OUT else "inbound"
    if (xa is not None and xa.data is None) or (xb is not None and xb.data is None):
        return [], 0  # redacted: lengths only (compared by the calls' Information)
    da = xa.data if xa is not None and xa.data is not None else b""
    db = xb.data if xb is not None and xb.data is not None else b""
    n = min(len(da), len(db))
    known = _both_known(n, xa, xb)
    unknown = n - sum(end - start for start, end in known)
    at = None
    for start, end in known:
        at = first_difference(da, db, start, end)
        if at is not None:
            break
    if at is None and la != lb:
        at = n
    if at is None:
        return [], unknown
    lo, hi = max(at - CONTEXT_BYTES, 0), at + CONTEXT_BYTES
    call_a, call_b = _call_at(a, sa, direction, at), _call_at(b, sb, direction, at)
    sent_by = f" (call {call_a} of A, call {call_b} of B)" if direction == Direction.OUT else ""
    detail = f"{name} stream: first difference at byte {at}{sent_by}; {la} bytes in A, {lb} in B"
    return [
        Difference(
            "wire",
            sa,
            call_a,
            call_b,
            detail,
            {
                "offset": at,
                "length": la,
                "context": bytes(da[lo:hi]).hex(),
                "context_offset": lo,
                "direction": name,
            },
            {
                "offset": at,
                "length": lb,
                "context": bytes(db[lo:hi]).hex(),
                "context_offset": lo,
                "direction": name,
                "socket": sb,
            },
        )
    ], unknown


def _call_bytes(a: Trace, b: Trace, sid: int, sb: int, pairs: Alignment) -> list[Difference]:
    """Between two recordings: the bytes of each aligned pair of calls (an inserted or
    removed call's bytes are its own difference, not a shift of every later byte)."""
    check = (pairs.a >= 0) & (pairs.b >= 0)
    if pairs.same_key is not None:
        check &= ~pairs.same_key
    out: list[Difference] = []
    for k in np.flatnonzero(check).tolist():
        i, j = int(pairs.a[k]), int(pairs.b[k])
        xa, xb = a.call_payload(i), b.call_payload(j)
        if xa is None or xb is None or xa == xb:
            continue
        n = min(len(xa), len(xb))
        differ = np.flatnonzero(np.frombuffer(xa, np.uint8, n) != np.frombuffer(xb, np.uint8, n))
        at = int(differ[0]) if len(differ) else n
        lo, hi = max(at - CONTEXT_BYTES, 0), at + CONTEXT_BYTES
        start_a = int(a.calls.column("stream_offset")[i])
        start_b = int(b.calls.column("stream_offset")[j])
        out.append(
            Difference(
                "wire",
                sid,
                i,
                j,
                f"call {i}: its bytes differ from call {j} of B at byte {at} of the call "
                f"({len(xa)} bytes in A, {len(xb)} in B)",
                {
                    "offset": start_a + at,
                    "length": len(xa),
                    "context": xa[lo:hi].hex(),
                    "context_offset": start_a + lo,
                    "direction": "outbound",
                },
                {
                    "offset": start_b + at,
                    "length": len(xb),
                    "context": xb[lo:hi].hex(),
                    "context_offset": start_b + lo,
                    "direction": "outbound",
                    "socket": sb,
                },
            )
        )
    return out


def _segmentation(a: Trace, b: Trace, sa: int, sb: int) -> list[Difference]:
    (len_a, flags_a), (len_b, flags_b) = segmentation(a, sa), segmentation(b, sb)
    n = min(len(len_a), len(len_b))
    differ = np.flatnonzero((len_a[:n] != len_b[:n]) | (flags_a[:n] != flags_b[:n]))
    if not len(differ) and len(len_a) == len(len_b):
        return []
    k = int(differ[0]) if len(differ) else n
    shown_a = (int(len_a[k]), int(flags_a[k])) if k < len(len_a) else None
    shown_b = (int(len_b[k]), int(flags_b[k])) if k < len(len_b) else None
    return [
        Difference(
            "segmentation",
            sa,
            None,
            None,
            f"outbound segments: {len(len_a)} in A, {len(len_b)} in B; first difference at "
            f"segment {k}: {shown_a} in A, {shown_b} in B (length, flags)",
            {"segments": len(len_a), "at": k, "segment": shown_a},
            {"segments": len(len_b), "at": k, "segment": shown_b},
        )
    ]
