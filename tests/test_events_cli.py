"""`wskreplay events` run as a subprocess on the shared ETL files."""

from __future__ import annotations

import json
import struct

from wskreplay.formats.etl import EtlFile

from .conftest import SHARED_DATA, assert_one_line_error, run_cli

ETL = SHARED_DATA / "etl"
SUMMARY_KEYS = {
    "os_build",
    "pointer_size",
    "clock",
    "start_ns",
    "end_ns",
    "events",
    "events_lost",
    "buffers",
    "compressed_buffers",
    "by_provider",
}


def test_summary_json():
    proc = run_cli("events", str(ETL / "pyetwkit__sample.etl"), "--summary", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert SUMMARY_KEYS <= doc.keys()
    assert doc["events"] == 149 == sum(row["count"] for row in doc["by_provider"])
    assert (doc["buffers"], doc["compressed_buffers"], doc["os_build"]) == (8, 7, "10.0.22631")
    names = {row["provider"] for row in doc["by_provider"]}
    assert "SetupPlatformTel" in names


def test_event_lines_decode_tracelogging_and_keep_other_payloads():
    proc = run_cli("events", str(ETL / "perfview__primitive-types.etl.zip"), "--json")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and len(rows) == sum(
        1 for _ in EtlFile(ETL / "perfview__primitive-types.etl.zip").events()
    )
    decoded = [r for r in rows if r["name"] == "PrimitiveTypesTest"]
    assert len(decoded) == 5 and all(
        r["provider"] == "solar_system" and "payload_hex" not in r for r in decoded
    )
    assert all(r["fields"] is None and "payload_hex" in r for r in rows if r["name"] is None)


def test_filters():
    path = str(ETL / "demikernel__PktMon.etl")
    by_name = run_cli(
        "events", path, "--json", "--provider", "microsoft-windows-pktmon", "--id", "160"
    )
    by_guid = run_cli(
        "events",
        path,
        "--json",
        "--provider",
        "{4D4F80D9-C8BD-4D73-BB5B-19C90402C5AC}",
        "--id",
        "160",
    )
    assert by_name.stdout == by_guid.stdout and len(by_name.stdout.splitlines()) == 114
    limited = run_cli("events", path, "--json", "--id", "160", "--limit", "7")
    assert len(limited.stdout.splitlines()) == 7


def test_bad_input(tmp_path):
    empty = tmp_path / "empty.etl"
    empty.write_bytes(b"")
    assert_one_line_error(run_cli("events", str(empty), "--summary"), str(empty), "empty file")
    data = (ETL / "krabsetw__powershell.etl").read_bytes()
    cut = tmp_path / "cut.etl"
    cut.write_bytes(data[:-1000])
    assert_one_line_error(
        run_cli("events", str(cut), "--json"), str(cut), "runs past the end of the file"
    )
    assert_one_line_error(
        run_cli("events", str(ETL / "perfview__diaghub-dotnetcore3.1-win-x64-diagsession.zip")),
        "exactly one .etl",
    )


def test_damaged_compressed_buffer_reports_what_came_before(tmp_path):
    pktmon = ETL / "demikernel__PktMon.etl"
    etl = EtlFile(pktmon)
    last = etl.buffers[-1]
    assert last.compressed
    data = bytearray(pktmon.read_bytes())
    struct.pack_into("<I", data, last.offset + 0x30, last.fill + 800)
    path = tmp_path / "liar.etl"
    path.write_bytes(bytes(data))
    proc = run_cli("events", str(path), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"offset {last.offset}: compressed buffer" in line
    assert run_cli("events", str(path), "--json", "--partial-ok").returncode == 1


def _tl_log(tmp_path, schema_fields, payload_values, *, break_schema=False, break_item=False):
    from wskreplay.formats import tracelogging as tl
    from wskreplay.formats.etl_writer import EtlWriter

    path = tmp_path / "tl.etl"
    with open(path, "w+b") as f:
        w = EtlWriter(f, start_ns=1_767_225_600_000_000_000, buffer_size=4096)
        for i in range(3):
            schema = tl.encode_schema("E", schema_fields)
            if break_schema and i == 2:
                schema = struct.pack("<H", len(schema) + 40) + schema[2:]
            extended = [(tl.EXT_SCHEMA, schema), (tl.EXT_TRAITS, tl.encode_traits("P"))]
            w.event(
                1_767_225_600_000_000_000 + i,
                "11111111-2222-3333-4444-555555555555",
                channel=11,
                extended=extended,
                payload=tl.encode_payload(schema_fields, payload_values),
            )
        w.close()
    if break_item:
        data = bytearray(path.read_bytes())
        etl = EtlFile(path)
        buf, pos, _size, _kind = list(etl._records(etl.buffers[1]))[2]
        struct.pack_into("<H", data, etl.buffers[1].offset + pos + 0x50 + 6, 4000)
        path.write_bytes(bytes(data))
    return path


def test_a_schema_running_past_its_item_is_an_error_after_the_events_before_it(tmp_path):
    path = _tl_log(tmp_path, [("a", 8)], [7], break_schema=True)
    proc = run_cli("events", str(path), "--json")
    assert proc.returncode == 2
    assert len(proc.stdout.splitlines()) == 3  # the header record and two good events
    (line,) = proc.stderr.strip().splitlines()
    assert str(path) in line and "buffer at" in line and "TraceLogging: event schema claims" in line
    assert run_cli("events", str(path), "--json", "--partial-ok").returncode == 1


def test_an_extended_item_running_past_its_record(tmp_path):
    path = _tl_log(tmp_path, [("a", 8)], [7], break_item=True)
    proc = run_cli("events", str(path), "--json")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "extended item of 4000 bytes runs past its record" in line
