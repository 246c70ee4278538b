"""Human-readable terminal output (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from wskreplay.formats import ntstatus


def _status_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("NTSTATUS")
    table.add_column("name")
    table.add_column("calls", justify="right")
    for code, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        table.add_row(code, ntstatus.name(int(code, 16)) or "?", str(n))
    return table


def print_info(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    overview = Table.grid(padding=(0, 2))
    overview.add_column(style="bold")
    overview.add_column()
    rows = [
        ("file", summary["file"]),
        ("format", summary["format_version"]),
        ("sockets", summary["sockets"]),
        ("calls", summary["calls"]),
        ("segments", summary["segments"]),
        ("sent bytes", summary["stream_bytes"]),
        ("received bytes", summary["received_bytes"]),
        (
            "payload stored",
            f"{summary['payload_bytes']} bytes"
            + (" (redacted: digests only)" if summary["redacted"] else ""),
        ),
        ("duration", f"{summary['duration_ns'] / 1e6:.3f} ms"),
        ("clock", summary["clock"]["type"]),
    ]
    for key, value in rows:
        overview.add_row(key, str(value))
    console.print(overview)
    console.print(_status_table("returned status", summary["statuses"]))
    console.print(_status_table("completion status", summary["completions"]))
