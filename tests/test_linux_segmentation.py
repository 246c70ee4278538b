"""The emulator's TCP segmentation against the Linux kernel's, for the cases the model
claims to cover (docs/emulator.md, "Against the Linux kernel"): MSS cuts of large sends,
a sub-MSS tail sent at once (Minshall's Nagle), small writes coalesced while a small
segment is unacknowledged (Nagle on), every write its own segment (Nagle off).

A real transfer is captured with tshark (tests/linux_tcp.py), imported with
``--infer-calls`` (the recorded peer and wire come from the capture), and replayed twice:
through the inferred calls, and through the sender's real writes (their sizes and times,
as an instrumented driver's events would give them), so that the model, not the capture,
decides how writes become segments.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.trace import read_trace, write_trace
from wskreplay.trace.model import CallTable, Direction

from .conftest import run_cli
from .linux_tcp import capture_transfer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

PLAN = [
    [30000], 100,  # spends the receiver's quick ACKs: later small segments get delayed ACKs
    [100] * 5, 100,
    [4000], 100,
    [3000, 200, 50], 100,
    [10000], 100,
    [1] * 20, 100,
    [20, 30, 40, 50, 60, 70, 80, 90, 100], 100,
    [1460, 1460, 700], 100,
]  # fmt: skip


def outbound_sizes(trace, sid: int = 0) -> list[int]:
    seg = trace.segments
    rows = (
        (seg.column("socket") == sid)
        & (seg.column("direction") == int(Direction.OUT))
        & (seg.column("length") > 0)
    )
    return seg.column("length")[rows].tolist()


def one_byte_burst(writes: list[tuple[int, int]]) -> tuple[int, int]:
    """Stream range of the plan's 20 back-to-back one-byte writes."""
    sizes = [n for _, n in writes]
    k = next(i for i in range(len(sizes)) if sizes[i : i + 20] == [1] * 20)
    start = sum(sizes[:k])
    return start, start + 20


def segments_within(trace, start: int, end: int, sid: int = 0) -> int:
    seg = trace.segments
    rows = (
        (seg.column("socket") == sid)
        & (seg.column("direction") == int(Direction.OUT))
        & (seg.column("length") > 0)
    )
    seq = seg.column("seq")[rows]
    return int(((seq >= start) & (seq < end)).sum())


def with_real_writes(trace, writes: list[tuple[int, int]], *, nodelay: bool):
    """``trace`` with its inferred calls replaced by the sender's writes."""
    n = len(writes)
    lengths = np.array([w for _, w in writes], np.int64)
    issue = np.array([t for t, _ in writes], np.int64) - trace.clock.zero_utc_ns
    zeros = np.zeros(n, np.int64)
    trace.calls = CallTable(
        {
            "seq": np.arange(n),
            "socket": zeros,
            "issue_ns": issue,
            "return_ns": issue,
            "flags": np.full(n, wsk.WSK_FLAG_NODELAY if nodelay else 0),
            "offset": zeros,
            "length": lengths,
            "status": np.full(n, nt.STATUS_PENDING),
            "completed": zeros,
            "completion_ns": zeros,
            "completion_status": zeros,
            "information": zeros,
            "irp": np.arange(1, n + 1),
            "irql": np.full(n, -1),
            "stream_offset": np.concatenate(([0], np.cumsum(lengths)[:-1])),
            "control_len": np.full(n, -1),
        }
    )
    return trace


@pytest.fixture(scope="module", params=[False, True], ids=["nagle", "nodelay"])
def kernel_run(request, tmp_path_factory):
    nodelay = request.param
    work = tmp_path_factory.mktemp("linux-nodelay" if nodelay else "linux-nagle")
    transfer = capture_transfer(work, PLAN, nodelay=nodelay, port=5101 + int(nodelay))
    streams = run_cli("streams", "--json", str(transfer.capture))
    assert json.loads(streams.stdout)["connections"][0]["syn"], "the capture missed the SYN"
    inferred = work / "inferred.wskt"
    proc = run_cli("import", "--infer-calls", str(transfer.capture), "-o", str(inferred))
    assert proc.returncode == 0, proc.stderr
    trace = read_trace(inferred)
    assert trace.streams[(0, Direction.OUT)].length == sum(n for _, n in transfer.writes)
    real = work / "writes.wskt"
    write_trace(real, with_real_writes(trace, transfer.writes, nodelay=nodelay))
    return nodelay, work, inferred, real, transfer


def replay_sizes(work, source, *args: str, tag: str = "") -> list[int]:
    out = work / f"{source.stem}{tag}.replayed.wskt"
    proc = run_cli("replay", str(source), "-o", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    return outbound_sizes(read_trace(out))


def test_kernel_segments_are_reproduced_from_inferred_calls(kernel_run):
    nodelay, work, inferred, _real, _transfer = kernel_run
    trace = read_trace(inferred)
    # Both SYNs offered timestamps: 1460 announced, 1448 per segment (RFC 7323).
    assert trace.metadata["capture"]["sender_mss"] == {"0": 1448}
    assert replay_sizes(work, inferred) == outbound_sizes(trace)
    replayed = read_trace(work / "inferred.replayed.wskt")
    # Inferred calls carry no flags: the kernel's TCP_NODELAY shows as Nagle broken.
    assert replayed.metadata["profile"]["tcp"]["nagle"] is (not nodelay)


def test_kernel_segments_are_reproduced_from_the_real_writes(kernel_run):
    nodelay, work, inferred, real, transfer = kernel_run
    kernel = outbound_sizes(read_trace(inferred))
    # Linux with timestamps: 1448-byte segments (MSS 1460 less 12 bytes of options).
    assert max(kernel) == 1448 and 4000 in [n for _, n in transfer.writes]
    burst = segments_within(read_trace(inferred), *one_byte_burst(transfer.writes))
    if nodelay:
        assert burst == 20
    else:
        assert burst < 10  # Nagle coalesced most of the 20 one-byte writes
    assert replay_sizes(work, real) == kernel


def test_the_comparison_can_fail_nagle_matters(kernel_run, tmp_path):
    """Replayed with the other Nagle setting, the real writes give other segments."""
    nodelay, work, inferred, real, _transfer = kernel_run
    if nodelay:
        return
    off = tmp_path / "no-nagle.toml"
    off.write_text("[tcp]\nnagle = false\n")
    kernel = outbound_sizes(read_trace(inferred))
    assert replay_sizes(work, real, "--profile", str(off), tag="-no-nagle") != kernel
