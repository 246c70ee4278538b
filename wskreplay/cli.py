"""The ``wskreplay`` command line.

Exit status: 0 success; 1 the command ran and found a problem (``verify`` on a damaged
trace); 2 usage or input error, reported on one line of stderr naming the file.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from typing import Any, NoReturn

import click

from wskreplay import __version__
from wskreplay.errors import InputError, Terminated, WskReplayError
from wskreplay.recorder.tcp import MAX_CONNECTIONS, CaptureOptions
from wskreplay.trace import TraceReader, VerifyReport, recover, verify, write_trace

EXIT_OK, EXIT_PROBLEM, EXIT_ERROR = 0, 1, 2


def fail(message: str) -> NoReturn:
    click.echo(f"wskreplay: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


class Cli(click.Group):
    """Turns every user-facing error, usage errors included, into one stderr line, exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            fail(exc.format_message() + hint)
        except click.Abort:
            click.echo("wskreplay: interrupted", err=True)
            sys.exit(130)
        except Terminated:
            click.echo("wskreplay: terminated", err=True)
            sys.exit(143)
        sys.exit(code if isinstance(code, int) else EXIT_OK)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WskReplayError as exc:
            fail(str(exc))
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(EXIT_OK)
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
        except MemoryError:
            fail("out of memory")


@click.group(
    cls=Cli, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="wskreplay")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Record, replay and diff the WskSendEx calls of Windows kernel network drivers."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


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
    from wskreplay.console import print_info
    from wskreplay.trace.summary import trace_info

    with TraceReader(trace) as reader:
        summary = trace_info(reader)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_info(summary)


_MAX_CONNECTIONS = click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=MAX_CONNECTIONS,
    show_default=True,
    help="Refuse a capture with more TCP connections (each costs about 11 KB of memory).",
)


_TUNNEL_PORT = click.option(
    "--tunnel-port",
    "tunnel_ports",
    multiple=True,
    metavar="TUNNEL=PORT",
    help="Also decode UDP on PORT as TUNNEL (vxlan, vxlan-gpe, geneve, gtp-u, teredo); "
    "repeatable. Registered ports are always decoded.",
)


def _capture_options(max_connections: int, tunnel_ports: tuple[str, ...]) -> CaptureOptions:
    from wskreplay.formats.tcpip import TUNNELS, DecodeOptions

    pairs = []
    for text in tunnel_ports:
        name, _, port = text.partition("=")
        if name.strip().lower() not in TUNNELS or not port.strip().isdigit():
            raise click.BadParameter(
                f"{text!r} is not TUNNEL=PORT with TUNNEL one of {', '.join(TUNNELS)}",
                param_hint="--tunnel-port",
            )
        number = int(port)
        if not 0 < number < 65536:
            raise click.BadParameter(f"port {number} is not 1..65535", param_hint="--tunnel-port")
        pairs.append((name.strip().lower(), number))
    return CaptureOptions(max_connections, DecodeOptions(tuple(pairs)))


def _warn_undecoded(source: str, warning: str | None) -> None:
    if warning:
        click.echo(f"wskreplay: warning: {source}: {warning}", err=True)


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
@_TUNNEL_PORT
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

        options = _capture_options(MAX_CONNECTIONS, tunnel_ports)
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
        _warn_undecoded(source, report.warning())
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


def _verify_json(report: VerifyReport) -> dict[str, Any]:
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
        click.echo(json.dumps(_verify_json(report), indent=2))
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
@_MAX_CONNECTIONS
@_TUNNEL_PORT
def streams(
    capture: str,
    as_json: bool,
    dump_dir: str | None,
    partial_ok: bool,
    max_connections: int,
    tunnel_ports: tuple[str, ...],
) -> None:
    """Reassemble the TCP connections of a pcap, pcapng or .etl (PktMon) capture."""
    from wskreplay.console import print_streams
    from wskreplay.formats.etl_packets import read_capture
    from wskreplay.recorder.tcp import dump_streams, reassemble, streams_summary

    options = _capture_options(max_connections, tunnel_ports)
    frames = read_capture(capture)
    result = reassemble(frames, options)
    summary = streams_summary(result)
    summary["complete"] = frames.error is None
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        print_streams(summary)
    if dump_dir:
        for path in dump_streams(result, dump_dir):
            click.echo(f"wrote {path}", err=True)
    _warn_undecoded(capture, result.report.warning())
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
    from wskreplay.console import print_etl_summary
    from wskreplay.etwview import etl_summary, event_record, selected_events
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


def _seconds_to_ns(value: float | None) -> int | None:
    return None if value is None else round(value * 1e9)


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
@_MAX_CONNECTIONS
@_TUNNEL_PORT
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
    from wskreplay.console import import_progress, print_import_summary
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
        window_ns=(_seconds_to_ns(t_from), _seconds_to_ns(t_until)),
        payload_cap=payload_cap,
        redact=redact,
        capture=_capture_options(max_connections, tunnel_ports),
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

        _warn_undecoded(", ".join(inputs), DecodeReport.warning_of(summary["decode"]))


@main.command()
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
@click.option("--provider", multiple=True, help="More providers to record (name or GUID).")
@click.option("--capture/--no-capture", default=True, help="Also capture packets (pktmon).")
def record(out: str, provider: tuple[str, ...], capture: bool) -> None:
    """Record live on Windows (ETW real-time session + pktmon) straight into a trace."""
    from wskreplay.recorder.live import record_live

    record_live(out, extra_providers=list(provider), capture=capture)


def option_group(options: list[Any]) -> Any:
    """A decorator applying ``options`` in order (options shared by several commands)."""

    def apply(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


_REPLAY_OPTIONS = [
    click.option(
        "--profile",
        "profile_name",
        default="windows-tcpip",
        show_default=True,
        help="Transport profile: a shipped name or a TOML path.",
    ),
    click.option(
        "--speed",
        type=click.FloatRange(0, min_open=True),
        default=1.0,
        show_default=True,
        help="Divide the recorded timing by this.",
    ),
    click.option("--asap", is_flag=True, help="Issue each call as soon as it may."),
    click.option(
        "--completion",
        type=click.Choice(["on-ack", "on-transmit"]),
        help="Completion policy (default: the trace's inferred one).",
    ),
    click.option(
        "--seed",
        type=click.IntRange(0),
        default=0,
        show_default=True,
        help="Seed of the emulated path (losses).",
    ),
    click.option(
        "--peer",
        type=click.Choice(["recorded", "parametric"]),
        default="recorded",
        show_default=True,
        help="recorded: each peer reacts as the recorded one did; parametric: RTT/window only.",
    ),
    click.option(
        "--chaos",
        type=click.IntRange(0),
        metavar="SEED",
        help="Emulator: perturb peer timing, completion delays and segment boundaries "
        "within what WSK and TCP allow, deterministically for SEED.",
    ),
]


_TARGET_OPTIONS = [
    click.option(
        "--target",
        default="emulator",
        show_default=True,
        metavar="emulator|socket|agent://HOST:PORT",
        help="Where the calls run: the emulator, real kernel sockets, or an agent.",
    ),
    click.option(
        "--topology",
        type=click.Choice(["netns", "loopback"]),
        default="netns",
        show_default=True,
        help="Socket target: two network namespaces and a conditioned link (root), or loopback.",
    ),
    click.option(
        "--link",
        metavar='"delay=20ms loss=0.1% rate=100mbit"',
        help="Socket target, netns: link conditions instead of the recorded ones.",
    ),
    click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        help="Agent target: file holding the shared token (default: $WSKREPLAY_AGENT_TOKEN).",
    ),
    click.option(
        "--pcap-out",
        type=click.Path(dir_okay=False),
        help="Socket and agent targets: keep the real wire's capture here (pcapng).",
    ),
    click.option(
        "--peer-host",
        default="127.0.0.1",
        show_default=True,
        help="Agent target: the address the peer listens on (one the agent can reach).",
    ),
]


def _replay_options(**given: Any) -> Any:
    """ReplayOptions and Target from the shared replay and target options."""
    from wskreplay.replayer.dispatch import Target
    from wskreplay.replayer.engine import ReplayOptions
    from wskreplay.replayer.profile import load_profile

    target = Target(
        given["target"],
        given["topology"],
        given["link"],
        given["token_file"],
        given["peer_host"],
        given["pcap_out"],
    )
    target.kind  # noqa: B018 - validates the name before any work
    speed = None if given["asap"] else given["speed"]
    options = ReplayOptions(
        load_profile(given["profile_name"]),
        speed,
        given["completion"],
        given["seed"],
        given["peer"],
        given["chaos"],
    )
    return options, target


replay_options = option_group(_REPLAY_OPTIONS + _TARGET_OPTIONS)
"""The options of a replay, shared by ``replay`` and ``check``."""


@main.command("replay")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False))
@replay_options
@click.option(
    "--until",
    "until",
    type=click.IntRange(0),
    metavar="CALL_N",
    help="Stop after call N and print its socket's emulator state.",
)
@click.option(
    "--step",
    is_flag=True,
    help="Replay one call at a time, showing its results and socket state; wait for Enter.",
)
@click.option(
    "--break-on",
    "break_on",
    metavar="STATUS",
    help="Run to the first call returning or completing with STATUS and show it "
    "(with --step: then step from there).",
)
@click.option("--progress/--no-progress", default=None, help="Default: on a terminal.")
def replay_cmd(
    trace: str,
    out: str | None,
    until: int | None,
    step: bool,
    break_on: str | None,
    progress: bool | None,
    **given: Any,
) -> int | None:
    """Re-issue a trace's calls on a target (default: the emulator); write what happened
    as a trace."""
    from wskreplay.console import import_progress, print_replay_summary
    from wskreplay.replayer.dispatch import replay_on
    from wskreplay.replayer.engine import replay_until
    from wskreplay.trace import read_trace
    from wskreplay.trace.digest import file_sha256

    if out is None and until is None and not step and break_on is None:
        raise click.UsageError("give -o OUT.wskt (or --step, --break-on STATUS, --until CALL_N)")
    options, target = _replay_options(**given)
    stop_status = _status_option("--break-on", break_on) if break_on is not None else None
    if (step or break_on is not None) and not target.virtual:
        raise click.UsageError("--step and --break-on step through the emulator only")
    recorded = read_trace(trace)
    if step or stop_status is not None:
        from wskreplay.replayer.stepping import step_through

        return step_through(
            recorded,
            options,
            interactive=step,
            break_on=stop_status,
            read=sys.stdin.readline,
            write=click.echo,
        )
    if until is not None:
        if not target.virtual:
            raise click.UsageError("--until steps through the emulator only")
        click.echo(json.dumps(replay_until(recorded, options, until), indent=1))
        return
    show = sys.stderr.isatty() if progress is None else progress
    with import_progress(show, unit="items") as bar:
        bar.phase(f"replaying {len(recorded.calls):,} calls on {target.name}")
        replayed = replay_on(
            recorded, options, target, source_sha256=file_sha256(trace), progress=bar.advance
        )
        bar.phase(f"writing {os.path.basename(out)}")
        write_trace(out, replayed)
    print_replay_summary(recorded, replayed, out)


_TOLERANCE_OPTIONS = [
    click.option(
        "--tolerance",
        "tolerances",
        multiple=True,
        metavar="METRIC=TIME[,PCT%]",
        help="Timing tolerance, e.g. completion=50us,5% (metrics: issue, return, "
        "completion, wire); repeatable.",
    ),
    click.option(
        "--strict-segmentation",
        is_flag=True,
        help="Count segmentation differences (default: reported, tolerated).",
    ),
]
_DIFF_OPTIONS = [
    *_TOLERANCE_OPTIONS,
    click.option("--json", "json_out", metavar="FILE|-", help="Write the JSON report."),
    click.option("--junit", "junit_out", metavar="FILE", help="Write a JUnit XML report."),
    click.option("--html", "html_out", metavar="FILE", help="Write a self-contained HTML report."),
    click.option(
        "--dissect",
        is_flag=True,
        help="Dissect the first differing packet of each stream (pyshark + tshark).",
    ),
]
diff_options = option_group(_DIFF_OPTIONS)
"""The options of a comparison, shared by ``diff`` and ``check``."""


def _diff_options(align: str, tolerances: tuple[str, ...], strict_segmentation: bool) -> Any:
    from wskreplay.diff import DiffOptions, parse_tolerance

    limits = dict(parse_tolerance(text) for text in tolerances)
    return DiffOptions(
        align=align, tolerances=limits, segmentation="strict" if strict_segmentation else "tolerate"
    )


def _status_option(option: str, text: str) -> int:
    from wskreplay.formats import ntstatus as nt

    try:
        return nt.parse(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an NTSTATUS name or number", param_hint=option
        ) from None


def _socket_map(pairs: tuple[str, ...]) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for text in pairs:
        left, sep, right = text.partition("=")
        if not sep or not left.strip().isdigit() or not right.strip().isdigit():
            raise click.UsageError(f"--map-socket {text!r}: expected A=B (socket ids)")
        mapping[int(left)] = int(right)
    return mapping


def _report(
    result: Any,
    outputs: tuple[str | None, str | None, str | None],
    traces: tuple[Any, Any],
    *,
    a: str,
    b: str,
    dissect: bool = False,
) -> int:
    """Write the reports asked for (JSON, JUnit, HTML), print the terminal one unless the
    JSON goes to stdout; the exit status."""
    from wskreplay.diff.report import print_diff, write_json, write_junit
    from wskreplay.diff.report.html import write_html

    json_out, junit_out, html_out = outputs
    if dissect:
        from wskreplay.diff.dissect import dissect_result

        dissect_result(traces[0], traces[1], result)
    if json_out is not None:
        write_json(result, json_out, a=a, b=b)
    if junit_out is not None:
        write_junit(result, junit_out, a=a, b=b, sockets=sorted(traces[0].sockets))
    if html_out is not None:
        write_html(result, html_out, traces[0], traces[1], a_name=a, b_name=b)
    if json_out != "-":
        print_diff(result, a=a, b=b)
    return EXIT_OK if result.equal else EXIT_PROBLEM


@main.command("diff")
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option(
    "--align",
    type=click.Choice(["auto", "order", "sequence"]),
    default="auto",
    show_default=True,
    help="Calls in order (a replay) or by sequence alignment (two recordings); auto decides.",
)
@click.option(
    "--map-socket",
    "socket_map",
    multiple=True,
    metavar="A=B",
    help="Pair socket A of the first trace with socket B of the second (repeatable).",
)
@click.option(
    "--noise",
    "noise",
    type=click.Path(dir_okay=False),
    metavar="BASELINE2",
    help="A second recording of A's scenario: latency shifts no larger than A vs it are noise.",
)
@diff_options
def diff_cmd(
    a: str,
    b: str,
    align: str,
    socket_map: tuple[str, ...],
    noise: str | None,
    tolerances: tuple[str, ...],
    strict_segmentation: bool,
    json_out: str | None,
    junit_out: str | None,
    html_out: str | None,
    dissect: bool,
) -> int:
    """Compare trace B with trace A: exit 0 within tolerance, 1 differences, 2 error."""
    from wskreplay.diff import diff_traces
    from wskreplay.trace import read_trace

    options = replace(
        _diff_options(align, tolerances, strict_segmentation), socket_map=_socket_map(socket_map)
    )
    baseline = read_trace(noise) if noise is not None else None
    trace_a, trace_b = read_trace(a), read_trace(b)
    result = diff_traces(trace_a, trace_b, options, noise=baseline)
    outputs = (json_out, junit_out, html_out)
    return _report(result, outputs, (trace_a, trace_b), a=a, b=b, dissect=dissect)


@main.command("check")
@click.argument("trace", type=click.Path(dir_okay=False), required=False)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), help="Keep the replay.")
@replay_options
@diff_options
@click.option(
    "--chaos-runs",
    type=click.IntRange(1),
    metavar="N",
    help="Replay with N chaos seeds (from --chaos, default 1) and report the seeds whose "
    "replay diverges other than in timing.",
)
def check_cmd(
    trace: str | None,
    out: str | None,
    chaos_runs: int | None,
    tolerances: tuple[str, ...],
    strict_segmentation: bool,
    json_out: str | None,
    junit_out: str | None,
    html_out: str | None,
    dissect: bool,
    **given: Any,
) -> int:
    """Replay a trace and diff the replay against it, or against its accepted snapshot
    NAME.expected.wskt (default: the shipped sample recording, traces/field.wskt), with the
    overrides of its sidecar NAME.wskreplay.toml: exit 0 within tolerance, 1 differences,
    2 error."""
    from pathlib import Path

    from wskreplay.checking import CheckSettings, check_trace

    if trace is None:
        candidates = [Path(__file__).resolve().parent.parent, Path.cwd()]
        found = [
            p / "traces" / "field.wskt"
            for p in candidates
            if (p / "traces" / "field.wskt").is_file()
        ]
        if not found:
            raise click.UsageError(
                "give a TRACE (the sample traces/field.wskt is in a clone of the repository)"
            )
        trace = str(found[0])
    limits = _diff_options("order", tolerances, strict_segmentation)
    options, target = _replay_options(**given)
    settings = CheckSettings(
        profile=given["profile_name"],
        tolerances=dict(limits.tolerances),
        strict_segmentation=strict_segmentation,
        speed=options.speed,
        completion=options.completion,
        seed=options.seed,
        peer=options.peer,
        target=target,
        chaos=options.chaos,
    )
    if chaos_runs is not None:
        from wskreplay.checking import chaos_runs as run_seeds
        from wskreplay.console import print_chaos_runs

        runs = run_seeds(trace, settings, chaos_runs, first_seed=options.chaos or 1)
        print_chaos_runs(trace, runs)
        return EXIT_PROBLEM if any(r.diverged for r in runs) else EXIT_OK
    outcome = check_trace(trace, settings)
    if out is not None:
        write_trace(out, outcome.replayed)
    return _report(
        outcome.result,
        (json_out, junit_out, html_out),
        (outcome.expected_trace, outcome.replayed),
        a=outcome.expected,
        b=out or "(replay)",
        dissect=dissect,
    )


@main.command("minimize")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
@replay_options
@option_group(_TOLERANCE_OPTIONS)
@click.option(
    "--predicate",
    default="same",
    show_default=True,
    metavar="same|returned=STATUS|completion=STATUS|COMMAND",
    help="What still failing means: the same divergence, a status the replay shows and the "
    "recording does not, or a shell command given the candidate's path (exit 0: fails).",
)
@click.option(
    "--budget",
    "budget_s",
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="Stop after this long and write the smallest failing trace found so far.",
)
@click.option("--progress/--no-progress", default=None, help="Default: on a terminal.")
def minimize_cmd(
    trace: str,
    out: str,
    tolerances: tuple[str, ...],
    strict_segmentation: bool,
    predicate: str,
    budget_s: float | None,
    progress: bool | None,
    **given: Any,
) -> None:
    """Delta-debug a failing trace down to the smallest one that still fails the same way:
    sockets, then calls, then payload bytes; each candidate replayed on the target."""
    from wskreplay.minimize import minimize, provenance
    from wskreplay.replayer.dispatch import replay_on
    from wskreplay.trace import read_trace
    from wskreplay.trace.digest import file_sha256

    options, target = _replay_options(**given)
    limits = _diff_options("order", tolerances, strict_segmentation)
    recorded = read_trace(trace)
    show = sys.stderr.isatty() if progress is None else progress

    def report(status: Any) -> None:
        click.echo(f"\r{status.line()}\033[K", err=True, nl=False)

    try:
        result = minimize(
            recorded,
            lambda t: replay_on(t, options, target),
            limits,
            predicate,
            budget_s=budget_s,
            progress=report if show else None,
        )
    except InputError as exc:
        raise InputError(trace, exc.what) from None
    finally:
        if show:
            click.echo("", err=True)
    result.trace.metadata["minimized"] = provenance(
        result, os.path.basename(trace), file_sha256(trace)
    )
    write_trace(out, result.trace)
    before, status = result.before, result.status
    click.echo(f"predicate   {result.predicate}")
    click.echo(
        f"minimized   {before['sockets']} -> {status.sockets} sockets, "
        f"{before['calls']:,} -> {status.calls:,} calls, "
        f"{before['bytes']:,} -> {status.bytes:,} bytes"
    )
    click.echo(f"replays     {status.replays}{'' if result.complete else ' (budget reached)'}")
    click.echo(f"wrote       {out}")


@main.group("agent", cls=click.Group)
def agent_group() -> None:
    """The reference agent of the agent protocol (docs/agent-protocol.md)."""


@agent_group.command("serve")
@click.option(
    "--listen",
    default="127.0.0.1:7393",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen (a loopback address serves loopback clients only).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the shared token (default: $WSKREPLAY_AGENT_TOKEN).",
)
@click.option("--max-in-flight-calls", type=click.IntRange(1), default=4096, show_default=True)
@click.option("--max-in-flight-bytes", type=click.IntRange(1), default=64 << 20, show_default=True)
@click.option(
    "--allow-dest",
    multiple=True,
    metavar="CIDR",
    help="Also connect to addresses in CIDR (repeatable); by default only to the "
    "address the replayer connects from.",
)
def agent_serve(
    listen: str,
    token_file: str | None,
    max_in_flight_calls: int,
    max_in_flight_bytes: int,
    allow_dest: tuple[str, ...],
) -> None:
    """Serve replayers: each call they send is made on a real kernel socket here."""
    from wskreplay.agent.server import AgentLimits, parse_allow_dest, parse_listen, serve
    from wskreplay.formats.agentwire import read_token

    host, port = parse_listen(listen)
    token = read_token(token_file)
    limits = AgentLimits(
        max_in_flight_calls=max_in_flight_calls, max_in_flight_bytes=max_in_flight_bytes
    )

    def ready(bound_host: str, bound_port: int) -> None:
        click.echo(f"wskreplay agent: listening on {bound_host}:{bound_port}", err=True)

    try:
        serve(host, port, token, limits, ready, tuple(parse_allow_dest(a) for a in allow_dest))
    except KeyboardInterrupt:
        click.echo("wskreplay agent: stopped", err=True)
