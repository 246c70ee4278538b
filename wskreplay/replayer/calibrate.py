"""What a recording tells about its transport and path: the profile completed from it, and a
parametric path like the recorded one.

The profile's open points (docs/emulator.md) are calibrated from the recording where it
carries the answer, as wsk-facts.md asks: the completion policy inferred at import, the
ControlInfo (level, type) pairs and flags the transport accepted, the MSS from the SYN
options, and the time from a send's ACK (or transmission) to its completion routine.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.formats.tcpip import TCP_RST
from wskreplay.policies import policies_of
from wskreplay.replayer.peer import HEADER_BYTES, PathParams
from wskreplay.replayer.profile import TransportProfile
from wskreplay.replayer.sent import merged, missed_sends, serialization_ns
from wskreplay.trace.model import Direction, SocketPart, Trace, socket_parts


def outbound_data(trace: Trace, socket: int) -> np.ndarray:
    """Mask of the segments that carried the socket's own bytes."""
    seg = trace.segments
    return (
        (seg.column("socket") == socket)
        & (seg.column("direction") == int(Direction.OUT))
        & (seg.column("length") > 0)
    )


def _parts(trace: Trace, parts: dict[int, SocketPart] | None) -> dict[int, SocketPart]:
    """The caller's :func:`socket_parts` of ``trace``, or made here when it has none."""
    return socket_parts(trace) if parts is None else parts


def inferred_profile(
    trace: Trace,
    profile: TransportProfile,
    completion: str | None = None,
    parts: dict[int, SocketPart] | None = None,
) -> TransportProfile:
    """``profile`` completed with what ``trace`` shows (``completion`` overrides the
    recorded completion policy; ``parts``: the trace's :func:`socket_parts`, when the
    caller has them)."""
    parts = _parts(trace, parts)
    recorded = (trace.metadata.get("completion_policy") or {}).get("policy")
    policy = completion or (
        recorded if recorded in ("on-ack", "on-transmit") else profile.completion.policy
    )
    latency = completion_latency_ns(trace, policy, parts)
    profile = profile.with_changes(
        "completion",
        policy=policy,
        latency_ns=profile.completion.latency_ns if latency is None else latency,
    )
    if "policies" in trace.metadata:
        profile = replace(profile, reset=policies_of(trace.metadata))
    layout = wsk.X64 if profile.send.control_info_layout == "x64" else wsk.X86
    pairs = set(profile.send.control_info_accepted)
    flags = set(profile.send.supported_flags)
    calls = trace.calls
    success = nt.success_mask(calls.column("status"))
    sent = {
        calls.control_info(i)
        for i in np.flatnonzero(success & (calls.column("control_len") >= 0)).tolist()
    }
    for raw in sent:
        try:
            pairs |= {(m.level, m.type) for m in wsk.decode_cmsgs(raw, layout)}
        except InputError:
            pass  # a malformed chain the recorded transport took: nothing to learn
    if (success & (calls.column("flags") & wsk.WSK_FLAG_OOB != 0)).any():
        flags.add("WSK_FLAG_OOB")
    profile = profile.with_changes(
        "send", control_info_accepted=tuple(sorted(pairs)), supported_flags=tuple(sorted(flags))
    )
    mss = (trace.metadata.get("capture") or {}).get("mss")
    if isinstance(mss, int) and 0 < mss <= 65535:
        profile = profile.with_changes("tcp", mss=mss)
    if profile.tcp.nagle and nagle_broken(trace, profile.tcp.mss, parts):
        profile = profile.with_changes("tcp", nagle=False)
    flight = -(-max_flight_bytes(trace, parts) // profile.tcp.mss)
    if flight > profile.tcp.initial_cwnd_segments:
        profile = profile.with_changes("tcp", initial_cwnd_segments=flight)
    return profile


def max_flight_bytes(trace: Trace, parts: dict[int, SocketPart] | None = None) -> int:
    """The most bytes any recorded socket had sent and not yet seen acknowledged: its
    sender's congestion window was at least that (the model starts from it, so a sender
    that was never window-limited is not made so by the model's slow start)."""
    most = 0
    for part in _parts(trace, parts).values():
        seg = part.trace.segments
        rows = np.argsort(seg.column("time_ns"), kind="stable")
        out = seg.column("direction")[rows] == int(Direction.OUT)
        ends = np.where(
            out, (seg.column("seq")[rows] + seg.column("length")[rows]).astype(np.int64), 0
        )
        acks = np.where(
            ~out & (seg.column("flags")[rows] & TCP_RST == 0),
            seg.column("ack")[rows].astype(np.int64),
            0,
        )
        if len(rows):
            flight = np.maximum.accumulate(ends) - np.maximum.accumulate(acks)
            most = max(most, int(flight.max()))
    return most


def nagle_broken(trace: Trace, mss: int, parts: dict[int, SocketPart] | None = None) -> bool:
    """Whether the recorded sender sent new bytes in a segment smaller than the MSS while
    an earlier small one was still unacknowledged (by the peer, or by the segment itself
    resending it), for bytes of a call without WSK_FLAG_NODELAY: no variant of Nagle's
    algorithm allows it, so the recorded transport did not apply it."""
    for sid, part in _parts(trace, parts).items():
        seg, calls = part.trace.segments, part.trace.calls
        times, kinds = seg.column("time_ns"), seg.column("direction").tolist()
        seg_ack, seg_len, seg_seq = (seg.column(c).tolist() for c in ("ack", "length", "seq"))
        nodelay = (calls.column("flags") & wsk.WSK_FLAG_NODELAY) != 0
        full = sender_mss(part.trace, sid) or mss
        order = np.argsort(times, kind="stable")
        mine = np.flatnonzero(nt.success_mask(calls.column("status")))
        call_start = calls.column("stream_offset")[mine].astype(np.int64)
        call_order = np.argsort(call_start, kind="stable")
        starts, flagged = call_start[call_order], nodelay[mine][call_order]
        acked, small_end, high = 0, 0, 0
        for r in order.tolist():
            if kinds[r] == int(Direction.IN):
                acked = max(acked, seg_ack[r])
                continue
            n, q = seg_len[r], seg_seq[r]
            if not n or q + n <= high:
                continue
            high = q + n
            if n < full:
                if small_end > min(acked, q):
                    k = int(np.searchsorted(starts, q + n - 1, side="right")) - 1
                    if k < 0 or not flagged[k]:
                        return True
                small_end = q + n
    return False


def _first_reaching(times: np.ndarray, reach: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For each end, the first time ``reach`` (a running maximum) got to it; -1 if never."""
    if not len(reach):
        return np.full(len(ends), -1, np.int64)
    k = np.searchsorted(reach, ends, side="left")
    return np.where(k < len(reach), times[np.minimum(k, len(times) - 1)], -1)


def completion_latency_ns(
    trace: Trace, policy: str, parts: dict[int, SocketPart] | None = None
) -> int | None:
    """Median time from the policy's condition (the peer's ACK of a pending send's last byte,
    or that byte's first transmission) to the send's recorded completion; None when no call
    shows both."""
    delays = []
    for sid, part in _parts(trace, parts).items():
        calls, seg = part.trace.calls, part.trace.segments
        mine = np.flatnonzero(
            (calls.column("status") == nt.STATUS_PENDING)
            & (calls.column("completed") == 1)
            & (calls.column("completion_status") == nt.STATUS_SUCCESS)
            & (calls.column("length") > 0)
        )
        if not len(mine):
            continue
        ends = (calls.column("stream_offset")[mine] + calls.column("length")[mine]).astype(np.int64)
        if policy == "on-ack":
            inbound = seg.column("direction") == int(Direction.IN)
            rows = inbound & (seg.column("flags") & TCP_RST == 0)
            reach = np.maximum.accumulate(seg.column("ack")[rows].astype(np.int64))
        else:
            rows = outbound_data(part.trace, sid)
            reach = np.maximum.accumulate(
                (seg.column("seq")[rows] + seg.column("length")[rows]).astype(np.int64)
            )
        ref = _first_reaching(seg.column("time_ns")[rows].astype(np.int64), reach, ends)
        done = calls.column("completion_ns")[mine].astype(np.int64)
        ok = (ref >= 0) & (done >= ref)
        delays.append(done[ok] - ref[ok])
    every = np.concatenate(delays) if delays else np.empty(0, np.int64)
    return int(np.median(every)) if len(every) else None


def release_pieces(
    trace: Trace, paths: dict[int, PathParams], parts: dict[int, SocketPart] | None = None
) -> dict[int, list[tuple[int, int]]]:
    """For calls inferred from a capture: call index -> its bytes as pieces (length, delay
    from its first byte), where the recording sent its first byte and the rest apart by
    more than the bottleneck explains (``paths``: socket -> its replay's path), bytes the
    capture missed taken as sent by ``sent.missed_sends``. An inferred call may be several
    writes the inference merged (a host that wrote a response in parts): the replay hands
    each piece to TCP no earlier than the recording shows it leaving. Calls of a recorded
    WSK trace hand their bytes over at once: {}."""
    if "inferred" not in trace.metadata:
        return {}
    out: dict[int, list[tuple[int, int]]] = {}
    for socket, part in _parts(trace, parts).items():
        path = paths.get(socket)
        if path is not None:
            rows = part.call_rows.tolist()
            for call, pieces in socket_pieces(part.trace, socket, path).items():
                out[rows[call]] = pieces
    return out


def socket_pieces(trace: Trace, socket: int, path: PathParams) -> dict[int, list[tuple[int, int]]]:
    """:func:`release_pieces` of a trace of one socket's rows (keyed by its call rows)."""
    calls, seg = trace.calls, trace.segments
    rows = outbound_data(trace, socket)
    mine = np.flatnonzero(
        (calls.column("socket") == socket)
        & nt.success_mask(calls.column("status"))
        & (calls.column("length") > 0)
    )
    if not len(mine):
        return {}
    times = seg.column("time_ns")[rows].astype(np.int64)
    first_seq = int(seg.column("seq")[rows][0]) if len(times) else 0
    end = (seg.column("seq")[rows] + seg.column("length")[rows]).astype(np.int64)
    times, end = merged(times, end, *missed_sends(trace, socket, times, end, path.rtt_ns))
    if len(times) < 2:
        return {}
    before = np.concatenate(([first_seq], np.maximum.accumulate(end)[:-1]))
    new = end > before
    times, start, end = times[new], before[new], end[new]
    serialization = serialization_ns(end - start, path.rate_bps)
    apart = np.concatenate(([False], np.diff(times) > serialization[:-1]))
    order = mine[np.argsort(calls.column("stream_offset")[mine], kind="stable")]
    call_start = calls.column("stream_offset")[order].astype(np.int64)
    call_end = call_start + calls.column("length")[order].astype(np.int64)
    k = np.searchsorted(call_start, start, side="right") - 1
    held = np.maximum(k, 0)
    cuts = np.flatnonzero(apart & (k >= 0) & (start > call_start[held]) & (start < call_end[held]))
    first = _first_reaching(times, np.maximum.accumulate(end), call_start + 1)
    marks: dict[int, list[tuple[int, int]]] = {}
    for c in cuts.tolist():
        call = int(k[c])
        if first[call] >= 0:
            marks.setdefault(call, []).append(
                (int(start[c] - call_start[call]), max(int(times[c] - first[call]), 0))
            )
    pieces: dict[int, list[tuple[int, int]]] = {}
    for call, cut in marks.items():
        offsets = [0, *(m[0] for m in cut), int(call_end[call] - call_start[call])]
        delays = [0, *(m[1] for m in cut)]
        pieces[int(order[call])] = [
            (offsets[j + 1] - offsets[j], delays[j]) for j in range(len(delays))
        ]
    return pieces


def stack_delays_ns(trace: Trace, parts: dict[int, SocketPart] | None = None) -> np.ndarray:
    """Per call, the time from its issue to its bytes reaching TCP, as the sender host took
    it: for a call whose first byte went out with nothing of the socket's queued before it
    and no ACK in between (nothing but the host held it), the recorded time from issue to
    that byte at the capture point; for any other call, the least of those on its socket
    (0 when none shows it): such a call was held by TCP (Nagle, windows), not by the host,
    so its bytes were with TCP as early as the host allows."""
    delays = np.zeros(len(trace.calls), np.int64)
    for socket, part in _parts(trace, parts).items():
        delays[part.call_rows] = socket_stack_delays(part.trace, socket)
    return delays


def socket_stack_delays(trace: Trace, socket: int) -> np.ndarray:
    """:func:`stack_delays_ns` of a trace of one socket's rows."""
    calls, seg = trace.calls, trace.segments
    delays = np.zeros(len(calls), np.int64)
    mine = np.flatnonzero(nt.success_mask(calls.column("status")) & (calls.column("length") > 0))
    rows = outbound_data(trace, socket)
    if not len(mine) or not rows.any():
        return delays
    times = seg.column("time_ns")[rows].astype(np.int64)
    reach = np.maximum.accumulate(seg.column("seq")[rows] + seg.column("length")[rows])
    start = calls.column("stream_offset")[mine].astype(np.int64)
    issue = calls.column("issue_ns")[mine].astype(np.int64)
    first = _first_reaching(times, reach, start + 1)
    before = np.where(start > 0, _first_reaching(times, reach, start), -1)
    acks = seg.column("time_ns")[
        (seg.column("socket") == socket) & (seg.column("direction") == int(Direction.IN))
    ].astype(np.int64)
    acks.sort()
    ack_between = np.searchsorted(acks, first, side="right") > np.searchsorted(
        acks, issue, side="left"
    )
    shown = (first >= issue) & (before < issue) & ~ack_between
    if not shown.any():
        return delays
    delays[:] = int((first[shown] - issue[shown]).min())
    delays[mine[shown]] = first[shown] - issue[shown]
    return delays


def estimate_path(trace: Trace, socket: int, seed: int = 0) -> PathParams:
    """A parametric path like the recorded one (:func:`calibrated_path`)."""
    return calibrated_path(trace, socket, seed)[0]


def calibrated_path(trace: Trace, socket: int, seed: int = 0) -> tuple[PathParams, dict[str, str]]:
    """A parametric path like the recorded one: RTT from the fastest ACK of an outbound
    data segment (a RST's ACK field is no acknowledgement), the peer's largest advertised
    window and its delayed-ACK time; and, per value, where it came from (the recording,
    or the default because the recording had too little evidence), which a replay keeps
    in its metadata."""
    seg = trace.segments
    mine = seg.column("socket") == socket
    out = outbound_data(trace, socket)
    inb = mine & (seg.column("direction") == int(Direction.IN))
    acks = inb & (seg.column("flags") & TCP_RST == 0)
    ends = (seg.column("seq")[out] + seg.column("length")[out]).astype(np.int64)
    sent = seg.column("time_ns")[out]
    ack_t = seg.column("time_ns")[acks]
    ack_v = np.maximum.accumulate(seg.column("ack")[acks].astype(np.int64)) if acks.any() else None
    params: dict[str, Any] = {"seed": seed}
    evidence = {
        "rtt_ns": "default: no outbound data acknowledged in the recording",
        "delayed_ack_ns": "default: no outbound data acknowledged in the recording",
        "receive_window": "default: no segment from the peer",
        "rate_bps": "none (no serialization delay): no back-to-back full segments spaced apart",
    }
    if ack_v is not None and len(ends):
        k = np.searchsorted(ack_v, ends, side="left")
        ok = k < len(ack_v)
        delays = ack_t[k[ok]] - sent[ok]
        delays = delays[delays > 0]
        if len(delays):
            rtt = int(delays.min())
            params["rtt_ns"] = rtt
            slow = delays[delays > 2 * rtt]
            # A peer seen delaying ACKs: its typical delay. A peer never seen delaying
            # them (every ACK within two RTTs): it acknowledges at once, give or take.
            late = int(np.median(slow)) if len(slow) else int(np.percentile(delays, 90))
            params["delayed_ack_ns"] = max(late - rtt, 0)
            evidence["rtt_ns"] = f"the fastest of {len(delays)} ACKs of outbound data"
            evidence["delayed_ack_ns"] = (
                f"the median of {len(slow)} ACKs later than two RTTs"
                if len(slow)
                else "no ACK later than two RTTs: the 90th percentile, less the RTT"
            )
    if not peer_window_known(trace, socket):
        params["receive_window"] = UNKNOWN_WINDOW
        evidence["receive_window"] = "unknown (no handshake, no evidence of the scale): no limit"
    elif inb.any():
        window = int(seg.column("window")[inb].max())
        if window > 0:
            params["receive_window"] = window
            evidence["receive_window"] = "the peer's largest advertised window"
    rate = (trace.metadata.get("capture") or {}).get("link_rate_bps")
    if isinstance(rate, int) and rate > 0:
        evidence["rate_bps"] = "the capture's metadata"
    else:
        rate = link_rate_bps(trace, socket)
        if rate is not None:
            evidence["rate_bps"] = "the spacing of back-to-back full segments"
    if rate is not None:
        params["rate_bps"] = rate
    return PathParams(**params), evidence


UNKNOWN_WINDOW = 1 << 30
"""The peer's receive window when the recording cannot say it in bytes (a capture that
began after the handshake, with no evidence of the scale): it does not limit."""


def peer_window_known(trace: Trace, socket: int) -> bool:
    """Whether the recorded peer's windows are in bytes (import says so per socket)."""
    known = ((trace.metadata.get("capture") or {}).get("peer_window") or {}).get(str(socket))
    return not isinstance(known, dict) or known.get("known") != "unknown"


RTO_MARGIN = 1.1


def rto_floor_ns(trace: Trace, socket: int) -> int:
    """The longest the recorded sender waited for an acknowledgement without
    retransmitting (its retransmission timeout was longer than that): from each segment
    of new data that was never sent again to the first ACK covering it, or to the end of
    the recording, times :data:`RTO_MARGIN`; and from each segment that was sent again to
    its first resend (its timeout was at least that: the resend was the timer's, or a
    fast retransmit before it). A replay's RTO is kept above it, so the model does not
    retransmit where, or sooner than, the recorded stack did; 0 when the recording shows
    nothing."""
    seg = trace.segments
    out = outbound_data(trace, socket)
    if not out.any():
        return 0
    time = seg.column("time_ns")[out].astype(np.int64)
    start = seg.column("seq")[out].astype(np.int64)
    end = start + seg.column("length")[out].astype(np.int64)
    reach = np.maximum.accumulate(end)
    before = np.concatenate(([0], reach[:-1]))
    again = start < before
    first = np.flatnonzero(~again)
    resent = np.zeros(len(first), bool)
    resent_after = np.zeros(len(first), np.int64)
    for k in np.flatnonzero(again).tolist():
        lo = np.searchsorted(end[first], start[k], side="right")
        hi = np.searchsorted(start[first], end[k], side="left")
        hit = np.flatnonzero(time[first[lo:hi]] < time[k]) + lo
        fresh = hit[~resent[hit]]
        resent_after[fresh] = time[k] - time[first[fresh]]
        resent[hit] = True
    waited_for_resend = int(resent_after.max()) if len(resent_after) else 0
    kept = first[~resent]
    if not len(kept):
        return waited_for_resend
    mine = seg.column("socket") == socket
    acks = (
        mine & (seg.column("direction") == int(Direction.IN)) & (seg.column("flags") & TCP_RST == 0)
    )
    last = int(seg.column("time_ns")[mine].max())
    answered = np.full(len(kept), last, np.int64)
    if acks.any():
        ack_t = seg.column("time_ns")[acks].astype(np.int64)
        ack_v = np.maximum.accumulate(seg.column("ack")[acks].astype(np.int64))
        k = np.searchsorted(ack_v, end[kept], side="left")
        answered = np.where(k < len(ack_v), ack_t[np.minimum(k, len(ack_t) - 1)], last)
    return max(int(max(int((answered - time[kept]).max()), 0) * RTO_MARGIN), waited_for_resend)


def sender_mss(trace: Trace, socket: int) -> int | None:
    """The socket's MSS: the size the recorded sender cut longer sends at when the
    recording shows it (:func:`observed_mss`), else the one its SYN exchange allowed
    (``metadata.capture.sender_mss``, recorded at import), else None."""
    seen = observed_mss(trace, socket)
    return seen if seen is not None else announced_mss(trace, socket)


def mss_evidence(trace: Trace, socket: int) -> str:
    """Where :func:`sender_mss` found the socket's MSS."""
    if observed_mss(trace, socket) is not None:
        return "the size the recorded sender cut longer sends at"
    if announced_mss(trace, socket) is not None:
        return "the SYN exchange"
    return "default: the profile's (no SYN captured, no send cut)"


def announced_mss(trace: Trace, socket: int) -> int | None:
    """The MSS the socket's SYN exchange allowed its sender (``metadata.capture.sender_mss``,
    recorded at import), or None."""
    announced = ((trace.metadata.get("capture") or {}).get("sender_mss") or {}).get(str(socket))
    return announced if isinstance(announced, int) and 0 < announced <= 65535 else None


def observed_mss(trace: Trace, socket: int) -> int | None:
    """The segment size the recorded sender cut longer sends at: its largest outbound data
    segment, when at least two have that size and some call was longer (with TCP
    timestamps this is the SYN's MSS less 12 bytes; with segmentation offload at the
    capture point, a multiple of it). None when the recording does not show one."""
    seg, calls = trace.segments, trace.calls
    lengths = seg.column("length")[outbound_data(trace, socket)]
    if not len(lengths):
        return None
    largest = int(lengths.max())
    longer = (calls.column("length")[calls.column("socket") == socket] > largest).any()
    if (lengths == largest).sum() >= 2 and longer and largest <= 65535:
        return largest
    return None


def link_rate_bps(trace: Trace, socket: int) -> int | None:
    """The sender's link rate, from the spacing of consecutive full-sized segments of one
    call (back to back by construction: the call had queued both): their median spacing,
    or for calls inferred from a capture the least (the link was at least that fast; where
    the recording shows a call's segments further apart, :func:`release_pieces` replays
    that spacing, and a slower link would delay what the recording sent sooner);
    None when the recording shows no such pair, segments longer than the SYN exchange
    allowed (segmentation offload at the capture point: their spacing is the host's, not
    the link's), or most pairs no spacing at all (a link faster than the capture's clock
    resolves)."""
    seg, calls = trace.segments, trace.calls
    rows = outbound_data(trace, socket)
    if rows.sum() < 2:
        return None
    times = seg.column("time_ns")[rows].astype(np.int64)
    seq = seg.column("seq")[rows].astype(np.int64)
    length = seg.column("length")[rows].astype(np.int64)
    if int(length.max()) > (announced_mss(trace, socket) or 65535):
        return None
    mine = (calls.column("socket") == socket) & nt.success_mask(calls.column("status"))
    starts = np.sort(calls.column("stream_offset")[mine].astype(np.int64))
    call_of = np.searchsorted(starts, seq, side="right")
    pair = (
        (call_of[1:] == call_of[:-1])
        & (seq[1:] == seq[:-1] + length[:-1])
        & (length[:-1] == length.max())
    )
    if not pair.any():
        return None
    gaps = np.diff(times)[pair]
    if np.median(gaps) <= 0:
        return None
    gap = int(gaps[gaps > 0].min()) if "inferred" in trace.metadata else int(np.median(gaps))
    return int((int(length.max()) + HEADER_BYTES) * 8 * 1_000_000_000 // gap)
