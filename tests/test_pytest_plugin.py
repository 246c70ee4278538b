"""The pytest plugin, run as users run it: pytest in a subprocess on a temporary project
holding one trace that replays as recorded and one that does not."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import numpy as np

from wskreplay.formats import ntstatus as nt
from wskreplay.trace import read_trace, write_trace
from wskreplay.trace.model import CallTable

from .conftest import REPO

CUSTOM_TEST = """
def test_custom(wskreplay):
    replayed = wskreplay.replay("traces/good.wskt")
    assert len(replayed.calls) == 12
    assert wskreplay.diff("traces/good.wskt", replayed).equal
    assert wskreplay.check("traces/good.wskt").equal
"""


def pytest_run(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )


def make_project(tmp_path):
    project = tmp_path / "project"
    traces = project / "traces"
    traces.mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")
    shutil.copy(REPO / "traces" / "field.wskt", traces / "good.wskt")
    bad = copy.deepcopy(read_trace(REPO / "traces" / "sample.wskt"))
    cols = bad.calls.columns
    k = int(np.flatnonzero(cols["socket"] == 1)[7])
    cols["completion_status"] = cols["completion_status"].copy()
    cols["completion_status"][k] = nt.STATUS_CONNECTION_RESET  # not what a replay gives
    bad.calls = CallTable(cols, bad.calls.control_blob)
    write_trace(traces / "bad.wskt", bad)
    return project, k


def test_one_trace_passes_one_fails_with_the_diff_then_update_accepts(tmp_path):
    project, k = make_project(tmp_path)
    run = pytest_run(project, "--wskreplay-traces", "traces")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout
    assert "bad.wskt" in run.stdout and "DIFFERENT: 1 completion status" in run.stdout
    assert f"socket 1, call {k}: completion status" in run.stdout
    assert "STATUS_CONNECTION_RESET (0xC000020D) in" in run.stdout
    update = pytest_run(project, "--wskreplay-traces", "traces", "--wskreplay-update")
    assert update.returncode == 0 and "2 passed" in update.stdout, update.stdout
    assert (project / "traces" / "bad.expected.wskt").is_file()
    again = pytest_run(project, "--wskreplay-traces", "traces")
    assert again.returncode == 0 and "2 passed" in again.stdout, again.stdout


def test_ini_option_sidecar_fixture_and_xdist(tmp_path):
    project, _k = make_project(tmp_path)
    (project / "pytest.ini").write_text("[pytest]\nwskreplay_traces = traces\n")
    (project / "traces" / "bad.wskreplay.toml").write_text('skip = "known field bug #12"\n')
    (project / "test_custom.py").write_text(CUSTOM_TEST)
    run = pytest_run(project, "-n", "2", "-rs")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed, 1 skipped" in run.stdout and "known field bug #12" in run.stdout


def test_bad_plugin_options_are_usage_errors(tmp_path):
    project, _k = make_project(tmp_path)
    run = pytest_run(project, "--wskreplay-traces", "traces", "--wskreplay-tolerance", "x=1")
    assert run.returncode == 4 and "METRIC=NUMBER" in run.stderr
    run = pytest_run(project, "--wskreplay-traces", "missing")
    assert run.returncode == 4 and "no such folder" in run.stderr


UNRELATED_TEST = """
import sys

def test_unrelated():
    assert "wskreplay.pytest_plugin" in sys.modules
    loaded = sorted(m for m in sys.modules if m.startswith("wskreplay."))
    assert loaded == ["wskreplay.pytest_plugin"], loaded
    assert "numpy" not in sys.modules
"""


def test_a_session_that_checks_no_traces_imports_nothing_of_wskreplay_but_the_plugin(tmp_path):
    """pytest loads the plugin in every session of an environment wskreplay is installed in:
    a project that checks no traces must not pay for numpy, the trace format or the
    emulator (about 0.3 s, and numpy's BLAS threads) on each run."""
    project = tmp_path / "unrelated"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_unrelated.py").write_text(UNRELATED_TEST)
    run = pytest_run(project)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
