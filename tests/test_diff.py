"""`wskreplay diff` and `check`: controlled mutations of a real trace, each reported in its
class, at its call, and nothing else."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from wskreplay.diff import DiffOptions, diff_traces, parse_tolerance
from wskreplay.errors import InputError
from wskreplay.formats import ntstatus as nt
from wskreplay.trace import read_trace, write_trace
from wskreplay.trace.model import CallTable, Direction, SegmentTable, Trace

from .conftest import REPO, assert_one_line_error, run_cli

TRACES = REPO / "traces"


@pytest.fixture(scope="module")
def sample() -> Trace:
    return read_trace(TRACES / "sample.wskt")


def with_calls(trace: Trace, **changes) -> Trace:
    """A copy of ``trace`` whose call columns have the given (index, value) changes."""
    out = copy.deepcopy(trace)
    cols = out.calls.columns
    for name, (index, value) in changes.items():
        cols[name] = cols[name].copy()
        cols[name][index] = value
    out.calls = CallTable(cols, out.calls.control_blob)
    return out


def socket_calls(trace: Trace, sid: int) -> np.ndarray:
    return np.flatnonzero(trace.calls.column("socket") == sid)


def write_status_mutant(sample: Trace, tmp_path) -> tuple:
    """``sample`` with call 3 of socket 1 returning STATUS_INVALID_PARAMETER, written to
    ``tmp_path``: its path and the call."""
    k = int(socket_calls(sample, 1)[3])
    path = tmp_path / "b.wskt"
    write_trace(path, with_calls(sample, status=(k, nt.STATUS_INVALID_PARAMETER)))
    return path, k


def kinds(result) -> list[tuple[str, int | None, int | None]]:
    return [(d.kind, d.call_a, d.call_b) for d in result.differences]


def test_a_trace_equals_itself(sample, tmp_path):
    result = diff_traces(sample, sample)
    assert result.equal and result.calls_compared == 500 and not result.tolerated
    proc = run_cli("diff", str(TRACES / "sample.wskt"), str(TRACES / "sample.wskt"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("EQUAL: 500 calls compared")


def test_a_changed_completion_status_is_one_status_difference(sample):
    k = int(socket_calls(sample, 1)[10])
    b = with_calls(sample, completion_status=(k, nt.STATUS_CONNECTION_RESET))
    result = diff_traces(sample, b, DiffOptions(align="order"))
    assert kinds(result) == [("completion_status", k, k)]
    assert "STATUS_CONNECTION_RESET" in result.differences[0].detail


def test_a_delayed_completion_counts_only_beyond_its_tolerance(sample):
    k = int(socket_calls(sample, 2)[5])
    late = int(sample.calls.column("completion_ns")[k]) + 1_000_000
    result = diff_traces(sample, with_calls(sample, completion_ns=(k, late)), DiffOptions("order"))
    assert kinds(result) == [("timing", k, k)]
    assert result.differences[0].b["metric"] == "completion"
    near = int(sample.calls.column("completion_ns")[k]) + 10_000
    within = diff_traces(sample, with_calls(sample, completion_ns=(k, near)), DiffOptions("order"))
    assert within.equal


def _insert_first_call(trace: Trace, sid: int, payload: bytes) -> tuple[Trace, int]:
    """``trace`` with a call prepended to socket ``sid``'s stream (same issue time as its
    first call): later calls' offsets shift, the stream gains the bytes."""
    out = copy.deepcopy(trace)
    cols = out.calls.columns
    mine = socket_calls(trace, sid)
    first = int(mine[0])
    row = {name: cols[name][first] for name in cols}
    row.update(length=len(payload), control_len=-1, information=len(payload), stream_offset=0)
    shifted = cols["stream_offset"].copy()
    shifted[mine] += len(payload)
    cols["stream_offset"] = shifted
    at = first
    control_at = int(np.maximum(cols["control_len"][:at], 0).sum())
    for name in cols:
        cols[name] = np.insert(cols[name], at, row[name])
    cols["seq"] = np.arange(len(cols["seq"]))
    blob = trace.calls.control_blob
    out.calls = CallTable(cols, blob[:control_at] + blob[control_at:])
    stream = out.streams[(sid, Direction.OUT)]
    stream.data = bytearray(payload) + stream.data
    stream.length += len(payload)
    segs = out.segments.columns
    mine = segs["socket"] == sid
    outbound, inbound = (
        mine & (segs["direction"] == int(Direction.OUT)),
        mine & (segs["direction"] == int(Direction.IN)),
    )
    segs["seq"] = np.where(outbound, segs["seq"] + len(payload), segs["seq"])
    segs["ack"] = np.where(inbound & (segs["ack"] > 0), segs["ack"] + len(payload), segs["ack"])
    first_data = int(np.flatnonzero(outbound & (segs["length"] > 0))[0])
    new = {name: segs[name][first_data] for name in segs}
    new.update(seq=0, length=len(payload), time_ns=int(cols["issue_ns"][at]) + 1)
    for name in segs:
        segs[name] = np.insert(segs[name], first_data, new[name])
    out.segments = SegmentTable(segs)
    return out, at


def test_one_inserted_call_is_one_insertion_under_sequence_alignment(sample):
    b, at = _insert_first_call(sample, 0, b"INSERTED")
    result = diff_traces(sample, b, DiffOptions(align="sequence"))
    assert kinds(result) == [("inserted", None, at)]  # and nothing else
    # In order, the same insertion shifts every later call of the socket.
    in_order = diff_traces(sample, b, DiffOptions(align="order"))
    assert len(in_order.differences) > 10


def test_one_removed_call_is_one_removal(sample):
    b, at = _insert_first_call(sample, 0, b"INSERTED")
    result = diff_traces(b, sample, DiffOptions(align="sequence"))
    assert kinds(result) == [("removed", at, None)]


@pytest.mark.parametrize(
    "align, detail",
    [("order", "first difference at byte"), ("sequence", "at byte 3 of the call")],
)
def test_one_changed_byte_names_its_offset_and_call(sample, align, detail):
    """In order (a replay) the stream is compared; between two recordings each aligned
    call's bytes: either way one wire difference, at the call that sent the byte."""
    b = copy.deepcopy(sample)
    k = int(socket_calls(sample, 3)[4])
    offset = int(sample.calls.column("stream_offset")[k]) + 3
    b.streams[(3, Direction.OUT)].data[offset] ^= 0xFF
    result = diff_traces(sample, b, DiffOptions(align=align))
    assert kinds(result) == [("wire", k, k)]
    assert result.differences[0].a["offset"] == offset
    assert detail in result.differences[0].detail


def test_other_segmentation_is_tolerated_unless_strict(sample):
    b = copy.deepcopy(sample)
    cols = b.segments.columns
    seg = sample.segments
    full = np.flatnonzero(
        (seg.column("socket") == 0)
        & (seg.column("direction") == int(Direction.OUT))
        & (seg.column("length") == 1460)
    )[0]
    half = {name: cols[name][full] for name in cols}
    cols["length"] = cols["length"].copy()
    cols["length"][full] = 730
    later = int(cols["time_ns"][full]) + 1
    half.update(length=730, seq=int(cols["seq"][full]) + 730, time_ns=later)
    for name in cols:
        cols[name] = np.insert(cols[name], full + 1, half[name])
    b.segments = SegmentTable(cols)
    result = diff_traces(sample, b, DiffOptions(align="order"))
    assert result.equal and [d.kind for d in result.tolerated] == ["segmentation"]
    strict = diff_traces(sample, b, DiffOptions(align="order", segmentation="strict"))
    assert [d.kind for d in strict.differences] == ["segmentation"]


def test_check_replays_and_diffs_the_shipped_traces(tmp_path):
    for name in ("field.wskt", "sample.wskt", "smb2-inferred.wskt"):
        report = tmp_path / f"{name}.json"
        proc = run_cli("check", str(TRACES / name), "--json", str(report))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.loads(report.read_text())
        assert doc["equal"] and doc["status_mismatches"] == doc["timing_violations"] == 0
        assert doc["wire_mismatches"] == 0 and doc["calls_compared"] > 0
    proc = run_cli("check")
    assert proc.returncode == 0 and "EQUAL: 12 calls compared" in proc.stdout


def test_differences_exit_1_and_the_json_schema(sample, tmp_path):
    path, k = write_status_mutant(sample, tmp_path)
    proc = run_cli("diff", str(TRACES / "sample.wskt"), str(path), "--json", "-")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    expected = {"equal", "calls_compared", "status_mismatches", "timing_violations"}
    assert expected | {"wire_mismatches", "differences"} <= set(doc)
    assert doc["equal"] is False and doc["status_mismatches"] == 1
    assert doc["differences"][0]["call_a"] == k


def test_bad_diff_input_is_one_line(tmp_path):
    good = str(TRACES / "sample.wskt")
    assert_one_line_error(run_cli("diff", good, str(TRACES / "field.etl")), "field.etl")
    assert_one_line_error(
        run_cli("diff", good, good, "--tolerance", "completion=fast"), "METRIC=NUMBER"
    )
    assert_one_line_error(
        run_cli("diff", good, good, "--tolerance", "latency=5us"), "unknown metric 'latency'"
    )
    with pytest.raises(InputError):
        parse_tolerance("wire=5")
    assert parse_tolerance("completion=50us,5%")[1].absolute_ns == 50_000


def _scaled_latencies(trace: Trace, factor: np.ndarray) -> Trace:
    out = copy.deepcopy(trace)
    cols = out.calls.columns
    issue = cols["issue_ns"].astype(np.int64)
    latency = (cols["completion_ns"].astype(np.int64) - issue) * factor
    cols["completion_ns"] = np.where(cols["completed"] == 1, issue + latency.astype(np.int64), 0)
    out.calls = CallTable(cols, out.calls.control_blob)
    return out


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """A recording, two more runs of it with random latency jitter (5%), and one whose
    completion latencies are 50% longer."""
    path = tmp_path_factory.mktemp("scenario") / "a.wskt"
    assert run_cli("synth", "-o", str(path), "--calls", "4000", "--sockets", "4").returncode == 0
    a = read_trace(path)
    rng = np.random.default_rng(11)
    n = len(a.calls)
    jitter_b = _scaled_latencies(a, rng.lognormal(0, 0.05, n))
    jitter_c = _scaled_latencies(a, rng.lognormal(0, 0.05, n))
    slower = _scaled_latencies(a, np.full(n, 1.5))
    return a, jitter_b, jitter_c, slower


def test_run_to_run_jitter_is_no_regression(scenario):
    a, jitter_b, jitter_c, _slower = scenario
    result = diff_traces(a, jitter_b, DiffOptions(align="sequence"), noise=jitter_c)
    assert result.equal, [d.detail for d in result.differences]
    completion = [s for s in result.shifts if s.metric == "completion"]
    assert completion and all(s.verdict in ("unchanged", "noise") for s in completion)


def test_a_real_latency_shift_is_reported_with_a_ci_excluding_zero(scenario, tmp_path):
    a, _jitter_b, jitter_c, slower = scenario
    result = diff_traces(a, slower, DiffOptions(align="sequence"), noise=jitter_c)
    pooled = {s.quantile: s for s in result.shifts if s.metric == "completion" and s.socket is None}
    for quantile in ("median", "p90", "p99"):
        shift = pooled[quantile]
        assert shift.verdict == "regression"
        assert abs(shift.change - 0.5) < 0.01  # every latency is 1.5x: so is each quantile
        assert 0 < shift.ci[0] <= shift.change <= shift.ci[1]  # the CI excludes zero
    assert result.count("distribution") >= 3 and result.count("timing") == 0
    assert "completion latency (all sockets) +50% (95% CI" in " ".join(
        d.detail for d in result.differences
    )
    for name, trace in (("a", a), ("slower", slower), ("noise", jitter_c)):
        write_trace(tmp_path / f"{name}.wskt", trace)
    proc = run_cli(
        "diff",
        str(tmp_path / "a.wskt"),
        str(tmp_path / "slower.wskt"),
        "--noise",
        str(tmp_path / "noise.wskt"),
        "--json",
        "-",
    )
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["distribution_shifts"] >= 3 and doc["align"] == "sequence"


def test_junit_report_is_read_by_junitparser(sample, tmp_path):
    """junitparser (an independent JUnit XML reader) sees one case per socket and class,
    and exactly the failed one."""
    from junitparser import Failure, JUnitXml

    path, k = write_status_mutant(sample, tmp_path)
    report = tmp_path / "report.xml"
    proc = run_cli("diff", str(TRACES / "sample.wskt"), str(path), "--junit", str(report))
    assert proc.returncode == 1
    xml = JUnitXml.fromfile(str(report))
    cases = [case for suite in xml for case in suite]
    assert len(cases) == 1 + 4 * 10  # the sockets case, then 4 sockets x 10 classes
    failed = [c for c in cases if any(isinstance(r, Failure) for r in c.result)]
    assert [(c.classname, c.name) for c in failed] == [("socket 1", "status")]
    assert f"call {k}" in failed[0].result[0].message


CHROMIUM = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-quic"]  # fmt: skip


def test_html_report_loads_in_headless_chromium_without_errors(sample, tmp_path):
    """The report opens offline in Chromium (Debian's, installed by .ci/run): its script
    ran (it marks the page rendered), no error reached window.onerror or console.error,
    and a screenshot is saved in this test's folder."""
    import shutil
    import subprocess

    assert shutil.which("chromium"), "Debian's chromium is needed (.ci/run installs it)"
    path, k = write_status_mutant(sample, tmp_path)
    report = tmp_path / "report.html"
    proc = run_cli("diff", str(TRACES / "sample.wskt"), str(path), "--html", str(report))
    assert proc.returncode == 1, proc.stderr
    page = report.read_text()
    assert "http://" not in page and "https://" not in page  # self-contained
    assert f"id='call-a-{k}'" in page and "<svg" in page
    url = report.as_uri()
    dom = subprocess.run(
        [*CHROMIUM, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-rendered="yes"' in dom.stdout
    assert "data-error" not in dom.stdout
    shot = tmp_path / "report.png"
    run = subprocess.run(
        [
            *CHROMIUM,
            f"--user-data-dir={tmp_path / 'profile-shot'}",
            "--enable-logging=stderr",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            url,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    assert "Uncaught" not in run.stderr


def test_dissect_names_the_changed_smb2_field(tmp_path):
    """One byte of an SMB2 request's MessageId changed: --dissect runs both packets through
    Wireshark's dissectors (pyshark, tshark) and lists smb2.msg_id and nothing else."""
    recorded = read_trace(TRACES / "smb2-inferred.wskt")
    mutated = copy.deepcopy(recorded)
    call = recorded.calls[5]
    message_id = call.stream_offset + 4 + 24  # NetBIOS header, then SMB2 header offset 24
    mutated.streams[(0, Direction.OUT)].data[message_id] ^= 0x03
    path = tmp_path / "mutated.wskt"
    write_trace(path, mutated)
    proc = run_cli(
        "diff",
        str(TRACES / "smb2-inferred.wskt"),
        str(path),
        "--align",
        "order",
        "--dissect",
        "--json",
        "-",
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [d["kind"] for d in doc["differences"]] == ["wire"]
    (item,) = doc["dissections"]
    assert item["offset"] == message_id
    assert item["fields"] == [{"field": "smb2.msg_id", "a": "5", "b": "6"}]


def test_sockets_can_be_paired_explicitly(sample, tmp_path):
    """Socket 1 of A diffed against socket 2 of B (and 2 against 1): everything differs
    there; without the map the same traces are equal."""
    swapped = tmp_path / "same.wskt"
    write_trace(swapped, sample)
    base = [str(TRACES / "sample.wskt"), str(swapped), "--align", "order", "--json", "-"]
    assert run_cli("diff", *base).returncode == 0
    proc = run_cli("diff", *base, "--map-socket", "1=2", "--map-socket", "2=1")
    assert proc.returncode == 1
    assert {d["socket"] for d in json.loads(proc.stdout)["differences"]} >= {1, 2}
    assert_one_line_error(run_cli("diff", *base, "--map-socket", "1-2"), "expected A=B")
    assert_one_line_error(run_cli("diff", *base, "--map-socket", "1=99"), "no socket 1 in A or 99")
