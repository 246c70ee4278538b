"""Minimisation of the planted trace of tests/test_minimize.py (10,000 synth calls on 8
sockets, one call with malformed ControlInfo the recording says was taken) with the
emulator: replays needed and wall time. Goal (issue 10): under 60 s.

    python benchmarks/bench_minimize.py [--calls 10000] [--sockets 8]

No other tool minimises WskSendEx traces. The references in the same run: one replay and
diff of the whole trace (what each ddmin step costs at most), and the cost of the naive
reduction that tries removing one call at a time (calls x one replay).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.test_minimize import planted_trace  # noqa: E402
from wskreplay.checking import replay_trace  # noqa: E402
from wskreplay.diff import DiffOptions, diff_traces  # noqa: E402
from wskreplay.minimize import minimize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--sockets", type=int, default=8)
    args = ap.parse_args()
    trace, k = planted_trace(args.calls, args.sockets)
    options = DiffOptions(align="order")
    t = time.perf_counter()
    diff_traces(trace, replay_trace(trace), options)
    one = time.perf_counter() - t
    t = time.perf_counter()
    result = minimize(trace, replay_trace, options)
    seconds = time.perf_counter() - t
    kept = result.rows.tolist()
    print(
        f"{args.calls:,} calls on {args.sockets} sockets, planted call {k}: minimised to "
        f"{len(kept)} call(s) {kept[:5]}, {result.status.bytes} bytes, in "
        f"{result.status.replays} replays, {seconds:.1f} s (goal < 60 s)\n"
        f"  one replay + diff of the whole trace: {one:.2f} s "
        f"(minimisation = {seconds / one:.1f}x that); removing one call at a time would "
        f"take ~{args.calls} replays, ~{args.calls * one / 2:,.0f} s "
        f"({args.calls * one / 2 / seconds:,.0f}x slower)",
        flush=True,
    )


if __name__ == "__main__":
    main()
