"""Event schemas an ``.etl`` carries about itself: Microsoft-Windows-EventMetadata event 32
holds a TRACE_EVENT_INFO (the layout of one event of one provider), as tdh.h defines it.

TRACE_EVENT_INFO: ProviderGuid, EventGuid (16 bytes each), EVENT_DESCRIPTOR (Id u16,
Version u8, Channel u8, Level u8, Opcode u8, Task u16, Keyword u64), DecodingSource u32,
nine u32 offsets of names (provider, level, channel, keywords, task, opcode, message,
provider message, binary XML) and BinaryXMLSize u32, EventNameOffset u32,
EventAttributesOffset u32, PropertyCount u32, TopLevelPropertyCount u32, Flags u32, then
PropertyCount EVENT_PROPERTY_INFO of 24 bytes: Flags u32, NameOffset u32, InType u16,
OutType u16, MapNameOffset u32 (for a struct: StructStartIndex u16, NumOfStructMembers
u16, 4 bytes), count u16 (or the index of the property holding it), length u16 (or the
index of the property holding it), Tags u32. Names are NUL-terminated UTF-16LE strings at
the offsets, counted from the start of the TRACE_EVENT_INFO.

Every offset and count is checked against the bytes present.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from wskreplay.errors import InputError

PROVIDER_GUID = "bbccf6c1-6cd1-48c4-80ff-839482e37671"
EVENT_INFO = 32
_HEAD = struct.Struct("<16s16sHBBBBHQI11I4I")
_PROPERTY = struct.Struct("<IIHHIHHI")
MAX_PROPERTIES = 1024

PROPERTY_STRUCT = 0x1
PROPERTY_PARAM_LENGTH = 0x2
PROPERTY_PARAM_COUNT = 0x4
PROPERTY_PARAM_FIXED_LENGTH = 0x10
PROPERTY_PARAM_FIXED_COUNT = 0x20

TDH_INTYPE_UNICODESTRING, TDH_INTYPE_ANSISTRING = 1, 2
TDH_INTYPE_BINARY, TDH_INTYPE_GUID = 14, 15
FIXED_SIZES = {
    3: 1,
    4: 1,
    5: 2,
    6: 2,
    7: 4,
    8: 4,
    9: 8,
    10: 8,
    11: 4,
    12: 8,
    13: 4,
    15: 16,
    17: 8,
    18: 16,
    20: 4,
    21: 8,
}
"""TDH in-types of a fixed size (integers, floats, BOOLEAN, GUID, FILETIME, SYSTEMTIME)."""
INTEGER_TYPES = {3, 4, 5, 6, 7, 8, 9, 10, 13, 20, 21}


@dataclass(frozen=True)
class Property:
    name: str
    in_type: int
    out_type: int = 0
    flags: int = 0
    count: int = 1
    length: int = 0
    """Bytes of a fixed-length binary, or (PROPERTY_PARAM_LENGTH) the index of the
    property that holds the length."""
    map_name: str | None = None

    @property
    def size(self) -> int | None:
        """Bytes it takes in every event, or None when that varies."""
        if self.flags & (PROPERTY_STRUCT | PROPERTY_PARAM_LENGTH | PROPERTY_PARAM_COUNT):
            return None
        if self.in_type in FIXED_SIZES:
            return FIXED_SIZES[self.in_type] * max(self.count, 1)
        if self.in_type == TDH_INTYPE_BINARY and self.flags & PROPERTY_PARAM_FIXED_LENGTH:
            return self.length * max(self.count, 1)
        return None


@dataclass(frozen=True)
class EventSchema:
    provider_guid: str
    event_id: int
    version: int
    properties: tuple[Property, ...]
    opcode: int = 0
    task: int = 0
    keyword: int = 0
    level: int = 4

    def index(self, name: str) -> int | None:
        for i, p in enumerate(self.properties):
            if p.name == name:
                return i
        return None


def _utf16z(data: bytes | memoryview, offset: int, path: str, where: int) -> str | None:
    if offset == 0:
        return None
    if offset >= len(data):
        raise InputError(
            path, f"event schema: name offset {offset} past its {len(data)} bytes", where
        )
    end = offset
    while end + 1 < len(data) and (data[end] or data[end + 1]):
        end += 2
    return bytes(data[offset:end]).decode("utf-16-le", "replace")


def decode_event_info(payload: bytes | memoryview, path: str, where: int) -> EventSchema:
    """A TRACE_EVENT_INFO (an EventMetadata event 32's payload)."""
    if len(payload) < _HEAD.size:
        raise InputError(
            path, f"event schema of {len(payload)} bytes, the header needs {_HEAD.size}", where
        )
    head = _HEAD.unpack_from(payload, 0)
    provider = str(uuid.UUID(bytes_le=bytes(head[0])))
    event_id, version, _channel, level, opcode, task, keyword = head[2:9]
    count = head[22]
    if count > MAX_PROPERTIES or _HEAD.size + count * _PROPERTY.size > len(payload):
        raise InputError(
            path,
            f"event schema claims {count} properties, {len(payload)} bytes hold "
            f"{(len(payload) - _HEAD.size) // _PROPERTY.size}",
            where,
        )
    properties = []
    for i in range(count):
        flags, name_at, in_type, out_type, map_at, count_, length, _tags = _PROPERTY.unpack_from(
            payload, _HEAD.size + i * _PROPERTY.size
        )
        name = _utf16z(payload, name_at, path, where) or f"property{i}"
        map_name = None if flags & PROPERTY_STRUCT else _utf16z(payload, map_at, path, where)
        properties.append(Property(name, in_type, out_type, flags, count_, length, map_name))
    return EventSchema(provider, event_id, version, tuple(properties), opcode, task, keyword, level)


def encode_event_info(schema: EventSchema) -> bytes:
    """A TRACE_EVENT_INFO for ``schema`` (names after the property array), as EventMetadata
    event 32 carries it."""
    fixed = _HEAD.size + len(schema.properties) * _PROPERTY.size
    strings = bytearray()

    def name(text: str | None) -> int:
        if text is None:
            return 0
        at = fixed + len(strings)
        strings.extend(text.encode("utf-16-le") + b"\0\0")
        return at

    props = b""
    for p in schema.properties:
        props += _PROPERTY.pack(
            p.flags, name(p.name), p.in_type, p.out_type, name(p.map_name), p.count, p.length, 0
        )
    head = _HEAD.pack(
        uuid.UUID(schema.provider_guid).bytes_le,
        bytes(16),
        schema.event_id,
        schema.version,
        0,
        schema.level,
        schema.opcode,
        schema.task,
        schema.keyword,
        0,
        *([0] * 11),
        0,
        len(schema.properties),
        len(schema.properties),
        1,
    )
    return head + props + bytes(strings)


def read_values(
    schema: EventSchema, payload: bytes | memoryview, pointer_size: int = 8
) -> dict[str, int | str | bytes] | None:
    """The values of an event whose top-level properties are integers, GUIDs, strings
    and binaries sized by a constant or an earlier integer; None when the payload does not
    hold them (or a property is of a kind this reader does not take)."""
    values: dict[str, int | str | bytes] = {}
    at = 0
    for p in schema.properties:
        if p.flags & (PROPERTY_STRUCT | PROPERTY_PARAM_COUNT) or p.count > 1:
            return None
        if p.in_type in (TDH_INTYPE_UNICODESTRING, TDH_INTYPE_ANSISTRING):
            width = 2 if p.in_type == TDH_INTYPE_UNICODESTRING else 1
            end = at
            while end + width <= len(payload) and any(payload[end : end + width]):
                end += width
            if end + width > len(payload):
                return None
            raw = bytes(payload[at:end])
            values[p.name] = raw.decode("utf-16-le" if width == 2 else "latin-1", "replace")
            at = end + width
            continue
        size = FIXED_SIZES.get(p.in_type)
        if p.in_type == 16:
            size = pointer_size
        if p.in_type == TDH_INTYPE_BINARY:
            if p.flags & PROPERTY_PARAM_LENGTH:
                ref = schema.properties[p.length].name if p.length < len(schema.properties) else ""
                given = values.get(ref)
                if not isinstance(given, int):
                    return None
                size = given
            else:
                size = p.length
        if size is None or at + size > len(payload):
            return None
        raw = bytes(payload[at : at + size])
        if p.in_type in INTEGER_TYPES or p.in_type == 16:
            values[p.name] = int.from_bytes(raw, "little", signed=p.in_type in (3, 5, 7, 9))
        elif p.in_type == TDH_INTYPE_GUID:
            values[p.name] = str(uuid.UUID(bytes_le=raw))
        else:
            values[p.name] = raw
        at += size
    return values
