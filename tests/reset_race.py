"""Calls that race the recorded peer's reset in a real replay."""

from __future__ import annotations

from wskreplay.formats import ntstatus as nt

RACE_NS = 2_000_000
"""A call the recording made this close before its peer's reset races that reset in a
real replay: the real peer's reset, timed from the bytes it received, may come first."""


def raced_reset(recorded, replayed, i: int) -> bool:
    """Call ``i`` differs because it lost the race with the peer's reset: the recording
    issued it within RACE_NS before the reset (plus however late the replay issued it: a
    loaded machine's replay runs late, its peer's reset does not), the replay after the
    replayed reset."""
    call = recorded.calls[i]
    rec = [e.time_ns for e in recorded.events if e.kind == "reset" and e.socket == call.socket]
    rep = [e.time_ns for e in replayed.events if e.kind == "reset" and e.socket == call.socket]
    late = max(0, int(replayed.calls[i].issue_ns) - int(call.issue_ns))
    return bool(
        rec
        and rep
        and nt.is_success(call.status)
        and 0 <= min(rec) - call.issue_ns <= RACE_NS + late
        and replayed.calls[i].issue_ns >= min(rep)
        and replayed.calls[i].status == nt.STATUS_FILE_FORCED_CLOSED
    )


def cut_by_reset(recorded, replayed, i: int) -> bool:
    """Call ``i`` was accepted in both, the recording issued it within RACE_NS before its
    peer's reset and saw it complete with that reset, and so did the replay, whose bytes
    for it may then never have left: the reset reached the replay's kernel first (Nagle
    held the bytes for an ACK the reset made never come). The recording's capture had
    them on the wire; which one wins is the race."""
    call, again = recorded.calls[i], replayed.calls[i]
    rec = [e.time_ns for e in recorded.events if e.kind == "reset" and e.socket == call.socket]
    late = max(0, int(again.issue_ns) - int(call.issue_ns))
    return bool(
        rec
        and nt.is_success(call.status)
        and nt.is_success(again.status)
        and 0 <= min(rec) - call.issue_ns <= RACE_NS + late
        and call.completion_status == nt.STATUS_CONNECTION_RESET
        and again.completion_status == nt.STATUS_CONNECTION_RESET
    )
