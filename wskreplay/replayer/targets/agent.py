"""The agent target: the calls made by an agent (docs/agent-protocol.md) in front of a test
driver, here or on another machine; the replay runs as with the socket target, with the
agent's session in place of the local kernel sockets.

The peer process runs here and listens on ``peer_host`` (default loopback; for a remote
agent, an address of this machine the agent can reach); the agent's sockets connect to it.
The wire is captured here, on the interface the peer's traffic arrives on, when permitted.
Agent timestamps are on the agent's monotonic clock: they are moved onto ours by the
offset the clock exchange with the smallest round trip gave (its error is at most half
that round trip, which the replayed trace records).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wskreplay.errors import TargetError
from wskreplay.formats import ntstatus as nt
from wskreplay.formats.agentwire import (
    CLIENT_SIDE,
    DEFAULT_PORT,
    Channel,
    ProtocolError,
    client_handshake,
    raise_if_error,
    read_token,
)
from wskreplay.replayer.engine import ReplayOptions
from wskreplay.replayer.pacing import spin_until
from wskreplay.replayer.profile import TransportProfile
from wskreplay.replayer.targets.socket import SocketTargetOptions, replay_socket
from wskreplay.replayer.targets.socket_session import OpenOptions, PeerReset, SessionEvent
from wskreplay.replayer.wsk_socket import Completed, Returned, Violation
from wskreplay.trace.model import Trace

CONNECT_TIMEOUT_S = 10.0
CLOCK_SAMPLES = 8


def event_from_wire(item: Any, shift_ns: int) -> SessionEvent:
    """An event as the agent sent it, its time moved onto our clock by ``shift_ns``."""
    if not isinstance(item, list) or not item:
        raise ProtocolError("malformed", f"not an event: {str(item)[:80]}")
    try:
        kind = item[0]
        if kind == "returned":
            return Returned(_opt_int(item[1]), int(item[2]), int(item[3]) + shift_ns)
        if kind == "completed":
            return Completed(int(item[1]), int(item[2]), int(item[3]), int(item[4]) + shift_ns)
        if kind == "violation":
            return Violation(_opt_int(item[1]), str(item[2]), str(item[3]), int(item[4]) + shift_ns)
        if kind == "reset":
            return PeerReset(int(item[1]), int(item[3]) + shift_ns, int(item[2]))
    except (IndexError, TypeError, ValueError):
        pass
    raise ProtocolError("malformed", f"not an event: {str(item)[:80]}")


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def parse_agent_address(text: str) -> tuple[str, int]:
    """``agent://HOST[:PORT]`` -> (host, port)."""
    if not text.startswith("agent://"):
        raise TargetError(f"--target {text}: expected agent://HOST[:PORT]")
    rest = text.removeprefix("agent://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetError(f"--target {text}: expected agent://HOST[:PORT]")
    return host.strip("[]"), int(port)


class AgentSession:
    """The real-time engine's session, carried out by a remote agent."""

    def __init__(self, host: str, port: int, token: str, profile: TransportProfile) -> None:
        self.address = f"{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise TargetError(
                f"agent://{self.address}: cannot connect: {exc.strerror or exc}"
            ) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.channel = Channel(self.sock, CLIENT_SIDE)
        self._id = 2
        self._events: list[SessionEvent] = []
        self._pending: set[int] = set()
        self._received: dict[int, bytes] = {}
        self.closed = False
        profile_doc = {k: v for k, v in profile.as_dict().items() if k != "source"}
        try:
            hello = client_handshake(self.channel, token, {"profile": profile_doc})
        except OSError as exc:
            raise TargetError(f"agent://{self.address}: {exc.strerror or exc}") from None
        self.agent = str(hello.get("agent", "?"))
        self.driver = hello.get("driver") if isinstance(hello.get("driver"), dict) else None
        self.shift_ns, self.clock_error_ns = self._sync_clock()

    @staticmethod
    def now() -> int:
        return time.monotonic_ns()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "agent",
            "address": self.address,
            "agent": self.agent,
            "clock_error_ns": self.clock_error_ns,
            **({"driver": self.driver} if self.driver else {}),
        }

    def _sync_clock(self) -> tuple[int, int]:
        best: tuple[int, int] | None = None
        for _ in range(CLOCK_SAMPLES):
            a = self.now()
            reply = self._request({"op": "clock"}, "clock")
            b = self.now()
            remote = reply.get("now_ns")
            if not isinstance(remote, int):
                raise ProtocolError("malformed", "clock reply without now_ns")
            if best is None or b - a < best[1]:
                best = ((a + b) // 2 - remote, b - a)
        assert best is not None
        return best[0], best[1] // 2

    def _request(self, message: dict[str, Any], reply_op: str) -> dict[str, Any]:
        self._id += 1
        message["id"] = self._id
        try:
            self.channel.send(message)
            while True:
                reply = raise_if_error(self.channel.receive())
                if reply["op"] == "event":
                    self._take(reply)
                    continue
                if reply["op"] != reply_op:
                    raise ProtocolError("malformed", f"expected {reply_op}, got {reply['op']}")
                return reply
        except OSError as exc:
            raise TargetError(f"agent://{self.address}: {exc.strerror or exc}") from None

    def _take(self, reply: dict[str, Any]) -> list[SessionEvent]:
        events = [event_from_wire(item, self.shift_ns) for item in reply.get("events", [])]
        for e in events:
            if isinstance(e, Returned) and e.irp is not None and e.status == nt.STATUS_PENDING:
                self._pending.add(e.irp)
            elif isinstance(e, Completed):
                self._pending.discard(e.irp)
        self._events += events
        return events

    def _drain(self) -> list[SessionEvent]:
        out, self._events = self._events, []
        return out

    def open(self, sid: int, host: str, port: int, options: OpenOptions) -> int:
        reply = self._request(
            {"op": "open", "socket": sid, "host": host, "port": port,
             "category": options.category, "nagle": options.nagle, "mss": options.mss},
            "opened",
        )  # fmt: skip
        return int(reply.get("local_port", 0))

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
        if at is not None:
            spin_until(at)
        sent_at = self.now()
        reply = self._request(
            {"op": "send", "socket": sid, "irp": irp, "flags": flags, "payload": payload,
             "control_info": control_info, "irql": irql, "at_once": recorded_at_once},
            "sent",
        )  # fmt: skip
        self._take(reply)
        issued = reply.get("issue_ns")
        return (int(issued) + self.shift_ns if isinstance(issued, int) else sent_at), self._drain()

    def disconnect(self, sid: int, *, abortive: bool) -> list[SessionEvent]:
        self._take(self._request({"op": "disconnect", "socket": sid, "abortive": abortive}, "done"))
        return self._drain()

    def close(self, sid: int) -> list[SessionEvent]:
        self._take(self._request({"op": "close", "socket": sid}, "done"))
        return self._drain()

    def poll(self, timeout_ns: int) -> list[SessionEvent]:
        deadline = self.now() + max(timeout_ns, 0)
        while not self._events:
            left = deadline - self.now()
            readable, _, _ = select.select([self.sock], [], [], max(left, 0) / 1e9)
            if readable:
                try:
                    reply = raise_if_error(self.channel.receive())
                except OSError as exc:
                    raise TargetError(f"agent://{self.address}: {exc.strerror or exc}") from None
                if reply["op"] == "event":
                    self._take(reply)
            if self.now() >= deadline:
                break
        return self._drain()

    def outstanding(self) -> bool:
        return bool(self._pending)

    def received(self) -> dict[int, bytes]:
        return self._received

    def received_count(self, sid: int) -> int | None:
        return None  # the agent reports what it read only at the end

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            reply = self._request({"op": "bye"}, "bye")
            got = reply.get("received", {})
            if isinstance(reply.get("driver"), dict):
                self.driver = reply["driver"]
            if isinstance(got, dict):
                self._received = {int(k): bytes(v) for k, v in got.items() if isinstance(v, bytes)}
        except TargetError:
            pass
        finally:
            self.sock.close()


@dataclass(frozen=True)
class AgentTargetOptions:
    address: str
    """``agent://HOST[:PORT]``."""
    token_file: str | None = None
    peer_host: str = "127.0.0.1"
    settle_ns: int = 5_000_000_000
    keep_capture: Path | None = None


def replay_agent(
    trace: Trace,
    options: ReplayOptions,
    target: AgentTargetOptions,
    *,
    source_sha256: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> Trace:
    host, port = parse_agent_address(target.address)
    token = read_token(target.token_file)
    sessions: list[AgentSession] = []

    def connect(profile: TransportProfile) -> AgentSession:
        session = AgentSession(host, port, token, profile)
        sessions.append(session)
        return session

    probe = {"kind": "agent", "address": f"{host}:{port}"}
    replayed = replay_socket(
        trace,
        options,
        SocketTargetOptions(
            topology="loopback",
            settle_ns=target.settle_ns,
            peer_host=target.peer_host,
            keep_capture=target.keep_capture,
        ),
        source_sha256=source_sha256,
        progress=progress,
        session_factory=connect,
        describe=probe,
    )
    if sessions:
        replayed.metadata["target"].update(sessions[0].describe())
    return replayed
