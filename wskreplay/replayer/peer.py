"""The far end of an emulated connection: the path to it and its receiver.

:class:`ParametricPeer` is the simple kind: a path with a round-trip time, a bottleneck
rate and a loss rate, and a receiver with a receive buffer that its application reads at
some rate. It acknowledges at once when more than ``ack_every - 1`` full segments' worth of
data is unacknowledged (RFC 1122 4.2.3.2 "at least every second full-sized segment",
counted in bytes as Linux does), otherwise after the delayed-ACK timeout, and out-of-order
data at once (RFC 5681 4.2).
Deterministic for a seed. Sans-IO: it is given the segments the sender emits and returns
what comes back, with the time it reaches the sender.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Final

from wskreplay.formats.tcpip import TCP_FIN, TCP_RST
from wskreplay.replayer.tcp_sender import NEVER, SentSegment

HEADER_BYTES: Final = 54
"""What a TCP segment's frame adds to its payload on the bottleneck (Ethernet, IPv4 and
TCP headers without options): its serialization time counts them."""


@dataclass(frozen=True)
class PathParams:
    rtt_ns: int = 1_000_000
    rate_bps: int | None = None
    """Bottleneck rate; None: no serialization delay."""
    loss: float = 0.0
    seed: int = 0
    receive_window: int = 262_144
    read_rate_bps: int | None = None
    """How fast the peer's application reads; None: at once."""
    delayed_ack_ns: int = 40_000_000
    ack_every: int = 2
    mss: int = 1460


@dataclass(slots=True, init=False)
class PeerAck:
    """A segment from the peer reaching the sender at ``time_ns``."""

    time_ns: int
    ack: int
    window: int
    flags: int = 0
    sent_ns: int = 0
    """When the peer sent it (the wire time at the peer's side)."""
    seq: int = 0
    """Offset in the peer's own stream of the data it carries (``length`` bytes)."""
    length: int = 0

    def __init__(
        self,
        time_ns: int,
        ack: int,
        window: int,
        flags: int = 0,
        sent_ns: int = 0,
        seq: int = 0,
        length: int = 0,
    ) -> None:
        self.time_ns = time_ns
        self.ack = ack
        self.window = window
        self.flags = flags
        self.sent_ns = sent_ns
        self.seq = seq
        self.length = length


class ParametricPeer:
    def __init__(self, params: PathParams) -> None:
        self.p = params
        self.rng = random.Random(params.seed)
        self.link_free = 0
        self.rcv_nxt = 0
        self.out_of_order: dict[int, int] = {}
        """Start -> end of segments that arrived beyond rcv_nxt."""
        self.unacked_segments = 0
        self.unacked_bytes = 0
        self.delayed_until = NEVER
        self.read_base_ns: int | None = None
        self.fin_at = NEVER
        """Where its FIN came in the stream (NEVER: none came)."""
        self.dropped = 0
        self.acked_sent = 0
        """The highest acknowledgement sent so far."""

    def transmit(self, seg: SentSegment) -> tuple[int, int]:
        """When ``seg`` leaves the sender (once the segments before it are serialized onto
        the bottleneck) and when it reaches the peer, :data:`NEVER` if the path loses it. A capture
        at the sender stamps a segment when it starts to leave, and the RTT measured from
        such a capture runs from there: the arrival is half of it after the departure."""
        start = max(seg.time_ns, self.link_free)
        rate = self.p.rate_bps
        serialization = (seg.length + HEADER_BYTES) * 8 * 1_000_000_000 // rate if rate else 0
        self.link_free = start + serialization
        if self.p.loss and self.rng.random() < self.p.loss:
            self.dropped += 1
            return start, NEVER
        return start, start + self.p.rtt_ns // 2

    def _window(self, time_ns: int) -> int:
        if self.read_base_ns is None:
            self.read_base_ns = time_ns
        if self.p.read_rate_bps is None:
            read = self.rcv_nxt
        else:
            elapsed = max(time_ns - self.read_base_ns, 0)
            read = min(self.rcv_nxt, elapsed * self.p.read_rate_bps // 8_000_000_000)
        return max(self.p.receive_window - (self.rcv_nxt - read), 0)

    def _received(self) -> int:
        """What it has received in order, its FIN counting as a byte."""
        return self.rcv_nxt + (1 if self.fin_at <= self.rcv_nxt else 0)

    def _ack_value(self) -> int:
        return self._received()

    def _ack(self, time_ns: int, value: int | None = None) -> PeerAck:
        """Acknowledge what it has (``value``: no further than that)."""
        self.unacked_segments = 0
        self.unacked_bytes = 0
        self.delayed_until = NEVER
        ack = self._ack_value() if value is None else min(value, self._ack_value())
        self.acked_sent = max(self.acked_sent, ack)
        return PeerAck(time_ns + self.p.rtt_ns // 2, ack, self._window(time_ns), 0, time_ns)

    def receive(self, seg: SentSegment, at_ns: int) -> list[PeerAck]:
        """``seg`` arrives at the peer at ``at_ns``; the ACKs it causes at once."""
        kind = self._take(seg)
        if kind == "in-order":
            return self._in_order(at_ns)
        return self._react(kind, at_ns)

    def _react(self, kind: str, at_ns: int) -> list[PeerAck]:
        """The ACK for a segment that did not advance the stream in order: none for one
        that carries nothing, else at once (a FIN, out-of-order data, a duplicate)."""
        return [] if kind == "none" else [self._ack(at_ns)]

    def _take(self, seg: SentSegment) -> str:
        """Take ``seg`` into the receive state: ``in-order`` (it advanced what was received),
        ``out-of-order``, ``fin``, ``duplicate`` or ``none`` (nothing to acknowledge)."""
        if seg.flags & TCP_FIN:
            self.fin_at = seg.seq
        end = seg.seq + seg.length
        if seg.length and seg.seq <= self.rcv_nxt < end:
            self.rcv_nxt = end
            while self.rcv_nxt in self.out_of_order:
                self.rcv_nxt = self.out_of_order.pop(self.rcv_nxt)
            self.unacked_segments += 1
            self.unacked_bytes += seg.length
            return "in-order"
        if seg.length and seg.seq > self.rcv_nxt:
            self.out_of_order[seg.seq] = max(end, self.out_of_order.get(seg.seq, 0))
            return "out-of-order"
        if seg.flags & TCP_FIN and seg.seq == self.rcv_nxt:
            return "fin"
        return "duplicate" if seg.length else "none"

    def _in_order(self, at_ns: int) -> list[PeerAck]:
        """The ACK rule for new in-order data: at once past ``ack_every - 1`` full segments
        or with a hole still open, else when the delayed-ACK timer fires."""
        if self.out_of_order or self.unacked_bytes > (self.p.ack_every - 1) * self.p.mss:
            return [self._ack(at_ns)]
        if self.delayed_until == NEVER:
            self.delayed_until = at_ns + self.p.delayed_ack_ns
        return []

    def timer(self) -> int:
        """When :meth:`on_timer` is next due, or :data:`NEVER`."""
        return self.delayed_until

    def on_timer(self, time_ns: int) -> list[PeerAck]:
        if time_ns >= self.delayed_until:
            return [self._ack(self.delayed_until)]
        return []


class RisingCursor:
    """``bisect.bisect_right`` over sorted ``keys`` for values that mostly rise (what a
    peer has received): each lookup starts where the last one ended, so a replay's lookups
    cost one step each rather than a bisection. Any value gives bisect's answer."""

    def __init__(self, keys: list[int]) -> None:
        self.keys = keys
        self.k = 0

    def right(self, value: int) -> int:
        keys, k = self.keys, self.k
        n = len(keys)
        while k < n and keys[k] <= value:
            k += 1
        while k > 0 and keys[k - 1] > value:
            k -= 1
        self.k = k
        return k


@dataclass(slots=True, init=False)
class PeerAction:
    """Something the recorded peer did once it had received ``after`` bytes: ``delay_ns``
    after that moment it sent ``length`` bytes of its own stream at ``seq`` (``flags``:
    PSH, FIN or RST)."""

    after: int
    delay_ns: int
    seq: int
    length: int
    flags: int

    def __init__(self, after: int, delay_ns: int, seq: int, length: int, flags: int) -> None:
        self.after = after
        self.delay_ns = delay_ns
        self.seq = seq
        self.length = length
        self.flags = flags


@dataclass(frozen=True)
class PeerScript:
    """The recorded peer's behaviour, as reactions to what it had received."""

    windows: tuple[tuple[int, int], ...] = ()
    """(acknowledged offset, window it advertised then), by offset."""
    ack_ceiling: int | None = None
    """The furthest the recorded peer ever acknowledged, when it never acknowledged
    more before resetting: a replay does not get further acknowledgements from it."""
    actions: tuple[PeerAction, ...] = ()
    acks: tuple[tuple[int, int, bool], ...] = ()
    """(offset it acknowledged, how long after receiving the byte before it, whether its own
    data carried that acknowledgement), by offset."""
    ack_sent_ns: tuple[int, ...] = ()
    """When the recorded peer sent each of ``acks`` (trace time, at the peer)."""
    received_bytes: tuple[int, ...] = ()
    """Counts of bytes the recorded peer had received, rising ..."""
    received_ns: tuple[int, ...] = ()
    """... and when it had them."""

    def held_ns(self, k: int, offset: int) -> int | None:
        """How long the recorded peer held an acknowledgement of ``offset`` bytes, which it
        only acknowledged with ``acks[k]`` (a cumulative ACK, or one carried on its later
        data): from having received them to sending that ACK."""
        if k >= len(self.ack_sent_ns):
            return None
        at = bisect.bisect_left(self.received_bytes, offset)
        if at >= len(self.received_bytes):
            return None
        return max(self.ack_sent_ns[k] - self.received_ns[at], 0)


class RecordedPeer(ParametricPeer):
    """A peer that reacts to what it receives the way the recorded one did.

    - ACKs: once it has received up to an offset the recorded peer acknowledged, it
      acknowledges that offset (no further: where the recording lost a segment, the
      recorded peer's cumulative ACK stopped short of what this one has) after the delay
      the recorded peer took, with a pure ACK or with the data segment that carried it in
      the recording; data the recording never saw acknowledged on its own waits for the
      next such offset, and is acknowledged alone only if that does not come within the
      time the recorded peer held it (from receiving it to the cumulative or data-carried
      ACK that covered it); past the recorded stream, the parametric rules.
    - Windows: the one the recorded peer advertised at the same point of the stream.
    - Data, FIN and RST: sent once it has received what it had received when it sent them
      in the recording, after the same delay; after a reset, nothing.
    - It acknowledges no further than the recorded peer did before resetting.
    Path timing is the parametric one."""

    def __init__(self, params: PathParams, script: PeerScript, start_ns: int = 0) -> None:
        super().__init__(params)
        self.script = script
        self._windows_reached = RisingCursor([offset for offset, _ in script.windows])
        self._ack_offsets = [offset for offset, _, _ in script.acks]
        self._acks_reached = RisingCursor(self._ack_offsets)
        self.next_ack = 0
        self.acks_due: list[tuple[int, int]] = []
        """(time the peer sends it, value) of scripted ACKs not yet sent."""
        self.next_action = 0
        self.due: list[tuple[int, PeerAction]] = []
        self.reset_sent = False
        self.held_up_to: int | None = None
        """The recorded ACK offset the armed hold stands for: it acknowledges no further."""
        self._arm(start_ns)

    def _arm(self, time_ns: int) -> None:
        actions = self.script.actions
        if self.next_action >= len(actions):
            return
        have = self._received()
        while self.next_action < len(actions) and actions[self.next_action].after <= have:
            action = actions[self.next_action]
            self.due.append((time_ns + action.delay_ns, action))
            self.next_action += 1

    def _ack_value(self) -> int:
        ack = self._received()
        ceiling = self.script.ack_ceiling
        return ack if ceiling is None else min(ack, ceiling)

    def _window(self, time_ns: int) -> int:
        windows = self.script.windows
        if not windows:
            return super()._window(time_ns)
        k = self._windows_reached.right(self._ack_value())
        return super()._window(time_ns) if k == 0 else windows[k - 1][1]

    def _in_order(self, at_ns: int) -> list[PeerAck]:
        """New data or a FIN in order: acknowledged as the recorded peer did (its FIN
        counts as a byte, as in its ACK numbers)."""
        if self.next_ack >= len(self._ack_offsets):
            self.held_up_to = None
            return super()._in_order(at_ns)
        have = self._ack_value()
        reached = self._acks_reached.right(have)
        if reached > self.next_ack:
            value, delay, carried = self.script.acks[reached - 1]
            if not carried:
                # A later ACK due sooner than earlier ones covers them: they are not sent.
                at = at_ns + delay
                self.acks_due = [(t, v) for t, v in self.acks_due if t < at]
                self.acks_due.append((at, value))
            self.next_ack = reached
            if value >= have:
                self.delayed_until = NEVER
                return []
        if self.delayed_until == NEVER:
            held = self.script.held_ns(self.next_ack, have)
            self.delayed_until = at_ns + (self.p.delayed_ack_ns if held is None else held)
            self.held_up_to = None if held is None else self._ack_offsets[self.next_ack]
        return []

    def _react(self, kind: str, at_ns: int) -> list[PeerAck]:
        """A duplicate or out-of-order segment: a duplicate ACK at once, of what it has
        acknowledged so far (the recorded peer had not necessarily received what this one
        has: a segment the recording lost, resent, is a duplicate here)."""
        if kind == "none":
            return []
        value = min(self._ack_value(), self.acked_sent)
        return [PeerAck(at_ns + self.p.rtt_ns // 2, value, self._window(at_ns), 0, at_ns)]

    def receive(self, seg: SentSegment, at_ns: int) -> list[PeerAck]:
        if self.reset_sent:
            return []
        kind = self._take(seg)
        out = self._in_order(at_ns) if kind in ("in-order", "fin") else self._react(kind, at_ns)
        self._arm(at_ns)
        return out

    def timer(self) -> int:
        if self.reset_sent:
            return NEVER
        best = self.delayed_until
        for t, _ in self.due:
            if t < best:
                best = t
        for t, _v in self.acks_due:
            if t < best:
                best = t
        return best

    def on_timer(self, time_ns: int) -> list[PeerAck]:
        if self.reset_sent:
            return []
        out: list[PeerAck] = []
        if time_ns >= self.delayed_until:
            out.append(self._ack(self.delayed_until, self.held_up_to))
            self.held_up_to = None
        half = self.p.rtt_ns // 2
        if self.acks_due:
            for t, value in self.acks_due:
                if t <= time_ns:
                    if value >= self.rcv_nxt:
                        self.delayed_until = NEVER
                        self.unacked_segments = self.unacked_bytes = 0
                    self.acked_sent = max(self.acked_sent, value)
                    out.append(PeerAck(t + half, value, self._window(t), 0, t))
            self.acks_due = [(t, v) for t, v in self.acks_due if t > time_ns]
        ready = [(t, a) for t, a in self.due if t <= time_ns]
        if ready:
            ready.sort(key=_due_time)
            self.due = [(t, a) for t, a in self.due if t > time_ns]
        for t, action in ready:
            # Its data acknowledges what the recorded peer's did, or what it has already
            # acknowledged: the rest gets the recorded ACKs' timing.
            value = min(self._ack_value(), max(action.after, self.acked_sent))
            self.acked_sent = max(self.acked_sent, value)
            out.append(
                PeerAck(
                    t + half,
                    value,
                    self._window(t),
                    action.flags,
                    t,
                    action.seq,
                    action.length,
                )
            )
            if action.flags & TCP_RST:
                self.reset_sent = True
                self.due = []
                self.acks_due = []
                break
        if len(out) > 1:
            out.sort(key=_arrival)
        return out


def _due_time(due: tuple[int, PeerAction]) -> int:
    return due[0]


def _arrival(ack: PeerAck) -> int:
    return ack.time_ns
