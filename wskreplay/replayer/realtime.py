"""The real-time replay engine: the trace's calls issued on a real target (the socket
target's kernel sockets, or a remote agent) at their recorded times.

Scheduling follows the emulator's engine (:mod:`~wskreplay.replayer.engine`): a call the
recording issued after an earlier call of its socket had completed waits for that
completion in the replay, then the recorded gap; a call issued after the recorded peer's
reset waits (bounded) for the replayed reset. Each socket waits on its own: the other
sockets' calls keep their recorded times meanwhile (:func:`run_calls`).

The target is anything with the methods of :class:`Session`.
"""

from __future__ import annotations

import bisect
import gc
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.replayer.engine import lifecycle_events, peer_reset_ns
from wskreplay.replayer.pacing import (
    SPIN_NS,
    lateness_summary,
    precise_sleeps,
    spin_until,
    wait_until,
)
from wskreplay.replayer.targets.socket_session import PeerReset, SessionEvent
from wskreplay.replayer.wsk_socket import Completed, Returned, Violation
from wskreplay.trace.model import COMPLETED, Direction, Event, Trace, time_span_ns

WAIT_LIMIT_NS = 10_000_000_000
"""The longest a call waits for a completion or a reset it depends on."""
SETTLE_NS = 5_000_000_000
"""After the last call: how long outstanding sends may take to complete."""
END_MARGIN_NS = 200_000_000
"""Past the recording's last moment: time for the recorded peer's last segments, sent at
their recorded times, to cross the link before the replay stops."""


class Session(Protocol):
    def now(self) -> int: ...

    def send(
        self,
        sid: int,
        irp: int | None,
        flags: int,
        payload: bytes,
        control_info: bytes | None = None,
        irql: int | None = None,
        recorded_at_once: bool = False,
        at: int | None = None,
    ) -> tuple[int, list[SessionEvent]]:
        """One WskSendEx; its issue time and what happened before it returned. ``at``:
        when the call is due (monotonic); the session waits for it, spinning, as late as
        it can before the call's I/O (the caller has let the rest of the wait pass)."""
        ...

    def disconnect(self, sid: int, *, abortive: bool) -> list[SessionEvent]: ...

    def close(self, sid: int) -> list[SessionEvent]: ...

    def poll(self, timeout_ns: int) -> list[SessionEvent]: ...

    def outstanding(self) -> bool: ...

    def received_count(self, sid: int) -> int | None:
        """How many bytes of the peer's stream the socket has read so far; None when the
        session cannot tell during the run."""
        ...


@dataclass(frozen=True)
class RealtimeOptions:
    speed: float | None = 1.0
    """Recorded inter-call timing divided by this; None: as fast as possible."""
    settle_ns: int = SETTLE_NS
    wait_limit_ns: int = WAIT_LIMIT_NS
    start_ns: int | None = None
    """When the trace's origin (:func:`replay_origin`) falls on the session's clock; None:
    20 ms from the start of the run."""


def replay_origin(trace: Trace) -> int:
    """Trace time zero of a real-time replay: its first call, or its first segment if
    earlier (a recorded peer that spoke before the first call speaks before it here)."""
    firsts = [int(trace.calls.column("issue_ns").min())] if len(trace.calls) else []
    if len(trace.segments):
        firsts.append(int(trace.segments.column("time_ns").min()))
    return min(firsts, default=0)


def received_by(trace: Trace) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per socket: (time, bytes of the peer's stream it had acknowledged by then), from its
    outbound segments' ACK fields, the peer's FIN not counted."""
    seg = trace.segments
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for sid in trace.sockets:
        mine = (seg.column("socket") == sid) & (seg.column("direction") == int(Direction.OUT))
        inbound = trace.streams.get((sid, Direction.IN))
        length = inbound.length if inbound is not None else 0
        acks = np.minimum(np.maximum.accumulate(seg.column("ack")[mine].astype(np.int64)), length)
        out[sid] = (seg.column("time_ns")[mine].astype(np.int64), acks)
    return out


def recorded_end(trace: Trace) -> int:
    """The last moment the recording shows (``model.time_span_ns``)."""
    span = time_span_ns(trace)
    return span[1] if span is not None else replay_origin(trace)


@dataclass
class RealtimeRun:
    """What the calls did, in trace time (the trace's origin, :func:`replay_origin`, =
    the replay's start)."""

    columns: dict[str, np.ndarray]
    scheduled_ns: np.ndarray
    lateness_ns: np.ndarray
    """Actual minus scheduled issue time of every call (ns), in call order."""
    events: list[Event]
    start_ns: int
    """The session clock's reading at trace time ``t0``."""
    t0: int
    duration_ns: int
    """From the first call's schedule to the last call's issue."""
    unfinished: list[int] = field(default_factory=list)
    """Calls whose completion never came within the settle time."""

    def pacing(self) -> dict[str, int]:
        return lateness_summary(self.lateness_ns)


def call_payloads(trace: Trace) -> list[bytes]:
    """The bytes of every call, prepared before a replay starts: the recorded bytes at the
    call's stream offsets, zeros where the trace does not hold them (a redacted trace
    replays its lengths; a capture's gaps, which diff does not compare, their length)."""
    calls = trace.calls
    out: list[bytes] = []
    streams = {key: s for key, s in trace.streams.items() if s.data is not None}
    for sid, offset, length, status in zip(
        calls.column("socket").tolist(),
        calls.column("stream_offset").tolist(),
        calls.column("length").tolist(),
        calls.column("status").tolist(),
        strict=True,
    ):
        direction = Direction.OUT if nt.is_success(status) else Direction.UNSENT
        stream = streams.get((sid, direction))
        piece = b""
        if stream is not None and stream.data is not None:
            piece = bytes(stream.data[offset : offset + length])
        out.append(piece + bytes(length - len(piece)))
    return out


@dataclass(slots=True)
class _Step:
    """One thing a socket does next: call ``call`` (its index), or ``event`` (a recorded
    disconnect or close), ``rank`` its place in the recording's order of everything."""

    rank: int
    call: int = -1
    event: Event | None = None
    waiting: list[int] | None = None
    """An event's: the calls the recording had seen complete by then, not yet done here."""
    head_since: int | None = None
    """When it became its socket's next step (its waits are bounded from then, or from
    its own time if later)."""


def run_calls(
    trace: Trace,
    session: Session,
    options: RealtimeOptions,
    progress: Callable[[int, int], None] | None = None,
) -> RealtimeRun:
    """Issue every call (and the recorded disconnects and closes) on ``session``.

    Each socket keeps its own schedule: a step waiting for its socket's completion, reset
    or received bytes holds that socket's later steps only, as the driver's sockets are
    independent; of the steps that may go, the one due first goes first (the recording's
    order breaks ties, and orders everything when replaying as fast as possible)."""
    calls = trace.calls
    n = len(calls)
    issue = calls.column("issue_ns").astype(np.int64).tolist()
    socket_of = calls.column("socket").astype(np.int64).tolist()
    completed = (calls.column("completed") == COMPLETED).tolist()
    completion = calls.column("completion_ns").astype(np.int64).tolist()
    flags_of = calls.column("flags").tolist()
    irql_of = calls.column("irql").tolist()
    control_len = calls.column("control_len").tolist()
    at_once = (calls.column("status") == nt.STATUS_SUCCESS).tolist()
    order = sorted(range(n), key=lambda i: (issue[i], i))
    t0 = replay_origin(trace)
    speed = options.speed

    def scaled(duration: int) -> int:
        return 0 if speed is None else int(duration / speed)

    recorded_done = sorted((completion[i], i) for i in range(n) if completed[i])
    recorded_reset = {
        sid: at for sid in trace.sockets if (at := peer_reset_ns(trace, sid)) is not None
    }
    # Plain lists while the calls run (a list store costs a fifth of a numpy one, and this
    # bookkeeping stands between one call's send and the next's); arrays at the end.
    cols: dict[str, list[int]] = {
        name: [0] * n
        for name in (
            "issue_ns", "return_ns", "status", "completed", "completion_ns",
            "completion_status", "information",
        )
    }  # fmt: skip
    issue_col, return_col, status_col = cols["issue_ns"], cols["return_ns"], cols["status"]
    scheduled = [0] * n
    lateness = [0] * n
    events: list[Event] = []
    done_at: dict[int, int] = {}
    reset_at: dict[int, int] = {}
    returned: set[int] = set()
    lag: dict[int, int] = {}
    awaited = _awaited(order, issue, socket_of, recorded_done)
    steps = _steps(trace, order, issue, socket_of)
    done_before: dict[int, list[tuple[int, int]]] = {}
    for at, j in recorded_done:
        done_before.setdefault(socket_of[j], []).append((at, j))
    had_received = received_by(trace)
    payloads = call_payloads(trace)
    precise_sleeps()
    start = options.start_ns if options.start_ns is not None else session.now() + 20_000_000
    to_trace = t0 - start
    own_time = [start + scaled(issued - t0) for issued in issue]  # on the session's clock

    def trace_time(mono: int) -> int:
        return mono + to_trace

    def absorb(outputs: list[SessionEvent]) -> None:
        for e in outputs:
            if isinstance(e, Completed):
                i = e.irp - 1
                cols["completed"][i] = 1
                cols["completion_ns"][i] = trace_time(e.time_ns)
                cols["completion_status"][i] = e.status
                cols["information"][i] = e.information
                done_at[i] = e.time_ns
            elif isinstance(e, Returned):
                if e.irp is not None:
                    return_col[e.irp - 1] = e.time_ns + to_trace
                    status_col[e.irp - 1] = e.status
                    returned.add(e.irp - 1)
            elif isinstance(e, Violation):
                events.append(
                    Event(
                        trace_time(e.time_ns),
                        "violation",
                        None,
                        {"kind": e.kind, "detail": e.detail, "seq": (e.irp or 0) - 1},
                    )
                )
            elif isinstance(e, PeerReset):
                reset_at.setdefault(e.socket, e.time_ns)
                events.append(
                    Event(
                        trace_time(e.time_ns),
                        "reset",
                        e.socket,
                        {"by": "peer", "status": nt.describe(e.status)},
                    )
                )

    def patient(since: int, own_ns: int, now: int) -> bool:
        """Whether a step still waits: for at most the wait limit past the later of its
        own time and when it began to wait."""
        return now - max(since, own_ns if speed is not None else since) < options.wait_limit_ns

    def call_due(i: int, since: int, now: int) -> int | None:
        """When call ``i`` may go: its recorded time, or later by what it waits for (its
        socket's completion plus the recorded gap, the peer's reset); None while that has
        not happened (and it still waits)."""
        t = own_time[i]
        j = awaited[i]
        if j >= 0:
            if j in done_at:
                t = max(t, done_at[j] + scaled(issue[i] - completion[j]))
            elif patient(since, own_time[i], now):
                return None
        sid = socket_of[i]
        recorded = recorded_reset.get(sid)
        if recorded is not None and issue[i] >= recorded:
            if sid in reset_at:
                t = max(t, reset_at[sid] + scaled(issue[i] - recorded))
            elif patient(since, own_time[i], now):
                return None
        return t

    def event_due(sid: int, step: _Step, since: int, now: int) -> int | None:
        """When a recorded disconnect or close may go: once the sends the recording had
        seen complete by then have, and the peer's bytes it had received by then have
        arrived (closing sooner would cut them off); then at its time, as late as the
        socket's last call was."""
        e = step.event
        assert e is not None
        t = start + scaled(e.time_ns - t0) + lag.get(sid, 0)
        waits = patient(since, t, now)
        if step.waiting is None:
            finished = done_before.get(sid, [])
            step.waiting = [j for _, j in finished[: bisect.bisect_right(finished, (e.time_ns, n))]]
        step.waiting = [j for j in step.waiting if j not in done_at]
        if waits and step.waiting:
            return None
        times, acked = had_received[sid]
        k = int(np.searchsorted(times, e.time_ns, side="right"))
        need = int(acked[k - 1]) if k else 0
        have = session.received_count(sid) if need else None
        if waits and have is not None and have < need:
            return None
        return t

    ready: list[tuple[int, int, int]] = []
    """(due, rank, socket) of each socket whose next step may go."""
    blocked: set[int] = set()

    def consider(sid: int, now: int) -> None:
        step = steps[sid][0]
        if step.head_since is None:
            step.head_since = now
        since = step.head_since
        due = event_due(sid, step, since, now) if step.call < 0 else call_due(step.call, since, now)
        if due is None:
            blocked.add(sid)
            return
        blocked.discard(sid)
        heapq.heappush(ready, (due if speed is not None else 0, step.rank, sid))

    def issue_call(i: int, due: int) -> int:
        sid = socket_of[i]
        t = due if speed is not None else session.now()
        if speed is not None:
            lag[sid] = t - own_time[i]
        actual, outputs = session.send(
            sid,
            i + 1,
            flags_of[i],
            payloads[i],
            calls.control_info(i) if control_len[i] >= 0 else None,
            None if irql_of[i] < 0 else irql_of[i],
            at_once[i],
            at=t if speed is not None else None,
        )
        scheduled[i] = t + to_trace
        lateness[i] = actual - t if speed is not None else 0
        issue_col[i] = actual + to_trace
        absorb(outputs)
        return actual

    def play_event(sid: int, e: Event, due: int) -> None:
        if speed is not None:
            spin_until(due)
        at = session.now()
        if e.kind == "close":
            absorb(session.close(sid))
        else:
            abortive = bool(int(e.attrs.get("flags", 0)) & wsk.WSK_FLAG_ABORTIVE)
            absorb(session.disconnect(sid, abortive=abortive))
        events.append(Event(trace_time(at), e.kind, sid, dict(e.attrs)))

    collecting = gc.isenabled()
    gc.disable()
    try:
        last_issue = session.now()
        issued_calls = 0
        for sid in steps:
            consider(sid, last_issue)
        while ready or blocked:
            if blocked:
                now = session.now()
                for sid in list(blocked):
                    consider(sid, now)
            if not ready:
                absorb(session.poll(1_000_000))
                continue
            due, _, sid = ready[0]
            if speed is not None and (left := due - session.now()) > SPIN_NS:
                absorb(session.poll(min(left - SPIN_NS, 1_000_000) if blocked else left - SPIN_NS))
                continue
            heapq.heappop(ready)
            step = steps[sid].popleft()
            if step.event is not None:
                play_event(sid, step.event, due)
            else:
                last_issue = max(last_issue, issue_call(step.call, due))
                issued_calls += 1
                if progress is not None and issued_calls % 256 == 0:
                    progress(issued_calls, n)
            if steps[sid]:
                consider(sid, session.now())
        wait_for_settle = session.now() + options.settle_ns
        while session.outstanding() and session.now() < wait_for_settle:
            absorb(session.poll(min(wait_for_settle - session.now(), 10_000_000)))
        if speed is not None:
            # The recorded peer's last actions (its data, FIN or RST after the last call).
            end = start + scaled(recorded_end(trace) - t0) + max(lag.values(), default=0)
            wait_until(end + END_MARGIN_NS, lambda ns: absorb(session.poll(ns)))
        absorb(session.poll(0))
    finally:
        if collecting:
            gc.enable()
    unfinished = [i for i in range(n) if i in returned and not cols["completed"][i]]
    return RealtimeRun(
        {name: np.array(column, np.int64) for name, column in cols.items()},
        np.array(scheduled, np.int64),
        np.array(lateness, np.int64),
        sorted(events, key=lambda e: e.time_ns),
        start,
        t0,
        last_issue - start,
        unfinished,
    )


def _awaited(
    order: list[int], issue: list[int], socket_of: list[int], recorded_done: list[tuple[int, int]]
) -> list[int]:
    """Per call: the last call of its socket the recording had seen complete when it was
    issued (it waits for that completion here), or -1."""
    awaited = [-1] * len(issue)
    last_done: dict[int, int] = {}
    cursor = 0
    for i in order:
        while cursor < len(recorded_done) and recorded_done[cursor][0] <= issue[i]:
            j = recorded_done[cursor][1]
            last_done[socket_of[j]] = j
            cursor += 1
        j = last_done.get(socket_of[i], -1)
        awaited[i] = j if j != i else -1
    return awaited


def _steps(
    trace: Trace, order: list[int], issue: list[int], socket_of: list[int]
) -> dict[int, deque[_Step]]:
    """Each socket's steps in the recording's order: its calls, each after the recorded
    disconnects and closes before it, then the rest of them."""
    lifecycle = {sid: deque(q) for sid, q in lifecycle_events(trace).items()}
    steps: dict[int, deque[_Step]] = {sid: deque() for sid in trace.sockets}
    rank = 0

    def events_before(sid: int, before: int | None) -> None:
        nonlocal rank
        queue = lifecycle.get(sid)
        while queue and (before is None or queue[0].time_ns < before):
            steps.setdefault(sid, deque()).append(_Step(rank, event=queue.popleft()))
            rank += 1

    for i in order:
        events_before(socket_of[i], issue[i])
        steps.setdefault(socket_of[i], deque()).append(_Step(rank, call=i))
        rank += 1
    for sid in trace.sockets:
        events_before(sid, None)
    return {sid: q for sid, q in steps.items() if q}
