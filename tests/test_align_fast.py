"""Sequence alignment's shortcut for traces whose call keys are all equal gives exactly
the alignment the full matcher gives, and is not taken where any key differs."""

from __future__ import annotations

import numpy as np
import pytest

from wskreplay.diff import align
from wskreplay.generators.synth import synth_trace
from wskreplay.trace.model import CallTable, Direction


def full_matcher(a, ia, b, ib, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(align, "keys_all_equal", lambda *args: False)
        return align.align_by_sequence(a, ia, b, ib)


def same(x: align.Alignment, y: align.Alignment) -> bool:
    return (
        np.array_equal(x.a, y.a)
        and np.array_equal(x.b, y.b)
        and np.array_equal(x.same_key, y.same_key)
    )


def jittered(trace):
    cols = {k: v.copy() for k, v in trace.calls.columns.items()}
    cols["completion_ns"] = np.where(cols["completed"] == 1, cols["completion_ns"] + 7, 0)
    trace.calls = CallTable(cols, trace.calls.control_blob)
    return trace


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_equal_keys_take_the_shortcut_with_the_full_answer(seed, monkeypatch):
    a, b = synth_trace(2000, 4, seed=seed), jittered(synth_trace(2000, 4, seed=seed))
    for sid in a.sockets:
        ia, ib = align.calls_of(a, sid), align.calls_of(b, sid)
        assert align.keys_all_equal(a, ia, b, ib)
        assert same(align.align_by_sequence(a, ia, b, ib), full_matcher(a, ia, b, ib, monkeypatch))


@pytest.mark.parametrize("change", ["payload", "length", "status", "gap", "redacted", "missing"])
def test_any_different_key_takes_the_full_matcher(change, monkeypatch):
    a, b = synth_trace(500, 2, seed=5), synth_trace(500, 2, seed=5)
    sid = 0
    ia, ib = align.calls_of(a, sid), align.calls_of(b, sid)
    stream = b.streams[(sid, Direction.OUT)]
    cols = {k: v.copy() for k, v in b.calls.columns.items()}
    if change == "payload":
        stream.data[len(stream.data) // 2] ^= 1
    elif change == "length":
        cols["length"][ib[3]] += 1
        b.calls = CallTable(cols, b.calls.control_blob)
    elif change == "status":
        cols["status"][ib[3]] = 0xC00000BB
        b.calls = CallTable(cols, b.calls.control_blob)
    elif change == "gap":
        stream.gaps = [(10, 20)]
    elif change == "redacted":
        stream.data = None
    else:
        del b.streams[(sid, Direction.OUT)]
    assert not align.keys_all_equal(a, ia, b, ib)
    assert same(align.align_by_sequence(a, ia, b, ib), full_matcher(a, ia, b, ib, monkeypatch))
