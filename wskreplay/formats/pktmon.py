"""PktMon (Microsoft-Windows-PktMon) packet events: their layout, the components they
were logged at, and which appearance of a packet is the frame.

**Layouts.** Event 160 (a packet) and 170 (a drop) have a fixed part and the logged bytes.
The layout is taken from the file's own Microsoft-Windows-EventMetadata schema of the event
when it carries one (every PktMon recording seen does), so a build that changes it is
read right; the built-in layout of version 0 is the fallback. A layout this reader cannot
honour (a field it needs missing or not an integer, a field of varying size before the
bytes, bytes not sized by a field) is an error naming the event, never a misread.

**Components.** PktMon describes what it watches in the same file: event 20 per component
(id, type: miniport, filter, protocol, ...), 30 its numeric properties (IfIndex,
MiniportIfIndex, LowerIfIndex, ...), 90 its edges (id and name: "Lower", "Upper"). From
these each (component, edge) gets a *wire distance*: miniports (and NetVsc, NetCx and
vSwitch miniports) 0; a filter 1 + its place in the filter stack of its miniport (by the
LowerIfIndex chain); vSwitch ports 40; NDIS 45; protocols 50; the IP layers, IPsec and
load balancer 60; HTTP 70. The lower edge of a component is nearer the wire than its
upper edge.

**One frame per packet.** A packet is logged once per component it crosses. Builds up to
Windows 11 23H2 / Server 2022 number those appearances 1..N inside one PktGroupId;
Windows 11 24H2 and later log AppearanceCount 0 and give every appearance a PktGroupId of
its own. The appearances of one packet are therefore grouped by PktGroupId when it is
numbered, else by content: the same network-layer bytes (from the IP header on; the link
header differs where a Wi-Fi adapter logs 802.11 and the layers above it Ethernet), at
components the packet has not met yet, each within :data:`APPEARANCE_GAP_NS` of the
previous one. A second copy at a component the group already holds is another packet (a
retransmission goes through the same components again).

The frame of a packet is its appearance with the smallest wire distance; among equals
(a virtual adapter and the physical one under it are both miniports), the first for an
inbound packet and the last for an outbound one; when no component is described, the
same rule over all appearances. Limits: appearances more than the gap apart are
different packets; two identical packets (no IP ID, no changing TCP field) logged within
the gap through disjoint components would be taken as one.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from wskreplay.errors import InputError
from wskreplay.formats import pcap
from wskreplay.formats.event_metadata import (
    PROPERTY_PARAM_LENGTH,
    TDH_INTYPE_BINARY,
    EventSchema,
    Property,
    read_values,
)

PROVIDER = "4d4f80d9-c8bd-4d73-bb5b-19c90402c5ac"
PACKET, DROP = 160, 170
COMPONENT, COMPONENT_PROPERTY, EDGE = 20, 30, 90
INBOUND_TAGS = {1, 3, 5}
OUTBOUND_TAGS = {2, 4, 6}
LINKTYPE_IEEE802_11 = 105
APPEARANCE_GAP_NS = 1_000_000
"""Appearances of one packet follow each other within this (measured: 2-10 us)."""
NUMBERED_SPAN_NS = 1_000_000_000
"""A numbered group's id is forgotten this long after its last appearance (it bounds
memory; ids are not reused)."""
MATCH_BYTES = 40
"""Network-layer bytes two appearances must share to be one packet (an IPv4 header and
the TCP header's first 20 bytes; an IPv6 header); longer ones must agree where both were
logged."""

_U16, _U32, _U64 = 6, 8, 10
PACKET_FIELDS = (
    ("PktGroupId", _U64),
    ("PktNumber", _U16),
    ("AppearanceCount", _U16),
    ("DirTag", _U16),
    ("PacketType", _U16),
    ("ComponentId", _U16),
    ("EdgeId", _U16),
    ("FilterId", _U16),
    ("DropReason", _U32),
    ("DropLocation", _U32),
    ("OriginalPayloadSize", _U16),
    ("LoggedPayloadSize", _U16),
)
ETHERNET_TYPES = (0x0800, 0x86DD, 0x8100, 0x0806)
"""EtherTypes (IPv4, IPv6, 802.1Q, ARP) that tell an Ethernet frame from an 802.11 one where
PktMon's packet type 2 leaves it open."""
NARROW_FIELDS, NARROW_MAX = ("ComponentId", "EdgeId", "OriginalPayloadSize"), 0x7FFFFFFF
"""Fields kept in 32-bit columns: a file's layout may make them wider, not their values."""
REQUIRED = (
    "PktGroupId",
    "AppearanceCount",
    "DirTag",
    "PacketType",
    "ComponentId",
    "EdgeId",
    "OriginalPayloadSize",
    "LoggedPayloadSize",
)


def _schema(event_id: int, keyword: int, props: list[Property]) -> EventSchema:
    return EventSchema(PROVIDER, event_id, 0, tuple(props), keyword=keyword)


def packet_schema(
    event_id: int = PACKET, fields: tuple = PACKET_FIELDS, version: int = 0
) -> EventSchema:
    """The schema of a packet (or drop) event: the built-in one by default."""
    props = [Property(name, t) for name, t in fields]
    length_index = [name for name, _ in fields].index("LoggedPayloadSize")
    props.append(Property("Payload", TDH_INTYPE_BINARY, 15, PROPERTY_PARAM_LENGTH, 1, length_index))
    return EventSchema(PROVIDER, event_id, version, tuple(props), keyword=0x10)


BUILTIN: dict[tuple[int, int], EventSchema] = {
    (PACKET, 0): packet_schema(PACKET),
    (DROP, 0): packet_schema(DROP),
    (COMPONENT, 0): _schema(
        COMPONENT,
        2,
        [
            Property("Id", _U16),
            Property("Type", _U16),
            Property("Name", 1),
            Property("Description", 1),
        ],
    ),
    (COMPONENT_PROPERTY, 0): _schema(
        COMPONENT_PROPERTY,
        2,
        [Property("ComponentId", _U16), Property("Type", _U16), Property("Value", _U32)],
    ),
    (EDGE, 0): _schema(
        EDGE,
        2,
        [
            Property("ComponentId", _U16),
            Property("EdgeName", 1),
            Property("EdgeId", _U16),
            Property("DirTagIn", _U16),
            Property("PacketsIn", _U64),
            Property("BytesIn", _U64),
            Property("DirTagOut", _U16),
            Property("PacketsOut", _U64),
            Property("BytesOut", _U64),
        ],
    ),
}
"""Version-0 layouts, as Windows 10 to 11 24H2 log them (and describe them in the file)."""

_STRUCT_CODE = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True)
class PacketLayout:
    """Where a packet event's fields are: one ``struct`` over the fixed part (unneeded
    fields skipped as padding), then the logged bytes."""

    fixed: struct.Struct
    names: tuple[str, ...]
    fields: tuple[tuple[str, int, int], ...] = ()
    """(name, offset, size) of each named field in the fixed part, for readers that
    gather a field of many events at once."""

    def same(self, other: PacketLayout) -> bool:
        return (self.fixed.format, self.names) == (other.fixed.format, other.names)

    def unpack(self, payload: bytes | memoryview) -> dict[str, int]:
        return dict(zip(self.names, self.fixed.unpack_from(payload), strict=True))


def packet_layout(schema: EventSchema, path: str) -> PacketLayout:
    """The layout ``schema`` describes, or an error naming the event if this reader cannot
    take it."""
    what = f"PktMon event {schema.event_id} version {schema.version}"
    fmt, names, fields, at = "<", [], [], 0
    for k, p in enumerate(schema.properties):
        if p.name == "Payload":
            logged = schema.index("LoggedPayloadSize")
            if not (p.in_type == TDH_INTYPE_BINARY and p.flags & PROPERTY_PARAM_LENGTH):
                raise InputError(path, f"{what}: its Payload is not sized by a field; not read")
            if p.length != logged or k != len(schema.properties) - 1:
                raise InputError(
                    path, f"{what}: Payload is not last or not sized by LoggedPayloadSize"
                )
            break
        size = p.size
        if size is None:
            raise InputError(
                path, f"{what}: field {p.name} varies in size before the packet bytes; not read"
            )
        if p.name in REQUIRED:
            if p.in_type not in (3, 4, 5, 6, 7, 8, 9, 10, 20, 21) or size not in _STRUCT_CODE:
                raise InputError(path, f"{what}: field {p.name} is not an integer; not read")
            fmt += _STRUCT_CODE[size]
            names.append(p.name)
            fields.append((p.name, at, size))
        else:
            fmt += f"{size}x"
        at += size
    else:
        raise InputError(path, f"{what}: no Payload field; not read")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise InputError(path, f"{what}: no {', '.join(missing)} field; not read")
    return PacketLayout(struct.Struct(fmt), tuple(names), tuple(fields))


MINIPORTS = {2, 6, 7, 9, 14}
FILTER = 3
RANK = {5: 40, 8: 40, 1: 45, 4: 50, 11: 60, 12: 60, 13: 60, 10: 70}
PROP_IFINDEX, PROP_MINIPORT_IFINDEX, PROP_LOWER_IFINDEX = 1, 2, 3


@dataclass
class Components:
    """What the file says about PktMon's components, and the wire distance of each."""

    kind: dict[int, int] = field(default_factory=dict)
    name: dict[int, str] = field(default_factory=dict)
    props: dict[int, dict[int, int]] = field(default_factory=dict)
    lower_edges: set[tuple[int, int]] = field(default_factory=set)
    _distance: dict[tuple[int, int], int | None] = field(default_factory=dict)

    def add(self, event_id: int, values: dict) -> None:
        self._distance.clear()
        if event_id == COMPONENT:
            self.kind[int(values["Id"])] = int(values["Type"])
            self.name[int(values["Id"])] = str(values.get("Description") or values.get("Name"))
        elif event_id == COMPONENT_PROPERTY:
            self.props.setdefault(int(values["ComponentId"]), {})[int(values["Type"])] = int(
                values["Value"]
            )
        elif event_id == EDGE and str(values["EdgeName"]).strip().lower() == "lower":
            self.lower_edges.add((int(values["ComponentId"]), int(values["EdgeId"])))

    def distance(self, component: int, edge: int) -> int | None:
        key = (component, edge)
        if key not in self._distance:
            rank = self._rank(component)
            self._distance[key] = (
                None if rank is None else rank * 2 + (0 if key in self.lower_edges else 1)
            )
        return self._distance[key]

    def _rank(self, component: int) -> int | None:
        kind = self.kind.get(component)
        if kind is None:
            return None
        if kind in MINIPORTS:
            return 0
        if kind == FILTER:
            return 1 + self._filters_below(component)
        return RANK.get(kind, 80)

    def _filters_below(self, component: int) -> int:
        """Filters between this one and its miniport, by the LowerIfIndex chain."""
        by_ifindex = {p[PROP_IFINDEX]: c for c, p in self.props.items() if PROP_IFINDEX in p}
        below, seen = 0, {component}
        current = component
        while True:
            lower = self.props.get(current, {}).get(PROP_LOWER_IFINDEX)
            nxt = by_ifindex.get(lower) if lower is not None else None
            if nxt is None or nxt in seen or self.kind.get(nxt) != FILTER:
                return below
            below += 1
            seen.add(nxt)
            current = nxt


def network_bytes(frame: bytes | memoryview, linktype: int) -> bytes:
    """The frame from its network-layer header on (the link header is what differs
    between appearances of one packet)."""
    at = 0
    if linktype == pcap.LINKTYPE_ETHERNET:
        at = 14
        while len(frame) >= at and frame[at - 2 : at] in (b"\x81\x00", b"\x88\xa8"):
            at += 4
    elif linktype == LINKTYPE_IEEE802_11 and len(frame) >= 2:
        fc0, fc1 = frame[0], frame[1]
        qos = fc0 & 0x80
        at = 24 + (6 if fc1 & 3 == 3 else 0) + (2 if qos else 0) + (4 if qos and fc1 & 0x80 else 0)
        at += 8
    return bytes(frame[at:])


@dataclass
class _Open:
    last_ns: int
    components: set[tuple[int, int]]
    content: bytes


class PacketIds:
    """Which packet each appearance belongs to (see the module's rules): by PktGroupId
    when the appearances are numbered, else by content. Packets whose last appearance is
    older than the gap are forgotten, so memory holds only the packets still open."""

    def __init__(self) -> None:
        self.next = 0
        self._numbered: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._open: OrderedDict[int, _Open] = OrderedDict()
        self._by_key: dict[bytes, list[int]] = {}

    def numbered(self, group: int, time_ns: int) -> int:
        self._expire(time_ns)
        found = self._numbered.pop(group, None)
        pid = found[0] if found is not None else self._new()
        self._numbered[group] = (pid, time_ns)
        return pid

    def by_content(self, time_ns: int, component: int, edge: int, content: bytes) -> int:
        self._expire(time_ns)
        key = content[:MATCH_BYTES]
        for pid in self._by_key.get(key, ()):
            p = self._open[pid]
            if (component, edge) in p.components or time_ns - p.last_ns > APPEARANCE_GAP_NS:
                continue
            if content[: len(p.content)] != p.content[: len(content)]:
                continue
            p.components.add((component, edge))
            p.last_ns = time_ns
            if len(content) > len(p.content):
                p.content = content
            self._open.move_to_end(pid)
            return pid
        pid = self._new()
        self._open[pid] = _Open(time_ns, {(component, edge)}, content)
        self._by_key.setdefault(key, []).append(pid)
        return pid

    def _new(self) -> int:
        self.next += 1
        return self.next - 1

    def _expire(self, now: int) -> None:
        while self._numbered:
            group, (_, last) = next(iter(self._numbered.items()))
            if now - last <= NUMBERED_SPAN_NS:
                break
            del self._numbered[group]
        while self._open:
            pid, p = next(iter(self._open.items()))
            if now - p.last_ns <= APPEARANCE_GAP_NS:
                break
            del self._open[pid]
            key = p.content[:MATCH_BYTES]
            ids = self._by_key[key]
            ids.remove(pid)
            if not ids:
                del self._by_key[key]


def component_values(
    schema: EventSchema, payload: bytes | memoryview, path: str, where: int
) -> dict | None:
    """A component, property or edge event's values (None if it does not hold them)."""
    values = read_values(schema, payload)
    if values is None:
        return None
    needed = {
        COMPONENT: ("Id", "Type"),
        COMPONENT_PROPERTY: ("ComponentId", "Type", "Value"),
        EDGE: ("ComponentId", "EdgeName", "EdgeId"),
    }[schema.event_id]
    if any(n not in values for n in needed):
        raise InputError(
            path,
            f"PktMon event {schema.event_id} version {schema.version}: no "
            f"{', '.join(n for n in needed if n not in values)} field; not read",
            where,
        )
    return values
