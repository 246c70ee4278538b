"""Random access by call number, time and socket agrees with a linear scan."""

from __future__ import annotations

import numpy as np
import pytest

from wskreplay.generators.synth import synth_trace
from wskreplay.trace import TraceReader, write_trace


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    trace = synth_trace(calls=20_000, sockets=5, seed=4)
    path = tmp_path_factory.mktemp("ra") / "ra.wskt"
    write_trace(path, trace, block_rows=1000)
    return trace, path


def test_call_by_number(indexed):
    trace, path = indexed
    rng = np.random.default_rng(0)
    with TraceReader(path) as reader:
        assert len(reader._call_blocks) == 20
        for seq in [0, 999, 1000, 19_999, *rng.integers(0, 20_000, 50).tolist()]:
            assert reader.call(seq) == trace.calls[seq]
        with pytest.raises(KeyError):
            reader.call(20_000)


def test_calls_by_time_window(indexed):
    trace, path = indexed
    issue = trace.calls.column("issue_ns")
    rng = np.random.default_rng(1)
    with TraceReader(path) as reader:
        for _ in range(20):
            t0, t1 = sorted(rng.integers(int(issue.min()) - 10, int(issue.max()) + 10, 2).tolist())
            expected = trace.calls.take((issue >= t0) & (issue < t1))
            assert reader.calls_between(t0, t1) == expected


def test_calls_and_segments_by_socket(indexed):
    trace, path = indexed
    with TraceReader(path) as reader:
        for sock in range(5):
            assert reader.calls(socket=sock) == trace.calls.take(
                trace.calls.column("socket") == sock
            )
            segs = trace.segments
            assert reader.segments(socket=sock) == segs.take(segs.column("socket") == sock)


def test_column_access_needs_no_row_objects(indexed):
    trace, path = indexed
    with TraceReader(path) as reader:
        status = reader.call_column("completion_status")
    assert isinstance(status, np.ndarray) and status.dtype == np.uint32
    assert np.array_equal(status, trace.calls.column("completion_status"))
