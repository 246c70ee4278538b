"""``wskreplay minimize``: a planted failure among 10,000 good calls on 8 sockets is
minimised to the planted call alone, the result fails ``check`` the same way, a trace that
does not diverge is refused, and the candidates it tries are consistent traces (the
shipped recordings with calls removed still replay exactly as recorded)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from wskreplay.checking import replay_trace
from wskreplay.diff import DiffOptions, diff_traces
from wskreplay.formats import ntstatus as nt
from wskreplay.generators.synth import synth_trace
from wskreplay.minimize.ddmin import ddmin, smallest_holding
from wskreplay.minimize.reduce import Selection, candidate
from wskreplay.trace import read_trace, write_trace
from wskreplay.trace.model import CallTable, Direction, Trace

from .conftest import REPO, assert_one_line_error, run_cli

MALFORMED_CONTROL_INFO = b"\x05\x00\x00"
"""Three bytes: a CMSGHDR cut short, which the transport refuses (STATUS_INVALID_PARAMETER)."""


def planted_trace(calls: int = 10_000, sockets: int = 8, seed: int = 3) -> tuple[Trace, int]:
    """A synth recording whose middle call carries malformed ControlInfo although the
    recording says the transport took it: the one divergence to find."""
    trace = synth_trace(calls, sockets, seed=seed)
    k = len(trace.calls) // 2
    infos = [trace.calls.control_info(i) for i in range(len(trace.calls))]
    infos[k] = MALFORMED_CONTROL_INFO
    cols = trace.calls.columns
    cols["control_len"] = np.array([-1 if x is None else len(x) for x in infos], np.int64)
    trace.calls = CallTable(cols, b"".join(x for x in infos if x is not None))
    return trace, k


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    trace, k = planted_trace()
    path = tmp_path_factory.mktemp("planted") / "planted.wskt"
    write_trace(path, trace)
    return path, k


def test_a_planted_failure_minimises_to_the_planted_call(planted, tmp_path):
    path, k = planted
    out = tmp_path / "small.wskt"
    proc = run_cli("minimize", str(path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    small = read_trace(out)
    meta = small.metadata["minimized"]
    assert meta["calls_of_source"] == [k]
    assert meta["before"] == {"sockets": 8, "calls": 10_000, "bytes": meta["before"]["bytes"]}
    assert meta["after"]["calls"] == 1 and meta["after"]["sockets"] == 1
    assert meta["from"] == "planted.wskt" and meta["complete"] is True
    assert f"status at call {k}" in meta["predicate"]
    assert small.calls.control_info(0) == MALFORMED_CONTROL_INFO
    check = run_cli("check", str(out), "--json", "-")
    assert check.returncode == 1
    report = json.loads(check.stdout)
    status = [d for d in report["differences"] if d["kind"] == "status"]
    assert [(d["call_a"], d["b"]) for d in status] == [(0, nt.STATUS_INVALID_PARAMETER)]


def test_a_status_predicate_and_a_command_predicate(planted, tmp_path):
    path, k = planted
    by_status = tmp_path / "status.wskt"
    proc = run_cli("minimize", str(path), "-o", str(by_status),
                   "--predicate", "returned=STATUS_INVALID_PARAMETER")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert read_trace(by_status).metadata["minimized"]["calls_of_source"] == [k]
    script = tmp_path / "still-fails.sh"
    script.write_text(f'#!/bin/sh\n"{sys.executable}" -m wskreplay check "$1" >/dev/null\n'
                      'test $? -eq 1\n')  # fmt: skip
    script.chmod(0o755)
    small = read_trace(by_status)
    few = tmp_path / "few.wskt"
    write_trace(few, small)
    by_command = tmp_path / "command.wskt"
    proc = run_cli("minimize", str(few), "-o", str(by_command), "--predicate", str(script))
    assert proc.returncode == 0, proc.stderr
    assert read_trace(by_command).metadata["minimized"]["predicate"] == f"command: {script}"


def test_a_budget_stops_early_with_the_smallest_failing_trace_so_far(planted, tmp_path):
    path, _k = planted
    out = tmp_path / "early.wskt"
    proc = run_cli("minimize", str(path), "-o", str(out), "--budget", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "budget reached" in proc.stdout
    meta = read_trace(out).metadata["minimized"]
    assert meta["complete"] is False and meta["after"]["calls"] < 10_000
    assert run_cli("check", str(out)).returncode == 1


def test_nothing_to_minimise_and_bad_predicates_are_one_line_errors(planted, tmp_path):
    field = REPO / "traces" / "field.wskt"
    out = tmp_path / "x.wskt"
    assert_one_line_error(run_cli("minimize", str(field), "-o", str(out)),
                          "field.wskt", "no divergence", "nothing to minimize")  # fmt: skip
    assert_one_line_error(
        run_cli("minimize", str(field), "-o", str(out), "--predicate", "completion=STATUS_X"),
        "STATUS_X",
        "not an NTSTATUS",
    )
    assert_one_line_error(
        run_cli("minimize", str(field), "-o", str(out), "--predicate", "false"),
        "does not satisfy it",
    )
    assert not out.exists()


@pytest.mark.parametrize("name", ["field.wskt", "smb2-inferred.wskt", "sample.wskt"])
def test_candidates_are_consistent_traces(name):
    """The shipped recordings with calls removed (and cut short) replay exactly as
    recorded: offsets, segments and the recorded peer follow the reduced streams."""
    trace = read_trace(REPO / "traces" / name)
    full = Selection.everything(trace)
    middle = len(full.rows) // 2
    selections = {
        "all": full,
        "last call removed": full.of_rows(full.rows[:-1]),
        "middle call removed": full.of_rows(np.delete(full.rows, middle)),
    }
    for label, selection in selections.items():
        smaller = candidate(trace, selection)
        result = diff_traces(smaller, replay_trace(smaller), DiffOptions(align="order"))
        assert result.equal, (label, [d.detail for d in result.differences[:3]])
    smaller = candidate(trace, selections["middle call removed"])
    for i, row in enumerate(selections["middle call removed"].rows.tolist()):
        assert smaller.call_payload(i) == trace.call_payload(row)
    out = smaller.streams[(int(smaller.calls.column("socket")[0]), Direction.OUT)]
    assert out.length == sum(
        int(n)
        for s, n, st in zip(
            smaller.calls.column("socket"),
            smaller.calls.column("length"),
            smaller.calls.column("status"),
            strict=True,
        )  # fmt: skip
        if s == out.socket and nt.is_success(int(st))
    )


def test_cut_calls_keep_a_prefix_of_their_bytes():
    trace = read_trace(REPO / "traces" / "field.wskt")
    full = Selection.everything(trace)
    row = int(np.argmax(trace.calls.column("length")))
    cut = candidate(trace, full.with_length(row, 100))
    assert cut.calls.column("length")[row] == 100
    assert cut.call_payload(row) == trace.call_payload(row)[:100]
    assert cut.calls.column("information")[row] <= 100


def test_ddmin_finds_a_1_minimal_subset():
    needed = {3, 17, 400}
    tested: list[int] = []

    def holds(subset: list[int]) -> bool:
        tested.append(len(subset))
        return needed <= set(subset)

    assert ddmin(list(range(1000)), holds) == [3, 17, 400]
    assert len(tested) < 200
    assert smallest_holding(0, 1000, lambda n: n >= 123) == 123
