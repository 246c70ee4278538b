"""Load: a synthetic trace of N GB written, then read and diffed by ``wskreplay diff`` in a
child process whose peak RSS is measured (getrusage of a fresh parent, so only that run
counts). The trace is bulk traffic: 4 sockets of 1 MiB sends of incompressible bytes, cut
into 64 KiB (TSO) segments, each completing after its last segment is acknowledged.

    python benchmarks/load_big_trace.py --sizes 1,10 [--dir /var/tmp]

Needs twice the largest size in free disk (the trace, and the streams the reader spills
to TMPDIR). Results: docs/reliability.md. Nothing here is a peer to compare with: no other
tool reads .wskt; the reference in the same run is `cat FILE > /dev/null` (reading the
bytes once, page cache included).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.conftest import run_measured  # noqa: E402
from wskreplay.formats import ntstatus as nt  # noqa: E402
from wskreplay.formats.tcpip import TCP_ACK, TCP_PSH  # noqa: E402
from wskreplay.trace import TraceWriter  # noqa: E402
from wskreplay.trace.model import CallTable, Clock, Direction, SegmentTable, Socket  # noqa: E402

SOCKETS = 4
CALL_BYTES = 1 << 20
SEGMENT_BYTES = 64 << 10
CALLS_PER_BATCH = 64
GAP_NS = 200_000


def write_big_trace(path: Path, gigabytes: float, seed: int = 1) -> int:
    """Write the trace; returns its number of calls."""
    rng = np.random.default_rng(seed)
    pool = rng.bytes(CALL_BYTES * 16)
    calls = int(gigabytes * (1 << 30)) // CALL_BYTES
    per_call = CALL_BYTES // SEGMENT_BYTES
    sockets = [
        Socket(s, local_addr="192.0.2.1", local_port=49000 + s, remote_addr="198.51.100.2",
               remote_port=445, open_ns=0)
        for s in range(SOCKETS)
    ]  # fmt: skip
    with TraceWriter(path, metadata={"source": "load_big_trace"}, clock=Clock(0)) as w:
        w.add_sockets(sockets)
        for first in range(0, calls, CALLS_PER_BATCH):
            n = min(CALLS_PER_BATCH, calls - first)
            seq = np.arange(first, first + n, dtype=np.uint64)
            sock = (seq % SOCKETS).astype(np.uint32)
            issue = (seq.astype(np.int64) + 1) * GAP_NS
            stream_offset = (seq // SOCKETS) * CALL_BYTES
            length = np.full(n, CALL_BYTES, np.uint64)
            w.add_calls(
                CallTable(
                    {
                        "seq": seq, "socket": sock, "issue_ns": issue, "return_ns": issue + 3_000,
                        "flags": np.zeros(n, np.uint32), "offset": np.zeros(n, np.uint64),
                        "length": length,
                        "status": np.full(n, nt.STATUS_PENDING, np.uint32),
                        "completed": np.ones(n, np.uint8),
                        "completion_ns": issue + 150_000,
                        "completion_status": np.full(n, nt.STATUS_SUCCESS, np.uint32),
                        "information": length, "irp": 0xFFFF0000 + seq * 0x200,
                        "irql": np.zeros(n, np.int8), "stream_offset": stream_offset,
                        "control_len": np.full(n, -1, np.int32),
                    }
                )
            )  # fmt: skip
            k = np.tile(np.arange(per_call), n)
            row = np.repeat(np.arange(n), per_call)
            w.add_segments(
                SegmentTable(
                    {
                        "time_ns": issue[row] + 5_000 + k * 5_000, "socket": sock[row],
                        "direction": np.zeros(n * per_call, np.uint8),
                        "length": np.full(n * per_call, SEGMENT_BYTES, np.uint32),
                        "seq": stream_offset[row] + k.astype(np.uint64) * SEGMENT_BYTES,
                        "flags": np.where(k == per_call - 1, TCP_ACK | TCP_PSH, TCP_ACK),
                        "ack": np.zeros(n * per_call, np.uint64),
                        "window": np.full(n * per_call, 1 << 20, np.uint32),
                    }
                )
            )  # fmt: skip
            for i in range(n):
                at = (first + i) % 16 * CALL_BYTES
                w.add_stream_data(
                    int(sock[i]), Direction.OUT, int(stream_offset[i]),
                    memoryview(pool)[at : at + CALL_BYTES],
                )  # fmt: skip
    return calls


def measured(*argv: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes, output) of one child run, through a fresh parent."""
    started = time.monotonic()
    proc, peak_kib = run_measured(list(argv))
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds, peak_kib * 1024, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1,10", help="trace sizes in GB")
    ap.add_argument("--dir", default=None, help="where to write the traces (default TMPDIR)")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "wskreplay"]
    for size in (float(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            path = Path(tmp) / f"big-{size:g}gb.wskt"
            t = time.monotonic()
            calls = write_big_trace(path, size)
            write_s = time.monotonic() - t
            file_bytes = path.stat().st_size
            cat_s, cat_rss, _ = measured("sh", "-c", f"cat {path} > /dev/null")
            verify_s, verify_rss, _ = measured(*exe, "verify", str(path))
            diff_s, diff_rss, out = measured(*exe, "diff", str(path), str(path))
            assert "EQUAL" in out or "equal" in out, out
            print(
                f"{file_bytes / 1e9:6.2f} GB, {calls:,} calls: written in {write_s:.1f} s; "
                f"verify {verify_s:.1f} s, peak RSS {verify_rss / 2**20:,.0f} MiB; "
                f"diff (read both + compare) {diff_s:.1f} s, peak RSS "
                f"{diff_rss / 2**20:,.0f} MiB; cat {cat_s:.1f} s "
                f"(diff/cat {diff_s / max(cat_s, 1e-3):.1f}x)",
                flush=True,
            )
            os.sync()


if __name__ == "__main__":
    main()
