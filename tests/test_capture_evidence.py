"""What a replay of calls inferred from a capture takes from the capture's own evidence
(docs/emulator.md, "Policies" and "Calibration"), each rule on the shared real capture
that needed it: the spacing of an inferred call's bytes, bytes the capture missed, a
recorded peer's cumulative ACKs where the recording lost segments, the RTO the recorded
sender showed, Nagle, the link rate and the MSS; and diff's issue time of a call that
waited for a completion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from wskreplay.diff.compare import diff_traces
from wskreplay.recorder.importer import ImportOptions, import_sources
from wskreplay.replayer import calibrate
from wskreplay.replayer.calibrate import estimate_path, release_pieces
from wskreplay.replayer.engine import ReplayOptions, replay
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.sent import missed_sends
from wskreplay.trace import read_trace
from wskreplay.trace.model import Direction, Trace, awaited_calls

from .conftest import REPO, SHARED_DATA

US, MS = 1_000, 1_000_000


def imported(name: str, side: str = "client") -> Trace:
    path = next(SHARED_DATA.glob(f"*/{name}"))
    return import_sources([str(path)], ImportOptions(infer_calls=True, side=side)).materialised()


def replayed(trace: Trace) -> Trace:
    return replay(trace, ReplayOptions(load_profile()))


def first_byte_times(trace: Trace, socket: int) -> tuple[np.ndarray, np.ndarray]:
    """(offset, time) of each outbound data segment of ``socket``, first transmissions."""
    seg = trace.segments
    out = (
        (seg.column("socket") == socket)
        & (seg.column("direction") == int(Direction.OUT))
        & (seg.column("length") > 0)
    )
    return seg.column("seq")[out].astype(np.int64), seg.column("time_ns")[out].astype(np.int64)


def test_an_inferred_calls_bytes_leave_as_the_capture_shows_them_leave():
    """The SLL2 capture's server wrote call 66 in two parts 209 us apart (the inference
    merged them): the replay hands the second part to TCP no sooner."""
    trace = imported("suricata-verify__decode-sll2-02.pcap", "server")
    paths = {sid: estimate_path(trace, sid) for sid in trace.sockets}
    pieces = release_pieces(trace, paths)
    assert [length for length, _ in pieces[66]] == [1448, 63712]
    assert pieces[66][1][1] == 209 * US
    again = replayed(trace)
    start = int(trace.calls[66].stream_offset)
    seq, time = first_byte_times(again, 0)
    first = int(time[seq == start][0])
    second = int(time[seq == start + 1448][0])
    assert second - first >= 209 * US
    shipped = read_trace(REPO / "traces" / "sample.wskt")
    shipped_paths = {sid: estimate_path(shipped, sid) for sid in shipped.sockets}
    assert release_pieces(shipped, shipped_paths) == {}


def test_bytes_the_capture_missed_count_as_sent_one_rtt_before_their_ack():
    """The ERSPAN mirror lost most of the server's data: the client's ACKs prove when it
    went, and the replay's completions follow them (178 ms, not the 0.2 ms of a path
    that had every byte at once)."""
    trace = imported("zeek__erspan.pcap", "server")
    seg = trace.segments
    out = (
        (seg.column("socket") == 0)
        & (seg.column("direction") == int(Direction.OUT))
        & (seg.column("length") > 0)
    )
    ends = (seg.column("seq")[out] + seg.column("length")[out]).astype(np.int64)
    times = seg.column("time_ns")[out].astype(np.int64)
    rtt = estimate_path(trace, 0).rtt_ns
    when, upto = missed_sends(trace, 0, times, ends, rtt)
    k = np.searchsorted(times, when + rtt, side="right")
    seen_by_then = np.where(k > 0, np.maximum.accumulate(ends)[np.maximum(k - 1, 0)], 0)
    assert len(when) and (upto > seen_by_then).all()
    again = replayed(trace)
    recorded = trace.calls[2].completion_ns - trace.calls[2].issue_ns
    replayed_latency = again.calls[2].completion_ns - again.calls[2].issue_ns
    assert recorded > 170 * MS
    assert abs(replayed_latency - recorded) < 0.05 * recorded


@pytest.mark.parametrize("name", ["zeek__tcp_reassembly.pcap", "zeek__pppoe-over-qinq.pcap"])
def test_the_recorded_peer_acknowledges_no_more_than_the_recording_did(name):
    """Segments lost on the recorded path arrive at once in the replay: the recorded peer
    still acknowledges no more of the calls' bytes than the recorded one had by then
    (cumulative ACKs and duplicate ACKs alike), so calls complete when they did."""
    trace = imported(name)
    again = replayed(trace)

    def acked_by(t: Trace) -> tuple[np.ndarray, np.ndarray]:
        seg = t.segments
        inbound = (seg.column("socket") == 0) & (seg.column("direction") == int(Direction.IN))
        return (
            seg.column("time_ns")[inbound].astype(np.int64),
            np.maximum.accumulate(seg.column("ack")[inbound].astype(np.int64)),
        )

    ta, aa = acked_by(trace)
    tb, ab = acked_by(again)
    ab = np.minimum(ab, trace.streams[(0, Direction.OUT)].length)
    k = np.searchsorted(ta, tb + MS, side="right") - 1
    recorded_then = np.where(k >= 0, aa[np.maximum(k, 0)], 0)
    assert (ab <= recorded_then).all()
    assert diff_traces(trace, again).equal


def test_the_rto_floor_covers_the_recorded_senders_wait_before_each_resend():
    """The PPPoE client resent bytes 7898.. 1.48 s after sending them, with nothing
    acknowledged in between: its timer was at least that long, and the replay's is too
    (an earlier replayed timeout would shrink the window and hold the next call)."""
    trace = imported("zeek__pppoe-over-qinq.pcap")
    seq, time = first_byte_times(trace, 0)
    sent, resent = time[seq == 7898][:2]
    assert resent - sent > 1_480 * MS
    assert calibrate.rto_floor_ns(trace, 0) >= resent - sent


def test_new_bytes_resent_with_a_small_unacknowledged_segment_show_no_nagle():
    """The PPPoE server resent its 6 unacknowledged bytes together with 45 new ones, in
    one small segment: no variant of Nagle allows it."""
    server = imported("zeek__pppoe-over-qinq.pcap", "server")
    assert calibrate.nagle_broken(server, 1460)


def test_the_link_rate_of_an_inferred_trace_is_the_fastest_spacing_it_shows():
    """The DCE-RPC client's back-to-back full segments are 125 us apart mostly, 1 us
    apart sometimes: the link was at least that fast; the slower spacing replays from the
    calls' own pieces. A recorded WSK trace keeps the median."""
    trace = imported("zeek__dce-rpc_mapi.pcap")
    fastest = calibrate.link_rate_bps(trace, 1)
    assert fastest == (1460 + 54) * 8 * 1_000_000_000 // (1 * US)
    recorded = replace(trace, metadata={k: v for k, v in trace.metadata.items() if k != "inferred"})
    assert calibrate.link_rate_bps(recorded, 1) == (1460 + 54) * 8 * 1_000_000_000 // (125 * US)


def test_no_link_rate_from_offload_or_from_spacing_the_clock_cannot_resolve():
    geneve = imported("zeek__tunnels_geneve-47101.pcap", "server")
    assert calibrate.link_rate_bps(geneve, 0) is None  # 14,080-byte segments
    loopback = imported("suricata-verify__bug-4376_syn_retransmit_with_ts.pcap", "server")
    assert calibrate.link_rate_bps(loopback, 0) is None  # most pairs 0 us apart


def test_the_sender_mss_is_capped_by_its_own_announced_mss():
    """The Geneve server announced 1420 (its tunnel's MTU), the client 1460: the server
    sent 1408-byte segments (1420 less the timestamp option), and so does the replay."""
    trace = imported("zeek__tunnels_geneve-47101.pcap", "server")
    assert trace.metadata["capture"]["sender_mss"]["0"] == 1408
    seq, _ = first_byte_times(replayed(trace), 0)
    assert np.diff(np.unique(seq)).max() == 1408


def test_a_dependent_calls_issue_time_is_judged_after_the_completion_it_waited_for():
    """A completion 5 ms late makes every call that waited for it late: the completion
    is reported once, at its call, not again at each call that followed it; a call issued
    5 ms late on its own is still reported."""
    trace = imported("zeek__smb_smb2_100_small_files.pcap")
    again = replayed(trace)
    awaited = awaited_calls(trace.calls)
    k = int(np.flatnonzero(awaited >= 0)[len(awaited) // 2])
    j = int(awaited[k])
    cols = again.calls.columns
    for name in ("issue_ns", "return_ns", "completion_ns"):
        cols[name] = cols[name].copy()
    cols["completion_ns"][j] += 5 * MS
    later = cols["issue_ns"] >= cols["issue_ns"][k]
    for name in ("issue_ns", "return_ns", "completion_ns"):
        cols[name][later] += 5 * MS
    late_chain = replace(again, calls=type(again.calls)(cols))
    result = diff_traces(trace, late_chain)
    assert [(d.kind, d.call_a, d.a["metric"]) for d in result.differences] == [
        ("timing", j, "completion")
    ]
    cols = again.calls.columns
    for name in ("issue_ns", "return_ns", "completion_ns"):
        cols[name] = cols[name].copy()
        cols[name][k] += 5 * MS
    alone = diff_traces(trace, replace(again, calls=type(again.calls)(cols)))
    timing = [(d.call_a, d.a["metric"]) for d in alone.differences if d.kind == "timing"]
    assert (k, "issue") in timing


def test_the_replay_says_which_path_values_had_too_little_evidence():
    """One direction only: no ACK of the local data, so RTT and delayed-ACK time are the
    defaults, and the replay's metadata says so; a two-way capture names its evidence."""
    one_way = replayed(imported("pcapplusplus__unidirectional_tcp_stream_with_missing_packet.pcap"))
    evidence = one_way.metadata["paths"]["0"]["evidence"]
    assert evidence["rtt_ns"].startswith("default: ")
    assert evidence["delayed_ack_ns"].startswith("default: ")
    two_way = replayed(imported("zeek__dce-rpc_mapi.pcap")).metadata["paths"]["1"]["evidence"]
    assert two_way["rtt_ns"].startswith("the fastest of ")
    assert two_way["rate_bps"] == "the spacing of back-to-back full segments"
    assert two_way["mss"] == "the size the recorded sender cut longer sends at"
    assert set(two_way) == {
        "rtt_ns",
        "delayed_ack_ns",
        "receive_window",
        "rate_bps",
        "mss",
        "rto_floor_ns",
    }
