"""Which target a replay runs on: ``emulator``, ``socket`` or ``agent://HOST[:PORT]``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wskreplay.errors import InputError
from wskreplay.replayer.engine import ReplayOptions, ReplayPlan, plan_for, replay
from wskreplay.trace.model import Trace


@dataclass(frozen=True)
class Target:
    name: str = "emulator"
    """``emulator``, ``socket`` or ``agent://HOST[:PORT]``."""
    topology: str = "netns"
    link: str | None = None
    token_file: str | None = None
    peer_host: str = "127.0.0.1"
    pcap_out: str | None = None
    """Keep the real wire's capture here (socket and agent targets)."""
    jobs: int = 1
    """Emulator: processes the replay may share its sockets out over (parallel.py)."""

    @property
    def kind(self) -> str:
        if self.name in ("emulator", "socket"):
            return self.name
        if self.name.startswith("agent://"):
            return "agent"
        raise InputError(
            None, f"--target {self.name}: expected emulator, socket or agent://HOST:PORT"
        )

    @property
    def virtual(self) -> bool:
        return self.kind == "emulator"


def replay_on(
    trace: Trace,
    options: ReplayOptions,
    target: Target,
    *,
    source_sha256: str = "",
    progress: Callable[[int, int], None] | None = None,
    plan: ReplayPlan | None = None,
) -> Trace:
    """``plan``: the emulator's :class:`ReplayPlan` of ``trace``, made once for several
    replays that differ only in their chaos seed."""
    kind = target.kind
    if options.chaos is not None and kind != "emulator":
        raise InputError(None, "--chaos perturbs the emulator's replay: use --target emulator")
    if kind == "emulator":
        if target.link:
            raise InputError(
                None, "--link applies to --target socket (the emulator takes the recorded path)"
            )
        if target.jobs > 1:
            from wskreplay.replayer.parallel import processes_for, replay_in_processes

            processes = processes_for(trace, target.jobs)
            if processes > 1:
                return replay_in_processes(
                    plan_for(trace, options, plan),
                    options,
                    processes,
                    source_sha256=source_sha256,
                    progress=progress,
                )
        return replay(trace, options, source_sha256=source_sha256, progress=progress, plan=plan)
    if kind == "socket":
        from wskreplay.replayer.targets.socket import SocketTargetOptions, replay_socket

        return replay_socket(
            trace,
            options,
            SocketTargetOptions(
                topology=target.topology,
                link=target.link,
                keep_capture=None if target.pcap_out is None else Path(target.pcap_out),
            ),
            source_sha256=source_sha256,
            progress=progress,
        )
    from wskreplay.replayer.targets.agent import AgentTargetOptions, replay_agent

    return replay_agent(
        trace,
        options,
        AgentTargetOptions(
            target.name,
            target.token_file,
            target.peer_host,
            keep_capture=None if target.pcap_out is None else Path(target.pcap_out),
        ),
        source_sha256=source_sha256,
        progress=progress,
    )
