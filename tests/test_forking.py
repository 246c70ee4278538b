"""Workers' results (wskreplay/forking.py) come back whole, with real forked processes: the
numpy arrays a worker sends are read in place from its memory file, equal to what it made
(dtype, shape, values), and a message cut short, as when the worker dies while sending
it, is an error naming the worker, never a result. The pause of the cyclic collector
leaves it no backlog."""

from __future__ import annotations

import gc
import os
import signal
import weakref

import numpy as np
import pytest

from wskreplay import forking
from wskreplay.errors import WskReplayError
from wskreplay.forking import forked, no_cyclic_collection, results

from .conftest import alive


def sent_arrays(process: int) -> dict[str, object]:
    rng = np.random.default_rng(process)
    return {
        "process": process,
        "int64": rng.integers(-(2**62), 2**62, 100_003, dtype=np.int64),
        "uint32": rng.integers(0, 2**32, 7, dtype=np.uint32),
        "bool": rng.integers(0, 2, 13).astype(bool),
        "float": rng.random((3, 5)),
        "empty": np.zeros(0, np.int64),
        "strided": np.arange(40, dtype=np.int16)[::3],
        "nested": [[process, np.arange(process + 1)]],
        "scalar": np.int64(7) * process,
    }


def test_arrays_come_back_as_the_worker_made_them():
    with forked(3, sent_arrays) as workers:
        got = {worker.process: result for worker, result in results(workers, str)}
    assert sorted(got) == [1, 2]
    for process, result in got.items():
        want = sent_arrays(process)
        assert result["process"] == process and result["scalar"] == 7 * process
        assert type(result["scalar"]) is int
        for name in ("int64", "uint32", "bool", "float", "empty", "strided"):
            mine, theirs = result[name], want[name]
            assert isinstance(mine, np.ndarray), name
            assert (mine.dtype, mine.shape) == (theirs.dtype, theirs.shape), name
            assert np.array_equal(mine, theirs), name
            assert not mine.flags.writeable, name
        assert np.array_equal(result["nested"][0][1], np.arange(process + 1))


def test_a_message_cut_short_is_an_error_naming_the_worker(monkeypatch):
    """The worker writes the first half of its message and is killed: the parent must not
    take the half for a result (nor wait for more)."""
    real_write = os.write

    def half_then_die(fd: int, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        if len(view) > 1000:
            real_write(fd, view[: len(view) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(fd, view)

    def work(process: int) -> dict[str, object]:
        monkeypatch.setattr(forking.os, "write", half_then_die)
        return {"padding": "x" * 100_000}

    pids: list[int] = []
    with pytest.raises(WskReplayError) as raised:
        with forked(2, work) as workers:
            pids = [w.pid for w in workers]
            list(results(workers, lambda w: "its piece"))
    message = str(raised.value)
    assert f"process {pids[0]} (its piece) was killed by SIGKILL" in message
    assert "\n" not in message
    assert not alive(pids[0])


def test_the_collector_resumes_without_a_backlog_and_collects_what_was_made():
    """After the pause, the objects made meanwhile are in the oldest generation, not left
    young for the first collection to walk, and a cycle made meanwhile is still collected."""

    class Node:
        pass

    freed: list[bool] = []
    assert gc.isenabled()
    with no_cyclic_collection():
        assert not gc.isenabled()
        kept = [[k] for k in range(200_000)]
        node = Node()
        node.self = node  # type: ignore[attr-defined]
        weakref.finalize(node, freed.append, True)
        del node
    assert gc.isenabled()
    assert any(o is kept for o in gc.get_objects(generation=2)), "left young"
    gc.collect()
    assert freed == [True] and len(kept) == 200_000
    gc.disable()
    try:
        with no_cyclic_collection():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
