"""Renderers of a :class:`~wskreplay.diff.DiffResult`: the terminal (``terminal``) and the
documented JSON report (``DiffResult.as_json``, written by ``write_json``)."""

from wskreplay.diff.report.json_report import write_json
from wskreplay.diff.report.terminal import print_diff, verdict

__all__ = ["print_diff", "verdict", "write_json"]
