"""Emulator replay throughput: calls/s and segments/s on synth traces of growing size.

    python benchmarks/bench_replay.py [--sizes 10000,100000,1000000] [--no-pure] [--real]
                                      [--real-socket]
    python benchmarks/bench_replay.py --whole-process 300000 [--repeat 3] [--baseline REV]
    python benchmarks/bench_replay.py --chaos-runs 100 [--repeat 3] [--baseline REV]

Per-call time at each size shows whether the cost grows linearly. No peer tool replays
WskSendEx calls; the references in the same run are the cost of reading the same trace
back from its .wskt file (columnar), and the same replay through the emulator's Python
modules (a copy of the package without the mypyc-compiled ones, in a subprocess), to show
what the compilation buys.

``--real``: every shared real capture (../shared/data/replay and pcap) imported with
``--infer-calls`` on each side, replayed and diffed against itself: total calls, replay
time, and the share that is EQUAL (wskreplay/fidelity.py).

``--whole-process N``: what a user waits for, issue 20's measure: ``wskreplay replay
--asap`` of an N-call ``synth`` trace on 16 sockets as a whole process (start-up, reading,
calibration, the replay, writing), then the same at recorded timing (the default, with the
recorded peers), best of ``--repeat``, alternating with the same command in one process
(``--jobs 1``), on the Python modules in one process (the reference) and, with
``--baseline REV``, on the package at git revision REV built in a worktree with its
compiled modules (needs mypy: ``pip install -e '.[bench]'``). Calls/s, wire segments/s
and peak RSS of each; the replays' outputs must be byte-identical. Then it exits.

``--chaos-runs N``: ``wskreplay check TRACE --chaos-runs N`` as a whole process on a real
capture of 284 connections (pcapplusplus__650HttpResponses.pcap imported with
``--infer-calls``), best of ``--repeat``, alternating with the same in one process
(``--jobs 1``) and with ``--baseline REV`` when given; all must print the same verdicts.

``--real-socket`` (root): the same through the socket target, real kernel TCP in two
network namespaces, at recorded speed (a recording longer than 20 s faster): per capture
and side, whether statuses and bytes are the recording's, how many timing differences the
real stack's default tolerance leaves, and the completion error at recorded speed; the
table of docs/targets.md. Then it exits (no synth runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import wskreplay.replayer.engine as engine  # noqa: E402
from wskreplay.generators.synth import synth_trace  # noqa: E402
from wskreplay.replayer.engine import ReplayOptions, replay  # noqa: E402
from wskreplay.replayer.profile import load_profile  # noqa: E402
from wskreplay.trace import read_trace, write_trace  # noqa: E402

TIMED_REPLAY = """
import json, sys, time
import wskreplay.replayer.engine
assert not wskreplay.replayer.engine.__file__.endswith(".so")
from wskreplay.replayer.engine import ReplayOptions, replay
from wskreplay.replayer.profile import load_profile
from wskreplay.trace import read_trace
trace = read_trace(sys.argv[1])
t = time.perf_counter()
out = replay(trace, ReplayOptions(load_profile()))
print(json.dumps({"seconds": time.perf_counter() - t, "segments": len(out.segments)}))
"""


def pure_python_replay(path: Path, pure: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", TIMED_REPLAY, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(pure), "PATH": "/usr/bin:/bin"},
        cwd=pure,
    )
    return json.loads(proc.stdout)


def replay_process(
    package: Path, trace: Path, out: Path, *, asap: bool, extra: tuple[str, ...] = ()
) -> tuple[float, int]:
    """``wskreplay replay [--asap] [extra]`` with ``package`` first on the path, as a whole
    process: (seconds, peak RSS in bytes, of the largest of its processes)."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wskreplay",
            "replay",
            *(["--asap"] if asap else []),
            *extra,
            "-o",
            str(out),
            str(trace),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(package)},
        cwd=package,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"replay with {package} failed: {proc.stderr.read().decode()}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss * 1024


@contextmanager
def built_revision(rev: str, into: Path) -> Iterator[Path]:
    """The package at git revision ``rev`` in a worktree at ``into``, with its compiled
    emulator and C extensions built in place; the worktree is removed afterwards."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), rev],
                   check=True, capture_output=True)  # fmt: skip
    try:
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                       check=True, capture_output=True, cwd=into)  # fmt: skip
        if not list((into / "wskreplay" / "replayer").glob("engine.*.so")):
            raise SystemExit(f"{rev}: the emulator was not compiled (pip install mypy)")
        yield into
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(into)],
                       capture_output=True)  # fmt: skip


def whole_process(n: int, repeat: int, baseline: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trace = folder / f"synth-{n}.wskt"
        subprocess.run([sys.executable, "-m", "wskreplay", "synth", "--calls", str(n),
                        "--sockets", "16", "--seed", "1", "-o", str(trace)],
                       check=True, capture_output=True, cwd=REPO)  # fmt: skip
        pure = folder / "pure"
        shutil.copytree(
            REPO / "wskreplay",
            pure / "wskreplay",
            ignore=shutil.ignore_patterns("*.so", "__pycache__"),
        )
        one_process = ("--jobs", "1")
        packages = {
            "this tree": (REPO, ()),
            "--jobs 1": (REPO, one_process),
            "Python modules": (pure, one_process),
        }
        with ExitStack() as stack:
            if baseline:
                baseline_tree = built_revision(baseline, folder / "baseline")
                packages[baseline] = (stack.enter_context(baseline_tree), ())
            for asap in (True, False):
                best: dict[str, tuple[float, int]] = {}
                for _ in range(repeat):
                    for name, (package, extra) in packages.items():
                        out = folder / f"{name}.wskt"
                        got = replay_process(package, trace, out, asap=asap, extra=extra)
                        if name not in best or got[0] < best[name][0]:
                            best[name] = got
                outputs = {(folder / f"{name}.wskt").read_bytes() for name in packages}
                assert len(outputs) == 1, "the replays' outputs differ"
                segments = len(read_trace(folder / "this tree.wskt").segments)
                ours = best["this tree"][0]
                mode = "replay --asap" if asap else "replay (recorded timing)"
                print(f"{mode}, {n:,} calls on 16 sockets, whole process, best of {repeat}:")
                for name, (seconds, rss) in best.items():
                    print(
                        f"  {name:>15}: {seconds:.2f} s = {n / seconds:,.0f} calls/s, "
                        f"{segments / seconds:,.0f} segments/s, peak RSS {rss / 2**20:,.0f} MiB"
                        + ("" if name == "this tree" else f" (this tree is {seconds / ours:.2f}x)"),
                        flush=True,
                    )


def chaos_runs_process(runs: int, repeat: int, baseline: str | None) -> None:
    capture = REPO.parent / "shared" / "data" / "replay" / "pcapplusplus__650HttpResponses.pcap"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trace = folder / "650.wskt"
        subprocess.run([sys.executable, "-m", "wskreplay", "import", str(capture),
                        "--infer-calls", "-o", str(trace)],
                       check=True, capture_output=True, cwd=REPO)  # fmt: skip
        packages: dict[str, tuple[Path, tuple[str, ...]]] = {
            "this tree": (REPO, ()),
            "--jobs 1": (REPO, ("--jobs", "1")),
        }
        with ExitStack() as stack:
            if baseline:
                baseline_tree = built_revision(baseline, folder / "baseline")
                packages[baseline] = (stack.enter_context(baseline_tree), ())
            best: dict[str, float] = {}
            verdicts: dict[str, str] = {}
            for _ in range(repeat):
                for name, (package, extra) in packages.items():
                    t = time.perf_counter()
                    proc = subprocess.run(
                        [sys.executable, "-m", "wskreplay", "check", str(trace),
                         "--chaos-runs", str(runs), *extra],
                        capture_output=True, text=True, cwd=package,
                        env={**os.environ, "PYTHONPATH": str(package), "COLUMNS": "200"},
                    )  # fmt: skip
                    seconds = time.perf_counter() - t
                    if proc.returncode not in (0, 1):
                        raise SystemExit(f"check with {package} failed: {proc.stderr}")
                    verdicts[name] = proc.stdout
                    best[name] = min(seconds, best.get(name, seconds))
            assert len(set(verdicts.values())) == 1, "the chaos runs' verdicts differ"
            ours = best["this tree"]
            print(f"check --chaos-runs {runs}, 284 connections, whole process, best of {repeat}:")
            for name, seconds in best.items():
                ratio = "" if name == "this tree" else f" (this tree is {seconds / ours:.2f}x)"
                print(f"  {name:>10}: {seconds:.2f} s, {seconds / runs * 1e3:.0f} ms a seed{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--no-pure", action="store_true", help="skip the pure-Python reference")
    ap.add_argument("--real", action="store_true", help="also the shared real captures")
    ap.add_argument("--real-socket", action="store_true", help="real captures, socket target")
    ap.add_argument("--whole-process", type=int, metavar="N", help="replay of N calls")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", metavar="REV", help="also revision REV (built in a worktree)")
    ap.add_argument("--chaos-runs", type=int, metavar="N", help="check --chaos-runs N")
    args = ap.parse_args()
    if args.chaos_runs:
        chaos_runs_process(args.chaos_runs, args.repeat, args.baseline)
        return
    if args.whole_process:
        whole_process(args.whole_process, args.repeat, args.baseline)
        return
    if args.real_socket:
        real_captures_on_the_socket_target()
        return
    if args.real:
        real_captures()
    compiled = engine.__file__.endswith(".so")
    print(f"emulator: {'compiled (mypyc)' if compiled else 'Python modules'}")
    options = ReplayOptions(load_profile())
    with tempfile.TemporaryDirectory() as tmp:
        pure = Path(tmp) / "pure"
        shutil.copytree(
            REPO / "wskreplay",
            pure / "wskreplay",
            ignore=shutil.ignore_patterns("*.so", "__pycache__"),
        )
        for n in (int(x) for x in args.sizes.split(",")):
            path = Path(tmp) / f"t{n}.wskt"
            write_trace(path, synth_trace(n, 16, seed=1))
            t = time.perf_counter()
            trace = read_trace(path)
            read_s = time.perf_counter() - t
            t = time.perf_counter()
            replayed = replay(trace, options)
            seconds = time.perf_counter() - t
            segs = len(replayed.segments)
            line = (
                f"{n:>9} calls: replay {seconds:.2f} s = {n / seconds:,.0f} calls/s, "
                f"{segs / seconds:,.0f} segments/s, {seconds / n * 1e6:.1f} us/call "
                f"(read: {read_s:.2f} s, replay/read {seconds / read_s:.0f}x"
            )
            if compiled and not args.no_pure:
                ref = pure_python_replay(path, pure)
                assert ref["segments"] == segs
                line += (
                    f"; Python modules {ref['seconds']:.2f} s = {n / ref['seconds']:,.0f} "
                    f"calls/s, compiled is {ref['seconds'] / seconds:.2f}x faster"
                )
            print(line + ")", flush=True)


def real_captures() -> None:
    from wskreplay.fidelity import measure

    shared = REPO.parent / "shared" / "data"
    paths = sorted((shared / "replay").glob("*")) + sorted((shared / "pcap").glob("*"))
    for side in ("client", "server"):
        rows = [measure(p, side) for p in paths]
        played = [r for r in rows if r.calls]
        calls = sum(r.calls for r in played)
        seconds = sum(r.replay_s for r in played)
        equal = sum(r.equal for r in played)
        print(
            f"real captures, {side} side: {len(played)} with calls, {calls:,} calls, replay "
            f"{seconds:.2f} s ({calls / seconds:,.0f} calls/s), EQUAL {equal}/{len(played)} "
            f"({equal / len(played):.0%})",
            flush=True,
        )


def real_captures_on_the_socket_target() -> None:
    from wskreplay.fidelity import measure

    shared = REPO.parent / "shared" / "data"
    paths = sorted((shared / "replay").glob("*")) + sorted((shared / "pcap").glob("*"))
    print("| capture | side | calls | speed | statuses | bytes | timing differences "
          "| completion error median / p99 / max (us) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for side in ("client", "server"):
        for p in paths:
            row = measure(p, side, target="socket")
            if not row.calls:
                continue
            rows.append(row)
            kinds = row.kinds or {}
            error = row.error_text() if row.speed == 1.0 else "-"
            print(
                f"| `{row.capture}` | {side} | {row.calls} | {row.speed:.3g} | "
                f"{'equal' if row.statuses_equal else 'DIFFERENT'} | "
                f"{'equal' if not kinds.get('wire') else 'DIFFERENT'} | "
                f"{kinds.get('timing', 0)} | {error} |",
                flush=True,
            )
    statuses = sum(r.statuses_equal for r in rows)
    wire = sum(not (r.kinds or {}).get("wire") for r in rows)
    timed = sum(r.calls for r in rows)
    late = sum((r.kinds or {}).get("timing", 0) for r in rows)
    print(
        f"\n{len(rows)} replays, {timed:,} calls: statuses equal in {statuses}, bytes in "
        f"{wire}; {late:,} timing differences beyond the real stack's tolerance"
    )


if __name__ == "__main__":
    main()
