"""The batch pass over ``.etl`` packets (wskreplay/formats/etl_batch.py) gives exactly what
the reference pass gives (``WSKREPLAY_PURE_PYTHON=1``): every frame column, the frames'
bytes, the notes and skipped counts, and every other event handed on in the same order. On
every shared ETL file and on generated recordings of each PktMon layout and NDIS, on one CPU
and on two, and where the batch pass has to hand over to the reference. Its C record walk
finds the records the Python walk finds and stops at the buffer where that one raises; the
C copy of pieces and the planned TraceLogging decode equal their references."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.errors import InputError
from wskreplay.formats import etl_batch, etl_packets, pieces, pktmon, tracelogging
from wskreplay.formats.etl import EtlFile
from wskreplay.formats.etl_writer import EtlWriter
from wskreplay.formats.reference import accelerator
from wskreplay.generators import fieldsim

from .conftest import SHARED_DATA, run_cli
from .etl_outcome import both_passes

SHARED_ETL = sorted((SHARED_DATA / "etl").glob("*"))
NOT_READ = {"perfview__diaghub-dotnetcore3.1-win-x64-diagsession.zip"}
"""Files neither pass reads: an archive of four .etl files (a one-line error)."""


def test_the_accelerators_are_built():
    assert accelerator("_walk") is not None
    assert accelerator("_pieces") is not None


@pytest.mark.parametrize("path", SHARED_ETL, ids=lambda p: p.name)
def test_every_shared_etl_file(path):
    fast, reference, taken = both_passes(path)
    assert fast == reference
    assert taken == (path.name not in NOT_READ)


def recording(
    tmp_path,
    *,
    layout: str = "numbered",
    source: str = "pktmon",
    appearances: int = 2,
    compress: bool = True,
    cpus: int = 1,
    calls: int = 40,
) -> str:
    """A generated field recording; with ``cpus`` > 1 its buffers are dealt round the
    CPUs, so the reference merges several streams by time."""
    rec = fieldsim.field_recording(seed=3, bulk_calls=calls)
    out = io.BytesIO()
    fieldsim.write_field_etl(
        rec,
        out,
        compress=compress,
        appearances=appearances,
        packet_source=source,
        pktmon_layout=layout,
        payload_cap=64,
    )
    path = tmp_path / f"{layout}-{source}-{appearances}-{compress}-{cpus}.etl"
    path.write_bytes(out.getvalue())
    if cpus > 1:
        data = bytearray(path.read_bytes())
        for k, at in enumerate(buffer_offsets(path)):
            data[at + 0x28] = k % cpus
        path.write_bytes(bytes(data))
    return str(path)


def buffer_offsets(path) -> list[int]:
    return [info.offset for info in EtlFile(str(path)).buffers]


@pytest.mark.parametrize(
    "layout, source, appearances, compress, cpus, taken",
    [
        ("numbered", "pktmon", 1, True, 1, True),
        ("numbered", "pktmon", 3, True, 2, True),
        ("numbered", "pktmon", 2, False, 3, True),
        ("described", "pktmon", 1, True, 2, True),
        ("24h2", "pktmon", 1, True, 2, True),
        ("24h2", "pktmon", 1, False, 3, True),
        ("24h2", "pktmon", 3, True, 2, True),
        ("numbered", "ndis", 1, True, 2, True),
    ],
)
def test_generated_recordings(tmp_path, layout, source, appearances, compress, cpus, taken):
    path = recording(
        tmp_path,
        layout=layout,
        source=source,
        appearances=appearances,
        compress=compress,
        cpus=cpus,
    )
    fast, reference, was_taken = both_passes(path)
    assert fast[0] != "error" and len(fast[0]["time_ns"]) > 100
    assert fast == reference
    assert was_taken == taken


def test_a_cpu_going_back_in_time_is_left_to_the_reference(tmp_path):
    """Two full buffers of one CPU swapped: its records go back in time, where the
    reference's merge is not a sort."""
    path = recording(tmp_path, compress=False, calls=80)
    data = bytearray(Path(path).read_bytes())
    starts = buffer_offsets(path)
    size = starts[1] - starts[0]
    a, b = starts[2], starts[3]
    assert starts[4] - b == size
    data[a : a + size], data[b : b + size] = data[b : b + size], data[a : a + size]
    Path(path).write_bytes(bytes(data))
    fast, reference, taken = both_passes(path)
    assert fast == reference
    assert not taken


@pytest.mark.parametrize("changed", [False, True])
def test_a_schema_after_its_events(tmp_path, changed):
    """The reference reads packets of a kind with the layout known at the first of them,
    and reads them all again when a later schema changes it: the batch pass gives the same
    frames when the late schema agrees and hands the file over when it does not."""
    fields = pktmon.PACKET_FIELDS
    if changed:
        fields = (*fields[:-2], ("Extra", 6), *fields[-2:])
    out = io.BytesIO()
    w = EtlWriter(out, start_ns=fieldsim.START_NS)
    frame = bytes(14) + bytes.fromhex("4500002800010000400600007f0000017f000002") + bytes(20)
    for k in range(50):
        w.pktmon_packet(fieldsim.START_NS + k * 1000, k, frame)
    w.event_schema(fieldsim.START_NS + 60_000, pktmon.packet_schema(pktmon.PACKET, fields))
    w.close()
    path = tmp_path / "late-schema.etl"
    path.write_bytes(out.getvalue())
    fast, reference, taken = both_passes(path)
    assert fast == reference
    assert taken != changed


def test_damaged_recordings_give_the_reference_error(tmp_path):
    path = recording(tmp_path, compress=False)
    data = bytearray(Path(path).read_bytes())
    starts = buffer_offsets(path)
    data[starts[2] + 0x48 + 3] = 0x55
    Path(path).write_bytes(bytes(data))
    fast, reference, taken = both_passes(path)
    assert fast == reference and fast[0] == "error"
    assert not taken


def native_records(buf: bytes) -> tuple[list[tuple[int, int, int]], int]:
    rows, bad = accelerator("_walk").etl_records(buf, np.array([0, len(buf)], np.int64).tobytes())
    found = np.frombuffer(rows, np.int64).reshape(-1, 4)
    return [(int(p), int(s), int(k)) for p, s, k, _ in found], bad


def reference_records(etl: EtlFile, buf: bytes) -> tuple[list[tuple[int, int, int]], int]:
    etl.buffer_bytes = lambda info: buf
    try:
        found = [(pos, size, kind) for _, pos, size, kind in etl._records(etl.buffers[0])]
    except InputError:
        return [], 0
    return found, -1


@pytest.mark.parametrize("path", [p for p in SHARED_ETL if p.name not in NOT_READ], ids=str)
def test_the_c_record_walk_on_every_shared_buffer(path):
    etl = EtlFile(str(path))
    for info in etl.buffers:
        buf = bytes(etl.buffer_bytes(info))
        found, bad = native_records(buf)
        assert bad == -1
        assert found == [(p, s, k) for _, p, s, k in etl._records(info)]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_c_record_walk_on_damaged_buffers(data):
    etl = EtlFile(str(SHARED_DATA / "etl" / "demikernel__PktMon.etl"))
    buf = bytearray(etl.buffer_bytes(etl.buffers[data.draw(st.integers(0, 1))]))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0x48, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0x48, len(buf)))
    buf = bytes(buf[:cut])
    assert native_records(buf) == reference_records(etl, buf)


pieces_st = st.lists(
    st.tuples(st.integers(-2, 70), st.integers(-2, 70), st.integers(-2, 30)), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(pieces_st, st.binary(min_size=0, max_size=64))
def test_the_c_copy_equals_the_reference(rows, source):
    to, at, length = (np.array([r[k] for r in rows], np.int64) for k in range(3))
    results = []
    for copy in (pieces.copy, pieces.copy_reference):
        target = bytearray(b"\xee" * 64)
        try:
            copy(target, to, source, at, length)
            results.append(bytes(target))
        except ValueError:
            results.append("outside")
    assert results[0] == results[1]


def test_tracelogging_plans_read_every_recorder_event_as_the_reference(tmp_path):
    path = recording(tmp_path)
    seen = 0
    for ev in EtlFile(path).events():
        items = {x.type: x.data for x in ev.extended}
        if tracelogging.EXT_SCHEMA in items:
            raw = items[tracelogging.EXT_SCHEMA]
            assert tracelogging._plan(raw) is not None
            schema = tracelogging.parse_schema(raw)
            assert tracelogging.decode(raw, ev.payload) == tracelogging.decode_reference(
                schema, ev.payload
            )
            seen += 1
    assert seen > 40


FLAT_TYPES = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 20, 21, 25]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(FLAT_TYPES)), max_size=6),
    st.binary(max_size=48),
)
def test_tracelogging_plans_equal_the_reference_on_any_payload(fields, payload):
    raw = tracelogging.encode_schema("e", fields)
    outcomes = []
    for decode in (
        lambda: tracelogging.decode(raw, payload),
        lambda: tracelogging.decode_reference(tracelogging.parse_schema(raw), payload),
    ):
        try:
            outcomes.append(decode())
        except tracelogging.TraceLoggingError as exc:
            outcomes.append(str(exc))
    assert repr(outcomes[0]) == repr(outcomes[1])  # repr: NaN equals itself


def test_import_writes_the_same_trace_either_way(tmp_path):
    path = recording(tmp_path, cpus=2, calls=60)
    traces = []
    for pure in ("0", "1"):
        out = tmp_path / f"out-{pure}.wskt"
        with pytest.MonkeyPatch.context() as m:
            m.setenv("WSKREPLAY_PURE_PYTHON", pure)
            proc = run_cli("import", "--no-progress", path, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        traces.append(out.read_bytes())
    assert traces[0] == traces[1]


def test_the_batch_pass_is_left_for_files_of_few_packets():
    """The policy: a first batch with fewer than 1 in PACKET_SHARE packet events goes to the
    reference pass (demikernel's recording: 114 packet events of 450 records)."""
    etl = EtlFile(str(SHARED_DATA / "etl" / "demikernel__PktMon.etl"))
    assert etl_batch.PACKET_SHARE == 2
    assert not etl_batch.read(etl.path, etl, None, None, None)


def test_numbered_ids_open_a_packet_per_group_and_span():
    """In time order (the batch pass's condition), a group's appearance exactly the span
    after its last is the same packet; one nanosecond later, a new one."""
    span = pktmon.NUMBERED_SPAN_NS
    group = np.array([7, 9, 7, 9, 7, 9], np.uint64)
    time_ns = np.array([0, 5, 10, 5 + span, 11 + span, 6 + 2 * span], np.int64)
    ids = pktmon.PacketIds()
    expected = [ids.numbered(int(g), int(t)) for g, t in zip(group, time_ns, strict=True)]
    assert etl_batch._numbered_ids(group, time_ns).tolist() == expected == [0, 1, 0, 1, 2, 3]


def test_record_header_cut_at_the_buffer_end_is_an_input_error(tmp_path):
    """A SYSTEM header's size (at +4) past the buffer's fill level: an error naming the
    buffer, in both walks (the Python walk used to fail with struct.error)."""
    path = recording(tmp_path, compress=False)
    etl = EtlFile(path)
    buf = bytes(etl.buffer_bytes(etl.buffers[1]))[:0x48] + struct.pack("<I", 0xC0020000)
    assert native_records(buf) == ([], 0)
    with pytest.raises(InputError, match="record header cut short"):
        reference_records_raising(etl, buf)


def reference_records_raising(etl: EtlFile, buf: bytes) -> None:
    etl.buffer_bytes = lambda info: buf
    list(etl._records(etl.buffers[0]))


@pytest.mark.parametrize("component", [5, 1 << 31])
def test_a_layout_widening_a_32_bit_column(tmp_path, component):
    """A schema may give ComponentId 32 bits; a value past 31 is an error naming the record
    in both passes (the reference used to fail with OverflowError)."""
    fields = [(n, 8 if n == "ComponentId" else t) for n, t in pktmon.PACKET_FIELDS]
    out = io.BytesIO()
    w = EtlWriter(out, start_ns=fieldsim.START_NS)
    w.event_schema(fieldsim.START_NS, pktmon.packet_schema(pktmon.PACKET, tuple(fields)))
    frame = bytes(14) + bytes.fromhex("4500002800010000400600007f0000017f000002") + bytes(20)
    for k in range(20):
        n = len(frame)
        fixed = struct.pack("<QHHHHIHHIIHH", k, 1, 1, 4, 1, component, 0, 0, 0, 0, n, n)
        w.event(
            fieldsim.START_NS + (k + 1) * 1000,
            pktmon.PROVIDER,
            pktmon.PACKET,
            payload=fixed + frame,
            keyword=0x10,
        )
    w.close()
    path = tmp_path / "wide.etl"
    path.write_bytes(out.getvalue())
    fast, reference, taken = both_passes(path)
    assert fast == reference
    if component > pktmon.NARROW_MAX:
        assert fast[0] == "error" and "ComponentId 2147483648 is above" in fast[1]
        assert not taken
    else:
        assert len(fast[0]["time_ns"]) == 20 and taken


def test_numbered_and_unnumbered_appearances_in_one_file(tmp_path):
    """Both ways of grouping share the reference's packet numbers and its forgetting:
    appearances alternate between numbered and not, some copies of one packet within the
    gap at another component, some at the same one (another packet), on two CPUs."""
    out = io.BytesIO()
    w = EtlWriter(out, start_ns=fieldsim.START_NS)
    for k in range(300):
        ip = bytes.fromhex("450000280001000040060000") + struct.pack(">II", k // 3, 2)
        frame = bytes(12) + b"\x08\x00" + ip + bytes(20)
        at = fieldsim.START_NS + k * 700
        w.pktmon_packet(at, k // 2, frame, appearance=k % 2, component=1 + k % 3, edge=k % 2)
    w.close()
    path = tmp_path / "mixed.etl"
    path.write_bytes(out.getvalue())
    data = bytearray(path.read_bytes())
    for k, at in enumerate(buffer_offsets(path)):
        data[at + 0x28] = k % 2
    path.write_bytes(bytes(data))
    fast, reference, taken = both_passes(path)
    assert fast == reference and taken
    assert 0 < fast[3]["pktmon_packets"] < fast[3]["pktmon_appearances"] == 300


@pytest.mark.parametrize("block", [1, 7, 64])
def test_grouping_by_content_a_few_rows_a_call(tmp_path, monkeypatch, block):
    """The C grouping keeps its packets from one call to the next, and holds each buffer
    until the call with its last row, however the rows fall into calls."""
    path = recording(tmp_path, layout="24h2", source="pktmon", appearances=3, compress=True, cpus=3)
    monkeypatch.setattr(etl_batch, "ID_BLOCK", block)
    fast, reference, taken = both_passes(path)
    assert fast == reference and taken
    assert 2 * fast[3]["pktmon_packets"] < fast[3]["pktmon_appearances"]


def second_passes(monkeypatch) -> list[int]:
    """One entry each time the frames file is written by a second pass over the buffers."""
    calls: list[int] = []
    copy_frames = etl_packets._copy_frames
    monkeypatch.setattr(etl_packets, "_copy_frames", lambda *a: calls.append(1) or copy_frames(*a))
    return calls


@pytest.mark.parametrize(
    "appearances, cpus, early",
    [(1, 1, True), (1, 3, True), (3, 1, False)],
)
def test_frames_written_in_the_first_pass(tmp_path, monkeypatch, appearances, cpus, early):
    """The frames the first pass writes are the frames file when every packet has one
    appearance and the file's order is the time order (buffers dealt round three CPUs in
    time order too); with three appearances a packet, a second pass writes it. Either way
    the result is the reference's (whose own pass always writes it: one call)."""
    path = recording(
        tmp_path,
        layout="numbered",
        source="pktmon",
        appearances=appearances,
        compress=True,
        cpus=cpus,
    )
    second_pass = second_passes(monkeypatch)
    fast, reference, taken = both_passes(path)
    assert taken and fast == reference
    assert fast[3]["pktmon_appearances"] == appearances * fast[3]["pktmon_packets"] > 100
    assert second_pass == ([1] if early else [1, 1])


def test_frames_of_cpus_whose_times_interleave_are_written_by_a_second_pass(tmp_path, monkeypatch):
    """Two CPUs whose packets interleave in time: the first pass wrote them in file order,
    which is not the frames file's, so a second pass writes that."""
    out = io.BytesIO()
    w = EtlWriter(out, start_ns=fieldsim.START_NS)

    def packets(first: int, shift: int) -> None:
        for k in range(first, first + 150):
            ip = bytes.fromhex("450000280001000040060000") + struct.pack(">II", k, 2)
            at = fieldsim.START_NS + (k - first) * 700 + shift
            w.pktmon_packet(at, k, bytes(12) + b"\x08\x00" + ip + bytes(20), component=1)

    packets(0, 0)
    w._flush()
    second_cpu_from = out.tell()
    packets(150, 350)
    w.close()
    path = tmp_path / "interleaved.etl"
    path.write_bytes(out.getvalue())
    data = bytearray(out.getvalue())
    for at in buffer_offsets(path):
        data[at + 0x28] = 1 if at >= second_cpu_from else 0
    path.write_bytes(bytes(data))
    second_pass = second_passes(monkeypatch)
    fast, reference, taken = both_passes(path)
    assert taken and fast == reference and fast[3]["pktmon_packets"] == 300
    times = fast[0]["time_ns"]
    assert times == sorted(times) and 0 < times[1] - times[0] < 700  # the CPUs alternate
    assert second_pass == [1, 1]
