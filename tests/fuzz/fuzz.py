"""Run the fuzz harnesses (tests/fuzz/harnesses.py).

    python tests/fuzz/fuzz.py --budget 60            # atheris, 60 s per harness, all harnesses
    python tests/fuzz/fuzz.py --budget 5 pcap etl    # some of them
    python tests/fuzz/fuzz.py --budget 3 --jobs 2    # two harnesses at a time (the suite's run)
    python tests/fuzz/fuzz.py --budget 600 --save    # keep new coverage in the saved corpus
    python tests/fuzz/fuzz.py --regression           # no fuzzer: every saved input once
    python tests/fuzz/fuzz.py --coverage             # line coverage the saved corpus reaches

Each harness fuzzes in its own process (libFuzzer through atheris) starting from its saved
corpus and every crash input kept under crashes/; a crash, a hang (over --timeout seconds
for one input) or an RSS over --rss-mb is written under crashes/<harness>/ and makes the
run fail. New inputs go to a scratch directory unless --save merges them (only those that
add coverage) into corpus/<harness>/.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

MEMORY_BOUND = 256 << 20
"""Peak Python allocation allowed for one input of at most a harness's max_len bytes."""
_STATS = re.compile(r"stat::number_of_executed_units: (\d+)")
_STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def regression(names: list[str]) -> int:
    """Every saved input once, each under a memory bound; the number of failures."""
    from tests.fuzz.harnesses import HARNESSES, inputs

    failures = 0
    for name in names:
        harness = HARNESSES[name]
        paths = inputs(name)
        worst = 0
        for path in paths:
            tracemalloc.start()
            try:
                harness.run(path.read_bytes())
            except Exception as exc:  # noqa: BLE001  (what a fuzzer calls a crash)
                failures += 1
                print(f"{name}: {path.relative_to(HERE)}: {type(exc).__name__}: {exc}")
            finally:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            worst = max(worst, peak)
            if peak > MEMORY_BOUND:
                failures += 1
                print(f"{name}: {path.relative_to(HERE)}: peak {peak:,} bytes > {MEMORY_BOUND:,}")
        print(f"{name}: {len(paths)} inputs, peak Python memory {worst / 2**20:.1f} MiB")
    return failures


WORKER_ENV = "WSKREPLAY_FUZZ_HARNESS"
"""Set for a fuzzing process: the harness it runs. An environment variable, not an argument,
because libFuzzer starts more processes (to merge) with the libFuzzer arguments alone."""


def worker(name: str) -> None:
    """In the fuzzing process: instrument wskreplay, then hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["wskreplay", "tests.fuzz.harnesses"]):
        from tests.fuzz.harnesses import HARNESSES

    atheris.Setup([_launcher(), *sys.argv[1:]], HARNESSES[name].run)
    atheris.Fuzz()


def _launcher() -> str:
    """An executable that runs this script with this interpreter: libFuzzer starts its
    merge processes as ``argv[0] ARGS``, through the shell."""
    path = Path(tempfile.gettempdir()) / f"wskreplay-fuzz-{os.getuid()}.sh"
    script = f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n'
    if not path.exists() or path.read_text() != script:
        path.write_text(script)
        path.chmod(0o755)
    return str(path)


def _libfuzzer(name: str, argv: list[str], timeout: float | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, __file__, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, WORKER_ENV: name},
    )


def fuzz(name: str, args: argparse.Namespace) -> dict[str, int | str]:
    from tests.fuzz.harnesses import CORPUS, CRASHES, HARNESSES

    crashes = CRASHES / name
    crashes.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        flags = [
            f"-max_total_time={args.budget}",
            f"-timeout={args.timeout}",
            f"-rss_limit_mb={args.rss_mb}",
            f"-max_len={HARNESSES[name].max_len}",
            f"-artifact_prefix={crashes}/",
            "-print_final_stats=1",
            "-close_fd_mask=1",
            *([f"-seed={args.seed}"] if args.seed is not None else []),
        ]
        dirs = [scratch, str(CORPUS / name), str(crashes)]
        started = time.monotonic()
        proc = _libfuzzer(name, [*flags, *dirs], args.budget * 3 + 120)
        seconds = time.monotonic() - started
        log = proc.stderr
        if args.save and proc.returncode == 0:
            merge = [f"-max_len={HARNESSES[name].max_len}", str(CORPUS / name), scratch]
            merged = _libfuzzer(name, ["-merge=1", *merge], None)
            if merged.returncode != 0:
                raise SystemExit(f"{name}: merging into the corpus failed: {merged.stderr[-500:]}")
    execs = _STATS.search(log)
    done = _STATUS.findall(log)
    result: dict[str, int | str] = {
        "harness": name,
        "status": "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})",
        "executions": int(execs.group(1)) if execs else 0,
        "seconds": round(seconds, 1),
        "cov": int(done[-1][1]) if done else 0,
        "ft": int(done[-1][2]) if done else 0,
    }
    if proc.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-30:])
        print(f"--- {name} ---\n{tail}", file=sys.stderr)
    return result


def line_coverage(names: list[str]) -> None:
    """Line coverage of wskreplay's modules that the saved corpus of ``names`` (all when
    empty) reaches; measured from before wskreplay is imported."""
    import coverage

    cov = coverage.Coverage(source=["wskreplay"], data_file=None)
    cov.start()
    from tests.fuzz.harnesses import HARNESSES, inputs

    for name in names or HARNESSES:
        for path in inputs(name):
            try:
                HARNESSES[name].run(path.read_bytes())
            except Exception:  # noqa: BLE001, S110  (the regression run reports these)
                pass
    cov.stop()
    modules = [
        "formats/pcap.py", "formats/etl.py", "formats/etl_packets.py", "formats/tcpip.py",
        "formats/xpress.py", "formats/tracelogging.py", "formats/wsk.py", "formats/wskt.py",
        "trace/reader.py", "trace/verify.py", "trace/blocks.py", "formats/agentwire.py",
        "formats/layers/walk.py",
        "formats/layers/link.py", "formats/layers/wifi.py", "formats/layers/ip.py",
        "formats/layers/tunnels.py", "formats/layers/fragments.py", "formats/layers/report.py",
        "formats/layers/decode.py", "formats/pktmon.py", "formats/event_metadata.py",
    ]  # fmt: skip
    for module in modules:
        path = str(REPO / "wskreplay" / module)
        _, statements, _, missing, _ = cov.analysis2(path)
        share = 1 - len(missing) / len(statements) if statements else 1.0
        print(f"{module:<30} {len(statements):>5} lines  {share:6.1%} covered")


def main() -> None:
    if os.environ.get(WORKER_ENV):
        worker(os.environ[WORKER_ENV])
        return
    if "--coverage" in sys.argv[1:]:
        line_coverage([a for a in sys.argv[1:] if not a.startswith("-")])
        return
    from tests.fuzz.harnesses import HARNESSES

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("harness", nargs="*", choices=[[], *HARNESSES], default=[])
    ap.add_argument("--budget", type=int, default=60, help="seconds per harness")
    ap.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    ap.add_argument("--rss-mb", type=int, default=4096, help="memory limit per process")
    ap.add_argument("--seed", type=int, help="libFuzzer's random seed (default: random)")
    ap.add_argument("--jobs", type=int, default=1, help="harnesses fuzzed at once")
    ap.add_argument("--save", action="store_true", help="merge new coverage into corpus/")
    ap.add_argument("--regression", action="store_true", help="saved inputs only, no fuzzer")
    ap.add_argument("--coverage", action="store_true", help="line coverage of the corpus")
    args = ap.parse_args()
    names = args.harness or list(HARNESSES)
    if args.regression:
        sys.exit(1 if regression(names) else 0)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        results = list(pool.map(lambda name: fuzz(name, args), names))
    print(f"{'harness':<18} {'executions':>11} {'exec/s':>8} {'cov':>6} {'ft':>6}  status")
    for r in results:
        rate = int(r["executions"]) / max(float(r["seconds"]), 0.1)
        print(f"{r['harness']:<18} {r['executions']:>11,} {rate:>8,.0f} {r['cov']:>6} "
              f"{r['ft']:>6}  {r['status']}")  # fmt: skip
    failed = [r["harness"] for r in results if r["status"] != "ok"]
    for name in failed:
        kept = sorted(p.name for p in (HERE / "crashes" / name).iterdir())
        print(f"{name}: crash inputs under tests/fuzz/crashes/{name}/: {', '.join(kept)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
