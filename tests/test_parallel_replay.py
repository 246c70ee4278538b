"""A replay whose sockets are shared out over forked processes (``--jobs``) writes the
same trace, byte for byte, as a replay in one process: on the shipped traces, on real
captures of many connections, and on synthetic traces, with every option that changes
what the emulator does. A worker that fails or is killed ends the replay with one line
naming it, and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from wskreplay.errors import InputError, WskReplayError
from wskreplay.replayer import parallel
from wskreplay.replayer.engine import ReplayOptions, ReplayPlan, replay
from wskreplay.replayer.parallel import (
    calls_by_socket,
    processes_for,
    replay_in_processes,
    socket_queue,
)
from wskreplay.replayer.profile import load_profile
from wskreplay.trace import read_trace, write_trace

from .conftest import (
    REPO,
    SHARED_DATA,
    alive,
    assert_one_line_error,
    children_of,
    process_state,
    run_cli,
)

CAPTURES = [
    SHARED_DATA / "replay" / "pcapplusplus__650HttpResponses.pcap",
    SHARED_DATA / "pcap" / "pcapplusplus__three_http_streams.pcap",
    SHARED_DATA / "pcap" / "zeek__http_1000-requests-one-dropped-response.pcap.gz",
    SHARED_DATA / "pcap" / "suricata-verify__smb2-01_smb2-peter.pcap",
]


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The shipped traces, real captures imported with --infer-calls, and a synthetic
    trace of 16 sockets."""
    into = tmp_path_factory.mktemp("parallel")
    paths = sorted((REPO / "traces").glob("*.wskt"))
    for capture in CAPTURES:
        out = into / f"{capture.name}.wskt"
        proc = run_cli("import", str(capture), "--infer-calls", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        paths.append(out)
    synth = into / "synth.wskt"
    proc = run_cli("synth", "--calls", "3000", "--sockets", "16", "--seed", "7", "-o", str(synth))
    assert proc.returncode == 0, proc.stderr
    paths.append(synth)
    return paths


OPTION_SETS = {
    "recorded timing": {},
    "asap": {"speed": None},
    "parametric peer": {"peer": "parametric"},
    "on-transmit": {"completion": "on-transmit"},
    "chaos 3": {"chaos": 3},
    "speed 2": {"speed": 2.0},
}


def _bytes(trace, path: Path) -> bytes:
    write_trace(path, trace)
    return path.read_bytes()


@pytest.mark.parametrize("name", OPTION_SETS)
def test_the_same_trace_whatever_the_processes(traces, tmp_path, name):
    options = ReplayOptions(load_profile(), **OPTION_SETS[name])
    for path in traces:
        recorded = read_trace(path)
        plan = ReplayPlan(recorded, replace(options, chaos=None))
        one = _bytes(replay(recorded, options, plan=plan), tmp_path / "one.wskt")
        tried = {len(recorded.sockets)} | {2, 3}
        for processes in sorted(n for n in tried if n <= len(recorded.sockets)):
            for dealt_plan in (plan, ReplayPlan(recorded, replace(options, chaos=None))):
                # The second plan has worked out no socket yet: each process works out its
                # own sockets' plans, and their paths come back with its share.
                shared = replay_in_processes(dealt_plan, options, processes)
                assert _bytes(shared, tmp_path / "shared.wskt") == one, (path.name, processes)


def test_the_sockets_with_the_most_work_go_first_and_each_call_once(traces):
    for path in traces:
        recorded = read_trace(path)
        plan = ReplayPlan(recorded, ReplayOptions(load_profile()))
        queue = socket_queue(plan)
        assert sorted(queue) == sorted(recorded.sockets)
        work = [plan.socket_of.tolist().count(sid) + len(plan.own[sid].segments) for sid in queue]
        assert work == sorted(work, reverse=True)
        calls_of = calls_by_socket(plan)
        assert list(calls_of) == list(recorded.sockets)
        for sid, calls in calls_of.items():
            assert calls == [i for i in plan.order if plan.socket_of[i] == sid]


def test_how_many_processes(traces):
    synth = read_trace(traces[-1])
    assert processes_for(synth, 1) == 1
    assert processes_for(synth, 8) == 1, "3,000 calls do not pay for a second process"
    big = parallel.MIN_CALLS_PER_PROCESS
    try:
        parallel.MIN_CALLS_PER_PROCESS = 1000
        assert processes_for(synth, 2) == 2
        assert processes_for(synth, 64) == 3
        small = read_trace(REPO / "traces" / "sample.wskt")
        assert processes_for(small, 64) == 1
    finally:
        parallel.MIN_CALLS_PER_PROCESS = big


def _workers_seen(args: list[str]) -> tuple[int, set[int]]:
    """Run the command line, watching its child processes come and go: its exit status
    and the children seen."""
    exe = Path(sys.executable).parent / "wskreplay"
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: set[int] = set()
    while proc.poll() is None:
        seen.update(children_of(proc.pid))
        time.sleep(0.002)
    assert proc.stderr is not None
    assert proc.returncode in (0, 1), proc.stderr.read()
    proc.stderr.close()
    return proc.returncode, seen


def test_the_command_line_replays_in_processes(tmp_path):
    """``replay --jobs 2`` on a trace big enough for two processes forks one worker, with
    its progress bar shown too (the bar runs no thread), and writes --jobs 1's output
    (which forks none); so does ``check``."""
    synth = tmp_path / "synth.wskt"
    calls = 2 * parallel.MIN_CALLS_PER_PROCESS
    proc = run_cli("synth", "--calls", str(calls), "--sockets", "4", "-o", str(synth))
    assert proc.returncode == 0, proc.stderr
    outs = {}
    for jobs in (1, 2):
        outs[jobs] = tmp_path / f"jobs{jobs}.wskt"
        args = ["replay", "--progress", "--jobs", str(jobs), str(synth), "-o", str(outs[jobs])]
        status, workers = _workers_seen(args)
        assert status == 0 and len(workers) == jobs - 1
    assert outs[1].read_bytes() == outs[2].read_bytes()
    checked = tmp_path / "checked.wskt"
    _, workers = _workers_seen(["check", "--jobs", "2", str(synth), "-o", str(checked)])
    assert len(workers) == 1
    assert checked.read_bytes() == outs[1].read_bytes()
    proc = run_cli("replay", "--jobs", "0", str(synth), "-o", str(tmp_path / "x.wskt"))
    assert_one_line_error(proc, "--jobs")
    for target in ("socket", "agent://127.0.0.1:1"):
        out = str(tmp_path / "x.wskt")
        proc = run_cli("replay", "--jobs", "2", "--target", target, str(synth), "-o", out)
        assert_one_line_error(proc, "--jobs", "--target emulator")
    assert not list(tmp_path.glob("x.wskt"))


def _children() -> list[int]:
    return children_of(os.getpid())


def test_a_killed_worker_ends_the_replay_with_one_line(tmp_path):
    """A worker killed mid-replay (here by the first progress report, as the OOM killer
    would): the replay raises a one-line error naming the worker and its sockets, and no
    worker is left running."""
    synth = tmp_path / "synth.wskt"
    proc = run_cli("synth", "--calls", "60000", "--sockets", "6", "-o", str(synth))
    assert proc.returncode == 0, proc.stderr
    recorded = read_trace(synth)
    options = ReplayOptions(load_profile(), speed=None)
    plan = ReplayPlan(recorded, options)
    killed: list[int] = []

    def kill_workers(done: int, total: int) -> None:
        for pid in _children():
            if pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    with pytest.raises(WskReplayError) as raised:
        replay_in_processes(plan, options, 3, progress=kill_workers)
    assert len(killed) == 2
    message = str(raised.value)
    assert "\n" not in message
    assert "killed by SIGKILL" in message and f"process {killed[0]}" in message
    assert "--jobs 1" in message
    assert not [pid for pid in _children() if pid in killed]


def test_a_worker_s_error_is_raised_here(traces, monkeypatch):
    """An input error met in a worker (injected in its share's replay) is raised in this
    process as the same one line; a bug is raised with the worker's traceback."""
    recorded = read_trace(traces[-1])
    options = ReplayOptions(load_profile(), speed=None)
    plan = ReplayPlan(recorded, options)
    real = parallel._replay_dealt

    def failing(plan, options, queue, calls_of, dealer, process, progress):
        if process == 1:
            raise error
        return real(plan, options, queue, calls_of, dealer, process, progress)

    monkeypatch.setattr(parallel, "_replay_dealt", failing)
    error: Exception = InputError("x.wskt", "call 7: expected a ControlInfo", offset=12)
    with pytest.raises(WskReplayError) as raised:
        replay_in_processes(plan, options, 2)
    assert str(raised.value) == "x.wskt: offset 12: call 7: expected a ControlInfo"
    error = KeyError("lost")
    with pytest.raises(RuntimeError) as bug:
        replay_in_processes(plan, options, 2)
    assert "KeyError: 'lost'" in str(bug.value) and "Traceback" in str(bug.value)
    assert not _children()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_replay_stopped_leaves_no_worker(tmp_path, how):
    """``replay --jobs 2`` interrupted (Ctrl-C: exit 130, no output) or killed outright:
    its worker, which had about a second of work left, is gone within 0.25 s either way.
    The command starts with SIGINT at its default, as in a terminal's foreground (a
    shell's background job, as the suite may be, ignores it, and so would the command)."""
    synth = tmp_path / "synth.wskt"
    proc = run_cli("synth", "--calls", "200000", "--sockets", "2", "-o", str(synth))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out.wskt"
    exe = Path(sys.executable).parent / "wskreplay"
    cli = subprocess.Popen(
        [str(exe), "replay", "--jobs", "2", str(synth), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while not workers and cli.poll() is None and time.monotonic() < deadline:
        workers = children_of(cli.pid)
        time.sleep(0.002)
    assert workers, "no worker was forked"
    cli.send_signal(how)
    sent = time.monotonic()
    states: list[tuple[float, str, str]] = []
    while any(alive(pid) for pid in workers) and time.monotonic() < sent + 10:
        states.append((time.monotonic() - sent, process_state(cli.pid), process_state(workers[0])))
        time.sleep(0.01)
    took = time.monotonic() - sent
    changes = [x for k, x in enumerate(states) if k == 0 or x[1:] != states[k - 1][1:]]
    assert took < 0.25, f"worker gone after {took:.2f} s; (s, CLI, worker) states: {changes}"
    _, stderr = cli.communicate(timeout=60)
    if how == signal.SIGINT:
        assert cli.returncode == 130 and stderr.strip() == "wskreplay: interrupted"
    else:
        assert cli.returncode == -signal.SIGKILL
    assert not out.exists()
