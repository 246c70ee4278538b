"""WSK constants and the CMSGHDR (control information) codec.

Layouts from the WDK ``ws2def.h``/``wsk.h`` as summarised in shared/reference/wsk-facts.md:
``CMSGHDR = { SIZE_T cmsg_len; INT cmsg_level; INT cmsg_type; }`` followed by data; on x64 the
header is 16 bytes and entries are 8-byte aligned, on x86 12 bytes and 4-byte aligned.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from wskreplay.errors import InputError

WSK_FLAG_BASIC_SOCKET: Final = 0x0
WSK_FLAG_LISTEN_SOCKET: Final = 0x1
WSK_FLAG_CONNECTION_SOCKET: Final = 0x2
WSK_FLAG_DATAGRAM_SOCKET: Final = 0x4
WSK_FLAG_STREAM_SOCKET: Final = 0x8

WSK_FLAG_OOB: Final = 0x1
WSK_FLAG_NODELAY: Final = 0x2
WSK_FLAG_ABORTIVE: Final = 0x1
"""WskDisconnect's flag (wsk-facts: "WSK_FLAG_ABORTIVE | 0x1 | disconnect")."""

AF_INET = 2
AF_INET6 = 23

IPPROTO_IP = 0
IPPROTO_IPV6 = 41
IPPROTO_TCP = 6


@dataclass(frozen=True)
class ControlMessage:
    level: int
    type: int
    data: bytes


@dataclass(frozen=True)
class CmsgLayout:
    name: str
    header: struct.Struct
    align: int

    def align_up(self, n: int) -> int:
        return (n + self.align - 1) & ~(self.align - 1)


X64 = CmsgLayout("x64", struct.Struct("<Qii"), 8)
X86 = CmsgLayout("x86", struct.Struct("<Iii"), 4)


def encode_cmsgs(messages: list[ControlMessage], layout: CmsgLayout = X64) -> bytes:
    """A ControlInfo buffer holding ``messages`` (CMSG_SPACE padding between entries)."""
    out = bytearray()
    for msg in messages:
        length = layout.header.size + len(msg.data)
        out += layout.header.pack(length, msg.level, msg.type) + msg.data
        out += b"\0" * (layout.align_up(length) - length)
    return bytes(out)


def decode_cmsgs(
    buf: bytes, layout: CmsgLayout = X64, *, path: str | None = None
) -> list[ControlMessage]:
    """Parse a ControlInfo buffer; every cmsg_len is checked against the bytes present."""
    messages: list[ControlMessage] = []
    pos = 0
    hsize = layout.header.size
    while pos < len(buf):
        if len(buf) - pos < hsize:
            raise InputError(
                path, f"CMSGHDR truncated: {len(buf) - pos} bytes, header needs {hsize}", pos
            )
        length, level, ctype = layout.header.unpack_from(buf, pos)
        if length < hsize or length > len(buf) - pos:
            raise InputError(
                path,
                f"cmsg_len {length} outside [{hsize}, {len(buf) - pos}] ({layout.name} layout)",
                pos,
            )
        messages.append(ControlMessage(level, ctype, bytes(buf[pos + hsize : pos + length])))
        pos += layout.align_up(length)
    return messages


def encode_sockaddr(address: str, port: int) -> bytes:
    """SOCKADDR_IN (16 bytes) or SOCKADDR_IN6 (28 bytes) as a Windows driver holds it."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return struct.pack("<H", AF_INET) + struct.pack("!H", port) + ip.packed + b"\0" * 8
    return struct.pack("<H", AF_INET6) + struct.pack("!HI", port, 0) + ip.packed + b"\0" * 4


def decode_sockaddr(raw: bytes) -> tuple[int, str, int]:
    """(family, address text, port) of a SOCKADDR_IN / SOCKADDR_IN6; ValueError otherwise."""
    if len(raw) < 2:
        raise ValueError(f"SOCKADDR of {len(raw)} bytes")
    family = struct.unpack_from("<H", raw)[0]
    if family == AF_INET and len(raw) >= 8:
        return family, str(ipaddress.IPv4Address(raw[4:8])), struct.unpack_from("!H", raw, 2)[0]
    if family == AF_INET6 and len(raw) >= 24:
        return family, str(ipaddress.IPv6Address(raw[8:24])), struct.unpack_from("!H", raw, 2)[0]
    raise ValueError(
        f"SOCKADDR family {family} in {len(raw)} bytes is neither AF_INET nor AF_INET6"
    )
