"""The recorded peer as a real process: the far end of the socket target's connections.

Run as ``python -m wskreplay.replayer.socket_peer PLAN`` (inside the peer's namespace). The
plan (msgpack, written by :func:`write_plan`) lists a listening port per recorded socket and
the socket's :class:`~wskreplay.replayer.peer.PeerScript` actions with the bytes to send. Each
connection is served by a thread that reads whatever arrives at once (its receive buffer is
the recorded peer's largest window, so the window is bounded as recorded) and acknowledges
at once (TCP_QUICKACK after every read and write: Linux would otherwise delay ACKs by 40 ms
as soon as the peer also sends, which no recorded peer here did). A recorded peer
that reset without acknowledging the last bytes it got (its script's ``ack_ceiling``) stops
reading there and has its kernel's quick ACKs turned off, so the kernel delays the ACKs of
what comes next and the reset can find those sends still unacknowledged, as it did in the
recording and performs each
action when it has received the bytes the action waits for, plus the recorded delay: send
its recorded data, close its side (FIN) or reset (RST: SO_LINGER 0 and close).

Prints ``ready`` and the ports (a plan's port 0: any free one) once every port listens;
stops when its standard input closes and prints, per socket, the bytes it received and
what it did, as one JSON line.
"""

from __future__ import annotations

import bisect
import json
import select
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from wskreplay.formats.tcpip import TCP_FIN, TCP_RST

ACCEPT_TIMEOUT_S = 30.0


@dataclass
class PeerConnection:
    socket: int
    port: int
    receive_buffer: int
    actions: list[tuple[int, int, bytes, int]]
    """(bytes received first, delay in ns after that, data to send, TCP_FIN/TCP_RST)."""
    ack_ceiling: int = -1
    """Past this many bytes received, the recorded peer acknowledged nothing more (-1: none)."""
    received: int = 0
    done: list[str] = field(default_factory=list)
    error: str | None = None


def write_plan(path: Path, host: str, connections: list[PeerConnection]) -> None:
    doc = {
        "host": host,
        "connections": [
            {
                "socket": c.socket,
                "port": c.port,
                "rcvbuf": c.receive_buffer,
                "actions": c.actions,
                "ack_ceiling": c.ack_ceiling,
            }
            for c in connections
        ],
    }
    path.write_bytes(msgpack.packb(doc, use_bin_type=True))


def read_plan(path: Path) -> tuple[str, list[PeerConnection]]:
    doc = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=True)
    conns = [
        PeerConnection(
            int(c["socket"]),
            int(c["port"]),
            int(c["rcvbuf"]),
            [(int(a), int(d), bytes(b), int(f)) for a, d, b, f in c["actions"]],
            int(c.get("ack_ceiling", -1)),
        )
        for c in doc["connections"]
    ]
    return str(doc["host"]), conns


def _listen(host: str, conn: PeerConnection) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if conn.receive_buffer > 0:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, conn.receive_buffer)
    listener.bind((host, conn.port))
    listener.listen(1)
    return listener


def serve(listener: socket.socket, conn: PeerConnection, stop: threading.Event) -> None:
    listener.settimeout(ACCEPT_TIMEOUT_S)
    try:
        sock, _ = listener.accept()
    except OSError as exc:
        conn.error = f"accept: {exc}"
        return
    finally:
        listener.close()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    totals: list[int] = [0]
    times: list[int] = [time.monotonic_ns()]
    """When the count of bytes received reached each of ``totals``."""
    pending = sorted(conn.actions, key=lambda a: a[0])
    eof = False
    try:
        while not stop.is_set():
            due = None
            if pending and conn.received >= pending[0][0]:
                k = bisect.bisect_left(totals, pending[0][0])
                due = times[k] + pending[0][1]
            if due is not None and time.monotonic_ns() >= due:
                after, _, data, flags = pending.pop(0)
                if data:
                    sock.sendall(data)
                    if conn.ack_ceiling < 0 or conn.received < conn.ack_ceiling:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                    conn.done.append(f"sent {len(data)} after {after}")
                if flags & TCP_RST:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.done.append(f"reset after {conn.received}")
                    return
                if flags & TCP_FIN:
                    sock.shutdown(socket.SHUT_WR)
                    conn.done.append(f"fin after {conn.received}")
                continue
            if eof and (not pending or pending[0][0] > conn.received):
                return
            wait = 0.2 if due is None else max(due - time.monotonic_ns(), 0) / 1e9
            holding = 0 <= conn.ack_ceiling <= conn.received
            readable, _, _ = select.select([] if holding else [sock], [], [], wait)
            if readable and not eof:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    eof = True
                    continue
                conn.received += len(chunk)
                holding = 0 <= conn.ack_ceiling <= conn.received
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0 if holding else 1)
                totals.append(conn.received)
                times.append(time.monotonic_ns())
    except OSError as exc:
        conn.error = f"{type(exc).__name__}: {exc.strerror or exc}"
    finally:
        sock.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m wskreplay.replayer.socket_peer PLAN", file=sys.stderr)
        return 2
    host, conns = read_plan(Path(argv[0]))
    stop = threading.Event()
    try:
        listeners = [_listen(host, c) for c in conns]
    except OSError as exc:
        print(f"wskreplay peer: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    threads = [
        threading.Thread(target=serve, args=(lst, c, stop), daemon=True)
        for lst, c in zip(listeners, conns, strict=True)
    ]
    for t in threads:
        t.start()
    ports = [str(lst.getsockname()[1]) for lst in listeners]
    print("ready", *ports, flush=True)
    sys.stdin.read()
    stop.set()
    for t in threads:
        t.join(timeout=1.0)
    report: dict[str, Any] = {
        str(c.socket): {"received": c.received, "done": c.done, "error": c.error} for c in conns
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
