"""The JUnit XML report, for CI systems: one test case per socket and class of difference
(and one for the sockets themselves), failed when the diff counted a difference there."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from wskreplay.diff.compare import KINDS, DiffResult

PER_SOCKET = [kind for kind in KINDS if kind != "socket"]


def junit_xml(result: DiffResult, *, a: str, b: str, sockets: list[int]) -> str:
    """The report as a string; ``sockets`` are A's sockets (every one gets its cases)."""
    cases: list[tuple[str, str, list[str]]] = [
        ("sockets", "matched", [d.detail for d in result.differences if d.kind == "socket"])
    ]
    scopes: list[int | None] = [*sockets, None]
    for sid in scopes:
        classname = "all sockets" if sid is None else f"socket {sid}"
        for kind in PER_SOCKET:
            found = [d.detail for d in result.differences if d.kind == kind and d.socket == sid]
            if sid is None and not found:
                continue
            cases.append((classname, kind, found))
    failures = sum(1 for *_, found in cases if found)
    suites = ET.Element(
        "testsuites", name="wskreplay diff", tests=str(len(cases)), failures=str(failures)
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"{b} vs {a}",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in result.not_compared.items():
        ET.SubElement(properties, "property", name=f"not_compared.{key}", value=str(value))
    for classname, name, found in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
        if found:
            failure = ET.SubElement(
                case, "failure", message=f"{len(found)} difference(s): {found[0]}", type=name
            )
            failure.text = "\n".join(found)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(result: DiffResult, path: str, *, a: str, b: str, sockets: list[int]) -> None:
    Path(path).write_text(junit_xml(result, a=a, b=b, sockets=sockets), encoding="utf-8")
