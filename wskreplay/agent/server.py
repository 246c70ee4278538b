"""The reference agent: the agent protocol served on top of the socket target's
:class:`~wskreplay.replayer.targets.socket_session.SocketSession` (``wskreplay agent serve``).

One thread per client, each with its own session. A client must open with the handshake
(``hello``, ``challenge``, ``auth``: both sides prove they hold the shared token); anything
else, a client that cannot prove it, an unknown version, an oversized, malformed or
wrongly tagged frame, a connection to an address it may not reach, or more sends in flight
than the limits allow ends that client's connection with an ``error`` message naming the
reason, and the agent goes on serving the others. Bound to a loopback address, it also
refuses any client whose address is not loopback. It connects only to the address its
client came from and to the networks of ``--allow-dest``.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from wskreplay import __version__
from wskreplay.errors import WskReplayError
from wskreplay.formats import ntstatus as nt
from wskreplay.formats.agentwire import (
    AGENT_SIDE,
    MAX_FRAME,
    NONCE_BYTES,
    VERSION,
    Channel,
    ProtocolError,
    agent_proof,
    encode,
    field,
    is_loopback,
    nonce_field,
    session_key,
)
from wskreplay.replayer.profile import profile_from_dict
from wskreplay.replayer.targets.socket_session import OpenOptions, SessionEvent, SocketSession
from wskreplay.replayer.wsk_socket import Completed, Returned, Violation

HELLO_TIMEOUT_S = 10.0
DRAIN_S = 2.0


def event_to_wire(e: SessionEvent) -> list[Any]:
    """A session's event as the protocol's array (docs/agent-protocol.md, "Events")."""
    if isinstance(e, Returned):
        return ["returned", e.irp, e.status, e.time_ns]
    if isinstance(e, Completed):
        return ["completed", e.irp, e.status, e.information, e.time_ns]
    if isinstance(e, Violation):
        return ["violation", e.irp, e.kind, e.detail, e.time_ns]
    return ["reset", e.socket, e.status, e.time_ns]


@dataclass(frozen=True)
class AgentLimits:
    max_frame: int = MAX_FRAME
    max_in_flight_calls: int = 4096
    """Accepted sends not yet completed, per client."""
    max_in_flight_bytes: int = 64 << 20
    max_sockets: int = 1024


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow_dest(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise WskReplayError(f"--allow-dest {text}: expected an address or CIDR") from None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def destination_allowed(host: str, client_host: str, allowed: tuple[Network, ...]) -> bool:
    """Whether the agent may connect to ``host``: the address its client came from, or
    one within ``--allow-dest``. Names are not resolved: only addresses are allowed."""
    ip = _address(host)
    if ip is None:
        return False
    return ip == _address(client_host) or any(ip in net for net in allowed)


class Client:
    """One replayer's connection and its session."""

    def __init__(
        self,
        conn: socket.socket,
        token: str,
        limits: AgentLimits,
        client_host: str = "127.0.0.1",
        allow_dest: tuple[Network, ...] = (),
    ) -> None:
        self.conn = conn
        self.channel = Channel(conn, AGENT_SIDE, limits.max_frame)
        self.token = token
        self.limits = limits
        self.client_host = client_host
        self.allow_dest = allow_dest
        self.session: SocketSession | None = None
        self.in_flight: dict[int, int] = {}
        """IRP -> bytes of each accepted send not completed yet."""

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(message)

    def run(self) -> None:
        try:
            self.conn.settimeout(HELLO_TIMEOUT_S)
            self._handshake()
            self.conn.settimeout(None)
            while self._step():
                pass
        except ProtocolError as exc:
            self._refuse(exc.code, str(exc).removeprefix(f"agent: {exc.code}: "))
        except WskReplayError as exc:
            self._refuse("failed", str(exc))
        except (OSError, TimeoutError):
            pass
        finally:
            if self.session is not None:
                self.session.shutdown()
            self.conn.close()

    def _refuse(self, code: str, message: str) -> None:
        """Send the error, then read and drop what the client still sends until it closes
        (at most DRAIN_S): closing with unread input would make the kernel reset the
        connection and the client could lose the error before reading it."""
        try:
            self.send({"op": "error", "code": code, "message": message})
            self.conn.shutdown(socket.SHUT_WR)
            self.conn.settimeout(DRAIN_S)
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline and self.conn.recv(1 << 16):
                pass
        except OSError:
            pass

    def _handshake(self) -> None:
        hello = self.channel.receive()
        if hello.get("op") != "hello":
            raise ProtocolError("no-hello", "the first message must be hello")
        version = hello.get("version")
        if version != VERSION:
            raise ProtocolError(
                "version", f"protocol version {version!r} unknown (this agent: {VERSION})"
            )
        client_nonce = nonce_field(hello)
        nonce = os.urandom(NONCE_BYTES)
        self.send(
            {
                "op": "challenge",
                "id": hello.get("id"),
                "version": VERSION,
                "nonce": nonce,
                "proof": agent_proof(self.token, client_nonce, nonce),
            }
        )
        self.channel.key = session_key(self.token, client_nonce, nonce)
        try:
            auth = self.channel.receive()
        except ProtocolError as exc:
            if exc.code != "bad-mac":
                raise
            self.channel.key = None
            raise ProtocolError(
                "bad-token", "the replayer did not prove it holds the token (a different token?)"
            ) from None
        if auth["op"] != "auth":
            raise ProtocolError("malformed", f"expected auth, got {auth['op']}")
        self.start(auth)

    def start(self, auth: dict[str, Any]) -> None:
        """The session the authenticated client asked for, with its transport profile."""
        profile = profile_from_dict(dict(field(auth, "profile", dict)), "auth.profile")
        self.session = SocketSession(profile)
        self.send(
            {
                "op": "hello",
                "version": VERSION,
                "agent": f"wskreplay-agent {__version__}",
                "clock": "monotonic",
                "now_ns": self.session.now(),
                "limits": asdict(self.limits),
            }
        )

    def _step(self) -> bool:
        session = self.session
        assert session is not None
        wait = 0.0005 if session.outstanding() else 0.05
        readable, _, _ = select.select([self.conn], [], [], wait)
        if readable:
            msg = self.channel.receive()
            if msg["op"] == "bye":
                received = session.received()
                self.send({"op": "bye", "received": {str(k): v for k, v in received.items()}})
                return False
            self._dispatch(msg)
        self._notify(session.poll(0))
        return True

    def _dispatch(self, msg: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        op, rid = msg["op"], msg.get("id")
        if op == "clock":
            self.send({"op": "clock", "id": rid, "now_ns": session.now()})
        elif op == "open":
            if len(session.received()) >= self.limits.max_sockets:
                raise ProtocolError("limit", f"more than {self.limits.max_sockets} sockets")
            host = field(msg, "host", str)
            if not destination_allowed(host, self.client_host, self.allow_dest):
                raise ProtocolError(
                    "destination",
                    f"open {host}: neither the replayer's address {self.client_host} "
                    "nor within --allow-dest",
                )
            options = OpenOptions(
                category=str(msg.get("category", "connection")),
                nagle=bool(msg.get("nagle", True)),
                mss=msg.get("mss") if isinstance(msg.get("mss"), int) else None,
            )
            port = session.open(field(msg, "socket", int), host, field(msg, "port", int), options)
            self.send({"op": "opened", "id": rid, "local_port": port})
        elif op == "send":
            payload = field(msg, "payload", bytes)
            calls, held = len(self.in_flight), sum(self.in_flight.values())
            if calls + 1 > self.limits.max_in_flight_calls:
                raise ProtocolError(
                    "in-flight", f"{calls} sends in flight, limit {self.limits.max_in_flight_calls}"
                )
            if held + len(payload) > self.limits.max_in_flight_bytes:
                raise ProtocolError(
                    "in-flight", f"{held} bytes in flight, limit {self.limits.max_in_flight_bytes}"
                )
            irp = msg.get("irp")
            control = msg.get("control_info")
            irql = msg.get("irql")
            issued, events = session.send(
                field(msg, "socket", int),
                irp if isinstance(irp, int) else None,
                field(msg, "flags", int),
                payload,
                control if isinstance(control, bytes) else None,
                irql if isinstance(irql, int) else None,
                bool(msg.get("at_once", False)),
            )
            if isinstance(irp, int):
                self.in_flight[irp] = len(payload)
            self._track(events)
            self.send(
                {
                    "op": "sent",
                    "id": rid,
                    "issue_ns": issued,
                    "events": [event_to_wire(e) for e in events],
                }
            )
        elif op in ("disconnect", "close"):
            sid = field(msg, "socket", int)
            if op == "close":
                events = session.close(sid)
            else:
                events = session.disconnect(sid, abortive=bool(msg.get("abortive", False)))
            self._track(events)
            self.send({"op": "done", "id": rid, "events": [event_to_wire(e) for e in events]})
        else:
            raise ProtocolError("unknown-op", f"no operation {op!r}")

    def _track(self, events: list[SessionEvent]) -> None:
        for e in events:
            if isinstance(e, Completed) or (
                isinstance(e, Returned) and e.status != nt.STATUS_PENDING
            ):
                if e.irp is not None:
                    self.in_flight.pop(e.irp, None)

    def _notify(self, events: list[SessionEvent]) -> None:
        if events:
            self._track(events)
            self.send({"op": "event", "events": [event_to_wire(e) for e in events]})


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise WskReplayError(f"--listen {text}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(
    host: str,
    port: int,
    token: str,
    limits: AgentLimits = AgentLimits(),
    ready: Callable[[str, int], None] | None = None,
    allow_dest: tuple[Network, ...] = (),
) -> None:
    """Serve clients until interrupted."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        raise WskReplayError(f"--listen {host}:{port}: {exc.strerror or exc}") from None
    listener.listen(16)
    loopback_only = is_loopback(host)
    bound = listener.getsockname()
    if ready is not None:
        ready(bound[0], bound[1])
    try:
        while True:
            conn, addr = listener.accept()
            if loopback_only and not is_loopback(addr[0]):
                conn.sendall(
                    encode({"op": "error", "code": "not-loopback",
                            "message": f"this agent serves loopback clients only, not {addr[0]}"})
                )  # fmt: skip
                conn.close()
                print(f"wskreplay agent: refused {addr[0]} (not loopback)", file=sys.stderr)
                continue
            client = Client(conn, token, limits, addr[0], allow_dest)
            threading.Thread(target=client.run, daemon=True).start()
    finally:
        listener.close()
