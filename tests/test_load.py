"""Load: ``pytest -n 2`` over a folder of 1,000 traces, as a driver's CI runs its regression
folder: every trace is one test, the three planted failures fail with their diff, the
JUnit report lists all 1,000, and the run stays within a memory bound."""

from __future__ import annotations

import copy
import shutil
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np

from wskreplay.formats import ntstatus as nt
from wskreplay.trace import read_trace, write_trace
from wskreplay.trace.model import CallTable

from .conftest import REPO, run_measured

TRACES = 1_000
PLANTED = (137, 512, 999)
SOURCES = ("field.wskt", "smb2-inferred.wskt")


def test_check_over_1000_traces_with_two_workers(tmp_path):
    project = tmp_path / "driver-ci"
    folder = project / "regressions"
    folder.mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\nwskreplay_traces = regressions\n")
    bad = copy.deepcopy(read_trace(REPO / "traces" / "field.wskt"))
    cols = bad.calls.columns
    cols["completion_status"] = cols["completion_status"].copy()
    k = int(np.flatnonzero(cols["completion_status"] == nt.STATUS_SUCCESS)[0])
    cols["completion_status"][k] = nt.STATUS_CONNECTION_RESET
    bad.calls = CallTable(cols, bad.calls.control_blob)
    for i in range(TRACES):
        name = folder / f"t{i:04d}.wskt"
        if i in PLANTED:
            write_trace(name, bad)
        else:
            shutil.copy(REPO / "traces" / SOURCES[i % len(SOURCES)], name)
    started = time.monotonic()
    run, peak_kib = run_measured(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2",
         "--junitxml", str(project / "junit.xml")],
        cwd=project,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{len(PLANTED)} failed, {TRACES - len(PLANTED)} passed" in run.stdout, run.stdout[
        -2000:
    ]
    for i in PLANTED:
        assert f"t{i:04d}.wskt" in run.stdout
    cases = ET.parse(project / "junit.xml").getroot().iter("testcase")
    names = {c.get("name"): c.find("failure") is not None for c in cases}
    assert len(names) == TRACES
    assert {n for n, failed in names.items() if failed} == {f"t{i:04d}.wskt" for i in PLANTED}
    assert peak_kib < 1 << 20, f"peak RSS {peak_kib} KiB"
    print(f"{TRACES} traces checked by 2 workers in {seconds:.1f} s, peak RSS {peak_kib >> 10} MiB")
