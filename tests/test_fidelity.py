"""Real captures replay as recorded: every shared capture imported with --infer-calls,
replayed through the emulator and diffed against itself; each shared policy (docs/emulator.md,
"Policies") tested in import and in the emulator; unknown values counted, not reported;
and a trace that really differs still differs where it was changed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from wskreplay.diff import DiffOptions, parse_tolerance
from wskreplay.diff.compare import diff_traces
from wskreplay.fidelity import measure
from wskreplay.formats import ntstatus as nt
from wskreplay.formats import pcap
from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN
from wskreplay.policies import ResetPolicy
from wskreplay.recorder.importer import ImportOptions, import_sources
from wskreplay.recorder.infer import InferOptions, infer_trace
from wskreplay.replayer.calibrate import UNKNOWN_WINDOW, estimate_path
from wskreplay.replayer.engine import ReplayOptions, replay
from wskreplay.replayer.profile import load_profile
from wskreplay.trace.model import COMPLETED, COMPLETION_UNKNOWN, Trace, awaited_calls

from . import capgen
from .conftest import SHARED_DATA

CAPTURES = sorted((SHARED_DATA / "replay").glob("*")) + sorted((SHARED_DATA / "pcap").glob("*"))
NOT_TCP_OR_DAMAGED = {
    "zeek__radiotap.pcap",
    "zeek__wlanmon.pcap",
    "gopacket__be_test901.pcapng",
    "suricata-verify__http-mime-truncated.pcap",
    "tcpdump__empty.pcapng",
    "tcpdump__timestamp_invalid_nano.pcap",
    "zeek__pcapng-multi-interface.pcapng",
}


def imported(path: Path, side: str = "client", **options) -> Trace:
    return import_sources(
        [str(path)], ImportOptions(infer_calls=True, side=side, **options)
    ).materialised()


def replayed(trace: Trace) -> Trace:
    return replay(trace, ReplayOptions(load_profile()))


@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_shared_capture_replays_equal(path, side):
    row = measure(path, side)
    if path.name in NOT_TCP_OR_DAMAGED:
        assert row.verdict.startswith("not imported: "), row.verdict
        return
    assert row.equal, row.verdict


# --- unknown is a value ------------------------------------------------------------


def test_calls_the_capture_never_saw_acknowledged_are_unknown_not_outstanding():
    trace = imported(SHARED_DATA / "replay" / "suricata-verify__tcp-async-01.pcap", "server")
    state = trace.calls.column("completed")
    assert (state == COMPLETION_UNKNOWN).all() and len(state) == 18
    again = replayed(trace)
    assert (again.calls.column("completed") == COMPLETED).any()
    result = diff_traces(trace, again)
    assert result.equal and result.not_compared["completions"] == 18
    assert not [d for d in result.differences if d.kind == "completed"]


def test_diff_counts_what_one_trace_does_not_know():
    trace = imported(SHARED_DATA / "pcap" / "pcapplusplus__three_http_streams.pcap")
    other = replayed(trace)
    cols = trace.calls.columns
    cols["completed"] = np.where(
        np.arange(len(trace.calls)) == 0, COMPLETION_UNKNOWN, cols["completed"]
    )
    cols["completion_ns"] = np.where(np.arange(len(trace.calls)) == 0, 0, cols["completion_ns"])
    a = replace(trace, calls=type(trace.calls)(cols))
    result = diff_traces(a, other)
    assert result.equal and result.not_compared["completions"] == 1
    assert result.as_json()["not_compared"] == {"completions": 1, "stream_bytes": 0}


def test_bytes_a_capture_lacks_are_not_compared():
    """A capture taken mid-connection holds calls in part: the bytes it has are replayed
    at their offsets, the others stay gaps on both sides and are counted, not compared."""
    trace = imported(SHARED_DATA / "replay" / "pcapplusplus__650HttpResponses.pcap")
    gaps = sum(end - start for s in trace.streams.values() for start, end in s.gaps)
    assert gaps > 0
    result = diff_traces(trace, replayed(trace))
    assert result.equal
    assert result.not_compared["stream_bytes"] > 0


# --- planted differences stay different ---------------------------------------------


@pytest.fixture(scope="module")
def smb_pair() -> tuple[Trace, Trace]:
    trace = imported(SHARED_DATA / "replay" / "zeek__smb_smb2_100_small_files.pcap")
    again = replayed(trace)
    assert diff_traces(trace, again).equal
    return trace, again


def test_a_planted_status_is_reported_at_its_call(smb_pair):
    trace, again = smb_pair
    cols = again.calls.columns
    cols["completion_status"] = cols["completion_status"].copy()
    cols["completion_status"][100] = nt.STATUS_CONNECTION_RESET
    result = diff_traces(trace, replace(again, calls=type(again.calls)(cols)))
    assert [(d.kind, d.call_a) for d in result.differences] == [("completion_status", 100)]


def test_a_planted_byte_is_reported_at_its_offset(smb_pair):
    trace, again = smb_pair
    stream = again.streams[(0, 0)]
    data = bytearray(stream.data)
    data[5000] ^= 0xFF
    streams = dict(again.streams)
    streams[(0, 0)] = replace(stream, data=data)
    result = diff_traces(trace, replace(again, streams=streams))
    (wire,) = [d for d in result.differences if d.kind == "wire"]
    assert wire.a["offset"] == 5000


def test_a_call_delayed_by_5_ms_is_reported_at_that_call(smb_pair):
    trace, again = smb_pair
    cols = again.calls.columns
    for name in ("issue_ns", "return_ns", "completion_ns"):
        cols[name] = cols[name].copy()
        cols[name][200] += 5_000_000
    result = diff_traces(trace, replace(again, calls=type(again.calls)(cols)))
    timing = sorted({d.call_a for d in result.differences if d.kind == "timing"})
    assert timing[0] == 200
    assert any(r.kind == "timing" and r.first == 200 for r in result.runs)


# --- policies, in import and in the emulator ----------------------------------------

C, S = capgen.Endpoint("192.0.2.1", 40000), capgen.Endpoint("192.0.2.2", 80)
MS = 1_000_000


def _capture(tmp_path: Path, packets: list[tuple[int, bytes]], name: str) -> Path:
    path = tmp_path / name
    capgen.write_pcap(path, [(1_700_000_000 * 10**9 + t, f) for t, f in packets], nano=True)
    return path


def _exchange(last: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """A handshake, a 100-byte request acknowledged, a 50-byte one, then ``last``."""
    f = capgen.tcp_frame
    return [
        (0, f(C, S, 1000, 0, TCP_SYN)),
        (1 * MS, f(S, C, 5000, 1001, TCP_SYN | TCP_ACK)),
        (2 * MS, f(C, S, 1001, 5001, TCP_ACK)),
        (3 * MS, f(C, S, 1001, 5001, TCP_ACK | TCP_PSH, b"a" * 100)),
        (4 * MS, f(S, C, 5001, 1101, TCP_ACK)),
        (10 * MS, f(C, S, 1101, 5001, TCP_ACK | TCP_PSH, b"b" * 50)),
        *last,
    ]


def test_a_rsts_ack_does_not_complete_the_call_it_covers(tmp_path):
    rst = [(12 * MS, capgen.tcp_frame(S, C, 5001, 1151, TCP_RST | TCP_ACK))]
    path = _capture(tmp_path, _exchange(rst), "rst.pcap")
    frames = pcap.read_frames(path)
    default, _, _ = infer_trace(frames, InferOptions())
    last = default.calls[1]
    assert (last.completion_status, last.information) == (nt.STATUS_CONNECTION_RESET, 0)
    assert default.metadata["policies"]["reset"]["ack_acknowledges"] is False
    counting, _, _ = infer_trace(frames, InferOptions(reset=ResetPolicy(ack_acknowledges=True)))
    assert (counting.calls[1].completion_status, counting.calls[1].information) == (
        nt.STATUS_SUCCESS,
        50,
    )
    for trace in (default, counting):
        again = replayed(trace)
        assert (again.calls[1].completion_status, again.calls[1].information) == (
            trace.calls[1].completion_status,
            trace.calls[1].information,
        )


def test_a_rst_out_of_the_window_is_ignored_by_import_and_by_the_recorded_peer(tmp_path):
    """A RST 5,000 bytes ahead of what the client expects (RFC 5961: only the exact next
    byte resets), then the connection goes on: not the connection's reset."""
    f = capgen.tcp_frame
    later = [
        (11 * MS, f(S, C, 10_001, 1151, TCP_RST)),
        (12 * MS, f(S, C, 5001, 1151, TCP_ACK)),
        (20 * MS, f(C, S, 1151, 5001, TCP_ACK | TCP_PSH, b"c" * 30)),
        (21 * MS, f(S, C, 5001, 1181, TCP_ACK)),
    ]
    path = _capture(tmp_path, _exchange(later), "inject.pcap")
    trace = imported(path)
    resets = [e for e in trace.events if e.kind == "reset"]
    assert [e.attrs.get("ignored") for e in resets] == [True]
    assert all(trace.calls.column("completion_status") == nt.STATUS_SUCCESS)
    again = replayed(trace)
    assert all(again.calls.column("status") == nt.STATUS_PENDING)
    assert not [e for e in again.events if e.kind == "reset"]


def test_the_shared_injected_rst_capture_replays_equal():
    trace = imported(SHARED_DATA / "replay" / "zeek__tcp_rst-inject-rae.pcap")
    ignored = [e for e in trace.events if e.kind == "reset" and e.attrs.get("ignored")]
    assert len(ignored) >= 1
    assert diff_traces(trace, replayed(trace)).equal


def test_the_local_fin_is_replayed_as_a_disconnect():
    trace = imported(SHARED_DATA / "pcap" / "pcapplusplus__three_http_streams.pcap")
    fins = {
        e.socket: e.time_ns for e in trace.events if e.kind == "fin" and e.attrs["by"] == "local"
    }
    disconnects = {e.socket: e for e in trace.events if e.kind == "disconnect"}
    assert fins and set(fins) == set(disconnects)
    assert all(
        disconnects[s].time_ns == t and disconnects[s].attrs["flags"] == 0 for s, t in fins.items()
    )
    again = replayed(trace)
    seg = again.segments
    for sid in fins:
        mine = (seg.column("socket") == sid) & (seg.column("direction") == 0)
        assert (seg.column("flags")[mine] & TCP_FIN).any(), sid


def test_a_capture_without_the_handshake_infers_the_window_scale():
    """The capture begins with the SYN-ACK: the server's data is limited by the client's
    window, whose scale its SYN gave and the capture missed."""
    trace = imported(SHARED_DATA / "replay" / "zeek__tcp_missing-syn.pcap", "server")
    window = trace.metadata["capture"]["peer_window"]["0"]
    assert window["known"] == "inferred" and window["scale"] >= 1
    assert diff_traces(trace, replayed(trace)).equal


def test_without_evidence_the_window_is_unknown_and_does_not_limit(tmp_path):
    f = capgen.tcp_frame
    packets = [
        (0, f(C, S, 1001, 5001, TCP_ACK | TCP_PSH, b"a" * 100, window=3)),
        (1 * MS, f(S, C, 5001, 1101, TCP_ACK, window=2)),
    ]
    trace = imported(_capture(tmp_path, packets, "mid.pcap"))
    assert trace.metadata["capture"]["peer_window"]["0"]["known"] == "unknown"
    assert estimate_path(trace, 0).receive_window == UNKNOWN_WINDOW


def test_the_connecting_side_without_the_syn_is_the_syn_acks_receiver(tmp_path):
    packets = _exchange([])[1:]
    trace = imported(_capture(tmp_path, packets, "no-syn.pcap"))
    sock = trace.sockets[0]
    assert (sock.local_addr, sock.local_port) == (C.ip, C.port)
    assert trace.metadata["capture"]["opener_unknown"] == []
    bare = imported(_capture(tmp_path, packets[2:], "no-handshake.pcap"))
    assert bare.metadata["capture"]["opener_unknown"] == [0]


def test_a_peer_segment_after_a_long_silence_is_replayed():
    """The PPPoE capture's peer sends its last segment 235 s after anything else: the
    replay waits for it (twice the socket's recorded span, not a constant)."""
    trace = imported(SHARED_DATA / "replay" / "zeek__pppoe-over-qinq.pcap")
    again = replayed(trace)
    recorded_in = trace.streams[(0, 1)]
    assert again.streams[(0, 1)].length == recorded_in.length


def test_the_emulator_counts_a_rsts_ack_only_under_that_policy():
    from wskreplay.replayer.peer import PathParams, PeerAck
    from wskreplay.replayer.targets.emulator import EmulatedConnection
    from wskreplay.replayer.wsk_socket import Completed, SendRequest

    for counts, status in ((False, nt.STATUS_CONNECTION_RESET), (True, nt.STATUS_SUCCESS)):
        profile = replace(load_profile(), reset=ResetPolicy(ack_acknowledges=counts))
        conn = EmulatedConnection(profile, PathParams(rtt_ns=MS, delayed_ack_ns=50 * MS))
        out = conn.call(SendRequest(0, 1, 0, 100))
        conn._from_peer(PeerAck(MS // 2, 100, 65535, TCP_RST | TCP_ACK), MS // 2, out)
        done = [e for e in out if isinstance(e, Completed)]
        assert [d.status for d in done] == [status]


def test_a_faster_replays_schedule_is_compared_at_its_speed(smb_pair):
    """At --speed 4 the calls keep the recording's schedule four times faster: no call's
    issue time counts as late; --asap keeps none, so issue times are not compared."""
    trace, _ = smb_pair
    for speed in (4.0, None):
        again = replay(trace, ReplayOptions(load_profile(), speed=speed))
        assert again.metadata["replay"]["speed"] == speed
        result = diff_traces(trace, again)
        issue = [
            d.detail for d in result.differences if d.kind == "timing" and d.a["metric"] == "issue"
        ]
        assert not issue, issue[:3]


def test_a_replay_on_a_real_stack_is_judged_against_its_tolerance(smb_pair):
    """The same 1 ms delay of a completion no call waited for is a difference against the
    emulator's tolerance (50 us + 5%) and within a real stack's (2 ms + 25%): the basis
    follows the target the replay ran on, and an explicit tolerance still overrides it."""
    trace, again = smb_pair
    done = trace.calls.column("completed") == COMPLETED
    latency = trace.calls.column("completion_ns") - trace.calls.column("issue_ns")
    awaited = set(awaited_calls(trace.calls).tolist())
    k = next(int(i) for i in np.flatnonzero(done & (latency < 10_000_000)) if i not in awaited)
    cols = again.calls.columns
    cols["completion_ns"] = cols["completion_ns"].copy()
    cols["completion_ns"][k] += 1_000_000
    emulated = replace(again, calls=type(again.calls)(cols))
    on_socket = replace(emulated, metadata={**emulated.metadata, "target": {"kind": "socket"}})
    result = diff_traces(trace, emulated)
    assert result.tolerance_basis == "emulator"
    assert [(d.kind, d.call_a) for d in result.differences] == [("timing", k)]
    real = diff_traces(trace, on_socket)
    assert real.tolerance_basis == "real stack" and real.equal
    strict = diff_traces(
        trace, on_socket, DiffOptions(tolerances=dict([parse_tolerance("completion=500us")]))
    )
    assert [(d.kind, d.call_a) for d in strict.differences] == [("timing", k)]
