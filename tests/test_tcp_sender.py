"""The emulator's TCP sender, rule by rule (each test names the rule it checks)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.formats.tcpip import TCP_FIN, TCP_PSH, TCP_RST
from wskreplay.replayer.profile import TcpSettings
from wskreplay.replayer.tcp_sender import (
    NEVER,
    Acknowledged,
    SentSegment,
    SentTimes,
    TcpSender,
    Transmitted,
)

MSS = 1000


def sender(**changes) -> TcpSender:
    settings = TcpSettings(**{"mss": MSS, "initial_cwnd_segments": 4, **changes})
    return TcpSender(settings, peer_window=changes.pop("window", 1 << 20))


def segs(events) -> list[tuple[int, int]]:
    return [(e.seq, e.length) for e in events if isinstance(e, SentSegment)]


def test_segments_at_the_mss_with_psh_on_the_last():
    s = sender()
    events = s.write(2500, nodelay=False, time_ns=0)
    assert segs(events) == [(0, 1000), (1000, 1000), (2000, 500)]
    flags = [e.flags & TCP_PSH for e in events if isinstance(e, SentSegment)]
    assert flags == [0, 0, TCP_PSH]
    assert Transmitted(2500, 0) in events


def test_nagle_holds_a_small_segment_while_data_is_unacknowledged():
    """Minshall's Nagle: a sub-MSS segment waits while an earlier one is unacknowledged."""
    s = sender()
    assert segs(s.write(100, nodelay=False, time_ns=0)) == [(0, 100)]
    assert segs(s.write(100, nodelay=False, time_ns=1)) == []
    assert segs(s.write(100, nodelay=False, time_ns=2)) == []
    assert segs(s.on_ack(100, 1 << 20, 10)) == [(100, 200)]


def test_nodelay_sends_queued_data_at_once():
    """PFN_WSK_SEND_EX.md: WSK_FLAG_NODELAY "send the data, and any previously queued data,
    ... without delay"."""
    s = sender()
    s.write(100, nodelay=False, time_ns=0)
    s.write(100, nodelay=False, time_ns=1)
    assert segs(s.write(50, nodelay=True, time_ns=2)) == [(100, 150)]


def test_rfc896_nagle_holds_the_tail_of_a_large_send():
    """RFC 896 / RFC 1122 4.2.3.4: with any data outstanding, a sub-MSS segment waits."""
    classic = sender(nagle_variant="rfc896")
    assert segs(classic.write(2500, nodelay=False, time_ns=0)) == [(0, 1000), (1000, 1000)]
    assert segs(classic.on_ack(2000, 1 << 20, 9)) == [(2000, 500)]
    minshall = sender()
    assert segs(minshall.write(2500, nodelay=False, time_ns=0))[-1] == (2000, 500)


def test_nagle_off_in_the_profile():
    s = sender(nagle=False)
    s.write(100, nodelay=False, time_ns=0)
    assert segs(s.write(100, nodelay=False, time_ns=1)) == [(100, 100)]


def test_receive_window_limits_what_is_in_flight():
    s = TcpSender(TcpSettings(mss=MSS, initial_cwnd_segments=100), peer_window=2500)
    assert segs(s.write(5000, nodelay=True, time_ns=0)) == [(0, 1000), (1000, 1000)]
    # 500 bytes of window left: sender silly-window avoidance waits for more
    assert segs(s.on_ack(2000, 3000, 5)) == [(2000, 1000), (3000, 1000), (4000, 1000)]


def test_zero_window_then_probe_then_reopen():
    """RFC 9293 3.8.6.1: a zero window is probed when the persist timer fires."""
    s = TcpSender(TcpSettings(mss=MSS, initial_cwnd_segments=10), peer_window=1000)
    s.write(3000, nodelay=True, time_ns=0)
    assert segs(s.on_ack(1000, 0, 10)) == []
    deadline = s.next_timer()
    assert deadline is not None
    probe = s.on_timer(deadline)
    assert segs(probe) == [(1000, 1)]
    assert segs(s.on_ack(1001, 4000, deadline + 5)) == [(1001, 1000), (2001, 999)]


def test_slow_start_then_congestion_avoidance():
    """RFC 5681 3.1: cwnd grows by up to one MSS per ACK below ssthresh, then by about
    MSS*MSS/cwnd per ACK."""
    s = sender()
    s.write(100 * MSS, nodelay=True, time_ns=0)
    assert s.cwnd == 4 * MSS
    s.on_ack(MSS, 1 << 20, 10)
    assert s.cwnd == 5 * MSS
    s.ssthresh = s.cwnd
    s.on_ack(2 * MSS, 1 << 20, 20)
    assert s.cwnd == 5 * MSS + MSS // 5


def test_fast_retransmit_on_the_third_duplicate_ack():
    """RFC 5681 3.2 and RFC 6582: three duplicate ACKs retransmit the first unacknowledged
    segment and halve the window; a full ACK ends recovery."""
    s = sender()
    s.write(4 * MSS, nodelay=True, time_ns=0)
    s.on_ack(MSS, 1 << 20, 10)
    assert segs(s.on_ack(MSS, 1 << 20, 11)) == []
    assert segs(s.on_ack(MSS, 1 << 20, 12)) == []
    retransmit = s.on_ack(MSS, 1 << 20, 13)
    first = [e for e in retransmit if isinstance(e, SentSegment)][0]
    assert (first.seq, first.length, first.retransmission) == (MSS, MSS, True)
    assert s.recover == 4 * MSS  # everything sent when recovery began
    s.on_ack(s.recover, 1 << 20, 20)
    assert s.recover is None and s.cwnd == s.ssthresh


def test_retransmission_timeout_backs_off_and_goes_back():
    """RFC 6298: on expiry retransmit the earliest unacknowledged segment, double the RTO,
    collapse cwnd to one segment (RFC 5681 3.1)."""
    s = sender()
    s.write(3 * MSS, nodelay=True, time_ns=0)
    first = s.next_timer()
    assert first == 1_000_000_000
    events = s.on_timer(first)
    assert segs(events) == [(0, MSS)] and events[0].retransmission
    assert s.cwnd == MSS and s.rto == 2_000_000_000
    assert s.next_timer() == first + 2_000_000_000
    assert segs(s.on_ack(MSS, 1 << 20, first + 10)) == [(MSS, MSS), (2 * MSS, MSS)]


def test_rtt_samples_set_the_rto_with_its_floor():
    """RFC 6298 2.2/2.3 with the profile's minimum (Windows: 300 ms)."""
    s = sender()
    s.write(MSS, nodelay=True, time_ns=0)
    s.on_ack(MSS, 1 << 20, 50_000_000)
    assert s.srtt == 50_000_000 and s.rto == 300_000_000


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 3000), st.integers(0, 10**9)),
        st.tuples(st.just("take"), st.integers(-100, 40000), st.just(0)),
        st.tuples(st.just("keep"), st.integers(-100, 40000), st.just(0)),
        st.tuples(st.just("clear"), st.just(0), st.just(0)),
    ),
    max_size=3000,
)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_sent_times_answer_as_the_dict_they_replaced(operations):
    """SentTimes (a queue consumed from the front) against the dict of end -> time it
    replaced, scanned whole on every ACK: the same RTT sample times, the same segments kept,
    through the bulk drops of its front (more than 1024 consumed)."""
    queue, reference, end = SentTimes(), {}, 0
    for op, value, time_ns in operations:
        if op == "add":
            end += value
            queue.add(end, time_ns)
            reference[end] = time_ns
        elif op == "take":
            covered = [e for e in reference if e <= value]
            expected = reference[max(covered)] if covered else NEVER
            for e in covered:
                del reference[e]
            assert queue.take_through(value) == expected
        elif op == "keep":
            queue.keep_through(value)
            reference = {e: t for e, t in reference.items() if e <= value}
        else:
            queue.clear()
            reference.clear()
        assert list(zip(queue.ends[queue.head :], queue.times[queue.head :], strict=True)) == list(
            reference.items()
        )


def test_sent_times_drop_a_long_consumed_front():
    queue = SentTimes()
    for k in range(1, 3001):
        queue.add(k, 10 * k)
    assert queue.take_through(2000) == 20000
    assert queue.head == 0 and queue.ends[0] == 2001
    assert queue.take_through(2000) == NEVER and queue.take_through(3000) == 30000
    assert queue.ends == [] and queue.head == 0


def test_an_unarmed_timer_is_never():
    s = sender()
    assert s.timer() == NEVER and s.next_timer() is None
    s.write(MSS, nodelay=True, time_ns=5)
    assert s.timer() == s.next_timer() == 5 + s.rto


def test_fin_after_the_data_and_rst():
    s = sender()
    s.write(100, nodelay=False, time_ns=0)
    s.write(50, nodelay=False, time_ns=1)  # held by Nagle
    assert not [e for e in s.close(2) if isinstance(e, SentSegment)]
    sent = s.on_ack(100, 1 << 20, 10)
    assert [
        (e.seq, e.length, bool(e.flags & TCP_FIN)) for e in sent if isinstance(e, SentSegment)
    ] == [
        (100, 50, False),
        (150, 0, True),
    ]
    assert Acknowledged(150, 20) in s.on_ack(151, 1 << 20, 20)
    r = sender()
    r.write(10, nodelay=True, time_ns=0)
    assert r.reset(5)[0].flags & TCP_RST
    assert r.write(10, nodelay=True, time_ns=6) == [] and r.next_timer() is None


def test_a_segment_carrying_data_is_no_duplicate_ack():
    """RFC 5681 2: a duplicate ACK "carries no data"; the peer's responses acknowledging the
    same byte three times are not a loss signal."""
    s = sender()
    s.write(4 * MSS, nodelay=True, time_ns=0)
    s.on_ack(MSS, 1 << 20, 10)
    for t in (11, 12, 13):
        assert segs(s.on_ack(MSS, 1 << 20, t, carries_data=True)) == []
    assert s.recover is None and s.ssthresh >= 1 << 62
