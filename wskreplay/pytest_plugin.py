"""pytest plugin: every ``*.wskt`` under the configured folders is a test that replays the
trace and diffs the replay against its recording (or its accepted snapshot).

Configure the folders with ``--wskreplay-traces DIR`` (repeatable) or the ini option
``wskreplay_traces``; tolerances with ``--wskreplay-tolerance METRIC=TIME[,PCT%]`` or the
ini option ``wskreplay_tolerances``; the profile with ``--wskreplay-profile``. A sidecar
``NAME.wskreplay.toml`` next to a trace overrides them for it (docs/pytest.md).
``--wskreplay-update`` accepts each trace's current replay as its expected result
(``NAME.expected.wskt``): snapshot testing. Items are independent (pytest-xdist's
``-n auto`` spreads them). The ``wskreplay`` fixture gives custom tests ``replay``,
``diff`` and ``check``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from wskreplay.checking import CheckSettings
    from wskreplay.diff import DiffResult
    from wskreplay.trace.model import Trace

# pytest imports this plugin in every session of an environment wskreplay is installed in,
# whether or not it checks traces: what a check needs (numpy, the trace format, the
# emulator, the diff) is imported by the hooks that run one, not here.


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wskreplay", "replay recorded WskSendEx traces as tests")
    group.addoption(
        "--wskreplay-traces",
        action="append",
        default=[],
        metavar="DIR",
        help="collect every *.wskt below DIR as a check (repeatable)",
    )
    group.addoption("--wskreplay-profile", default=None, help="transport profile (name or TOML)")
    group.addoption(
        "--wskreplay-tolerance",
        action="append",
        default=[],
        metavar="METRIC=TIME[,PCT%]",
        help="timing tolerance, e.g. completion=50us,5% (repeatable)",
    )
    group.addoption(
        "--wskreplay-update",
        action="store_true",
        help="accept each trace's current replay as its expected result",
    )
    parser.addini("wskreplay_traces", "folders of traces to check", type="paths", default=[])
    parser.addini("wskreplay_profile", "transport profile", default="windows-tcpip")
    parser.addini(
        "wskreplay_tolerances", "METRIC=TIME[,PCT%] per line", type="linelist", default=[]
    )


def _tolerance_texts(config: pytest.Config) -> list[str]:
    return [*config.getini("wskreplay_tolerances"), *config.getoption("wskreplay_tolerance")]


def _settings(config: pytest.Config) -> CheckSettings:
    from wskreplay.checking import CheckSettings
    from wskreplay.diff import Tolerance, parse_tolerance
    from wskreplay.errors import WskReplayError

    limits: dict[str, Tolerance] = {}
    for text in _tolerance_texts(config):
        try:
            metric, tol = parse_tolerance(text)
        except WskReplayError as exc:
            raise pytest.UsageError(str(exc)) from None
        limits[metric] = tol
    profile = config.getoption("wskreplay_profile") or config.getini("wskreplay_profile")
    return CheckSettings(profile=profile, tolerances=limits)


def _trace_dirs(config: pytest.Config) -> list[Path]:
    given = [Path(d) for d in config.getoption("wskreplay_traces")]
    return [d.resolve() for d in given + list(config.getini("wskreplay_traces"))]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".wskt":
        return None
    from wskreplay.checking import SNAPSHOT_SUFFIX

    if file_path.name.endswith(SNAPSHOT_SUFFIX):
        return None
    resolved = file_path.resolve()
    if not any(resolved.is_relative_to(d) for d in _trace_dirs(parent.config)):
        return None
    return TraceFile.from_parent(parent, path=file_path)


def pytest_sessionstart(session: pytest.Session) -> None:
    if _tolerance_texts(session.config):
        _settings(session.config)
    for d in _trace_dirs(session.config):
        if not d.is_dir():
            raise pytest.UsageError(f"--wskreplay-traces {d}: no such folder")


def pytest_configure(config: pytest.Config) -> None:
    for d in _trace_dirs(config):
        if d.is_dir() and str(d) not in config.args:
            config.args.append(str(d))


class TraceFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        return [TraceCheck.from_parent(self, name=self.path.name)]


class TraceDiffers(Exception):
    def __init__(self, result: DiffResult, expected: str, replay: str) -> None:
        super().__init__("the replay differs")
        self.result, self.expected, self.replay = result, expected, replay


class TraceCheck(pytest.Item):
    """Replay one trace and diff the replay against what is expected of it."""

    def runtest(self) -> None:
        from wskreplay.checking import check_trace, snapshot_path
        from wskreplay.trace import write_trace

        config = self.config
        settings = _settings(config).with_sidecar(self.path)
        if settings.skip:
            pytest.skip(settings.skip)
        outcome = check_trace(self.path, settings)
        if config.getoption("wskreplay_update"):
            write_trace(snapshot_path(self.path), outcome.replayed)
            return
        if not outcome.result.equal:
            raise TraceDiffers(outcome.result, outcome.expected, "(replay)")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from rich.console import Console

        from wskreplay.diff.report import print_diff
        from wskreplay.errors import WskReplayError

        error = excinfo.value
        if isinstance(error, TraceDiffers):
            console = Console(record=True, width=120, color_system=None)
            print_diff(error.result, a=error.expected, b=error.replay, console=console)
            return console.export_text()
        if isinstance(error, WskReplayError):
            return f"wskreplay: {error}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"wskreplay check {self.path.name}"


class WskReplayFixture:
    """What a custom test may do with traces."""

    def __init__(self, config: pytest.Config) -> None:
        self._settings = _settings(config)

    def replay(
        self, trace: Trace | str | Path, *, target: str = "emulator", **options: Any
    ) -> Trace:
        from wskreplay.checking import replay_trace

        if target != "emulator":
            raise ValueError(f"target {target!r}: only the emulator is available")
        options.setdefault("profile", self._settings.profile)
        return replay_trace(trace, **options)

    def diff(self, a: Trace | str | Path, b: Trace | str | Path, **options: Any) -> DiffResult:
        from wskreplay.diff import DiffOptions, diff_traces

        options.setdefault("tolerances", dict(self._settings.tolerances))
        return diff_traces(_trace(a), _trace(b), DiffOptions(**options))

    def check(self, trace: str | Path) -> DiffResult:
        from wskreplay.checking import check_trace

        return check_trace(trace, self._settings).result


def _trace(value: Trace | str | Path) -> Trace:
    from wskreplay.trace import read_trace
    from wskreplay.trace.model import Trace

    return value if isinstance(value, Trace) else read_trace(value)


@pytest.fixture
def wskreplay(request: pytest.FixtureRequest) -> WskReplayFixture:
    return WskReplayFixture(request.config)
