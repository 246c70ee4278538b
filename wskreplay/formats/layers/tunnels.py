"""UDP tunnels: VXLAN, VXLAN-GPE, Geneve, GTP-U and Teredo, each on its registered port
by default (:data:`DEFAULT_PORTS`) and on ports a user names. A datagram on a tunnel's
port whose header is not that tunnel's (a VXLAN header without its I flag, a GTP message
that is not a G-PDU, a Teredo packet with no IPv6 inside) is plain UDP: decoded, not TCP.
"""

from __future__ import annotations

import numpy as np

from wskreplay.formats.layers.link import dispatch_ethertype, dispatch_version
from wskreplay.formats.layers.walk import Layer, Outcome, Walk, handles

TUNNELS: dict[str, Layer] = {
    "vxlan": Layer.VXLAN,
    "vxlan-gpe": Layer.VXLAN_GPE,
    "geneve": Layer.GENEVE,
    "gtp-u": Layer.GTP_U,
    "teredo": Layer.TEREDO,
}
DEFAULT_PORTS: dict[str, tuple[int, ...]] = {
    "vxlan": (4789,),
    "vxlan-gpe": (4790,),
    "geneve": (6081,),
    "gtp-u": (2152,),
    "teredo": (3544,),
}


def port_table(extra: dict[str, tuple[int, ...]] | None = None) -> np.ndarray:
    """UDP port -> tunnel layer: the registered ports, then ``extra`` (a user's choice
    replaces a registered meaning of the same port)."""
    table = np.zeros(65536, np.int16)
    for mapping in (DEFAULT_PORTS, extra or {}):
        for name, ports in mapping.items():
            for port in ports:
                table[port] = TUNNELS[name]
    return table


VXLAN_I = 0x08
GPE_P = 0x04
GPE_NEXT = {1: Layer.IPV4, 2: Layer.IPV6, 3: Layer.ETHERNET, 5: Layer.MPLS}


@handles(Layer.VXLAN)
def vxlan(w: Walk, rows: np.ndarray) -> None:
    pos = w.u.pos[rows]
    ok = w.fits(rows, pos, 8) & ((w.u8(pos) & VXLAN_I) != 0)
    w.stop(rows[~ok], Outcome.OTHER)
    rows, pos = rows[ok], pos[ok]
    w.label(rows, "vxlan")
    w.go(rows, pos + 8, Layer.ETHERNET)


@handles(Layer.VXLAN_GPE)
def vxlan_gpe(w: Walk, rows: np.ndarray) -> None:
    """VXLAN-GPE names its payload when the P flag is set (1 IPv4, 2 IPv6, 3 Ethernet,
    5 MPLS); without it, the payload is Ethernet."""
    pos = w.u.pos[rows]
    ok = w.fits(rows, pos, 8)
    w.stop(rows[~ok], Outcome.OTHER)
    rows, pos = rows[ok], pos[ok]
    w.label(rows, "vxlan-gpe")
    named = (w.u8(pos) & GPE_P) != 0
    nxt = w.u8(pos + 3)
    code = np.where(named, 0, Layer.ETHERNET)
    for value, layer in GPE_NEXT.items():
        code = np.where(named & (nxt == value), layer, code)
    go = code > 0
    w.go(rows[go], pos[go] + 8, code[go])
    w.stop(rows[~go], Outcome.OTHER)


@handles(Layer.GENEVE)
def geneve(w: Walk, rows: np.ndarray) -> None:
    """Geneve: version 0, options length in 4-byte words, a protocol type (0x6558 for
    Ethernet, else an EtherType)."""
    pos = w.u.pos[rows]
    first = w.u8(pos)
    header = 8 + (first & 0x3F) * 4
    ok = w.fits(rows, pos, header) & ((first >> 6) == 0)
    w.stop(rows[~ok], Outcome.OTHER)
    rows, pos, header = rows[ok], pos[ok], header[ok]
    w.label(rows, "geneve")
    dispatch_ethertype(w, rows, w.be(pos + 2, 2), pos + header, lengths=False)


GTP_G_PDU = 0xFF
GTP_MAX_EXTENSIONS = 8


@handles(Layer.GTP_U)
def gtp_u(w: Walk, rows: np.ndarray) -> None:
    """GTPv1-U: flags (version 1, PT set), type 0xFF for user data, a length, the TEID;
    4 more bytes when any of E, S, PN is set, and extension headers while E says so
    (each gives its length in 4-byte units and ends with the next type). The payload is
    IPv4 or IPv6."""
    u = w.u
    pos = u.pos[rows]
    flags, kind = w.u8(pos), w.u8(pos + 1)
    user_data = w.fits(rows, pos, 8) & ((flags >> 5) == 1) & ((flags & 0x10) != 0)
    user_data &= kind == GTP_G_PDU
    w.stop(rows[~user_data], Outcome.OTHER)
    rows, pos, flags = rows[user_data], pos[user_data], flags[user_data]
    w.label(rows, "gtp-u")
    u.end[rows] = np.minimum(u.end[rows], pos + 8 + w.be(pos + 2, 2))
    optional = (flags & 0x07) != 0
    at = np.where(optional, pos + 12, pos + 8)
    nxt = np.where(optional & ((flags & 0x04) != 0), w.u8(pos + 11), 0)
    ok = w.fits(rows, pos, at - pos)
    for _ in range(GTP_MAX_EXTENSIONS):
        more = ok & (nxt != 0)
        if not more.any():
            break
        size = w.u8(at) * 4
        ok &= ~more | ((size > 0) & w.fits(rows, at, size))
        more &= ok
        nxt = np.where(more, w.u8(at + size - 1), nxt)
        at = np.where(more, at + size, at)
    ok &= nxt == 0
    w.stop(rows[~ok], Outcome.OTHER)
    dispatch_version(w, rows[ok], at[ok], Layer.GTP_U)


@handles(Layer.TEREDO)
def teredo(w: Walk, rows: np.ndarray) -> None:
    """Teredo: an optional authentication indicator (0x0001, two lengths, client id,
    authenticator, nonce, confirmation) and an optional origin indicator (0x0000, 6
    bytes), then an IPv6 packet."""
    pos = w.u.pos[rows]
    at = pos.copy()
    auth = w.fits(rows, at, 4) & (w.be(at, 2) == 0x0001)
    at = np.where(auth, at + 4 + w.u8(at + 2) + w.u8(at + 3) + 9, at)
    origin = w.fits(rows, at, 8) & (w.be(at, 2) == 0x0000)
    at = np.where(origin, at + 8, at)
    ipv6 = w.fits(rows, at, 40) & ((w.u8(at) >> 4) == 6)
    w.stop(rows[~ipv6], Outcome.OTHER)
    w.label(rows[ipv6], "teredo")
    w.go(rows[ipv6], at[ipv6], Layer.IPV6)
