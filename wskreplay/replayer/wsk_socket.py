"""The WSK side of one emulated socket: WskSendEx's contract, IRP completion, socket state.

A sans-IO state machine in the style of h11: no sockets, no clock. It is told what happens
(a call, bytes transmitted or acknowledged by the TCP layer below it, a peer reset, a
disconnect, a close, a cancel) with the time it happens, and answers with events: what a
call returned, which IRPs completed with which status, which bytes to hand to TCP, and
contract violations. Every rule cites the sentence it implements (PFN_WSK_SEND_EX.md = the
WskSendEx reference page, wsk-facts = shared/reference/wsk-facts.md); where those leave the
behaviour open, the transport profile decides (docs/emulator.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

from wskreplay.errors import InputError
from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.replayer.profile import TransportProfile

DISPATCH_LEVEL: Final = 2


class SocketState(Enum):
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"
    """A graceful disconnect was requested: no more sends."""
    RESET = "reset"
    """The peer reset the connection, or the driver disconnected abortively."""
    CLOSED = "closed"


@dataclass(slots=True, init=False)
class SendRequest:
    time_ns: int
    irp: int | None
    """None for a NULL IRP."""
    flags: int = 0
    length: int = 0
    mdl_bytes: int | None = None
    """Bytes the MDL chain holds from the WSK_BUF's Offset; None when unknown (= Length)."""
    control_info: bytes | None = None
    irql: int | None = None
    recorded_at_once: bool = False
    """The recording shows this call returning STATUS_SUCCESS: its transport completed it
    before returning (used by ``completion.immediate_success = as-recorded``)."""

    def __init__(
        self,
        time_ns: int,
        irp: int | None,
        flags: int = 0,
        length: int = 0,
        mdl_bytes: int | None = None,
        control_info: bytes | None = None,
        irql: int | None = None,
        recorded_at_once: bool = False,
    ) -> None:
        self.time_ns = time_ns
        self.irp = irp
        self.flags = flags
        self.length = length
        self.mdl_bytes = mdl_bytes
        self.control_info = control_info
        self.irql = irql
        self.recorded_at_once = recorded_at_once


@dataclass(slots=True, init=False)
class Returned:
    irp: int | None
    status: int
    time_ns: int

    def __init__(self, irp: int | None, status: int, time_ns: int) -> None:
        self.irp = irp
        self.status = status
        self.time_ns = time_ns


@dataclass(slots=True, init=False)
class Completed:
    irp: int
    status: int
    information: int
    time_ns: int

    def __init__(self, irp: int, status: int, information: int, time_ns: int) -> None:
        self.irp = irp
        self.status = status
        self.information = information
        self.time_ns = time_ns


@dataclass(slots=True, init=False)
class Transmit:
    """Bytes for the TCP layer: ``length`` more bytes of the stream, ``nodelay`` per
    WSK_FLAG_NODELAY ("immediately send the data, and any previously queued data")."""

    irp: int
    length: int
    nodelay: bool
    time_ns: int

    def __init__(self, irp: int, length: int, nodelay: bool, time_ns: int) -> None:
        self.irp = irp
        self.length = length
        self.nodelay = nodelay
        self.time_ns = time_ns


@dataclass(slots=True)
class Violation:
    irp: int | None
    kind: str
    """``would-bugcheck``, ``irql`` or ``use-after-close``."""
    detail: str
    time_ns: int


WskEvent = Returned | Completed | Transmit | Violation


@dataclass(slots=True, init=False)
class _Pending:
    irp: int
    length: int
    end: int
    """Stream offset just past this send's bytes."""
    done: bool = False
    """Completed ahead of the transport's condition (``as-recorded`` immediate success)."""

    def __init__(self, irp: int, length: int, end: int, done: bool = False) -> None:
        self.irp = irp
        self.length = length
        self.end = end
        self.done = done


class WskSocket:
    """One connection-oriented or stream socket, already connected (PFN_WSK_SEND_EX.md: "A
    WSK application can call the WskSendEx function only on a connection-oriented or stream
    socket that has been previously connected")."""

    def __init__(self, profile: TransportProfile, category: str = "connection") -> None:
        if category not in ("connection", "stream"):
            raise ValueError(f"WskSendEx needs a connection or stream socket, not {category!r}")
        self.profile = profile
        self._flag_mask = profile.send.flag_mask
        """The flags the transport supports (the profile is frozen: computed once)."""
        completion = profile.completion
        self._on_transmit = completion.policy == "on-transmit"
        self._latency_ns = completion.latency_ns
        self._at_once_as_recorded = completion.immediate_success == "as-recorded"
        self._success_at_once = completion.immediate_success != "never"
        self._control_info_seen: dict[bytes, int | None] = {}
        self.category = category
        self.state = SocketState.CONNECTED
        self.queued_end = 0
        """Stream offset past the last byte handed to TCP."""
        self.pending: deque[_Pending] = deque()
        self._in_call = False
        """An accepted call has not returned yet: its IRP and time follow."""
        self._in_call_irp = 0
        self._in_call_ns = 0
        self._completed_in_call = False
        self._transmitted = 0
        self._acknowledged = 0

    def send(self, req: SendRequest) -> list[WskEvent]:
        """A WskSendEx call. Events in order; a ``Returned`` ends the call unless the send
        was accepted, when :meth:`returned` gives its status after the TCP layer has had
        the bytes (the completion may already have happened: wsk-facts "The completion
        routine may run before WskSendEx returns")."""
        out: list[WskEvent] = []
        t = req.time_ns
        if req.irql is not None and req.irql > DISPATCH_LEVEL:
            out.append(Violation(req.irp, "irql", f"IRQL {req.irql} > DISPATCH_LEVEL", t))
        if self.state is SocketState.CLOSED:
            out.append(Violation(req.irp, "use-after-close", "WskSendEx after WskCloseSocket", t))
        if self.state in (SocketState.CLOSED, SocketState.RESET):
            # PFN_WSK_SEND_EX.md: STATUS_FILE_FORCED_CLOSED "The socket is no longer
            # functional. The IRP will be completed with failure status."
            return out + self._refuse(req, nt.STATUS_FILE_FORCED_CLOSED)
        if self.state is SocketState.DISCONNECTING:
            return out + self._refuse(req, nt.CODES[self.profile.send.wrong_state_status])
        if req.irp is None:
            # wsk-facts: STATUS_INVALID_PARAMETER "e.g. NULL IRP (no completion happens)".
            return out + [Returned(None, nt.CODES[self.profile.send.null_irp_status], t)]
        if req.flags & ~self._flag_mask:
            # PFN_WSK_SEND_EX.md: STATUS_NOT_SUPPORTED "A specified flag is not supported".
            return out + self._refuse(req, nt.STATUS_NOT_SUPPORTED)
        if req.control_info is not None:
            refused = self._control_info_status(req.control_info)
            if refused is not None:
                return out + self._refuse(req, refused)
        if req.mdl_bytes is not None and req.length > req.mdl_bytes:
            # wsk-facts: "A Length larger than the MDL chain bugchecks real Windows".
            return out + [
                Violation(
                    req.irp,
                    "would-bugcheck",
                    f"Length {req.length} > {req.mdl_bytes} bytes in the MDL chain",
                    t,
                )
            ]
        if req.length == 0 and self.profile.send.zero_length == "complete":
            return out + [
                Completed(req.irp, nt.STATUS_SUCCESS, 0, t),
                Returned(req.irp, nt.STATUS_SUCCESS, t),
            ]
        self.queued_end += req.length
        at_once = req.recorded_at_once and self._at_once_as_recorded
        self.pending.append(_Pending(req.irp, req.length, self.queued_end, at_once))
        self._in_call, self._in_call_irp, self._in_call_ns = True, req.irp, t
        self._completed_in_call = at_once
        nodelay = bool(req.flags & wsk.WSK_FLAG_NODELAY)
        out.append(Transmit(req.irp, req.length, nodelay, t))
        if at_once:
            # The recorded transport completed this send before returning; wsk-facts: "The
            # completion routine may run before WskSendEx returns".
            out.append(Completed(req.irp, nt.STATUS_SUCCESS, req.length, t))
        elif req.length == 0:
            out += self._complete_through(self._reached_end(), t)
        return out

    def returned(self, irp: int, time_ns: int) -> Returned:
        """What an accepted send returns, once the TCP layer has seen its bytes:
        STATUS_SUCCESS if it already completed and the profile lets the transport say so
        at once, else STATUS_PENDING (PFN_WSK_SEND_EX.md: "The WSK subsystem could not send
        the data over the socket immediately")."""
        done, self._in_call, self._completed_in_call = self._completed_in_call, False, False
        if done and self._success_at_once:
            return Returned(irp, nt.STATUS_SUCCESS, time_ns)
        return Returned(irp, nt.STATUS_PENDING, time_ns)

    def _refuse(self, req: SendRequest, status: int) -> list[WskEvent]:
        t = req.time_ns
        if req.irp is None:
            return [Returned(None, status, t)]
        return [Completed(req.irp, status, 0, t), Returned(req.irp, status, t)]

    def _control_info_status(self, raw: bytes) -> int | None:
        """The status a ControlInfo buffer is refused with, or None: found once per distinct
        buffer (a driver sends the same few again and again)."""
        if raw in self._control_info_seen:
            return self._control_info_seen[raw]
        status = self._control_info_refusal(raw)
        self._control_info_seen[raw] = status
        return status

    def _control_info_refusal(self, raw: bytes) -> int | None:
        send = self.profile.send
        layout = wsk.X64 if send.control_info_layout == "x64" else wsk.X86
        try:
            messages = wsk.decode_cmsgs(raw, layout)
        except InputError:
            return nt.STATUS_INVALID_PARAMETER
        accepted = set(send.control_info_accepted)
        if any((m.level, m.type) not in accepted for m in messages):
            return nt.CODES[send.control_info_rejection]
        return None

    # What the TCP layer below reports.

    def _reached_end(self) -> int:
        if self._on_transmit:
            return self._transmitted
        return self._acknowledged

    def transmitted(self, end: int, time_ns: int) -> list[WskEvent]:
        """Every stream byte before ``end`` has left (been handed to the wire)."""
        self._transmitted = max(self._transmitted, end)
        return self._complete_through(self._reached_end(), time_ns)

    def acknowledged(self, end: int, time_ns: int) -> list[WskEvent]:
        """The peer acknowledged every stream byte before ``end``."""
        self._acknowledged = max(self._acknowledged, end)
        self._transmitted = max(self._transmitted, end)
        return self._complete_through(self._reached_end(), time_ns)

    def _complete_through(self, reached: int, time_ns: int) -> list[WskEvent]:
        """Sends whose last byte is within ``reached`` complete, in issue order (profile
        completion.order = fifo): PFN_WSK_SEND_EX.md "will not be completed ... until all of
        the data has actually been sent"."""
        out: list[WskEvent] = []
        at = time_ns + self._latency_ns
        while self.pending and self.pending[0].end <= reached:
            done = self.pending.popleft()
            if not done.done:
                if self._in_call and self._in_call_irp == done.irp and self._in_call_ns == at:
                    self._completed_in_call = True
                out.append(Completed(done.irp, nt.STATUS_SUCCESS, done.length, at))
        return out

    # Lifecycle.

    def _fail_pending(self, status: int, time_ns: int) -> list[WskEvent]:
        """Every pending send completes with ``status``; its Information is 0, or with
        ``completion.partial`` the bytes of it the policy's condition had reached (acknowledged
        or transmitted) by then."""
        reached = self._reached_end() if self.profile.completion.partial else 0
        out: list[WskEvent] = [
            Completed(p.irp, status, min(max(reached - (p.end - p.length), 0), p.length), time_ns)
            for p in self.pending
            if not p.done
        ]
        self.pending.clear()
        return out

    def peer_reset(self, time_ns: int) -> list[WskEvent]:
        """A RST from the peer: pending sends complete with STATUS_CONNECTION_RESET
        (wsk-facts: "peer reset"); later sends return STATUS_FILE_FORCED_CLOSED."""
        self.state = SocketState.RESET
        return self._fail_pending(nt.STATUS_CONNECTION_RESET, time_ns)

    def transport_failed(self, status: int, time_ns: int) -> list[WskEvent]:
        """The transport below lost the connection with ``status`` (a real stack's error,
        mapped to NTSTATUS by the socket target): pending sends complete with it; later
        sends return STATUS_FILE_FORCED_CLOSED, as after a reset."""
        self.state = SocketState.RESET
        return self._fail_pending(status, time_ns)

    def disconnect(self, time_ns: int, *, abortive: bool) -> list[WskEvent]:
        """WskDisconnect. Abortive: "An abortive WskDisconnect cancels in-progress and
        pending sends" (wsk-facts; STATUS_CONNECTION_ABORTED "abortive disconnect").
        Graceful: "waits for outstanding data"; no new sends are accepted."""
        if abortive:
            self.state = SocketState.RESET
            return self._fail_pending(nt.STATUS_CONNECTION_ABORTED, time_ns)
        if self.state is SocketState.CONNECTED:
            self.state = SocketState.DISCONNECTING
        return []

    def close(self, time_ns: int) -> list[WskEvent]:
        """WskCloseSocket "cancels and completes every pending IRP (STATUS_CANCELLED)"."""
        self.state = SocketState.CLOSED
        return self._fail_pending(nt.STATUS_CANCELLED, time_ns)

    def cancel(self, irp: int, time_ns: int) -> list[WskEvent]:
        """IoCancelIrp on a pending send: it completes with STATUS_CANCELLED (wsk-facts)."""
        for p in list(self.pending):
            if p.irp == irp and not p.done:
                self.pending.remove(p)
                return [Completed(irp, nt.STATUS_CANCELLED, 0, time_ns)]
        return []
