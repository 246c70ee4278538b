"""The WSK layer of the emulator, rule by rule. Each test names the sentence it checks:
PFN_WSK_SEND_EX.md (the WskSendEx reference page) or wsk-facts.md (shared/reference)."""

from __future__ import annotations

import pytest

from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.wsk_socket import (
    Completed,
    Returned,
    SendRequest,
    SocketState,
    Transmit,
    Violation,
    WskSocket,
)

PROFILE = load_profile()
IRP = 0xFFFFC000_00001000


def sock(**completion) -> WskSocket:
    profile = PROFILE.with_changes("completion", **completion) if completion else PROFILE
    return WskSocket(profile)


def statuses(events) -> list[tuple[str, int]]:
    return [(type(e).__name__, e.status) for e in events if isinstance(e, Returned | Completed)]


def test_only_connection_or_stream_sockets():
    """PFN_WSK_SEND_EX.md: "over a connection-oriented or stream socket"."""
    WskSocket(PROFILE, "stream")
    with pytest.raises(ValueError):
        WskSocket(PROFILE, "datagram")


def test_accepted_send_is_handed_to_tcp_and_pends():
    """PFN_WSK_SEND_EX.md: STATUS_PENDING "could not send the data over the socket
    immediately. The WSK subsystem will complete the IRP after it has sent the data"."""
    s = sock()
    events = s.send(SendRequest(10, IRP, wsk.WSK_FLAG_NODELAY, 100))
    assert events == [Transmit(IRP, 100, True, 10)]
    assert s.returned(IRP, 12) == Returned(IRP, nt.STATUS_PENDING, 12)
    assert s.transmitted(100, 20) == []  # on-ack: transmission is not enough
    assert s.acknowledged(100, 30) == [Completed(IRP, nt.STATUS_SUCCESS, 100, 30)]


def test_on_transmit_policy_completes_when_the_last_byte_left():
    """wsk-facts (UNVERIFIED, a profile setting): "on-ack / on-transmit"."""
    s = sock(policy="on-transmit")
    s.send(SendRequest(0, IRP, 0, 100))
    assert s.transmitted(99, 5) == []
    assert s.transmitted(100, 6) == [Completed(IRP, nt.STATUS_SUCCESS, 100, 6)]


def test_completion_before_return_gives_immediate_success():
    """PFN_WSK_SEND_EX.md: STATUS_SUCCESS "Data was successfully sent over the socket. The
    IRP will be completed with success status"; wsk-facts: "The completion routine may run
    before WskSendEx returns". Profile: immediate_success = when-complete-at-once."""
    s = sock(policy="on-transmit")
    s.send(SendRequest(0, IRP, 0, 64))
    assert s.transmitted(64, 0) == [Completed(IRP, nt.STATUS_SUCCESS, 64, 0)]
    assert s.returned(IRP, 1).status == nt.STATUS_SUCCESS
    never = sock(policy="on-transmit", immediate_success="never")
    never.send(SendRequest(0, IRP, 0, 64))
    never.transmitted(64, 0)
    assert never.returned(IRP, 1).status == nt.STATUS_PENDING


def test_completions_follow_issue_order():
    """wsk-facts: "Several sends may be outstanding at once"; order is a profile setting
    (UNVERIFIED), fifo by default."""
    s = sock()
    s.send(SendRequest(0, 1, 0, 10))
    s.send(SendRequest(1, 2, 0, 10))
    s.send(SendRequest(2, 3, 0, 10))
    assert [e.irp for e in s.acknowledged(25, 9)] == [1, 2]
    assert [e.irp for e in s.acknowledged(30, 10)] == [3]


def test_unsupported_flag():
    """PFN_WSK_SEND_EX.md: STATUS_NOT_SUPPORTED "A specified flag is not supported by the
    underlying network transport"; NODELAY "is supported by the Microsoft TCP/IP
    transport"."""
    s = sock()
    events = s.send(SendRequest(0, IRP, wsk.WSK_FLAG_OOB, 10))
    assert statuses(events) == [
        ("Completed", nt.STATUS_NOT_SUPPORTED),
        ("Returned", nt.STATUS_NOT_SUPPORTED),
    ]
    assert s.queued_end == 0


def test_control_info_checked_against_the_profile():
    """wsk-facts: "ControlInfo on TCP: UNVERIFIED ... Make the accepted (level, type) pairs
    part of a transport profile"; a malformed chain is an invalid parameter."""
    tos = wsk.encode_cmsgs([wsk.ControlMessage(wsk.IPPROTO_IP, 3, b"\x10\0\0\0")])
    refused = sock().send(SendRequest(0, IRP, 0, 10, control_info=tos))
    assert statuses(refused)[-1] == ("Returned", nt.STATUS_NOT_SUPPORTED)
    accepting = WskSocket(PROFILE.with_changes("send", control_info_accepted=((0, 3),)))
    assert isinstance(accepting.send(SendRequest(0, IRP, 0, 10, control_info=tos))[0], Transmit)
    bad = sock().send(SendRequest(0, IRP, 0, 10, control_info=tos[:-5] + b"\xff" * 5 + b"\x40"))
    assert statuses(bad)[-1] == ("Returned", nt.STATUS_INVALID_PARAMETER)
    x86 = WskSocket(
        PROFILE.with_changes("send", control_info_layout="x86", control_info_accepted=((0, 3),))
    )
    tos86 = wsk.encode_cmsgs([wsk.ControlMessage(0, 3, b"\x10\0\0\0")], wsk.X86)
    assert isinstance(x86.send(SendRequest(0, IRP, 0, 10, control_info=tos86))[0], Transmit)


def test_null_irp():
    """wsk-facts: STATUS_INVALID_PARAMETER "e.g. NULL IRP (no completion happens)"."""
    events = sock().send(SendRequest(0, None, 0, 10))
    assert events == [Returned(None, nt.STATUS_INVALID_PARAMETER, 0)]


def test_length_beyond_the_mdl_chain_would_bugcheck():
    """wsk-facts: "A Length larger than the MDL chain bugchecks real Windows ... report such
    a call as a would-be bugcheck, not crash and not succeed"."""
    s = sock()
    events = s.send(SendRequest(0, IRP, 0, 100, mdl_bytes=60))
    assert [type(e) for e in events] == [Violation]
    assert events[0].kind == "would-bugcheck" and s.queued_end == 0


def test_irql_above_dispatch_is_a_violation():
    """PFN_WSK_SEND_EX.md req.irql: <= DISPATCH_LEVEL."""
    events = sock().send(SendRequest(0, IRP, 0, 10, irql=3))
    assert events[0].kind == "irql" and isinstance(events[1], Transmit)
    assert not any(
        isinstance(e, Violation) for e in sock().send(SendRequest(0, IRP, 0, 10, irql=2))
    )


def test_peer_reset_fails_pending_then_forced_closed():
    """wsk-facts: STATUS_CONNECTION_RESET "peer reset"; PFN_WSK_SEND_EX.md:
    STATUS_FILE_FORCED_CLOSED "The socket is no longer functional"."""
    s = sock()
    s.send(SendRequest(0, 1, 0, 10))
    s.send(SendRequest(1, 2, 0, 10))
    assert s.peer_reset(5) == [
        Completed(1, nt.STATUS_CONNECTION_RESET, 0, 5),
        Completed(2, nt.STATUS_CONNECTION_RESET, 0, 5),
    ]
    assert s.state is SocketState.RESET
    assert statuses(s.send(SendRequest(6, 3, 0, 10))) == [
        ("Completed", nt.STATUS_FILE_FORCED_CLOSED),
        ("Returned", nt.STATUS_FILE_FORCED_CLOSED),
    ]


def test_abortive_disconnect_and_close_and_cancel():
    """wsk-facts: "An abortive WskDisconnect cancels in-progress and pending sends"
    (STATUS_CONNECTION_ABORTED); "WskCloseSocket cancels and completes every pending IRP
    (STATUS_CANCELLED)"; STATUS_CANCELLED "pending IRP cancelled (IoCancelIrp ...)"."""
    s = sock()
    s.send(SendRequest(0, 1, 0, 10))
    assert s.disconnect(3, abortive=True) == [Completed(1, nt.STATUS_CONNECTION_ABORTED, 0, 3)]
    c = sock()
    c.send(SendRequest(0, 1, 0, 10))
    assert c.close(4) == [Completed(1, nt.STATUS_CANCELLED, 0, 4)]
    after = c.send(SendRequest(5, 2, 0, 10))
    assert after[0].kind == "use-after-close"
    assert statuses(after)[-1] == ("Returned", nt.STATUS_FILE_FORCED_CLOSED)
    k = sock()
    k.send(SendRequest(0, 1, 0, 10))
    k.send(SendRequest(0, 2, 0, 10))
    assert k.cancel(2, 7) == [Completed(2, nt.STATUS_CANCELLED, 0, 7)]
    assert k.cancel(99, 7) == []


def test_graceful_disconnect_refuses_new_sends_but_keeps_pending():
    """wsk-facts: "A graceful disconnect waits for outstanding data"; a send on a socket in
    the wrong state gets STATUS_INVALID_DEVICE_STATE (profile wrong_state_status)."""
    s = sock()
    s.send(SendRequest(0, 1, 0, 10))
    assert s.disconnect(1, abortive=False) == []
    assert statuses(s.send(SendRequest(2, 2, 0, 5)))[-1] == (
        "Returned",
        nt.STATUS_INVALID_DEVICE_STATE,
    )
    assert s.acknowledged(10, 3) == [Completed(1, nt.STATUS_SUCCESS, 10, 3)]


def test_zero_length_send():
    """A zero-length send (UNVERIFIED; profile zero_length): "complete" succeeds at once
    with Information 0; "pend" completes after everything queued before it."""
    events = sock().send(SendRequest(0, IRP, 0, 0))
    assert statuses(events) == [("Completed", 0), ("Returned", 0)]
    pend = WskSocket(PROFILE.with_changes("send", zero_length="pend"))
    pend.send(SendRequest(0, 1, 0, 10))
    assert [type(e) for e in pend.send(SendRequest(1, 2, 0, 0))] == [Transmit]
    assert [e.irp for e in pend.acknowledged(10, 2)] == [1, 2]


def test_as_recorded_immediate_success_completes_at_once_and_only_once():
    """wsk-facts: "The completion routine may run before WskSendEx returns"; when it does
    is UNVERIFIED (profile completion.immediate_success = as-recorded: a call the recording
    shows returning STATUS_SUCCESS completes at once)."""
    s = sock()
    events = s.send(SendRequest(10, IRP, 0, 64, recorded_at_once=True))
    assert events == [Transmit(IRP, 64, False, 10), Completed(IRP, nt.STATUS_SUCCESS, 64, 10)]
    assert s.returned(IRP, 11).status == nt.STATUS_SUCCESS
    s.send(SendRequest(20, IRP + 1, 0, 100))
    assert s.returned(IRP + 1, 21).status == nt.STATUS_PENDING
    # The ACK of both completes the second only: the first is not completed twice.
    assert s.acknowledged(164, 30) == [Completed(IRP + 1, nt.STATUS_SUCCESS, 100, 30)]
    strict = sock(immediate_success="when-complete-at-once")
    strict.send(SendRequest(10, IRP, 0, 64, recorded_at_once=True))
    assert strict.returned(IRP, 11).status == nt.STATUS_PENDING


def test_a_reset_does_not_fail_a_send_that_already_completed():
    s = sock()
    s.send(SendRequest(0, IRP, 0, 64, recorded_at_once=True))
    s.returned(IRP, 1)
    s.send(SendRequest(2, IRP + 1, 0, 64))
    s.returned(IRP + 1, 3)
    assert s.peer_reset(5) == [Completed(IRP + 1, nt.STATUS_CONNECTION_RESET, 0, 5)]


def test_completion_latency_delays_the_completion_routine():
    """UNVERIFIED how long after the ACK the completion routine runs (profile
    completion.latency_ns, calibrated from the recording). A completion that comes after
    the call returned is no immediate success."""
    s = sock(latency_ns=4000)
    s.send(SendRequest(0, IRP, 0, 100))
    assert s.acknowledged(100, 50) == [Completed(IRP, nt.STATUS_SUCCESS, 100, 4050)]
    late = sock(policy="on-transmit", latency_ns=4000)
    late.send(SendRequest(0, IRP, 0, 64))
    late.transmitted(64, 0)
    assert late.returned(IRP, 1).status == nt.STATUS_PENDING


def test_partial_completion_counts_the_bytes_acknowledged_before_a_reset():
    """wsk-facts: whether a send "can complete with Information < Length" is UNVERIFIED
    (profile completion.partial): off, a failed send reports 0 bytes; on, the bytes of it
    the peer had acknowledged."""
    for partial, information in ((False, 0), (True, 60)):
        s = sock(partial=partial)
        s.send(SendRequest(0, IRP, 0, 100))
        s.send(SendRequest(1, IRP + 1, 0, 100))
        assert s.acknowledged(160, 5) == [Completed(IRP, nt.STATUS_SUCCESS, 100, 5)]
        assert s.peer_reset(9) == [Completed(IRP + 1, nt.STATUS_CONNECTION_RESET, information, 9)]
