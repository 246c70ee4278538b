"""Policies shared by import, the emulator, the real targets and diff, where TCP leaves a
choice to the stack and WSK's documentation does not say which Windows makes
(UNVERIFIED in wsk-facts.md). Each is a named setting of a transport profile (section
``[reset]``); import applies the same values and records them in the trace's metadata
(``policies``), and a replay of that trace uses them, so the two agree by construction.
docs/emulator.md ("Policies") gives each default and its reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN

RESET_ACCEPTANCE = ("rfc5961", "window")


@dataclass(frozen=True)
class ResetPolicy:
    ack_acknowledges: bool = False
    """Whether the ACK field of a peer's RST acknowledges the data it covers. False: a
    RST carries no acknowledgement (RFC 9293 processes a RST before, and instead of, its
    ACK field), so a send still pending when it arrives completes with
    STATUS_CONNECTION_RESET and Information 0, whatever the RST's ACK covers."""
    acceptance: str = "rfc5961"
    """Which RST resets a synchronized connection: ``rfc5961``, only one whose sequence
    number is exactly the next expected (RFC 5961 section 3; in-window others draw a
    challenge ACK), ``window``, any inside the receive window (RFC 9293 without 5961). In
    SYN-SENT, a RST counts only when its ACK acknowledges the SYN (RFC 9293 3.10.7.3)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> ResetPolicy:
        doc = doc or {}
        return cls(
            ack_acknowledges=bool(doc.get("ack_acknowledges", cls.ack_acknowledges)),
            acceptance=str(doc.get("acceptance", cls.acceptance)),
        )


DEFAULT_RESET = ResetPolicy()


def reset_accepted(policy: ResetPolicy, seq: int, rcv_nxt: int, rcv_wnd: int | None) -> bool:
    """Whether a RST at stream offset ``seq`` resets a synchronized connection whose next
    expected offset is ``rcv_nxt`` and whose advertised window is ``rcv_wnd`` bytes
    (None: unknown, taken as wide open)."""
    if policy.acceptance == "rfc5961":
        return seq == rcv_nxt
    return rcv_nxt <= seq and (rcv_wnd is None or seq < rcv_nxt + max(rcv_wnd, 1))


def policies_of(metadata: dict[str, Any]) -> ResetPolicy:
    """The reset policy a trace was imported with (the defaults for older traces)."""
    return ResetPolicy.from_dict((metadata.get("policies") or {}).get("reset"))


@dataclass(frozen=True)
class Flow:
    """One direction of a connection, segment by segment in capture order: stream
    offsets of its own bytes, and its acknowledgements of the other direction's."""

    time: np.ndarray
    seq: np.ndarray
    length: np.ndarray
    flags: np.ndarray
    ack: np.ndarray
    """Relative to the other direction's stream (0 also when the ACK flag is not set)."""
    window: np.ndarray
    syn: bool
    """Whether this direction's SYN was captured."""


def accepted_resets(
    policy: ResetPolicy, sender: Flow, receiver: Flow, *, window_known: bool = True
) -> np.ndarray:
    """For each segment of ``sender``: whether it is a RST that the receiving stack would
    act on (False for every other segment). Before the sender's SYN reached the receiver
    (the receiver in SYN-SENT), a RST counts when its ACK acknowledges the receiver's SYN;
    after, by :func:`reset_accepted` against what the receiver had received from the
    sender (the reach of its captured bytes, and a FIN) and the window it last advertised
    (``window_known`` False: its scale is unknown, so the window does not limit). A RST
    after which the receiver still sent new data is one it ignored, whatever the policy
    says: a stack that acted on a RST sends nothing more."""
    out = np.zeros(len(sender.time), bool)
    rst = np.flatnonzero(sender.flags & TCP_RST)
    if not len(rst):
        return out
    carried = (sender.length > 0) | ((sender.flags & TCP_FIN) != 0)
    reach = np.maximum.accumulate(
        np.where(carried, sender.seq + sender.length + ((sender.flags & TCP_FIN) != 0), 0)
    )
    theirs = receiver.length > 0
    their_reach = np.maximum.accumulate(np.where(theirs, receiver.seq + receiver.length, 0))
    before = np.concatenate(([0], their_reach[:-1]))
    new_data_at = receiver.time[theirs & (receiver.seq + receiver.length > before)]
    for i in rst.tolist():
        synced = bool((sender.flags[:i] & TCP_SYN).any()) or not receiver.syn
        if not synced:
            acks_syn = bool(sender.flags[i] & TCP_ACK) and int(sender.ack[i]) == 0
            out[i] = acks_syn
            continue
        rcv_nxt = int(reach[i - 1]) if i else 0
        earlier = np.flatnonzero(receiver.time <= sender.time[i])
        window = int(receiver.window[earlier[-1]]) if len(earlier) and window_known else None
        ignored_later = bool((new_data_at > sender.time[i]).any())
        out[i] = not ignored_later and reset_accepted(
            policy, int(sender.seq[i]), max(rcv_nxt, 0), window
        )
    return out
