"""Emulator replay throughput: calls/s and segments/s on synth traces of growing size.

    python benchmarks/bench_replay.py [--sizes 10000,100000,1000000]

Per-call time at each size shows whether the cost grows linearly. No peer tool replays
WskSendEx calls; the reference in the same run is the cost of reading the same trace
back from its .wskt file (columnar), to show how much of a replay is the model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from wskreplay.replayer.engine import ReplayOptions, replay  # noqa: E402
from wskreplay.replayer.profile import load_profile  # noqa: E402
from wskreplay.synth import synth_trace  # noqa: E402
from wskreplay.tracefile import read_trace, write_trace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000,1000000")
    args = ap.parse_args()
    options = ReplayOptions(load_profile())
    for n in (int(x) for x in args.sizes.split(",")):
        trace = synth_trace(n, 16, seed=1)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "t.wskt"
            write_trace(path, trace)
            t = time.perf_counter()
            trace = read_trace(path)
            read_s = time.perf_counter() - t
        t = time.perf_counter()
        replayed = replay(trace, options)
        seconds = time.perf_counter() - t
        segs = len(replayed.segments)
        print(
            f"{n:>9} calls: replay {seconds:.2f} s = {n / seconds:,.0f} calls/s, "
            f"{segs / seconds:,.0f} segments/s, {seconds / n * 1e6:.1f} us/call "
            f"(reading the trace: {read_s:.2f} s, replay/read {seconds / read_s:.0f}x)"
        )


if __name__ == "__main__":
    main()
