"""TraceLogging: self-describing ETW events, decoded with no manifest.

An event carries its provider's name in extended item 12 (provider traits) and its own
name and field list in extended item 11 (event schema); the payload is the field values
in order. Layouts in shared/reference/etl-facts.md. Decoding walks the fields and reads
values sequentially; a payload must be consumed exactly, which is how the decoder checks
itself. Schemas repeat in every event, so parsed schemas are cached by their bytes.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from wskreplay.formats.reference import reference_asked

EXT_SCHEMA = 11
EXT_TRAITS = 12
CHANNEL_TRACELOGGING = 11

ARRAY_FIXED, ARRAY_VARIABLE, CUSTOM = 0x20, 0x40, 0x60
STRUCT = 24
FIXED_SIZES = {  # in-type -> struct format of the fixed-size numeric types
    3: "<b",
    4: "<B",
    5: "<h",
    6: "<H",
    7: "<i",
    8: "<I",
    9: "<q",
    10: "<Q",
    11: "<f",
    12: "<d",
    13: "<i",
    20: "<I",
    21: "<Q",
}
MAX_DEPTH = 16


class TraceLoggingError(ValueError):
    """Metadata or payload that does not follow the TraceLogging encoding."""


@dataclass(frozen=True)
class Field:
    name: str
    in_type: int
    out_type: int
    array: int
    count: int = 0
    """Element count of a fixed-size array; member count of a struct (from OutType)."""
    custom_schema: bytes = b""


@dataclass(frozen=True)
class Schema:
    name: str
    tags: int
    fields: tuple[Field, ...]


def _cstring(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    stop = buf.find(b"\0", pos, end)
    if stop < 0:
        raise TraceLoggingError(f"unterminated name at metadata offset {pos}")
    return buf[pos:stop].decode("utf-8", "replace"), stop + 1


def provider_name(traits: bytes) -> str:
    """The provider name from a provider-traits item (u16 size, UTF-8 name NUL, traits)."""
    if len(traits) < 3:
        raise TraceLoggingError("provider traits shorter than 3 bytes")
    size = struct.unpack_from("<H", traits)[0]
    if size > len(traits):
        raise TraceLoggingError(f"provider traits claim {size} bytes, {len(traits)} present")
    return _cstring(traits, 2, size)[0]


@lru_cache(maxsize=4096)
def parse_schema(raw: bytes) -> Schema:
    """An event schema item: u16 size, tags, event name, then the fields up to size."""
    if len(raw) < 3:
        raise TraceLoggingError("event schema shorter than 3 bytes")
    size = struct.unpack_from("<H", raw)[0]
    if size > len(raw) or size < 3:
        raise TraceLoggingError(f"event schema claims {size} bytes, {len(raw)} present")
    pos, tags = _tags(raw, 2, size)
    name, pos = _cstring(raw, pos, size)
    fields = []
    while pos < size:
        fname, pos = _cstring(raw, pos, size)
        if pos >= size:
            raise TraceLoggingError(f"field {fname!r} has no type byte")
        in_meta = raw[pos]
        pos += 1
        out_type = 0
        if in_meta & 0x80:
            if pos >= size:
                raise TraceLoggingError(f"field {fname!r} lacks its OutType byte")
            out_meta = raw[pos]
            pos += 1
            out_type = out_meta & 0x7F
            if out_meta & 0x80:
                pos, _ = _tags(raw, pos, size)
        array = in_meta & 0x60
        count = 0
        custom = b""
        if array == ARRAY_FIXED:
            if pos + 2 > size:
                raise TraceLoggingError(f"field {fname!r} lacks its array count")
            count = struct.unpack_from("<H", raw, pos)[0]
            pos += 2
        elif array == CUSTOM:
            if pos + 2 > size:
                raise TraceLoggingError(f"field {fname!r} lacks its custom schema size")
            n = struct.unpack_from("<H", raw, pos)[0]
            if pos + 2 + n > size:
                raise TraceLoggingError(f"field {fname!r} custom schema runs past the schema")
            custom = raw[pos + 2 : pos + 2 + n]
            pos += 2 + n
        in_type = in_meta & 0x1F
        if in_type == STRUCT:
            count = out_type
        fields.append(Field(fname, in_type, out_type, array, count, custom))
    return Schema(name, tags, tuple(fields))


def _tags(raw: bytes, pos: int, end: int) -> tuple[int, int]:
    tags = 0
    while True:
        if pos >= end:
            raise TraceLoggingError("tag bytes run past the schema")
        byte = raw[pos]
        pos += 1
        tags = (tags << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return pos, tags


class _Payload:
    def __init__(self, data: bytes, pointer_size: int) -> None:
        self.data = data
        self.pos = 0
        self.pointer = pointer_size

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TraceLoggingError(
                f"value of {n} bytes at payload offset {self.pos} runs past the payload "
                f"({len(self.data)} bytes)"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def until(self, terminator: bytes, step: int) -> bytes:
        pos = self.pos
        while True:
            if pos + step > len(self.data):
                raise TraceLoggingError(f"unterminated string at payload offset {self.pos}")
            if self.data[pos : pos + step] == terminator:
                out = self.data[self.pos : pos]
                self.pos = pos + step
                return out
            pos += step


OUT_STRING, OUT_BOOLEAN = 2, 3
FILETIME_UNIX_EPOCH = 116_444_736_000_000_000


def _scalar(p: _Payload, f: Field) -> Any:
    """One value, shaped by its OutType where that changes what it is (a boolean, a char)."""
    value = _raw_scalar(p, f)
    if f.out_type == OUT_BOOLEAN and isinstance(value, int):
        return bool(value)
    if f.out_type == OUT_STRING and f.in_type in (3, 4, 5, 6):
        return chr(value & 0xFFFF)
    return value


def _raw_scalar(p: _Payload, f: Field) -> Any:
    t = f.in_type
    if t == 1:
        return p.until(b"\0\0", 2).decode("utf-16-le", "replace")
    if t == 2:
        return p.until(b"\0", 1).decode("latin-1")
    if t == 13:
        return bool(p.unpack("<i"))
    if t == 15:
        return str(uuid.UUID(bytes_le=p.take(16)))
    if t == 16:
        return p.unpack("<Q" if p.pointer == 8 else "<I")
    if t in FIXED_SIZES:
        return p.unpack(FIXED_SIZES[t])
    if t == 14 or t == 25:
        return p.take(p.unpack("<H")).hex()
    if t == 17:
        return (p.unpack("<q") - FILETIME_UNIX_EPOCH) * 100
    if t == 18:
        year, month, _dow, day, hour, minute, second, ms = struct.unpack("<8H", p.take(16))
        return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{ms:03d}"
    if t == 19:
        head = p.take(8)
        sub = head[1]
        return (head + p.take(4 * sub)).hex()
    if t == 22:
        return p.take(p.unpack("<H")).decode("utf-16-le", "replace")
    if t == 23:
        return p.take(p.unpack("<H")).decode("latin-1")
    raise TraceLoggingError(f"field {f.name!r}: unknown in-type {t}")


def _values(
    p: _Payload, fields: tuple[Field, ...], start: int, end: int, depth: int
) -> tuple[dict, int]:
    """Read ``end`` top-level fields from ``fields[start:]``: (values, index after them)."""
    if depth > MAX_DEPTH:
        raise TraceLoggingError(f"structs nested deeper than {MAX_DEPTH}")
    out: dict[str, Any] = {}
    i = start
    read = 0
    while i < len(fields) and read < end:
        f = fields[i]
        if f.array == CUSTOM:
            out[f.name] = p.take(p.unpack("<H")).hex()
            i += 1
        elif f.in_type == STRUCT:
            count = f.array and (f.count if f.array == ARRAY_FIXED else p.unpack("<H"))
            members_end = _skip(fields, i + 1, f.count)
            if f.array:
                items = []
                for _ in range(count):
                    value, _ = _values(p, fields, i + 1, f.count, depth + 1)
                    items.append(value)
                out[f.name] = items
            else:
                out[f.name], _ = _values(p, fields, i + 1, f.count, depth + 1)
            i = members_end
        elif f.array:
            count = f.count if f.array == ARRAY_FIXED else p.unpack("<H")
            out[f.name] = [_scalar(p, f) for _ in range(count)]
            i += 1
        else:
            out[f.name] = _scalar(p, f)
            i += 1
        read += 1
    return out, i


def _skip(fields: tuple[Field, ...], i: int, members: int) -> int:
    """Index after a struct's ``members`` fields (members may be structs themselves)."""
    for _ in range(members):
        if i >= len(fields):
            raise TraceLoggingError("struct declares more members than the schema has fields")
        f = fields[i]
        i = _skip(fields, i + 1, f.count) if f.in_type == STRUCT else i + 1
    return i


def decode(schema_item: bytes, payload: bytes, pointer_size: int = 8) -> tuple[str, dict[str, Any]]:
    """(event name, field values) of one TraceLogging event; the payload must be used up.

    Events of a flat schema (numbers and counted binaries) are read by its :func:`_plan`;
    the field-by-field walk, the reference, reads the others and any payload the plan does
    not fit exactly (and so names its fault), and every event with
    ``WSKREPLAY_PURE_PYTHON=1``."""
    raw = bytes(schema_item)
    schema = parse_schema(raw)
    plan = None if reference_asked() else _plan(raw)
    if plan is not None:
        values = _run_plan(plan, bytes(payload))
        if values is not None:
            return schema.name, values
    return decode_reference(schema, payload, pointer_size)


def decode_reference(
    schema: Schema, payload: bytes, pointer_size: int = 8
) -> tuple[str, dict[str, Any]]:
    """``decode`` a field at a time."""
    p = _Payload(bytes(payload), pointer_size)
    values, _ = _values(p, schema.fields, 0, len(schema.fields), 0)
    if p.pos != len(p.data):
        raise TraceLoggingError(
            f"event {schema.name!r}: {len(p.data) - p.pos} payload bytes left after the last field"
        )
    return schema.name, values


_COUNTED = (14, 25)
"""In-types of binaries counted by a u16 before them, read as hex."""


@lru_cache(maxsize=4096)
def _plan(raw: bytes) -> tuple[tuple[struct.Struct | None, tuple[str, ...]], ...] | None:
    """A flat schema's reading as steps: a ``struct`` over a run of numbers (and their
    names), or None and one name for a counted binary. None for any other schema: arrays,
    structs, strings, pointers, booleans, chars."""
    steps: list[tuple[struct.Struct | None, tuple[str, ...]]] = []
    run_format, run_names = "<", []
    for f in parse_schema(raw).fields:
        if f.array or f.out_type in (OUT_BOOLEAN, OUT_STRING):
            return None
        if f.in_type in FIXED_SIZES and f.in_type != 13:
            run_format += FIXED_SIZES[f.in_type][1:]
            run_names.append(f.name)
        elif f.in_type in _COUNTED:
            if run_names:
                steps.append((struct.Struct(run_format), tuple(run_names)))
                run_format, run_names = "<", []
            steps.append((None, (f.name,)))
        else:
            return None
    if run_names:
        steps.append((struct.Struct(run_format), tuple(run_names)))
    return tuple(steps)


def _run_plan(
    plan: tuple[tuple[struct.Struct | None, tuple[str, ...]], ...], data: bytes
) -> dict[str, Any] | None:
    """The values ``plan`` reads from ``data``, or None where it does not fit exactly."""
    out: dict[str, Any] = {}
    pos, end = 0, len(data)
    for run, names in plan:
        if run is None:
            if pos + 2 > end:
                return None
            n = data[pos] | data[pos + 1] << 8
            pos += 2
            if pos + n > end:
                return None
            out[names[0]] = data[pos : pos + n].hex()
            pos += n
            continue
        if pos + run.size > end:
            return None
        for name, value in zip(names, run.unpack_from(data, pos), strict=True):
            out[name] = value
        pos += run.size
    return out if pos == end else None


def encode_traits(provider: str) -> bytes:
    """A provider-traits item holding the provider's name (no further traits)."""
    body = provider.encode() + b"\0"
    return struct.pack("<H", 2 + len(body)) + body


def encode_schema(event: str, fields: list[tuple[str, int]]) -> bytes:
    """An event-schema item: no tags, the event name, then (field name, in-type) pairs.

    Only scalar fields and variable-length in-types (strings, binary) are written: what a
    driver's recording events need."""
    body = b"\0" + event.encode() + b"\0"
    for name, in_type in fields:
        body += name.encode() + b"\0" + bytes([in_type])
    return struct.pack("<H", 2 + len(body)) + body


def encode_payload(fields: list[tuple[str, int]], values: list[Any]) -> bytes:
    """Field values in schema order, encoded as :func:`decode` reads them."""
    out = bytearray()
    for (name, in_type), value in zip(fields, values, strict=True):
        if in_type in FIXED_SIZES:
            out += struct.pack(FIXED_SIZES[in_type], value)
        elif in_type == 1:
            out += str(value).encode("utf-16-le") + b"\0\0"
        elif in_type == 2:
            out += str(value).encode("latin-1") + b"\0"
        elif in_type in (14, 25):
            out += struct.pack("<H", len(value)) + bytes(value)
        elif in_type == 15:
            out += uuid.UUID(str(value)).bytes_le
        else:
            raise ValueError(f"field {name!r}: in-type {in_type} is not encodable here")
    return bytes(out)
