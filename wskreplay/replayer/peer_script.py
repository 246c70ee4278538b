"""What the recorded peer of a socket did, as reactions to what it had received: the input
of :class:`~wskreplay.replayer.peer.RecordedPeer`."""

from __future__ import annotations

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
    ack_delay = np.maximum(time_col - half - had(ack_col), 0).tolist()
    action_delay = np.maximum(time_col - half - had(acked_then), 0).tolist()
    flags = flag_col.tolist()
    acks = ack_col.tolist()
    windows = seg.column("window")[inbound].tolist()
    seqs = seg.column("seq")[inbound].tolist()
    lengths = seg.column("length")[inbound].tolist()
    table: list[tuple[int, int]] = []
    ack_delays: list[tuple[int, int, bool]] = []
    ack_sent: list[int] = []
    actions: list[PeerAction] = []
    acked = 0
    reset = False
    skip = ignored.tolist()
    rst_acks = policy.ack_acknowledges
    for i, (f, a, w, q, n) in enumerate(zip(flags, acks, windows, seqs, lengths, strict=True)):
        if skip[i]:
            continue
        if f & TCP_ACK and (rst_acks or not f & TCP_RST):
            if a > acked:
                ack_delays.append((a, ack_delay[i], bool(n or f & TCP_FIN)))
                ack_sent.append(int(time_col[i]) - half)
            if not table or a > table[-1][0]:
                table.append((a, w))
            elif a == table[-1][0]:
                table[-1] = (a, w)
            acked = max(acked, a)
        if n or f & (TCP_FIN | TCP_RST):
            actions.append(
                PeerAction(acked, action_delay[i], q, n, f & (TCP_PSH | TCP_FIN | TCP_RST))
            )
            reset |= bool(f & TCP_RST)
    actions.sort(key=lambda x: x.after)
    return PeerScript(
        tuple(table),
        acked if reset else None,
        tuple(actions),
        tuple(ack_delays),
        tuple(ack_sent),
        tuple(out_reach.tolist()),
        tuple((out_time + half).tolist()),
    )
