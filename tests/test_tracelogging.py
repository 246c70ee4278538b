"""TraceLogging decoding of the shared samples: every payload consumed exactly."""

from __future__ import annotations

import struct

import pytest

from wskreplay.formats import tracelogging as tl
from wskreplay.formats.etl import EtlFile

from .conftest import SHARED_DATA


def tracelogging_events(name: str):
    for ev in EtlFile(SHARED_DATA / "etl" / name).events():
        items = {x.type: x.data for x in ev.extended}
        if tl.EXT_SCHEMA in items:
            yield ev, items


def test_every_tracelogging_event_of_the_samples_decodes_exactly():
    names = set()
    decoded = 0
    for path in sorted((SHARED_DATA / "etl").glob("*")):
        if "diaghub" in path.name:
            continue
        for ev, items in tracelogging_events(path.name):
            event, fields = tl.decode(items[tl.EXT_SCHEMA], ev.payload, ev.pointer_size)
            provider = tl.provider_name(items[tl.EXT_TRAITS]) if tl.EXT_TRAITS in items else None
            names.add((provider, event))
            decoded += 1
    assert decoded >= 100
    assert {
        ("MySource", "TestEvent"),
        ("AmsiTrace", "AmsiScript"),
        ("solar_system", "PrimitiveTypesTest"),
    } <= names


def test_primitive_types_decode_to_what_their_names_announce():
    (ev, items), *_ = tracelogging_events("perfview__primitive-types.etl.zip")
    name, f = tl.decode(items[tl.EXT_SCHEMA], ev.payload, ev.pointer_size)
    assert name == "PrimitiveTypesTest"
    assert f["string_type"] == "Mercury" and f["boolean_type"] is False and f["char_type"] == "M"
    assert (f["int16_type"], f["int32_type"], f["uint16_type"], f["uint32_type"]) == (
        -51,
        -102,
        51,
        102,
    )
    assert f["uint64_type"] == 204
    # Its producer declared int64_type with in-type UINT64: the bits are those of -204.
    assert f["int64_type"] - (1 << 64) == -204
    assert f["guid_type"] == "0ad614c4-0ef4-4225-8013-f44f37cb0397"
    # The same instant twice: FILETIME (as UTC ns) and SYSTEMTIME.
    assert f["file_time_type"] == 1_631_199_575_799_000_000
    assert f["system_time_type"] == "2021-09-09T14:59:35.799"


def _schema(name: str, fields: list[bytes]) -> bytes:
    body = b"\0" + name.encode() + b"\0" + b"".join(fields)
    return struct.pack("<H", 2 + len(body)) + body


def test_arrays_structs_and_counted_types():
    schema = _schema(
        "E",
        [
            b"fixed\0" + bytes([0x20 | 8]) + struct.pack("<H", 3),
            b"var\0" + bytes([0x40 | 5]),
            b"point\0" + bytes([0x80 | 24, 2]),
            b"x\0" + bytes([7]),
            b"y\0" + bytes([7]),
            b"name\0" + bytes([22]),
            b"blob\0" + bytes([14]),
        ],
    )
    payload = (
        struct.pack("<3I", 1, 2, 3)
        + struct.pack("<Hhh", 2, -1, -2)
        + struct.pack("<ii", 10, 20)
        + struct.pack("<H", 4)
        + "hé".encode("utf-16-le")
        + struct.pack("<H", 2)
        + b"\xab\xcd"
    )
    name, f = tl.decode(schema, payload)
    assert f == {
        "fixed": [1, 2, 3],
        "var": [-1, -2],
        "point": {"x": 10, "y": 20},
        "name": "hé",
        "blob": "abcd",
    }


@pytest.mark.parametrize(
    "schema, payload, what",
    [
        (_schema("E", [b"a\0" + bytes([7])]), b"\1\0", "runs past the payload"),
        (_schema("E", [b"a\0" + bytes([7])]), b"\1\0\0\0\0", "payload bytes left"),
        (_schema("E", [b"a\0"]), b"", "has no type byte"),
        (b"\x40\x00\x00E\0", b"", "claims 64 bytes"),
        (
            _schema("E", [b"s\0" + bytes([0x80 | 24, 5]), b"x\0" + bytes([7])]),
            b"\0\0\0\0",
            "more members",
        ),
    ],
)
def test_malformed_metadata_and_payloads(schema, payload, what):
    with pytest.raises(tl.TraceLoggingError, match=what):
        tl.decode(schema, payload)
