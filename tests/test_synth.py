"""The synthetic trace is realistic in the ways the tests and benchmarks rely on."""

from __future__ import annotations

import numpy as np
import pytest

from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.generators.synth import synth_trace
from wskreplay.trace.model import Direction


@pytest.fixture(scope="module")
def trace():
    return synth_trace(calls=20_000, sockets=6, seed=3)


def test_deterministic_for_a_seed():
    assert synth_trace(500, 3, seed=9) == synth_trace(500, 3, seed=9)
    assert synth_trace(500, 3, seed=9) != synth_trace(500, 3, seed=10)


def test_status_mix(trace):
    calls = trace.calls
    status, done = calls.column("status"), calls.column("completion_status")
    assert (status == nt.STATUS_PENDING).mean() > 0.7
    assert ((status == nt.STATUS_PENDING) & (done == nt.STATUS_SUCCESS)).any()
    immediate = status == nt.STATUS_SUCCESS
    assert immediate.any()
    assert np.all(calls.column("completion_ns")[immediate] <= calls.column("return_ns")[immediate])
    assert (done == nt.STATUS_CONNECTION_RESET).any()
    forced = status == nt.STATUS_FILE_FORCED_CLOSED
    assert forced.any() and np.all(done[forced] == nt.STATUS_FILE_FORCED_CLOSED)


def test_reset_comes_before_every_forced_close(trace):
    calls = trace.calls
    (reset,) = [e for e in trace.events if e.kind == "reset"]
    forced = calls.column("status") == nt.STATUS_FILE_FORCED_CLOSED
    assert set(calls.column("socket")[forced].tolist()) == {reset.socket}
    assert calls.column("issue_ns")[forced].min() >= reset.time_ns
    reset_done = calls.column("completion_status") == nt.STATUS_CONNECTION_RESET
    assert np.all(calls.column("issue_ns")[reset_done] < reset.time_ns)
    assert np.all(calls.column("completion_ns")[reset_done] >= reset.time_ns)
    unsent = trace.streams[(reset.socket, Direction.UNSENT)]
    assert unsent.length == int(calls.column("length")[forced].sum())


def test_sizes_flags_and_control_info(trace):
    calls = trace.calls
    length = calls.column("length")
    assert length.min() <= 8 and 64 << 10 <= length.max() <= 1 << 20
    assert np.median(length) < 512
    assert set(np.unique(calls.column("flags")).tolist()) == {0, wsk.WSK_FLAG_NODELAY}
    with_control = np.flatnonzero(calls.column("control_len") >= 0)
    assert len(with_control) > 100
    assert wsk.decode_cmsgs(calls.control_info(int(with_control[0])))[0].type == 3


def test_segments_carry_each_stream_exactly(trace):
    segs = trace.segments
    resets = {e.socket for e in trace.events if e.kind == "reset"}
    for (sock, direction), stream in trace.streams.items():
        if direction == Direction.UNSENT:
            continue
        mine = (segs.column("socket") == sock) & (segs.column("direction") == direction)
        mine &= segs.column("length") > 0
        seq, n = (
            segs.column("seq")[mine].astype(np.int64),
            segs.column("length")[mine].astype(np.int64),
        )
        order = np.argsort(seq)
        assert seq[order][0] == 0
        assert np.array_equal(seq[order][1:], (seq + n)[order][:-1])
        sent = int((seq + n).max())
        if sock in resets and direction == Direction.OUT:
            assert sent <= stream.length
        else:
            assert sent == stream.length


def test_successful_sends_complete_after_their_last_byte_is_acknowledged(trace):
    calls, segs = trace.calls, trace.segments
    pending_ok = (
        (calls.column("status") == nt.STATUS_PENDING)
        & (calls.column("completion_status") == nt.STATUS_SUCCESS)
        & (calls.column("length") > 0)
    )
    for sock in range(6):
        acks = (segs.column("socket") == sock) & (segs.column("direction") == Direction.IN)
        ack_time, ack = segs.column("time_ns")[acks], segs.column("ack")[acks]
        assert np.all(np.diff(ack.astype(np.int64)) >= 0)
        mine = np.flatnonzero(pending_ok & (calls.column("socket") == sock))
        end = calls.column("stream_offset")[mine] + calls.column("length")[mine]
        first_ack = np.searchsorted(ack, end, side="left")
        assert np.all(first_ack < len(ack))
        assert np.all(ack_time[first_ack] <= calls.column("completion_ns")[mine])
