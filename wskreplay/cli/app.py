"""The ``wskreplay`` group: every user error becomes one line of stderr and exit 2.

Exit status: 0 success; 1 the command ran and found a problem (``verify`` on a damaged
trace); 2 usage or input error, reported on one line of stderr naming the file.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, NoReturn

import click

from wskreplay import __version__
from wskreplay.errors import Terminated, WskReplayError

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


def run() -> NoReturn:
    """The ``wskreplay`` console command: :func:`main`, then the process ends at once. The
    interpreter's teardown would free the command's objects one by one (57 ms after a
    300k-call replay, more after a big import or diff); the kernel frees them together.
    Every file a command writes is closed by the time it returns (context managers), and
    stdout and stderr are flushed here. A process still running other threads than daemons
    (none does today) ends the usual way, which waits for them."""
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = EXIT_OK
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = EXIT_OK if code is None else EXIT_PROBLEM
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()[1:]):
        sys.exit(code)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    try:
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


@click.group(
    cls=Cli, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="wskreplay")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Record, replay and diff the WskSendEx calls of Windows kernel network drivers."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
