"""A replayer's side of the agent protocol for tests: a conversation after the handshake,
a man in the middle, and ``wskreplay check`` against an agent; used against the reference
agent (test_agent.py) and the C agent over the test driver (test_testdriver.py)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path

import msgpack

from wskreplay.formats.agentwire import (
    CLIENT_SIDE,
    HEADER,
    TOKEN_ENV,
    Channel,
    ProtocolError,
    client_handshake,
    encode,
    read_message,
)
from wskreplay.replayer.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
PROFILE = {k: v for k, v in load_profile("windows-tcpip").as_dict().items() if k != "source"}


def talk(address, *messages, raw: bytes | None = None, token: str | None = TOKEN):
    """After the handshake with ``token`` (none when None), send ``messages`` (or ``raw``
    bytes); every reply until the agent closes (the agent's error when the handshake
    fails)."""
    with socket.create_connection(address, timeout=10) as s:
        channel = Channel(s, CLIENT_SIDE)
        if token is not None:
            try:
                client_handshake(channel, token, {"profile": PROFILE})
            except ProtocolError as exc:
                return [{"op": "error", "code": exc.code, "message": str(exc)}]
        if raw is not None:
            s.sendall(raw)
        for m in messages:
            channel.send(m)
        replies = []
        try:
            while True:
                replies.append(channel.receive())
        except Exception:  # noqa: BLE001 - the agent closing ends the conversation
            pass
        return replies


def still_serves(address):
    replies = talk(address, {"op": "bye"})
    assert [r["op"] for r in replies] == ["bye"], f"the agent at {address} answered {replies}"


def check_via(address, token_file=None, trace="field.wskt", *args: str):
    """``wskreplay check`` of a shipped trace (or a path) through the agent at ``address``."""
    host, port = address
    extra = ["--token-file", str(token_file)] if token_file else []
    path = trace if os.sep in str(trace) else ROOT / "traces" / trace
    return subprocess.run(
        [sys.executable, "-m", "wskreplay", "check", str(path),
         "--target", f"agent://{host}:{port}", *extra, *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, TOKEN_ENV: TOKEN},
    )  # fmt: skip


class RecordingProxy:
    """A man in the middle on loopback: forwards one client's bytes to the agent, keeps a
    copy of what the client sent, and can rewrite the client's frames on the way."""

    def __init__(self, agent, rewrite=None):
        self.agent, self.rewrite = agent, rewrite
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.sent = bytearray()

    def serve_one(self):
        def run():
            client, _ = self.listener.accept()
            upstream = socket.create_connection(self.agent)
            frames = 0
            try:
                while True:
                    readable, _, _ = select.select([client, upstream], [], [], 10)
                    if not readable:
                        return
                    if client in readable:
                        header = client.recv(4, socket.MSG_WAITALL)
                        if len(header) < 4:
                            return
                        body = client.recv(HEADER.unpack(header)[0], socket.MSG_WAITALL)
                        self.sent += header + body
                        if self.rewrite is not None:
                            body = self.rewrite(frames, body)
                        frames += 1
                        upstream.sendall(header + body)
                    if upstream in readable:
                        data = upstream.recv(1 << 16)
                        if not data:
                            return
                        client.sendall(data)
            except OSError:
                return
            finally:
                client.close()
                upstream.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def auth_without_the_token(address) -> tuple[dict, dict]:
    """A client that takes the agent's challenge and answers with an ``auth`` it cannot tag
    (no token): the challenge, and the agent's answer to that auth."""
    with socket.create_connection(address, timeout=30) as s:
        s.sendall(encode({"op": "hello", "id": 1, "version": 2, "nonce": os.urandom(32)}))
        challenge = read_message(s)
        body = msgpack.packb({"op": "auth", "id": 2, "profile": PROFILE})
        s.sendall(HEADER.pack(len(body) + 32) + body + bytes(32))
        return challenge, read_message(s)


def replayed_handshake(address) -> list[dict]:
    """The bytes a client sent in a whole good session (recorded by a proxy), sent again on
    a new connection: the agent's replies until it closes."""
    proxy = RecordingProxy(address)
    thread = proxy.serve_one()
    ops = [r["op"] for r in talk(proxy.address, {"op": "clock", "id": 3}, {"op": "bye"})]
    assert ops == ["clock", "bye"]
    thread.join(30)
    with socket.create_connection(address, timeout=30) as s:
        s.sendall(bytes(proxy.sent))
        replies = []
        try:
            while True:
                replies.append(read_message(s))
        except Exception:  # noqa: BLE001 - the agent closing ends the conversation
            pass
    return replies


def check_with_a_changed_frame(address) -> subprocess.CompletedProcess:
    """``check`` through a proxy that flips one byte of the client's third frame (its first
    request after auth)."""

    def flip(index, body):
        if index == 2:
            body = bytearray(body)
            body[len(body) // 2] ^= 0x20
        return bytes(body)

    proxy = RecordingProxy(address, rewrite=flip)
    proxy.serve_one()
    return check_via(proxy.address)
