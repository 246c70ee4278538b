"""The socket session's timed sends on real kernel sockets (loopback): a call given the time
it is due takes its WSK work first and reaches the kernel then, never before; one given no
time goes out at once. The peer is a real listening socket that notes when bytes arrive,
on the same monotonic clock."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.targets.socket_session import OpenOptions, SocketSession
from wskreplay.replayer.wsk_socket import Returned


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
