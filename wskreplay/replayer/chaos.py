"""Chaos replay (``--chaos SEED``): what the recording fixed but the WSK contract and TCP
leave free, perturbed deterministically for a seed, so a failure that shows only under some
timings can be turned into a seed that shows it every time.

Per connection, from one generator seeded by (seed, socket):

- **peer timing**: each segment from the peer (ACKs, window updates, its data, FIN, RST)
  takes between ``ack_factor`` times as long as the model says to arrive, never overtaking
  the one before it (TCP would reorder too, but the model's sender is not built for it);
- **completion delays**: a send's completion (on-ack or on-transmit) reaches the driver
  an exponentially distributed delay later (mean ``completion_delay_mean_ns``): completion
  routines run when the system gets to them. Completions of outstanding sends can then
  reach the driver in another order than their bytes were sent: the order is UNVERIFIED
  in wsk-facts, and chaos explores it (the default replay's policy is ``fifo``);
- **segment boundaries**: with probability ``split_probability`` a call's bytes reach TCP
  in two writes a few microseconds apart, which moves where segments end (any cut is legal
  TCP: the bytes and their order stay the same).

Never perturbed: what a call returns for a given state (flags, ControlInfo, IRQL, a reset
socket), immediate completions (STATUS_SUCCESS returned at once), cancellations by a close
or disconnect, and the bytes themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class ChaosParams:
    ack_factor: tuple[float, float] = (0.5, 1.5)
    completion_delay_mean_ns: int = 20_000
    split_probability: float = 0.25
    split_gap_ns: tuple[int, int] = (1_000, 20_000)


class Chaos:
    """The perturbations of one connection's replay."""

    def __init__(self, seed: int, socket: int, params: ChaosParams | None = None) -> None:
        self.params = params or ChaosParams()
        self._rng = random.Random(f"wskreplay-chaos:{seed}:{socket}")
        self._last_from_peer = 0

    def from_peer(self, base_ns: int, arrival_ns: int) -> int:
        """When a peer segment the model has arriving at ``arrival_ns`` (caused at
        ``base_ns``) arrives instead."""
        lo, hi = self.params.ack_factor
        t = base_ns + int((arrival_ns - base_ns) * self._rng.uniform(lo, hi))
        self._last_from_peer = max(t, self._last_from_peer)
        return self._last_from_peer

    def completion_delay(self) -> int:
        return int(self._rng.expovariate(1.0 / self.params.completion_delay_mean_ns))

    def split(self, length: int) -> tuple[int, int] | None:
        """(bytes of the first write, gap before the second) or None: one write."""
        if length < 2 or self._rng.random() >= self.params.split_probability:
            return None
        lo, hi = self.params.split_gap_ns
        return self._rng.randrange(1, length), self._rng.randint(lo, hi)
