"""Link, IP and TCP headers of many frames at once, decoded with numpy.

Every field is gathered for all frames in one array operation; a frame whose captured
bytes do not reach a field simply does not qualify (it is counted, never read past its
end). Addresses are 16 bytes, IPv4 as IPv4-mapped IPv6 (``::ffff:a.b.c.d``), held as two
big-endian uint64 halves so flows can be keyed with plain integer columns.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, fields

import numpy as np

from wskreplay.formats import pcap

ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD
VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
ETHERTYPE_PPPOE_SESSION = 0x8864
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057
IPV6_EXTENSIONS = (0, 43, 44, 51, 60)
TCP = 6
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
V4_MAPPED_HI = np.uint64(0)
V4_MAPPED_LO_PREFIX = np.uint64(0xFFFF) << np.uint64(32)


@dataclass
class TcpPackets:
    """The TCP segments among a capture's frames, as columns (row = segment)."""

    frame: np.ndarray
    time_ns: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray
    window: np.ndarray
    header_offset: np.ndarray
    """Buffer offset of the TCP header (options are read from here for SYNs)."""
    header_len: np.ndarray
    payload_offset: np.ndarray
    payload_len: np.ndarray
    """TCP payload bytes the segment carried on the wire (from the IP length)."""
    captured_len: np.ndarray
    """Of those, bytes present in the capture (fewer when the snap length cut the frame)."""
    captured_header_len: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)


class _Gather:
    """Big-endian reads at per-frame positions of one buffer, one gather per field.

    ``views[k]`` is an overlapping strided view whose element ``i`` is the k-byte big-endian
    integer at byte ``i``. Callers check :meth:`fits` before trusting a value; positions are
    clipped so that a frame too short for a field never reads outside the buffer.
    """

    def __init__(self, buffer: memoryview, end: np.ndarray) -> None:
        raw = np.frombuffer(buffer, dtype=np.uint8) if len(buffer) else np.zeros(0, np.uint8)
        self.raw = np.concatenate((raw, np.zeros(8, np.uint8))) if len(raw) < 8 else raw
        self.end = end
        self.views = {
            k: np.ndarray(
                (len(self.raw) - k + 1,),
                dtype=f">u{k}" if k > 1 else "u1",
                buffer=self.raw,
                strides=(1,),
            )
            for k in (1, 2, 4, 8)
        }

    def fits(self, pos: np.ndarray, size: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Whether ``size`` bytes at ``pos`` lie inside the frame (of ``rows``, if given)."""
        end = self.end if rows is None else self.end[rows]
        return (pos >= 0) & (pos + size <= end)

    def _read(self, pos: np.ndarray, size: int, checked: bool) -> np.ndarray:
        view = self.views[size]
        return view[pos if checked else np.clip(pos, 0, len(view) - 1)]

    def u8(self, pos: np.ndarray, *, checked: bool = False) -> np.ndarray:
        return self._read(pos, 1, checked).astype(np.int64)

    def be(self, pos: np.ndarray, size: int, *, checked: bool = False) -> np.ndarray:
        """``checked``: every position is known to hold ``size`` bytes (skips clipping)."""
        return self._read(pos, size, checked).astype(np.uint64)


def _link_layer(frames: pcap.Frames, g: _Gather) -> tuple[np.ndarray, np.ndarray]:
    """(offset of the IP header or -1, IP version 4/6 or 0) for every frame.

    Each link type is decoded on the rows that have it, and VLAN tags and PPPoE only where
    the ethertype says so, so a plain Ethernet capture costs one gather here."""
    n = len(frames)
    off, lt = frames.offset, frames.linktype
    l3 = np.full(n, -1, dtype=np.int64)
    version = np.zeros(n, dtype=np.int64)

    def place(rows: np.ndarray, etype: np.ndarray, at: np.ndarray) -> None:
        l3[rows] = at
        version[rows[etype == ETHERTYPE_IPV4]] = 4
        version[rows[etype == ETHERTYPE_IPV6]] = 6

    rows = np.flatnonzero((lt == pcap.LINKTYPE_ETHERNET) & g.fits(off, 14))
    if len(rows):
        etype = g.be(off[rows] + 12, 2, checked=True).astype(np.int64)
        at = off[rows] + 14
        for _ in range(3):
            tagged = np.flatnonzero(np.isin(etype, VLAN_TAGS) & g.fits(at, 4, rows))
            if not len(tagged):
                break
            etype[tagged] = g.be(at[tagged] + 2, 2, checked=True).astype(np.int64)
            at[tagged] += 4
        pppoe = np.flatnonzero((etype == ETHERTYPE_PPPOE_SESSION) & g.fits(at, 8, rows))
        if len(pppoe):
            ppp = g.be(at[pppoe] + 6, 2, checked=True).astype(np.int64)
            etype[pppoe] = np.where(
                ppp == PPP_IPV4, ETHERTYPE_IPV4, np.where(ppp == PPP_IPV6, ETHERTYPE_IPV6, 0)
            )
            at[pppoe] += 8
        place(rows, etype, at)

    for linktype, proto_at, header in (
        (pcap.LINKTYPE_LINUX_SLL, 14, 16),
        (pcap.LINKTYPE_LINUX_SLL2, 0, 20),
    ):
        rows = np.flatnonzero((lt == linktype) & g.fits(off, header))
        if len(rows):
            place(
                rows,
                g.be(off[rows] + proto_at, 2, checked=True).astype(np.int64),
                off[rows] + header,
            )

    rows = np.flatnonzero(np.isin(lt, (pcap.LINKTYPE_NULL, pcap.LINKTYPE_LOOP)) & g.fits(off, 4))
    if len(rows):
        family = g.be(off[rows], 4, checked=True).astype(np.int64)
        host_order = (lt[rows] == pcap.LINKTYPE_NULL) & (family > 0xFFFF)
        family = np.where(host_order, _swap32(family.astype(np.uint64)), family)
        l3[rows] = off[rows] + 4
        version[rows[family == 2]] = 4
        version[rows[np.isin(family, (10, 24, 28, 30))]] = 6

    raw_types = (pcap.LINKTYPE_RAW, 12, 14, pcap.LINKTYPE_IPV4, pcap.LINKTYPE_IPV6)
    rows = np.flatnonzero(np.isin(lt, raw_types) & g.fits(off, 1))
    if len(rows):
        l3[rows] = off[rows]
        version[rows] = g.u8(off[rows], checked=True) >> 4
    return l3, version


def _swap32(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.uint64)
    out = ((v & np.uint64(0xFF)) << np.uint64(24)) | ((v & np.uint64(0xFF00)) << np.uint64(8))
    out |= ((v >> np.uint64(8)) & np.uint64(0xFF00)) | ((v >> np.uint64(24)) & np.uint64(0xFF))
    return out.astype(np.int64)


def decode_tcp(frames: pcap.Frames) -> tuple[TcpPackets, dict[str, int]]:
    """The TCP segments of ``frames`` and counts of what was not TCP or not decodable."""
    n = len(frames)
    end = frames.offset + frames.caplen
    g = _Gather(frames.buffer, end)
    l3, version = _link_layer(frames, g)

    l4 = np.full(n, -1, dtype=np.int64)
    ip_payload = np.zeros(n, dtype=np.int64)
    src_hi, src_lo = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64)
    dst_hi, dst_lo = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64)
    is_tcp = np.zeros(n, dtype=bool)

    rows = np.flatnonzero((version == 4) & g.fits(l3, 20))
    at = l3[rows]
    head = g.be(at, 8, checked=True)
    ihl = ((head >> np.uint64(56)) & np.uint64(0xF)).astype(np.int64) * 4
    total = ((head >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64)
    total = np.where(total == 0, end[rows] - at, total)
    v4_fragment = (head & np.uint64(0x3FFF)) != 0
    ok = (ihl >= 20) & ~v4_fragment & (g.u8(at + 9, checked=True) == TCP)
    rows, at, ihl, total = rows[ok], at[ok], ihl[ok], total[ok]
    addrs = g.be(at + 12, 8, checked=True)
    l4[rows] = at + ihl
    ip_payload[rows] = total - ihl
    src_lo[rows] = V4_MAPPED_LO_PREFIX | (addrs >> np.uint64(32))
    dst_lo[rows] = V4_MAPPED_LO_PREFIX | (addrs & np.uint64(0xFFFFFFFF))
    is_tcp[rows] = True

    rows = np.flatnonzero((version == 6) & g.fits(l3, 40))
    base = l3[rows]
    next_header = g.u8(base + 6)
    at = base + 40
    remaining = g.be(base + 4, 2).astype(np.int64)
    remaining = np.where(remaining == 0, end[rows] - at, remaining)
    v6_fragment = np.zeros(len(rows), dtype=bool)
    for _ in range(8):
        ext = np.isin(next_header, IPV6_EXTENSIONS) & g.fits(at, 8, rows)
        if not ext.any():
            break
        hdr_len = g.u8(at + 1)
        length = np.where(next_header == 51, (hdr_len + 2) * 4, (hdr_len + 1) * 8)
        length = np.where(next_header == 44, 8, length)
        v6_fragment |= (
            ext & (next_header == 44) & ((g.be(at + 2, 2).astype(np.int64) & 0xFFF9) != 0)
        )
        next_header = np.where(ext, g.u8(at), next_header)
        at = np.where(ext, at + length, at)
        remaining = np.where(ext, remaining - length, remaining)
    ok = ~v6_fragment & (next_header == TCP)
    rows, base, at, remaining = rows[ok], base[ok], at[ok], remaining[ok]
    l4[rows] = at
    ip_payload[rows] = remaining
    src_hi[rows], src_lo[rows] = g.be(base + 8, 8, checked=True), g.be(base + 16, 8, checked=True)
    dst_hi[rows], dst_lo[rows] = g.be(base + 24, 8, checked=True), g.be(base + 32, 8, checked=True)
    is_tcp[rows] = True

    reach = is_tcp & g.fits(l4, 16)
    rows = np.flatnonzero(reach)
    l4r = l4[rows]
    ports_seq = g.be(l4r, 8, checked=True)
    ack_flags = g.be(l4r + 8, 8, checked=True)
    hlen_all = ((ack_flags >> np.uint64(28)) & np.uint64(0xF)).astype(np.int64) * 4
    ok = (hlen_all >= 20) & (ip_payload[rows] >= hlen_all)
    decodable = np.zeros(n, dtype=bool)
    decodable[rows[ok]] = True
    idx = rows[ok]
    l4i, ports_seq, ack_flags, hlen = l4r[ok], ports_seq[ok], ack_flags[ok], hlen_all[ok]
    payload = l4i + hlen
    wire = ip_payload[idx] - hlen
    captured = np.clip(end[idx] - payload, 0, wire)
    flags = ((ack_flags >> np.uint64(16)) & np.uint64(0x1FF)).astype(np.int64)
    segments = TcpPackets(
        frame=idx,
        time_ns=frames.time_ns[idx],
        src_hi=src_hi[idx],
        src_lo=src_lo[idx],
        dst_hi=dst_hi[idx],
        dst_lo=dst_lo[idx],
        sport=(ports_seq >> np.uint64(48)).astype(np.int64),
        dport=((ports_seq >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64),
        seq=(ports_seq & np.uint64(0xFFFFFFFF)).astype(np.int64),
        ack=(ack_flags >> np.uint64(32)).astype(np.int64),
        flags=flags,
        window=(ack_flags & np.uint64(0xFFFF)).astype(np.int64),
        header_offset=l4i,
        header_len=hlen,
        payload_offset=payload,
        payload_len=wire,
        captured_len=captured,
        captured_header_len=np.clip(end[idx] - l4i, 0, hlen),
    )
    counts = {
        "tcp_packets": int(is_tcp.sum()),
        "tcp_undecodable": int((is_tcp & ~decodable).sum()),
        "ip_fragments": int(v4_fragment.sum() + v6_fragment.sum()),
        "not_ip": int((version == 0).sum()),
    }
    return segments, counts


DECODE_CHUNK = 1 << 17


def decode_tcp_chunked(
    frames: pcap.Frames, chunk: int = DECODE_CHUNK
) -> tuple[TcpPackets, dict[str, int]]:
    """:func:`decode_tcp` a chunk of frames at a time, letting a mapped capture's pages go
    between chunks, so decoding a large file does not hold all of it in memory."""
    parts: list[TcpPackets] = []
    counts: dict[str, int] = {}
    for lo in range(0, max(len(frames), 1), chunk):
        seg, c = decode_tcp(frames.slice(lo, lo + chunk))
        seg.frame = seg.frame + lo
        parts.append(seg)
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
        frames.release_pages()
    if len(parts) == 1:
        return parts[0], counts
    merged = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(TcpPackets)
    }
    return TcpPackets(**merged), counts


def address(hi: int, lo: int) -> str:
    """``hi``/``lo`` as text: dotted IPv4 for IPv4-mapped addresses, else IPv6."""
    ip = ipaddress.IPv6Address((int(hi) << 64) | int(lo))
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


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
