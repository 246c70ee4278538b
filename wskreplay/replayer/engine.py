"""Replay engine: re-issue a trace's calls against the emulator and record what happens.

Calls go out per socket in recorded order at their recorded times (scaled by ``speed``,
or as soon as possible), except that a call the recording issued after an earlier call of
its socket had completed waits, in the replay, for that completion plus the recorded gap
(the driver was evidently waiting for it). The result is a trace in the same model: the
replayed calls (times, statuses, completions), the bytes the accepted calls sent, the wire
segments, violations as events, and ``replay_of`` with the target, profile and path in its
metadata. Virtual time: the same trace and options give the same output, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import numpy as np
from librt.vecs import vec
from mypy_extensions import i64

from wskreplay.errors import InputError
from wskreplay.forking import no_cyclic_collection
from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.replayer.calibrate import (
    calibrated_path,
    inferred_profile,
    mss_evidence,
    peer_window_known,
    rto_floor_ns,
    sender_mss,
    socket_pieces,
    socket_stack_delays,
)
from wskreplay.replayer.chaos import Chaos
from wskreplay.replayer.peer import PathParams, PeerScript, RecordedPeer
from wskreplay.replayer.peer_script import peer_script
from wskreplay.replayer.profile import TransportProfile
from wskreplay.replayer.replayed_streams import replayed_streams
from wskreplay.replayer.targets.emulator import EmulatedConnection, WireColumns, int64_view
from wskreplay.replayer.tcp_sender import NEVER
from wskreplay.replayer.wsk_socket import Completed, Returned, SendRequest, Violation
from wskreplay.threads import Background
from wskreplay.trace.inplace import window
from wskreplay.trace.model import (
    SEGMENT_SCHEMA,
    CallTable,
    Clock,
    Direction,
    Event,
    SegmentTable,
    SocketPart,
    Stream,
    Trace,
    awaited_calls,
    socket_parts,
    time_span_ns,
)

WOULD_BUGCHECK: Final = 0xE0570001
"""Not a Windows status (customer bit set): the status column of a call whose Length ran
past its MDL chain, which would have stopped the machine instead of returning."""
SETTLE_NS: Final = 120_000_000_000
"""The least a wait (and the end of the replay) lets pass on a socket; a socket recorded
for longer than half of it lets twice its own recorded duration pass, so a peer that acted
after a long silence is still replayed (a wait never hangs)."""
MAX_SETTLE_NS: Final = 3_600_000_000_000
"""The most a wait lets pass, and the end of a replay of a socket whose own recorded span
is longer (a capture merging interfaces with different clocks can show one connection
across years, which would otherwise run its timers for years)."""
LATEST_TIME_NS: Final = 3 << 60
"""The latest recorded time a replay takes, in ns after the trace's clock zero (109 years;
a shared capture's odd interface clock runs to 92): the emulator keeps its unarmed timers
at ``NEVER`` (2**62 - 1), and what a replay adds to the recorded times (waits of at most
an hour, backoffs, settling) stays far below the 36 years between."""


@dataclass(frozen=True)
class ReplayOptions:
    profile: TransportProfile
    speed: float | None = 1.0
    """Recorded inter-call timing divided by this; None: as fast as possible."""
    completion: str | None = None
    """Completion policy override; default: the trace's inferred policy, else the profile's."""
    seed: int = 0
    peer: str = "recorded"
    """``recorded``: each socket's peer reacts as the recorded one did (when the recording
    has its segments and the replay runs at recorded speed); ``parametric``: a path and
    receiver with the recorded RTT, window and delayed-ACK time only."""
    chaos: int | None = None
    """A seed: perturb peer timing, completion delays and segment boundaries (chaos.py)."""


def peer_reset_ns(trace: Trace, socket: int) -> int | None:
    resets = [
        e.time_ns
        for e in trace.events
        if e.socket == socket
        and e.kind == "reset"
        and e.attrs.get("by") == "peer"
        and not e.attrs.get("ignored")
    ]
    return min(resets) if resets else None


PROGRESS_EVERY: Final = 4096
"""Calls between two reports to a replay's progress callback."""

CALL_INPUTS: Final = (
    "socket",
    "issue_ns",
    "position",
    "awaited",
    "completion_ns",
    "flags",
    "length",
    "control_len",
    "irql",
    "at_once",
)
"""What a replay reads of each call (:attr:`ReplayPlan.row`): its socket, recorded issue
time, place in the replay's order (:attr:`ReplayPlan.order`), the call whose completion it
waited for in the recording (-1: none), recorded completion time, flags, length, control
info length (-1: none), IRQL (-1: not recorded), and whether it returned
STATUS_SUCCESS."""
INPUTS: Final = len(CALL_INPUTS)
SOCKET: Final = 0
ISSUE_NS: Final = 1
POSITION: Final = 2
AWAITED: Final = 3
COMPLETION_NS: Final = 4
FLAGS: Final = 5
LENGTH: Final = 6
CONTROL_LEN: Final = 7
IRQL: Final = 8
AT_ONCE: Final = 9

CALL_COLUMNS: Final = (
    "issue_ns",
    "return_ns",
    "status",
    "completed",
    "completion_ns",
    "completion_status",
    "information",
)
"""The columns a replay writes for each call (:attr:`_Replay.out`)."""
OUTPUTS: Final = len(CALL_COLUMNS)
ISSUE_NS_OUT: Final = 0
RETURN_NS: Final = 1
STATUS: Final = 2
COMPLETED: Final = 3
COMPLETION_NS_OUT: Final = 4
COMPLETION_STATUS: Final = 5
INFORMATION: Final = 6


def replay(
    trace: Trace,
    options: ReplayOptions,
    *,
    source_sha256: str = "",
    progress: Callable[[int, int], None] | None = None,
    plan: ReplayPlan | None = None,
) -> Trace:
    """Replay every call; the replayed trace. ``progress(done, total)`` is told the calls
    replayed every :data:`PROGRESS_EVERY` calls. ``plan``: the trace's
    :class:`ReplayPlan` for these options (chaos aside), to replay it again without working
    it out again.

    The cyclic garbage collector is paused meanwhile: a replay makes millions of small
    objects, none in a cycle, and the collector's full passes over them made the cost per
    call grow with the trace (24 us at 100k calls, 35 us with it running)."""
    steps = _steps(trace, options, source_sha256, report=False, plan=plan)
    total = len(trace.calls)
    done = 0
    with no_cyclic_collection():
        while True:
            try:
                next(steps)
            except StopIteration as finished:
                return finished.value
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, total)


def replay_until(trace: Trace, options: ReplayOptions, seq: int) -> dict[str, Any]:
    """Replay up to and including call ``seq``; the state of its socket's emulator then."""
    for step in steps(trace, options):
        if step.call == seq:
            return socket_state(trace, step)
    raise InputError(None, f"--until {seq}: the trace has calls 0..{len(trace.calls) - 1}")


@dataclass(frozen=True)
class Step:
    """One call replayed: its index, socket and emulator, and what the replay reported
    since the previous call (its return, completions of it and of earlier calls, contract
    violations), in the order they happened."""

    call: int
    socket: int
    connection: EmulatedConnection
    events: list[Returned | Completed | Violation]


def steps(trace: Trace, options: ReplayOptions) -> Iterator[Step]:
    """The replay of ``trace``, one call at a time (``--step``, ``--break-on``, ``--until``)."""
    for step in _steps(trace, options, "", report=True):
        assert step is not None
        yield step


def socket_state(trace: Trace, step: Step) -> dict[str, Any]:
    """The state of the step's socket (WSK, TCP sender, peer) after its call, as JSON."""
    call = trace.calls[step.call]
    state = step.connection.state()
    irps = state["wsk"].pop("outstanding_irps")
    state["wsk"]["outstanding_calls"] = [irp - 1 for irp in irps]
    return {
        "seq": step.call,
        "socket": step.socket,
        "time_ns": step.connection.now,
        "call": {"flags": call.flags, "length": call.length},
        **state,
    }


def _steps(
    trace: Trace,
    options: ReplayOptions,
    source_sha256: str,
    *,
    report: bool,
    plan: ReplayPlan | None = None,
) -> Generator[Step | None, None, Trace]:
    """The replay, yielding after each call: its :class:`Step` when ``report``, else None
    (a replay run to its end makes no step objects)."""
    plan = plan_for(trace, options, plan)
    run = _Replay(plan, options, report)
    for i in plan.order:
        yield run.call(i)
    run.settle()
    return run.build(source_sha256)


def plan_for(trace: Trace, options: ReplayOptions, plan: ReplayPlan | None) -> ReplayPlan:
    """``plan`` if it was made for this trace and these options (chaos aside), a new one
    if None."""
    if plan is None:
        return ReplayPlan(trace, options)
    if plan.trace is not trace or plan.options != replace(options, chaos=None):
        raise ValueError("a replay plan serves the trace and options it was made for")
    return plan


class ReplayPlan:
    """What a replay works out from the trace before its calls: the profile, the order of
    the calls and their inputs as lists, and each socket's calibration and peer script
    (:class:`SocketPlan`, worked out when a replay first opens the socket). Nothing in it
    depends on the chaos seed or changes once worked out, so ``check --chaos-runs`` works it
    out once for all its replays (for a capture of 284 connections it was half of each
    replay)."""

    def __init__(self, trace: Trace, options: ReplayOptions) -> None:
        latest = _latest_time(trace)
        if latest > LATEST_TIME_NS:
            raise InputError(
                None,
                f"recorded times run to {latest} ns after the clock's zero, past the "
                f"replay's limit of {LATEST_TIME_NS} ns (3 * 2**60, 109 years)",
            )
        self.trace = trace
        self.options = replace(options, chaos=None)
        worked_out = Background(_parts_and_profile, trace, options)
        calls = trace.calls
        n = len(calls)
        issue = calls.column("issue_ns").astype(np.int64)
        order = np.lexsort((np.arange(n), issue))
        self.order: vec[i64] = vec[i64](order)
        position = np.empty(n, np.int64)
        position[order] = np.arange(n)
        inputs = _rows(
            {
                "socket": calls.column("socket"),
                "issue_ns": issue,
                "position": position,
                "awaited": awaited_calls(calls),
                "completion_ns": calls.column("completion_ns"),
                "flags": calls.column("flags"),
                "length": calls.column("length"),
                "control_len": calls.column("control_len"),
                "irql": calls.column("irql"),
                "at_once": calls.column("status") == nt.STATUS_SUCCESS,
            }
        )
        self.row: vec[i64] = vec[i64](inputs.reshape(-1))
        """The calls' inputs (:data:`CALL_INPUTS`), a row per call, end to end: call
        ``i``'s input ``k`` is ``row[i * INPUTS + k]``, one or two cache lines a call, read
        compiled without boxing an int. As a list per input, their ints were read from all
        over the heap and, in the forked processes, their reference counts written to
        pages shared with the parent (docs/performance.md, "Replay: native int64 vectors
        for what a call reads and writes")."""
        self.socket_of = calls.column("socket")
        """Call -> its socket (the trace's column)."""
        self.stack_delay: vec[i64] = vec[i64](np.zeros(n, np.int64))
        """Call -> its recorded stack delay (:func:`calibrate.stack_delays_ns`), filled in
        with its socket's plan (apart from :attr:`row`, which the forked processes then
        only read)."""
        self.rank = {sid: k for k, sid in enumerate(trace.sockets)}
        """Socket -> its place in the trace's sockets (the order they settle in)."""
        self.t0 = int(issue.min()) if n else 0
        self.sockets: dict[int, SocketPlan] = {}
        """Socket -> its :class:`SocketPlan`, worked out when its connection is made, by
        the process that replays it."""
        self.scripts: dict[int, PeerScript | None] = {}
        """Socket -> its recorded peer's script, when the replay acts it out: worked out
        when the socket's connection is made (by the process that replays it)."""
        self.pieces: dict[int, list[tuple[int, int]]] = {}
        """Call -> its release pieces (:func:`calibrate.release_pieces`), filled in with
        its socket's plan."""
        self.lifecycle = lifecycle_events(trace)
        """Socket -> its recorded disconnects and closes (each replay takes a copy)."""
        parts, profile = worked_out.result()
        self.parts = parts
        self.own = {sid: part.trace for sid, part in parts.items()}
        """Socket -> a trace of its rows alone: each socket is calibrated from its rows."""
        self.profile = profile

    def socket(self, sid: int) -> SocketPlan:
        """Socket ``sid``'s plan, worked out from its own rows the first time it is asked
        for; its calls' stack delays and release pieces with it."""
        plan = self.sockets.get(sid)
        if plan is None:
            plan = self.sockets[sid] = self._socket(sid)
        return plan

    def _socket(self, sid: int) -> SocketPlan:
        options, part = self.options, self.parts[sid]
        own = part.trace
        mss = sender_mss(own, sid) or self.profile.tcp.mss
        calibrated, evidence = calibrated_path(own, sid, options.seed)
        path = replace(calibrated, mss=mss)
        first, last = time_span_ns(own, sid) or (0, 0)
        floor = rto_floor_ns(own, sid) if options.speed == 1.0 else 0
        rows = part.call_rows.tolist()
        stack_delay = self.stack_delay
        for row, delay in zip(rows, socket_stack_delays(own, sid).tolist(), strict=True):
            stack_delay[row] = delay
        if "inferred" in self.trace.metadata:
            for call, pieces in socket_pieces(own, sid, path).items():
                self.pieces[rows[call]] = pieces
        return SocketPlan(
            path,
            peer_reset_ns(own, sid),
            (first, last),
            min(max(SETTLE_NS, 2 * (last - first)), MAX_SETTLE_NS),
            floor,
            {
                **asdict(path),
                "rto_floor_ns": floor,
                "evidence": {
                    **evidence,
                    "mss": mss_evidence(own, sid),
                    "rto_floor_ns": "the recorded sender's waits without a resend"
                    if floor
                    else "none: the recording shows no wait, or the replay is not at its "
                    "recorded speed",
                },
            },
        )

    def script(self, sid: int) -> PeerScript | None:
        """Socket ``sid``'s recorded peer's script (None: the replay does not act it out),
        worked out the first time it is asked for."""
        if sid not in self.scripts:
            self.scripts[sid] = self._script(sid)
        return self.scripts[sid]

    def _script(self, sid: int) -> PeerScript | None:
        options, path = self.options, self.socket(sid).path
        if options.peer == "parametric" or options.speed != 1.0:
            return None
        script = peer_script(self.own[sid], sid, path.rtt_ns, self.profile.reset, path.rate_bps)
        if script is not None and not peer_window_known(self.trace, sid):
            script = replace(script, windows=())
        return script


def _rows(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The columns (:data:`CALL_INPUTS`, in its order) as a row-major int64 table."""
    rows = np.empty((len(columns["socket"]), INPUTS), np.int64)
    for k, name in enumerate(CALL_INPUTS):
        rows[:, k] = columns[name]
    return rows


def _latest_time(trace: Trace) -> int:
    calls, segments = trace.calls, trace.segments
    latest = [e.time_ns for e in trace.events]
    for column in (calls.column("issue_ns"), calls.column("completion_ns")):
        if len(column):
            latest.append(int(column.max()))
    if len(segments):
        latest.append(int(segments.column("time_ns").max()))
    return max(latest, default=0)


def _parts_and_profile(
    trace: Trace, options: ReplayOptions
) -> tuple[dict[int, SocketPart], TransportProfile]:
    """The trace's :func:`socket_parts` and the profile inferred with them: numpy's
    gathers and sorts, worked out in a thread beside the plan's call lists."""
    parts = socket_parts(trace)
    return parts, inferred_profile(trace, options.profile, options.completion, parts)


@dataclass(frozen=True)
class SocketPlan:
    """What a replay works out for one socket from its recorded rows before its first
    call: the path it replays on, when its peer reset it in the recording, its recorded
    span and settle time, its RTO floor, and that path's metadata (each value with where
    it came from)."""

    path: PathParams
    recorded_reset: int | None
    """When its peer reset it in the recording: a call issued after that waits, in the
    replay, for the replayed reset (if it comes), the way it waits for completions."""
    span: tuple[int, int]
    settle: int
    rto_floor: int
    metadata: dict[str, Any]


class _Replay:
    """One replay's state: its connections and what the replay has reported so far. An
    object rather than the generator's closures: the closures and the generator's frame
    held each other, so the replay's millions of values outlived it until the cyclic
    collector found them (0.17 s for 300,000 calls)."""

    def __init__(
        self,
        plan: ReplayPlan,
        options: ReplayOptions,
        report: bool,
        sockets: list[int] | None = None,
    ) -> None:
        """``sockets``: open only these now (a replay run in several processes opens each
        of its sockets with :meth:`open` when it takes it); default every socket of the
        trace."""
        self.plan = plan
        self.options = options
        self.report = report
        self.socks: dict[int, _SocketReplay] = {}
        """Socket -> its part of this replay, once opened."""
        self.peers: dict[str, str] = {}
        self.paths: dict[str, dict[str, Any]] = {}
        """Socket (as text) -> its path's metadata (:attr:`SocketPlan.metadata`)."""
        self.wire = {sid: WireColumns() for sid in plan.trace.sockets}
        """Socket -> its wire segments, which its connection adds as they happen."""
        for sid in plan.trace.sockets if sockets is None else sockets:
            self.open(sid)
        self.out: vec[i64] = vec[i64](np.zeros(len(plan.socket_of) * OUTPUTS, np.int64))
        """What the replay made of each call (:data:`CALL_COLUMNS`), a row per call, end
        to end (:meth:`put`): as lists, their ints were read back from all over the heap
        to become arrays at the end (docs/performance.md, "Replay: native int64 vectors
        for what a call reads and writes")."""
        self.events: list[Event] = []
        self.event_steps: list[int] = []
        """Per event, the step that reported it (the place in :attr:`ReplayPlan.order` of its
        call; after the calls, one past them per socket): events at the same time sort
        by it, so a replay run in parallel orders them as one run in one process."""
        self.step = 0
        self.received: dict[int, int] = {}
        """Socket -> bytes of the peer's stream it received, once settled."""
        self.call_arrays: dict[str, np.ndarray] | None = None
        """The calls' columns as arrays, once sealed (:meth:`seal`)."""
        self.taken: list[ReplayShare] = []
        """The shares of the other sockets' replays, taken in (:meth:`take`)."""
        self.reported: list[Returned | Completed | Violation] = []
        """What the replay reported since the last step."""

    def open(self, sid: int) -> None:
        """Make socket ``sid``'s emulated connection."""
        plan = self.plan
        conn = self._connection(sid, plan.trace.sockets[sid].category)
        self.socks[sid] = _SocketReplay(conn, plan.sockets[sid], list(plan.lifecycle.get(sid, [])))

    def _connection(self, sid: int, category: str) -> EmulatedConnection:
        plan, options = self.plan, self.options
        profile = plan.profile
        socket = plan.socket(sid)
        path, script = socket.path, plan.script(sid)
        peer = None
        if script is not None:
            first = int(plan.own[sid].segments.column("time_ns").min())
            peer = RecordedPeer(path, script, first)
        self.peers[str(sid)] = "recorded" if peer is not None else "parametric"
        self.paths[str(sid)] = socket.metadata
        reset_at = socket.recorded_reset
        floor = socket.rto_floor
        return EmulatedConnection(
            profile.with_changes(
                "tcp",
                rto_min_ns=max(profile.tcp.rto_min_ns, floor),
                rto_initial_ns=max(profile.tcp.rto_initial_ns, floor),
            ),
            path,
            category=category if category in ("connection", "stream") else "connection",
            mss=path.mss,
            peer_reset_ns=(
                None
                if peer is not None or reset_at is None
                else plan.t0 + self.scaled(reset_at - plan.t0)
            ),
            peer=peer,
            chaos=None if options.chaos is None else Chaos(options.chaos, sid),
            wire=self.wire[sid],
        )

    def scaled(self, duration: int) -> int:
        """A recorded duration in the replay's time (0 when replaying as fast as possible)."""
        speed = self.options.speed
        return 0 if speed is None else int(duration / speed)

    def call(self, i: int) -> Step | None:
        """Replay call ``i``: its :class:`Step` when reporting, else None."""
        plan = self.plan
        row, at = plan.row, i * INPUTS
        sid = row[at + SOCKET]
        issued = row[at + ISSUE_NS]
        sock = self.socks[sid]
        conn = sock.conn
        self.step = row[at + POSITION]
        speed = self.options.speed
        t0 = plan.t0
        if sock.next_lifecycle_ns < issued:
            self.play_lifecycle(sid, sock, issued)
        t = conn.now if speed is None else t0 + self.scaled(issued - t0)
        waits_for = row[at + AWAITED]
        if waits_for >= 0:
            self.let_time_pass(sid, sock, waits_for)
            if self.output(waits_for, COMPLETED):
                gap = self.scaled(issued - row[waits_for * INPUTS + COMPLETION_NS])
                t = max(t, self.output(waits_for, COMPLETION_NS_OUT) + gap)
        reset_at = sock.plan.recorded_reset
        if reset_at is not None and issued >= reset_at and conn.reset_time() is None:
            self.let_time_pass(sid, sock, -1)
            reset_seen = conn.reset_time()
            if reset_seen is not None:
                t = max(t, reset_seen + self.scaled(issued - reset_at))
        t = max(t, conn.now)
        if speed is not None:
            sock.lag = t - (t0 + self.scaled(issued - t0))
        self.put(i, ISSUE_NS_OUT, t)
        irql = row[at + IRQL]
        req = SendRequest(
            t,
            i + 1,
            row[at + FLAGS],
            row[at + LENGTH],
            None,
            plan.trace.calls.control_info(i) if row[at + CONTROL_LEN] >= 0 else None,
            None if irql < 0 else irql,
            row[at + AT_ONCE] != 0,
        )
        piece_list = plan.pieces.get(i) if plan.pieces else None
        if piece_list is not None and speed is not None:
            piece_list = [(length, self.scaled(delay)) for length, delay in piece_list]
        else:
            piece_list = None
        outputs = conn.call(req, self.scaled(plan.stack_delay[i]), piece_list)
        self.absorb(sid, outputs)
        if not _returned(outputs):
            self.put(i, RETURN_NS, t)
            self.put(i, STATUS, WOULD_BUGCHECK)
        if not self.report:
            return None
        step = Step(i, sid, conn, list(self.reported))
        self.reported.clear()
        return step

    def put(self, i: int, column: int, value: int) -> None:
        """Call ``i``'s output ``column`` (:data:`CALL_COLUMNS`) is ``value``."""
        self.out[i * OUTPUTS + column] = value

    def output(self, i: int, column: int) -> int:
        return self.out[i * OUTPUTS + column]

    def absorb(self, sid: int, outputs: list) -> None:
        """File what the connection reported: returns, completions and violations (its
        wire segments went to :attr:`wire` as they happened)."""
        for e in outputs:
            if self.report:
                self.reported.append(e)
            if isinstance(e, Completed):
                i = e.irp - 1
                self.put(i, COMPLETED, 1)
                self.put(i, COMPLETION_NS_OUT, e.time_ns)
                self.put(i, COMPLETION_STATUS, e.status)
                self.put(i, INFORMATION, e.information)
            elif isinstance(e, Returned):
                if e.irp is not None:
                    self.put(e.irp - 1, RETURN_NS, e.time_ns)
                    self.put(e.irp - 1, STATUS, e.status)
            elif isinstance(e, Violation):
                self.event(
                    Event(
                        e.time_ns,
                        "violation",
                        sid,
                        {"kind": e.kind, "detail": e.detail, "seq": (e.irp or 0) - 1},
                    )
                )

    def event(self, e: Event) -> None:
        self.events.append(e)
        self.event_steps.append(self.step)

    def play_lifecycle(self, sid: int, sock: _SocketReplay, before: int | None) -> None:
        """The driver's recorded disconnects and closes of ``sid`` before ``before``."""
        queue, conn = sock.lifecycle, sock.conn
        while queue and (before is None or queue[0].time_ns < before):
            e = queue.pop(0)
            sock.next_lifecycle_ns = queue[0].time_ns if queue else NEVER
            at = conn.now
            if self.options.speed is not None:
                t0 = self.plan.t0
                at = max(t0 + self.scaled(e.time_ns - t0) + sock.lag, conn.now)
            if e.kind == "close":
                self.absorb(sid, conn.close(at))
            else:
                abortive = bool(int(e.attrs.get("flags", 0)) & wsk.WSK_FLAG_ABORTIVE)
                self.absorb(sid, conn.disconnect(at, abortive=abortive))
            self.event(Event(at, e.kind, sid, dict(e.attrs)))

    def let_time_pass(self, sid: int, sock: _SocketReplay, completion_of: int) -> None:
        """Run the connection event by event until call ``completion_of`` has completed
        (-1: until the peer's reset has arrived), nothing is left to happen, or the
        socket's settle time has passed (a wait never hangs)."""
        conn = sock.conn
        limit = conn.now + sock.plan.settle
        while not (
            self.output(completion_of, COMPLETED)
            if completion_of >= 0
            else conn.reset_time() is not None
        ):
            step = conn.next_time()
            if step == NEVER or step > limit:
                break
            self.absorb(sid, conn.run_until(step))

    def settle(self) -> None:
        """Let every connection of this replay settle after its last call."""
        for sid in self.plan.trace.sockets:
            if sid in self.socks:
                self.settle_socket(sid)

    def settle_socket(self, sid: int) -> None:
        """Let socket ``sid`` settle after its last call: its remaining disconnects and
        closes, then its settle time."""
        plan = self.plan
        sock = self.socks[sid]
        conn = sock.conn
        self.step = len(plan.order) + plan.rank[sid]
        self.play_lifecycle(sid, sock, None)
        socket = sock.plan
        first, last = socket.span
        horizon = max(last - conn.now, 0) + socket.settle
        if last - first > MAX_SETTLE_NS:
            horizon = min(horizon, MAX_SETTLE_NS)
        self.absorb(sid, conn.settle(horizon))
        reset_seen = conn.reset_time()
        if reset_seen is not None:
            self.event(Event(reset_seen, "reset", sid, {"by": "peer"}))
        self.received[sid] = conn.received

    def seal(self) -> None:
        """Turn what this replay made into arrays, once settled (nothing is added after
        that): a process replaying a share of the sockets does it while the others still
        run."""
        rows = int64_view(self.out).reshape(-1, OUTPUTS)
        self.call_arrays = {name: rows[:, k].copy() for k, name in enumerate(CALL_COLUMNS)}
        for sid in self.socks:
            self.wire[sid] = WireColumns.of(self.wire[sid].arrays())

    def share(self) -> ReplayShare:
        """What this replay of some of the sockets produced, once sealed, for the replay
        of the others to take in (:meth:`take`)."""
        assert self.call_arrays is not None
        sockets = np.asarray(self.plan.socket_of)
        calls = np.flatnonzero(np.isin(sockets, np.array(list(self.socks), np.int64)))
        return ReplayShare(
            calls,
            {name: values[calls] for name, values in self.call_arrays.items()},
            {sid: self.wire[sid].arrays() for sid in self.socks},
            self.events,
            self.event_steps,
            dict(self.received),
            dict(self.peers),
            {key: self.paths[key] for key in self.peers},
        )

    def take(self, share: ReplayShare) -> None:
        """Take in what a replay of other sockets of the same plan produced."""
        self.taken.append(share)
        for sid, arrays in share.wire.items():
            self.wire[sid] = WireColumns.of(arrays)
        self.events.extend(share.events)
        self.event_steps.extend(share.event_steps)
        self.received.update(share.received)
        self.peers.update(share.peers)
        self.paths.update(share.paths)

    def build(self, source_sha256: str) -> Trace:
        """The replayed trace, once every socket has settled (here or in a share taken)."""
        plan, options = self.plan, self.options
        trace = plan.trace
        out = Trace(
            metadata={
                "source": "replay",
                "replay_of": source_sha256,
                "target": {"kind": "emulator"},
                "profile": plan.profile.as_dict(),
                "paths": {
                    str(sid): {**path, "evidence": dict(path["evidence"])}
                    for sid in trace.sockets
                    for path in (self.paths[str(sid)],)
                },
                "peers": {str(sid): self.peers[str(sid)] for sid in trace.sockets},
                "replay": {
                    "speed": options.speed,
                    "seed": options.seed,
                    "chaos": options.chaos,
                    "origin_ns": plan.t0,
                },
                "completion_policy": {
                    "policy": plan.profile.completion.policy,
                    "evidence": "replay",
                },
            },
            clock=Clock(trace.clock.zero_utc_ns, "virtual"),
            sockets=dict(trace.sockets),
        )
        calls = trace.calls
        cols = calls.columns
        if self.call_arrays is None:
            self.seal()
        assert self.call_arrays is not None
        cols.update(self.call_arrays)
        for share in self.taken:
            for name, values in share.columns.items():
                cols[name][share.calls] = values
        cols["stream_offset"] = np.zeros(len(calls), np.int64)
        out.streams = replayed_streams(
            trace, calls.column("socket"), calls.column("length"), cols["status"], cols
        )
        for sid in trace.sockets:
            received = self.received[sid]
            recorded_in = trace.streams.get((sid, Direction.IN))
            if received and recorded_in is not None and recorded_in.data is not None:
                n_in = min(received, recorded_in.length)
                data = recorded_in.data
                out.streams[(sid, Direction.IN)] = Stream(
                    sid,
                    Direction.IN,
                    n_in,
                    data if n_in == len(data) else bytearray(window(data, 0, n_in)),
                    [(a, min(b, n_in)) for a, b in recorded_in.gaps if a < n_in],
                )
        out.calls = CallTable(cols, calls.control_blob)
        out.segments = _segments(self.wire)
        steps = self.event_steps
        order = sorted(range(len(self.events)), key=lambda k: (self.events[k].time_ns, steps[k]))
        out.events = [self.events[k] for k in order]
        return out


class _SocketReplay:
    """One socket's part of a replay: its connection, its plan, its recorded disconnects
    and closes still to come (and when the next is), and how much later than scheduled its
    latest call went out."""

    def __init__(self, conn: EmulatedConnection, plan: SocketPlan, lifecycle: list[Event]) -> None:
        self.conn = conn
        self.plan = plan
        self.lifecycle = lifecycle
        self.next_lifecycle_ns = lifecycle[0].time_ns if lifecycle else NEVER
        self.lag = 0


@dataclass(frozen=True)
class ReplayShare:
    """What a replay of some of a trace's sockets produced (:meth:`_Replay.share`): the
    calls it replayed, with their columns; its sockets' wire columns; its events, with the
    steps that reported them; the bytes each socket received, each one's peer and its path's
    metadata."""

    calls: np.ndarray
    columns: dict[str, np.ndarray]
    wire: dict[int, dict[str, np.ndarray]]
    events: list[Event]
    event_steps: list[int]
    received: dict[int, int]
    peers: dict[str, str]
    paths: dict[str, dict[str, Any]]


def lifecycle_events(trace: Trace) -> dict[int, list[Event]]:
    """Socket -> the driver's WskDisconnect and WskCloseSocket events, in time order."""
    out: dict[int, list[Event]] = {}
    for e in sorted(trace.events, key=lambda e: e.time_ns):
        if e.kind in ("disconnect", "close") and e.socket is not None and e.socket in trace.sockets:
            out.setdefault(e.socket, []).append(e)
    return out


def _returned(outputs: list) -> bool:
    for e in outputs:
        if isinstance(e, Returned):
            return True
    return False


def _segments(wire: dict[int, WireColumns]) -> SegmentTable:
    """The wire segments of every socket as one table, in time order (a socket's in the
    order it sent them, sockets in ``wire``'s order on ties)."""
    each = {sid: w.arrays() for sid, w in wire.items()}
    if not any(len(made["time_ns"]) for made in each.values()):
        return SegmentTable.empty()
    columns: dict[str, list[np.ndarray]] = {name: [] for name, _ in SEGMENT_SCHEMA}
    for sid, made in each.items():
        columns["socket"].append(np.full(len(made["time_ns"]), sid, np.int64))
        for name, values in made.items():
            columns[name].append(values)
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    order = np.lexsort((arrays["socket"], arrays["time_ns"]))
    return SegmentTable({name: arr[order] for name, arr in arrays.items()})
