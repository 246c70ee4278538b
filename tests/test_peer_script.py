"""The recorded peer's reactions, computed over the columns at once (peer_script.reactions),
equal the segment-by-segment loop they replaced: on every socket of the shipped traces and
of real captures with resets (both reset policies), and on hypothesis segment lists."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST
from wskreplay.policies import ResetPolicy
from wskreplay.replayer import calibrate, peer_script
from wskreplay.replayer.peer import PeerAction
from wskreplay.replayer.peer_script import PeerSegments, Reactions, reactions
from wskreplay.trace import read_trace

from .conftest import REPO, SHARED_DATA, run_cli

CAPTURES_WITH_RESETS = [
    "pcap/pcapplusplus__one_http_stream_rst.pcap",
    "pcap/pcapplusplus__one_tcp_stream_fin_rst_close_packet.pcap",
    "replay/zeek__tcp_rst-inject-rae.pcap",
    "replay/zeek__tcp_missing-syn.pcap",
    "replay/pcapplusplus__650HttpResponses.pcap",
]


def reactions_one_by_one(received: PeerSegments, rst_acknowledges: bool) -> Reactions:
    """The reference: the segments taken one at a time, as peer_script did before."""
    table: list[tuple[int, int]] = []
    ack_delays: list[tuple[int, int, bool]] = []
    ack_sent: list[int] = []
    actions: list[PeerAction] = []
    acked = 0
    reset = False
    for i, f in enumerate(received.flags.tolist()):
        if received.ignored[i]:
            continue
        a = int(received.ack[i])
        n = int(received.length[i])
        if f & TCP_ACK and (rst_acknowledges or not f & TCP_RST):
            if a > acked:
                ack_delays.append((a, int(received.ack_delay_ns[i]), bool(n or f & TCP_FIN)))
                ack_sent.append(int(received.sent_ns[i]))
            if not table or a > table[-1][0]:
                table.append((a, int(received.window[i])))
            elif a == table[-1][0]:
                table[-1] = (a, int(received.window[i]))
            acked = max(acked, a)
        if n or f & (TCP_FIN | TCP_RST):
            delay = int(received.action_delay_ns[i])
            seq = int(received.seq[i])
            actions.append(PeerAction(acked, delay, seq, n, f & (TCP_PSH | TCP_FIN | TCP_RST)))
            reset |= bool(f & TCP_RST)
    actions.sort(key=lambda x: x.after)
    return (
        tuple(table),
        acked if reset else None,
        tuple(actions),
        tuple(ack_delays),
        tuple(ack_sent),
    )


def assert_same(got: Reactions, want: Reactions) -> None:
    assert got[:2] == want[:2]
    assert [vars_of(a) for a in got[2]] == [vars_of(a) for a in want[2]]
    assert got[3:] == want[3:]
    for part in got[0] + got[3]:
        assert all(type(x) in (int, bool) for x in part)
    assert all(type(x) is int for x in got[4])


def vars_of(action: PeerAction) -> tuple:
    fields = (action.after, action.delay_ns, action.seq, action.length, action.flags)
    assert all(type(x) is int for x in fields)
    return fields


def test_every_socket_of_real_traces_under_both_reset_policies(tmp_path, monkeypatch):
    traces = [read_trace(p) for p in sorted((REPO / "traces").glob("*.wskt"))]
    for name in CAPTURES_WITH_RESETS:
        for side in ("client", "server"):
            path = tmp_path / f"{name.replace('/', '_')}.{side}.wskt"
            capture = str(SHARED_DATA / name)
            proc = run_cli("import", capture, "--infer-calls", "--side", side, "-o", str(path))
            assert proc.returncode == 0, proc.stderr
            traces.append(read_trace(path))
    seen = {"segments": 0, "ignored": 0, "ceilings": 0, "actions": 0}

    def checked(received: PeerSegments, rst_acknowledges: bool) -> Reactions:
        got = reactions(received, rst_acknowledges)
        assert_same(got, reactions_one_by_one(received, rst_acknowledges))
        seen["segments"] += len(received.flags)
        seen["ignored"] += int(received.ignored.sum())
        seen["ceilings"] += got[1] is not None
        seen["actions"] += len(got[2])
        return got

    monkeypatch.setattr(peer_script, "reactions", checked)
    for trace in traces:
        for sid in trace.sockets:
            path, _ = calibrate.calibrated_path(trace, sid, 3)
            for policy in (ResetPolicy(), ResetPolicy(ack_acknowledges=True, acceptance="window")):
                peer_script.peer_script(trace, sid, path.rtt_ns, policy)
    assert seen["segments"] > 3_000
    assert seen["ignored"] and seen["ceilings"] and seen["actions"], seen


@st.composite
def peer_segments(draw) -> PeerSegments:
    n = draw(st.integers(0, 30))
    ints = st.lists(st.integers(0, 6), min_size=n, max_size=n)
    flag_bits = st.sampled_from([0, TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK | TCP_FIN, TCP_RST])
    flags = draw(st.lists(st.lists(flag_bits, max_size=3), min_size=n, max_size=n))

    def column(values) -> np.ndarray:
        return np.asarray(values, np.int64).reshape(n)

    def or_all(bits: list[int]) -> int:
        out = 0
        for b in bits:
            out |= b
        return out

    return PeerSegments(
        flags=column([or_all(f) for f in flags]),
        ack=column(draw(ints)),
        window=column(draw(ints)),
        seq=column(draw(ints)),
        length=column(draw(st.lists(st.sampled_from([0, 0, 1, 1460]), min_size=n, max_size=n))),
        sent_ns=column(draw(ints)),
        ack_delay_ns=column(draw(ints)),
        action_delay_ns=column(draw(ints)),
        ignored=np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool).reshape(n),
    )


@settings(max_examples=400, deadline=None)
@given(peer_segments(), st.booleans())
def test_hypothesis_segment_lists(received, rst_acknowledges):
    assert_same(
        reactions(received, rst_acknowledges), reactions_one_by_one(received, rst_acknowledges)
    )


@pytest.mark.parametrize("rst_acknowledges", [False, True])
def test_repeated_offsets_keep_the_last_window_and_actions_keep_their_order(rst_acknowledges):
    """Three ACKs of offset 5 (windows 1, 2, 3) then an older ACK of 5 after 7: the table
    keeps window 3 at 5; actions after the same offset stay in capture order."""
    received = PeerSegments(
        flags=np.array([TCP_ACK, TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK, TCP_ACK, TCP_ACK | TCP_FIN]),
        ack=np.array([5, 5, 5, 7, 5, 7]),
        window=np.array([1, 2, 3, 4, 9, 6]),
        seq=np.array([0, 0, 0, 10, 10, 10]),
        length=np.array([0, 0, 10, 0, 0, 0]),
        sent_ns=np.arange(6),
        ack_delay_ns=np.arange(6) * 10,
        action_delay_ns=np.arange(6) * 100,
        ignored=np.zeros(6, bool),
    )
    windows, ceiling, actions, acks, sent = reactions(received, rst_acknowledges)
    assert windows == ((5, 3), (7, 6))
    assert ceiling is None
    assert [vars_of(a) for a in actions] == [(5, 200, 0, 10, TCP_PSH), (7, 500, 10, 0, TCP_FIN)]
    assert acks == ((5, 0, False), (7, 30, False))
    assert sent == (0, 3)
