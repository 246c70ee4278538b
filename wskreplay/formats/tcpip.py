"""TCP segments out of captured frames, and the small TCP/IP helpers around them.

The decoding itself (every link layer, tunnel and fragment) is :mod:`wskreplay.formats.layers`;
this module is its front door: :func:`decode` gives the segments as columns
(:class:`TcpPackets`), the report of what every frame was, and the buffer the segments'
offsets point into.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from wskreplay.formats.layers.decode import (
        DECODE_CHUNK,
        Decoded,
        DecodeOptions,
        JoinedBuffer,
        TcpPackets,
        decode,
    )
    from wskreplay.formats.layers.report import DecodeReport
    from wskreplay.formats.layers.tunnels import DEFAULT_PORTS as TUNNEL_PORTS
    from wskreplay.formats.layers.tunnels import TUNNELS

__all__ = [
    "DECODE_CHUNK",
    "DecodeOptions",
    "DecodeReport",
    "Decoded",
    "JoinedBuffer",
    "TUNNELS",
    "TUNNEL_PORTS",
    "TcpPackets",
    "decode",
]
_LAZY = {
    "DECODE_CHUNK": ("decode", "DECODE_CHUNK"),
    "DecodeOptions": ("decode", "DecodeOptions"),
    "Decoded": ("decode", "Decoded"),
    "JoinedBuffer": ("decode", "JoinedBuffer"),
    "TcpPackets": ("decode", "TcpPackets"),
    "decode": ("decode", "decode"),
    "DecodeReport": ("report", "DecodeReport"),
    "TUNNELS": ("tunnels", "TUNNELS"),
    "TUNNEL_PORTS": ("tunnels", "DEFAULT_PORTS"),
}


def __getattr__(name: str) -> Any:
    """The decoder's names, imported when first asked for: the TCP constants and helpers
    below stay cheap to import for the emulator, which never decodes a frame."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f"wskreplay.formats.layers.{module}"), attr)
    globals()[name] = value
    return value


TCP = 6
TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10


def address(hi: int, lo: int) -> str:
    """``hi``/``lo`` as text: dotted IPv4 for IPv4-mapped addresses, else IPv6."""
    hi, lo = int(hi), int(lo)
    if hi == 0 and lo >> 32 == 0xFFFF:
        return f"{lo >> 24 & 255}.{lo >> 16 & 255}.{lo >> 8 & 255}.{lo & 255}"
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def endpoint(hi: int, lo: int, port: int) -> str:
    text = address(hi, lo)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def tcp_options(header: bytes) -> dict[str, int]:
    """MSS, window scale and whether timestamps are on (``ts``), from a TCP header's
    options (SYN segments)."""
    opts: dict[str, int] = {}
    pos = 20
    end = min(len(header), (header[12] >> 4) * 4) if len(header) > 12 else 0
    while pos < end:
        kind = header[pos]
        if kind == 0:
            break
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= end or header[pos + 1] < 2 or pos + header[pos + 1] > end:
            break
        length = header[pos + 1]
        if kind == 2 and length == 4:
            opts["mss"] = int.from_bytes(header[pos + 2 : pos + 4], "big")
        elif kind == 3 and length == 3:
            opts["wscale"] = min(header[pos + 2], 14)
        elif kind == 8 and length == 10:
            opts["ts"] = 1
        pos += length
    return opts


ETHERNET_PREFIX = bytes.fromhex("020000000002020000000001")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")


def ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_tcp_frame(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes | memoryview = b"",
    *,
    window: int = 65535,
    options: bytes = b"",
) -> bytes:
    """An Ethernet + IPv4/IPv6 + TCP frame (IPv6 when the addresses are), IP checksum set,
    TCP checksum 0 (captures taken on the sender show it unset when offloaded)."""
    options += b"\0" * (-len(options) % 4)
    tcp = (
        _TCP.pack(
            sport,
            dport,
            seq % (1 << 32),
            ack % (1 << 32),
            (5 + len(options) // 4) << 4,
            flags,
            window,
            0,
            0,
        )
        + options
    )
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    size = len(tcp) + len(payload)
    if s.version == 4:
        ip = bytearray(_IPV4.pack(0x45, 0, 20 + size, 1, 0x4000, 64, TCP, 0, s.packed, d.packed))
        struct.pack_into("!H", ip, 10, ip_checksum(bytes(ip)))
        return b"".join((ETHERNET_PREFIX, b"\x08\x00", ip, tcp, payload))
    ip6 = _IPV6.pack(0x60000000, size, TCP, 64, s.packed, d.packed)
    return b"".join((ETHERNET_PREFIX, b"\x86\xdd", ip6, tcp, payload))
