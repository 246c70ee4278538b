"""A replay on the emulator run in several processes, the sockets dealt out to them.

The emulator's sockets share nothing while they replay: each has its own connection,
peer, schedule and chaos stream, and a call waits only for calls of its own socket. So
forked processes can each take a socket, replay all of its calls and settle it, and take
the next, the sockets with the most work first; each then sends back its calls' columns,
its wire segments and its events, and this process (which takes sockets too) takes them
in. Events at the same time keep the order one process replaying the calls in time order
would have given them (they sort by the step that reported them), so the replayed trace
is the same, byte for byte, whatever the number of processes
(``tests/test_parallel_replay.py``).

The results come back as msgpack over a pipe: raw integer columns and plain event
records, nothing that runs code when read.
"""

from __future__ import annotations

import fcntl
import gc
import mmap
import os
import select
import signal
import struct
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, NoReturn

import msgpack
import numpy as np

from wskreplay.errors import WskReplayError
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
(docs/performance.md, "Replay: the sockets shared out over processes")."""

_COUNT: Final = struct.Struct("<q")


def processes_for(trace: Trace, jobs: int) -> int:
    """How many processes replay ``trace`` with ``--jobs jobs``: no more than its sockets,
    one per :data:`MIN_CALLS_PER_PROCESS` calls, and one while this process runs other
    threads (a fork copies only the thread that forks, and whatever locks the others
    held)."""
    if jobs <= 1 or not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    return max(1, min(jobs, len(trace.sockets), len(trace.calls) // MIN_CALLS_PER_PROCESS))


def usable_cpus() -> int:
    """The CPUs this process may run on (``--jobs``' default)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def socket_queue(plan: ReplayPlan) -> list[int]:
    """The trace's sockets in the order the processes take them: the most work first, so
    that what is left at the end is small. A socket's work is its calls and its recorded
    segments (its replay makes about as many)."""
    work = {sid: len(part.segments) for sid, part in plan.own.items()}
    for sid in plan.socket_of:
        work[sid] += 1
    return sorted(work, key=lambda sid: (-work[sid], sid))


def calls_by_socket(plan: ReplayPlan) -> dict[int, list[int]]:
    """Socket -> its calls, in the order the replay issues them."""
    order = np.array(plan.order, np.int64)
    sockets = np.array(plan.socket_of, np.int64)[order]
    by_socket = np.argsort(sockets, kind="stable")
    ends = np.flatnonzero(np.diff(sockets[by_socket])) + 1
    out: dict[int, list[int]] = {sid: [] for sid in plan.trace.sockets}
    for rows in np.split(by_socket, ends):
        if len(rows):
            out[int(sockets[rows[0]])] = order[rows].tolist()
    return out


class _Dealer:
    """The sockets dealt to the processes as they ask, from a file they share: the next
    socket's place in the queue, which process took each one, and how many calls each has
    replayed (for the progress report). Taking a socket holds a POSIX record lock on the
    file, which the kernel lets go of if its holder dies."""

    def __init__(self, queue: list[int], processes: int) -> None:
        self.queue = queue
        self.processes = processes
        size = _COUNT.size * (1 + processes + len(queue))
        self.fd = os.memfd_create("wskreplay-dealer") if hasattr(os, "memfd_create") else -1
        if self.fd < 0:
            with tempfile.TemporaryFile() as f:
                self.fd = os.dup(f.fileno())
        os.ftruncate(self.fd, size)
        self.memory = mmap.mmap(self.fd, size)
        for k in range(len(queue)):
            self._put(1 + processes + k, -1)

    def close(self) -> None:
        self.memory.close()
        os.close(self.fd)

    def _put(self, slot: int, value: int) -> None:
        _COUNT.pack_into(self.memory, slot * _COUNT.size, value)

    def _get(self, slot: int) -> int:
        return int(_COUNT.unpack_from(self.memory, slot * _COUNT.size)[0])

    def next_socket(self, process: int) -> int | None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            k = self._get(0)
            if k == len(self.queue):
                return None
            self._put(0, k + 1)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        self._put(1 + self.processes + k, process)
        return self.queue[k]

    def count(self, process: int, calls: int) -> None:
        self._put(1 + process, calls)

    def done(self) -> int:
        return sum(self._get(1 + k) for k in range(self.processes))

    def taken_by(self, process: int) -> list[int]:
        base = 1 + self.processes
        return [sid for k, sid in enumerate(self.queue) if self._get(base + k) == process]


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
    dealer = _Dealer(socket_queue(plan), processes)
    calls_of = calls_by_socket(plan)
    total = len(plan.order)
    try:
        with _no_cyclic_collection(), _workers(plan, options, calls_of, dealer) as workers:
            if progress is not None:
                progress(0, total)
            run = _replay_dealt(plan, options, calls_of, dealer, 0, progress)
            for share in _collect(workers, dealer, progress, total):
                run.take(share)
            return run.build(source_sha256)
    finally:
        dealer.close()


@contextmanager
def _no_cyclic_collection() -> Iterator[None]:
    """The collector paused, as :func:`engine.replay` pauses it: a replay makes millions
    of objects and no cycle, and full passes over them cost more than the replay."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class _Worker:
    def __init__(self, pid: int, pipe: int, process: int) -> None:
        self.pid = pid
        self.pipe = pipe
        self.process = process
        self.received = bytearray()
        self.done = False


@contextmanager
def _workers(
    plan: ReplayPlan, options: ReplayOptions, calls_of: dict[int, list[int]], dealer: _Dealer
) -> Iterator[list[_Worker]]:
    """The forked worker processes, numbered from 1; whatever happens, none outlives the
    block."""
    workers: list[_Worker] = []
    try:
        for process in range(1, dealer.processes):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                _worker_main(plan, options, calls_of, dealer, process, write_end)
            os.close(write_end)
            workers.append(_Worker(pid, read_end, process))
        yield workers
    finally:
        for w in workers:
            if not w.done:
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(w.pid, 0)
            os.close(w.pipe)


def _replay_dealt(
    plan: ReplayPlan,
    options: ReplayOptions,
    calls_of: dict[int, list[int]],
    dealer: _Dealer,
    process: int,
    progress: Callable[[int, int], None] | None,
) -> _Replay:
    """Replay and settle socket after socket, as the dealer deals them, then seal."""
    run = _Replay(plan, options, False, [])
    total = len(plan.order)
    done = 0
    while (sid := dealer.next_socket(process)) is not None:
        run.open(sid)
        for i in calls_of[sid]:
            run.call(i)
            done += 1
            if done % PROGRESS_EVERY == 0:
                dealer.count(process, done)
                if progress is not None:
                    progress(dealer.done(), total)
        run.settle_socket(sid)
    dealer.count(process, done)
    run.seal()
    return run


def _worker_main(
    plan: ReplayPlan,
    options: ReplayOptions,
    calls_of: dict[int, list[int]],
    dealer: _Dealer,
    process: int,
    pipe: int,
) -> NoReturn:
    """A forked worker: replay the sockets dealt to it, write them to ``pipe``, and end
    without running anything of the parent's (no atexit handlers, no buffers flushed
    twice)."""
    status = 0
    gc.disable()
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        run = _replay_dealt(plan, options, calls_of, dealer, process, None)
        payload = _packed_share(run.share())
    except BaseException as exc:  # handed to the parent, which raises it
        status = 1
        payload = _packed_error(exc)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(pipe, view) :]
    except BaseException:
        status = 1
    os._exit(status)


def _collect(
    workers: list[_Worker],
    dealer: _Dealer,
    progress: Callable[[int, int], None] | None,
    total: int,
) -> Iterator[ReplayShare]:
    """Each worker's share as it finishes, the progress reported while they run."""
    waiting = {w.pipe: w for w in workers}
    while waiting:
        ready, _, _ = select.select(list(waiting), [], [], 0.25)
        if progress is not None:
            progress(dealer.done(), total)
        for fd in ready:
            chunk = os.read(fd, 1 << 20)
            worker = waiting[fd]
            if chunk:
                worker.received += chunk
                continue
            del waiting[fd]
            _, status = os.waitpid(worker.pid, 0)
            worker.done = True
            yield _unpacked(worker, status, dealer.taken_by(worker.process))


def _packed_share(share: ReplayShare) -> bytes:
    return msgpack.packb(
        {
            "calls": share.calls.tobytes(),
            "columns": {name: values.tobytes() for name, values in share.columns.items()},
            "wire": [
                [sid, {name: values.tobytes() for name, values in arrays.items()}]
                for sid, arrays in share.wire.items()
            ],
            "events": [[e.time_ns, e.kind, e.socket, e.attrs] for e in share.events],
            "event_steps": share.event_steps,
            "received": list(share.received.items()),
            "peers": share.peers,
        },
        use_bin_type=True,
    )


def _packed_error(exc: BaseException) -> bytes:
    if isinstance(exc, WskReplayError):
        error = {"kind": "user", "text": str(exc)}
    elif isinstance(exc, MemoryError):
        error = {"kind": "memory", "text": ""}
    else:
        error = {"kind": "bug", "text": "".join(traceback.format_exception(exc))}
    return msgpack.packb({"error": error}, use_bin_type=True)


def _unpacked(worker: _Worker, status: int, sockets: list[int]) -> ReplayShare:
    """The share a worker sent, or the error it reported (or met: killed, out of memory).
    ``sockets``: those it had taken."""
    if not os.WIFEXITED(status) or not worker.received:
        taken = f"sockets {', '.join(map(str, sockets))}" if sockets else "no socket yet"
        raise WskReplayError(
            f"the replay's worker process {worker.pid} ({taken}) {_how_it_ended(status)} "
            "before sending its results; --jobs 1 replays in this process alone"
        )
    message: dict[str, Any] = msgpack.unpackb(bytes(worker.received), raw=False)
    error = message.get("error")
    if error is not None:
        if error["kind"] == "user":
            raise WskReplayError(error["text"])
        if error["kind"] == "memory":
            raise MemoryError
        raise RuntimeError(f"the replay's worker process {worker.pid} failed:\n{error['text']}")

    def column(raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, np.int64)

    return ReplayShare(
        column(message["calls"]),
        {name: column(raw) for name, raw in message["columns"].items()},
        {
            sid: {name: column(raw) for name, raw in arrays.items()}
            for sid, arrays in message["wire"]
        },
        [Event(t, kind, sid, attrs) for t, kind, sid, attrs in message["events"]],
        message["event_steps"],
        {sid: n for sid, n in message["received"]},
        message["peers"],
    )


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    return f"exited with status {os.WEXITSTATUS(status)}"
