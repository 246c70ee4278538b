"""The recording contract: provider GUID by name hash, events through a real ETL file."""

from __future__ import annotations

import re

import pytest

from wskreplay.errors import InputError
from wskreplay.formats.etl_writer import EtlWriter
from wskreplay.formats.tracelogging import EXT_TRAITS, provider_name
from wskreplay.recorder import etw_schema as schema

from .conftest import REPO, SHARED_DATA

T0 = 1_767_225_600_000_000_000


@pytest.mark.parametrize(
    "name, etl",
    [
        ("MySource", "perfview__SelfDescribingSingleEvent.etl"),
        ("Microsoft.Windows.UpdateReserveManager", "pyetwkit__sample.etl"),
    ],
)
def test_name_hash_matches_providers_in_real_recordings(name, etl):
    from wskreplay.formats.etl import EtlFile

    guids = {
        ev.provider_guid
        for ev in EtlFile(SHARED_DATA / "etl" / etl).events()
        if any(x.type == EXT_TRAITS and provider_name(x.data) == name for x in ev.extended)
    }
    assert guids == {schema.provider_guid(name)}


def test_every_event_round_trips_through_an_etl(tmp_path):
    path = tmp_path / "r.etl"
    sent = {
        "SocketConnected": dict(
            Socket=0xFFFFB00000100000,
            Category=2,
            Family=2,
            LocalAddress=bytes(16),
            RemoteAddress=b"\x02\x00\x01\xbd" + bytes(12),
            Origin=1,
        ),
        "SendExIssued": dict(
            Socket=0xFFFFB00000100000,
            Irp=0xFFFFC00012340000,
            Flags=2,
            Offset=16,
            Length=1000,
            ControlInfoPresent=1,
            ControlInfo=b"\x14" + bytes(19),
            PayloadLength=1000,
            Payload=bytes(range(200)),
            QpcEntry=5,
            QpcReturn=9,
            Status=0x103,
            Irql=2,
        ),
        "SendExCompleted": dict(Irp=0xFFFFC00012340000, Status=0, Information=1000),
        "Disconnect": dict(Socket=0xFFFFB00000100000, Flags=0, Status=0),
        "Close": dict(Socket=0xFFFFB00000100000),
    }
    with open(path, "w+b") as f:
        w = EtlWriter(f, start_ns=T0)
        for i, (name, values) in enumerate(sent.items()):
            schema.write_event(w, T0 + 1000 * (i + 1), name, **values)
        w.close()
    events = schema.read_recorder_events(str(path))
    assert [e.name for e in events] == list(sent)
    for ev, (name, values) in zip(events, sent.items(), strict=True):
        assert ev.fields == {"SchemaVersion": 1, **values}, name
    assert [e.ts_ns for e in events] == [T0 + 1000 * (i + 1) for i in range(5)]


def _one_event(tmp_path, name, fields, values):
    path = tmp_path / "v.etl"
    with open(path, "w+b") as f:
        w = EtlWriter(f, start_ns=T0)
        w.tracelogging(T0 + 100, schema.PROVIDER_NAME, schema.PROVIDER_GUID, name, fields, values)
        w.close()
    return str(path)


def test_a_newer_schema_version_is_refused(tmp_path):
    path = _one_event(tmp_path, "Close", schema.EVENTS["Close"], [2, 7])
    with pytest.raises(InputError, match="schema version 2; this wskreplay reads version 1"):
        schema.read_recorder_events(path)


@pytest.mark.parametrize(
    "name, fields, values, what",
    [
        ("Teleport", [("SchemaVersion", 4)], [1], "is not in schema version 1"),
        ("Close", [("SchemaVersion", 4)], [1], "lacks fields ['Socket']"),
    ],
)
def test_unknown_events_and_missing_fields(tmp_path, name, fields, values, what):
    with pytest.raises(InputError, match=re.escape(what)):
        schema.read_recorder_events(_one_event(tmp_path, name, fields, values))


def test_the_documented_contract_is_the_code():
    doc = (REPO / "docs" / "etw-schema.md").read_text()
    assert schema.PROVIDER_NAME in doc and schema.PROVIDER_GUID in doc
    in_types = {4: "UINT8", 6: "UINT16", 8: "UINT32", 10: "UINT64", 14: "BINARY", 21: "HEXINT64"}
    for event, fields in schema.EVENTS.items():
        section = doc.split(f"### {event}\n", 1)[1].split("\n### ", 1)[0]
        rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", section, re.M)
        assert rows == [(f, in_types[t]) for f, t in fields], event
