"""Chaos replay: every seed's replay of the shipped traces keeps the WSK contract and TCP's
rules, seeds differ from each other, a seed is the same every time, and a race planted in
a trace (a send the recording shows cancelled by a close a few microseconds before its ACK
came) is found by some seed of ``check --chaos-runs`` and reproduced by ``--chaos SEED``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wskreplay.checking import replay_trace
from wskreplay.formats import ntstatus as nt
from wskreplay.trace import read_trace, write_trace
from wskreplay.trace.model import CallTable, Direction, Event, Trace

from .conftest import REPO, assert_one_line_error, run_cli

TRACES = ["field.wskt", "smb2-inferred.wskt", "sample.wskt"]
SEEDS = range(1, 9)
REFUSALS = {nt.STATUS_FILE_FORCED_CLOSED, nt.STATUS_CONNECTION_RESET,
            nt.STATUS_INVALID_DEVICE_STATE}  # fmt: skip


def _reset_ns(trace: Trace, sid: int) -> int | None:
    times = [e.time_ns for e in trace.events if e.kind == "reset" and e.socket == sid]
    return min(times) if times else None


def assert_contract(recorded: Trace, plain: Trace, chaotic: Trace) -> None:
    """The rules a chaos replay must keep, against the recording and the replay without
    chaos (``plain``)."""
    a, b = plain.calls, chaotic.calls
    issue, ret = b.column("issue_ns").astype(np.int64), b.column("return_ns").astype(np.int64)
    done = b.column("completed") == 1
    completion = b.column("completion_ns").astype(np.int64)
    status, final = b.column("status"), b.column("completion_status")
    length, info = b.column("length"), b.column("information")
    assert np.all(ret >= issue) and np.all(completion[done] >= issue[done])
    at_once = status == nt.STATUS_SUCCESS
    assert np.all(done[at_once]) and np.all(final[at_once] == nt.STATUS_SUCCESS)
    ok = done & (final == nt.STATUS_SUCCESS)
    assert np.all(info[ok] == length[ok])
    for i in np.flatnonzero(b.column("status") != a.column("status")).tolist():
        sid = int(b.column("socket")[i])
        resets = sorted(t for t in (_reset_ns(plain, sid), _reset_ns(chaotic, sid)) if t)
        assert {int(a.column("status")[i]), int(status[i])} & REFUSALS, i
        assert resets and resets[0] <= issue[i] + 10_000_000, (i, resets)
    segments = chaotic.segments
    for sid in recorded.sockets:
        mine = (segments.column("socket") == sid) & (segments.column("direction") == 0)
        seq = segments.column("seq")[mine].astype(np.int64)
        seg_len = segments.column("length")[mine].astype(np.int64)
        seg_time = segments.column("time_ns")[mine].astype(np.int64)
        new = seg_len > 0
        ends = np.maximum.accumulate(seq[new] + seg_len[new]) if new.any() else np.array([0])
        starts = seq[new]
        assert np.all(starts <= np.concatenate(([0], ends[:-1]))), f"socket {sid}: a hole"
        stream = chaotic.streams.get((sid, Direction.OUT))
        if stream is not None:
            assert ends[-1] == stream.length, f"socket {sid}: bytes missing on the wire"
            accepted = np.flatnonzero((b.column("socket") == sid) & nt.success_mask(status))
            sent = b"".join(recorded.call_payload(int(i)) or b"" for i in accepted)
            assert bytes(stream.data) == sent, f"socket {sid}: not the accepted calls' bytes"
        pending_ok = ok & ~at_once & (length > 0)
        for i in np.flatnonzero((b.column("socket") == sid) & pending_ok).tolist():
            end = int(b.column("stream_offset")[i] + length[i])
            covering = np.flatnonzero(seq + seg_len >= end)
            sent_at = int(seg_time[covering].min()) if len(covering) else None
            assert sent_at is not None and sent_at <= completion[i], (sid, i, sent_at)


@pytest.mark.parametrize("name", TRACES)
def test_every_seed_keeps_the_contract(name):
    recorded = read_trace(REPO / "traces" / name)
    plain = replay_trace(recorded)
    timings = set()
    for seed in SEEDS:
        chaotic = replay_trace(recorded, chaos=seed)
        assert_contract(recorded, plain, chaotic)
        timings.add(tuple(chaotic.calls.column("completion_ns").tolist()))
    assert len(timings) == len(SEEDS), "two seeds gave the same timings"
    assert tuple(plain.calls.column("completion_ns").tolist()) not in timings


def test_the_same_seed_gives_the_same_replay(tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"{i}.wskt"
        proc = run_cli("replay", str(REPO / "traces" / "sample.wskt"), "--chaos", "3",
                       "-o", str(out))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outs.append(read_trace(out))
    assert outs[0].calls == outs[1].calls and outs[0].segments == outs[1].segments
    assert outs[0].metadata["replay"]["chaos"] == 3


RACE_CLOSE_NS = 8_340_000
"""14 us before the recorded completion of field.wskt's call 11 (socket 0's last send)."""


def planted_race() -> Trace:
    """field.wskt where the driver closes socket 0 while its last send waits for the ACK:
    the recording says CANCELLED; a replay whose ACK comes a little sooner says SUCCESS."""
    trace = read_trace(REPO / "traces" / "field.wskt")
    cols = trace.calls.columns
    for name in ("completion_ns", "completion_status", "information"):
        cols[name] = cols[name].copy()
    cols["completion_ns"][11] = RACE_CLOSE_NS
    cols["completion_status"][11] = nt.STATUS_CANCELLED
    cols["information"][11] = 0
    trace.calls = CallTable(cols, trace.calls.control_blob)
    kept = [e for e in trace.events if not (e.socket == 0 and e.time_ns > 8_300_000)]
    trace.events = sorted([*kept, Event(RACE_CLOSE_NS, "close", 0, {})], key=lambda e: e.time_ns)
    return trace


def test_a_planted_race_is_found_by_a_seed_and_the_seed_reproduces_it(tmp_path):
    path = tmp_path / "race.wskt"
    write_trace(path, planted_race())
    assert run_cli("check", str(path)).returncode == 0
    runs = run_cli("check", str(path), "--chaos-runs", "20")
    assert runs.returncode == 1, runs.stdout
    line = next(x for x in runs.stdout.splitlines() if x.startswith("diverging seeds:"))
    seeds = [int(s) for s in line.split(":")[1].split()]
    assert 0 < len(seeds) < 20
    assert "call 11: completion status STATUS_CANCELLED (0xC0000120)" in runs.stdout
    assert f"reproduce one: wskreplay check {path} --chaos {seeds[0]}" in runs.stdout
    for _ in range(2):
        again = run_cli("check", str(path), "--chaos", str(seeds[0]), "--json", "-")
        assert again.returncode == 1
        assert '"call_a": 11' in again.stdout and '"kind": "completion_status"' in again.stdout
    calm = next(s for s in range(1, 21) if s not in seeds)
    wide = [f"--tolerance={m}=1ms" for m in ("issue", "return", "completion", "wire")]
    calm_check = run_cli("check", str(path), "--chaos", str(calm), *wide)
    assert calm_check.returncode == 0, calm_check.stdout
    report = tmp_path / "chaos.json"
    as_json = run_cli("check", str(path), "--chaos-runs", "20", "--json", str(report))
    assert as_json.returncode == 1 and "diverging seeds:" in as_json.stdout
    doc = json.loads(report.read_text())
    assert (doc["trace"], doc["seeds"], doc["diverged"]) == (str(path), 20, seeds)
    assert [r["seed"] for r in doc["runs"]] == list(range(1, 21))
    first = doc["runs"][seeds[0] - 1]
    assert first["diverged"] and first["differences"][0]["call_a"] == 11


def test_chaos_runs_refuse_the_outputs_of_a_single_check(tmp_path):
    trace = str(REPO / "traces" / "field.wskt")
    for flags in (["-o", str(tmp_path / "x.wskt")], ["--html", str(tmp_path / "x.html")],
                  ["--junit", str(tmp_path / "x.xml")], ["--dissect"]):  # fmt: skip
        proc = run_cli("check", trace, "--chaos-runs", "2", *flags)
        assert_one_line_error(proc, flags[0], "--chaos-runs")
    assert not list(tmp_path.iterdir())


def test_chaos_needs_the_emulator():
    trace = str(REPO / "traces" / "field.wskt")
    proc = run_cli("check", trace, "--chaos", "1", "--target", "socket", "--topology", "loopback")
    assert_one_line_error(proc, "--chaos", "emulator")


@pytest.mark.parametrize("speed", [1.0, None])
def test_replays_through_one_plan_equal_replays_that_make_their_own(tmp_path, speed):
    """check --chaos-runs works the set-up out once (engine.ReplayPlan) for all its seeds:
    each replay through the shared plan writes the bytes a replay from scratch writes, on
    the shipped traces and a real capture of 284 connections, and a plan refuses another
    trace or other options."""
    from dataclasses import replace

    from wskreplay.replayer.engine import ReplayOptions, ReplayPlan, replay
    from wskreplay.replayer.profile import load_profile

    from .conftest import SHARED_DATA

    imported = tmp_path / "650.wskt"
    capture = SHARED_DATA / "replay" / "pcapplusplus__650HttpResponses.pcap"
    proc = run_cli("import", str(capture), "--infer-calls", "-o", str(imported))
    assert proc.returncode == 0, proc.stderr
    paths = [*sorted((REPO / "traces").glob("*.wskt")), imported]
    base = ReplayOptions(load_profile(), speed=speed)
    for path in paths:
        recorded = read_trace(path)
        plan = ReplayPlan(recorded, base)
        for chaos in (None, 1, 2):
            options = replace(base, chaos=chaos)
            shared, fresh = tmp_path / "shared.wskt", tmp_path / "fresh.wskt"
            write_trace(shared, replay(recorded, options, plan=plan))
            write_trace(fresh, replay(recorded, options))
            assert shared.read_bytes() == fresh.read_bytes(), (path.name, chaos)
        with pytest.raises(ValueError):
            replay(recorded, replace(base, seed=1), plan=plan)
        with pytest.raises(ValueError):
            replay(read_trace(path), base, plan=plan)


def test_chaos_runs_report_what_a_full_diff_reports_but_timing(tmp_path):
    """check --chaos-runs diffs each replay without its timing (DiffOptions.timing): the
    differences are a full diff's, less timing and distributions, difference by difference,
    on the planted race (seeds that diverge and seeds that do not), the shipped traces and a
    real capture of 284 connections, its segmentation tolerated and strict."""
    from dataclasses import replace

    from wskreplay.checking import TIMING_KINDS, CheckSettings, chaos_runs
    from wskreplay.diff.compare import diff_traces
    from wskreplay.replayer.dispatch import replay_on

    from .conftest import SHARED_DATA

    race, imported = tmp_path / "race.wskt", tmp_path / "650.wskt"
    write_trace(race, planted_race())
    capture = SHARED_DATA / "replay" / "pcapplusplus__650HttpResponses.pcap"
    proc = run_cli("import", str(capture), "--infer-calls", "-o", str(imported))
    assert proc.returncode == 0, proc.stderr
    diverged = 0
    cases = [
        (path, CheckSettings())
        for path in [race, imported, *sorted((REPO / "traces").glob("*.wskt"))]
    ]
    cases.append((imported, CheckSettings(strict_segmentation=True)))
    for path, settings in cases:
        recorded = read_trace(path)
        own = settings.with_sidecar(path)
        for run in chaos_runs(path, settings, 6):
            options = replace(own.replay_options(), chaos=run.seed)
            replayed = replay_on(recorded, options, own.target)
            full = diff_traces(recorded, replayed, own.diff_options())
            expected = [d for d in full.differences if d.kind not in TIMING_KINDS]
            assert [d.as_dict() for d in run.differences] == [d.as_dict() for d in expected]
            diverged += run.diverged
    assert diverged


def test_chaos_seeds_dealt_out_to_processes_report_what_one_process_reports(tmp_path):
    """check --chaos-runs with --jobs 2 deals the seeds out to a forked worker: the same
    report, line for line and in JSON, as --jobs 1, on the planted race and a real capture
    of 284 connections."""
    from .conftest import SHARED_DATA
    from .test_parallel_replay import _workers_seen

    race, imported = tmp_path / "race.wskt", tmp_path / "650.wskt"
    write_trace(race, planted_race())
    capture = SHARED_DATA / "replay" / "pcapplusplus__650HttpResponses.pcap"
    proc = run_cli("import", str(capture), "--infer-calls", "-o", str(imported))
    assert proc.returncode == 0, proc.stderr
    for path in (race, imported):
        reports = {}
        for jobs in ("1", "2"):
            report = tmp_path / f"chaos{jobs}.json"
            args = ["check", str(path), "--chaos-runs", "12", "--jobs", jobs, "--json"]
            status, workers = _workers_seen([*args, str(report)])
            assert len(workers) == int(jobs) - 1
            reports[jobs] = (status, report.read_text())
            text = run_cli("check", str(path), "--chaos-runs", "12", "--jobs", jobs)
            reports[jobs + " text"] = (text.returncode, text.stdout)
        assert reports["1"] == reports["2"] and reports["1 text"] == reports["2 text"]
        assert json.loads(reports["1"][1])["seeds"] == 12
