"""``wskreplay agent serve``: the reference agent."""

from __future__ import annotations

import click

from wskreplay.cli.app import main


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
