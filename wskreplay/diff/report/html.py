"""The HTML report: one self-contained file (inline CSS, SVG and a few lines of script, no
network) with the verdict, the counts, the differences linked to their calls, latency CDFs
of both traces and a timeline per socket of calls, completions and segments."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from wskreplay.diff.compare import DiffResult
from wskreplay.diff.distributions import METRICS, latencies
from wskreplay.diff.report.terminal import verdict
from wskreplay.diff.wire import first_wire_ns
from wskreplay.formats import ntstatus as nt
from wskreplay.trace.model import Direction, Trace

TIMELINE_CALLS = 60
"""Calls drawn per socket timeline (the first ones, and those around a difference)."""
COLORS = {"a": "#1f77b4", "b": "#ff7f0e"}

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.verdict { padding: .6em 1em; border-radius: 4px; font-weight: bold; }
.equal { background: #e6f4ea; color: #1e6b34; } .different { background: #fce8e6; color: #a50e0e; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:target { background: #fff6cc; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: 1em; height: .6em; margin-right: .3em; }
svg { background: #fcfcfc; border: 1px solid #ddd; }
.muted { color: #777; }
"""

SCRIPT = """
window.onerror = function (message) { document.documentElement.dataset.error = String(message); };
var reportError = console.error;
console.error = function () {
  document.documentElement.dataset.error = Array.prototype.join.call(arguments, " ");
  reportError.apply(console, arguments);
};
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("toggle-tolerated");
  var section = document.getElementById("tolerated");
  if (button && section) {
    button.addEventListener("click", function () { section.hidden = !section.hidden; });
  }
  document.body.dataset.rendered = "yes";
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cdf_svg(title: str, a: np.ndarray, b: np.ndarray, width: int = 520, height: int = 240) -> str:
    """Both traces' cumulative distributions of one latency (us on x)."""
    if not len(a) and not len(b):
        return f"<p class='muted'>{_e(title)}: no values</p>"
    both = np.concatenate([a, b]).astype(np.float64) / 1000
    hi = float(np.quantile(both, 0.995)) or 1.0
    left, bottom, plot_w, plot_h = 50, 30, width - 70, height - 50
    parts = [f"<svg width='{width}' height='{height}' role='img' aria-label='{_e(title)}'>"]
    parts.append(f"<text x='{left}' y='16' font-size='13'>{_e(title)}</text>")
    parts.append(
        f"<line x1='{left}' y1='{height - bottom}' x2='{left + plot_w}' y2='{height - bottom}' "
        "stroke='#999'/>"
        f"<line x1='{left}' y1='{height - bottom}' x2='{left}' y2='{height - bottom - plot_h}' "
        "stroke='#999'/>"
    )
    for k in range(5):
        x = left + plot_w * k / 4
        parts.append(
            f"<text x='{x:.0f}' y='{height - bottom + 16}' font-size='11' text-anchor='middle'>"
            f"{hi * k / 4:.3g}</text>"
        )
    parts.append(
        f"<text x='{left + plot_w}' y='{height - 4}' font-size='11' text-anchor='end'>us</text>"
    )
    for side, values in (("a", a), ("b", b)):
        if not len(values):
            continue
        xs = np.sort(values.astype(np.float64) / 1000)
        ys = np.arange(1, len(xs) + 1) / len(xs)
        step = max(len(xs) // 400, 1)
        points = " ".join(
            f"{left + plot_w * min(x / hi, 1):.1f},{height - bottom - plot_h * y:.1f}"
            for x, y in zip(xs[::step], ys[::step], strict=True)
        )
        parts.append(
            f"<polyline fill='none' stroke='{COLORS[side]}' stroke-width='1.5' points='{points}'/>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _timeline_svg(trace: Trace, sid: int, index: np.ndarray, side: str, width: int = 900) -> str:
    """The socket's first calls as bars from issue to completion, and its outbound data
    segments as ticks, on one time axis."""
    calls, seg = trace.calls, trace.segments
    index = index[:TIMELINE_CALLS]
    if not len(index):
        return "<p class='muted'>no calls</p>"
    issue = calls.column("issue_ns")[index].astype(np.int64)
    done = np.where(
        calls.column("completed")[index] == 1,
        calls.column("completion_ns")[index].astype(np.int64),
        issue,
    )
    t0, t1 = int(issue.min()), int(max(done.max(), issue.max()) + 1)
    rows = (
        (seg.column("socket") == sid)
        & (seg.column("direction") == int(Direction.OUT))
        & (seg.column("length") > 0)
        & (seg.column("time_ns") >= t0)
        & (seg.column("time_ns") <= t1)
    )
    seg_t = seg.column("time_ns")[rows].astype(np.int64)
    height = 24 + 6 * len(index)
    span = max(t1 - t0, 1)

    def x(t: int) -> float:
        return 10 + (width - 20) * (t - t0) / span

    parts = [f"<svg width='{width}' height='{height}'>"]
    for t in seg_t[:2000].tolist():
        parts.append(f"<line x1='{x(t):.1f}' y1='2' x2='{x(t):.1f}' y2='12' stroke='#888'/>")
    for k, (i, a, z) in enumerate(zip(index.tolist(), issue.tolist(), done.tolist(), strict=True)):
        y = 18 + 6 * k
        status = int(calls.column("completion_status")[i])
        color = COLORS[side] if nt.is_success(status) else "#d62728"
        parts.append(
            f"<a href='#call-{side}-{i}'><rect x='{x(a):.1f}' y='{y}' "
            f"width='{max(x(z) - x(a), 1.5):.1f}' height='4' fill='{color}'>"
            f"<title>call {i}: {int(calls.column('length')[i])} bytes, "
            f"{_e(nt.describe(status))}</title></rect></a>"
        )
    parts.append("</svg>")
    return "".join(parts)


def html_report(result: DiffResult, a: Trace, b: Trace, *, a_name: str, b_name: str) -> str:
    doc = result.as_json()
    state = "equal" if result.equal else "different"
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>wskreplay diff: {_e(verdict(result))}</title>",
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
        "<h1>wskreplay diff</h1>",
        f"<p class='verdict {state}' id='verdict'>{_e(verdict(result))}</p>",
        f"<p>A: <code>{_e(a_name)}</code><br>B: <code>{_e(b_name)}</code> "
        f"<span class='muted'>(calls aligned {_e(result.align)})</span></p>",
        "<h2>Counts</h2><table>",
    ]
    for key in (
        "calls_compared",
        "status_mismatches",
        "timing_violations",
        "distribution_shifts",
        "wire_mismatches",
        "inserted",
        "removed",
        "unmatched_sockets",
        "segmentation_differences",
    ):
        out.append(f"<tr><th>{_e(key.replace('_', ' '))}</th><td>{doc[key]}</td></tr>")
    unknown = doc["not_compared"]
    out.append(
        f"<tr><th>not compared: completions</th><td>{unknown['completions']}</td></tr>"
        f"<tr><th>not compared: stream bytes</th><td>{unknown['stream_bytes']}</td></tr>"
    )
    out.append("</table><h2>Differences</h2>")
    if result.differences:
        out.append(
            "<table><tr><th>class</th><th>first call</th><th>differences</th><th>what</th>"
            "<th>depends on</th></tr>"
        )
        for k, run in enumerate(result.runs):
            r = run.as_dict()
            first = "" if run.first is None else f"<a href='#call-a-{run.first}'>{run.first}</a>"
            out.append(
                f"<tr id='d{k}'><td>{_e(run.kind)}</td><td>{first}</td>"
                f"<td>{r['differences']}</td><td>{_e(r['summary'])}</td>"
                f"<td>{_e(r['depends_on'] or '')}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append("<p>None: within tolerance.</p>")
    if result.tolerated:
        out.append(
            f"<p><button id='toggle-tolerated'>tolerated ({len(result.tolerated)})</button></p>"
            "<div id='tolerated' hidden><table>"
        )
        for d in result.tolerated:
            out.append(f"<tr><td>{_e(d.kind)}</td><td>{_e(d.detail)}</td></tr>")
        out.append("</table></div>")
    out.append(
        "<h2>Latencies</h2><p class='legend'>"
        f"<span><i class='swatch' style='background:{COLORS['a']}'></i>A</span>"
        f"<span><i class='swatch' style='background:{COLORS['b']}'></i>B</span></p>"
    )
    wire_a, wire_b = first_wire_ns(a), first_wire_ns(b)
    for metric, title in METRICS.items():
        out.append(
            _cdf_svg(
                f"{title} (CDF)",
                latencies(a, metric, wire_a, None),
                latencies(b, metric, wire_b, None),
            )
        )
    out.append(
        "<h2>Timelines</h2><p class='muted'>Per socket, the first calls from issue to "
        "completion (red: failed), outbound data segments as ticks above.</p>"
    )
    for sid in sorted(a.sockets):
        out.append(f"<h3>socket {sid}</h3>")
        for side, trace in (("a", a), ("b", b)):
            if sid in trace.sockets:
                index = np.flatnonzero(trace.calls.column("socket") == sid)
                out.append(f"<p>{side.upper()}</p>{_timeline_svg(trace, sid, index, side)}")
    out.append(
        "<h2>Calls with differences</h2><table><tr><th>trace</th><th>call</th>"
        "<th>socket</th><th>length</th><th>returned</th><th>completed</th></tr>"
    )
    shown = sorted(
        {("a", d.call_a) for d in result.differences if d.call_a is not None}
        | {("b", d.call_b) for d in result.differences if d.call_b is not None}
    )
    for side, i in shown:
        call = (a if side == "a" else b).calls[i]
        completion = (
            nt.describe(call.completion_status)
            if call.completed
            else "unknown"
            if call.completion_unknown
            else "never"
        )
        out.append(
            f"<tr id='call-{side}-{i}'><td>{side.upper()}</td><td>{i}</td><td>{call.socket}</td>"
            f"<td>{call.length}</td><td>{_e(nt.describe(call.status))}</td>"
            f"<td>{_e(completion)}</td></tr>"
        )
    out.append("</table></body></html>\n")
    return "".join(out)


def write_html(
    result: DiffResult, path: str, a: Trace, b: Trace, *, a_name: str, b_name: str
) -> None:
    Path(path).write_text(html_report(result, a, b, a_name=a_name, b_name=b_name), encoding="utf-8")
