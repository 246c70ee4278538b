"""Compare two traces: a recording and its replay, or two recordings of one scenario.

``diff_traces(a, b, options)`` aligns sockets and calls (``align``), compares statuses,
timing against tolerances and the wire (``compare``), and returns a :class:`DiffResult`
that the reports render (``report``)."""

from wskreplay.diff.compare import (
    UNREAD_COLUMNS,
    Difference,
    DiffOptions,
    DiffResult,
    diff_traces,
)
from wskreplay.diff.tolerance import Tolerance, parse_tolerance

__all__ = [
    "UNREAD_COLUMNS",
    "DiffOptions",
    "DiffResult",
    "Difference",
    "Tolerance",
    "diff_traces",
    "parse_tolerance",
]
