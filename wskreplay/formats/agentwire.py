"""The agent protocol's wire (docs/agent-protocol.md): framing, the handshake, tagged
frames, the field checks, the token. Below both of its users: the replayer's agent target
(``wskreplay.replayer.targets.agent``) and the reference agent (``wskreplay.agent``), each
of which turns the protocol's events into its own objects.

A frame is a 4-byte big-endian length and that many bytes of one msgpack map. Both sides
bound what they accept: a frame longer than the limit is refused before its bytes are read;
msgpack is decoded with the same limit and no extension types, so nothing executes and
nothing is larger than its frame.

Version 2: the token never crosses the network. ``hello`` and ``challenge`` exchange fresh
nonces and the agent's proof (an HMAC-SHA256 of both nonces under the token); from the
client's ``auth`` on, every frame ends with a tag, HMAC-SHA256 under a key drawn from the
token and both nonces over the sender's side, the frame's sequence number and its body. A
client without the token cannot tag ``auth``; a recorded exchange fails on the agent's new
nonce; a frame changed, injected, dropped or reordered on the way fails its tag.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
import struct
from pathlib import Path
from typing import Any

import msgpack

from wskreplay.errors import TargetError

VERSION = 2
TOKEN_ENV = "WSKREPLAY_AGENT_TOKEN"
DEFAULT_PORT = 7393
MAX_FRAME = 4 << 20
"""The largest frame either side accepts: a send's payload and ControlInfo fit within it."""
HEADER = struct.Struct(">I")
NONCE_BYTES = 32
TAG_BYTES = 32
CLIENT_SIDE = b"C"
AGENT_SIDE = b"A"
SEQUENCE = struct.Struct(">Q")


class ProtocolError(TargetError):
    """The other side broke the protocol, or refused us: ``code`` says how."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"agent: {code}: {message}")


def encode(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def agent_proof(token: str, client_nonce: bytes, agent_nonce: bytes) -> bytes:
    """What the agent shows in ``challenge``: that it holds the token, for this client's nonce."""
    return _hmac(token.encode(), b"wskreplay-v2 agent proof" + client_nonce + agent_nonce)


def session_key(token: str, client_nonce: bytes, agent_nonce: bytes) -> bytes:
    return _hmac(token.encode(), b"wskreplay-v2 session key" + client_nonce + agent_nonce)


def frame_tag(key: bytes, side: bytes, sequence: int, body: bytes | memoryview) -> bytes:
    mac = hmac.new(key, side + SEQUENCE.pack(sequence), hashlib.sha256)
    mac.update(body)
    return mac.digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


class Channel:
    """One connection's frames; once keyed, each frame sent is tagged and each received
    must carry the other side's tag for the next sequence number."""

    def __init__(self, sock: socket.socket, side: bytes, limit: int = MAX_FRAME) -> None:
        self.sock = sock
        self.side = side
        self.peer_side = AGENT_SIDE if side == CLIENT_SIDE else CLIENT_SIDE
        self.limit = limit
        self.key: bytes | None = None
        self.sent = 0
        self.received = 0

    def send(self, message: dict[str, Any]) -> None:
        body = msgpack.packb(message, use_bin_type=True)
        tag = b""
        if self.key is not None:
            tag = frame_tag(self.key, self.side, self.sent, body)
            self.sent += 1
        self.sock.sendall(b"".join((HEADER.pack(len(body) + len(tag)), body, tag)))

    def read_frame(self) -> bytes:
        return read_frame(self.sock, self.limit)

    def open_frame(self, frame: bytes) -> dict[str, Any]:
        """The message of a frame read by :meth:`read_frame`, its tag checked when keyed."""
        if self.key is None:
            return decode(frame, self.limit)
        view = memoryview(frame)
        body, tag = view[:-TAG_BYTES], view[-TAG_BYTES:]
        if len(frame) < TAG_BYTES or not hmac.compare_digest(
            tag, frame_tag(self.key, self.peer_side, self.received, body)
        ):
            raise ProtocolError(
                "bad-mac",
                f"frame {self.received} failed its authentication tag "
                "(changed, injected or reordered on the way)",
            )
        self.received += 1
        return decode(body, self.limit)

    def receive(self) -> dict[str, Any]:
        return self.open_frame(self.read_frame())


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ProtocolError(
                "closed", f"connection closed {len(chunks)} of {n} bytes into a frame"
            )
        chunks += chunk
    return bytes(chunks)


def read_frame(sock: socket.socket, limit: int = MAX_FRAME) -> bytes:
    """One frame's bytes from ``sock``; a ProtocolError for an oversized one, before its
    bytes are read."""
    (size,) = HEADER.unpack(_read_exactly(sock, HEADER.size))
    if size > limit:
        raise ProtocolError("too-large", f"frame of {size} bytes, limit {limit}")
    return _read_exactly(sock, size)


def read_message(sock: socket.socket, limit: int = MAX_FRAME) -> dict[str, Any]:
    """One untagged frame from ``sock``, decoded; a ProtocolError for an oversized or
    malformed one."""
    return decode(read_frame(sock, limit), limit)


def decode(body: bytes | memoryview, limit: int = MAX_FRAME) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=1 << 16,
            max_map_len=1 << 10,
            ext_hook=_no_ext,
        )
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise ProtocolError("malformed", f"not a msgpack message: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("malformed", "a message is a map with a string 'op'")
    return message


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def field(message: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``message[name]``, which must be of ``kind`` (a ProtocolError otherwise)."""
    value = message.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ProtocolError(
            "malformed", f"{message.get('op')}: field {name!r} missing or wrong type"
        )
    return value


def read_token(token_file: str | None) -> str:
    """The shared secret: the file named by ``--token-file``, else $WSKREPLAY_AGENT_TOKEN."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TargetError(f"{token_file}: cannot read the agent token: {exc}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if len(token) < 16:
        raise TargetError(
            f"the agent needs a shared token of at least 16 characters in ${TOKEN_ENV} "
            "or a file named by --token-file"
        )
    return token


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def raise_if_error(message: dict[str, Any]) -> dict[str, Any]:
    if message["op"] == "error":
        raise ProtocolError(str(message.get("code")), str(message.get("message")))
    return message


def client_handshake(channel: Channel, token: str, auth: dict[str, Any]) -> dict[str, Any]:
    """The replayer's half of the handshake: the agent's ``hello`` (its welcome), once both
    sides proved they hold the token. ``auth`` holds the fields of the client's ``auth``."""
    nonce = os.urandom(NONCE_BYTES)
    channel.send({"op": "hello", "id": 1, "version": VERSION, "nonce": nonce})
    challenge = raise_if_error(channel.receive())
    if challenge["op"] != "challenge":
        raise ProtocolError("malformed", f"expected challenge, got {challenge['op']}")
    if challenge.get("version") != VERSION:
        raise ProtocolError(
            "version",
            f"the agent speaks protocol version {challenge.get('version')!r}, "
            f"this replayer {VERSION}",
        )
    agent_nonce = nonce_field(challenge)
    if not hmac.compare_digest(
        field(challenge, "proof", bytes), agent_proof(token, nonce, agent_nonce)
    ):
        raise ProtocolError(
            "bad-token", "the agent did not prove it holds the token (a different token?)"
        )
    channel.key = session_key(token, nonce, agent_nonce)
    channel.send({"op": "auth", "id": 2, **auth})
    frame = channel.read_frame()
    try:
        welcome = channel.open_frame(frame)
    except ProtocolError as exc:
        if exc.code == "bad-mac":
            refusal = _untagged_error(frame, channel.limit)
            if refusal is not None:
                raise_if_error(refusal)
        raise
    raise_if_error(welcome)
    if welcome["op"] != "hello":
        raise ProtocolError("malformed", f"expected hello, got {welcome['op']}")
    return welcome


def nonce_field(message: dict[str, Any]) -> bytes:
    nonce = field(message, "nonce", bytes)
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError(
            "malformed", f"{message['op']}: nonce of {len(nonce)} bytes, expected {NONCE_BYTES}"
        )
    return bytes(nonce)


def _untagged_error(frame: bytes, limit: int) -> dict[str, Any] | None:
    """The agent refuses an ``auth`` it cannot verify untagged: it has no key the client
    shares."""
    try:
        message = decode(frame, limit)
    except ProtocolError:
        return None
    return message if message["op"] == "error" else None
