"""``check``: replay a trace and diff the replay against what is expected of it (the
recording itself, or an accepted earlier replay: a snapshot). Shared by the CLI and the
pytest plugin."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wskreplay.diff import DiffOptions, DiffResult, Tolerance, diff_traces, parse_tolerance
from wskreplay.diff.compare import Difference
from wskreplay.errors import InputError, naming
from wskreplay.forking import Dealer, Worker, forked, may_fork, results
from wskreplay.replayer.dispatch import Target, replay_on
from wskreplay.replayer.engine import ReplayOptions, ReplayPlan, replay
from wskreplay.replayer.profile import load_profile
from wskreplay.trace import read_trace
from wskreplay.trace.digest import file_sha256
from wskreplay.trace.model import Trace

SIDECAR_SUFFIX = ".wskreplay.toml"
SNAPSHOT_SUFFIX = ".expected.wskt"
SIDECAR_KEYS = {"profile", "tolerance", "strict_segmentation", "skip"}


@dataclass(frozen=True)
class CheckSettings:
    profile: str = "windows-tcpip"
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    """Overrides of the default tolerances (the emulator's, or a real stack's for the
    socket and agent targets: ``diff.tolerance.default_tolerances``)."""
    strict_segmentation: bool = False
    skip: str | None = None
    """A reason to skip this trace (from its sidecar; the pytest plugin honours it)."""
    speed: float | None = 1.0
    completion: str | None = None
    seed: int = 0
    peer: str = "recorded"
    target: Target = field(default_factory=Target)
    chaos: int | None = None

    def replay_options(self) -> ReplayOptions:
        return ReplayOptions(
            load_profile(self.profile),
            self.speed,
            self.completion,
            self.seed,
            self.peer,
            self.chaos,
        )

    def with_sidecar(self, trace_path: Path) -> CheckSettings:
        """These settings overridden by ``NAME.wskreplay.toml`` next to the trace, if any:
        ``profile = "..."``, ``strict_segmentation = true``, ``skip = "why"`` and a
        ``[tolerance]`` table of ``metric = "50us,5%"``."""
        sidecar = sidecar_path(trace_path)
        if not sidecar.is_file():
            return self
        try:
            doc = tomllib.loads(sidecar.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(str(sidecar), f"not valid TOML: {exc}") from None
        unknown = set(doc) - SIDECAR_KEYS
        if unknown:
            raise InputError(
                str(sidecar), f"unknown key(s) {sorted(unknown)} (known: {sorted(SIDECAR_KEYS)})"
            )
        limits = dict(self.tolerances)
        table = doc.get("tolerance", {})
        if not isinstance(table, dict):
            raise InputError(str(sidecar), '[tolerance] must be a table of metric = "TIME[,PCT%]"')
        for metric, value in table.items():
            name, tol = parse_tolerance(f"{metric}={value}")
            limits[name] = tol
        profile = doc.get("profile", self.profile)
        strict = doc.get("strict_segmentation", self.strict_segmentation)
        skip = doc.get("skip", self.skip)
        if not isinstance(profile, str) or not isinstance(strict, bool):
            raise InputError(
                str(sidecar), "profile must be a string, strict_segmentation a boolean"
            )
        return replace(
            self,
            profile=profile,
            tolerances=limits,
            strict_segmentation=strict,
            skip=None if skip is None else str(skip),
        )

    def diff_options(self) -> DiffOptions:
        return DiffOptions(
            align="order",
            tolerances=dict(self.tolerances),
            segmentation="strict" if self.strict_segmentation else "tolerate",
        )


def sidecar_path(trace_path: Path) -> Path:
    return trace_path.with_name(trace_path.name.removesuffix(".wskt") + SIDECAR_SUFFIX)


def snapshot_path(trace_path: Path) -> Path:
    return trace_path.with_name(trace_path.name.removesuffix(".wskt") + SNAPSHOT_SUFFIX)


@dataclass
class CheckOutcome:
    result: DiffResult
    replayed: Trace
    expected: str
    """What the replay was compared with: the recording, or its accepted snapshot."""
    expected_trace: Trace


def replay_trace(
    trace: Trace | str | Path, *, profile: str = "windows-tcpip", **options: Any
) -> Trace:
    """A trace (or a path to one) replayed through the emulator (``options``: those of
    :class:`~wskreplay.replayer.engine.ReplayOptions`)."""
    source = ""
    if not isinstance(trace, Trace):
        source = file_sha256(str(trace))
        trace = read_trace(trace)
    return replay(trace, ReplayOptions(load_profile(profile), **options), source_sha256=source)


def check_trace(path: str | Path, settings: CheckSettings | None = None) -> CheckOutcome:
    """Replay the trace at ``path`` and diff the replay with its snapshot
    (``NAME.expected.wskt``) when one was accepted, else with the recording."""
    path = Path(path)
    settings = (settings or CheckSettings()).with_sidecar(path)
    recorded = read_trace(path)
    with naming(path):
        replayed = replay_on(
            recorded,
            settings.replay_options(),
            settings.target,
            source_sha256=file_sha256(str(path)),
        )
    snapshot = snapshot_path(path)
    if snapshot.is_file():
        expected, name = read_trace(snapshot), str(snapshot)
    else:
        expected, name = recorded, str(path)
    result = diff_traces(expected, replayed, settings.diff_options())
    return CheckOutcome(result, replayed, name, expected)


TIMING_KINDS = frozenset({"timing", "distribution"})
"""Differences chaos runs expect (they perturb timing on purpose) and do not count."""


@dataclass
class ChaosRun:
    seed: int
    differences: list[Difference]
    """What differs other than timing."""

    @property
    def diverged(self) -> bool:
        return bool(self.differences)


def chaos_runs(
    path: str | Path, settings: CheckSettings, runs: int, first_seed: int = 1
) -> list[ChaosRun]:
    """Replay the trace with ``runs`` chaos seeds from ``first_seed`` and diff each replay
    with the recording; a seed diverges when anything but timing differs. The seeds are
    dealt out to up to ``settings.target.jobs`` processes (each replays in one process)."""
    path = Path(path)
    settings = settings.with_sidecar(path)
    recorded = read_trace(path)
    source = file_sha256(str(path))
    with naming(path):
        plan = ReplayPlan(recorded, settings.replay_options()) if settings.target.virtual else None
    diff_options = replace(settings.diff_options(), timing=False, tolerated=False)
    seeds = list(range(first_seed, first_seed + runs))
    processes = min(settings.target.jobs, runs) if may_fork() else 1
    target = replace(settings.target, jobs=1) if processes > 1 else settings.target

    def run(seed: int) -> ChaosRun:
        options = replace(settings.replay_options(), chaos=seed)
        replayed = replay_on(recorded, options, target, source_sha256=source, plan=plan)
        result = diff_traces(recorded, replayed, diff_options)
        return ChaosRun(seed, [d for d in result.differences if d.kind not in TIMING_KINDS])

    if processes <= 1:
        return [run(seed) for seed in seeds]
    return _seeds_in_processes(seeds, run, processes)


def _seeds_in_processes(
    seeds: list[int], run: Callable[[int], ChaosRun], processes: int
) -> list[ChaosRun]:
    """Each seed's run, the seeds dealt out to forked processes (``forking.py``); the
    runs come back as their differences' dictionaries."""
    dealer = Dealer(len(seeds), processes)

    def runs_of(process: int) -> list[tuple[int, ChaosRun]]:
        out = []
        while (k := dealer.take(process)) is not None:
            out.append((k, run(seeds[k])))
        return out

    def work(process: int) -> dict[str, Any]:
        return {"runs": [[k, [d.as_dict() for d in r.differences]] for k, r in runs_of(process)]}

    def taken(worker: Worker) -> str:
        mine = [seeds[k] for k in dealer.taken_by(worker.process)]
        return f"seeds {', '.join(map(str, mine))}" if mine else "no seed yet"

    try:
        with forked(processes, work) as workers:
            done = dict(runs_of(0))
            for _, result in results(workers, taken):
                for k, differences in result["runs"]:
                    done[k] = ChaosRun(seeds[k], [Difference(**d) for d in differences])
        return [done[k] for k in range(len(seeds))]
    finally:
        dealer.close()


def chaos_runs_json(trace: str | Path, runs: list[ChaosRun]) -> dict[str, Any]:
    """The report of ``check --chaos-runs --json``: each seed, whether it diverged, and
    what differed other than timing."""
    return {
        "trace": str(trace),
        "seeds": len(runs),
        "diverged": [r.seed for r in runs if r.diverged],
        "runs": [
            {
                "seed": r.seed,
                "diverged": r.diverged,
                "differences": [d.as_dict() for d in r.differences],
            }
            for r in runs
        ],
    }
