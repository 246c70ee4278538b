"""WskSendEx calls carried out on real kernel TCP sockets, one per recorded socket.

The WSK contract is decided first, by the emulator's own :class:`WskSocket` (flags,
ControlInfo, NULL IRP, state: the same answers as the emulator, before the kernel is
touched); the bytes of an accepted call then go to the kernel socket. A send completes, per
the trace's completion policy, when the kernel says its last byte has left the send queue
(``on-transmit``: SIOCOUTQNSD, bytes not yet sent) or has been acknowledged (``on-ack``:
SIOCOUTQ, bytes not yet acknowledged). Kernel errors become NTSTATUS codes by
:data:`ERRNO_STATUS` (docs/targets.md).

Not sans-IO: this is the I/O half. Times are ``time.monotonic_ns()``; nothing here
schedules (the real-time engine decides when each call is made).
"""

from __future__ import annotations

import errno
import fcntl
import select
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast

from wskreplay.errors import TargetError
from wskreplay.formats import ntstatus as nt
from wskreplay.replayer.netns import entered
from wskreplay.replayer.pacing import spin_until
from wskreplay.replayer.profile import TransportProfile
from wskreplay.replayer.wsk_socket import (
    Completed,
    Returned,
    SendRequest,
    SocketState,
    Transmit,
    Violation,
    WskEvent,
    WskSocket,
)

SIOCOUTQ = 0x5411
"""Bytes in a TCP socket's send queue not yet acknowledged (write_seq - snd_una)."""
SIOCOUTQNSD = 0x894B
"""Bytes in a TCP socket's send queue not yet sent (write_seq - snd_nxt)."""
CONNECT_TIMEOUT_S = 10.0
BUSY_POLL_NS = 20_000
"""How often the kernel's counters are read while a send is outstanding."""
EPOLL_FLOOR_NS = 2_000_000
"""epoll waits in whole milliseconds, rounded up: shorter waits sleep instead."""
READ_SLACK_NS = 50_000
"""A timed call reads its socket's counters before the machine decides only when it is due
at least this far ahead: two ioctls (7 us, 30 us at p99) plus the machine's work. Closer
to its due time the read is left to the loop's next wait (docs/targets.md, "Completion")."""

ERRNO_STATUS: dict[int, int] = {
    errno.ECONNRESET: nt.STATUS_CONNECTION_RESET,
    errno.EPIPE: nt.STATUS_CONNECTION_RESET,
    errno.ETIMEDOUT: nt.STATUS_IO_TIMEOUT,
    errno.ECONNABORTED: nt.STATUS_CONNECTION_ABORTED,
    errno.ENETUNREACH: nt.STATUS_NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: nt.STATUS_HOST_UNREACHABLE,
    errno.ECONNREFUSED: nt.STATUS_CONNECTION_REFUSED,
    errno.ENOBUFS: nt.STATUS_INSUFFICIENT_RESOURCES,
    errno.ENOMEM: nt.STATUS_INSUFFICIENT_RESOURCES,
}
"""Kernel error of a socket -> the status its pending sends complete with (later sends
return STATUS_FILE_FORCED_CLOSED, as after a reset). EPIPE counts as the peer's reset: the
kernel reports it for a send on a connection the peer reset before we read the RST."""
UNMAPPED_ERRNO_STATUS = nt.STATUS_UNSUCCESSFUL


def errno_status(code: int | None) -> int:
    return ERRNO_STATUS.get(code or 0, UNMAPPED_ERRNO_STATUS)


@dataclass(slots=True)
class PeerReset:
    """The kernel reported the connection reset (or failed) at ``time_ns``."""

    socket: int
    time_ns: int
    status: int = nt.STATUS_CONNECTION_RESET


SessionEvent = Returned | Completed | Violation | PeerReset


def _completions(events: list[WskEvent]) -> list[SessionEvent]:
    """The WSK machine's events outside a send, which are completions only: Transmit comes
    from its send path alone, which the session takes apart itself. (Each call of the
    machine returns a list of its own, so the session may extend it.)"""
    return cast(list[SessionEvent], events)


@dataclass(frozen=True)
class OpenOptions:
    category: str = "connection"
    nagle: bool = True
    """Nagle's algorithm when a call has no WSK_FLAG_NODELAY (TCP_NODELAY off)."""
    mss: int | None = None
    """TCP_MAXSEG to ask for (the recorded sender's MSS), None: the kernel's own."""
    send_buffer: int = 65_536
    namespace: str | None = None


@dataclass
class _Kernel:
    sid: int
    sock: socket.socket
    wsk: WskSocket
    nagle: bool
    queue: deque[tuple[memoryview, bool]] = field(default_factory=deque)
    """Bytes WSK accepted that the kernel has not taken yet, each with its NODELAY."""
    written: int = 0
    transmitted: int = 0
    acknowledged: int = 0
    nodelay_on: bool = False
    fin_wanted: bool = False
    fin_sent: bool = False
    gone: bool = False
    """The kernel socket failed, was reset or was closed: no more I/O on it."""
    eof: bool = False
    received: bytearray = field(default_factory=bytearray)


MIN_SETTABLE_MSS, MAX_SETTABLE_MSS = 88, 32767
"""The MSS Linux lets TCP_MAXSEG set (a loopback recording's 65,495 is refused with
EINVAL): a recorded MSS outside is replayed at the nearest bound."""


class SocketSession:
    """Kernel sockets standing in for a driver's WSK sockets."""

    def __init__(self, profile: TransportProfile) -> None:
        self.profile = profile
        self._socks: dict[int, _Kernel] = {}
        self._by_fd: dict[int, _Kernel] = {}
        self._poller = select.epoll()

    @staticmethod
    def now() -> int:
        return time.monotonic_ns()

    def open(self, sid: int, host: str, port: int, options: OpenOptions) -> int:
        """Connect socket ``sid`` to the peer at ``host:port``; its local port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with entered(options.namespace):
            sock = socket.socket(family, socket.SOCK_STREAM)
        doing = "set its options"
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.send_buffer)
            if options.mss:
                mss = min(max(options.mss, MIN_SETTABLE_MSS), MAX_SETTABLE_MSS)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0 if options.nagle else 1)
            sock.settimeout(CONNECT_TIMEOUT_S)
            doing = f"connect to {host}:{port}"
            sock.connect((host, port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise TargetError(f"socket {sid}: {doing}: {exc.strerror or exc}") from None
        k = _Kernel(sid, sock, WskSocket(self.profile, options.category), options.nagle)
        self._socks[sid] = k
        self._by_fd[sock.fileno()] = k
        self._poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        return int(sock.getsockname()[1])

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
        """One WskSendEx; its issue time and what happened before it returned.

        ``at``: when the call is due (monotonic). The WSK state machine takes the call
        first, while waiting, and its bytes reach the kernel at ``at``: the machine's work
        (6-50 us) no longer stands between the due time and the wire. Nothing reads the
        kernel in between, so what the machine sees, and in what order, is what it would
        see if it worked after the wait. The issue time, for the machine and returned, is
        ``at``, or the time of the call if that is later (as without ``at``, the bytes then
        follow by the machine's work).

        A timed call never reads the kernel's counters between its due time and the next
        call's: it reads its socket's before the machine decides, if it is due at least
        :data:`READ_SLACK_NS` ahead, and the loop's waits (:meth:`poll`) read every
        socket's. An untimed call reads them right after its bytes."""
        k = self._kernel(sid)
        out: list[SessionEvent] = []
        now = self.now()
        if at is not None and at - now >= READ_SLACK_NS:
            out += self._progress(k, now)
            now = self.now()
        t = now if at is None else max(at, now)
        req = SendRequest(t, irp, flags, len(payload), None, control_info, irql, recorded_at_once)
        transmitted = False
        for e in k.wsk.send(req):
            if isinstance(e, Transmit):
                transmitted = True
                k.queue.append((memoryview(payload), e.nodelay))
            else:
                out.append(e)
        if at is not None:
            spin_until(t)
        if transmitted:
            out += self._push(k, t)
            if irp is not None:
                # What the call returns is decided as the emulator decides it (the
                # profile's completion.immediate_success), before the kernel's progress is
                # read: on a real stack that progress races the return.
                out.append(k.wsk.returned(irp, t))
            if at is None:
                out += self._progress(k, t)
        return t, out

    def disconnect(self, sid: int, *, abortive: bool) -> list[SessionEvent]:
        k = self._kernel(sid)
        t = self.now()
        out = _completions(k.wsk.disconnect(t, abortive=abortive))
        if abortive:
            self._abort(k)
        else:
            k.fin_wanted = True
            out += self._push(k, t)
        return out

    def close(self, sid: int) -> list[SessionEvent]:
        """WskCloseSocket: pending sends cancelled; a RST unless already disconnected
        (the emulator's rule, EmulatedConnection.close)."""
        k = self._kernel(sid)
        t = self.now()
        was = k.wsk.state
        out = _completions(k.wsk.close(t))
        k.queue.clear()
        if was is SocketState.CONNECTED:
            self._abort(k)
        else:
            self._forget(k)
        return out

    def outstanding(self) -> bool:
        """Whether any accepted send has not completed yet."""
        return any(p for k in self._socks.values() for p in k.wsk.pending if not p.done)

    def completed_all(self, sid: int) -> bool:
        k = self._socks.get(sid)
        return k is None or not any(not p.done for p in k.wsk.pending)

    def poll(self, timeout_ns: int) -> list[SessionEvent]:
        """What happened within ``timeout_ns`` (returns as soon as anything did)."""
        deadline = self.now() + max(timeout_ns, 0)
        while True:
            out = self._service()
            now = self.now()
            if out or now >= deadline:
                return out
            wait = deadline - now
            if self.outstanding():
                time.sleep(min(wait, BUSY_POLL_NS) / 1e9)
            elif wait < EPOLL_FLOOR_NS:
                time.sleep(wait / 1e9)
            else:
                self._poller.poll((wait - EPOLL_FLOOR_NS // 2) // 1_000_000 / 1e3)

    def received(self) -> dict[int, bytes]:
        return {sid: bytes(k.received) for sid, k in self._socks.items()}

    def received_count(self, sid: int) -> int | None:
        k = self._socks.get(sid)
        return None if k is None else len(k.received)

    def shutdown(self) -> None:
        """Close every kernel socket (gracefully where still open)."""
        for k in self._socks.values():
            if not k.gone:
                self._forget(k)
        self._poller.close()

    # Internals.

    def _kernel(self, sid: int) -> _Kernel:
        try:
            return self._socks[sid]
        except KeyError:
            raise TargetError(f"socket {sid} was not opened") from None

    def _service(self) -> list[SessionEvent]:
        out: list[SessionEvent] = []
        t = self.now()
        for fd, _ in self._poller.poll(0):
            k = self._by_fd.get(fd)
            if k is not None:
                out += self._read(k, t)
        for k in self._socks.values():
            if not k.gone:
                out += self._push(k, t)
                out += self._progress(k, t)
        return out

    def _read(self, k: _Kernel, t: int) -> list[SessionEvent]:
        out = self._progress(k, t)
        while not k.gone:
            try:
                chunk = k.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                return out + self._failed(k, exc, t)
            if not chunk:
                k.eof = True
                self._poller.unregister(k.sock.fileno())
                break
            k.received += chunk
        return out

    def _push(self, k: _Kernel, t: int) -> list[SessionEvent]:
        sock = k.sock
        while k.queue and not k.gone:
            data, nodelay = k.queue[0]
            if k.nagle and nodelay != k.nodelay_on:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
                k.nodelay_on = nodelay
            try:
                n = sock.send(data)
            except BlockingIOError:
                break
            except OSError as exc:
                return self._failed(k, exc, t)
            k.written += n
            if n < len(data):
                k.queue[0] = (data[n:], nodelay)
                break
            k.queue.popleft()
        if k.fin_wanted and not k.queue and not k.fin_sent and not k.gone:
            try:
                sock.shutdown(socket.SHUT_WR)
                k.fin_sent = True
            except OSError as exc:
                return self._failed(k, exc, t)
        return []

    def _counter(self, k: _Kernel, request: int) -> int:
        return int(struct.unpack("i", fcntl.ioctl(k.sock.fileno(), request, bytes(4)))[0])

    def _progress(self, k: _Kernel, t: int) -> list[SessionEvent]:
        """Completions the kernel's send-queue counters allow."""
        if k.gone or not k.wsk.pending:
            return []
        fin = 1 if k.fin_sent else 0
        unacked = max(self._counter(k, SIOCOUTQ) - fin, 0)
        unsent = max(self._counter(k, SIOCOUTQNSD) - fin, 0)
        out: list[SessionEvent] = []
        sent_end, acked_end = k.written - unsent, k.written - unacked
        if sent_end > k.transmitted:
            k.transmitted = sent_end
            out += _completions(k.wsk.transmitted(sent_end, t))
        if acked_end > k.acknowledged:
            k.acknowledged = acked_end
            out += _completions(k.wsk.acknowledged(acked_end, t))
        return out

    def _failed(self, k: _Kernel, exc: OSError, t: int) -> list[SessionEvent]:
        status = errno_status(exc.errno)
        out: list[SessionEvent] = [PeerReset(k.sid, t, status)]
        if status == nt.STATUS_CONNECTION_RESET:
            out += _completions(k.wsk.peer_reset(t))
        else:
            out += _completions(k.wsk.transport_failed(status, t))
        self._forget(k)
        return out

    def _abort(self, k: _Kernel) -> None:
        if not k.gone:
            k.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._forget(k)

    def _forget(self, k: _Kernel) -> None:
        if k.gone:
            return
        k.gone = True
        if not k.eof:
            try:
                self._poller.unregister(k.sock.fileno())
            except (OSError, ValueError):
                pass
        k.sock.close()
