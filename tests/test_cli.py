"""The wskreplay executable, run in a subprocess as a user would."""

from __future__ import annotations

import json

from wskreplay.formats import ntstatus
from wskreplay.trace import read_trace

from .conftest import SAMPLE_TRACE, assert_one_line_error, run_cli

INFO_KEYS = {
    "format_version",
    "sockets",
    "calls",
    "segments",
    "payload_bytes",
    "stream_bytes",
    "duration_ns",
    "statuses",
    "completions",
    "redacted",
    "metadata",
}


def test_synth_is_deterministic_and_info_describes_it(tmp_path):
    a, b = tmp_path / "a.wskt", tmp_path / "b.wskt"
    for path in (a, b):
        proc = run_cli("synth", "-o", str(path), "--calls", "3000", "--sockets", "5", "--seed", "4")
        assert proc.returncode == 0, proc.stderr
    assert a.read_bytes() == b.read_bytes()
    proc = run_cli("info", str(a), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert INFO_KEYS <= info.keys()
    trace = read_trace(a)
    assert info["calls"] == 3000 == sum(info["statuses"].values())
    assert info["sockets"] == 5
    assert info["segments"] == len(trace.segments)
    assert info["payload_bytes"] == sum(s.length for s in trace.streams.values())
    assert info["stream_bytes"] == sum(s.length for (_, d), s in trace.streams.items() if d == 0)
    assert info["redacted"] is False
    assert info["metadata"]["synth"] == {"calls": 3000, "sockets": 5, "seed": 4}
    assert set(info["statuses"]) == {"0x00000000", "0x00000103", "0xC00000B6"}
    assert "0xC000020D" in info["completions"]
    times = [
        *trace.calls.column("issue_ns"),
        *trace.calls.column("completion_ns"),
        *trace.segments.column("time_ns"),
        *(e.time_ns for e in trace.events),
    ]
    assert info["duration_ns"] == max(times) - min(times)
    table = run_cli("info", str(a))
    assert table.returncode == 0 and "STATUS_FILE_FORCED_CLOSED" in table.stdout


def test_redacted_synth_keeps_lengths_not_payload(tmp_path):
    plain, red = tmp_path / "p.wskt", tmp_path / "r.wskt"
    run_cli("synth", "-o", str(plain), "--calls", "800", "--seed", "2")
    assert (
        run_cli("synth", "-o", str(red), "--calls", "800", "--seed", "2", "--redact").returncode
        == 0
    )
    p = json.loads(run_cli("info", str(plain), "--json").stdout)
    r = json.loads(run_cli("info", str(red), "--json").stdout)
    assert r["redacted"] is True and r["payload_bytes"] == 0 and p["payload_bytes"] > 0
    for key in ("calls", "segments", "stream_bytes", "statuses", "completions", "duration_ns"):
        assert r[key] == p[key], key
    assert red.stat().st_size < plain.stat().st_size / 2


def test_export_jsonl_has_every_call_and_field(tmp_path):
    path, out = tmp_path / "t.wskt", tmp_path / "calls.jsonl"
    run_cli("synth", "-o", str(path), "--calls", "700", "--seed", "6")
    assert run_cli("export", str(path), "--jsonl", str(out)).returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    trace = read_trace(path)
    assert len(rows) == 700
    for row, call in zip(rows, trace.calls, strict=True):
        assert row["seq"] == call.seq and row["length"] == call.length
        assert row["status"] == f"0x{call.status:08X}"
        assert row["status_name"] == ntstatus.name(call.status)
        assert row["completion_ns"] == call.completion_ns
        assert row["control_info"] == (call.control_info.hex() if call.control_info else None)
        assert row["irp"] == f"0x{call.irp:016X}"
    stdout = run_cli("export", str(path), "--jsonl", "-")
    assert stdout.returncode == 0 and stdout.stdout == out.read_text()


def test_usage_errors_exit_2_without_traceback(tmp_path):
    for args in (
        ["synth"],
        ["synth", "-o", str(tmp_path / "x"), "--calls", "0"],
        ["frobnicate"],
        ["info"],
        ["export", str(SAMPLE_TRACE)],
        ["info", "--bogus", str(SAMPLE_TRACE)],
    ):
        proc = run_cli(*args)
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr
    assert_one_line_error(run_cli("info", str(tmp_path)), str(tmp_path))
    assert_one_line_error(run_cli("info", str(tmp_path / "missing.wskt")), "No such file")
    assert_one_line_error(
        run_cli("recover", str(SAMPLE_TRACE), "-o", str(SAMPLE_TRACE)), "overwrite"
    )


def test_shipped_sample_trace_is_intact_and_reproducible(tmp_path):
    proc = run_cli("verify", str(SAMPLE_TRACE), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["intact"] and report["calls"] > 0
    params = json.loads(run_cli("info", str(SAMPLE_TRACE), "--json").stdout)["metadata"]["synth"]
    again = tmp_path / "again.wskt"
    run_cli(
        "synth",
        "-o",
        str(again),
        "--calls",
        str(params["calls"]),
        "--sockets",
        str(params["sockets"]),
        "--seed",
        str(params["seed"]),
    )
    assert read_trace(again) == read_trace(SAMPLE_TRACE)


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and "wskreplay" in proc.stdout
