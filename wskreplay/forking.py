"""Independent pieces of work dealt out to forked processes, and their results gathered.

The pieces (a replay's sockets, ``check --chaos-runs``' seeds) sit in a queue in memory
the processes share. Each process, this one included, takes the next piece when it is
free, so they finish together however uneven the pieces. A worker sends what it made to
this process as one msgpack message over a pipe (plain values, nothing that runs code when
read); the numpy arrays in it are written to a file in memory this process made for the
worker, and the message says where each lies, so they are copied once, by the worker, and
read here in place. The worker ends without running anything of this process's (no atexit
handlers, no buffers flushed twice).

A failure in a worker ends the whole job here: a user error as the same one line, a bug
with the worker's traceback, a worker killed (the OOM killer) with one line naming it and
what it had taken. No worker outlives the job, nor the process that forked it.
"""

from __future__ import annotations

import ctypes
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

_SLOT: Final = struct.Struct("<q")
_LENGTH: Final = struct.Struct("<Q")
_ARRAY: Final = 1
"""msgpack extension code of an array a worker wrote to its memory file: its dtype, offset
and shape, as msgpack."""
_ALIGN: Final = 64
_PR_SET_PDEATHSIG: Final = 1
_STOPPING: Final = {signal.SIGINT, signal.SIGTERM}


def usable_cpus() -> int:
    """The CPUs this process may run on (the default number of processes)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def may_fork() -> bool:
    """Whether this process may fork workers: not while it runs other threads, since a
    fork copies only the thread that forks, and whatever locks the others held."""
    return hasattr(os, "fork") and threading.active_count() == 1


class Dealer:
    """The positions 0..count-1 of a queue, dealt to the processes as they ask, from a
    file they share; also which process took each one, and a count of work done per
    process (for progress reports). Taking one holds a POSIX record lock on the file,
    which the kernel lets go of if its holder dies."""

    def __init__(self, count: int, processes: int) -> None:
        self.count = count
        self.processes = processes
        size = _SLOT.size * (1 + processes + count)
        self.fd = _memory_file("wskreplay-dealer")
        os.ftruncate(self.fd, size)
        self.memory = mmap.mmap(self.fd, size)
        for k in range(count):
            self._put(1 + processes + k, -1)

    def close(self) -> None:
        self.memory.close()
        os.close(self.fd)

    def _put(self, slot: int, value: int) -> None:
        _SLOT.pack_into(self.memory, slot * _SLOT.size, value)

    def _get(self, slot: int) -> int:
        return int(_SLOT.unpack_from(self.memory, slot * _SLOT.size)[0])

    def take(self, process: int) -> int | None:
        """The next position for ``process`` (numbered from 0, this one), or None when
        all are taken."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            k = self._get(0)
            if k == self.count:
                return None
            self._put(0, k + 1)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        self._put(1 + self.processes + k, process)
        return k

    def report(self, process: int, done: int) -> None:
        self._put(1 + process, done)

    def done(self) -> int:
        return sum(self._get(1 + k) for k in range(self.processes))

    def taken_by(self, process: int) -> list[int]:
        base = 1 + self.processes
        return [k for k in range(self.count) if self._get(base + k) == process]


@contextmanager
def no_cyclic_collection() -> Iterator[None]:
    """The cyclic collector paused (a replay, or a worker's share of one): they make
    millions of objects and no cycle, and the collector's full passes over them cost more
    than the work. When it resumes, what was made meanwhile joins the oldest generation
    (``gc.freeze`` then ``gc.unfreeze``, which only move the lists): the first allocation
    after would otherwise start a collection of every object made meanwhile as young
    (0.065 s at the end of a 300k-call replay). They stay collectable; a ``gc.freeze``
    made by the caller before is undone."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _memory_file(name: str) -> int:
    """A file in memory: a memfd, or a temporary file already deleted where there is none."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name)
    with tempfile.TemporaryFile() as f:
        return os.dup(f.fileno())


class Worker:
    def __init__(self, pid: int, pipe: int, arrays: int, process: int) -> None:
        self.pid = pid
        self.pipe = pipe
        self.arrays = arrays
        """The memory file it writes its arrays to."""
        self.process = process
        self.received = bytearray()
        self.done = False
        """Its whole message has come (it may still be exiting)."""
        self.reaped = False


@contextmanager
def forked(processes: int, work: Callable[[int], dict[str, Any]]) -> Iterator[list[Worker]]:
    """``processes - 1`` workers, numbered from 1, each sending ``work(number)``; none
    outlives the block."""
    workers: list[Worker] = []
    parent = os.getpid()
    try:
        for process in range(1, processes):
            # Ctrl-C waits until the worker is on the list, so that it is killed with it.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
            try:
                read_end, write_end = os.pipe()
                arrays = _memory_file(f"wskreplay-worker-{process}")
                pid = os.fork()
                if pid == 0:
                    os.close(read_end)
                    _die_with(parent)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                    _worker_main(work, process, write_end, arrays)
                os.close(write_end)
                workers.append(Worker(pid, read_end, arrays, process))
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        yield workers
    finally:
        for w in workers:
            if not w.done and not w.reaped:
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not w.reaped:
                os.waitpid(w.pid, 0)
            os.close(w.pipe)
            os.close(w.arrays)


def _die_with(parent: int) -> None:
    """Have the kernel kill this worker when the process that forked it ends, however it
    ends (SIGKILL, SIGTERM with no handler): a worker left behind would go on using a
    CPU for nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _worker_main(
    work: Callable[[int], dict[str, Any]], process: int, pipe: int, arrays: int
) -> NoReturn:
    status = 0
    try:
        sink = _ArrayFile(arrays)
        payload = msgpack.packb({"result": work(process)}, use_bin_type=True, default=sink.packed)
    except BaseException as exc:  # handed to the parent, which raises it
        status = 1
        payload = _packed_error(exc)
    try:
        view = memoryview(_LENGTH.pack(len(payload)) + payload)
        while view:
            view = view[os.write(pipe, view) :]
        os.close(pipe)  # the parent takes the message now, not once this process is gone
    except BaseException:
        status = 1
    os._exit(status)


class _ArrayFile:
    """A worker's numpy arrays, written to its memory file as they are packed; the message
    holds, for each, where it lies."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.end = 0

    def packed(self, value: object) -> object:
        """msgpack's hook for what it cannot pack: an array's place in the file, a numpy
        scalar's number (anything else is a bug, raised in the worker)."""
        if isinstance(value, np.ndarray):
            data = np.ascontiguousarray(value)
            offset = -(-self.end // _ALIGN) * _ALIGN
            raw = memoryview(data.reshape(-1).view(np.uint8))
            at = offset
            while raw:
                written = os.pwrite(self.fd, raw, at)
                raw, at = raw[written:], at + written
            self.end = offset + data.nbytes
            where = msgpack.packb([data.dtype.str, offset, list(data.shape)])
            return msgpack.ExtType(_ARRAY, where)
        return _plain(value)


def _plain(value: object) -> object:
    """A numpy scalar as the Python number it holds."""
    item = getattr(value, "item", None)
    if item is None or getattr(value, "shape", None) != ():
        raise TypeError(f"cannot send a {type(value).__name__} from a worker")
    return item()


def results(
    workers: list[Worker],
    taken: Callable[[Worker], str],
    waiting_report: Callable[[], None] | None = None,
) -> Iterator[tuple[Worker, Any]]:
    """Each worker's result as it finishes (``waiting_report`` is called a few times a
    second meanwhile). ``taken(worker)``: what it had taken, for the error if it dies."""
    waiting = {w.pipe: w for w in workers}
    while waiting:
        ready, _, _ = select.select(list(waiting), [], [], 0.25)
        if waiting_report is not None:
            waiting_report()
        for fd in ready:
            chunk = os.read(fd, 1 << 20)
            worker = waiting[fd]
            if chunk:
                worker.received += chunk
                continue
            del waiting[fd]
            if _whole(worker.received):
                worker.done = True
                yield worker, _result(worker)
                continue
            _, status = os.waitpid(worker.pid, 0)
            worker.reaped = True
            raise WskReplayError(
                f"worker process {worker.pid} ({taken(worker)}) {_how_it_ended(status)} before "
                "sending its results; --jobs 1 runs in this process alone"
            )


def _packed_error(exc: BaseException) -> bytes:
    if isinstance(exc, WskReplayError):
        error = {"kind": "user", "text": str(exc)}
    elif isinstance(exc, MemoryError):
        error = {"kind": "memory", "text": ""}
    else:
        error = {"kind": "bug", "text": "".join(traceback.format_exception(exc))}
    return msgpack.packb({"error": error}, use_bin_type=True)


def _whole(received: bytearray) -> bool:
    """Whether a worker's message came whole (its length, then that many bytes)."""
    return (
        len(received) >= _LENGTH.size
        and _LENGTH.unpack_from(received)[0] == len(received) - _LENGTH.size
    )


def _result(worker: Worker) -> Any:
    """What a worker sent (its arrays read in place from its memory file), or the error it
    reported."""
    mapped: list[mmap.mmap] = []

    def array(code: int, where: bytes) -> np.ndarray:
        if code != _ARRAY:
            raise ValueError(f"worker process {worker.pid} sent an unknown extension {code}")
        dtype, offset, shape = msgpack.unpackb(where)
        count = int(np.prod(shape, dtype=np.int64))
        if not count:
            empty = np.empty(shape, np.dtype(dtype))
            empty.flags.writeable = False
            return empty
        if not mapped:
            mapped.append(mmap.mmap(worker.arrays, 0, prot=mmap.PROT_READ))
        return np.frombuffer(mapped[0], np.dtype(dtype), count, offset).reshape(shape)

    message: dict[str, Any] = msgpack.unpackb(
        memoryview(worker.received)[_LENGTH.size :], raw=False, ext_hook=array
    )
    error = message.get("error")
    if error is not None:
        if error["kind"] == "user":
            raise WskReplayError(error["text"])
        if error["kind"] == "memory":
            raise MemoryError
        raise RuntimeError(f"worker process {worker.pid} failed:\n{error['text']}")
    return message["result"]


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    return f"exited with status {os.WEXITSTATUS(status)}"
