"""Diff throughput: two synth traces of N calls (the second with every completion latency
jittered by 5%), diffed end to end (alignment, per-call comparisons, distributions with
bootstrap CIs, wire bytes and segmentation), in order and by sequence alignment.

    python benchmarks/bench_diff.py [--sizes 100000,1000000]
    python benchmarks/bench_diff.py --whole [--sizes 1000000] [--repeat 3]

No peer tool diffs WskSendEx traces; the reference in the same run is reading both traces.
With ``--whole`` each diff is a whole ``wskreplay diff`` process, as a user waits for it
(time and peak RSS, best of ``--repeat``), against the reference path in the same run
(``WSKREPLAY_PURE_PYTHON=1``: both traces read whole into memory, then the same diff).
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


def whole_process(a: Path, b: Path, align: str, reference: bool, repeat: int) -> tuple[float, int]:
    """Best wall time and the peak RSS (KiB) of that run, of ``wskreplay diff``."""
    os.environ["WSKREPLAY_PURE_PYTHON"] = "1" if reference else "0"
    best: tuple[float, int] | None = None
    for _ in range(repeat):
        t = time.perf_counter()
        argv = [sys.executable, "-m", "wskreplay", "diff", str(a), str(b), "--align", align]
        proc, peak = run_measured(argv)
        seconds = time.perf_counter() - t
        if proc.returncode not in (0, 1):
            raise SystemExit(proc.stderr)
        if best is None or seconds < best[0]:
            best = (seconds, peak)
    assert best is not None
    return best


def main_whole(sizes: list[int], repeat: int) -> None:
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            a_path, b_path = Path(tmp) / "a.wskt", Path(tmp) / "b.wskt"
            write_trace(a_path, synth_trace(n, 16, seed=1))
            write_trace(b_path, jittered(synth_trace(n, 16, seed=1), 2))
            size_mb = (a_path.stat().st_size + b_path.stat().st_size) / 1e6
            for align in ("order", "sequence"):
                fast_s, fast_kib = whole_process(a_path, b_path, align, False, repeat)
                ref_s, ref_kib = whole_process(a_path, b_path, align, True, repeat)
                print(
                    f"{n:>9} calls ({size_mb:,.0f} MB of traces), align {align:<8}: "
                    f"in place {fast_s:.2f} s, {fast_kib / 1024:,.0f} MiB peak; reference "
                    f"(read whole) {ref_s:.2f} s, {ref_kib / 1024:,.0f} MiB; "
                    f"{ref_s / fast_s:.2f}x faster, {ref_kib / fast_kib:.2f}x less memory",
                    flush=True,
                )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--whole", action="store_true", help="whole wskreplay diff processes")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.whole:
        main_whole(sizes, args.repeat)
        return
    for n in sizes:
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
