"""The agent protocol's framing and messages (docs/agent-protocol.md).

A frame is a 4-byte big-endian length and that many bytes of one msgpack map. Both sides
bound what they accept: a frame longer than the limit is refused before its bytes are read;
msgpack is decoded with the same limit and no extension types, so nothing executes and
nothing is larger than its frame.
"""

from __future__ import annotations

import hmac
import os
import socket
import struct
from pathlib import Path
from typing import Any

import msgpack

from wskreplay.errors import TargetError
from wskreplay.replayer.targets.socket_session import PeerReset, SessionEvent
from wskreplay.replayer.wsk_socket import Completed, Returned, Violation

VERSION = 1
TOKEN_ENV = "WSKREPLAY_AGENT_TOKEN"
DEFAULT_PORT = 7393
MAX_FRAME = 4 << 20
"""The largest frame either side accepts: a send's payload and ControlInfo fit within it."""
HEADER = struct.Struct(">I")


class ProtocolError(TargetError):
    """The other side broke the protocol, or refused us: ``code`` says how."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"agent: {code}: {message}")


def encode(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


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


def read_message(sock: socket.socket, limit: int = MAX_FRAME) -> dict[str, Any]:
    """One frame from ``sock``, decoded; a ProtocolError for an oversized or malformed one."""
    (size,) = HEADER.unpack(_read_exactly(sock, HEADER.size))
    if size > limit:
        raise ProtocolError("too-large", f"frame of {size} bytes, limit {limit}")
    return decode(_read_exactly(sock, size), limit)


def decode(body: bytes, limit: int = MAX_FRAME) -> dict[str, Any]:
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


def same_token(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def event_to_wire(e: SessionEvent) -> list[Any]:
    if isinstance(e, Returned):
        return ["returned", e.irp, e.status, e.time_ns]
    if isinstance(e, Completed):
        return ["completed", e.irp, e.status, e.information, e.time_ns]
    if isinstance(e, Violation):
        return ["violation", e.irp, e.kind, e.detail, e.time_ns]
    return ["reset", e.socket, e.status, e.time_ns]


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
