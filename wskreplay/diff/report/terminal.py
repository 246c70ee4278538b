"""The terminal report: a one-line verdict, counts per class, then the differences, most
important class first (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from wskreplay.diff.compare import KINDS, DiffResult

SHOWN = 20


def verdict(result: DiffResult) -> str:
    if result.equal:
        return f"EQUAL: {result.calls_compared} calls compared, within tolerance"
    counts = {kind: result.count(kind) for kind in KINDS}
    parts = [f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items() if n]
    return f"DIFFERENT: {', '.join(parts)} ({result.calls_compared} calls compared)"


def not_compared(result: DiffResult) -> str | None:
    """What one trace did not know, so was not compared (None when nothing)."""
    n = result.not_compared
    if not any(n.values()):
        return None
    return (
        f"not compared (unknown to a trace): {n['completions']} completions, "
        f"{n['stream_bytes']} stream bytes"
    )


def print_diff(result: DiffResult, *, a: str, b: str, console: Console | None = None) -> None:
    console = console or Console()
    style = "bold green" if result.equal else "bold red"
    console.print(f"[{style}]{verdict(result)}[/]")
    console.print(f"A: {a}\nB: {b}   (calls aligned {result.align})", highlight=False)
    if result.tolerance_basis != "emulator":
        limits = ", ".join(f"{m} {tol}" for m, tol in result.tolerances.items())
        console.print(
            f"timing tolerances for a {result.tolerance_basis}: {limits}", highlight=False
        )
    unknown = not_compared(result)
    if unknown:
        console.print(unknown, highlight=False)
    if result.runs:
        table = Table("class", "differences", "what", "depends on", show_lines=False)
        for run in result.runs[:SHOWN]:
            doc = run.as_dict()
            table.add_row(run.kind, str(doc["differences"]), doc["summary"], doc["depends_on"])
        console.print(table)
        if len(result.runs) > SHOWN:
            console.print(f"... and {len(result.runs) - SHOWN} more runs (--json for all)")
    for item in result.dissections:
        where = f"socket {item['socket']} {item['direction']} packet at byte {item['offset']}"
        fields = item["fields"]
        if fields is None:
            console.print(f"dissected {where}: no packet on one side's wire", highlight=False)
            continue
        console.print(f"dissected {where}: {len(fields)} field(s) differ", highlight=False)
        for f in fields[:SHOWN]:
            console.print(f"  {f['field']}: {f['a']!r} in A, {f['b']!r} in B", highlight=False)
    for d in result.tolerated[:SHOWN]:
        console.print(f"[dim]tolerated {d.kind}: socket {d.socket}: {d.detail}[/]", highlight=False)
