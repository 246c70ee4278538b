"""The sending half of an emulated TCP connection, as a sans-IO state machine.

It is told, with the time: bytes the WSK layer queued (and whether WSK_FLAG_NODELAY asked
for them to go at once), the peer's acknowledgements and windows, timer expiries, close and
reset. It answers with the segments it sends and with how far the stream has been
transmitted and acknowledged (what the WSK layer completes sends on). Offsets are stream
offsets (0 = the first byte after the SYN); the FIN occupies the offset after the last byte.

What it models, each rule tested in tests/test_tcp_sender.py:
- segmentation at the MSS, PSH on a segment that empties the send queue;
- Nagle: a segment smaller than the MSS waits while data is unacknowledged (RFC 896, as
  RFC 1122 4.2.3.4 states it) or, in Minshall's variant, while an earlier small segment is
  (profile ``tcp.nagle_variant``), unless WSK_FLAG_NODELAY marked the bytes (the flag
  sends "the data, and any previously queued data ... without delay");
- the peer's receive window, zero windows and window probes (RFC 9293 3.8.6.1: a one-byte
  probe when the persist timer fires);
- the congestion window (RFC 5681): slow start, congestion avoidance, fast retransmit and
  NewReno fast recovery (RFC 6582) on the third duplicate ACK, retransmission timeout
  (RFC 6298, Karn's rule for samples, exponential backoff) with go-back-N after it;
- FIN after the data, RST.
Timing on the wire (serialization, propagation) is the path's and the peer's job, not this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST
from wskreplay.replayer.profile import TcpSettings

NEVER: Final = (1 << 62) - 1
"""The time of a timer that is not armed (year 2116 in ns since 1970): the emulator's
timers are plain ints, never None, so that compiled code keeps them unboxed. A time at or
past it counts as never."""


@dataclass(slots=True, init=False)
class SentSegment:
    time_ns: int
    seq: int
    length: int
    flags: int
    retransmission: bool = False

    def __init__(
        self,
        time_ns: int,
        seq: int,
        length: int,
        flags: int,
        retransmission: bool = False,
    ) -> None:
        self.time_ns = time_ns
        self.seq = seq
        self.length = length
        self.flags = flags
        self.retransmission = retransmission


@dataclass(slots=True, init=False)
class Transmitted:
    """Every stream byte before ``end`` has gone out at least once."""

    end: int
    time_ns: int

    def __init__(self, end: int, time_ns: int) -> None:
        self.end = end
        self.time_ns = time_ns


@dataclass(slots=True, init=False)
class Acknowledged:
    """The peer acknowledged every stream byte before ``end``."""

    end: int
    time_ns: int

    def __init__(self, end: int, time_ns: int) -> None:
        self.end = end
        self.time_ns = time_ns


TcpEvent = SentSegment | Transmitted | Acknowledged


class SentTimes:
    """The end offset and send time of each segment sent once, in the order sent: only new
    data is added, so the ends rise, and the ACKs consume them from the front."""

    def __init__(self) -> None:
        self.ends: list[int] = []
        self.times: list[int] = []
        self.head = 0
        """Entries before it are consumed (dropped in bulk, not one by one)."""

    def add(self, end: int, time_ns: int) -> None:
        self.ends.append(end)
        self.times.append(time_ns)

    def take_through(self, ack: int) -> int:
        """Consume the segments ``ack`` covers: the send time of the latest of them, or
        :data:`NEVER` when it covers none."""
        ends, k = self.ends, self.head
        n = len(ends)
        if k >= n or ends[k] > ack:
            return NEVER
        while k < n and ends[k] <= ack:
            k += 1
        sent = self.times[k - 1]
        if k == n:
            self.clear()
        elif k > 1024 and 2 * k > n:
            del self.ends[:k]
            del self.times[:k]
            self.head = 0
        else:
            self.head = k
        return sent

    def keep_through(self, offset: int) -> None:
        """Forget the segments that end past ``offset``."""
        ends = self.ends
        cut = len(ends)
        while cut > self.head and ends[cut - 1] > offset:
            cut -= 1
        del self.ends[cut:]
        del self.times[cut:]

    def clear(self) -> None:
        self.ends.clear()
        self.times.clear()
        self.head = 0


class TcpSender:
    def __init__(
        self, settings: TcpSettings, *, mss: int | None = None, peer_window: int = 65535
    ) -> None:
        self.settings = settings
        self._dupack_threshold = settings.dupack_threshold
        self._rto_min_ns = settings.rto_min_ns
        self._nagle = settings.nagle
        self._rfc896 = settings.nagle_variant == "rfc896"
        """The settings read on every ACK and segment, as native attributes (the settings
        are frozen)."""
        self.mss = mss or settings.mss
        self.queued = 0
        """Stream offset past the last byte the application queued."""
        self.una = 0
        """Oldest unacknowledged offset."""
        self.nxt = 0
        """Next offset to send."""
        self.high = 0
        """Highest offset ever sent (bytes below it were transmitted at least once)."""
        self.push_to = 0
        """Bytes below this offset go without Nagle's delay (WSK_FLAG_NODELAY)."""
        self.small_end = 0
        """End of the last segment sent smaller than the MSS."""
        self.rwnd = peer_window
        self.cwnd = settings.initial_cwnd_segments * self.mss
        self.ssthresh = 1 << 62
        self.dupacks = 0
        self.recover: int | None = None
        """In fast recovery: the highest offset sent when it began (RFC 6582 "recover")."""
        self.srtt: int | None = None
        self.rttvar = 0
        self.rto = settings.rto_initial_ns
        self.rto_deadline = NEVER
        self.persist_deadline = NEVER
        self.sent_at = SentTimes()
        """The segments sent once (RTT samples, Karn's rule)."""
        self.fin_wanted = False
        self.fin_sent = False
        self.reset_sent = False

    # Inputs.

    def write(self, nbytes: int, *, nodelay: bool, time_ns: int) -> list[TcpEvent]:
        """The application queued ``nbytes`` more bytes."""
        self.queued += nbytes
        if nodelay:
            self.push_to = self.queued
        return self._send([], time_ns)

    def on_ack(
        self, ack: int, window: int, time_ns: int, *, carries_data: bool = False
    ) -> list[TcpEvent]:
        """A segment from the peer acknowledging ``ack`` with receive window ``window``;
        one that ``carries_data`` (or a FIN) is never a duplicate ACK (RFC 5681 2: a
        duplicate "carries no data")."""
        out: list[TcpEvent] = []
        if self.reset_sent:
            return out
        data_end = self.queued + (1 if self.fin_sent else 0)
        ack = min(ack, max(self.high, self.nxt), data_end)
        if ack > self.una:
            acked = ack - self.una
            self._rtt_sample(ack, time_ns)
            self.una = ack
            self.nxt = max(self.nxt, self.una)
            self.dupacks = 0
            if self.recover is not None:
                if ack >= self.recover:
                    self.cwnd = self.ssthresh
                    self.recover = None
                else:
                    out.append(self._retransmit(time_ns))
                    self.cwnd = max(self.cwnd - acked + self.mss, self.mss)
            elif self.cwnd < self.ssthresh:
                self.cwnd += min(acked, self.mss)
            else:
                self.cwnd += max(self.mss * self.mss // self.cwnd, 1)
            self.rto_deadline = time_ns + self.rto if self.una < self._sent_end() else NEVER
            out.append(Acknowledged(min(self.una, self.queued), time_ns))
        elif (
            ack == self.una
            and self.una < self._sent_end()
            and window == self.rwnd
            and not carries_data
        ):
            self.dupacks += 1
            if self.dupacks == self._dupack_threshold and self.recover is None:
                flight = self.nxt - self.una
                self.ssthresh = max(flight // 2, 2 * self.mss)
                self.cwnd = self.ssthresh + 3 * self.mss
                self.recover = self.nxt
                out.append(self._retransmit(time_ns))
            elif self.recover is not None:
                self.cwnd += self.mss
        self.rwnd = window
        if self.rwnd > 0:
            self.persist_deadline = NEVER
        return self._send(out, time_ns)

    def on_timer(self, time_ns: int) -> list[TcpEvent]:
        """Time has reached :meth:`next_timer`: retransmission timeout or window probe."""
        out: list[TcpEvent] = []
        if time_ns >= self.rto_deadline:
            flight = self.nxt - self.una
            self.ssthresh = max(flight // 2, 2 * self.mss)
            self.cwnd = self.mss
            self.recover = None
            self.dupacks = 0
            self.nxt = self.una
            self.rto = min(self.rto * 2, 60_000_000_000)
            self.sent_at.clear()
            self._send(out, time_ns, after_timeout=True)
            self.rto_deadline = time_ns + self.rto
        if time_ns >= self.persist_deadline:
            self.persist_deadline = NEVER
            if self.rwnd == 0 and self.queued > self.nxt:
                # The probe carries the next byte: if the window reopened, the peer takes
                # it; if not, the retransmission timer keeps probing, backing off.
                out.append(self._emit(time_ns, self.nxt, 1, TCP_ACK))
                self.nxt += 1
                self.high = max(self.high, self.nxt)
                self.rto_deadline = time_ns + self.rto
                out.append(Transmitted(self.high, time_ns))
        return out

    def next_timer(self) -> int | None:
        t = self.timer()
        return None if t == NEVER else t

    def timer(self) -> int:
        """When :meth:`on_timer` is next due, or :data:`NEVER`."""
        rto, persist = self.rto_deadline, self.persist_deadline
        return persist if persist < rto else rto

    def close(self, time_ns: int) -> list[TcpEvent]:
        """A graceful close: a FIN once every queued byte has been sent."""
        self.fin_wanted = True
        return self._send([], time_ns)

    def aborted(self) -> None:
        """The peer reset the connection: nothing more is sent or retransmitted."""
        self.reset_sent = True
        self.rto_deadline = self.persist_deadline = NEVER

    def reset(self, time_ns: int) -> list[TcpEvent]:
        """An abortive close: a RST now, nothing after it."""
        self.reset_sent = True
        self.rto_deadline = self.persist_deadline = NEVER
        return [SentSegment(time_ns, self.nxt, 0, TCP_RST | TCP_ACK)]

    # Inside.

    def _sent_end(self) -> int:
        return self.high + (1 if self.fin_sent else 0)

    def _rtt_sample(self, ack: int, time_ns: int) -> None:
        """The RTT sample of the latest segment sent once that ``ack`` covers."""
        sent = self.sent_at.take_through(ack)
        if sent == NEVER:
            return
        sample = time_ns - sent
        if self.srtt is None:
            self.srtt, self.rttvar = sample, sample // 2
        else:
            self.rttvar = (3 * self.rttvar + abs(self.srtt - sample)) // 4
            self.srtt = (7 * self.srtt + sample) // 8
        self.rto = max(self.srtt + 4 * self.rttvar, self._rto_min_ns)

    def _emit(self, time_ns: int, seq: int, length: int, flags: int) -> SentSegment:
        retransmission = seq < self.high
        if not retransmission and length:
            self.sent_at.add(seq + length, time_ns)
        return SentSegment(time_ns, seq, length, flags, retransmission)

    def _retransmit(self, time_ns: int) -> SentSegment:
        length = min(self.mss, max(self.high - self.una, 0))
        self.sent_at.keep_through(self.una)
        flags = TCP_ACK | (TCP_PSH if self.una + length >= self.queued else 0)
        return self._emit(time_ns, self.una, length, flags)

    def _nagle_holds(self) -> bool:
        """RFC 896 holds a small segment while any data is unacknowledged; Minshall's
        variant (Linux) only while a previous small segment is."""
        if self._rfc896:
            return True
        return self.small_end > self.una

    def _send(
        self, out: list[TcpEvent], time_ns: int, *, after_timeout: bool = False
    ) -> list[TcpEvent]:
        """What may go out now, appended to ``out`` (returned)."""
        if self.reset_sent:
            return out
        before = self.high
        while self.nxt < self.queued:
            window = min(self.cwnd, self.rwnd)
            usable = window - (self.nxt - self.una)
            if usable <= 0:
                break
            remaining = self.queued - self.nxt
            n = min(self.mss, remaining, usable)
            small = n < self.mss
            outstanding = self.nxt > self.una
            if small and outstanding and not after_timeout:
                if n < remaining:
                    break  # the window, not the data, made it small (sender SWS avoidance)
                if self._nagle and self.nxt >= self.push_to and self._nagle_holds():
                    break  # Nagle: wait for the ACK of what is outstanding
            flags = TCP_ACK | (TCP_PSH if self.nxt + n == self.queued else 0)
            out.append(self._emit(time_ns, self.nxt, n, flags))
            if small:
                self.small_end = self.nxt + n
            self.nxt += n
            self.high = max(self.high, self.nxt)
            after_timeout = False
            if self.rto_deadline == NEVER:
                self.rto_deadline = time_ns + self.rto
        if (
            self.fin_wanted
            and not self.fin_sent
            and self.nxt == self.queued
            and self.high == self.queued
        ):
            out.append(SentSegment(time_ns, self.queued, 0, TCP_FIN | TCP_ACK))
            self.fin_sent = True
            if self.rto_deadline == NEVER:
                self.rto_deadline = time_ns + self.rto
        if self.rwnd == 0 and self.queued > self.nxt and self.nxt == self.una:
            if self.persist_deadline == NEVER:
                self.persist_deadline = time_ns + self.rto
        if self.high > before:
            out.append(Transmitted(self.high, time_ns))
        return out
