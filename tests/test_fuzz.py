"""The fuzz harnesses as regression tests: every saved corpus input and every crash input
found so far (tests/fuzz/crashes/, each fixed) runs through its harness under a memory
bound, and each harness fuzzes for a few seconds from there (tests/fuzz/fuzz.py has the
long runs; docs/reliability.md their results)."""

from __future__ import annotations

import re
import subprocess
import sys
import tracemalloc

import pytest

from tests.fuzz.fuzz import MEMORY_BOUND
from tests.fuzz.harnesses import CRASHES, HARNESSES, inputs

from .conftest import REPO

SHORT_BUDGET_S = 3


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_saved_inputs_and_crashes_pass_within_the_memory_bound(name):
    paths = inputs(name)
    assert paths, f"no saved corpus for {name}"
    harness = HARNESSES[name]
    for path in paths:
        data = path.read_bytes()
        assert len(data) <= harness.max_len or path.parent.parent == CRASHES
        tracemalloc.start()
        try:
            harness.run(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= MEMORY_BOUND, f"{path.name}: {peak:,} bytes"


def test_crash_inputs_are_kept_with_their_fix():
    """Each kept crash input is listed in crashes/README.md with the bug it showed."""
    kept = sorted(p.name for p in CRASHES.glob("*/*") if p.is_file() and p.name != "README.md")
    listed = (CRASHES / "README.md").read_text()
    assert kept, "the crash inputs found so far are part of the regression run"
    for name in kept:
        assert name in listed, f"{name} is not described in crashes/README.md"


def test_a_short_fuzzing_run_of_every_harness_finds_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fuzz" / "fuzz.py"), "--budget",
         str(SHORT_BUDGET_S), "--seed", "1", "--jobs", "2"],
        capture_output=True, text=True, timeout=60 * len(HARNESSES),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = {
        m[0]: int(m[1].replace(",", ""))
        for m in re.findall(r"^(\S+)\s+([\d,]+) ", proc.stdout, re.M)
    }
    for name in HARNESSES:
        assert rows.get(name, 0) > 0, f"{name} did not run: {proc.stdout}"
