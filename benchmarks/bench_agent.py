"""Replays through an agent: the C agent over wskrtest.sys under Wine against the Python
reference agent (``wskreplay agent serve``, real Linux sockets), same trace, same run.

    python benchmarks/bench_agent.py [--calls 2000] [--sockets 4] [--runs 3]   (root)

Each run replays a ``synth`` trace as fast as the calls may go (``--asap``) and measures
calls per second of the whole replay (open, calls, bye; the wire capture included) and
the per-call overhead: from the replayer's request to the call's entry, as the agent
reports it (the driver's QPC at WskSend's entry for the C agent, the moment before the
socket call for the Python one), moved onto the replayer's clock. What the Wine figures
do and do not say about real Windows is in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests import wine  # noqa: E402
from tests.agent_client import TOKEN  # noqa: E402
from wskreplay.formats.agentwire import TOKEN_ENV  # noqa: E402
from wskreplay.generators.synth import synth_trace  # noqa: E402
from wskreplay.replayer.engine import ReplayOptions  # noqa: E402
from wskreplay.replayer.profile import load_profile  # noqa: E402
from wskreplay.replayer.targets import agent as agent_target  # noqa: E402

overheads: list[int] = []
_send = agent_target.AgentSession.send


def _timed_send(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    asked = self.now()
    issued, events = _send(self, *args, **kwargs)
    overheads.append(issued - asked)
    return issued, events


agent_target.AgentSession.send = _timed_send  # type: ignore[method-assign]


def python_agent() -> tuple[subprocess.Popen, tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wskreplay", "agent", "serve", "--listen", "127.0.0.1:0"],
        env={**os.environ, TOKEN_ENV: TOKEN}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    m = re.search(r"listening on ([\d.]+):(\d+)", proc.stderr.readline())
    assert m
    return proc, (m.group(1), int(m.group(2)))


def replay_through(address: tuple[str, int], trace, token_file: Path) -> dict[str, float]:
    overheads.clear()
    t = time.perf_counter()
    agent_target.replay_agent(
        trace,
        ReplayOptions(load_profile("windows-tcpip"), speed=None),
        agent_target.AgentTargetOptions(f"agent://{address[0]}:{address[1]}", str(token_file)),
    )
    seconds = time.perf_counter() - t
    ordered = sorted(overheads)
    return {
        "seconds": seconds,
        "calls_per_s": len(trace.calls) / seconds,
        "median_us": statistics.median(ordered) / 1e3,
        "p99_us": ordered[int(0.99 * (len(ordered) - 1))] / 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    built = wine.build()
    if built.returncode != 0:
        sys.exit(built.stdout + built.stderr)
    trace = synth_trace(args.calls, args.sockets, seed=1)
    with tempfile.TemporaryDirectory(prefix="wskreplay-bench-agent-") as tmp:
        folder = Path(tmp)
        (folder / "token").write_text(TOKEN)
        machine = wine.WineMachine(folder / "prefix")
        machine.boot()
        c_proc, c_address = machine.start_agent()
        py_proc, py_address = python_agent()
        try:
            agents = {
                "C agent + wskrtest.sys (Wine)": c_address,
                "Python agent (Linux sockets)": py_address,
            }
            rows: dict[str, list[dict[str, float]]] = {name: [] for name in agents}
            for _ in range(args.runs):
                for name, address in agents.items():
                    rows[name].append(replay_through(address, trace, folder / "token"))
        finally:
            py_proc.terminate()
            py_proc.wait(timeout=30)
            machine.stop_agent(c_proc)
            machine.stop_driver()
            machine.shutdown()
    print(f"synth --calls {args.calls} --sockets {args.sockets}, --asap, best of {args.runs}")
    print(f"{'agent':32} {'seconds':>8} {'calls/s':>9} {'overhead median':>16} {'p99':>9}")
    best = {name: min(runs, key=lambda r: r["seconds"]) for name, runs in rows.items()}
    for name, r in best.items():
        print(f"{name:32} {r['seconds']:8.2f} {r['calls_per_s']:9.0f} "
              f"{r['median_us']:13.0f} us {r['p99_us']:6.0f} us")  # fmt: skip
    c, py = best.values()
    print(
        f"C agent / Python agent: calls/s x{c['calls_per_s'] / py['calls_per_s']:.2f}, "
        f"median overhead x{c['median_us'] / py['median_us']:.2f}"
    )


if __name__ == "__main__":
    main()
