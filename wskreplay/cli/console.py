"""Human-readable terminal output (rich)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
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
    print_decode_report(summary, console)
    if not summary.get("complete", True):
        console.print("[bold red]incomplete:[/] the capture is damaged; see the error below")


def print_decode_report(report: dict[str, Any], console: Console | None = None) -> None:
    """What every frame was, per link type and per encapsulation (a decode report's
    ``as_dict``, or a summary holding its keys)."""
    console = console or Console()
    links = Table(title="frames by link type", title_justify="left")
    for col in ("link type", "read", "TCP", "other", "not decoded"):
        links.add_column(col, justify="left" if col == "link type" else "right")
    for row in report["link_types"]:
        links.add_row(
            f"{row['name']} ({row['link_type']})",
            str(row["read"]),
            str(row["tcp"]),
            str(row["other"]),
            str(sum(row["undecoded"].values())),
        )
    console.print(links)
    paths = Table(title="frames by encapsulation", title_justify="left")
    for col in ("encapsulation", "frames", "TCP", "other", "not decoded"):
        paths.add_column(col, justify="left" if col == "encapsulation" else "right")
    for row in report["encapsulations"]:
        paths.add_row(
            " / ".join(row["path"]) or "-",
            str(row["read"]),
            str(row["tcp"]),
            str(row["other"]),
            str(sum(row["undecoded"].values())),
        )
    console.print(paths)
    for why, n in report["undecoded"].items():
        console.print(f"[bold yellow]not decoded:[/] {n} frames: {why}")


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


class _ImportBar:
    def __init__(self, progress: Progress, *, refresh: bool) -> None:
        self._progress = progress
        self._task = progress.add_task("starting", total=None)
        self._refresh = refresh

    def phase(self, name: str) -> None:
        self._progress.reset(self._task, total=None, description=name)
        if self._refresh:
            self._progress.refresh()

    def advance(self, done: int, total: int) -> None:
        self._progress.update(self._task, total=total, completed=done, refresh=self._refresh)


class _Silent:
    def phase(self, name: str) -> None:
        pass

    def advance(self, done: int, total: int) -> None:
        pass


@contextmanager
def import_progress(
    show: bool, *, unit: str = "bytes", thread: bool = True
) -> Iterator[_ImportBar | _Silent]:
    """A bar on stderr naming the phase, with how far it is where it knows: bytes read
    (``unit="bytes"``) or items done of all (``unit="items"``, e.g. calls replayed).
    ``thread=False``: no thread redraws it, each report does (a replay that forks its
    workers does so only when it runs no other thread)."""
    if not show:
        yield _Silent()
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn() if unit == "bytes" else MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        auto_refresh=thread,
    )
    with progress:
        yield _ImportBar(progress, refresh=not thread)


def _unmatched_lines(summary: dict[str, Any]) -> list[str]:
    c = summary.get("correlation", {})
    labels = {
        "calls_not_on_wire": "calls whose bytes never appeared on the wire",
        "calls_partly_on_wire": "calls only partly seen on the wire",
        "wire_bytes_without_call": "outbound wire bytes no call explains",
        "payload_mismatches": "calls whose recorded bytes differ from the wire",
        "unmatched_completions": "completions for no outstanding call",
        "never_completed": "calls never completed",
        "unannounced_sockets": "sockets used without a SocketConnected event",
        "sockets_without_connection": "sockets with no connection in the capture",
        "connections_without_socket": "captured connections no recorded socket used",
        "undecodable_sockaddrs": "undecodable SOCKADDRs",
    }
    return [f"{c[k]} {label}" for k, label in labels.items() if c.get(k)]


def print_import_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("wrote", str(summary["output"]))
    grid.add_row("sockets", str(summary["sockets"]))
    unknown = summary.get("completion_unknown", 0)
    grid.add_row(
        "calls",
        f"{summary['calls']} ({summary['outstanding']} outstanding at the end"
        + (f", {unknown} whose completion the recording could not see)" if unknown else ")"),
    )
    grid.add_row("bytes", f"{summary['bytes_out']} sent, {summary['bytes_in']} received")
    grid.add_row("packets", f"{summary['packets']} read, {summary['segments']} TCP segments kept")
    grid.add_row("returned", ", ".join(f"{k} {v}" for k, v in summary["returned"].items()) or "-")
    grid.add_row("completed", ", ".join(f"{k} {v}" for k, v in summary["completed"].items()) or "-")
    grid.add_row("completion policy", str(summary.get("completion_policy")))
    clock = summary.get("clock")
    if clock:
        if clock.get("sources") == 2:
            u = clock.get("uncertainty_ns")
            text = f"capture - {clock['offset_ns']} ns" + (
                f" (within {u} ns, {clock['pairs']} calls)"
                if u is not None
                else f" (no bound from completions, {clock['pairs']} calls)"
            )
        else:
            text = clock.get("method") or clock.get("note", "")
        grid.add_row("clock", text)
    unmatched = _unmatched_lines(summary)
    grid.add_row("unmatched", "; ".join(unmatched) if unmatched else "none")
    decode = summary.get("decode")
    if decode:
        frames = decode["frames"]
        undecoded = "".join(f"; {n} {why}" for why, n in decode["undecoded"].items())
        grid.add_row(
            "frames",
            f"{frames['read']} read: {frames['tcp']} TCP, {frames['other']} other, "
            f"{frames['undecoded']} not decoded{undecoded}",
        )
    console.print(grid)


def _us(ns: int) -> str:
    return f"{ns / 1000:.1f} us"


def print_replay_summary(
    recorded: Any, replayed: Any, out: str, console: Console | None = None
) -> None:
    """Counts of the replayed calls and how many statuses equal the recording's."""
    console = console or Console()
    a, b = recorded.calls, replayed.calls
    same_return = int((a.column("status") == b.column("status")).sum())
    both_done = (a.column("completed") == 1) & (b.column("completed") == 1)
    same_done = int(
        ((a.column("completion_status") == b.column("completion_status")) & both_done).sum()
    )
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("wrote", out)
    grid.add_row("calls", str(len(b)))
    grid.add_row("segments", str(len(replayed.segments)))
    grid.add_row("returned status as recorded", f"{same_return} of {len(b)}")
    grid.add_row(
        "completion status as recorded", f"{same_done} of {int((a.column('completed') == 1).sum())}"
    )
    grid.add_row("completion policy", replayed.metadata["completion_policy"]["policy"])
    violations = [e for e in replayed.events if e.kind == "violation"]
    grid.add_row("violations", str(len(violations)) if violations else "none")
    target = replayed.metadata.get("target", {})
    if target.get("kind") != "emulator":
        grid.add_row(
            "target",
            ", ".join(f"{k}={target[k]}" for k in ("kind", "topology", "address") if k in target),
        )
    pacing = replayed.metadata.get("pacing")
    if pacing and pacing.get("calls"):
        grid.add_row(
            "lateness (issue vs schedule)",
            "median {} / p90 {} / p99 {} / max {}".format(
                *(_us(pacing[k]) for k in ("median_ns", "p90_ns", "p99_ns", "max_ns"))
            ),
        )
    if "wire" in target:
        grid.add_row("wire", target["wire"])
    unfinished = replayed.metadata.get("unfinished_calls")
    if unfinished:
        grid.add_row("never completed", f"{len(unfinished)} calls (first: call {unfinished[0]})")
    console.print(grid)


def print_chaos_runs(trace: str, runs: list[Any], console: Console | None = None) -> None:
    """One line per chaos seed: equal (timing aside) or its first difference."""
    console = console or Console()
    diverged = [r.seed for r in runs if r.diverged]
    console.print(
        f"{trace}: {len(runs)} chaos seeds, {len(diverged)} diverge (timing differences "
        "are expected under chaos and not counted)"
    )
    table = Table(show_header=True, header_style="bold")
    table.add_column("seed", justify="right")
    table.add_column("verdict")
    table.add_column("first difference")
    for r in runs:
        first = r.differences[0].detail if r.differences else ""
        more = f" (+{len(r.differences) - 1} more)" if len(r.differences) > 1 else ""
        table.add_row(str(r.seed), "DIVERGES" if r.diverged else "equal", first + more)
    console.print(table)
    if diverged:
        console.print(f"diverging seeds: {' '.join(str(s) for s in diverged)}")
        # One line, as typed: a long path must not wrap, nor its brackets read as markup.
        console.print(
            f"reproduce one: wskreplay check {trace} --chaos {diverged[0]}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
