"""Real Ethernet frames re-wrapped in the link layers and tunnels the shared captures lack
(802.11 with its radio headers, ARCNET, VXLAN, Geneve, GRE, MPLS, IP in IP, fragments...).

The IP packets inside stay the real ones; only what carries them is built here, by the
published layouts. Tests give the result to tshark as the oracle, never to expectations
of our own."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable

from wskreplay.formats import pcap

Frame = tuple[int, bytes]
MAC_A, MAC_B, MAC_AP = bytes.fromhex("020000000001"), bytes.fromhex("020000000002"), bytes(6)
OUTER_SRC, OUTER_DST = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
OUTER6_SRC = bytes.fromhex("20010db8000000000000000000000001")
OUTER6_DST = bytes.fromhex("20010db8000000000000000000000002")


def ethernet_frames(path: str) -> list[Frame]:
    """The Ethernet frames of a shared capture (time, bytes)."""
    frames = pcap.read_frames(path)
    return [
        (int(frames.time_ns[i]), bytes(frames.frame(i)))
        for i in range(len(frames))
        if int(frames.linktype[i]) == pcap.LINKTYPE_ETHERNET
    ]


def ip_packet(frame: bytes) -> tuple[int, bytes]:
    """(EtherType, the IP packet) of an Ethernet frame, VLAN tags skipped."""
    etype, at = struct.unpack_from("!H", frame, 12)[0], 14
    while etype in (0x8100, 0x88A8):
        etype, at = struct.unpack_from("!H", frame, at + 2)[0], at + 4
    return etype, frame[at:]


def ip_only(frames: Iterable[Frame]) -> list[tuple[int, int, bytes]]:
    out = []
    for ts, f in frames:
        etype, packet = ip_packet(f)
        if etype in (0x0800, 0x86DD):
            out.append((ts, etype, packet))
    return out


def ethernet(etype: int, payload: bytes) -> bytes:
    return MAC_B + MAC_A + struct.pack("!H", etype) + payload


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(proto: int, payload: bytes, *, ident: int = 1, flags_offset: int = 0) -> bytes:
    head = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            ident,
            flags_offset,
            64,
            proto,
            0,
            OUTER_SRC,
            OUTER_DST,
        )
    )
    struct.pack_into("!H", head, 10, _checksum(bytes(head)))
    return bytes(head) + payload


def ipv6(next_header: int, payload: bytes) -> bytes:
    return (
        struct.pack("!IHBB", 0x60000000, len(payload), next_header, 64)
        + OUTER6_SRC
        + OUTER6_DST
        + payload
    )


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def inner_ethernet(etype: int, packet: bytes) -> bytes:
    return ethernet(etype, packet)


# --- 802.11 -------------------------------------------------------------------------


def llc_snap(etype: int, packet: bytes) -> bytes:
    return b"\xaa\xaa\x03\x00\x00\x00" + struct.pack("!H", etype) + packet


def dot11_data(
    body: bytes,
    *,
    qos: bool = True,
    to_ds: bool = True,
    from_ds: bool = False,
    protected: bool = False,
    amsdu: bool = False,
    htc: bool = False,
    seq: int = 0,
    pad: bool = False,
) -> bytes:
    """An 802.11 (QoS) data frame around ``body``."""
    fc0 = 0x88 if qos else 0x08
    fc1 = (1 if to_ds else 0) | (2 if from_ds else 0) | (0x40 if protected else 0)
    fc1 |= 0x80 if htc else 0
    header = bytes([fc0, fc1]) + b"\0\0" + MAC_AP + MAC_A + MAC_B + struct.pack("<H", seq << 4)
    if to_ds and from_ds:
        header += MAC_B
    if qos:
        header += struct.pack("<H", 0x80 if amsdu else 0)
    if htc and qos:
        header += b"\0\0\0\0"
    if pad:
        header += b"\0" * (-len(header) % 4)
    return header + body


def amsdu(subframes: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for k, (etype, packet) in enumerate(subframes):
        msdu = llc_snap(etype, packet)
        sub = MAC_B + MAC_A + struct.pack("!H", len(msdu)) + msdu
        if k + 1 < len(subframes):
            sub += b"\0" * (-len(sub) % 4)
        out += sub
    return out


def with_fcs(frame: bytes) -> bytes:
    return frame + struct.pack("<I", zlib.crc32(frame))


def radiotap(frame: bytes, *, fcs: bool = False, pad: bool = False) -> bytes:
    """Radiotap with TSFT (8-byte aligned), Flags, Rate, Channel and antenna signal."""
    flags = (0x10 if fcs else 0) | (0x20 if pad else 0)
    present = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5)
    fields = struct.pack("<QBBHHb", 123456789, flags, 12, 2437, 0x00A0, -40)
    head = struct.pack("<BBHI", 0, 0, 8 + len(fields), present)
    return head + fields + (with_fcs(frame) if fcs else frame)


def radiotap_extended(frame: bytes) -> bytes:
    """Radiotap with a second presence bitmap (bit 31 chained) and no TSFT."""
    present0 = (1 << 1) | (1 << 31)
    present1 = 0
    fields = struct.pack("<BB", 0x10, 0)
    head = struct.pack("<BBHII", 0, 0, 12 + len(fields), present0, present1)
    return head + fields + with_fcs(frame)


def ppi(frame: bytes, *, fcs: bool = True) -> bytes:
    common = struct.pack("<QHHHHBBbb", 0, 1 if fcs else 0, 108, 2437, 0x00A0, 0, 0, -40, -90)
    field_ = struct.pack("<HH", 2, len(common)) + common
    head = struct.pack("<BBHI", 0, 0, 8 + len(field_), 105)
    return head + field_ + (with_fcs(frame) if fcs else frame)


def prism(frame: bytes) -> bytes:
    """A 144-byte Prism monitor header (msgcode 0x44, host order little-endian)."""
    head = struct.pack("<II16s", 0x44, 144, b"wlan0".ljust(16, b"\0"))
    items = b""
    for did in range(10):
        items += struct.pack("<IHHI", 0x41 + did, 0, 4, did)
    return head + items + frame


def avs(frame: bytes) -> bytes:
    """An AVS (wlancap) version 1 header, 64 bytes, big-endian."""
    body = struct.pack("!QQIIIIIiiIII", 0, 0, 1, 6, 11, 54, 0, -40, -90, 1, 0, 0)
    return struct.pack("!II", 0x80211001, 8 + len(body)) + body + frame


# --- ARCNET -------------------------------------------------------------------------

ARCNET_IP, ARCNET_IPV6 = 212, 0xC4


def arcnet_bsd(etype: int, packet: bytes, *, exception: bool = False) -> bytes:
    proto = ARCNET_IP if etype == 0x0800 else ARCNET_IPV6
    if exception:
        return bytes([1, 2, proto, 0xFF, 0xFF, 0xFF, proto, 0]) + b"\0\x07" + packet
    return bytes([1, 2, proto, 0]) + b"\0\x07" + packet


def arcnet_linux(etype: int, packet: bytes) -> bytes:
    proto = ARCNET_IP if etype == 0x0800 else ARCNET_IPV6
    return bytes([1, 2, 0, 0, proto, 0]) + b"\0\x07" + packet


# --- tunnels ------------------------------------------------------------------------


def vxlan(frame: bytes, *, port: int = 4789, vni: int = 5000) -> bytes:
    header = struct.pack("!BxxxI", 0x08, vni << 8)
    return ethernet(0x0800, ipv4(17, udp(54321, port, header + frame)))


def geneve(frame: bytes, *, port: int = 6081) -> bytes:
    option = struct.pack("!HBB", 0x0103, 0x80, 1) + b"\xde\xad\xbe\xef"
    header = struct.pack("!BBHI", len(option) // 4, 0, 0x6558, 77 << 8) + option
    return ethernet(0x0800, ipv4(17, udp(54321, port, header + frame)))


def gtp_u(etype: int, packet: bytes, *, extension: bool = True) -> bytes:
    if extension:
        ext = bytes([1, 0x00, 0x01, 0x00])
        header = struct.pack("!BBHI", 0x34, 0xFF, 4 + len(ext) + len(packet), 0x1234)
        header += struct.pack("!HBB", 0, 0, 0x85) + ext
    else:
        header = struct.pack("!BBHI", 0x30, 0xFF, len(packet), 0x1234)
    return ethernet(0x0800, ipv4(17, udp(2152, 2152, header + packet)))


def teredo(packet6: bytes) -> bytes:
    origin = b"\x00\x00" + struct.pack("!H", 0xFFFF ^ 3544) + bytes(4)
    return ethernet(0x0800, ipv4(17, udp(3544, 40000, origin + packet6)))


def gre(etype: int, packet: bytes, *, key: int | None = 7, seq: int | None = 1) -> bytes:
    flags = (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    header = struct.pack("!HH", flags, etype)
    header += struct.pack("!I", key) if key is not None else b""
    header += struct.pack("!I", seq) if seq is not None else b""
    return ethernet(0x0800, ipv4(47, header + packet))


def erspan_ii(frame: bytes, seq: int) -> bytes:
    header = struct.pack("!HHI", 0x1000 | 10, 0x0001, 0)
    return ethernet(0x0800, ipv4(47, struct.pack("!HHI", 0x1000, 0x88BE, seq) + header + frame))


def erspan_iii(frame: bytes, seq: int) -> bytes:
    header = struct.pack("!HHIHH", 0x2000 | 10, 0x0001, 0, 0, 0)
    return ethernet(0x0800, ipv4(47, struct.pack("!HHI", 0x1000, 0x22EB, seq) + header + frame))


def pptp(packet: bytes, call: int = 9, seq: int = 1) -> bytes:
    ppp = b"\xff\x03\x00\x21" + packet
    header = struct.pack("!HHHHI", 0x3001, 0x880B, len(ppp), call, seq)
    return ethernet(0x0800, ipv4(47, header + ppp))


def mpls(etype: int, packet: bytes, labels: tuple[int, ...] = (100, 200)) -> bytes:
    stack = b""
    for k, label in enumerate(labels):
        bottom = 0x100 if k == len(labels) - 1 else 0
        stack += struct.pack("!I", label << 12 | bottom | 64)
    return ethernet(0x8847, stack + packet)


def ip_in_ip(etype: int, packet: bytes, *, outer6: bool) -> bytes:
    proto = 4 if etype == 0x0800 else 41
    if outer6:
        return ethernet(0x86DD, ipv6(proto, packet))
    return ethernet(0x0800, ipv4(proto, packet))


def fragment_ipv4(packet: bytes, size: int = 24) -> list[bytes]:
    """The IPv4 ``packet`` as fragments of ``size`` payload bytes (a multiple of 8)."""
    ihl = (packet[0] & 0xF) * 4
    header, payload = bytearray(packet[:ihl]), packet[ihl:]
    ident = struct.unpack_from("!H", header, 4)[0] or 0x4242
    out = []
    for start in range(0, len(payload), size):
        piece = payload[start : start + size]
        more = 0x2000 if start + size < len(payload) else 0
        h = bytearray(header)
        struct.pack_into("!HHH", h, 2, ihl + len(piece), ident, more | (start // 8))
        struct.pack_into("!H", h, 10, 0)
        struct.pack_into("!H", h, 10, _checksum(bytes(h)))
        out.append(bytes(h) + piece)
    return out


def fragment_ipv6(packet: bytes, size: int = 32, ident: int = 0x1234) -> list[bytes]:
    next_header, payload = packet[6], packet[40:]
    out = []
    for start in range(0, len(payload), size):
        piece = payload[start : start + size]
        more = 1 if start + size < len(payload) else 0
        frag = struct.pack("!BBHI", next_header, 0, start | more, ident)
        head = bytearray(packet[:40])
        struct.pack_into("!H", head, 4, len(frag) + len(piece))
        head[6] = 44
        out.append(bytes(head) + frag + piece)
    return out


Wrapper = Callable[[int, bytes], bytes]


def rewrap(frames: list[tuple[int, int, bytes]], wrap: Wrapper) -> list[Frame]:
    return [(ts, wrap(etype, packet)) for ts, etype, packet in frames]
