"""Renderers of a :class:`~wskreplay.diff.DiffResult`: the terminal (``terminal``), the
documented JSON report (``DiffResult.as_json``, written by ``write_json``) and JUnit XML
(``junit``)."""

from wskreplay.diff.report.json_report import write_json
from wskreplay.diff.report.junit import junit_xml, write_junit
from wskreplay.diff.report.terminal import print_diff, verdict

__all__ = ["junit_xml", "print_diff", "verdict", "write_json", "write_junit"]
