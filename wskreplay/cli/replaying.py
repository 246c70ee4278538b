"""Commands that replay: ``replay``, ``check``, ``minimize``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from wskreplay.cli.app import EXIT_OK, EXIT_PROBLEM, main
from wskreplay.cli.diffing import report
from wskreplay.cli.options import (
    TOLERANCE_OPTIONS,
    build_diff_options,
    build_replay_options,
    diff_options,
    option_group,
    replay_options,
    status_option,
)
from wskreplay.errors import InputError, naming
from wskreplay.trace import write_trace

if TYPE_CHECKING:
    from wskreplay.trace.model import Trace


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
    from wskreplay.cli.console import import_progress, print_replay_summary
    from wskreplay.replayer.dispatch import replay_on
    from wskreplay.replayer.engine import replay_until
    from wskreplay.trace import read_trace
    from wskreplay.trace.digest import DigestOnTheSide

    if out is None and until is None and not step and break_on is None:
        raise click.UsageError("give -o OUT.wskt (or --step, --break-on STATUS, --until CALL_N)")
    options, target = build_replay_options(**given)
    stop_status = status_option("--break-on", break_on) if break_on is not None else None
    if (step or break_on is not None) and not target.virtual:
        raise click.UsageError("--step and --break-on step through the emulator only")
    source_sha256 = DigestOnTheSide(trace)
    recorded = read_trace(trace, streams="in-place" if target.virtual else "memory")
    with naming(trace):
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
        with import_progress(show, unit="items", thread=False) as bar:
            bar.phase(f"replaying {len(recorded.calls):,} calls on {target.name}")
            replayed = replay_on(
                recorded,
                options,
                target,
                source_sha256=source_sha256.result(),
                progress=bar.advance,
            )
            bar.phase(f"writing {os.path.basename(out)}")
            write_checked(out, replayed, recorded)
    print_replay_summary(recorded, replayed, out)


def write_checked(out: str, replayed: Trace, recorded: Trace) -> None:
    """Write the replay, then read what it did not take of the recorded streams left in
    their file: a damaged chunk fails the replay wherever it lies, as reading the trace
    whole would have, and the replay just written is removed."""
    from wskreplay.trace.inplace import check_unread

    write_trace(out, replayed)
    try:
        check_unread(recorded.streams.values())
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(out)
        raise


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
    limits = build_diff_options("order", tolerances, strict_segmentation)
    options, target = build_replay_options(**given)
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
        from wskreplay.checking import chaos_runs_json
        from wskreplay.cli.console import print_chaos_runs
        from wskreplay.diff.report.json_report import write_json_doc

        single = [
            flag
            for flag, asked in (
                ("-o", out), ("--junit", junit_out), ("--html", html_out), ("--dissect", dissect)
            )
            if asked
        ]  # fmt: skip
        if single:
            raise click.UsageError(
                f"{', '.join(single)}: for a single check, not --chaos-runs "
                "(--json FILE|- writes the chaos runs' report)"
            )
        runs = run_seeds(trace, settings, chaos_runs, first_seed=options.chaos or 1)
        if json_out is not None:
            write_json_doc(chaos_runs_json(trace, runs), json_out)
        if json_out != "-":
            print_chaos_runs(trace, runs)
        return EXIT_PROBLEM if any(r.diverged for r in runs) else EXIT_OK
    outcome = check_trace(trace, settings)
    if out is not None:
        write_trace(out, outcome.replayed)
    return report(
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
@option_group(TOLERANCE_OPTIONS)
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

    options, target = build_replay_options(**given)
    limits = build_diff_options("order", tolerances, strict_segmentation)
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
