"""Commands on captures and ETW logs: ``streams``, ``events``."""

from __future__ import annotations

import json
import sys

import click

from wskreplay.cli.app import EXIT_ERROR, EXIT_PROBLEM, main
from wskreplay.cli.options import (
    MAX_CONNECTIONS_OPTION,
    TUNNEL_PORT_OPTION,
    capture_options,
    warn_undecoded,
)
from wskreplay.errors import WskReplayError


@main.command()
@click.argument("capture", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the connections as JSON.")
@click.option(
    "--dump",
    "dump_dir",
    type=click.Path(file_okay=False),
    help="Write each direction's reassembled bytes to a file in this folder.",
)
@click.option(
    "--partial-ok",
    is_flag=True,
    help="On a damaged capture, print what was read and exit 1 instead of 2.",
)
@MAX_CONNECTIONS_OPTION
@TUNNEL_PORT_OPTION
def streams(
    capture: str,
    as_json: bool,
    dump_dir: str | None,
    partial_ok: bool,
    max_connections: int,
    tunnel_ports: tuple[str, ...],
) -> None:
    """Reassemble the TCP connections of a pcap, pcapng or .etl (PktMon) capture."""
    from wskreplay.cli.console import print_streams
    from wskreplay.recorder.capture_streams import streams_of_file

    options = capture_options(max_connections, tunnel_ports)
    result = streams_of_file(capture, options, dump_dir)
    frames = result.frames
    summary = result.document
    summary["complete"] = frames.error is None
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        print_streams(summary)
    for path in result.dumped:
        click.echo(f"wrote {path}", err=True)
    warn_undecoded(capture, result.report.warning())
    if frames.wrapped_times:
        click.echo(
            f"wskreplay: warning: {capture}: {frames.wrapped_times} frames have timestamps "
            "outside 1677..2262; kept modulo 2**64 ns",
            err=True,
        )
    if frames.error is not None:
        click.echo(f"wskreplay: error: {frames.error} (the result above stops there)", err=True)
        sys.exit(EXIT_PROBLEM if partial_ok else EXIT_ERROR)


@main.command()
@click.argument("etl_file", metavar="FILE.etl", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event (per line).")
@click.option("--summary", is_flag=True, help="Logfile facts and counts per provider and id.")
@click.option("--provider", help="Only this provider (name or GUID).")
@click.option("--id", "event_id", type=int, help="Only events with this id.")
@click.option("--limit", type=click.IntRange(0), help="At most this many events.")
@click.option("--partial-ok", is_flag=True, help="On damage, keep what was read and exit 1.")
def events(
    etl_file: str,
    as_json: bool,
    summary: bool,
    provider: str | None,
    event_id: int | None,
    limit: int | None,
    partial_ok: bool,
) -> None:
    """List the events of an ETW log (.etl, or a .zip holding one)."""
    from wskreplay.cli.console import print_etl_summary
    from wskreplay.cli.etwview import etl_summary, event_record, selected_events
    from wskreplay.formats.etl import EtlFile

    etl = EtlFile(etl_file)
    if summary:
        doc = etl_summary(etl)
        if as_json:
            click.echo(json.dumps(doc, indent=1))
        else:
            print_etl_summary(doc)
        return
    try:
        for ev in selected_events(etl, provider, event_id, limit):
            rec = event_record(ev, etl_file)
            if as_json:
                click.echo(json.dumps(rec))
            else:
                what = rec["name"] or rec["provider_guid"] or "kernel"
                click.echo(
                    f"{rec['ts_ns']} {rec['provider'] or '-'} id={rec['id']} {what} "
                    f"{json.dumps(rec['fields']) if rec['fields'] is not None else ''}"
                )
    except WskReplayError as exc:
        click.echo(f"wskreplay: error: {exc} (the events above are all that precede it)", err=True)
        sys.exit(EXIT_PROBLEM if partial_ok else EXIT_ERROR)
