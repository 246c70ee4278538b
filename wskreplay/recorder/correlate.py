"""Calls <-> stream bytes <-> segments, and the clock offset between two sources.

Everything here works on one direction of one connection at a time, with numpy arrays in
the capture's arrival order, and never looks at a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wskreplay.formats.tcpip import TCP_RST, TcpPackets
from wskreplay.policies import DEFAULT_RESET, ResetPolicy
from wskreplay.recorder import tcp

NEVER = -1


@dataclass
class WireView:
    """When each byte of one stream first went out, and when the other side acknowledged it.

    ``sent_*``: the stream's segments carrying new data, in arrival order: ``sent_end`` is
    the running maximum of their ends, so byte ``o`` first appeared in the segment where
    ``sent_end`` first exceeds ``o``. ``ack_*``: the other direction's running maximum
    acknowledgement (relative to this stream)."""

    sent_time: np.ndarray
    sent_end: np.ndarray
    ack_time: np.ndarray
    ack_value: np.ndarray

    @classmethod
    def of(
        cls,
        seg: TcpPackets,
        sent: tcp.Direction,
        acks: tcp.Direction,
        policy: ResetPolicy = DEFAULT_RESET,
    ) -> WireView:
        """``policy``: whether a RST's ACK field acknowledges (by default it does not)."""
        lens = seg.payload_len[sent.rows]
        has = lens > 0
        end = np.maximum.accumulate(np.where(has, sent.rel_seq + lens, 0)) if len(lens) else lens
        times = seg.time_ns[sent.rows]
        value = acks.rel_ack
        if not policy.ack_acknowledges:
            value = np.where(seg.flags[acks.rows] & TCP_RST, 0, value)
        ack = np.maximum.accumulate(value) if len(value) else value
        return cls(times, end, seg.time_ns[acks.rows], ack)

    @classmethod
    def empty(cls) -> WireView:
        z = np.empty(0, np.int64)
        return cls(z, z, z, z)

    def first_sent(self, offsets: np.ndarray) -> np.ndarray:
        """Time each stream offset first went out, NEVER when it never did."""
        if not len(self.sent_end):
            return np.full(len(offsets), NEVER, np.int64)
        k = np.searchsorted(self.sent_end, offsets, side="right")
        found = k < len(self.sent_end)
        return np.where(found, self.sent_time[np.minimum(k, len(self.sent_time) - 1)], NEVER)

    def acked(self, ends: np.ndarray) -> np.ndarray:
        """Time the other side first acknowledged every byte before each end, or NEVER."""
        if not len(self.ack_value):
            return np.full(len(ends), NEVER, np.int64)
        k = np.searchsorted(self.ack_value, ends, side="left")
        found = k < len(self.ack_value)
        return np.where(found, self.ack_time[np.minimum(k, len(self.ack_time) - 1)], NEVER)

    def shifted(self, delta_ns: int) -> WireView:
        return WireView(
            self.sent_time + delta_ns, self.sent_end, self.ack_time + delta_ns, self.ack_value
        )


def merge_intervals(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of [start, end) intervals, sorted and disjoint (touching ones joined)."""
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if not len(starts):
        return starts.astype(np.int64), ends.astype(np.int64)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    new = np.concatenate(([True], starts[1:] > reach[:-1]))
    first = np.flatnonzero(new)
    last = np.concatenate((first[1:], [len(starts)])) - 1
    return starts[first], reach[last]


def covered_bytes(
    cov_start: np.ndarray, cov_end: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """For each range [lo, hi): how many of its bytes the disjoint sorted cover holds."""
    prefix = np.concatenate(([0], np.cumsum(cov_end - cov_start)))

    def upto(x: np.ndarray) -> np.ndarray:
        k = np.searchsorted(cov_start, x, side="right")
        inside = np.where(k > 0, np.minimum(x, cov_end[np.maximum(k - 1, 0)]), 0)
        partial = np.where(k > 0, inside - cov_start[np.maximum(k - 1, 0)], 0)
        return prefix[np.maximum(k - 1, 0)] * (k > 0) + np.maximum(partial, 0)

    if not len(cov_start):
        return np.zeros(len(lo), np.int64)
    return upto(hi) - upto(lo)


@dataclass(frozen=True)
class ClockAlignment:
    """How to move the capture's times onto the recorder's: ``recorder = capture - offset``.

    ``offset_ns`` is the upper bound the send side gives (no byte goes out before its call
    was issued: offset <= min(first wire time - issue time)); ``low_ns`` the lower bound the
    completion side gives (a call completes after its last byte went out: offset >=
    max(last wire time - completion time)). The truth lies in [low_ns, offset_ns]; the
    estimate assumes the fastest call reached the wire at once. Only sends that returned
    STATUS_PENDING and completed successfully give a lower bound: a send the transport
    completed at once (STATUS_SUCCESS) may complete before its bytes leave."""

    offset_ns: int
    low_ns: int | None
    pairs: int
    method: str = "send-to-wire lower envelope"

    @property
    def uncertainty_ns(self) -> int | None:
        if self.low_ns is None or self.low_ns > self.offset_ns:
            return None
        return self.offset_ns - self.low_ns

    def as_dict(self) -> dict:
        return {
            "offset_ns": self.offset_ns,
            "low_ns": self.low_ns,
            "uncertainty_ns": self.uncertainty_ns,
            "pairs": self.pairs,
            "method": self.method,
        }


def align_clocks(
    issue_ns: np.ndarray,
    first_wire_ns: np.ndarray,
    completion_ns: np.ndarray,
    last_wire_ns: np.ndarray,
) -> ClockAlignment | None:
    """The offset of the capture clock from the recorder clock, from matched calls only
    (arrays of the same length; NEVER where unknown). None without a single pair."""
    send = first_wire_ns != NEVER
    if not send.any():
        return None
    upper = int((first_wire_ns[send] - issue_ns[send]).min())
    done = (completion_ns != NEVER) & (last_wire_ns != NEVER)
    lower = int((last_wire_ns[done] - completion_ns[done]).max()) if done.any() else None
    return ClockAlignment(upper, lower, int(send.sum()))


def infer_completion_policy(
    completion_ns: np.ndarray, last_wire_ns: np.ndarray, acked_ns: np.ndarray
) -> dict:
    """Whether pending sends complete after the peer's ACK of their last byte (``on-ack``) or its
    transmission (``on-transmit``), with the evidence (arrays over successful completions
    of non-empty calls; NEVER where unknown)."""
    usable = (completion_ns != NEVER) & (last_wire_ns != NEVER) & (acked_ns != NEVER)
    n = int(usable.sum())
    if not n:
        return {
            "policy": "unknown",
            "evidence": {
                "calls": 0,
                "why": "no call with both its transmission and its acknowledgement on the wire",
            },
        }
    c, tx, ack = completion_ns[usable], last_wire_ns[usable], acked_ns[usable]
    after_ack = float(np.mean(c >= ack))
    policy = "on-ack" if after_ack >= 0.9 else "on-transmit" if after_ack <= 0.1 else "mixed"
    return {
        "policy": policy,
        "evidence": {
            "calls": n,
            "completed_after_ack": round(after_ack, 4),
            "median_ack_to_completion_ns": int(np.median(c - ack)),
            "median_transmit_to_completion_ns": int(np.median(c - tx)),
        },
    }
