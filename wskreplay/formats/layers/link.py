"""Link layers and what sits directly on them: Ethernet (VLAN tags, 802.1ah, PPPoE, LLC
and SNAP), Linux cooked headers, BSD loopback, raw IP, PPP and Cisco HDLC, ARCNET, Apple
PKTAP and Linux NFLOG. The 802.11 family is in :mod:`.wifi`."""

from __future__ import annotations

import numpy as np

from wskreplay.formats.layers.walk import Layer, Outcome, Reason, Walk, handles

ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD
VLAN_TAGS = (0x8100, 0x88A8, 0x9100, 0x9200)
ETHERTYPE_CODE = np.zeros(65536, np.int16)
"""EtherType -> layer code; 0 unknown, :data:`NOT_IP` a known protocol that carries no IP."""
NOT_IP = -1
MACSEC = -2
for _etype, _code in (
    (ETHERTYPE_IPV4, Layer.IPV4),
    (ETHERTYPE_IPV6, Layer.IPV6),
    *((t, Layer.VLAN) for t in VLAN_TAGS),
    (0x8864, Layer.PPPOE),
    (0x8847, Layer.MPLS),
    (0x8848, Layer.MPLS),
    (0x6558, Layer.ETHERNET),
    (0x88E7, Layer.PBB),
    (0x88E5, MACSEC),
):
    ETHERTYPE_CODE[_etype] = _code
for _etype in (
    0x0806,  # ARP
    0x8035,  # RARP
    0x0842,  # Wake-on-LAN
    0x809B,  # AppleTalk
    0x80F3,  # AARP
    0x8137,  # IPX
    0x8808,  # Ethernet flow control
    0x8809,  # slow protocols (LACP)
    0x8863,  # PPPoE discovery
    0x886D,  # Intel ANS
    0x887B,  # HomePlug
    0x888E,  # 802.1X
    0x8892,  # PROFINET
    0x88A4,  # EtherCAT
    0x88AB,  # Powerlink
    0x88B5,  # local experimental
    0x88B6,  # local experimental
    0x88CC,  # LLDP
    0x88D9,  # LLTD
    0x88E1,  # HomePlug AV
    0x88E3,  # MRP
    0x88F7,  # PTP
    0x8902,  # CFM
    0x890D,  # 802.11 TDLS
    0x8914,  # FCoE initialization
    0x8906,  # FCoE
    0x893A,  # IEEE 1905.1
    0x9000,  # loopback
):
    ETHERTYPE_CODE[_etype] = NOT_IP

LINKTYPE_CODE: dict[int, int] = {
    0: Layer.NULL,
    1: Layer.ETHERNET,
    7: Layer.ARCNET_BSD,
    9: Layer.PPP_LINK,
    12: Layer.RAW,
    14: Layer.RAW,
    50: Layer.PPP_LINK,
    51: Layer.PPPOE,
    101: Layer.RAW,
    104: Layer.C_HDLC,
    105: Layer.IEEE80211,
    108: Layer.NULL,
    113: Layer.SLL,
    119: Layer.PRISM,
    127: Layer.RADIOTAP,
    129: Layer.ARCNET_LINUX,
    163: Layer.AVS,
    192: Layer.PPI,
    228: Layer.RAW,
    229: Layer.RAW,
    239: Layer.NFLOG,
    258: Layer.PKTAP,
    276: Layer.SLL2,
}
"""pcap LINKTYPE values this decoder reads."""

LINKTYPE_NAME: dict[int, str] = {
    0: "BSD loopback",
    1: "Ethernet",
    7: "ARCNET (BSD)",
    9: "PPP",
    12: "raw IP",
    14: "raw IP",
    50: "PPP in HDLC framing",
    51: "PPPoE",
    101: "raw IP",
    104: "Cisco HDLC",
    105: "IEEE 802.11",
    108: "OpenBSD loopback",
    113: "Linux cooked",
    119: "802.11 with Prism header",
    127: "802.11 with radiotap header",
    129: "ARCNET (Linux)",
    163: "802.11 with AVS header",
    192: "802.11 with PPI header",
    228: "raw IPv4",
    229: "raw IPv6",
    239: "Linux NFLOG",
    258: "Apple PKTAP",
    276: "Linux cooked v2",
}

LINK_LABEL: dict[int, str] = {
    Layer.ETHERNET: "ethernet",
    Layer.NULL: "loopback",
    Layer.SLL: "linux-sll",
    Layer.SLL2: "linux-sll2",
    Layer.PPP_LINK: "ppp",
    Layer.C_HDLC: "c-hdlc",
    Layer.ARCNET_BSD: "arcnet",
    Layer.ARCNET_LINUX: "arcnet",
    Layer.PKTAP: "pktap",
    Layer.NFLOG: "nflog",
}

LINKTYPE_NULL, LINKTYPE_LOOP = 0, 108
ARPHRD_LINK = {801: Layer.IEEE80211, 802: Layer.PRISM, 803: Layer.RADIOTAP, 804: Layer.AVS}
"""Linux hardware types whose cooked frames hold 802.11 headers, not an EtherType payload."""


def dispatch_ethertype(
    w: Walk, rows: np.ndarray, etype: np.ndarray, at: np.ndarray, *, lengths: bool = True
) -> None:
    """Go on by EtherType. With ``lengths``, a value below 0x600 is an 802.3 length and
    an LLC header follows (the unit ends where the length says)."""
    code = ETHERTYPE_CODE[etype].astype(np.int64)
    if lengths:
        short = etype < 0x600
        if short.any():
            code = np.where(short, Layer.LLC, code)
            idx = rows[short]
            w.u.end[idx] = np.minimum(w.u.end[idx], at[short] + etype[short])
    go = code > 0
    w.go(rows[go], at[go], code[go])
    w.stop(rows[code == NOT_IP], Outcome.OTHER)
    w.undecoded(rows[code == MACSEC], Reason.ENCRYPTED_MACSEC)
    unknown = code == 0
    w.undecoded(rows[unknown], Reason.ETHERTYPE, etype[unknown])


def dispatch_version(w: Walk, rows: np.ndarray, at: np.ndarray, layer: Layer) -> None:
    """Go on by the IP version nibble at ``at`` (a payload that says nothing else)."""
    version = w.u8(at) >> 4
    ok = w.require(rows, at, 1, layer)
    v4, v6 = ok & (version == 4), ok & (version == 6)
    w.go(rows[v4], at[v4], Layer.IPV4)
    w.go(rows[v6], at[v6], Layer.IPV6)
    w.undecoded(rows[ok & ~v4 & ~v6], Reason.MALFORMED, int(layer))


@handles(Layer.ETHERNET)
def ethernet(w: Walk, rows: np.ndarray) -> None:
    w.label(rows, "ethernet")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 14, Layer.ETHERNET)
    rows, pos = rows[ok], pos[ok]
    dispatch_ethertype(w, rows, w.be(pos + 12, 2, inside=True), pos + 14)


@handles(Layer.VLAN)
def vlan(w: Walk, rows: np.ndarray) -> None:
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 4, Layer.VLAN)
    rows, pos = rows[ok], pos[ok]
    w.label_values(rows, "vlan {}", w.be(pos, 2) & 0xFFF)
    dispatch_ethertype(w, rows, w.be(pos + 2, 2), pos + 4)


@handles(Layer.PBB)
def provider_backbone(w: Walk, rows: np.ndarray) -> None:
    """802.1ah: a 4-byte I-TAG, then the customer's addresses and EtherType."""
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 18, Layer.PBB)
    rows, pos = rows[ok], pos[ok]
    w.label(rows, "pbb")
    dispatch_ethertype(w, rows, w.be(pos + 16, 2), pos + 18)


@handles(Layer.PPPOE)
def pppoe(w: Walk, rows: np.ndarray) -> None:
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 6, Layer.PPPOE)
    rows, pos = rows[ok], pos[ok]
    w.label(rows, "pppoe")
    w.u.end[rows] = np.minimum(w.u.end[rows], pos + 6 + w.be(pos + 4, 2))
    w.go(rows, pos + 6, Layer.PPP)


PPP_CODE = {0x0021: Layer.IPV4, 0x0057: Layer.IPV6, 0x0281: Layer.MPLS, 0x0283: Layer.MPLS}


def dispatch_ppp(w: Walk, rows: np.ndarray, at: np.ndarray) -> None:
    """A PPP protocol field at ``at``: one byte when its low bit is set (RFC 1661
    protocol-field compression), else two."""
    first = w.u8(at)
    one_byte = (first & 1) == 1
    proto = np.where(one_byte, first, w.be(at, 2))
    width = np.where(one_byte, 1, 2)
    ok = w.fits(rows, at, width)
    w.undecoded(rows[~ok], Reason.TRUNCATED, int(Layer.PPP))
    rows, at, proto, width = rows[ok], at[ok], proto[ok], width[ok]
    code = np.zeros(len(rows), np.int64)
    for value, layer in PPP_CODE.items():
        code[proto == value] = layer
    go = code > 0
    w.go(rows[go], (at + width)[go], code[go])
    control = ~go & (proto >= 0x8000)
    w.stop(rows[control], Outcome.OTHER)
    unknown = ~go & ~control
    w.undecoded(rows[unknown], Reason.PPP_PROTOCOL, proto[unknown])


@handles(Layer.PPP)
def ppp(w: Walk, rows: np.ndarray) -> None:
    dispatch_ppp(w, rows, w.u.pos[rows])


@handles(Layer.PPP_LINK, Layer.GRE_PPP)
def ppp_framed(w: Walk, rows: np.ndarray) -> None:
    """PPP that may start with the HDLC address and control bytes (0xFF 0x03)."""
    if int(w.u.code[rows[0]]) == Layer.PPP_LINK:
        w.label(rows, "ppp")
    pos = w.u.pos[rows]
    framed = w.fits(rows, pos, 2) & (w.be(pos, 2) == 0xFF03)
    dispatch_ppp(w, rows, np.where(framed, pos + 2, pos))


@handles(Layer.LLC)
def llc(w: Walk, rows: np.ndarray) -> None:
    """802.2 LLC: SNAP carries an EtherType (or bridged Ethernet); SAP 0x06 is IPv4;
    other SAPs (spanning tree, IPX, NetBIOS, OSI) carry no IP."""
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 3, Layer.LLC)
    rows, pos = rows[ok], pos[ok]
    head = w.be(pos, 2)
    control = w.u8(pos + 2)
    snap = (head == 0xAAAA) & (control == 0x03)
    ip = (head >> 8) == 0x06
    w.go(rows[ip], pos[ip] + np.where((control[ip] & 3) == 3, 3, 4), Layer.IPV4)
    w.stop(rows[~snap & ~ip], Outcome.OTHER)
    rows, pos = rows[snap], pos[snap]
    ok = w.require(rows, pos, 8, Layer.LLC)
    rows, pos = rows[ok], pos[ok]
    oui = w.be(pos + 3, 4) >> 8
    pid = w.be(pos + 6, 2)
    encapsulated = (oui == 0) | (oui == 0xF8)
    dispatch_ethertype(
        w, rows[encapsulated], pid[encapsulated], pos[encapsulated] + 8, lengths=False
    )
    bridged = (oui == 0x0080C2) & ((pid == 1) | (pid == 7))
    idx = rows[bridged]
    with_fcs = pid[bridged] == 1
    w.u.end[idx[with_fcs]] -= 4
    w.go(idx, pos[bridged] + 8, Layer.ETHERNET)
    w.stop(rows[~encapsulated & ~bridged], Outcome.OTHER)


def _cooked(
    w: Walk, rows: np.ndarray, layer: Layer, proto_at: int, hatype_at: int, size: int
) -> None:
    w.label(rows, LINK_LABEL[layer])
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, size, layer)
    rows, pos = rows[ok], pos[ok]
    hatype = w.be(pos + hatype_at, 2)
    proto = w.be(pos + proto_at, 2)
    at = pos + size
    wifi = np.zeros(len(rows), np.int64)
    for value, layer in ARPHRD_LINK.items():
        wifi[hatype == value] = layer
    radio = wifi > 0
    w.go(rows[radio], at[radio], wifi[radio])
    rest = ~radio
    rows, proto, at = rows[rest], proto[rest], at[rest]
    llc_frames = proto == 0x0004
    w.go(rows[llc_frames], at[llc_frames], Layer.LLC)
    other_small = (proto < 0x600) & ~llc_frames
    w.stop(rows[other_small], Outcome.OTHER)
    keep = proto >= 0x600
    dispatch_ethertype(w, rows[keep], proto[keep], at[keep], lengths=False)


@handles(Layer.SLL)
def linux_cooked(w: Walk, rows: np.ndarray) -> None:
    _cooked(w, rows, Layer.SLL, proto_at=14, hatype_at=2, size=16)


@handles(Layer.SLL2)
def linux_cooked_v2(w: Walk, rows: np.ndarray) -> None:
    _cooked(w, rows, Layer.SLL2, proto_at=0, hatype_at=8, size=20)


@handles(Layer.NULL)
def bsd_loopback(w: Walk, rows: np.ndarray) -> None:
    """A 4-byte address family: host byte order for LINKTYPE_NULL (which host is not
    recorded, so a value above 0xFFFF is taken as the other order), network order for
    LINKTYPE_LOOP. The link type rides in ``arg``."""
    w.label(rows, "loopback")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 4, Layer.NULL)
    rows, pos = rows[ok], pos[ok]
    family = w.be(pos, 4)
    swapped = (w.u.arg[rows] == LINKTYPE_NULL) & (family > 0xFFFF)
    family = np.where(swapped, _swap32(family), family)
    v4 = family == 2
    v6 = np.isin(family, (10, 24, 28, 30))
    w.go(rows[v4], pos[v4] + 4, Layer.IPV4)
    w.go(rows[v6], pos[v6] + 4, Layer.IPV6)
    other = ~v4 & ~v6
    w.stop(rows[other & np.isin(family, (7, 16, 23))], Outcome.OTHER)
    odd = other & ~np.isin(family, (7, 16, 23))
    w.undecoded(rows[odd], Reason.MALFORMED, int(Layer.NULL))


def _swap32(v: np.ndarray) -> np.ndarray:
    return ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | ((v >> 24) & 0xFF)


@handles(Layer.RAW)
def raw_ip(w: Walk, rows: np.ndarray) -> None:
    dispatch_version(w, rows, w.u.pos[rows], Layer.RAW)


@handles(Layer.C_HDLC)
def cisco_hdlc(w: Walk, rows: np.ndarray) -> None:
    w.label(rows, "c-hdlc")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 4, Layer.C_HDLC)
    rows, pos = rows[ok], pos[ok]
    dispatch_ethertype(w, rows, w.be(pos + 2, 2), pos + 4, lengths=False)


ARCNET_IPV4 = (212, 240)
ARCNET_IPV6 = 0xC4
ARCNET_RFC1051 = (240, 241, 0x80, 0xCD)
"""Protocol IDs sent without the RFC 1201 split flag and sequence number."""
ARCNET_NOT_IP = (213, 214, 221, 241, 247, 250, 0x80, 0xCD)


def _arcnet(w: Walk, rows: np.ndarray, proto_at: int, exception: bool) -> None:
    """ARCNET: source, destination (and, on Linux, a 2-byte offset), the protocol ID,
    then for RFC 1201 protocols a split flag and a sequence number. BSD captures may
    carry an exception packet (split flag 0xFF: 4 more bytes). A frame whose split flag
    marks a later fragment of a split packet is not reassembled."""
    w.label(rows, "arcnet")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, proto_at + 1, Layer.ARCNET_BSD)
    rows, pos = rows[ok], pos[ok]
    proto = w.u8(pos + proto_at)
    header = np.where(np.isin(proto, ARCNET_RFC1051), proto_at + 1, proto_at + 4)
    split_at = pos + proto_at + 1
    flag = w.u8(split_at)
    rfc1201 = header > proto_at + 1
    if exception:
        exc = rfc1201 & (flag == 0xFF)
        header = np.where(exc, header + 4, header)
        flag = np.where(exc, w.u8(split_at + 4), flag)
    ok = w.fits(rows, pos, header)
    w.undecoded(rows[~ok], Reason.TRUNCATED, int(Layer.ARCNET_BSD))
    rows, pos, proto, header, flag, rfc1201 = (
        x[ok] for x in (rows, pos, proto, header, flag, rfc1201)
    )
    later = rfc1201 & (flag != 0) & ((flag & 1) == 0)
    w.undecoded(rows[later], Reason.FRAGMENT_ARCNET)
    keep = ~later
    rows, pos, proto, header = rows[keep], pos[keep], proto[keep], header[keep]
    v4, v6 = np.isin(proto, ARCNET_IPV4), proto == ARCNET_IPV6
    w.go(rows[v4], (pos + header)[v4], Layer.IPV4)
    w.go(rows[v6], (pos + header)[v6], Layer.IPV6)
    rest = ~v4 & ~v6
    known = rest & np.isin(proto, ARCNET_NOT_IP)
    w.stop(rows[known], Outcome.OTHER)
    unknown = rest & ~known
    w.undecoded(rows[unknown], Reason.ARCNET_PROTOCOL, proto[unknown])


@handles(Layer.ARCNET_BSD)
def arcnet_bsd(w: Walk, rows: np.ndarray) -> None:
    _arcnet(w, rows, proto_at=2, exception=True)


@handles(Layer.ARCNET_LINUX)
def arcnet_linux(w: Walk, rows: np.ndarray) -> None:
    _arcnet(w, rows, proto_at=4, exception=False)


@handles(Layer.PKTAP)
def pktap(w: Walk, rows: np.ndarray) -> None:
    """Apple PKTAP: a little-endian header length, record type (1 = packet) and the
    inner DLT, then the frame."""
    w.label(rows, "pktap")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 12, Layer.PKTAP)
    rows, pos = rows[ok], pos[ok]
    length, record, dlt = w.le(pos, 4), w.le(pos + 4, 4), w.le(pos + 8, 4)
    ok = w.fits(rows, pos, length) & (length >= 12)
    w.undecoded(rows[~ok], Reason.MALFORMED, int(Layer.PKTAP))
    rows, pos, length, record, dlt = (x[ok] for x in (rows, pos, length, record, dlt))
    w.stop(rows[record != 1], Outcome.OTHER)
    packet = record == 1
    start_inner(w, rows[packet], (pos + length)[packet], dlt[packet])


NFULA_PAYLOAD = 9
NFLOG_TLVS = 16


@handles(Layer.NFLOG)
def nflog(w: Walk, rows: np.ndarray) -> None:
    """Linux NFLOG: family, version, resource id, then TLVs (host-order length and type,
    padded to 4 bytes); the packet is the NFULA_PAYLOAD TLV."""
    w.label(rows, "nflog")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 4, Layer.NFLOG)
    rows, pos = rows[ok], pos[ok]
    family = w.u8(pos)
    cursor = pos + 4
    found = np.full(len(rows), -1, np.int64)
    found_end = np.zeros(len(rows), np.int64)
    for _ in range(NFLOG_TLVS):
        live = (found < 0) & w.fits(rows, cursor, 4)
        if not live.any():
            break
        length, kind = w.le(cursor, 2), w.le(cursor + 2, 2)
        bad = live & (length < 4)
        cursor = np.where(bad, w.u.end[rows], cursor)
        hit = live & ~bad & ((kind & 0x7FFF) == NFULA_PAYLOAD)
        found = np.where(hit, cursor + 4, found)
        found_end = np.where(hit, cursor + length, found_end)
        cursor = np.where(live & ~bad, cursor + ((length + 3) & ~3), cursor)
    have = found >= 0
    w.stop(rows[~have], Outcome.OTHER)
    rows, found, found_end, family = rows[have], found[have], found_end[have], family[have]
    w.u.end[rows] = np.minimum(w.u.end[rows], found_end)
    v4, v6 = family == 2, family == 10
    w.go(rows[v4], found[v4], Layer.IPV4)
    w.go(rows[v6], found[v6], Layer.IPV6)
    w.undecoded(rows[~v4 & ~v6], Reason.MALFORMED, int(Layer.NFLOG))


def start_inner(w: Walk, rows: np.ndarray, at: np.ndarray, linktype: np.ndarray) -> None:
    """Go on with a link layer named by a LINKTYPE value (PPI, PKTAP)."""
    code = np.array([LINKTYPE_CODE.get(int(t), 0) for t in linktype.tolist()], np.int64)
    known = code > 0
    w.go(rows[known], at[known], code[known])
    w.u.arg[rows[known]] = linktype[known]
    w.undecoded(rows[~known], Reason.LINK_TYPE, linktype[~known])
