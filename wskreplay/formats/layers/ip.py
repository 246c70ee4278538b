"""IPv4, IPv6 (extension headers, AH), and what IP carries here: TCP (the end of the
walk), UDP (to the tunnels on their ports), GRE (with ERSPAN, PPTP's PPP and Aruba's
802.11), IP in IP, EtherIP and MPLS label stacks.

Addresses are kept as two big-endian uint64 halves, IPv4 as IPv4-mapped IPv6
(``::ffff:a.b.c.d``), so flows key on plain integer columns. ``ip_end`` is where the
innermost IP payload ends on the wire (an IP total length of 0, as TSO and BIG TCP
captures show, means "what was captured"); a unit's end is cut there, so Ethernet
padding, trailers and FCS never count as payload.
"""

from __future__ import annotations

import numpy as np

from wskreplay.formats.layers.link import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    VLAN_TAGS,
    dispatch_ethertype,
    dispatch_version,
)
from wskreplay.formats.layers.walk import Fragments, Layer, Outcome, Reason, Walk, handles

V4_MAPPED_LO_PREFIX = 0xFFFF << 32
IP_PROTO_CODE = np.full(256, Outcome.OTHER, np.int16)
"""IP protocol number -> what follows (unlisted protocols carry no TCP: UDP aside,
ICMP, IGMP, OSPF, SCTP, ... are decoded as "not TCP")."""
for _proto, _code in (
    (6, Layer.TCP),
    (17, Layer.UDP),
    (47, Layer.GRE),
    (4, Layer.IPV4),
    (41, Layer.IPV6),
    (51, Layer.AH),
    (97, Layer.ETHERIP),
    (0, Layer.IPV6_EXTENSION),
    (43, Layer.IPV6_EXTENSION),
    (44, Layer.IPV6_EXTENSION),
    (60, Layer.IPV6_EXTENSION),
    (135, Layer.IPV6_EXTENSION),
    (139, Layer.IPV6_EXTENSION),
    (140, Layer.IPV6_EXTENSION),
):
    IP_PROTO_CODE[_proto] = _code
IPPROTO_ESP, IPPROTO_IPCOMP, IPPROTO_FRAGMENT = 50, 108, 44
TCP_MIN_CAPTURED = 16
"""A TCP header is read when its first 16 bytes were captured (ports, sequence and
acknowledgement numbers, flags, window); options may be cut by the snap length."""


def next_protocol(w: Walk, rows: np.ndarray, proto: np.ndarray, at: np.ndarray) -> None:
    """Go on after an IP header or extension whose next protocol is ``proto``."""
    code = IP_PROTO_CODE[proto].astype(np.int64)
    go = code >= Layer.ETHERNET
    w.go(rows[go], at[go], code[go])
    ext = go & (code == Layer.IPV6_EXTENSION)
    w.u.arg[rows[ext]] = proto[ext]
    w.stop(rows[~go], Outcome.OTHER)
    w.undecoded(rows[proto == IPPROTO_ESP], Reason.ENCRYPTED_IPSEC)
    w.undecoded(rows[proto == IPPROTO_IPCOMP], Reason.COMPRESSED_IP)


def _fragment(w: Walk, fragments: Fragments) -> None:
    w.stop(fragments.rows, Outcome.FRAGMENT)
    if w.fragments is not None and len(fragments.rows):
        w.fragments.add(w, fragments)


@handles(Layer.IPV4)
def ipv4(w: Walk, rows: np.ndarray) -> None:
    u = w.u
    u.ip_path[rows] = u.path[rows]
    w.label(rows, "ipv4")
    pos = u.pos[rows]
    ok = w.require(rows, pos, 20, Layer.IPV4)
    rows, pos = rows[ok], pos[ok]
    head = w.be(pos, 8, inside=True)
    ihl = ((head >> np.uint64(56)) & np.uint64(0xF)).astype(np.int64) * 4
    total = ((head >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64)
    version = (head >> np.uint64(60)).astype(np.int64)
    ok = (version == 4) & (ihl >= 20) & ((total == 0) | (total >= ihl))
    w.undecoded(rows[~ok], Reason.MALFORMED, int(Layer.IPV4))
    rows, pos, head, ihl, total = (x[ok] for x in (rows, pos, head, ihl, total))
    ok = w.fits(rows, pos, ihl)
    w.undecoded(rows[~ok], Reason.TRUNCATED, int(Layer.IPV4))
    rows, pos, head, ihl, total = (x[ok] for x in (rows, pos, head, ihl, total))
    end = u.end[rows]
    ip_end = np.where(total == 0, end, pos + total)
    u.ip_end[rows] = ip_end
    u.end[rows] = np.minimum(end, ip_end)
    addrs = w.be(pos + 12, 8, inside=True)
    u.src_hi[rows] = 0
    u.dst_hi[rows] = 0
    u.src_lo[rows] = np.uint64(V4_MAPPED_LO_PREFIX) | (addrs >> np.uint64(32))
    u.dst_lo[rows] = np.uint64(V4_MAPPED_LO_PREFIX) | (addrs & np.uint64(0xFFFFFFFF))
    proto = w.u8(pos + 9)
    flags_offset = (head & np.uint64(0xFFFF)).astype(np.int64)
    fragment = (flags_offset & 0x3FFF) != 0
    if fragment.any():
        ident = ((head >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.int64)
        _fragment(
            w,
            Fragments(
                rows=rows[fragment],
                version=4,
                ident=ident[fragment],
                offset=(flags_offset[fragment] & 0x1FFF) * 8,
                more=(flags_offset[fragment] & 0x2000) != 0,
                payload=(pos + ihl)[fragment],
                proto=proto[fragment],
            ),
        )
        whole = ~fragment
        rows, pos, ihl, proto = rows[whole], pos[whole], ihl[whole], proto[whole]
    next_protocol(w, rows, proto, pos + ihl)


@handles(Layer.IPV6)
def ipv6(w: Walk, rows: np.ndarray) -> None:
    u = w.u
    u.ip_path[rows] = u.path[rows]
    w.label(rows, "ipv6")
    pos = u.pos[rows]
    ok = w.require(rows, pos, 40, Layer.IPV6)
    rows, pos = rows[ok], pos[ok]
    ok = (w.u8(pos) >> 4) == 6
    w.undecoded(rows[~ok], Reason.MALFORMED, int(Layer.IPV6))
    rows, pos = rows[ok], pos[ok]
    length = w.be(pos + 4, 2)
    end = u.end[rows]
    ip_end = np.where(length == 0, end, pos + 40 + length)
    u.ip_end[rows] = ip_end
    u.end[rows] = np.minimum(end, ip_end)
    u.src_hi[rows], u.src_lo[rows] = w.be(pos + 8, 8), w.be(pos + 16, 8)
    u.dst_hi[rows], u.dst_lo[rows] = w.be(pos + 24, 8), w.be(pos + 32, 8)
    next_protocol(w, rows, w.u8(pos + 6), pos + 40)


@handles(Layer.IPV6_EXTENSION)
def ipv6_extension(w: Walk, rows: np.ndarray) -> None:
    """Hop-by-hop, routing, destination options, mobility, HIP, shim6 (length in 8-byte
    units after the first 8) and the fragment header (8 bytes)."""
    u = w.u
    kind = u.arg[rows]
    pos = u.pos[rows]
    ok = w.require(rows, pos, 8, Layer.IPV6_EXTENSION)
    rows, pos, kind = rows[ok], pos[ok], kind[ok]
    nh = w.u8(pos)
    length = np.where(kind == IPPROTO_FRAGMENT, 8, (w.u8(pos + 1) + 1) * 8)
    ok = w.fits(rows, pos, length)
    w.undecoded(rows[~ok], Reason.TRUNCATED, int(Layer.IPV6_EXTENSION))
    rows, pos, kind, nh, length = (x[ok] for x in (rows, pos, kind, nh, length))
    word = w.be(pos + 2, 2)
    fragment = (kind == IPPROTO_FRAGMENT) & ((word & 0xFFF9) != 0)
    if fragment.any():
        _fragment(
            w,
            Fragments(
                rows=rows[fragment],
                version=6,
                ident=w.be(pos + 4, 4)[fragment],
                offset=(word[fragment] >> 3) * 8,
                more=(word[fragment] & 1) != 0,
                payload=(pos + 8)[fragment],
                proto=nh[fragment],
            ),
        )
        whole = ~fragment
        rows, pos, nh, length = rows[whole], pos[whole], nh[whole], length[whole]
    next_protocol(w, rows, nh, pos + length)


@handles(Layer.AH)
def authentication_header(w: Walk, rows: np.ndarray) -> None:
    """IPsec AH authenticates but does not hide: skip it (length in 4-byte units + 2)."""
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 12, Layer.AH)
    rows, pos = rows[ok], pos[ok]
    length = (w.u8(pos + 1) + 2) * 4
    ok = w.fits(rows, pos, length)
    w.undecoded(rows[~ok], Reason.TRUNCATED, int(Layer.AH))
    rows, pos, length = rows[ok], pos[ok], length[ok]
    next_protocol(w, rows, w.u8(pos), pos + length)


@handles(Layer.ETHERIP)
def etherip(w: Walk, rows: np.ndarray) -> None:
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 2, Layer.ETHERIP)
    rows, pos = rows[ok], pos[ok]
    w.label(rows, "etherip")
    w.go(rows, pos + 2, Layer.ETHERNET)


@handles(Layer.TCP)
def tcp(w: Walk, rows: np.ndarray) -> None:
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, TCP_MIN_CAPTURED, Layer.TCP)
    rows, pos = rows[ok], pos[ok]
    header = (w.u8(pos + 12) >> 4) * 4
    ok = (header >= 20) & (w.u.ip_end[rows] - pos >= header)
    w.undecoded(rows[~ok], Reason.MALFORMED, int(Layer.TCP))
    w.stop(rows[ok], Outcome.TCP)


@handles(Layer.UDP)
def udp(w: Walk, rows: np.ndarray) -> None:
    """UDP goes on into a tunnel when either port is one the options name (the
    destination port first); otherwise it is decoded, and not TCP."""
    u = w.u
    pos = u.pos[rows]
    ok = w.require(rows, pos, 8, Layer.UDP)
    rows, pos = rows[ok], pos[ok]
    sport, dport, length = w.be(pos, 2), w.be(pos + 2, 2), w.be(pos + 4, 2)
    tunnels = w.options.udp_tunnels
    code = np.where(tunnels[dport] != 0, tunnels[dport], tunnels[sport]).astype(np.int64)
    into = code != 0
    w.stop(rows[~into], Outcome.OTHER)
    rows, pos, length, code = rows[into], pos[into], length[into], code[into]
    bounded = length >= 8
    idx = rows[bounded]
    u.end[idx] = np.minimum(u.end[idx], pos[bounded] + length[bounded])
    w.go(rows, pos + 8, code)


GRE_CHECKSUM, GRE_ROUTING, GRE_KEY, GRE_SEQUENCE, GRE_ACK = 0x8000, 0x4000, 0x2000, 0x1000, 0x80
GRE_ERSPAN, GRE_ERSPAN_III, GRE_PPP, GRE_TEB = 0x88BE, 0x22EB, 0x880B, 0x6558
GRE_KEEPALIVE = 0x0000


def aruba(proto: np.ndarray) -> np.ndarray:
    """Aruba's GRE protocol types for 802.11 frames (0x8200-0x8370 in steps of 0x10,
    and 0x9000)."""
    return ((proto >= 0x8200) & (proto <= 0x8370) & ((proto & 0xF) == 0)) | (proto == 0x9000)


@handles(Layer.GRE)
def gre(w: Walk, rows: np.ndarray) -> None:
    """GRE version 0 (RFC 2784/2890: optional checksum, key, sequence number) and
    version 1 (PPTP: key always, sequence and acknowledgement optional, PPP inside).
    Source-routed GRE (RFC 1701's routing bit) is reported, not followed."""
    u = w.u
    w.label(rows, "gre")
    pos = u.pos[rows]
    ok = w.require(rows, pos, 4, Layer.GRE)
    rows, pos = rows[ok], pos[ok]
    flags, proto = w.be(pos, 2), w.be(pos + 2, 2)
    version = flags & 7
    unknown = version > 1
    routed = ~unknown & ((flags & GRE_ROUTING) != 0)
    bad = unknown | routed
    w.undecoded(rows[unknown], Reason.GRE_VERSION, version[unknown])
    w.undecoded(rows[routed], Reason.MALFORMED, int(Layer.GRE))
    rows, pos, flags, proto, version = (x[~bad] for x in (rows, pos, flags, proto, version))
    v1 = version == 1
    header = np.where(
        v1,
        8 + 4 * ((flags & GRE_SEQUENCE) != 0) + 4 * ((flags & GRE_ACK) != 0),
        4
        + 4 * ((flags & GRE_CHECKSUM) != 0)
        + 4 * ((flags & GRE_KEY) != 0)
        + 4 * ((flags & GRE_SEQUENCE) != 0),
    )
    ok = w.fits(rows, pos, header)
    w.undecoded(rows[~ok], Reason.TRUNCATED, int(Layer.GRE))
    rows, pos, flags, proto, v1, header = (x[ok] for x in (rows, pos, flags, proto, v1, header))
    at = pos + header
    pptp = v1 & (proto == GRE_PPP)
    idx = rows[pptp]
    u.end[idx] = np.minimum(u.end[idx], at[pptp] + w.be(pos[pptp] + 4, 2))
    w.go(idx, at[pptp], Layer.GRE_PPP)
    w.undecoded(rows[v1 & ~pptp], Reason.GRE_PROTOCOL, proto[v1 & ~pptp])
    v0 = ~v1
    rows, flags, proto, at = rows[v0], flags[v0], proto[v0], at[v0]
    erspan = proto == GRE_ERSPAN
    sequenced = (flags & GRE_SEQUENCE) != 0
    w.go(rows[erspan & sequenced], at[erspan & sequenced], Layer.ERSPAN_II)
    type1 = erspan & ~sequenced
    w.label(rows[type1], "erspan i")
    w.go(rows[type1], at[type1], Layer.ETHERNET)
    three = proto == GRE_ERSPAN_III
    w.go(rows[three], at[three], Layer.ERSPAN_III)
    wifi = aruba(proto)
    w.go(rows[wifi], at[wifi], Layer.IEEE80211)
    ppp = proto == GRE_PPP
    w.go(rows[ppp], at[ppp], Layer.GRE_PPP)
    keepalive = (proto == GRE_KEEPALIVE) & (at >= u.end[rows])
    w.stop(rows[keepalive], Outcome.OTHER)
    rest = ~(erspan | three | wifi | ppp | keepalive)
    rows, proto, at = rows[rest], proto[rest], at[rest]
    known = np.isin(proto, (ETHERTYPE_IPV4, ETHERTYPE_IPV6, GRE_TEB, 0x8847, 0x8848))
    dispatch_ethertype(w, rows[known], proto[known], at[known], lengths=False)
    w.undecoded(rows[~known], Reason.GRE_PROTOCOL, proto[~known])


@handles(Layer.ERSPAN_II)
def erspan_ii(w: Walk, rows: np.ndarray) -> None:
    w.label(rows, "erspan ii")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 8, Layer.ERSPAN_II)
    rows, pos = rows[ok], pos[ok]
    ok = (w.be(pos, 2) >> 12) == 1
    w.undecoded(rows[~ok], Reason.MALFORMED, int(Layer.ERSPAN_II))
    w.go(rows[ok], pos[ok] + 8, Layer.ETHERNET)


@handles(Layer.ERSPAN_III)
def erspan_iii(w: Walk, rows: np.ndarray) -> None:
    """ERSPAN type III: 12 bytes, 8 more when the O bit says a platform sub-header
    follows; frame type 0 is Ethernet, 2 is IP."""
    w.label(rows, "erspan iii")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 12, Layer.ERSPAN_III)
    rows, pos = rows[ok], pos[ok]
    word = w.be(pos + 10, 2)
    header = 12 + 8 * (word & 1)
    frame_type = (word >> 10) & 0x1F
    ok = ((w.be(pos, 2) >> 12) == 2) & w.fits(rows, pos, header)
    w.undecoded(rows[~ok], Reason.MALFORMED, int(Layer.ERSPAN_III))
    rows, pos, header, frame_type = rows[ok], pos[ok], header[ok], frame_type[ok]
    eth, ip = frame_type == 0, frame_type == 2
    w.go(rows[eth], (pos + header)[eth], Layer.ETHERNET)
    w.go(rows[ip], (pos + header)[ip], Layer.RAW)
    w.undecoded(rows[~eth & ~ip], Reason.TUNNEL_PAYLOAD)


MPLS_MAX_LABELS = 16
MPLS_ETHERNET_GUESS = (ETHERTYPE_IPV4, ETHERTYPE_IPV6, *VLAN_TAGS)


@handles(Layer.MPLS)
def mpls(w: Walk, rows: np.ndarray) -> None:
    """An MPLS label stack (each label in the path), then the payload, which MPLS does
    not name: a first nibble of 4 or 6 is IP; otherwise an Ethernet pseudowire is taken
    when an EtherType of IP or VLAN stands where one would (after a 4-byte control word
    when the first nibble is 0, else right after the addresses)."""
    pos = w.u.pos[rows]
    live = np.ones(len(rows), bool)
    for _ in range(MPLS_MAX_LABELS):
        fits = w.fits(rows, pos, 4)
        w.undecoded(rows[live & ~fits], Reason.TRUNCATED, int(Layer.MPLS))
        live &= fits
        if not live.any():
            break
        entry = w.be(pos, 4)
        idx = np.flatnonzero(live)
        w.label_values(rows[idx], "mpls {}", entry[idx] >> 12)
        pos = np.where(live, pos + 4, pos)
        bottom = live & ((entry & 0x100) != 0)
        _mpls_payload(w, rows[bottom], pos[bottom])
        live &= ~bottom
    w.undecoded(rows[live], Reason.TOO_DEEP)


def _mpls_payload(w: Walk, rows: np.ndarray, pos: np.ndarray) -> None:
    nibble = w.u8(pos) >> 4
    ip = w.fits(rows, pos, 1) & ((nibble == 4) | (nibble == 6))
    dispatch_version(w, rows[ip], pos[ip], Layer.MPLS)
    rows, pos, nibble = rows[~ip], pos[~ip], nibble[~ip]
    eth_at = np.where(nibble == 0, pos + 4, pos)
    pseudowire = w.fits(rows, eth_at, 14) & np.isin(w.be(eth_at + 12, 2), MPLS_ETHERNET_GUESS)
    w.go(rows[pseudowire], eth_at[pseudowire], Layer.ETHERNET)
    w.undecoded(rows[~pseudowire], Reason.MPLS_PAYLOAD)
