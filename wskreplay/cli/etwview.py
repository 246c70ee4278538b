"""What ``wskreplay events`` prints: ETL events and summaries as plain data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from wskreplay.errors import InputError
from wskreplay.formats import tracelogging as tl
from wskreplay.formats.etl import WPP_MESSAGE, EtlEvent, EtlFile

KNOWN_PROVIDERS = {
    "4d4f80d9-c8bd-4d73-bb5b-19c90402c5ac": "Microsoft-Windows-PktMon",
    "2ed6006e-4729-4609-b423-3ee7bcd678ef": "Microsoft-Windows-NDIS-PacketCapture",
    "bbccf6c1-6cd1-48c4-80ff-839482e37671": "Microsoft-Windows-EventMetadata",
    "9b79ee91-b5fd-41c0-a243-4248e266e9d0": "EventTraceEvent",
    "2f07e2ee-15db-40f1-90ef-9d7ba282188a": "Microsoft-Windows-TCPIP",
    "9a280ac0-c8e0-11d1-84e2-00c04fb998a2": "TcpIp (kernel)",
}


def _decoded(ev: EtlEvent) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """(provider name, event name, fields) from TraceLogging metadata, where the event has it."""
    items = {x.type: x.data for x in ev.extended}
    provider = KNOWN_PROVIDERS.get(ev.provider_guid or "")
    if tl.EXT_TRAITS in items:
        provider = tl.provider_name(items[tl.EXT_TRAITS])
    if tl.EXT_SCHEMA not in items:
        return provider, None, None
    name, fields = tl.decode(items[tl.EXT_SCHEMA], ev.payload, ev.pointer_size)
    return provider, name, fields


def event_record(ev: EtlEvent, path: str) -> dict[str, Any]:
    """One event as JSON-ready data; a TraceLogging event that does not decode is damage."""
    try:
        provider, name, fields = _decoded(ev)
    except tl.TraceLoggingError as exc:
        raise InputError(
            path, f"buffer at {ev.buffer_offset}: TraceLogging: {exc}", ev.record_offset
        ) from None
    record = {
        "ts_ns": ev.ts_ns if ev.header_type != WPP_MESSAGE else None,
        "provider": provider,
        "provider_guid": ev.provider_guid,
        "id": ev.id,
        "version": ev.version,
        "opcode": ev.opcode,
        "level": ev.level,
        "task": ev.task,
        "keyword": ev.keyword,
        "pid": ev.pid,
        "tid": ev.tid,
        "name": name,
        "fields": fields,
    }
    if fields is None:
        record["payload_hex"] = ev.payload.hex()
    return record


def matches(ev: EtlEvent, provider: str | None, event_id: int | None) -> bool:
    if event_id is not None and ev.id != event_id:
        return False
    if provider is None:
        return True
    wanted = provider.strip("{}").lower()
    if ev.provider_guid == wanted:
        return True
    name = KNOWN_PROVIDERS.get(ev.provider_guid or "")
    traits = next((x.data for x in ev.extended if x.type == tl.EXT_TRAITS), None)
    if traits is not None:
        try:
            name = tl.provider_name(traits)
        except tl.TraceLoggingError:
            pass
    return name is not None and name.lower() == wanted


def selected_events(
    etl: EtlFile, provider: str | None, event_id: int | None, limit: int | None
) -> Iterator[EtlEvent]:
    shown = 0
    for ev in etl.events():
        if limit is not None and shown >= limit:
            return
        if matches(ev, provider, event_id):
            shown += 1
            yield ev


def etl_summary(etl: EtlFile) -> dict[str, Any]:
    counts, first = etl.count_records()
    names: dict[str | None, str | None] = {}
    for guid, ev in first.items():
        try:
            names[guid] = _decoded(ev)[0]
        except tl.TraceLoggingError:
            names[guid] = KNOWN_PROVIDERS.get(guid or "")
    h = etl.header
    return {
        "file": etl.path,
        "os_build": h.os_build,
        "pointer_size": h.pointer_size,
        "clock": h.clock,
        "start_ns": h.start_ns,
        "end_ns": h.end_ns,
        "events": sum(counts.values()),
        "events_lost": h.events_lost,
        "buffers": len(etl.buffers),
        "compressed_buffers": sum(b.compressed for b in etl.buffers),
        "by_provider": [
            {"provider_guid": guid, "provider": names.get(guid), "id": eid, "count": n}
            for (guid, eid), n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ],
    }
