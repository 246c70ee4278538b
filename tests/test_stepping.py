"""``wskreplay replay --step`` and ``--break-on``, driven as a user drives them: a
subprocess with scripted stdin."""

from __future__ import annotations

import json

from wskreplay.formats import ntstatus as nt
from wskreplay.trace import read_trace

from .conftest import REPO, assert_one_line_error, run_cli

FIELD = str(REPO / "traces" / "field.wskt")


def _calls_shown(stdout: str) -> list[int]:
    return [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("call ")]


def test_enter_steps_one_call_and_q_quits():
    proc = run_cli("replay", FIELD, "--step", stdin="\n\nq\n")
    assert proc.returncode == 0, proc.stderr
    assert _calls_shown(proc.stdout) == [0, 1, 2]
    assert proc.stdout.count("[Enter] next") == 3 and proc.stdout.rstrip().endswith("quit")
    assert "returned   call 0: STATUS_PENDING (0x00000103)" in proc.stdout
    assert "socket 0: connected, outstanding calls [0]" in proc.stdout


def test_s_shows_the_same_state_as_until():
    proc = run_cli("replay", FIELD, "--step", stdin="\n\n\ns\nq\n")
    body = proc.stdout.split("[Enter] next, s state, c continue, q quit > \n")[4]
    state = json.loads(body[: body.rindex("}") + 1])
    until = json.loads(run_cli("replay", FIELD, "--until", "3").stdout)
    assert state == until and state["seq"] == 3


def test_c_runs_to_the_end_and_end_of_input_quits():
    proc = run_cli("replay", FIELD, "--step", stdin="c\n")
    assert _calls_shown(proc.stdout) == [0]
    assert "end of the trace: 12 calls" in proc.stdout
    proc = run_cli("replay", FIELD, "--step", stdin="")
    assert _calls_shown(proc.stdout) == [0] and proc.stdout.rstrip().endswith("quit")


def test_break_on_stops_at_the_first_call_with_that_status():
    proc = run_cli("replay", FIELD, "--break-on", "STATUS_CONNECTION_RESET")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("break: STATUS_CONNECTION_RESET (0xC000020D) at call 7\n")
    assert _calls_shown(proc.stdout) == [7]
    shown = {
        int(line.split()[2].rstrip(":"))
        for line in proc.stdout.splitlines()
        if line.startswith("  completed") and "STATUS_CONNECTION_RESET" in line
    }
    recorded = read_trace(FIELD)
    reset = recorded.calls.column("completion_status") == nt.STATUS_CONNECTION_RESET
    assert shown == {int(i) for i in reset.nonzero()[0]}


def test_step_from_a_break():
    proc = run_cli("replay", FIELD, "--step", "--break-on", "0xC00000B6", stdin="\nq\n")
    assert _calls_shown(proc.stdout) == [7, 8]
    assert "break: STATUS_FILE_FORCED_CLOSED (0xC00000B6) at call 7" in proc.stdout


def test_a_status_that_never_happens_and_bad_options():
    proc = run_cli("replay", FIELD, "--break-on", "STATUS_IO_TIMEOUT")
    assert proc.returncode == 1
    assert "no call returned or completed with STATUS_IO_TIMEOUT" in proc.stdout
    assert_one_line_error(run_cli("replay", FIELD, "--break-on", "NOPE"), "--break-on", "NOPE")
    assert_one_line_error(
        run_cli("replay", FIELD, "--step", "--target", "socket", "--topology", "loopback"),
        "emulator only",
    )
