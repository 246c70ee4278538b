"""``wskreplay replay --step`` and ``--break-on STATUS``: the emulator's replay one call at a
time, each call shown with what it returned, what completed meanwhile, and its socket's
state.

Interactive commands at the prompt: Enter for the next call, ``s`` for the socket's full
state (JSON, as ``--until`` prints it), ``c`` to run on (to the next break with
``--break-on``, else to the end), ``q`` to quit. End of input quits.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from wskreplay.formats import ntstatus as nt
from wskreplay.replayer.engine import ReplayOptions, Step, socket_state, steps
from wskreplay.replayer.wsk_socket import Completed, Returned, Violation
from wskreplay.trace.model import Trace

PROMPT = "[Enter] next, s state, c continue, q quit > "


def _ms(ns: int, t0: int) -> str:
    return f"+{(ns - t0) / 1e6:.3f} ms"


def describe(trace: Trace, step: Step, t0: int) -> list[str]:
    """The lines shown for one step."""
    call = trace.calls[step.call]
    control = "none" if call.control_info is None else f"{len(call.control_info)} bytes"
    lines = [
        f"call {step.call}  socket {step.socket}  issued {_ms(call.issue_ns, t0)}  "
        f"flags 0x{call.flags:X}  length {call.length}  ControlInfo {control}"
    ]
    for e in step.events:
        if isinstance(e, Returned):
            who = "the call" if e.irp is None else f"call {e.irp - 1}"
            lines.append(f"  returned   {who}: {nt.describe(e.status)} at {_ms(e.time_ns, t0)}")
        elif isinstance(e, Completed):
            lines.append(
                f"  completed  call {e.irp - 1}: {nt.describe(e.status)}, Information "
                f"{e.information}, at {_ms(e.time_ns, t0)}"
            )
        elif isinstance(e, Violation):
            lines.append(f"  violation  {e.kind}: {e.detail}")
    state = socket_state(trace, step)
    tcp, wsk = state["tcp"], state["wsk"]
    lines.append(
        f"  socket {step.socket}: {wsk['state']}, outstanding calls "
        f"{wsk['outstanding_calls']}; TCP unsent {tcp['queued_unsent']}, in flight "
        f"{tcp['in_flight']}, cwnd {tcp['cwnd']}, peer window {tcp['peer_window']}"
    )
    return lines


def statuses(step: Step) -> set[int]:
    """Every status the step's call or a completion during it had."""
    return {e.status for e in step.events if isinstance(e, (Returned, Completed))}


def step_through(
    trace: Trace,
    options: ReplayOptions,
    *,
    interactive: bool,
    break_on: int | None,
    read: Callable[[], str],
    write: Callable[[str], None],
) -> int:
    """Run the stepper; its exit status (1 when ``break_on`` never happened)."""
    t0 = int(trace.calls.column("issue_ns").min()) if len(trace.calls) else 0
    stopping = break_on is None
    broke = False
    for step in steps(trace, options):
        hit = break_on is not None and break_on in statuses(step)
        if hit:
            broke = True
            write(f"break: {nt.describe(break_on or 0)} at call {step.call}")
        if not (stopping or hit):
            continue
        for line in describe(trace, step, t0):
            write(line)
        if not interactive:
            return 0
        stopping = True
        while True:
            answer = _ask(read, write)
            if answer == "s":
                write(json.dumps(socket_state(trace, step), indent=1))
                continue
            break
        if answer == "q":
            write("quit")
            return 0
        if answer == "c":
            stopping = False
    if break_on is not None and not broke:
        write(f"no call returned or completed with {nt.describe(break_on)}")
        return 1
    write(f"end of the trace: {len(trace.calls)} calls")
    return 0


def _ask(read: Callable[[], str], write: Callable[[str], None]) -> str:
    write(PROMPT)
    line = read()
    return "q" if line == "" else line.strip().lower()
