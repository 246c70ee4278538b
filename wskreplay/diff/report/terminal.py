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


def print_diff(result: DiffResult, *, a: str, b: str, console: Console | None = None) -> None:
    console = console or Console()
    style = "bold green" if result.equal else "bold red"
    console.print(f"[{style}]{verdict(result)}[/]")
    console.print(f"A: {a}\nB: {b}   (calls aligned {result.align})", highlight=False)
    if result.differences:
        table = Table("class", "socket", "call A", "call B", "what", show_lines=False)
        for d in result.differences[:SHOWN]:
            table.add_row(
                d.kind,
                "" if d.socket is None else str(d.socket),
                "" if d.call_a is None else str(d.call_a),
                "" if d.call_b is None else str(d.call_b),
                d.detail,
            )
        console.print(table)
        if len(result.differences) > SHOWN:
            console.print(f"... and {len(result.differences) - SHOWN} more (--json for all)")
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
