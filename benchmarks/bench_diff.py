"""Diff throughput: two synth traces of N calls (the second with every completion latency
jittered by 5%), diffed end to end (alignment, per-call comparisons, distributions with
bootstrap CIs, wire bytes and segmentation), in order and by sequence alignment.

    python benchmarks/bench_diff.py [--sizes 100000,1000000]

No peer tool diffs WskSendEx traces; the reference in the same run is reading both traces.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from wskreplay.diff import DiffOptions, diff_traces  # noqa: E402
from wskreplay.generators.synth import synth_trace  # noqa: E402
from wskreplay.trace import read_trace, write_trace  # noqa: E402
from wskreplay.trace.model import CallTable  # noqa: E402


def jittered(trace, seed: int):
    cols = trace.calls.columns
    issue = cols["issue_ns"].astype(np.int64)
    factor = np.random.default_rng(seed).lognormal(0, 0.05, len(issue))
    latency = ((cols["completion_ns"] - issue) * factor).astype(np.int64)
    cols["completion_ns"] = np.where(cols["completed"] == 1, issue + latency, 0)
    trace.calls = CallTable(cols, trace.calls.control_blob)
    return trace


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args()
    for n in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            a_path, b_path = Path(tmp) / "a.wskt", Path(tmp) / "b.wskt"
            write_trace(a_path, synth_trace(n, 16, seed=1))
            write_trace(b_path, jittered(synth_trace(n, 16, seed=1), 2))
            t = time.perf_counter()
            a, b = read_trace(a_path), read_trace(b_path)
            read_s = time.perf_counter() - t
        for align in ("order", "sequence"):
            t = time.perf_counter()
            result = diff_traces(a, b, DiffOptions(align=align))
            seconds = time.perf_counter() - t
            print(
                f"{n:>9} calls, align {align:<8}: diff {seconds:.2f} s = {n / seconds:,.0f} "
                f"calls/s ({result.calls_compared} compared, {len(result.differences)} "
                f"differences; reading both traces: {read_s:.2f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
