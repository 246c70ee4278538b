"""The recording contract: the TraceLogging events an instrumented driver emits.

One provider, ``WskReplay.Recorder``, whose GUID is derived from its name by the standard
ETW name hash (the one EventSource and TraceLoggingDynamic use), so tools can find it by
name alone. Every event starts with ``SchemaVersion`` (uint8): this module reads major
version 1 and refuses a newer one with a clear error. docs/etw-schema.md is the
human-readable form of the tables below; the C header in instrument/ emits exactly these.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from wskreplay.errors import InputError
from wskreplay.formats import tracelogging as tl
from wskreplay.formats.etl import EtlEvent

PROVIDER_NAME = "WskReplay.Recorder"
SCHEMA_VERSION = 1

_ETW_NAMESPACE = bytes.fromhex("482C2DB2C39047C887F81A15BFC130FB")

U8, U16, U32, U64, BINARY, HEX64 = 4, 6, 8, 10, 14, 21

EVENTS: dict[str, list[tuple[str, int]]] = {
    "SocketConnected": [
        ("SchemaVersion", U8),
        ("Socket", HEX64),
        ("Category", U32),
        ("Family", U16),
        ("LocalAddress", BINARY),
        ("RemoteAddress", BINARY),
        ("Origin", U8),
    ],
    "SendExIssued": [
        ("SchemaVersion", U8),
        ("Socket", HEX64),
        ("Irp", HEX64),
        ("Flags", U32),
        ("Offset", U32),
        ("Length", U64),
        ("ControlInfoPresent", U8),
        ("ControlInfo", BINARY),
        ("PayloadLength", U64),
        ("Payload", BINARY),
        ("QpcEntry", U64),
        ("QpcReturn", U64),
        ("Status", U32),
        ("Irql", U8),
    ],
    "SendExCompleted": [
        ("SchemaVersion", U8),
        ("Irp", HEX64),
        ("Status", U32),
        ("Information", U64),
    ],
    "Disconnect": [("SchemaVersion", U8), ("Socket", HEX64), ("Flags", U32), ("Status", U32)],
    "Close": [("SchemaVersion", U8), ("Socket", HEX64)],
}
"""Event name -> ordered (field name, TraceLogging in-type) pairs."""

ORIGINS = {1: "connect", 2: "socket-connect", 3: "accept"}
MAX_SEND_LENGTH = 1 << 32
"""Resource limit: the largest Length one SendExIssued may claim (4 GiB; an MDL's byte
count is a ULONG). A trace's streams are sized from these lengths."""
MAX_PAYLOAD_CAPTURE = 0xFFFF
"""A TraceLogging binary field holds at most 65,535 bytes: the payload cap's upper bound.
Bytes past the cap come from the packet capture."""


def provider_guid(name: str) -> str:
    """The ETW provider GUID for ``name``: SHA-1 over a fixed namespace and the upper-cased
    name in UTF-16BE, first 16 bytes, version nibble 5, read as a little-endian GUID."""
    digest = bytearray(
        hashlib.sha1(_ETW_NAMESPACE + name.upper().encode("utf-16-be")).digest()[:16]
    )
    digest[7] = (digest[7] & 0x0F) | 0x50
    return str(uuid.UUID(bytes_le=bytes(digest)))


PROVIDER_GUID = provider_guid(PROVIDER_NAME)


@dataclass(frozen=True)
class RecorderEvent:
    """One decoded contract event: its name, UTC time and fields (by the names above)."""

    name: str
    ts_ns: int
    fields: dict[str, Any]


def decode(
    name: str, fields: dict[str, Any], ts_ns: int, *, path: str | None, offset: int | None
) -> RecorderEvent:
    """Check a decoded TraceLogging event against the contract."""
    if name not in EVENTS:
        raise InputError(
            path,
            f"{PROVIDER_NAME} event {name!r} is not in schema version {SCHEMA_VERSION}",
            offset,
        )
    version = fields.get("SchemaVersion")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputError(
            path,
            f"{PROVIDER_NAME} event {name!r} has schema version {version}; "
            f"this wskreplay reads version {SCHEMA_VERSION}: upgrade wskreplay",
            offset,
        )
    missing = [f for f, _ in EVENTS[name] if f not in fields]
    if missing:
        raise InputError(path, f"{PROVIDER_NAME} event {name!r} lacks fields {missing}", offset)
    values = dict(fields)
    for key in ("ControlInfo", "Payload", "LocalAddress", "RemoteAddress"):
        if key in values:
            values[key] = bytes.fromhex(values[key])
    if name == "SendExIssued":
        _check_send(values, path, offset)
    return RecorderEvent(name, ts_ns, values)


def _check_send(values: dict[str, Any], path: str | None, offset: int | None) -> None:
    length, present, payload = values["Length"], values["PayloadLength"], values["Payload"]
    if length > MAX_SEND_LENGTH:
        raise InputError(
            path,
            f"SendExIssued claims Length {length}, above the {MAX_SEND_LENGTH}-byte limit "
            "for one send",
            offset,
        )
    if present > length or len(payload) > present:
        raise InputError(
            path,
            f"SendExIssued carries {len(payload)} payload bytes and PayloadLength {present} "
            f"for Length {length}: expected Payload <= PayloadLength <= Length",
            offset,
        )


def encode_values(name: str, values: dict[str, Any]) -> list[Any]:
    """Field values in schema order (with SchemaVersion), ready for the TraceLogging encoder."""
    full = {"SchemaVersion": SCHEMA_VERSION, **values}
    return [full[field] for field, _ in EVENTS[name]]


def write_event(writer: Any, ns: int, name: str, **values: Any) -> None:
    """Emit one contract event through an :class:`~wskreplay.formats.etl_writer.EtlWriter`."""
    writer.tracelogging(
        ns, PROVIDER_NAME, PROVIDER_GUID, name, EVENTS[name], encode_values(name, values)
    )


def fields_consistent() -> bool:
    """Every field has an in-type the TraceLogging encoder and decoder both handle."""
    return all(t in tl.FIXED_SIZES or t == BINARY for fields in EVENTS.values() for _, t in fields)


def from_etl_event(ev: EtlEvent, path: str | None) -> RecorderEvent | None:
    """The contract event an ETL record holds, or None when it is another provider's."""
    if ev.provider_guid != PROVIDER_GUID:
        return None
    items = {x.type: x.data for x in ev.extended}
    if tl.EXT_SCHEMA not in items:
        raise InputError(
            path,
            f"buffer at {ev.buffer_offset}: {PROVIDER_NAME} event without TraceLogging metadata",
            ev.record_offset,
        )
    try:
        name, fields = tl.decode(items[tl.EXT_SCHEMA], ev.payload, ev.pointer_size)
    except tl.TraceLoggingError as exc:
        raise InputError(
            path, f"buffer at {ev.buffer_offset}: TraceLogging: {exc}", ev.record_offset
        ) from None
    return decode(name, fields, ev.ts_ns, path=path, offset=ev.record_offset)


def read_recorder_events(path: str) -> list[RecorderEvent]:
    """The contract events of an ``.etl``, in time order (other providers are skipped)."""
    from wskreplay.formats.etl import EtlFile

    events = (from_etl_event(ev, path) for ev in EtlFile(path).events())
    return [e for e in events if e is not None]
