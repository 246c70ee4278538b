"""A replay on the emulator run in several processes, the sockets dealt out to them.

The emulator's sockets share nothing while they replay: each has its own connection,
peer, schedule and chaos stream, and a call waits only for calls of its own socket. So
forked processes (``forking.py``) can each take a socket, replay all of its calls and
settle it, and take the next, the sockets with the most work first; each then sends back
its calls' columns, its wire segments and its events, and this process (which takes
sockets too) takes them in. Events at the same time keep the order one process replaying
the calls in time order would have given them (they sort by the step that reported them),
so the replayed trace is the same, byte for byte, whatever the number of processes
(``tests/test_parallel_replay.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np

from wskreplay.forking import (
    Dealer,
    Worker,
    forked,
    may_fork,
    no_cyclic_collection,
    results,
)
from wskreplay.replayer.engine import (
    PROGRESS_EVERY,
    ReplayOptions,
    ReplayPlan,
    ReplayShare,
    _Replay,
)
from wskreplay.trace.model import Event, Trace

MIN_CALLS_PER_PROCESS: Final = 10_000
"""A process of its own pays only for this many calls or more: below it, starting the
process and sending its results back cost about what it saves
(docs/performance.md, "Replay: the sockets dealt out to processes")."""


def processes_for(trace: Trace, jobs: int) -> int:
    """How many processes replay ``trace`` with ``--jobs jobs``: no more than its sockets,
    one per :data:`MIN_CALLS_PER_PROCESS` calls, and one when this process may not fork
    (:func:`forking.may_fork`)."""
    if jobs <= 1 or not may_fork():
        return 1
    return max(1, min(jobs, len(trace.sockets), len(trace.calls) // MIN_CALLS_PER_PROCESS))


def socket_queue(plan: ReplayPlan) -> list[int]:
    """The trace's sockets in the order the processes take them: the most work first, so
    that what is left at the end is small. A socket's work is its calls and its recorded
    segments (its replay makes about as many)."""
    work = {sid: len(part.segments) for sid, part in plan.own.items()}
    sockets, calls = np.unique(np.asarray(plan.socket_of), return_counts=True)
    for sid, count in zip(sockets.tolist(), calls.tolist(), strict=True):
        work[sid] += count
    return sorted(work, key=lambda sid: (-work[sid], sid))


def calls_by_socket(plan: ReplayPlan) -> dict[int, list[int]]:
    """Socket -> its calls, in the order the replay issues them."""
    order = np.asarray(plan.order)
    sockets = np.asarray(plan.socket_of)[order]
    by_socket = np.argsort(sockets, kind="stable")
    ends = np.flatnonzero(np.diff(sockets[by_socket])) + 1
    out: dict[int, list[int]] = {sid: [] for sid in plan.trace.sockets}
    for rows in np.split(by_socket, ends):
        if len(rows):
            out[int(sockets[rows[0]])] = order[rows].tolist()
    return out


def replay_in_processes(
    plan: ReplayPlan,
    options: ReplayOptions,
    processes: int,
    *,
    source_sha256: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> Trace:
    """The replay of ``plan``'s trace with its sockets dealt out to ``processes``
    processes (this one included); the same trace :func:`engine.replay` gives."""
    queue = socket_queue(plan)
    dealer = Dealer(len(queue), processes)
    calls_of = calls_by_socket(plan)
    total = len(plan.order)

    def report() -> None:
        if progress is not None:
            progress(dealer.done(), total)

    kept: list[_Replay] = []
    """A worker's replay, never freed: the worker ends with ``os._exit`` once it has sent
    its share, and freeing the replay's objects one by one first cost it 5% of its time."""

    def work(process: int) -> dict[str, Any]:
        run = _replay_dealt(plan, options, queue, calls_of, dealer, process, None)
        kept.append(run)
        return _packed_share(run.share())

    def taken(worker: Worker) -> str:
        sockets = [queue[k] for k in dealer.taken_by(worker.process)]
        return f"sockets {', '.join(map(str, sockets))}" if sockets else "no socket yet"

    try:
        with no_cyclic_collection(), forked(processes, work) as workers:
            report()
            run = _replay_dealt(plan, options, queue, calls_of, dealer, 0, progress)
            for _, share in results(workers, taken, report):
                run.take(_unpacked_share(share))
            return run.build(source_sha256)
    finally:
        dealer.close()


def _replay_dealt(
    plan: ReplayPlan,
    options: ReplayOptions,
    queue: list[int],
    calls_of: dict[int, list[int]],
    dealer: Dealer,
    process: int,
    progress: Callable[[int, int], None] | None,
) -> _Replay:
    """Replay and settle socket after socket, as the dealer deals them, then seal."""
    run = _Replay(plan, options, False, [])
    total = len(plan.order)
    done = 0
    while (k := dealer.take(process)) is not None:
        sid = queue[k]
        run.open(sid)
        for i in calls_of[sid]:
            run.call(i)
            done += 1
            if done % PROGRESS_EVERY == 0:
                dealer.report(process, done)
                if progress is not None:
                    progress(dealer.done(), total)
        run.settle_socket(sid)
    dealer.report(process, done)
    run.seal()
    return run


def _packed_share(share: ReplayShare) -> dict[str, Any]:
    """A share as a worker sends it (its arrays go through the worker's memory file:
    :mod:`wskreplay.forking`)."""
    return {
        "calls": share.calls,
        "columns": share.columns,
        "wire": [[sid, arrays] for sid, arrays in share.wire.items()],
        "events": [[e.time_ns, e.kind, e.socket, e.attrs] for e in share.events],
        "event_steps": share.event_steps,
        "received": list(share.received.items()),
        "peers": share.peers,
        "paths": share.paths,
    }


def _unpacked_share(message: dict[str, Any]) -> ReplayShare:
    return ReplayShare(
        message["calls"],
        message["columns"],
        {sid: arrays for sid, arrays in message["wire"]},
        [Event(t, kind, sid, attrs) for t, kind, sid, attrs in message["events"]],
        message["event_steps"],
        {sid: n for sid, n in message["received"]},
        message["peers"],
        message["paths"],
    )
