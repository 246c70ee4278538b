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

import gc
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.replayer.calibrate import (
    calibrated_path,
    inferred_profile,
    mss_evidence,
    peer_window_known,
    release_pieces,
    rto_floor_ns,
    sender_mss,
    stack_delays_ns,
)
from wskreplay.replayer.chaos import Chaos
from wskreplay.replayer.peer import RecordedPeer
from wskreplay.replayer.peer_script import peer_script
from wskreplay.replayer.profile import TransportProfile
from wskreplay.replayer.targets.emulator import EmulatedConnection, WireSegment
from wskreplay.replayer.wsk_socket import Completed, Returned, SendRequest, Violation
from wskreplay.trace.model import (
    CallTable,
    Clock,
    Direction,
    Event,
    SegmentTable,
    Stream,
    Trace,
    awaited_calls,
    time_span_ns,
)

WOULD_BUGCHECK = 0xE0570001
"""Not a Windows status (customer bit set): the status column of a call whose Length ran
past its MDL chain, which would have stopped the machine instead of returning."""
SETTLE_NS = 120_000_000_000
"""The least a wait (and the end of the replay) lets pass on a socket; a socket recorded
for longer than half of it lets twice its own recorded duration pass, so a peer that acted
after a long silence is still replayed (a wait never hangs)."""
MAX_SETTLE_NS = 3_600_000_000_000
"""The most a wait lets pass, and the end of a replay of a socket whose own recorded span
is longer (a capture merging interfaces with different clocks can show one connection
across years, which would otherwise run its timers for years)."""


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


PROGRESS_EVERY = 4096
"""Calls between two reports to a replay's progress callback."""


def replay(
    trace: Trace,
    options: ReplayOptions,
    *,
    source_sha256: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> Trace:
    """Replay every call; the replayed trace. ``progress(done, total)`` is told the calls
    replayed every :data:`PROGRESS_EVERY` calls.

    The cyclic garbage collector is paused meanwhile: a replay makes millions of small
    objects, none in a cycle, and the collector's full passes over them made the cost per
    call grow with the trace (24 us at 100k calls, 35 us with it running)."""
    steps = _steps(trace, options, source_sha256)
    total = len(trace.calls)
    done = 0
    collecting = gc.isenabled()
    gc.disable()
    try:
        while True:
            try:
                next(steps)
            except StopIteration as finished:
                return finished.value
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, total)
    finally:
        if collecting:
            gc.enable()


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
    yield from _steps(trace, options, "")


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
    trace: Trace, options: ReplayOptions, source_sha256: str
) -> Generator[Step, None, Trace]:
    """The replay, yielding after each call."""
    profile = inferred_profile(trace, options.profile, options.completion)
    calls = trace.calls
    n = len(calls)
    issue = calls.column("issue_ns").astype(np.int64)
    socket_of = calls.column("socket").astype(np.int64)
    completion = calls.column("completion_ns").astype(np.int64)
    order = np.lexsort((np.arange(n), issue))
    t0 = int(issue.min()) if n else 0

    def scaled(duration: int) -> int:
        """A recorded duration in the replay's time (0 when replaying as fast as possible)."""
        return 0 if options.speed is None else int(duration / options.speed)

    recorded_reset = {
        sid: at for sid in trace.sockets if (at := peer_reset_ns(trace, sid)) is not None
    }
    """Socket -> when its peer reset it in the recording: a call issued after that waits,
    in the replay, for the replayed reset (if it comes), the way it waits for completions."""

    def peer_reset(sid: int) -> int | None:
        at = recorded_reset.get(sid)
        return None if at is None else t0 + scaled(at - t0)

    mss = {sid: sender_mss(trace, sid) or profile.tcp.mss for sid in trace.sockets}
    calibrated = {sid: calibrated_path(trace, sid, options.seed) for sid in trace.sockets}
    paths = {sid: replace(calibrated[sid][0], mss=mss[sid]) for sid in trace.sockets}
    settle = {
        sid: min(max(SETTLE_NS, 2 * socket_duration_ns(trace, sid)), MAX_SETTLE_NS)
        for sid in trace.sockets
    }
    rto_floor = {
        sid: rto_floor_ns(trace, sid) if options.speed == 1.0 else 0 for sid in trace.sockets
    }
    conns = {}
    peers: dict[str, str] = {}
    for sid, sock in trace.sockets.items():
        script = (
            None
            if options.peer == "parametric"
            else peer_script(trace, sid, paths[sid].rtt_ns, profile.reset, paths[sid].rate_bps)
        )
        if script is not None and not peer_window_known(trace, sid):
            script = replace(script, windows=())
        peer = None
        if script is not None and options.speed == 1.0:
            first = int(
                trace.segments.column("time_ns")[trace.segments.column("socket") == sid].min()
            )
            peer = RecordedPeer(paths[sid], script, first)
        peers[str(sid)] = "recorded" if peer is not None else "parametric"
        conns[sid] = EmulatedConnection(
            profile.with_changes(
                "tcp",
                rto_min_ns=max(profile.tcp.rto_min_ns, rto_floor[sid]),
                rto_initial_ns=max(profile.tcp.rto_initial_ns, rto_floor[sid]),
            ),
            paths[sid],
            category=sock.category if sock.category in ("connection", "stream") else "connection",
            mss=mss[sid],
            peer_reset_ns=None if peer is not None else peer_reset(sid),
            peer=peer,
            chaos=None if options.chaos is None else Chaos(options.chaos, sid),
        )
    issue_out = [0] * n
    return_out = [0] * n
    status_out = [0] * n
    completed_out = [0] * n
    completion_out = [0] * n
    completion_status_out = [0] * n
    information_out = [0] * n
    events: list[Event] = []
    wire: dict[int, list[WireSegment]] = {sid: [] for sid in trace.sockets}
    done_at: dict[int, int] = {}
    awaited = awaited_calls(calls).tolist()

    reported: list[Returned | Completed | Violation] = []
    """What the replay reported since the last step."""

    def absorb(sid: int, outputs: list) -> None:
        for e in outputs:
            if isinstance(e, WireSegment):
                wire[sid].append(e)
                continue
            reported.append(e)
            if isinstance(e, Completed):
                i = e.irp - 1
                completed_out[i] = 1
                completion_out[i] = e.time_ns
                completion_status_out[i] = e.status
                information_out[i] = e.information
                done_at[i] = e.time_ns
            elif isinstance(e, Returned):
                if e.irp is not None:
                    return_out[e.irp - 1] = e.time_ns
                    status_out[e.irp - 1] = e.status
            elif isinstance(e, Violation):
                events.append(
                    Event(
                        e.time_ns,
                        "violation",
                        sid,
                        {"kind": e.kind, "detail": e.detail, "seq": (e.irp or 0) - 1},
                    )
                )

    at_once = (calls.column("status") == nt.STATUS_SUCCESS).tolist()
    stack_delay = stack_delays_ns(trace).tolist()
    pieces = release_pieces(trace, paths)
    flags_of = calls.column("flags").tolist()
    length_of = calls.column("length").tolist()
    irql_of = calls.column("irql").tolist()
    control_len = calls.column("control_len").tolist()
    issue_of = issue.tolist()
    socket_list = socket_of.tolist()
    lifecycle = lifecycle_events(trace)
    lag: dict[int, int] = {}
    """Socket -> how much later than scheduled its latest call went out (dependencies)."""

    def play_lifecycle(sid: int, conn: EmulatedConnection, before: int | None) -> None:
        """The driver's recorded disconnects and closes of ``sid`` before ``before``."""
        queue = lifecycle.get(sid, [])
        while queue and (before is None or queue[0].time_ns < before):
            e = queue.pop(0)
            at = conn.now
            if options.speed is not None:
                at = max(t0 + scaled(e.time_ns - t0) + lag.get(sid, 0), conn.now)
            if e.kind == "close":
                absorb(sid, conn.close(at))
            else:
                abortive = bool(int(e.attrs.get("flags", 0)) & wsk.WSK_FLAG_ABORTIVE)
                absorb(sid, conn.disconnect(at, abortive=abortive))
            events.append(Event(at, e.kind, sid, dict(e.attrs)))

    def let_time_pass(sid: int, conn: EmulatedConnection, until: Callable[[], bool]) -> None:
        """Run the connection event by event until ``until()`` holds, nothing is left to
        happen, or the socket's settle time has passed (a wait never hangs)."""
        limit = conn.now + settle[sid]
        while not until() and (step := conn.next_event_time()) is not None and step <= limit:
            absorb(sid, conn.run_until(step))

    for i in order.tolist():
        sid = socket_list[i]
        issued = issue_of[i]
        conn = conns[sid]
        play_lifecycle(sid, conn, issued)
        t = conn.now if options.speed is None else t0 + scaled(issued - t0)
        waits_for: int = awaited[i]
        if waits_for >= 0:

            def has_completed(j: int = waits_for) -> bool:
                return j in done_at

            let_time_pass(sid, conn, has_completed)
            if waits_for in done_at:
                gap = scaled(issued - int(completion[waits_for]))
                t = max(t, done_at[waits_for] + gap)
        reset_at = recorded_reset.get(sid)
        if reset_at is not None and issued >= reset_at and conn.reset_time() is None:

            def was_reset(c: EmulatedConnection = conn) -> bool:
                return c.reset_time() is not None

            let_time_pass(sid, conn, was_reset)
            reset_seen = conn.reset_time()
            if reset_seen is not None:
                t = max(t, reset_seen + scaled(issued - reset_at))
        t = max(t, conn.now)
        if options.speed is not None:
            lag[sid] = t - (t0 + scaled(issued - t0))
        issue_out[i] = t
        req = SendRequest(
            t,
            i + 1,
            flags_of[i],
            length_of[i],
            None,
            calls.control_info(i) if control_len[i] >= 0 else None,
            None if irql_of[i] < 0 else irql_of[i],
            at_once[i],
        )
        piece_list = pieces.get(i)
        if piece_list is not None and options.speed is not None:
            piece_list = [(length, scaled(delay)) for length, delay in piece_list]
        else:
            piece_list = None
        outputs = conn.call(req, scaled(stack_delay[i]), piece_list)
        absorb(sid, outputs)
        if not _returned(outputs):
            return_out[i] = t
            status_out[i] = WOULD_BUGCHECK
        yield Step(i, sid, conn, list(reported))
        reported.clear()
    for sid, conn in conns.items():
        play_lifecycle(sid, conn, None)
        horizon = max(socket_end_ns(trace, sid) - conn.now, 0) + settle[sid]
        if socket_duration_ns(trace, sid) > MAX_SETTLE_NS:
            horizon = min(horizon, MAX_SETTLE_NS)
        absorb(sid, conn.settle(horizon))
        reset_seen = conn.reset_time()
        if reset_seen is not None:
            events.append(Event(reset_seen, "reset", sid, {"by": "peer"}))

    out = Trace(
        metadata={
            "source": "replay",
            "replay_of": source_sha256,
            "target": {"kind": "emulator"},
            "profile": profile.as_dict(),
            "paths": {
                str(sid): {
                    **asdict(p),
                    "rto_floor_ns": rto_floor[sid],
                    "evidence": {
                        **calibrated[sid][1],
                        "mss": mss_evidence(trace, sid),
                        "rto_floor_ns": "the recorded sender's waits without a resend"
                        if rto_floor[sid]
                        else "none: the recording shows no wait, or the replay is not at its "
                        "recorded speed",
                    },
                }
                for sid, p in paths.items()
            },
            "peers": peers,
            "replay": {
                "speed": options.speed,
                "seed": options.seed,
                "chaos": options.chaos,
                "origin_ns": t0,
            },
            "completion_policy": {"policy": profile.completion.policy, "evidence": "replay"},
        },
        clock=Clock(trace.clock.zero_utc_ns, "virtual"),
        sockets=dict(trace.sockets),
    )
    cols = calls.columns
    rows = {
        "issue_ns": issue_out,
        "return_ns": return_out,
        "status": status_out,
        "completed": completed_out,
        "completion_ns": completion_out,
        "completion_status": completion_status_out,
        "information": information_out,
    }
    cols.update({name: np.array(values, np.int64) for name, values in rows.items()})
    cols["stream_offset"] = np.zeros(n, np.int64)
    out.streams = replayed_streams(trace, socket_list, length_of, rows["status"], cols)
    for sid, conn in conns.items():
        recorded_in = trace.streams.get((sid, Direction.IN))
        if conn.received and recorded_in is not None and recorded_in.data is not None:
            n_in = min(conn.received, recorded_in.length)
            out.streams[(sid, Direction.IN)] = Stream(
                sid,
                Direction.IN,
                n_in,
                bytearray(recorded_in.data[:n_in]),
                [(a, min(b, n_in)) for a, b in recorded_in.gaps if a < n_in],
            )
    out.calls = CallTable(cols, calls.control_blob)
    out.segments = _segments(wire)
    out.events = sorted(events, key=lambda e: e.time_ns)
    return out


def socket_end_ns(trace: Trace, socket: int) -> int:
    """The socket's last recorded moment (calls, completions, segments, events)."""
    span = time_span_ns(trace, socket)
    return span[1] if span is not None else 0


def socket_duration_ns(trace: Trace, socket: int) -> int:
    """From the socket's first to its last moment in the trace (calls, segments, events)."""
    span = time_span_ns(trace, socket)
    return span[1] - span[0] if span is not None else 0


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


def replayed_streams(
    trace: Trace,
    socket_of: list[int],
    length_of: list[int],
    status: list[int],
    cols: dict[str, np.ndarray],
) -> dict[tuple[int, Direction], Stream]:
    """The bytes the replayed calls handed WSK, each call to OUT or UNSENT by its replayed
    status (offsets recomputed); bytes the recording lacks stay gaps (a call the capture
    holds in part keeps the part it holds, at the same place in the call)."""
    recorded_offset = trace.calls.column("stream_offset").tolist()
    recorded_dir = [
        Direction.OUT if nt.is_success(int(x)) else Direction.UNSENT
        for x in trace.calls.column("status")
    ]
    streams: dict[tuple[int, Direction], Stream] = {}
    offsets = cols["stream_offset"]
    for i, (sid, length) in enumerate(zip(socket_of, length_of, strict=True)):
        direction = Direction.OUT if nt.is_success(int(status[i])) else Direction.UNSENT
        stream = streams.setdefault((sid, direction), Stream(sid, direction))
        assert isinstance(stream.data, bytearray)
        offsets[i] = stream.length
        source = trace.streams.get((sid, recorded_dir[i]))
        start = recorded_offset[i]
        base = stream.length
        if source is None or source.data is None:
            stream.gaps.append((base, base + length))
            stream.data += bytes(length)
        else:
            piece = bytes(source.data[start : start + length])
            stream.data += piece + bytes(length - len(piece))
            if len(piece) < length:
                stream.gaps.append((base + len(piece), base + length))
            for a, b in source.gaps:
                lo, hi = max(a, start), min(b, start + len(piece))
                if lo < hi:
                    stream.gaps.append((base + lo - start, base + hi - start))
        stream.length += length
    for stream in streams.values():
        stream.gaps = _merged(stream.gaps)
    return streams


def _merged(gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(gaps):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _segments(wire: dict[int, list[WireSegment]]) -> SegmentTable:
    rows = [
        (
            s.time_ns,
            sid,
            int(Direction.OUT if s.outbound else Direction.IN),
            s.length,
            s.seq if s.outbound else 0,
            s.flags,
            0 if s.outbound else s.ack,
            s.window,
        )
        for sid, segs in wire.items()
        for s in segs
    ]
    rows.sort(key=lambda r: (r[0], r[1]))
    names = ("time_ns", "socket", "direction", "length", "seq", "flags", "ack", "window")
    if not rows:
        return SegmentTable.empty()
    arr = np.array(rows, dtype=np.int64)
    return SegmentTable({name: arr[:, k] for k, name in enumerate(names)})
