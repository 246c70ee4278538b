"""The ETL reader on every shared .etl, against etl-parser and against the files' own sizes."""

from __future__ import annotations

import collections
import struct
import uuid
import zipfile

import etl.etl as etl_parser
import pytest

from wskreplay.errors import InputError
from wskreplay.formats.etl import BUFFER_HEADER_SIZE, EVENT_32, EVENT_64, EtlFile

from .conftest import SHARED_DATA

ETL_DIR = SHARED_DATA / "etl"
PLAIN = sorted(ETL_DIR.glob("*.etl"))
KIND = {
    0x01: "SystemTraceRecord",
    0x02: "SystemTraceRecord",
    0x03: "SystemTraceRecord",
    0x04: "SystemTraceRecord",
    0x10: "PerfInfoTraceRecord",
    0x11: "PerfInfoTraceRecord",
    0x0A: "TraceRecord",
    0x14: "TraceRecord",
    0x0B: "TraceRecord",
    0x15: "TraceRecord",
    0x100: "WinTraceRecord",
}


def every_etl(tmp_path_factory) -> list:
    """The plain files, and every .etl inside the zip archives (unzipped)."""
    out = list(PLAIN)
    folder = tmp_path_factory.mktemp("unzipped")
    for archive in sorted(ETL_DIR.glob("*.zip")):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.lower().endswith(".etl"):
                    target = folder / f"{archive.stem}--{name.replace('/', '_')}"
                    target.write_bytes(z.read(name))
                    out.append(target)
    return out


def _guid(p) -> str:
    g = p.inner
    return str(
        uuid.UUID(
            fields=(
                g.data1,
                g.data2,
                g.data3,
                g.data4[0],
                g.data4[1],
                int.from_bytes(bytes(g.data4[2:]), "big"),
            )
        )
    )


def etl_parser_counts(path) -> collections.Counter:
    """Records per (provider GUID, event id), or per record kind, as etl-parser sees them.

    etl-parser takes the whole first buffer as the logfile header and reports none of its
    records, and its Event wrapper raises on manifest events, so this walks its raw record
    parser over the buffers it does report."""
    counts: collections.Counter = collections.Counter()
    parsed = etl_parser.build_from_stream(path.read_bytes())
    for chunk in parsed.chunks:
        for rec in etl_parser.ChunkParser.parse(chunk.payload):
            if rec.type == "EventRecord":
                h = rec.value.event_header
                counts[(_guid(h.provider_id), h.event_descriptor.Id)] += 1
            else:
                counts[rec.type] += 1
    return counts


@pytest.mark.parametrize(
    "path",
    [p for p in PLAIN if not any(b.compressed for b in EtlFile(p).buffers)],
    ids=lambda p: p.name,
)
def test_counts_per_provider_and_id_equal_etl_parser(path):
    etl = EtlFile(path)
    ours: collections.Counter = collections.Counter()
    for b in etl.buffers[1:]:
        for ev in etl.buffer_events(b):
            key = (
                (ev.provider_guid, ev.id)
                if ev.header_type in (EVENT_32, EVENT_64)
                else KIND[ev.header_type]
            )
            ours[key] += 1
    theirs = etl_parser_counts(path)
    assert ours == theirs and sum(ours.values()) > 0


def test_every_file_walks_to_its_end_and_every_buffer_inflates_exactly(tmp_path_factory):
    compressed = 0
    events = 0
    for path in every_etl(tmp_path_factory):
        etl = EtlFile(path)
        assert etl.buffers[-1].offset + etl.buffers[-1].size == len(etl._data), path.name
        for b in etl.buffers:
            assert len(etl.buffer_bytes(b)) == b.fill
            compressed += b.compressed
        events += sum(1 for _ in etl.events())
        assert etl.header.pointer_size in (4, 8) and etl.header.clock == "qpc"
    assert compressed >= 360 and events >= 190_000


def test_events_come_out_in_time_order():
    etl = EtlFile(ETL_DIR / "perfview__net.4.5.2.x64.etl.zip")
    stamps = [ev.timestamp for ev in etl.events() if ev.header_type != 0x100]
    assert stamps == sorted(stamps) and len(stamps) > 170_000


def test_logfile_header_facts():
    h = EtlFile(ETL_DIR / "pyetwkit__sample.etl").header
    assert (h.os_build, h.pointer_size, h.clock, h.perf_freq) == (
        "10.0.22631",
        8,
        "qpc",
        10_000_000,
    )
    assert h.start_ns < h.end_ns
    assert (
        EtlFile(ETL_DIR / "perfview__SelfDescribingSingleEvent.etl").header.os_build == "10.0.22000"
    )


def test_event_headers_and_extended_items_are_decoded():
    etl = EtlFile(ETL_DIR / "perfview__SelfDescribingSingleEvent.etl")
    tracelogging = [
        ev for ev in etl.events() if ev.header_type in (EVENT_32, EVENT_64) and ev.channel == 11
    ]
    assert tracelogging
    assert all({item.type for item in ev.extended} >= {11} for ev in tracelogging)


def _damaged(tmp_path, name: str, mutate) -> str:
    data = bytearray((ETL_DIR / "demikernel__PktMon.etl").read_bytes())
    mutate(data)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path)


def test_bad_input_is_a_one_line_error_with_the_offset(tmp_path):
    empty = tmp_path / "empty.etl"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        EtlFile(empty)
    cut = _damaged(tmp_path, "cut.etl", lambda d: d.__delitem__(slice(len(d) - 100, None)))
    with pytest.raises(InputError, match=r"offset \d+: buffer size \d+ runs past the end"):
        EtlFile(cut)
    first = EtlFile(ETL_DIR / "demikernel__PktMon.etl").buffers
    comp = next(b for b in first if b.compressed)

    def lie_about_fill(d):
        struct.pack_into("<I", d, comp.offset + 0x30, comp.fill + 64)

    liar = EtlFile(_damaged(tmp_path, "liar.etl", lie_about_fill))
    with pytest.raises(InputError, match=rf"offset {comp.offset}: compressed buffer"):
        list(liar.events())

    plain = ETL_DIR / "krabsetw__powershell.etl"
    second = EtlFile(plain).buffers[1]
    data = bytearray(plain.read_bytes())
    struct.pack_into("<I", data, second.offset + BUFFER_HEADER_SIZE, 0x12345678)
    garbage = tmp_path / "garbage.etl"
    garbage.write_bytes(bytes(data))
    with pytest.raises(
        InputError, match=rf"offset 72: buffer at {second.offset}: no record header"
    ):
        list(EtlFile(garbage).events())


def test_every_event_lies_between_the_logfile_start_and_end(tmp_path_factory):
    for path in every_etl(tmp_path_factory):
        etl = EtlFile(path)
        h = etl.header
        outside = [
            ev
            for ev in etl.events()
            if ev.header_type != 0x100 and not h.start_ns <= ev.ts_ns <= h.end_ns
        ]
        assert not outside, (path.name, len(outside))


@pytest.mark.parametrize(
    "name",
    ["demikernel__PktMon.etl", "pyetwkit__sample.etl", "perfview__SelfDescribingSingleEvent.etl"],
)
def test_counts_of_compressed_files_equal_etl_parser_on_their_uncompressed_rewrite(tmp_path, name):
    """etl-parser cannot read compressed buffers: the records are rewritten uncompressed by
    our writer (copied byte for byte) and etl-parser counts those."""
    from wskreplay.formats.etl_writer import EtlWriter

    source = EtlFile(ETL_DIR / name)
    assert any(b.compressed for b in source.buffers)
    rewrite = tmp_path / "rewrite.etl"
    ours: collections.Counter = collections.Counter()
    with open(rewrite, "w+b") as f:
        w = EtlWriter(
            f,
            start_ns=source.header.start_ns,
            qpc_start=source.header.header_timestamp,
            qpc_frequency=source.header.perf_freq,
        )
        for info in source.buffers[1:]:
            for buf, pos, size, kind in source._records(info):
                w.raw_record(buf[pos : pos + size])
                ev = source._event(buf, pos, size, kind, info)
                key = (ev.provider_guid, ev.id) if kind in (EVENT_32, EVENT_64) else KIND[kind]
                ours[key] += 1
        w.close()
    assert etl_parser_counts(rewrite) == ours and sum(ours.values()) > 0
