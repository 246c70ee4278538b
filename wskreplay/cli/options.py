"""Options shared by several commands, and what they become: capture decoding, replay and
target options, diff tolerances and alignment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from wskreplay.recorder.limits import MAX_CONNECTIONS

if TYPE_CHECKING:
    from wskreplay.recorder.tcp import CaptureOptions

MAX_CONNECTIONS_OPTION = click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=MAX_CONNECTIONS,
    show_default=True,
    help="Refuse a capture with more TCP connections (each costs about 11 KB of memory).",
)


TUNNEL_PORT_OPTION = click.option(
    "--tunnel-port",
    "tunnel_ports",
    multiple=True,
    metavar="TUNNEL=PORT",
    help="Also decode UDP on PORT as TUNNEL (vxlan, vxlan-gpe, geneve, gtp-u, teredo); "
    "repeatable. Registered ports are always decoded.",
)


def capture_options(max_connections: int, tunnel_ports: tuple[str, ...]) -> CaptureOptions:
    from wskreplay.formats.tcpip import TUNNELS, DecodeOptions
    from wskreplay.recorder.tcp import CaptureOptions

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


def warn_undecoded(source: str, warning: str | None) -> None:
    if warning:
        click.echo(f"wskreplay: warning: {source}: {warning}", err=True)


def seconds_to_ns(value: float | None) -> int | None:
    return None if value is None else round(value * 1e9)


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
        help="Socket target, netns: link conditions instead of the recorded ones "
        "('none': a plain veth pair).",
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
        "--jobs",
        type=click.IntRange(1),
        metavar="N",
        help="Emulator: replay the sockets in up to N processes (default: one per usable "
        "CPU; a process per 10,000 calls at most). The output is the same for any N.",
    ),
    click.option(
        "--peer-host",
        default="127.0.0.1",
        show_default=True,
        help="Agent target: the address the peer listens on (one the agent can reach).",
    ),
]


def build_replay_options(**given: Any) -> Any:
    """ReplayOptions and Target from the shared replay and target options."""
    from wskreplay.forking import usable_cpus
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
        given["jobs"] if given["jobs"] is not None else usable_cpus(),
    )
    target.kind  # noqa: B018 - validates the name before any work
    if given["jobs"] is not None and not target.virtual:
        raise click.UsageError(
            "--jobs shares the emulator's sockets out over processes: use --target emulator "
            "(the socket and agent targets run every socket at once, in real time)"
        )
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

TOLERANCE_OPTIONS = [
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
    *TOLERANCE_OPTIONS,
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


def build_diff_options(align: str, tolerances: tuple[str, ...], strict_segmentation: bool) -> Any:
    from wskreplay.diff import DiffOptions, parse_tolerance

    limits = dict(parse_tolerance(text) for text in tolerances)
    return DiffOptions(
        align=align, tolerances=limits, segmentation="strict" if strict_segmentation else "tolerate"
    )


def status_option(option: str, text: str) -> int:
    from wskreplay.formats import ntstatus as nt

    try:
        return nt.parse(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an NTSTATUS name or number", param_hint=option
        ) from None


def parse_socket_map(pairs: tuple[str, ...]) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for text in pairs:
        left, sep, right = text.partition("=")
        if not sep or not left.strip().isdigit() or not right.strip().isdigit():
            raise click.UsageError(f"--map-socket {text!r}: expected A=B (socket ids)")
        mapping[int(left)] = int(right)
    return mapping
