"""The sample recordings and traces in traces/: rebuilt by their script, byte for byte;
readable by wskreplay and, for the packets, by tshark."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from wskreplay.formats import ntstatus as nt
from wskreplay.trace import read_trace

from .conftest import REPO, run_cli

TRACES = REPO / "traces"
BUILT = ["field.etl", "field.wskt", "smb2-inferred.wskt"]


def test_make_samples_rebuilds_the_committed_files(tmp_path):
    subprocess.run([sys.executable, str(TRACES / "make_samples.py"), str(tmp_path)], check=True)
    for name in BUILT:
        assert (tmp_path / name).read_bytes() == (TRACES / name).read_bytes(), name


@pytest.mark.parametrize("name", ["field.wskt", "smb2-inferred.wskt", "sample.wskt"])
def test_committed_traces_verify(name):
    proc = run_cli("verify", str(TRACES / name))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_field_trace_covers_the_send_path_cases():
    trace = read_trace(TRACES / "field.wskt")
    returned = {c.status for c in trace.calls}
    completed = {c.completion_status for c in trace.calls if c.completed}
    assert {
        nt.STATUS_PENDING,
        nt.STATUS_SUCCESS,
        nt.STATUS_NOT_SUPPORTED,
        nt.STATUS_FILE_FORCED_CLOSED,
    } <= returned
    assert {nt.STATUS_SUCCESS, nt.STATUS_CONNECTION_RESET} <= completed
    assert any(c.flags == 2 for c in trace.calls) and any(c.flags == 0 for c in trace.calls)
    assert any(c.control_info for c in trace.calls)
    assert trace.metadata["completion_policy"]["policy"] == "on-ack"


def test_field_etl_packets_read_in_tshark(tmp_path):
    out = tmp_path / "field.pcapng"
    assert run_cli("export", str(TRACES / "field.etl"), "--pcapng", str(out)).returncode == 0
    fields = subprocess.run(
        ["tshark", "-r", str(out), "-T", "fields", "-e", "tcp.stream", "-e", "tcp.len"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in fields if line]
    trace = read_trace(TRACES / "field.wskt")
    assert len(rows) == len(trace.segments)
    assert len({r[0] for r in rows}) == len(trace.sockets)
    assert sum(int(r[1]) for r in rows) == int(trace.segments.column("length").sum())


def test_smb2_sample_summary():
    info = json.loads(run_cli("info", str(TRACES / "smb2-inferred.wskt"), "--json").stdout)
    assert info["sockets"] == 1 and info["calls"] == 232
