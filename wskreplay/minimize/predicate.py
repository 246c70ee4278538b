"""What "still fails" means while minimising: a test of a candidate trace and its replay.

- **Same divergence** (the default): the diff of the candidate against its replay holds a
  difference of the same class, at the same call of the original trace, as the original's
  *target* difference: the first one diff reports, taking a status difference (returned
  status, completed or not, completion status, Information) before a wire one, before
  a timing one, before anything else.
- **A status**: ``returned=STATUS`` / ``completion=STATUS`` (a name such as
  ``STATUS_CONNECTION_RESET`` or a number): some call of the replay returns, or completes,
  with that status while its recording says otherwise.
- **A command**: anything else is run through the shell with the candidate's path appended
  (or put where ``{}`` stands); exit status 0 means the candidate still fails.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wskreplay.diff import DiffResult
from wskreplay.errors import InputError
from wskreplay.formats import ntstatus as nt
from wskreplay.trace import write_trace
from wskreplay.trace.model import Trace

PRECEDENCE = (
    ("status", "completed", "completion_status", "information", "violation"),
    ("wire",),
    ("timing",),
)
COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Divergence:
    kind: str
    call: int
    """Index of the call in the original trace."""
    detail: str

    def describe(self) -> str:
        return f"{self.kind} at call {self.call} ({self.detail})"


def target_divergence(result: DiffResult) -> Divergence | None:
    """The difference minimisation keeps (see the module docstring), None when equal."""
    with_call = [d for d in result.differences if d.call_a is not None]
    ranked = [d for kinds in PRECEDENCE for d in with_call if d.kind in kinds] + with_call
    if not ranked:
        return None
    first = ranked[0]
    return Divergence(first.kind, int(first.call_a or 0), first.detail)


Check = Callable[[Trace, Trace, DiffResult, np.ndarray], bool]
"""(candidate, its replay, their diff, original index of each candidate call) -> fails?"""


def same_divergence(target: Divergence) -> Check:
    def check(_c: Trace, _r: Trace, result: DiffResult, origin: np.ndarray) -> bool:
        return any(
            d.kind == target.kind and d.call_a is not None and origin[d.call_a] == target.call
            for d in result.differences
        )

    return check


def status_seen(column: str, status: int) -> Check:
    """Some call of the replay has ``status`` in ``column`` and its recording does not."""

    def check(candidate: Trace, replayed: Trace, _d: DiffResult, _o: np.ndarray) -> bool:
        got = replayed.calls.column(column).astype(np.int64)
        recorded = candidate.calls.column(column).astype(np.int64)
        n = min(len(got), len(recorded))
        return bool(np.any((got[:n] == status) & (recorded[:n] != status)))

    return check


def external(command: str) -> Check:
    """The user's command decides, on the candidate written to a temporary file."""

    def check(candidate: Trace, _r: Trace, _d: DiffResult, _o: np.ndarray) -> bool:
        with tempfile.TemporaryDirectory(prefix="wskreplay-minimize-") as tmp:
            path = Path(tmp) / "candidate.wskt"
            write_trace(path, candidate)
            quoted = shlex.quote(str(path))
            line = command.replace("{}", quoted) if "{}" in command else f"{command} {quoted}"
            proc = subprocess.run(line, shell=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)
            return proc.returncode == 0

    return check


def parse_predicate(text: str) -> tuple[str, Check | None]:
    """(description, check) of ``--predicate TEXT``; the check is None for the default,
    which needs the original's divergence first."""
    if text == "same":
        return "same divergence", None
    name, sep, value = text.partition("=")
    if sep and name in ("returned", "completion") and not any(c.isspace() for c in text):
        try:
            status = nt.parse(value)
        except ValueError:
            raise InputError(
                None, f"--predicate {text}: {value!r} is not an NTSTATUS name or number"
            ) from None
        column = "status" if name == "returned" else "completion_status"
        return f"{name}={nt.describe(status)}", status_seen(column, status)
    return f"command: {text}", external(text)
