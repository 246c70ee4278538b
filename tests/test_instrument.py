"""instrument/: the C header is valid C (mingw syntax check against mingw-w64's ntddk.h and
the stand-ins in testdriver/mingw/), emits exactly the contract's events and fields, and the
WPR profile enables the contract's provider."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from wskreplay.formats.etl_packets import NDIS_PROVIDER
from wskreplay.recorder import etw_schema

from .conftest import REPO

HEADER = REPO / "instrument" / "wskreplay_recorder.h"
STUBS = REPO / "tests" / "wdk-stubs"
MINGW_STANDINS = REPO / "testdriver" / "mingw"
"""mingw-w64 has no wsk.h nor TraceLoggingProvider.h: the test driver's stand-ins."""
MINGW_STANDINS = REPO / "testdriver" / "mingw"
MINGW = "x86_64-w64-mingw32-gcc"
MINGW_DDK = "/usr/x86_64-w64-mingw32/include/ddk"
IN_TYPES = {
    "UInt8": etw_schema.U8,
    "UInt16": etw_schema.U16,
    "UInt32": etw_schema.U32,
    "UInt64": etw_schema.U64,
    "HexUInt64": etw_schema.HEX64,
    "Binary": etw_schema.BINARY,
}


def mingw_syntax_check(source, *defines: str) -> subprocess.CompletedProcess:
    """Debian's gcc-mingw-w64-x86-64 keeps mingw-w64's DDK headers (ntddk.h) here."""
    cmd = [
        MINGW,
        "-fsyntax-only",
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wno-multichar",
        "-Wno-unused-parameter",
        "-isystem",
        MINGW_DDK,
        "-I",
        str(HEADER.parent),
        "-I",
        str(MINGW_STANDINS),
        *defines,
        str(source),
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_header_is_valid_c_for_mingw():
    proc = mingw_syntax_check(STUBS / "check_recorder.c")
    assert proc.returncode == 0, proc.stderr


def test_the_check_catches_a_wrong_field_type(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text(
        '#define WSKREPLAY_RECORDER_IMPLEMENTATION\n#include "wskreplay_recorder.h"\n'
        "void F(PWSK_SOCKET s) { WSK_BUF b = {0}; "
        'TraceLoggingWrite(g_WskReplayProvider, "X", TraceLoggingUInt64(b, "Length")); }\n'
    )
    proc = mingw_syntax_check(bad)
    assert proc.returncode != 0 and "incompatible type" in proc.stderr


def test_payload_cap_above_the_binary_limit_is_refused():
    proc = mingw_syntax_check(STUBS / "check_recorder.c", "-DWSKREPLAY_PAYLOAD_CAP=70000")
    assert proc.returncode != 0 and "at most 65535" in proc.stderr


def header_events() -> dict[str, list[tuple[str, int]]]:
    text = HEADER.read_text()
    events = {}
    for match in re.finditer(
        r'TraceLoggingWrite\(\s*g_WskReplayProvider,\s*"(\w+)",(.*?)\);', text, re.S
    ):
        fields = re.findall(r'TraceLogging(\w+)\((?:[^()]|\([^()]*\))*?"(\w+)"\)', match.group(2))
        events[match.group(1)] = [(name, IN_TYPES[macro]) for macro, name in fields]
    return events


def test_header_emits_exactly_the_contract():
    assert header_events() == etw_schema.EVENTS


def test_header_names_the_provider_and_guid():
    text = HEADER.read_text()
    assert f'"{etw_schema.PROVIDER_NAME}"' in text
    g = etw_schema.PROVIDER_GUID.replace("-", "")
    parts = [g[0:8], g[8:12], g[12:16], *[g[k : k + 2] for k in range(16, 32, 2)]]
    assert "(" + ", ".join(f"0x{p}" for p in parts) + ")" in re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("profile", ["WskReplay.Verbose.File", "WskReplay.Verbose.Memory"])
def test_wpr_profile_enables_the_provider_and_packets(profile):
    root = ET.parse(REPO / "instrument" / "wskreplay.wprp").getroot()
    providers = {p.get("Id"): p.get("Name") for p in root.iter("EventProvider")}
    assert etw_schema.PROVIDER_GUID in providers.values()
    assert NDIS_PROVIDER in providers.values()
    ids = {p.get("Id") for p in root.iter("Profile")}
    assert profile in ids
    base = next(p for p in root.iter("Profile") if p.get("Id") == "WskReplay.Verbose.File")
    enabled = {e.get("Value") for e in base.iter("EventProviderId")}
    assert {providers[i] for i in enabled} == {etw_schema.PROVIDER_GUID, NDIS_PROVIDER}


def test_pktmon_script_records_the_provider_with_whole_packets():
    script = (REPO / "instrument" / "record-with-pktmon.cmd").read_text()
    start = next(line for line in script.splitlines() if line.startswith("pktmon start"))
    assert f"-p {etw_schema.PROVIDER_NAME}" in start
    assert "--capture" in start and "--pkt-size 0" in start
    assert start in (REPO / "docs" / "recording.md").read_text()
