"""`wskreplay import`: field recordings (.etl, .etl + pcapng) and calls inferred from captures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from wskreplay.formats import ntstatus as nt
from wskreplay.generators import fieldsim
from wskreplay.trace import read_trace
from wskreplay.trace.model import Direction, Stream

from .conftest import REPO, SHARED_DATA, assert_one_line_error, run_cli

CAPTURES = sorted((SHARED_DATA / "pcap").glob("*"))
UNREADABLE = {
    "suricata-verify__http-mime-truncated.pcap": "record header cut short",
    "gopacket__be_test901.pcapng": "unsupported pcapng section version",
    "tcpdump__timestamp_invalid_nano.pcap": "timestamp fraction",
}
NO_TCP = {"zeek__pcapng-multi-interface.pcapng", "tcpdump__empty.pcapng"}


def present_sha256(stream: Stream) -> str:
    h = hashlib.sha256()
    pos = 0
    assert stream.data is not None
    for start, end in sorted(stream.gaps):
        h.update(stream.data[pos:start])
        pos = end
    h.update(stream.data[pos : stream.length])
    return h.hexdigest()


def import_ok(*args: str) -> dict:
    proc = run_cli("import", *args)
    assert proc.returncode == 0, proc.stderr
    return proc


def write_field(tmp_path: Path, name: str = "field.etl", **options) -> tuple[Path, object]:
    scenario = {
        k: options.pop(k) for k in ("seed", "bulk_calls", "unexplained_bytes") if k in options
    }
    rec = fieldsim.field_recording(**scenario)
    path = tmp_path / name
    with open(path, "wb") as f:
        fieldsim.write_field_etl(rec, f, **options)
    return path, rec


def summary_of(tmp_path: Path, *args: str) -> tuple[dict, object]:
    out = tmp_path / "out.wskt"
    summary = tmp_path / "summary.json"
    import_ok(*args, "-o", str(out), "--summary-json", str(summary))
    return json.loads(summary.read_text()), read_trace(out)


def assert_calls_equal(trace, rec, cap: int = 1 << 16) -> None:
    """Every field of every call, as the driver made it (all of its bytes where the events
    or the wire hold them: the first ``cap`` bytes of a call that never reached the wire)."""
    assert len(trace.calls) == len(rec.calls)
    expected = sorted(rec.calls, key=lambda c: c.return_ns)
    zero = trace.clock.zero_utc_ns
    assert zero == fieldsim.START_NS
    for i, (got, want) in enumerate(zip(trace.calls, expected, strict=True)):
        assert got.seq == i
        assert got.socket == want.socket
        assert got.issue_ns == want.issue_ns - zero
        assert got.return_ns == want.return_ns - zero
        assert (got.flags, got.offset, got.length) == (want.flags, want.offset, want.length)
        assert got.control_info == want.control_info
        assert got.status == want.status
        assert got.irp == want.irp and got.irql == want.irql
        assert got.stream_offset == want.stream_offset
        assert got.completion_ns == want.completion_ns - zero
        assert got.completion_status == want.completion_status
        assert got.information == want.information
        if want.on_wire or want.length <= cap:
            assert trace.call_payload(i) == want.payload, i
        else:
            stream = trace.streams[(want.socket, got.direction)]
            start = want.stream_offset
            assert bytes(stream.data[start : start + cap]) == want.payload[:cap]
            assert any(s <= start + cap < e for s, e in stream.gaps)


def test_field_etl_every_call_field_survives(tmp_path):
    etl, rec = write_field(tmp_path)
    summary, trace = summary_of(tmp_path, str(etl))
    assert_calls_equal(trace, rec)
    statuses = {c.status for c in trace.calls}
    assert {
        nt.STATUS_PENDING,
        nt.STATUS_SUCCESS,
        nt.STATUS_NOT_SUPPORTED,
        nt.STATUS_FILE_FORCED_CLOSED,
    } <= statuses
    assert summary["completed"]["STATUS_CONNECTION_RESET (0xC000020D)"] == 2
    s0, s1 = trace.sockets[0], trace.sockets[1]
    assert (s0.local_addr, s0.local_port, s0.remote_addr, s0.remote_port) == (
        "192.0.2.10",
        49200,
        "198.51.100.20",
        445,
    )
    assert (s0.origin, s0.category, s1.origin, s1.category) == (
        "connect",
        "connection",
        "accept",
        "stream",
    )
    assert s1.local_addr == "2001:db8::1" and s1.close_ns is not None
    kinds = {(e.kind, e.socket, e.attrs.get("by")) for e in trace.events}
    assert {
        ("disconnect", 0, None),
        ("close", 0, None),
        ("close", 1, None),
        ("reset", 1, "peer"),
    } <= kinds
    # Segments: every packet once (PktMon's two appearances folded), the driver's as OUT.
    assert len(trace.segments) == len(rec.packets)
    out = trace.segments.column("direction") == int(Direction.OUT)
    assert int(out.sum()) == sum(p.outbound for p in rec.packets)
    times = sorted(p.time_ns - fieldsim.START_NS for p in rec.packets)
    assert sorted(trace.segments.column("time_ns").tolist()) == times
    assert summary["completion_policy"] == "on-ack"
    assert trace.metadata["completion_policy"]["evidence"]["completed_after_ack"] == 1.0
    assert summary["correlation"]["payload_mismatches"] == 0


def test_ndis_packet_capture_imports_like_pktmon(tmp_path):
    pktmon, rec = write_field(tmp_path, "pktmon.etl")
    ndis, _ = write_field(tmp_path, "ndis.etl", packet_source="ndis")
    _s, a = summary_of(tmp_path, str(pktmon))
    summary, b = summary_of(tmp_path, str(ndis))
    assert_calls_equal(b, rec)
    assert a.segments == b.segments
    assert a.streams == b.streams
    assert summary["capture_notes"]["ndis_frames"] == len(rec.packets)


def test_infer_calls_from_the_packets_of_an_etl(tmp_path):
    etl = REPO / "traces" / "field.etl"
    _s, recorded = summary_of(tmp_path, str(etl))
    _s, inferred = summary_of(tmp_path, "--infer-calls", str(etl))
    out = {sid: s for (sid, d), s in inferred.streams.items() if d == Direction.OUT}
    # socket 1 was accepted: the recorded driver is the server side there
    assert out[0].data == recorded.streams[(0, Direction.OUT)].data
    assert (
        inferred.streams[(1, Direction.IN)].data[:2000]
        == (recorded.streams[(1, Direction.OUT)].data[:2000])
    )


def test_payload_beyond_the_event_cap_comes_from_the_wire(tmp_path):
    etl, rec = write_field(tmp_path, payload_cap=16, compress=False)
    _summary, trace = summary_of(tmp_path, str(etl))
    assert_calls_equal(trace, rec, cap=16)


@pytest.mark.parametrize("offset_ns", [3_217_012_345, -45_678_900])
def test_separate_capture_clock_offset_recovered(tmp_path, offset_ns):
    etl, rec = write_field(tmp_path, packets=False, payload_cap=64, bulk_calls=40)
    capture = tmp_path / "wire.pcapng"
    with open(capture, "wb") as f:
        fieldsim.write_field_pcapng(rec, f, clock_offset_ns=offset_ns)
    summary, trace = summary_of(tmp_path, str(etl), str(capture))
    clock = summary["clock"]
    assert clock["sources"] == 2
    assert abs(clock["offset_ns"] - offset_ns) <= 10_000, clock
    assert clock["low_ns"] <= offset_ns <= clock["offset_ns"]
    assert_calls_equal(trace, rec, cap=64)
    want = np.array(sorted(p.time_ns - fieldsim.START_NS for p in rec.packets))
    got = np.sort(trace.segments.column("time_ns"))
    assert np.abs(got - want).max() <= 10_000


def test_capture_started_after_the_connection_is_realigned(tmp_path):
    late = fieldsim.START_NS + 3_200_000  # after the first sends of both sockets
    etl, rec = write_field(tmp_path, capture_from_ns=late)
    summary, trace = summary_of(tmp_path, str(etl))
    c = summary["correlation"]
    assert c["payload_mismatches"] == 0
    assert c["stream_bytes_before_capture"] == 1500 + 2000
    missed = [x for x in rec.calls if x.on_wire and x.issue_ns + 20_000 < late]
    assert c["calls_not_on_wire"] == len(missed) + 1
    assert_calls_equal(trace, rec)
    out = trace.segments.take(
        (trace.segments.column("socket") == 0)
        & (trace.segments.column("direction") == int(Direction.OUT))
        & (trace.segments.column("length") > 0)
    )
    assert out.column("seq")[0] == 1500


def test_unmatched_data_is_reported_with_counts(tmp_path):
    etl, _rec = write_field(tmp_path, unexplained_bytes=777)
    summary, trace = summary_of(tmp_path, str(etl))
    c = summary["correlation"]
    assert c["calls_not_on_wire"] == 1  # the send outstanding when the peer reset
    assert c["wire_bytes_without_call"] == 777
    assert (
        trace.streams[(0, Direction.OUT)].length
        == sum(
            call.length for call in trace.calls if call.socket == 0 and nt.is_success(call.status)
        )
        + 777
    )
    proc = run_cli("import", str(etl), "-o", str(tmp_path / "again.wskt"), "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "777 outbound wire bytes no call explains" in " ".join(proc.stdout.split())


def test_selection_cap_and_redaction(tmp_path):
    etl, rec = write_field(tmp_path, bulk_calls=5)
    _s, only_v4 = summary_of(tmp_path, str(etl), "--socket", "198.51.100.20:445")
    assert set(only_v4.sockets) == {0}
    assert len(only_v4.calls) == sum(c.socket == 0 for c in rec.calls)
    _s, v6 = summary_of(tmp_path, str(etl), "--socket", "[2001:db8::1]:8443")
    assert set(v6.sockets) == {1}
    _s, window = summary_of(tmp_path, str(etl), "--from", "0.003", "--until", "0.006")
    issued = window.calls.column("issue_ns")
    assert len(issued) and issued.min() >= 3_000_000 and issued.max() < 6_000_000
    assert window.calls.column("seq").tolist() == list(range(len(issued)))
    _s, capped = summary_of(tmp_path, str(etl), "--payload-cap", "100")
    for i, call in enumerate(capped.calls):
        stream = capped.streams[(call.socket, call.direction)]
        if call.length > 100:
            assert capped.call_payload(i) is None
            assert any(s <= call.stream_offset + 100 < e for s, e in stream.gaps)
    _s, redacted = summary_of(tmp_path, str(etl), "--redact")
    assert redacted.redacted
    raw = (tmp_path / "out.wskt").read_bytes()
    for call in rec.calls:
        if call.length >= 32:
            assert call.payload[:32] not in raw


def test_infer_calls_smb2_capture(tmp_path):
    capture = SHARED_DATA / "pcap" / "suricata-verify__smb2-01_smb2-peter.pcap"
    summary, trace = summary_of(tmp_path, "--infer-calls", str(capture))
    assert summary["sockets"] == 1 and summary["calls"] > 100
    # SMB2 over TCP: every request starts with the 4-byte NetBIOS length and 0xFE 'SMB'.
    starts = [trace.call_payload(i)[4:8] for i in range(len(trace.calls))]
    assert sum(s == b"\xfeSMB" for s in starts) >= 0.9 * len(starts)
    server = summary_of(tmp_path, "--infer-calls", "--side", "server", str(capture))[1]
    assert server.sockets[0].local_port == 445 and server.sockets[0].origin == "accept"
    assert server.streams[(0, Direction.OUT)].length == trace.streams[(0, Direction.IN)].length


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_infer_calls_streams_equal_wskreplay_streams(path, tmp_path):
    out = tmp_path / "inferred.wskt"
    proc = run_cli("import", "--infer-calls", str(path), "-o", str(out))
    if path.name in UNREADABLE:
        assert_one_line_error(proc, path.name, UNREADABLE[path.name])
        assert not out.exists()
        return
    if path.name in NO_TCP:
        assert_one_line_error(proc, path.name, "no TCP connection")
        return
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(run_cli("streams", str(path), "--json").stdout)
    trace = read_trace(out)
    assert len(trace.sockets) == len(doc["connections"])
    for sid, conn in enumerate(doc["connections"]):
        for direction, key in (
            (Direction.OUT, "client_to_server"),
            (Direction.IN, "server_to_client"),
        ):
            want = conn[key]
            stream = trace.streams.get((sid, direction))
            if stream is None:
                assert want["bytes"] == 0
                continue
            assert present_sha256(stream) == want["sha256"], (sid, key)
            assert [list(g) for g in stream.gaps] == want["gaps"]
        # The calls tile the outbound stream: from 0, back to back, to its end.
        calls = trace.calls.take(trace.calls.column("socket") == sid)
        order = np.argsort(calls.column("stream_offset"))
        offsets = calls.column("stream_offset")[order]
        lengths = calls.column("length")[order]
        out_len = (
            trace.streams[(sid, Direction.OUT)].length
            if (sid, Direction.OUT) in trace.streams
            else 0
        )
        assert int(lengths.sum()) == out_len
        if len(offsets):
            assert offsets[0] == 0
            assert np.array_equal(offsets[1:], (offsets + lengths)[:-1])
            assert (lengths > 0).all()


def test_bad_input_is_one_line(tmp_path):
    amsi = SHARED_DATA / "etl" / "airbus-etl-parser__AMSITrace.etl"
    assert_one_line_error(
        run_cli("import", str(amsi), "-o", str(tmp_path / "x.wskt")),
        "AMSITrace.etl",
        "no WskReplay.Recorder events",
    )
    etl, _rec = write_field(tmp_path, packets=False)
    smb = SHARED_DATA / "pcap" / "suricata-verify__smb2-01_smb2-peter.pcap"
    assert_one_line_error(
        run_cli("import", str(etl), str(smb), "-o", str(tmp_path / "x.wskt")),
        "smb2-peter.pcap",
        "do not match",
    )
    with_packets, _ = write_field(tmp_path, "with-packets.etl")
    assert_one_line_error(
        run_cli("import", str(with_packets), str(smb), "-o", str(tmp_path / "x.wskt")),
        "already holds",
    )
    assert_one_line_error(
        run_cli("import", str(smb), "-o", str(tmp_path / "x.wskt")), "--infer-calls"
    )
    assert_one_line_error(
        run_cli("import", str(etl), "--socket", "nonsense", "-o", str(tmp_path / "x.wskt")),
        "--socket",
    )
    assert_one_line_error(
        run_cli("import", str(etl), "--from", "2", "--until", "1", "-o", str(tmp_path / "x.wskt")),
        "--until",
    )
    cut = tmp_path / "cut.etl"
    cut.write_bytes(with_packets.read_bytes()[:70000])
    proc = run_cli("import", str(cut), "-o", str(tmp_path / "x.wskt"))
    assert_one_line_error(proc, "cut.etl")
    assert not (tmp_path / "x.wskt").exists()


def test_record_needs_windows(tmp_path):
    assert_one_line_error(
        run_cli("record", "-o", str(tmp_path / "live.wskt")), "needs Windows", "wskreplay import"
    )


def hostile_etl(path: Path, **overrides) -> None:
    from wskreplay.formats.etl_writer import EtlWriter
    from wskreplay.recorder import etw_schema

    values = dict(
        Socket=0x1000,
        Irp=0x2000,
        Flags=0,
        Offset=0,
        Length=4,
        ControlInfoPresent=0,
        ControlInfo=b"",
        PayloadLength=4,
        Payload=b"abcd",
        QpcEntry=0,
        QpcReturn=0,
        Status=nt.STATUS_PENDING,
        Irql=0,
    )
    values.update(overrides)
    with open(path, "wb") as f:
        w = EtlWriter(f, start_ns=fieldsim.START_NS)
        values["QpcEntry"] = values["QpcReturn"] = w.qpc(fieldsim.START_NS + 1000)
        etw_schema.write_event(w, fieldsim.START_NS + 1000, "SendExIssued", **values)
        w.close()


@pytest.mark.parametrize(
    ("overrides", "what"),
    [
        ({"Length": 1 << 40, "PayloadLength": 4}, "above the 4294967296-byte limit"),
        ({"Length": 4, "PayloadLength": 4, "Payload": b"abcdefgh"}, "Payload <= PayloadLength"),
        ({"Length": 2, "PayloadLength": 4}, "PayloadLength <= Length"),
    ],
)
def test_hostile_send_events_are_refused(tmp_path, overrides, what):
    etl = tmp_path / "hostile.etl"
    hostile_etl(etl, **overrides)
    proc = run_cli("import", str(etl), "-o", str(tmp_path / "x.wskt"))
    assert_one_line_error(proc, "hostile.etl", "offset", what)


def test_send_on_an_unannounced_socket_is_counted(tmp_path):
    etl = tmp_path / "bare.etl"
    hostile_etl(etl)
    summary, trace = summary_of(tmp_path, str(etl))
    assert summary["correlation"]["unannounced_sockets"] == 1
    assert trace.sockets[0].origin == "unknown" and len(trace.calls) == 1
    assert trace.call_payload(0) == b"abcd"
    assert summary["clock"]["note"] == "no packets: wire correlation skipped"


def infer_from(tmp_path: Path, frames: list[tuple[int, bytes]], *args: str):
    from . import capgen

    path = tmp_path / "crafted.pcap"
    capgen.write_pcap(path, frames, nano=True)
    return summary_of(tmp_path, "--infer-calls", str(path), *args)[1]


def test_infer_heuristic_cuts_at_psh_idle_gaps_and_turns(tmp_path):
    from .capgen import ACK, PSH, SYN, Endpoint, tcp_frame

    c, s = Endpoint("192.0.2.1", 40000), Endpoint("198.51.100.2", 445)
    t = 1_700_000_000_000_000_000
    frames = [
        (t, tcp_frame(c, s, 0, 0, SYN)),
        (t + 10_000, tcp_frame(s, c, 500, 1, SYN | ACK)),
        (t + 20_000, tcp_frame(c, s, 1, 501, ACK)),
    ]
    sent = 0

    def client(at_us: int, n: int, flags: int = ACK) -> None:
        nonlocal sent
        frames.append((t + at_us * 1000, tcp_frame(c, s, 1 + sent, 501, flags, b"x" * n)))
        sent += n

    client(100, 1000)  # one call: three segments, PSH on the last
    client(102, 1000)
    client(104, 500, ACK | PSH)
    client(200, 300)  # no PSH, but 5 ms of silence follows: the next segment starts a call
    client(5200, 400, ACK | PSH)
    frames.append((t + 5300_000, tcp_frame(s, c, 501, 1 + sent, ACK | PSH, b"r" * 50)))
    client(5400, 100)  # no PSH before, but the server spoke in between
    frames.append((t + 5500_000, tcp_frame(s, c, 551, 1 + sent, ACK)))
    trace = infer_from(tmp_path, frames)
    assert trace.calls.column("length").tolist() == [2500, 300, 400, 100]
    assert trace.calls.column("stream_offset").tolist() == [0, 2500, 2800, 3200]
    done = trace.calls.column("completion_ns").tolist()
    assert done[-1] == 5_500_000  # the server's final ACK, 5.5 ms after the first packet
    longer_gap = infer_from(tmp_path, frames, "--idle-gap-us", "10000")
    assert longer_gap.calls.column("length").tolist() == [2500, 700, 100]
