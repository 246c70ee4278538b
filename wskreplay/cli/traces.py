"""Commands on trace files: ``synth``, ``info``, ``export``, ``verify``, ``recover``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from wskreplay.cli.app import EXIT_OK, EXIT_PROBLEM, main
from wskreplay.cli.options import TUNNEL_PORT_OPTION, capture_options, warn_undecoded
from wskreplay.errors import InputError
from wskreplay.recorder.limits import MAX_CONNECTIONS
from wskreplay.trace import TraceReader, VerifyReport, recover, verify, write_trace


@main.command()
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Trace file to write.",
)
@click.option("--calls", default=1000, show_default=True, type=click.IntRange(1, 100_000_000))
@click.option("--sockets", default=4, show_default=True, type=click.IntRange(1, 4096))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--redact", is_flag=True, help="Keep lengths and sha256 digests, no payload bytes.")
@click.option("--no-compress", is_flag=True, help="Store blocks without zstd.")
def synth(out: str, calls: int, sockets: int, seed: int, redact: bool, no_compress: bool) -> None:
    """Write a synthetic but realistic trace, deterministic for a seed."""
    from wskreplay.generators.synth import synth_trace

    trace = synth_trace(calls=calls, sockets=sockets, seed=seed)
    write_trace(out, trace, redact=redact, zstd_level=None if no_compress else 3)
    click.echo(
        f"{out}: {len(trace.calls)} calls on {len(trace.sockets)} sockets, "
        f"{len(trace.segments)} segments, {os.path.getsize(out)} bytes"
    )


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(trace: str, as_json: bool) -> None:
    """Summarise a trace: sockets, calls, bytes, statuses, duration."""
    from wskreplay.cli.console import print_info
    from wskreplay.trace.summary import trace_info

    with TraceReader(trace) as reader:
        summary = trace_info(reader)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_info(summary)


@main.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.option(
    "--jsonl",
    "jsonl",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="A .wskt trace's calls, one JSON object per line, to this file ('-' for stdout).",
)
@click.option(
    "--pcapng",
    "pcapng_out",
    type=click.Path(dir_okay=False),
    help="The packets of a capture or an .etl (PktMon) as pcapng, for Wireshark.",
)
@TUNNEL_PORT_OPTION
def export(
    source: str, jsonl: str | None, pcapng_out: str | None, tunnel_ports: tuple[str, ...]
) -> None:
    """Export a trace's calls as JSON lines, or a recording's packets as pcapng."""
    if (jsonl is None) == (pcapng_out is None):
        raise click.UsageError("give exactly one of --jsonl and --pcapng")
    if pcapng_out is not None:
        from wskreplay.formats.etl_packets import read_capture
        from wskreplay.formats.pcap import write_pcapng
        from wskreplay.formats.tcpip import decode

        options = capture_options(MAX_CONNECTIONS, tunnel_ports)
        frames = read_capture(source)
        write_pcapng(
            pcapng_out, frames, comment=f"exported by wskreplay from {os.path.basename(source)}"
        )
        report = decode(frames, options.decode).report
        totals = report.totals
        click.echo(
            f"{pcapng_out}: {len(frames)} packets ({totals.tcp} TCP, {totals.other} other, "
            f"{sum(totals.undecoded.values())} not decoded)",
            err=True,
        )
        warn_undecoded(source, report.warning())
        if frames.error is not None:
            raise frames.error
        return
    from wskreplay.trace.summary import call_records

    with TraceReader(source) as reader:
        out = sys.stdout if jsonl == "-" else open(jsonl, "w", encoding="utf-8")
        try:
            for table in reader.call_blocks():
                out.writelines(json.dumps(rec) + "\n" for rec in call_records(table))
        finally:
            if out is not sys.stdout:
                out.close()


def verify_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "file": report.path,
        "format_version": report.format_version,
        "size": report.size,
        "intact": report.intact,
        "index": report.index,
        "blocks": dict(report.blocks),
        "calls": report.calls,
        "segments": report.segments,
        "sockets": report.sockets,
        "first_issue_ns": report.first_issue_ns,
        "last_issue_ns": report.last_issue_ns,
        "damages": [
            {"offset": d.offset, "length": d.length, "what": d.what} for d in report.damages
        ],
    }


def _print_verify(report: VerifyReport, verb: str = "recoverable") -> None:
    blocks = ", ".join(f"{k} {v}" for k, v in sorted(report.blocks.items()))
    span = ""
    if report.first_issue_ns is not None:
        span = f", calls issued {report.first_issue_ns} .. {report.last_issue_ns} ns"
    state = "intact" if report.intact else "DAMAGED"
    click.echo(f"{report.path}: {state} (format {report.format_version}, {report.size} bytes)")
    click.echo(
        f"  {verb}: {sum(report.blocks.values())} blocks ({blocks}), {report.calls} calls, "
        f"{report.segments} segments, {report.sockets} sockets{span}"
    )
    if not report.intact:
        click.echo(f"  footer index: {report.index}")
    for d in report.damages:
        click.echo(f"  damage at offset {d.offset} ({d.length} bytes lost): {d.what}")


@main.command("verify")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_cmd(trace: str, as_json: bool) -> None:
    """Check every block: exit 0 intact, 1 damaged (says what is recoverable), 2 unreadable."""
    report = verify(trace)
    if not report.readable:
        raise InputError(trace, "nothing readable: no intact block", 16)
    if as_json:
        click.echo(json.dumps(verify_json(report), indent=2))
    else:
        _print_verify(report, "readable" if report.intact else "recoverable")
    sys.exit(EXIT_OK if report.intact else EXIT_PROBLEM)


@main.command("recover")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
def recover_cmd(trace: str, out: str) -> None:
    """Write a valid trace holding every intact block of a damaged one."""
    if os.path.exists(out) and os.path.samefile(trace, out):
        raise InputError(out, "recover must not overwrite its input")
    report = recover(trace, out)
    _print_verify(report, "recovered")
    click.echo(f"wrote {out}")
