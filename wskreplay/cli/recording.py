"""Commands that make traces from recordings: ``import``, ``record``."""

from __future__ import annotations

import json
import os
import sys

import click

from wskreplay.cli.app import main
from wskreplay.cli.options import (
    MAX_CONNECTIONS_OPTION,
    TUNNEL_PORT_OPTION,
    capture_options,
    seconds_to_ns,
    warn_undecoded,
)


@main.command("import")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--infer-calls",
    is_flag=True,
    help="Infer send calls from a capture alone (pcap, pcapng or .etl with packets).",
)
@click.option(
    "--side",
    type=click.Choice(["client", "server"]),
    default="client",
    show_default=True,
    help="With --infer-calls: whose sends are the calls (client = the side that opened).",
)
@click.option(
    "--idle-gap-us",
    type=click.FloatRange(0, min_open=True),
    default=1000.0,
    show_default=True,
    help="With --infer-calls: a pause this long ends a call.",
)
@click.option(
    "--socket",
    "socket_filters",
    multiple=True,
    metavar="ADDR[:PORT]|:PORT",
    help="Keep only sockets with this local or remote endpoint (repeatable).",
)
@click.option("--from", "t_from", type=float, metavar="SECONDS", help="Window start (from zero).")
@click.option("--until", "t_until", type=float, metavar="SECONDS", help="Window end (from zero).")
@click.option(
    "--payload-cap",
    type=click.IntRange(0),
    metavar="BYTES",
    help="Keep at most this many payload bytes per call.",
)
@click.option("--redact", is_flag=True, help="Keep lengths and sha256 digests, no payload bytes.")
@click.option("--summary-json", type=click.Path(dir_okay=False), help="Write the summary here.")
@click.option("--progress/--no-progress", default=None, help="Default: on a terminal.")
@MAX_CONNECTIONS_OPTION
@TUNNEL_PORT_OPTION
def import_cmd(
    inputs: tuple[str, ...],
    out: str,
    infer_calls: bool,
    side: str,
    idle_gap_us: float,
    socket_filters: tuple[str, ...],
    t_from: float | None,
    t_until: float | None,
    payload_cap: int | None,
    redact: bool,
    summary_json: str | None,
    progress: bool | None,
    max_connections: int,
    tunnel_ports: tuple[str, ...],
) -> None:
    """Turn a recording into a trace: an .etl with the recorder's events (and PktMon
    packets), an .etl plus a pcap/pcapng, or a capture alone with --infer-calls."""
    from wskreplay.cli.console import import_progress, print_import_summary
    from wskreplay.recorder.importer import ImportOptions, SocketFilter, import_sources

    filters = []
    for text in socket_filters:
        try:
            filters.append(SocketFilter.parse(text))
        except ValueError:
            raise click.BadParameter(
                f"{text!r} is not ADDR, ADDR:PORT, :PORT or [V6ADDR]:PORT",
                param_hint="--socket",
            ) from None
    if t_from is not None and t_until is not None and t_until <= t_from:
        raise click.BadParameter("--until must be after --from", param_hint="--until")
    options = ImportOptions(
        infer_calls=infer_calls,
        side=side,
        idle_gap_ns=round(idle_gap_us * 1000),
        sockets=tuple(filters),
        window_ns=(seconds_to_ns(t_from), seconds_to_ns(t_until)),
        payload_cap=payload_cap,
        redact=redact,
        capture=capture_options(max_connections, tunnel_ports),
    )
    show = sys.stderr.isatty() if progress is None else progress
    with import_progress(show) as progress:
        result = import_sources(list(inputs), options, progress)
        progress.phase(f"writing {os.path.basename(out)}")
        result.write(out, redact=redact)
    summary = {"output": out, **result.summary}
    if summary_json:
        with open(summary_json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    print_import_summary(summary)
    if "decode" in summary:
        from wskreplay.formats.tcpip import DecodeReport

        warn_undecoded(", ".join(inputs), DecodeReport.warning_of(summary["decode"]))


@main.command()
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
@click.option("--provider", multiple=True, help="More providers to record (name or GUID).")
@click.option("--capture/--no-capture", default=True, help="Also capture packets (pktmon).")
def record(out: str, provider: tuple[str, ...], capture: bool) -> None:
    """Record live on Windows (ETW real-time session + pktmon) straight into a trace."""
    from wskreplay.recorder.live import record_live

    record_live(out, extra_providers=list(provider), capture=capture)
