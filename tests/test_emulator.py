"""One emulated connection end to end in virtual time: WSK layer, TCP sender, peer."""

from __future__ import annotations

import bisect
import heapq

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.replayer.peer import PathParams, RisingCursor
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.targets.emulator import (
    DueQueue,
    EmulatedConnection,
    WireColumns,
    WireSegment,
)
from wskreplay.replayer.tcp_sender import NEVER
from wskreplay.replayer.wsk_socket import Completed, Returned, SendRequest

PROFILE = load_profile()
MS = 1_000_000
NODELAY = wsk.WSK_FLAG_NODELAY


def conn(**path) -> EmulatedConnection:
    return EmulatedConnection(PROFILE, PathParams(**{"rtt_ns": MS, **path}))


def completions(out) -> dict[int, Completed]:
    return {e.irp: e for e in out if isinstance(e, Completed)}


def outbound(out) -> list[WireSegment]:
    return [e for e in out if isinstance(e, WireSegment) and e.outbound and e.length]


def test_a_small_send_completes_after_the_delayed_ack():
    """on-ack: the peer acknowledges a lone sub-MSS segment only when its delayed-ACK timer
    fires (RFC 1122 4.2.3.2), so the send completes one RTT plus that delay later."""
    c = conn()
    out = c.call(SendRequest(0, 1, NODELAY, 1000))
    assert [e for e in out if isinstance(e, Returned)] == [Returned(1, nt.STATUS_PENDING, 0)]
    out += c.settle(1000 * MS)
    done = completions(out)[1]
    assert (done.status, done.information) == (nt.STATUS_SUCCESS, 1000)
    assert done.time_ns == MS + 40 * MS


def test_two_full_segments_are_acknowledged_at_once():
    c = conn()
    out = c.call(SendRequest(0, 1, NODELAY, 2920)) + c.settle(1000 * MS)
    assert [s.length for s in outbound(out)] == [1460, 1460]
    assert completions(out)[1].time_ns == MS


def test_on_transmit_completes_and_returns_success_at_once():
    c = EmulatedConnection(
        PROFILE.with_changes("completion", policy="on-transmit"), PathParams(rtt_ns=MS)
    )
    out = c.call(SendRequest(5, 1, NODELAY, 1000))
    assert completions(out)[1].time_ns == 5
    assert [e.status for e in out if isinstance(e, Returned)] == [nt.STATUS_SUCCESS]


def test_nagle_delays_a_second_small_send_nodelay_does_not():
    held = conn()
    out = held.call(SendRequest(0, 1, 0, 100)) + held.call(SendRequest(10, 2, 0, 100))
    out += held.settle(1000 * MS)
    assert [(s.time_ns, s.seq) for s in outbound(out)] == [(0, 0), (41 * MS, 100)]
    pushed = conn()
    out = pushed.call(SendRequest(0, 1, 0, 100)) + pushed.call(SendRequest(10, 2, NODELAY, 100))
    assert [(s.time_ns, s.seq) for s in outbound(out)] == [(0, 0), (10, 100)]


def test_peer_reset_completes_pending_sends_then_forced_closed():
    c = EmulatedConnection(PROFILE, PathParams(rtt_ns=MS), peer_reset_ns=MS // 4)
    out = c.call(SendRequest(0, 1, NODELAY, 500))
    out += c.call(SendRequest(MS, 2, NODELAY, 500))
    assert completions(out)[1].status == nt.STATUS_CONNECTION_RESET
    assert completions(out)[2].status == nt.STATUS_FILE_FORCED_CLOSED
    assert [e.status for e in out if isinstance(e, Returned)] == [
        nt.STATUS_PENDING,
        nt.STATUS_FILE_FORCED_CLOSED,
    ]


def test_bottleneck_rate_paces_a_bulk_send():
    c = conn(rate_bps=100_000_000, receive_window=1 << 22)
    out = c.call(SendRequest(0, 1, NODELAY, 1_000_000)) + c.settle(10_000 * MS)
    done = completions(out)[1]
    assert done.status == nt.STATUS_SUCCESS
    # 1 MB at 100 Mbit/s is 80 ms of serialization (plus headers), then half an RTT back
    assert 80 * MS < done.time_ns < 140 * MS
    assert sum(s.length for s in outbound(out) if not s.retransmission) == 1_000_000


def test_losses_are_recovered_and_the_run_is_deterministic():
    def run():
        c = conn(loss=0.05, seed=3, rate_bps=50_000_000)
        out = []
        for k in range(20):
            out += c.call(SendRequest(k * 5 * MS, k + 1, 0, 20_000))
        return out + c.settle(60_000 * MS)

    first, second = run(), run()
    assert first == second
    done = completions(first)
    assert len(done) == 20 and all(d.status == nt.STATUS_SUCCESS for d in done.values())
    assert any(s.retransmission for s in outbound(first))
    times = [done[k].time_ns for k in range(1, 21)]
    assert times == sorted(times)


def recorded(script, **path) -> EmulatedConnection:
    from wskreplay.replayer.peer import RecordedPeer

    params = PathParams(**{"rtt_ns": MS, **path})
    return EmulatedConnection(PROFILE, params, peer=RecordedPeer(params, script))


def test_recorded_peer_answers_when_it_has_received_what_it_had():
    """The reactive peer sends its recorded response once it has received the bytes it
    had received when it answered in the recording, after the same delay: a sender that
    sends sooner gets its answer sooner."""
    from wskreplay.replayer.peer import PeerAction, PeerScript

    script = PeerScript(actions=(PeerAction(1000, 2 * MS, 0, 50, 0x08),))
    for start in (0, 5 * MS):
        c = recorded(script)
        out = c.call(SendRequest(start, 1, NODELAY, 1000)) + c.settle(100 * MS)
        answer = [e for e in out if isinstance(e, WireSegment) and not e.outbound and e.length]
        assert [(a.time_ns, a.seq, a.length) for a in answer] == [(start + MS + 2 * MS, 0, 50)]
        assert c.received == 50
    early = recorded(script)
    out = early.call(SendRequest(0, 1, NODELAY, 999)) + early.settle(100 * MS)
    assert not [e for e in out if isinstance(e, WireSegment) and not e.outbound and e.length]


def test_recorded_peer_stops_acknowledging_where_it_did_then_resets():
    from wskreplay.replayer.peer import PeerAction, PeerScript

    script = PeerScript(ack_ceiling=1000, actions=(PeerAction(1500, MS, 0, 0, 0x04),))
    c = recorded(script)
    out = c.call(SendRequest(0, 1, NODELAY, 1000)) + c.call(SendRequest(10, 2, NODELAY, 1000))
    out += c.settle(1000 * MS)
    done = completions(out)
    assert done[1].status == nt.STATUS_SUCCESS
    assert done[2].status == nt.STATUS_CONNECTION_RESET


def test_recorded_peer_closes_its_window_where_it_did():
    from wskreplay.replayer.peer import PeerScript

    script = PeerScript(windows=((0, 65535), (2920, 0)))
    c = recorded(script)
    out = c.call(SendRequest(0, 1, NODELAY, 5000)) + c.run_until(50 * MS)
    sent = sorted({(s.seq, s.length) for s in outbound(out)})
    assert sent[:3] == [(0, 1460), (1460, 1460), (2920, 1460)]
    assert c.tcp.rwnd == 0


def test_recorded_peer_actions_due_at_the_same_moment_keep_their_order():
    from wskreplay.replayer.peer import PeerAction, PeerScript

    script = PeerScript(actions=(PeerAction(100, MS, 0, 10, 0), PeerAction(100, MS, 10, 20, 0)))
    c = recorded(script)
    out = c.call(SendRequest(0, 1, NODELAY, 100)) + c.settle(100 * MS)
    data = [
        (e.seq, e.length) for e in out if isinstance(e, WireSegment) and e.length and not e.outbound
    ]
    assert data == [(0, 10), (10, 20)]


def test_recorded_peer_acknowledges_after_its_recorded_delay():
    """The reactive peer acknowledges an offset the recorded one acknowledged after the
    delay it took then, from receiving the byte before it: here 3 ms, not the parametric
    delayed-ACK time."""
    from wskreplay.replayer.peer import PeerScript

    c = recorded(PeerScript(acks=((1000, 3 * MS, False),)))
    out = c.call(SendRequest(0, 1, NODELAY, 1000)) + c.settle(100 * MS)
    assert completions(out)[1].time_ns == MS // 2 + 3 * MS + MS // 2
    acks = [e for e in out if isinstance(e, WireSegment) and not e.outbound]
    assert [(a.time_ns, a.ack) for a in acks] == [(4 * MS, 1000)]


def test_recorded_peer_acknowledges_with_its_data_when_its_data_did():
    from wskreplay.replayer.peer import PeerAction, PeerScript

    script = PeerScript(
        acks=((1000, 2 * MS, True),), actions=(PeerAction(1000, 2 * MS, 0, 50, 0x08),)
    )
    c = recorded(script)
    out = c.call(SendRequest(0, 1, NODELAY, 1000)) + c.settle(100 * MS)
    inbound = [e for e in out if isinstance(e, WireSegment) and not e.outbound]
    assert [(a.length, a.ack) for a in inbound] == [(50, 1000)]  # no pure ACK before it


def test_recorded_peer_acknowledgements_never_go_backwards():
    """A later offset acknowledged sooner (its recorded delay is shorter) covers the earlier
    one still pending: the earlier ACK is not sent after it."""
    from wskreplay.replayer.peer import PeerScript

    c = recorded(PeerScript(acks=((1000, 5 * MS, False), (2000, MS, False))))
    out = c.call(SendRequest(0, 1, NODELAY, 1000)) + c.call(SendRequest(10, 2, NODELAY, 1000))
    out += c.settle(100 * MS)
    values = [e.ack for e in out if isinstance(e, WireSegment) and not e.outbound]
    assert values == sorted(values) and values[-1] == 2000


def test_host_stack_delay_holds_a_call_s_bytes_in_call_order():
    """A call's bytes reach TCP after the host's delay (from the recording), never before
    an earlier call's."""
    c = conn()
    out = c.call(SendRequest(0, 1, NODELAY, 100), stack_delay_ns=50_000)
    out += c.call(SendRequest(10_000, 2, NODELAY, 100), stack_delay_ns=0)
    out += c.settle(100 * MS)
    assert [(s.time_ns, s.seq) for s in outbound(out)] == [(50_000, 0), (50_000, 100)]


def test_event_records_hand_written_init_takes_their_fields():
    """The emulator's event records write their ``__init__`` by hand (mypyc compiles it;
    the dataclass one is interpreted): its parameters are the fields, in order, with the
    fields' defaults, and the records compare and print as dataclasses."""
    import dataclasses
    import inspect

    from wskreplay.replayer import peer, tcp_sender, wsk_socket
    from wskreplay.replayer.targets import emulator

    checked = 0
    for module in (wsk_socket, tcp_sender, peer, emulator):
        for cls in vars(module).values():
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                continue
            if cls.__dataclass_params__.init:
                continue
            params = list(inspect.signature(cls).parameters.values())
            fields = dataclasses.fields(cls)
            assert [p.name for p in params] == [f.name for f in fields], cls
            empty = inspect.Parameter.empty
            for p, f in zip(params, fields, strict=True):
                expected = empty if f.default is dataclasses.MISSING else f.default
                assert p.default == expected, (cls, f.name)
            checked += 1
    assert checked >= 10
    a = WireSegment(1, True, 2, 3, 4)
    assert a == WireSegment(1, True, 2, 3, 4, 0, 0, False) != WireSegment(1, True, 2, 3, 5)
    assert repr(a).startswith("WireSegment(time_ns=1, outbound=True, seq=2")


def test_a_wire_sink_gets_the_segments_the_outputs_would_hold():
    """A connection given a WireColumns writes its wire segments there as they happen and
    leaves them out of its outputs: the same segments, in the same order, as one without
    (a lossy path with retransmissions, a peer reset)."""
    calls = [SendRequest(k * 100_000, k + 1, 0, 3000) for k in range(30)]

    def run(wire):
        c = EmulatedConnection(
            PROFILE,
            PathParams(rtt_ns=MS, loss=0.1, seed=3, rate_bps=100_000_000),
            peer_reset_ns=40 * MS,
            wire=wire,
        )
        out = [e for req in calls for e in c.call(req)] + c.settle(500 * MS)
        return out

    plain = run(None)
    sink = WireColumns()
    rest = run(sink)
    wire = [e for e in plain if isinstance(e, WireSegment)]
    assert len(wire) > 60 and any(s.retransmission for s in wire)
    assert not any(isinstance(e, WireSegment) for e in rest)
    assert rest == [e for e in plain if not isinstance(e, WireSegment)]
    expected = WireColumns()
    for s in wire:
        expected.add(s.time_ns, s.outbound, s.seq, s.length, s.flags, s.ack, s.window)
    got, want = sink.arrays(), expected.arrays()
    assert all(np.array_equal(got[name], want[name]) for name in want)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 1000), max_size=40).map(sorted),
    st.lists(st.integers(-5, 1005), max_size=60),
)
def test_rising_cursor_answers_as_bisect(keys, values):
    """The recorded peer's lookups by cursor give bisect_right's answer for any sequence of
    values (rising, as a peer's received bytes do, or not), repeated keys included."""
    cursor = RisingCursor(keys)
    for value in [*sorted(values), *values]:
        assert cursor.right(value) == bisect.bisect_right(keys, value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 50), st.none()), max_size=120))
def test_the_due_queue_takes_happenings_in_heapq_order(script):
    """The connection's queue of scheduled happenings gives them in the order heapq gives
    (time, order scheduled) tuples: earliest first, ties in the order they were scheduled,
    under any mix of pushes (a time) and pops (None)."""
    queue, reference, order = DueQueue(), [], 0
    for step in script:
        if step is None:
            if reference:
                time_ns, _, kind, item = heapq.heappop(reference)
                assert queue.pop() == (time_ns, kind, item)
            continue
        order += 1
        heapq.heappush(reference, (step, order, order % 5, f"item {order}"))
        queue.push(step, order % 5, f"item {order}")
        assert len(queue) == len(reference)
        assert queue.first_time() == reference[0][0]
    while reference:
        time_ns, _, kind, item = heapq.heappop(reference)
        assert queue.pop() == (time_ns, kind, item)
    assert len(queue) == 0 and queue.first_time() == NEVER
