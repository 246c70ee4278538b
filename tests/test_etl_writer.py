"""ETL files written by wskreplay read back by our reader and by etl-parser."""

from __future__ import annotations

import etl.etl as etl_parser
import pytest

from wskreplay.formats.etl import EVENT_64, EtlFile
from wskreplay.formats.etl_packets import etl_frames
from wskreplay.formats.etl_writer import EtlWriter
from wskreplay.formats.tracelogging import EXT_SCHEMA, EXT_TRAITS, decode, provider_name

T0 = 1_767_225_600_000_000_000
GUID = "0b8e9a6f-2a5d-5f3c-9d1e-7c4b2a1f0e9d"
FIELDS = [
    ("Socket", 10),
    ("Irp", 10),
    ("Flags", 8),
    ("Length", 9),
    ("Status", 8),
    ("Payload", 14),
    ("Name", 1),
]


def _write(path, *, compress: bool, n: int = 400) -> list[list]:
    written = []
    with open(path, "w+b") as f:
        w = EtlWriter(f, start_ns=T0, buffer_size=4096, compress=compress)
        for i in range(n):
            values = [
                0xFFFF800000001000 + i,
                0xFFFFC00000002000 + 8 * i,
                i % 3,
                100 * i,
                0x103 if i % 5 else 0,
                bytes((i * 7 + k) % 256 for k in range(i % 64)),
                f"s{i}",
            ]
            w.tracelogging(T0 + 1000 * i, "WskReplay.Test", GUID, "SendEx", FIELDS, values)
            w.pktmon_packet(
                T0 + 1000 * i + 400, i, b"\x02" * 12 + b"\x08\x00" + bytes([i % 256]) * 50, dirtag=4
            )
            written.append(values)
        w.close()
    return written


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_through_our_reader(tmp_path, compress):
    path = tmp_path / "w.etl"
    written = _write(path, compress=compress)
    etl = EtlFile(path)
    assert sum(b.compressed for b in etl.buffers) == (len(etl.buffers) - 1 if compress else 0)
    decoded = []
    for ev in etl.events():
        items = {x.type: x.data for x in ev.extended}
        if EXT_SCHEMA in items:
            assert provider_name(items[EXT_TRAITS]) == "WskReplay.Test" and ev.provider_guid == GUID
            name, fields = decode(items[EXT_SCHEMA], ev.payload)
            assert name == "SendEx"
            decoded.append(fields)
    assert len(decoded) == len(written)
    for fields, values in zip(decoded, written, strict=True):
        expected = dict(zip([f for f, _ in FIELDS], values, strict=True))
        expected["Payload"] = expected["Payload"].hex()
        assert fields == expected
    frames = etl_frames(str(path))
    assert len(frames) == 400 and frames.time_ns[0] == T0 + 400
    assert etl.header.start_ns == T0 and etl.header.end_ns >= T0 + 1000 * 399 + 400


def test_uncompressed_output_reads_identically_in_etl_parser(tmp_path):
    path = tmp_path / "w.etl"
    _write(path, compress=False)
    theirs = []
    parsed = etl_parser.build_from_stream(path.read_bytes())
    for chunk in parsed.chunks:
        for rec in etl_parser.ChunkParser.parse(chunk.payload):
            assert rec.type == "EventRecord"
            theirs.append((rec.value.event_header.event_descriptor.Id, bytes(rec.value.user_data)))
    etl = EtlFile(path)
    ours = [
        (ev.id, ev.payload)
        for b in etl.buffers[1:]
        for ev in etl.buffer_events(b)
        if ev.header_type == EVENT_64
    ]
    assert ours == theirs and len(ours) == 800
