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


def print_streams(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=f"{summary['file']}: {summary['packets']} packets, "
        f"{summary['tcp_packets']} TCP, {len(summary['connections'])} connections",
        title_justify="left",
    )
    for col in ("#", "client", "server", "flags", "c->s bytes", "s->c bytes", "gaps"):
        table.add_column(col, justify="right" if "bytes" in col or col in ("#", "gaps") else "left")
    for i, c in enumerate(summary["connections"]):
        flags = "".join(f for f, on in (("S", c["syn"]), ("F", c["fin"]), ("R", c["rst"])) if on)
        gaps = len(c["client_to_server"]["gaps"]) + len(c["server_to_client"]["gaps"])
        table.add_row(
            str(i),
            c["client"],
            c["server"],
            flags,
            str(c["client_to_server"]["bytes"]),
            str(c["server_to_client"]["bytes"]),
            str(gaps),
        )
    console.print(table)
    if not summary.get("complete", True):
        console.print("[bold red]incomplete:[/] the capture is damaged; see the error below")


def print_etl_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for key in (
        "file",
        "os_build",
        "pointer_size",
        "clock",
        "start_ns",
        "end_ns",
        "events",
        "events_lost",
        "buffers",
        "compressed_buffers",
    ):
        facts.add_row(key, str(summary[key]))
    console.print(facts)
    table = Table(title="events per provider and id", title_justify="left")
    for col in ("provider", "provider GUID", "id", "count"):
        table.add_column(col, justify="right" if col in ("id", "count") else "left")
    for row in summary["by_provider"]:
        table.add_row(
            row["provider"] or "-",
            row["provider_guid"] or "(kernel)",
            str(row["id"]),
            str(row["count"]),
        )
    console.print(table)
