"""``diff``, and the report every comparison ends with (``diff``, ``check``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from wskreplay.cli.app import EXIT_OK, EXIT_PROBLEM, main
from wskreplay.cli.options import build_diff_options, diff_options, parse_socket_map
from wskreplay.formats.reference import reference_asked


def report(
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
    """Compare trace B with trace A: exit 0 within tolerance, 1 differences, 2 error.

    Stream bytes are compared where the files hold them, and columns no comparison reads
    stay undecoded; every stream chunk is still checked before the report.
    WSKREPLAY_PURE_PYTHON=1 reads both traces whole instead (the reference path)."""
    from wskreplay.diff import UNREAD_COLUMNS, diff_traces
    from wskreplay.trace import read_trace
    from wskreplay.trace.inplace import check_unread

    def read(path: str) -> Any:
        if reference_asked():
            return read_trace(path)
        return read_trace(path, streams="in-place", defer=UNREAD_COLUMNS)

    options = replace(
        build_diff_options(align, tolerances, strict_segmentation),
        socket_map=parse_socket_map(socket_map),
    )
    baseline = read(noise) if noise is not None else None
    trace_a, trace_b = read(a), read(b)
    result = diff_traces(trace_a, trace_b, options, noise=baseline)
    for trace in (trace_a, trace_b, baseline):
        if trace is not None:
            check_unread(trace.streams.values())
    outputs = (json_out, junit_out, html_out)
    return report(result, outputs, (trace_a, trace_b), a=a, b=b, dissect=dissect)
