"""The recorded driver's side, from contract events: sockets, calls, completions, lifecycle.

Input is any iterable of :class:`~wskreplay.recorder.etw_schema.RecorderEvent` (from an
``.etl`` or a live session) in time order; output is plain rows with UTC times, ready to be
correlated with a capture. Nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from wskreplay.formats import ntstatus, wsk
from wskreplay.recorder.etw_schema import ORIGINS, RecorderEvent
from wskreplay.trace.model import Event, Socket

CATEGORIES = {wsk.WSK_FLAG_CONNECTION_SOCKET: "connection", wsk.WSK_FLAG_STREAM_SOCKET: "stream"}
UNKNOWN_ORIGIN = "unknown"
"""The origin of a socket whose handle no SocketConnected event announced."""

QpcToNs = Callable[[int, RecorderEvent], int]
"""Converts a QPC value carried in an event to UTC ns (the event gives the reference)."""


@dataclass
class RecordedCall:
    socket: int
    issue_ns: int
    return_ns: int
    flags: int
    offset: int
    length: int
    control_info: bytes | None
    status: int
    irp: int
    irql: int
    payload: bytes
    """The bytes the driver's events carried: the first ``min(cap, length)`` of the call."""
    payload_length: int
    completion_ns: int | None = None
    completion_status: int | None = None
    information: int | None = None
    stream_offset: int = 0

    @property
    def accepted(self) -> bool:
        return ntstatus.is_success(self.status)


@dataclass
class Recorded:
    """Everything the contract events said, times in UTC ns."""

    sockets: dict[int, Socket] = field(default_factory=dict)
    calls: list[RecordedCall] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def column(self, name: str, socket: int | None = None) -> np.ndarray:
        rows = self.calls if socket is None else [c for c in self.calls if c.socket == socket]
        return np.array([getattr(c, name) for c in rows], dtype=np.int64)


def recorded_from_events(events: Iterable[RecorderEvent], qpc_to_ns: QpcToNs) -> Recorded:
    """Fold contract events into sockets and calls.

    A socket handle may be reused after a close: each SocketConnected starts a new socket.
    A completion is matched to the newest outstanding call with its IRP (an IRP is reused
    only after it completed). The completion routine can run before WskSendEx returns, so
    before the SendExIssued event is logged: such a completion waits for the next
    SendExIssued with its IRP and is matched when it falls after that call's entry.
    Completions for no call, and calls on handles no SocketConnected announced, are
    counted, never dropped silently."""
    out = Recorded()
    counts = dict.fromkeys(
        (
            "events",
            "unmatched_completions",
            "unannounced_sockets",
            "undecodable_sockaddrs",
            "never_completed",
        ),
        0,
    )
    by_handle: dict[int, int] = {}
    pending: dict[int, RecordedCall] = {}
    early: dict[int, tuple[int, int, int]] = {}
    cursors: dict[tuple[int, bool], int] = {}

    def socket_for(handle: int, ts: int) -> int:
        if handle not in by_handle:
            sid = len(out.sockets)
            by_handle[handle] = sid
            out.sockets[sid] = Socket(id=sid, origin=UNKNOWN_ORIGIN, open_ns=ts, handle=handle)
            counts["unannounced_sockets"] += 1
        return by_handle[handle]

    for ev in events:
        counts["events"] += 1
        f = ev.fields
        if ev.name == "SocketConnected":
            sid = len(out.sockets)
            by_handle[f["Socket"]] = sid
            local = _endpoint(f["LocalAddress"], counts)
            remote = _endpoint(f["RemoteAddress"], counts)
            out.sockets[sid] = Socket(
                id=sid,
                category=CATEGORIES.get(f["Category"], f"flags-0x{f['Category']:x}"),
                family=f["Family"],
                local_addr=local[0],
                local_port=local[1],
                remote_addr=remote[0],
                remote_port=remote[1],
                origin=ORIGINS.get(f["Origin"], UNKNOWN_ORIGIN),
                open_ns=ev.ts_ns,
                handle=f["Socket"],
            )
        elif ev.name == "SendExIssued":
            sid = socket_for(f["Socket"], ev.ts_ns)
            call = RecordedCall(
                socket=sid,
                issue_ns=qpc_to_ns(f["QpcEntry"], ev),
                return_ns=qpc_to_ns(f["QpcReturn"], ev),
                flags=f["Flags"],
                offset=f["Offset"],
                length=f["Length"],
                control_info=f["ControlInfo"] if f["ControlInfoPresent"] else None,
                status=f["Status"],
                irp=f["Irp"],
                irql=f["Irql"],
                payload=f["Payload"],
                payload_length=f["PayloadLength"],
            )
            key = (sid, call.accepted)
            call.stream_offset = cursors.get(key, 0)
            cursors[key] = call.stream_offset + call.length
            out.calls.append(call)
            early_done = early.pop(call.irp, None)
            if early_done is not None and early_done[0] >= call.issue_ns:
                call.completion_ns, call.completion_status, call.information = early_done
            elif call.irp:
                if early_done is not None:
                    counts["unmatched_completions"] += 1
                pending[call.irp] = call
        elif ev.name == "SendExCompleted":
            done = pending.pop(f["Irp"], None)
            if done is None:
                if f["Irp"] in early:
                    counts["unmatched_completions"] += 1
                early[f["Irp"]] = (ev.ts_ns, f["Status"], f["Information"])
                continue
            done.completion_ns = ev.ts_ns
            done.completion_status = f["Status"]
            done.information = f["Information"]
        elif ev.name == "Disconnect":
            sid = socket_for(f["Socket"], ev.ts_ns)
            out.events.append(
                Event(ev.ts_ns, "disconnect", sid, {"flags": f["Flags"], "status": f["Status"]})
            )
        elif ev.name == "Close":
            sid = socket_for(f["Socket"], ev.ts_ns)
            out.events.append(Event(ev.ts_ns, "close", sid, {}))
            sock = out.sockets[sid]
            out.sockets[sid] = Socket(**{**sock.__dict__, "close_ns": ev.ts_ns})
            by_handle.pop(f["Socket"], None)
    counts["never_completed"] = len(pending)
    counts["unmatched_completions"] += len(early)
    out.counts = counts
    return out


def _endpoint(raw: bytes, counts: dict[str, int]) -> tuple[str, int]:
    try:
        _family, address, port = wsk.decode_sockaddr(raw)
    except ValueError:
        counts["undecodable_sockaddrs"] += 1
        return "", 0
    return address, port
