"""What the recorded peer of a socket did, as reactions to what it had received: the input
of :class:`~wskreplay.replayer.peer.RecordedPeer`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN
from wskreplay.policies import DEFAULT_RESET, Flow, ResetPolicy, accepted_resets
from wskreplay.replayer.peer import PeerAction, PeerScript
from wskreplay.replayer.sent import departures, merged, missed_sends
from wskreplay.trace.model import Direction, Trace


def _flow(trace: Trace, rows: np.ndarray) -> Flow:
    seg = trace.segments
    flags = seg.column("flags")[rows].astype(np.int64)
    return Flow(
        time=seg.column("time_ns")[rows].astype(np.int64),
        seq=seg.column("seq")[rows].astype(np.int64),
        length=seg.column("length")[rows].astype(np.int64),
        flags=flags,
        ack=seg.column("ack")[rows].astype(np.int64),
        window=seg.column("window")[rows].astype(np.int64),
        syn=bool((flags & TCP_SYN).any()),
    )


def peer_script(
    trace: Trace,
    socket: int,
    rtt_ns: int,
    policy: ResetPolicy = DEFAULT_RESET,
    rate_bps: int | None = None,
) -> PeerScript | None:
    """The script of ``socket``'s peer, or None when the recording has no segment from it.

    Each segment the peer sent becomes an action triggered by what the peer had received
    by then (its ACK field), delayed by the time between the peer receiving that byte (its
    first transmission, once the segments before it were serialized at ``rate_bps`` as the
    replay's path serializes them, or for a byte the capture missed, one RTT before the
    peer acknowledged it (``sent.missed_sends``); plus half the RTT) and the peer sending
    the segment (its capture time minus half the RTT). A RST's own ACK field does not
    count as an acknowledgement here (``policy.ack_acknowledges`` is applied where the RST
    arrives), and a RST the local stack would have ignored (``policy.acceptance``) is left
    out. Each segment that acknowledged new bytes gives the delay from the peer receiving
    the last of them to its sending the ACK, and whether its data carried it (then the
    data action sends it)."""
    seg = trace.segments
    mine = seg.column("socket") == socket
    inbound = mine & (seg.column("direction") == int(Direction.IN))
    if not inbound.any():
        return None
    fin = (seg.column("flags") & TCP_FIN) != 0
    outbound = mine & (seg.column("direction") == int(Direction.OUT))
    out = outbound & ((seg.column("length") > 0) | fin)
    out_time = departures(
        seg.column("time_ns")[out].astype(np.int64),
        seg.column("length")[out].astype(np.int64),
        rate_bps,
    )
    out_end = (seg.column("seq")[out] + seg.column("length")[out] + fin[out]).astype(np.int64)
    out_time, out_end = merged(
        out_time, out_end, *missed_sends(trace, socket, out_time, out_end, rtt_ns)
    )
    out_reach = np.maximum.accumulate(out_end) if len(out_end) else np.empty(0, np.int64)
    half = rtt_ns // 2
    start = int(seg.column("time_ns")[mine].min())

    def had(received: np.ndarray) -> np.ndarray:
        """When the peer had received each count of bytes."""
        if not len(out_reach):
            return np.full(len(received), start, np.int64)
        k = np.minimum(np.searchsorted(out_reach, received, side="left"), len(out_time) - 1)
        return np.where(received <= 0, start, out_time[k] + half)

    flag_col = seg.column("flags")[inbound].astype(np.int64)
    ack_col = seg.column("ack")[inbound].astype(np.int64)
    time_col = seg.column("time_ns")[inbound].astype(np.int64)
    rst = flag_col & TCP_RST != 0
    ignored = rst
    if rst.any():
        ignored = rst & ~accepted_resets(
            policy, _flow(trace, inbound), _flow(trace, mine & ~inbound)
        )
    acknowledges = (flag_col & TCP_ACK != 0) & ((flag_col & TCP_RST == 0) | policy.ack_acknowledges)
    acked_then = np.maximum.accumulate(np.where(acknowledges, ack_col, 0))
    received = PeerSegments(
        flags=flag_col,
        ack=ack_col,
        window=seg.column("window")[inbound].astype(np.int64),
        seq=seg.column("seq")[inbound].astype(np.int64),
        length=seg.column("length")[inbound].astype(np.int64),
        sent_ns=time_col - half,
        ack_delay_ns=np.maximum(time_col - half - had(ack_col), 0),
        action_delay_ns=np.maximum(time_col - half - had(acked_then), 0),
        ignored=ignored,
    )
    table, ceiling, actions, ack_delays, ack_sent = reactions(received, policy.ack_acknowledges)
    return PeerScript(
        table,
        ceiling,
        actions,
        ack_delays,
        ack_sent,
        tuple(out_reach.tolist()),
        tuple((out_time + half).tolist()),
    )


@dataclass(frozen=True)
class PeerSegments:
    """The segments a socket's peer sent, in capture order, with what :func:`peer_script`
    derived for each: when the peer sent it, and its delays (int64 arrays, one per
    segment; ``ignored``: a RST the local stack would have ignored)."""

    flags: np.ndarray
    ack: np.ndarray
    window: np.ndarray
    seq: np.ndarray
    length: np.ndarray
    sent_ns: np.ndarray
    ack_delay_ns: np.ndarray
    action_delay_ns: np.ndarray
    ignored: np.ndarray


Reactions = tuple[
    tuple[tuple[int, int], ...],
    int | None,
    tuple[PeerAction, ...],
    tuple[tuple[int, int, bool], ...],
    tuple[int, ...],
]


def reactions(received: PeerSegments, rst_acknowledges: bool) -> Reactions:
    """A :class:`PeerScript`'s windows, ack ceiling, actions, acks and ack times from the
    peer's segments, all at once over the columns.

    Taking the segments in order, skipping the ignored ones: a segment acknowledges when it
    carries ACK (and is no RST, unless ``rst_acknowledges``). One that acknowledges more than
    any before it gives an ack; one that acknowledges at least as much as any before it sets
    the window advertised at that offset (the last such segment wins). A segment with data,
    FIN or RST is an action after all the peer had acknowledged by then, actions stable-sorted
    by that. The ceiling is the peer's furthest acknowledgement when one of its actions is a
    RST. ``tests/test_peer_script.py`` keeps the segment-by-segment loop this replaces."""
    flags = received.flags
    ack = received.ack
    keep = ~received.ignored
    acknowledging = keep & (flags & TCP_ACK != 0)
    if not rst_acknowledges:
        acknowledging &= flags & TCP_RST == 0
    acked = np.maximum.accumulate(np.where(acknowledging, ack, 0)) if len(ack) else ack
    acked_before = np.concatenate(([0], acked[:-1])) if len(ack) else ack

    new = np.flatnonzero(acknowledging & (ack > acked_before))
    carried = (received.length[new] != 0) | (flags[new] & TCP_FIN != 0)
    ack_delays = tuple(
        zip(ack[new].tolist(), received.ack_delay_ns[new].tolist(), carried.tolist(), strict=True)
    )
    ack_sent = tuple(received.sent_ns[new].tolist())

    at_most = np.flatnonzero(acknowledging & (ack == acked))
    offsets = ack[at_most]
    last_of_offset = np.append(offsets[1:] != offsets[:-1], True) if len(offsets) else offsets
    windows = tuple(
        zip(
            offsets[last_of_offset].tolist(),
            received.window[at_most[last_of_offset]].tolist(),
            strict=True,
        )
    )

    acting = np.flatnonzero(keep & ((received.length != 0) | (flags & (TCP_FIN | TCP_RST) != 0)))
    order = acting[np.argsort(acked[acting], kind="stable")]
    actions = tuple(
        map(
            PeerAction,
            acked[order].tolist(),
            received.action_delay_ns[order].tolist(),
            received.seq[order].tolist(),
            received.length[order].tolist(),
            (flags[order] & (TCP_PSH | TCP_FIN | TCP_RST)).tolist(),
        )
    )
    reset = bool((flags[acting] & TCP_RST != 0).any())
    furthest = int(acked[-1]) if len(acked) else 0
    return windows, furthest if reset else None, actions, ack_delays, ack_sent
