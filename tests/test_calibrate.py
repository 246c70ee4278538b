"""What a replay takes from its recording (docs/emulator.md, "Calibration"), on the shipped
traces, whose ground truth is known from how they were made (wskreplay/generators/synth.py,
wskreplay/generators/fieldsim.py, the SMB2 capture)."""

from __future__ import annotations

import pytest

from wskreplay.formats import ntstatus as nt
from wskreplay.replayer import calibrate
from wskreplay.replayer.profile import load_profile
from wskreplay.trace import read_trace

from .conftest import REPO

TRACES = REPO / "traces"


@pytest.fixture(scope="module")
def field():
    return read_trace(TRACES / "field.wskt")


@pytest.fixture(scope="module")
def sample():
    return read_trace(TRACES / "sample.wskt")


@pytest.fixture(scope="module")
def smb2():
    return read_trace(TRACES / "smb2-inferred.wskt")


def test_completion_latency_is_the_recorded_median_from_ack_to_completion(field, sample):
    # fieldsim completes 3-6 us after the ACK (median 4 us); synth 2-8 us after it.
    assert calibrate.completion_latency_ns(field, "on-ack") == 4000
    assert 2000 <= calibrate.completion_latency_ns(sample, "on-ack") <= 8000
    profile = calibrate.inferred_profile(field, load_profile())
    assert profile.completion.latency_ns == 4000


def test_nagle_is_off_only_when_the_recording_breaks_every_variant(field, sample, smb2):
    """synth sends every call at once (no Nagle) and the SMB2 client sent small requests
    back to back; fieldsim's sends never overlap a small unacknowledged segment."""
    assert calibrate.nagle_broken(sample, 1460)
    assert calibrate.nagle_broken(smb2, 1460)
    assert not calibrate.nagle_broken(field, 1460)
    assert calibrate.inferred_profile(sample, load_profile()).tcp.nagle is False
    assert calibrate.inferred_profile(field, load_profile()).tcp.nagle is True


def test_mss_is_the_size_longer_calls_were_cut_at(field, sample, smb2):
    assert calibrate.observed_mss(field, 0) == 1460
    assert calibrate.observed_mss(field, 1) is None  # no call longer than one segment
    assert calibrate.observed_mss(smb2, 0) == 2896  # offload at the capture point: 2 x 1448


def test_congestion_window_floor_is_the_largest_recorded_flight(field):
    """fieldsim sends a 16 KiB call's twelve segments at once, beyond the initial window of
    ten segments: the replay's sender may do the same."""
    assert calibrate.max_flight_bytes(field) == 16384
    profile = calibrate.inferred_profile(field, load_profile())
    assert profile.tcp.initial_cwnd_segments == 12


def test_rtt_ignores_the_ack_field_of_a_reset(sample):
    """synth's socket 3 is reset by its peer; the RST acknowledges bytes sent just before
    it, which is no round trip (the synthetic RTT of that socket is ~0.5 ms)."""
    assert calibrate.estimate_path(sample, 3).rtt_ns > 400_000


def test_link_rate_from_metadata_or_from_back_to_back_segments(field, sample):
    assert calibrate.estimate_path(sample, 0).rate_bps == 1_000_000_000  # metadata
    # fieldsim spaces a call's segments 2 us apart: (1460 + 54) bytes per 2 us.
    assert calibrate.link_rate_bps(field, 0) == (1460 + 54) * 8 * 1_000_000_000 // 2000


def test_host_stack_delay_per_call_where_the_recording_shows_it(field, sample):
    delays = calibrate.stack_delays_ns(field).tolist()
    # fieldsim puts each call's first byte on the wire 4-10 us after its issue.
    assert delays[:4] == [10_000, 10_000, 4_000, 5_000]
    # Calls 6 and 7 were refused (nothing on the wire): their socket's least delay.
    assert not nt.is_success(int(field.calls.column("status")[6]))
    assert (delays[6], delays[7]) == (4_000, 10_000)
    # synth: ready 4 us after the issue, plus the header's serialization.
    assert set(calibrate.stack_delays_ns(sample).tolist()) <= set(range(4_000, 8_000))


def test_each_socket_s_part_gives_what_the_whole_trace_gives(tmp_path, field, sample, smb2):
    """The replay calibrates each socket from its own rows (model.socket_parts): every
    per-socket answer equals the one computed over the whole trace, on the shipped traces
    and on real captures imported with inferred calls (a lost SYN, 284 connections)."""
    from wskreplay.replayer import peer_script
    from wskreplay.trace.model import socket_parts, time_span_ns

    from .conftest import SHARED_DATA, run_cli

    traces = [field, sample, smb2]
    for name in ("zeek__tcp_missing-syn.pcap", "pcapplusplus__650HttpResponses.pcap"):
        path = tmp_path / f"{name}.wskt"
        proc = run_cli(
            "import", str(SHARED_DATA / "replay" / name), "--infer-calls", "-o", str(path)
        )
        assert proc.returncode == 0, proc.stderr
        traces.append(read_trace(path))
    sockets = 0
    for trace in traces:
        parts = socket_parts(trace)
        assert list(parts) == list(trace.sockets)
        for sid, part in parts.items():
            sockets += 1
            own = part.trace
            assert own.calls == trace.calls.take(part.call_rows)
            assert own.segments == trace.segments.take(part.segment_rows)
            for ask in (
                calibrate.sender_mss,
                calibrate.mss_evidence,
                calibrate.rto_floor_ns,
                calibrate.link_rate_bps,
                time_span_ns,
            ):
                assert ask(own, sid) == ask(trace, sid), (ask.__name__, sid)
            path, evidence = calibrate.calibrated_path(trace, sid, 3)
            assert calibrate.calibrated_path(own, sid, 3) == (path, evidence)
            assert peer_script.peer_script(own, sid, path.rtt_ns) == peer_script.peer_script(
                trace, sid, path.rtt_ns
            )
    assert sockets > 100
