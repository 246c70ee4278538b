"""IEEE 802.11 and the radio headers captured in front of it (radiotap, PPI, Prism, AVS).

Only data frames can carry TCP. Their header is 24 bytes, plus a fourth address when the
frame goes between distribution systems (To DS and From DS both set), 2 bytes of QoS
control on QoS data, and 4 of HT control when a QoS frame has the +HTC/Order bit. The body
is LLC/SNAP, or for an A-MSDU a run of subframes (destination, source, a big-endian length,
the MSDU, padding to 4 bytes). A protected frame's body is ciphertext: it is reported as
encrypted, never parsed. Fragmented frames are not reassembled.

Whether a frame ends with its 4-byte FCS: radiotap says so in its Flags field, PPI in its
802.11-common field, a pcapng interface in ``if_fcslen``; native 802.11 (link type 105),
Prism and AVS frames are taken to have none (Wireshark's default). The FCS never reaches
TCP: IP lengths bound what is read.
"""

from __future__ import annotations

import numpy as np

from wskreplay.formats.layers.link import start_inner
from wskreplay.formats.layers.walk import Layer, Outcome, Reason, Walk, handles

FC_TO_DS, FC_FROM_DS, FC_MORE_FRAGMENTS, FC_PROTECTED, FC_ORDER = 0x01, 0x02, 0x04, 0x40, 0x80
TYPE_DATA = 2
SUBTYPE_QOS, SUBTYPE_NO_DATA = 0x8, 0x4
QOS_AMSDU = 0x80
MAX_SUBFRAMES = 64
RADIOTAP_FLAGS_FCS, RADIOTAP_FLAGS_DATAPAD = 0x10, 0x20
RADIOTAP_MAX_BITMAPS = 8
PPI_80211_COMMON = 2
PPI_FLAG_FCS = 0x0001
PPI_MAX_FIELDS = 8
PRISM_HEADER = 144
AVS_MAGIC = (0x80211001, 0x80211002)


@handles(Layer.IEEE80211, Layer.IEEE80211_PADDED)
def ieee80211(w: Walk, rows: np.ndarray) -> None:
    padded_all = w.u.code[rows] == Layer.IEEE80211_PADDED
    w.label(rows, "802.11")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 2, Layer.IEEE80211)
    rows, pos, padded = rows[ok], pos[ok], padded_all[ok]
    fc0, fc1 = w.u8(pos), w.u8(pos + 1)
    version, ftype, subtype = fc0 & 3, (fc0 >> 2) & 3, fc0 >> 4
    w.undecoded(rows[version != 0], Reason.MALFORMED, int(Layer.IEEE80211))
    data = (version == 0) & (ftype == TYPE_DATA)
    w.stop(rows[(version == 0) & ~data], Outcome.OTHER)
    rows, pos, fc1, subtype, padded = (x[data] for x in (rows, pos, fc1, subtype, padded))
    four = (fc1 & (FC_TO_DS | FC_FROM_DS)) == (FC_TO_DS | FC_FROM_DS)
    qos = (subtype & SUBTYPE_QOS) != 0
    base = 24 + np.where(four, 6, 0)
    header = base + np.where(qos, 2, 0) + np.where(qos & ((fc1 & FC_ORDER) != 0), 4, 0)
    header = np.where(padded, (header + 3) & ~3, header)
    ok = w.fits(rows, pos, header)
    w.undecoded(rows[~ok], Reason.TRUNCATED, int(Layer.IEEE80211))
    rows, pos, fc1, subtype, qos, base, header = (
        x[ok] for x in (rows, pos, fc1, subtype, qos, base, header)
    )
    empty = (subtype & SUBTYPE_NO_DATA) != 0
    w.stop(rows[empty], Outcome.OTHER)
    fragment = ~empty & (((fc1 & FC_MORE_FRAGMENTS) != 0) | ((w.le(pos + 22, 2) & 0xF) != 0))
    w.undecoded(rows[fragment], Reason.FRAGMENT_80211)
    protected = ~empty & ~fragment & ((fc1 & FC_PROTECTED) != 0)
    w.undecoded(rows[protected], Reason.ENCRYPTED_80211)
    body = ~empty & ~fragment & ~protected
    amsdu = body & qos & ((w.u8(pos + base) & QOS_AMSDU) != 0)
    single = body & ~amsdu
    w.go(rows[single], (pos + header)[single], Layer.LLC)
    _subframes(w, rows[amsdu], (pos + header)[amsdu])


def _subframes(w: Walk, rows: np.ndarray, start: np.ndarray) -> None:
    """Each A-MSDU subframe becomes a unit of its own (LLC at its MSDU)."""
    if not len(rows):
        return
    fits = np.cumsum((w.u.end[rows] - start) // 14) <= w.room()
    w.undecoded(rows[~fits], Reason.UNIT_LIMIT)
    rows, start = rows[fits], start[fits]
    w.stop(rows, Outcome.CONTAINER)
    cursor = start
    live = np.ones(len(rows), bool)
    for k in range(MAX_SUBFRAMES):
        live &= w.fits(rows, cursor, 14)
        if not live.any():
            break
        length = w.be(cursor + 12, 2)
        idx = np.flatnonzero(live)
        msdu = cursor[idx] + 14
        w.spawn(
            rows[idx],
            msdu,
            np.minimum(w.u.end[rows[idx]], msdu + length[idx]),
            Layer.LLC,
            order=k + 1,
        )
        cursor = np.where(live, cursor + ((14 + length + 3) & ~3), cursor)


@handles(Layer.RADIOTAP)
def radiotap(w: Walk, rows: np.ndarray) -> None:
    """Radiotap: version 0, a little-endian length, presence bitmaps (bit 31 chains
    another). Only the Flags field (bit 1, after an 8-byte-aligned TSFT when bit 0 is
    present) matters here: FCS at the end, and padding after the 802.11 header."""
    w.label(rows, "radiotap")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 8, Layer.RADIOTAP)
    rows, pos = rows[ok], pos[ok]
    length = w.le(pos + 2, 2)
    ok = (w.u8(pos) == 0) & (length >= 8) & w.fits(rows, pos, length)
    w.undecoded(rows[~ok], Reason.MALFORMED, int(Layer.RADIOTAP))
    rows, pos, length = rows[ok], pos[ok], length[ok]
    present = w.le(pos + 4, 4)
    cursor = pos + 8
    more = (present & 0x80000000) != 0
    for _ in range(RADIOTAP_MAX_BITMAPS):
        if not more.any():
            break
        more &= cursor + 4 <= pos + length
        nxt = w.le(cursor, 4)
        cursor = np.where(more, cursor + 4, cursor)
        more &= (nxt & 0x80000000) != 0
    offset = cursor - pos
    has_tsft = (present & 1) != 0
    offset = np.where(has_tsft, ((offset + 7) & ~7) + 8, offset)
    has_flags = ((present & 2) != 0) & (offset < length)
    flags = np.where(has_flags, w.u8(pos + offset), 0)
    fcs = (flags & RADIOTAP_FLAGS_FCS) != 0
    w.u.end[rows[fcs]] -= 4
    padded = (flags & RADIOTAP_FLAGS_DATAPAD) != 0
    w.go(rows, pos + length, np.where(padded, Layer.IEEE80211_PADDED, Layer.IEEE80211))


@handles(Layer.PPI)
def ppi(w: Walk, rows: np.ndarray) -> None:
    """PPI: version 0, flags, a little-endian header length and the inner DLT, then
    fields (type, length); the 802.11-common field's flags say whether there is an FCS."""
    w.label(rows, "ppi")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 8, Layer.PPI)
    rows, pos = rows[ok], pos[ok]
    length, dlt = w.le(pos + 2, 2), w.le(pos + 4, 4)
    ok = (w.u8(pos) == 0) & (length >= 8) & w.fits(rows, pos, length)
    w.undecoded(rows[~ok], Reason.MALFORMED, int(Layer.PPI))
    rows, pos, length, dlt = rows[ok], pos[ok], length[ok], dlt[ok]
    cursor = pos + 8
    fcs = np.zeros(len(rows), bool)
    live = np.ones(len(rows), bool)
    for _ in range(PPI_MAX_FIELDS):
        live &= cursor + 4 <= pos + length
        if not live.any():
            break
        kind, size = w.le(cursor, 2), w.le(cursor + 2, 2)
        common = live & (kind == PPI_80211_COMMON) & (size >= 10)
        fcs |= common & ((w.le(cursor + 12, 2) & PPI_FLAG_FCS) != 0)
        cursor = np.where(live, cursor + 4 + size, cursor)
    w.u.end[rows[fcs]] -= 4
    start_inner(w, rows, pos + length, dlt)


@handles(Layer.PRISM)
def prism(w: Walk, rows: np.ndarray) -> None:
    """Prism monitor header: 144 bytes; an AVS header may stand in its place."""
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 4, Layer.PRISM)
    rows, pos = rows[ok], pos[ok]
    avs = np.isin(w.be(pos, 4), AVS_MAGIC)
    w.go(rows[avs], pos[avs], Layer.AVS)
    rows, pos = rows[~avs], pos[~avs]
    w.label(rows, "prism")
    ok = w.require(rows, pos, PRISM_HEADER, Layer.PRISM)
    w.go(rows[ok], pos[ok] + PRISM_HEADER, Layer.IEEE80211)


@handles(Layer.AVS)
def avs(w: Walk, rows: np.ndarray) -> None:
    """AVS (wlancap): a big-endian magic with the version, then the header length."""
    w.label(rows, "avs")
    pos = w.u.pos[rows]
    ok = w.require(rows, pos, 8, Layer.AVS)
    rows, pos = rows[ok], pos[ok]
    length = w.be(pos + 4, 4)
    ok = np.isin(w.be(pos, 4), AVS_MAGIC) & (length >= 8) & w.fits(rows, pos, length)
    w.undecoded(rows[~ok], Reason.MALFORMED, int(Layer.AVS))
    w.go(rows[ok], (pos + length)[ok], Layer.IEEE80211)
