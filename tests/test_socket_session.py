"""The socket session's timed sends on real kernel sockets (loopback): a call given the time
it is due takes its WSK work first and reaches the kernel then, never before; one given no
time goes out at once. The peer is a real listening socket that notes when bytes arrive,
on the same monotonic clock."""

from __future__ import annotations

import fcntl
import socket
import struct
import threading
import time

import pytest

from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.targets.socket_session import (
    READ_SLACK_NS,
    SIOCOUTQ,
    OpenOptions,
    SocketSession,
)
from wskreplay.replayer.wsk_socket import Completed, Returned


@pytest.fixture
def listener():
    """A loopback listener that records (monotonic ns, bytes) for what it receives."""
    server = socket.create_server(("127.0.0.1", 0))
    arrivals: list[tuple[int, bytes]] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                arrivals.append((time.monotonic_ns(), data))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], arrivals
    server.close()
    thread.join(timeout=5)


def test_a_call_due_later_reaches_the_kernel_when_due_never_before(listener):
    port, arrivals = listener
    session = SocketSession(load_profile("windows-tcpip"))
    session.open(1, "127.0.0.1", port, OpenOptions(nagle=False))
    due = [session.now() + k * 3_000_000 for k in range(1, 6)]
    issued = []
    for k, at in enumerate(due):
        payload = bytes([k]) * 100
        t, events = session.send(1, k + 1, wsk.WSK_FLAG_NODELAY, payload, at=at)
        issued.append(t)
        returned = [e for e in events if isinstance(e, Returned)]
        assert [r.irp for r in returned] == [k + 1]
        assert returned[0].time_ns == t and returned[0].status in (nt.STATUS_PENDING, 0)
    deadline = time.monotonic() + 5
    while sum(len(d) for _, d in arrivals) < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    session.shutdown()
    assert b"".join(d for _, d in arrivals) == b"".join(bytes([k]) * 100 for k in range(5))
    assert all(t >= at for t, at in zip(issued, due, strict=True))
    for at, k in zip(due, range(5), strict=True):
        first = next(when for when, data in arrivals if bytes([k]) in data)
        assert first >= at, f"call {k} arrived {at - first} ns before it was due"


def test_a_call_due_in_the_past_or_untimed_goes_out_at_once(listener):
    port, arrivals = listener
    session = SocketSession(load_profile("windows-tcpip"))
    session.open(1, "127.0.0.1", port, OpenOptions(nagle=False))
    before = session.now()
    late, _ = session.send(1, 1, wsk.WSK_FLAG_NODELAY, b"a" * 10, at=before - 1_000_000)
    untimed, _ = session.send(1, 2, wsk.WSK_FLAG_NODELAY, b"b" * 10)
    assert before <= late <= untimed
    deadline = time.monotonic() + 5
    while sum(len(d) for _, d in arrivals) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    session.shutdown()
    assert b"".join(d for _, d in arrivals) == b"a" * 10 + b"b" * 10


def test_nodelay_stays_set_from_a_nodelay_call_until_a_call_without_it(listener):
    """WSK_FLAG_NODELAY sets TCP_NODELAY for that call's bytes; it is cleared only when a
    call without the flag sends (the bytes between are all NODELAY bytes), not after each
    call: one setsockopt fewer between a call's due time and its send()."""
    port, arrivals = listener
    session = SocketSession(load_profile("windows-tcpip"))
    session.open(1, "127.0.0.1", port, OpenOptions(nagle=True))
    sock = session._kernel(1).sock
    seen = []
    for irp, flags in enumerate([wsk.WSK_FLAG_NODELAY, wsk.WSK_FLAG_NODELAY, 0, 0,
                                 wsk.WSK_FLAG_NODELAY], 1):  # fmt: skip
        session.send(1, irp, flags, b"x" * 10)
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    assert seen == [1, 1, 0, 0, 1]
    deadline = time.monotonic() + 5
    while sum(len(d) for _, d in arrivals) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    session.shutdown()
    assert b"".join(d for _, d in arrivals) == b"x" * 50

    session = SocketSession(load_profile("windows-tcpip"))
    session.open(2, "127.0.0.1", port, OpenOptions(nagle=False))
    sock = session._kernel(2).sock
    for irp, flags in enumerate([0, wsk.WSK_FLAG_NODELAY, 0], 1):
        session.send(2, irp, flags, b"y")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    session.shutdown()


def _wait_acknowledged(session: SocketSession, sid: int) -> None:
    """Until the kernel says every byte written on ``sid`` is acknowledged (loopback: at
    once), without reading the counters through the session."""
    fd = session._kernel(sid).sock.fileno()
    deadline = time.monotonic() + 5
    while (
        struct.unpack("i", fcntl.ioctl(fd, SIOCOUTQ, bytes(4)))[0] and time.monotonic() < deadline
    ):
        time.sleep(0.001)


def test_a_timed_call_reads_the_counters_before_deciding_only_with_time_to_spare(listener):
    """Completion evidence for a timed call: its socket's counters are read before the
    machine decides when it is due at least READ_SLACK_NS ahead, and never between its due
    time and its send() (the loop's next wait reads them instead)."""
    port, arrivals = listener
    session = SocketSession(load_profile("windows-tcpip"))
    session.open(1, "127.0.0.1", port, OpenOptions(nagle=False))
    _, first = session.send(1, 1, wsk.WSK_FLAG_NODELAY, b"a" * 10, at=session.now())
    assert not [e for e in first if isinstance(e, Completed)]
    _wait_acknowledged(session, 1)

    at = session.now() + READ_SLACK_NS + 5_000_000
    t, early = session.send(1, 2, wsk.WSK_FLAG_NODELAY, b"b" * 10, at=at)
    done = [e for e in early if isinstance(e, Completed)]
    assert [(e.irp, e.status) for e in done] == [(1, nt.STATUS_SUCCESS)]
    assert done[0].time_ns < at <= t
    assert [type(e) for e in early] == [Completed, Returned], "read before the machine decided"
    _wait_acknowledged(session, 1)

    _, close = session.send(1, 3, wsk.WSK_FLAG_NODELAY, b"c" * 10, at=session.now() + 1_000)
    assert not [e for e in close if isinstance(e, Completed)], "read between due and send"
    _wait_acknowledged(session, 1)
    later = session.poll(0)
    assert [(e.irp, e.status) for e in later if isinstance(e, Completed)] == [
        (2, nt.STATUS_SUCCESS),
        (3, nt.STATUS_SUCCESS),
    ]
    deadline = time.monotonic() + 5
    while sum(len(d) for _, d in arrivals) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    session.shutdown()
    assert b"".join(d for _, d in arrivals) == b"a" * 10 + b"b" * 10 + b"c" * 10
