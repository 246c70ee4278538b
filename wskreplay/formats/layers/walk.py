"""The layer walk: every frame of a capture decoded one protocol layer at a time, all
frames at once.

A *unit* is one packet being decoded: a frame, or a part of one (an A-MSDU subframe), or a
reassembled IP datagram. Each unit has a position in the buffer, the end of the bytes that
belong to it, and a code saying which protocol starts at that position. One step of the
walk hands every unit to the handler of its protocol, all units of a protocol in one call
of array operations; a handler moves its units past its header and names the next
protocol, or ends them: TCP found, decoded but not TCP, or not decoded with a reason.
Nothing is read past a unit's end: a header that does not fit is "truncated", never read.

Each unit also carries its *encapsulation path* (the layers it crossed, interned as an
integer id: ``["ethernet", "vlan 10", "ipv4", "gre", "ipv4"]``) and, once it met an IP
header, the innermost addresses and where that IP payload ends on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import numpy as np

MAX_SUBUNITS = 128
"""Units one unit may spawn (A-MSDU subframes); orders are numbered in this base."""
MAX_STEPS = 32
"""Layers one packet may cross; a deeper nesting is reported, not followed (a hostile
capture could nest tunnels without end)."""


class Outcome(IntEnum):
    """Terminal states of a unit (codes below :data:`FIRST_LAYER`)."""

    TCP = 1
    OTHER = 2
    """Decoded, and not TCP (ARP, UDP, ICMP, 802.11 management, ...)."""
    UNDECODED = 3
    CONTAINER = 4
    """A unit whose content went on as other units (an A-MSDU's subframes)."""
    FRAGMENT = 5
    """An IP fragment, waiting for its datagram to be reassembled."""


FIRST_LAYER = 16


class Layer(IntEnum):
    """The protocol at a unit's position (active codes)."""

    ETHERNET = 16
    LLC = 17
    VLAN = 18
    PPPOE = 19
    PPP = 20
    MPLS = 21
    IPV4 = 22
    IPV6 = 23
    IP_NEXT = 24
    """The payload of an IP header or extension: ``arg`` holds the protocol number."""
    IPV6_EXTENSION = 25
    UDP = 26
    TCP = 27
    GRE = 28
    ERSPAN_II = 29
    ERSPAN_III = 30
    VXLAN = 31
    VXLAN_GPE = 32
    GENEVE = 33
    GTP_U = 34
    TEREDO = 35
    IEEE80211 = 36
    RADIOTAP = 37
    PPI = 38
    PRISM = 39
    AVS = 40
    ARCNET_BSD = 41
    ARCNET_LINUX = 42
    SLL = 43
    SLL2 = 44
    NULL = 45
    RAW = 46
    """A raw IP link: the version nibble says which."""
    C_HDLC = 47
    PPP_LINK = 48
    """PPP in HDLC-like framing (address and control bytes may be present)."""
    PBB = 49
    ETHERIP = 50
    AH = 51
    PKTAP = 52
    NFLOG = 53
    GRE_PPP = 55
    IEEE80211_PADDED = 56
    """802.11 frames whose header is padded to 4 bytes (radiotap's data-pad flag)."""


class Reason(IntEnum):
    """Why a unit was not decoded; the text takes the unit's ``arg``."""

    LINK_TYPE = 1
    ETHERTYPE = 2
    ENCRYPTED_80211 = 3
    FRAGMENT_INCOMPLETE = 4
    TRUNCATED = 5
    MALFORMED = 6
    GRE_PROTOCOL = 7
    GRE_VERSION = 8
    MPLS_PAYLOAD = 9
    ENCRYPTED_IPSEC = 10
    ENCRYPTED_MACSEC = 11
    COMPRESSED_IP = 12
    FRAGMENT_80211 = 13
    FRAGMENT_ARCNET = 14
    TOO_DEEP = 15
    FRAGMENT_LIMIT = 16
    PPP_PROTOCOL = 17
    TUNNEL_PAYLOAD = 18
    LLC_SAP = 19
    ARCNET_PROTOCOL = 20
    UNIT_LIMIT = 21


REASON_TEXT: dict[Reason, str] = {
    Reason.LINK_TYPE: "unknown link type {arg}",
    Reason.ETHERTYPE: "unknown EtherType 0x{arg:04x}",
    Reason.ENCRYPTED_80211: "encrypted 802.11 data",
    Reason.FRAGMENT_INCOMPLETE: "IP fragment never completed",
    Reason.TRUNCATED: "truncated {layer} header",
    Reason.MALFORMED: "malformed {layer} header",
    Reason.GRE_PROTOCOL: "unknown GRE protocol type 0x{arg:04x}",
    Reason.GRE_VERSION: "unknown GRE version {arg}",
    Reason.MPLS_PAYLOAD: "MPLS payload that is neither IPv4 nor IPv6",
    Reason.ENCRYPTED_IPSEC: "encrypted IPsec (ESP)",
    Reason.ENCRYPTED_MACSEC: "encrypted MACsec",
    Reason.COMPRESSED_IP: "compressed IP payload (IPComp)",
    Reason.FRAGMENT_80211: "802.11 fragment (not reassembled)",
    Reason.FRAGMENT_ARCNET: "ARCNET fragment (not reassembled)",
    Reason.TOO_DEEP: f"more than {MAX_STEPS} nested layers",
    Reason.FRAGMENT_LIMIT: "IP fragment dropped at the reassembly limit",
    Reason.PPP_PROTOCOL: "unknown PPP protocol 0x{arg:04x}",
    Reason.TUNNEL_PAYLOAD: "tunnel payload that is not IP or Ethernet",
    Reason.LLC_SAP: "unknown LLC SAP 0x{arg:02x}",
    Reason.ARCNET_PROTOCOL: "unknown ARCNET protocol 0x{arg:02x}",
    Reason.UNIT_LIMIT: "A-MSDU past the decoder's limit of subframes per chunk",
}

LAYER_NAME: dict[int, str] = {
    Layer.ETHERNET: "Ethernet",
    Layer.LLC: "LLC",
    Layer.VLAN: "VLAN",
    Layer.PPPOE: "PPPoE",
    Layer.PPP: "PPP",
    Layer.MPLS: "MPLS",
    Layer.IPV4: "IPv4",
    Layer.IPV6: "IPv6",
    Layer.IP_NEXT: "IP",
    Layer.IPV6_EXTENSION: "IPv6 extension",
    Layer.UDP: "UDP",
    Layer.TCP: "TCP",
    Layer.GRE: "GRE",
    Layer.ERSPAN_II: "ERSPAN II",
    Layer.ERSPAN_III: "ERSPAN III",
    Layer.VXLAN: "VXLAN",
    Layer.VXLAN_GPE: "VXLAN-GPE",
    Layer.GENEVE: "Geneve",
    Layer.GTP_U: "GTP-U",
    Layer.TEREDO: "Teredo",
    Layer.IEEE80211: "802.11",
    Layer.IEEE80211_PADDED: "802.11",
    Layer.RADIOTAP: "radiotap",
    Layer.PPI: "PPI",
    Layer.PRISM: "Prism",
    Layer.AVS: "AVS",
    Layer.ARCNET_BSD: "ARCNET",
    Layer.ARCNET_LINUX: "ARCNET",
    Layer.SLL: "Linux cooked",
    Layer.SLL2: "Linux cooked v2",
    Layer.NULL: "BSD loopback",
    Layer.RAW: "raw IP",
    Layer.C_HDLC: "Cisco HDLC",
    Layer.PPP_LINK: "PPP",
    Layer.PBB: "802.1ah",
    Layer.ETHERIP: "EtherIP",
    Layer.AH: "IPsec AH",
    Layer.PKTAP: "PKTAP",
    Layer.NFLOG: "NFLOG",
    Layer.GRE_PPP: "PPP",
}

NO_TCP_REASONS = frozenset()
"""Reasons whose frames could not have carried a TCP segment we would have read; every
reason above could hide TCP, so none is here today (kept for sources that add their own)."""


def reason_text(reason: int, arg: int) -> str:
    template = REASON_TEXT[Reason(reason)]
    return template.format(arg=arg, layer=LAYER_NAME.get(arg, str(arg)))


MAX_PATHS = 65_536
"""Distinct encapsulation paths kept (VLAN ids and MPLS labels make paths; a hostile
capture could make millions). Past it, a label is no longer added to a path."""
MAX_SPAWNED_UNITS = 1 << 20
"""Units one walk may spawn (A-MSDU subframes), bounding its memory (~100 bytes each)."""


class PathTable:
    """Encapsulation paths as integer ids: id 0 is the empty path; a child is its parent
    plus one label."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, ...]] = [()]
        self._ids: dict[tuple[int, str], int] = {}
        self.full = False
        """Whether :data:`MAX_PATHS` was reached (later labels were not recorded)."""

    def known(self, parent: int, label: str) -> int:
        """The id of ``label`` under ``parent`` if one was given already, else -1."""
        return self._ids.get((parent, label), -1)

    def child(self, parent: int, label: str) -> int:
        key = (parent, label)
        found = self._ids.get(key)
        if found is None:
            if len(self.paths) >= MAX_PATHS:
                self.full = True
                return parent
            found = len(self.paths)
            self.paths.append((*self.paths[parent], label))
            self._ids[key] = found
        return found


@dataclass
class Units:
    """The columns of every unit; ``order`` sorts units of one frame as they were met."""

    frame: np.ndarray
    pos: np.ndarray
    end: np.ndarray
    code: np.ndarray
    arg: np.ndarray
    path: np.ndarray
    order: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    ip_end: np.ndarray
    """Where the innermost IP payload ends on the wire (may lie past the captured end)."""
    ip_path: np.ndarray
    """The path before the innermost IP layer (where a reassembled datagram goes on)."""

    @classmethod
    def empty(cls, n: int) -> Units:
        z64 = lambda: np.zeros(n, np.int64)  # noqa: E731
        zu = lambda: np.zeros(n, np.uint64)  # noqa: E731
        return cls(
            frame=z64(),
            pos=z64(),
            end=z64(),
            code=np.zeros(n, np.int16),
            arg=z64(),
            path=np.zeros(n, np.int32),
            order=z64(),
            src_hi=zu(),
            src_lo=zu(),
            dst_hi=zu(),
            dst_lo=zu(),
            ip_end=z64(),
            ip_path=np.zeros(n, np.int32),
        )

    def __len__(self) -> int:
        return len(self.frame)


Handler = Callable[["Walk", np.ndarray], None]
HANDLERS: dict[int, Handler] = {}


def handles(*layers: Layer) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for layer in layers:
            HANDLERS[int(layer)] = fn
        return fn

    return register


@dataclass
class WalkOptions:
    udp_tunnels: np.ndarray = field(default_factory=lambda: np.zeros(65536, np.int16))
    """UDP port -> tunnel layer code (0: none)."""


class Walk:
    """One walk over a buffer: the units, the byte readers and the shared path table.

    Reads gather one field for many units at once through overlapping strided views of
    the buffer (``views[k][i]`` is the k-byte integer at byte ``i``); positions are
    clipped into the buffer, and handlers check :meth:`fits` before trusting a value."""

    def __init__(
        self,
        buffer: memoryview | bytes,
        units: Units,
        paths: PathTable,
        options: WalkOptions,
        fragments: FragmentSink | None = None,
    ) -> None:
        raw = np.frombuffer(buffer, dtype=np.uint8) if len(buffer) else np.zeros(0, np.uint8)
        self.raw = np.concatenate((raw, np.zeros(8, np.uint8))) if len(raw) < 8 else raw
        n = len(self.raw)
        self._be = {
            k: np.ndarray((n - k + 1,), dtype=f">u{k}", buffer=self.raw, strides=(1,))
            for k in (2, 4, 8)
        }
        self._le = {
            k: np.ndarray((n - k + 1,), dtype=f"<u{k}", buffer=self.raw, strides=(1,))
            for k in (2, 4)
        }
        self.u = units
        self.paths = paths
        self.options = options
        self.fragments = fragments
        self._spawned: list[Units] = []
        self.spawned = 0

    def fits(self, rows: np.ndarray, pos: np.ndarray, size: int | np.ndarray) -> np.ndarray:
        """Whether ``size`` bytes at ``pos`` lie inside each unit of ``rows``."""
        return (pos >= 0) & (pos + size <= self.u.end[rows])

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self.raw[np.clip(pos, 0, len(self.raw) - 1)].astype(np.int64)

    def be(self, pos: np.ndarray, size: int, *, inside: bool = False) -> np.ndarray:
        """Big-endian ``size``-byte integers at ``pos`` (``inside``: every position is
        known to hold them, so no clipping)."""
        view = self._be[size]
        values = view[pos if inside else np.clip(pos, 0, len(view) - 1)]
        return values.astype(np.uint64) if size == 8 else values.astype(np.int64)

    def le(self, pos: np.ndarray, size: int) -> np.ndarray:
        view = self._le[size]
        return view[np.clip(pos, 0, len(view) - 1)].astype(np.int64)

    def go(self, rows: np.ndarray, pos: np.ndarray | int, code: int | np.ndarray) -> None:
        """Move ``rows`` to ``pos``, where protocol ``code`` starts."""
        self.u.pos[rows] = pos
        self.u.code[rows] = code

    def stop(self, rows: np.ndarray, outcome: Outcome) -> None:
        self.u.code[rows] = outcome

    def undecoded(self, rows: np.ndarray, reason: Reason, arg: int | np.ndarray = 0) -> None:
        self.u.code[rows] = Outcome.UNDECODED
        self.u.arg[rows] = int(reason) << 32 | np.asarray(arg, dtype=np.int64)

    def require(self, rows: np.ndarray, pos: np.ndarray, size: int, layer: Layer) -> np.ndarray:
        """The rows whose ``size`` header bytes at ``pos`` fit; the others end as a
        truncated ``layer`` header. Returns a mask over ``rows``."""
        ok = self.fits(rows, pos, size)
        if not ok.all():
            self.undecoded(rows[~ok], Reason.TRUNCATED, int(layer))
        return ok

    def label(self, rows: np.ndarray, text: str) -> None:
        """Append ``text`` to the encapsulation path of ``rows``."""
        if not len(rows):
            return
        parents = self.u.path[rows]
        first = int(parents[0])
        if (parents == first).all():
            self.u.path[rows] = self.paths.child(first, text)
            return
        uniq, inverse = np.unique(parents, return_inverse=True)
        ids = np.array([self.paths.child(int(p), text) for p in uniq.tolist()], np.int32)
        self.u.path[rows] = ids[inverse]

    def label_values(self, rows: np.ndarray, template: str, values: np.ndarray) -> None:
        """Append ``template.format(v)`` (one label per distinct value) to each path."""
        if not len(rows):
            return
        key = (self.u.path[rows].astype(np.int64) << 32) | values.astype(np.int64)
        first = int(key[0])
        if (key == first).all():
            self.u.path[rows] = self.paths.child(first >> 32, template.format(first & 0xFFFFFFFF))
            return
        uniq, inverse = np.unique(key, return_inverse=True)
        ids = np.array(
            [self.paths.child(k >> 32, template.format(k & 0xFFFFFFFF)) for k in uniq.tolist()],
            np.int32,
        )
        self.u.path[rows] = ids[inverse]

    def room(self) -> int:
        """How many more units this walk may spawn."""
        return MAX_SPAWNED_UNITS - self.spawned

    def spawn(
        self, parents: np.ndarray, pos: np.ndarray, end: np.ndarray, code: int, order: int
    ) -> None:
        """New units inside ``parents``: same frame, path and IP facts, bytes ``[pos, end)``
        holding protocol ``code``, sorted ``order``-th within their frame. They are walked
        from the next step."""
        u = self.u
        child = Units(
            **{name: getattr(u, name)[parents].copy() for name in Units.__dataclass_fields__}
        )
        child.pos = np.asarray(pos, np.int64).copy()
        child.end = np.asarray(end, np.int64).copy()
        child.code = np.full(len(parents), code, np.int16)
        child.order = child.order * MAX_SUBUNITS + order
        self._spawned.append(child)
        self.spawned += len(parents)

    def run(self) -> None:
        """Step until every unit reached an outcome (or :data:`MAX_STEPS`)."""
        for _ in range(MAX_STEPS):
            if self._spawned:
                self.u = _concat([self.u, *self._spawned])
                self._spawned = []
            active = self.u.code >= FIRST_LAYER
            if not active.any():
                return
            present = np.flatnonzero(np.bincount(self.u.code[active], minlength=FIRST_LAYER))
            for code in present.tolist():
                rows = np.flatnonzero(self.u.code == code)
                HANDLERS[code](self, rows)
        deep = np.flatnonzero(self.u.code >= FIRST_LAYER)
        self.undecoded(deep, Reason.TOO_DEEP)


def _concat(parts: list[Units]) -> Units:
    return Units(
        **{
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in Units.__dataclass_fields__
        }
    )


@dataclass
class Fragments:
    """IP fragments met by a handler: the units, and per unit the fragment's fields."""

    rows: np.ndarray
    version: int
    ident: np.ndarray
    offset: np.ndarray
    """Byte offset of the fragment's data in its datagram's payload."""
    more: np.ndarray
    payload: np.ndarray
    """Buffer position of the fragment's data."""
    proto: np.ndarray
    """The protocol its datagram carries (IPv6: the fragment header's next header)."""


class FragmentSink(Protocol):
    """Where the IP handlers leave fragments (:class:`.fragments.Reassembler`)."""

    def add(self, w: Walk, fragments: Fragments) -> None: ...
