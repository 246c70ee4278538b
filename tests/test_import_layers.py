"""Every import between the package's parts points down the floors of docs/architecture.md:
a part may import its own modules and any part on a lower floor, never one on its own
floor or above. Read from the source (``ast``), so an import inside a function counts too.
Also what an import starts: no BLAS thread pool in the command line or the link forwarder.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys

import pytest

from .conftest import REPO

PACKAGE = REPO / "wskreplay"

FLOORS: list[set[str]] = [
    {"wskreplay", "errors", "_moved"},
    {"formats", "forking", "threads"},
    {"policies"},
    {"trace"},
    {"recorder", "diff"},
    {"replayer"},
    {"agent", "checking", "fidelity", "minimize", "generators"},
    {"pytest_plugin"},
    {"cli"},
    {"__main__"},
]  # fmt: skip
FLOOR = {part: n for n, parts in enumerate(FLOORS) for part in parts}
DEPRECATED_PATHS = {
    "wskreplay.agent.protocol",
    "wskreplay.synth",
    "wskreplay.fieldsim",
    "wskreplay.pacing_trace",
    "wskreplay.model",
    "wskreplay.tracefile",
    "wskreplay.spill",
    "wskreplay.digest",
    "wskreplay.summary",
    "wskreplay.console",
    "wskreplay.etwview",
}
"""Modules kept for one release at their old place, forwarding (with a warning) to where
their names live now: they point wherever their names went."""


def part_of(module: str) -> str:
    """``wskreplay.replayer.engine`` -> ``replayer``; the package itself -> ``wskreplay``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "wskreplay"


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every import of the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [(module, n, node.lineno) for n in names if n.split(".")[0] == "wskreplay"]
    return found


def test_every_part_has_a_floor():
    parts = {part_of(importer) for importer, _, _ in imports() if importer not in DEPRECATED_PATHS}
    parts |= {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
              if (p.suffix == ".py" or (p / "__init__.py").exists())
              and f"wskreplay.{p.stem}" not in DEPRECATED_PATHS}  # fmt: skip
    parts.discard("__init__")
    assert parts <= set(FLOOR), f"parts without a floor: {sorted(parts - set(FLOOR))}"


def test_imports_point_down_the_floors():
    upward = [
        f"{importer}:{line} imports {imported} ({part_of(imported)}, floor "
        f"{FLOOR[part_of(imported)]}; {part_of(importer)} is on floor {FLOOR[part_of(importer)]})"
        for importer, imported, line in imports()
        if part_of(importer) != part_of(imported)
        and importer not in DEPRECATED_PATHS
        and FLOOR[part_of(imported)] >= FLOOR[part_of(importer)]
    ]
    assert not upward, "\n".join(upward)


def test_the_check_finds_an_upward_import(tmp_path, monkeypatch):
    """The rule bites: the replayer importing the agent (what it did before the agent
    protocol's wire moved to formats) is reported."""
    fake = tmp_path / "wskreplay"
    (fake / "replayer").mkdir(parents=True)
    (fake / "replayer" / "__init__.py").write_text("from wskreplay.agent import server\n")
    (fake / "agent").mkdir()
    (fake / "agent" / "__init__.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    try:
        test_imports_point_down_the_floors()
    except AssertionError as exc:
        assert "wskreplay.replayer:1 imports wskreplay.agent (agent, floor 6" in str(exc)
    else:
        raise AssertionError("an upward import went unnoticed")


def test_the_old_path_of_the_agent_protocol_forwards_with_a_warning():
    from wskreplay.agent import protocol, server
    from wskreplay.formats import agentwire
    from wskreplay.replayer.targets import agent

    for name, home in (("read_token", agentwire), ("Channel", agentwire),
                       ("event_to_wire", server), ("event_from_wire", agent)):  # fmt: skip
        with pytest.warns(DeprecationWarning, match=home.__name__):
            assert getattr(protocol, name) is getattr(home, name)
    with pytest.raises(AttributeError):
        protocol.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("model", "Trace", "wskreplay.trace.model"),
        ("model", "CallTable", "wskreplay.trace.model"),
        ("tracefile", "read_trace", "wskreplay.trace"),
        ("tracefile", "TraceReader", "wskreplay.trace"),
        ("tracefile", "recover", "wskreplay.trace"),
        ("spill", "StreamSink", "wskreplay.trace.spill"),
        ("digest", "file_sha256", "wskreplay.trace.digest"),
        ("summary", "trace_info", "wskreplay.trace.summary"),
        ("console", "print_info", "wskreplay.cli.console"),
        ("etwview", "etl_summary", "wskreplay.cli.etwview"),
        ("synth", "synth_trace", "wskreplay.generators.synth"),
        ("fieldsim", "FieldRecording", "wskreplay.generators.fieldsim"),
        ("pacing_trace", "pacing_trace", "wskreplay.generators.pacing_trace"),
    ],
)
def test_moved_modules_forward_with_a_warning(old, name, new):
    module = importlib.import_module(f"wskreplay.{old}")
    with pytest.warns(DeprecationWarning, match=new):
        assert getattr(module, name) is getattr(importlib.import_module(new), name)


def _run(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


THREADS = "import os; print(len(os.listdir('/proc/self/task')))"


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_the_command_line_and_the_link_forwarder_start_no_blas_threads():
    """numpy's OpenBLAS starts a thread per further core, which spins for about 0.1 s of
    CPU after the import; nothing of ours multiplies matrices. The command line turns it
    off before numpy is imported (its children inherit that), and the link forwarder, which
    shares the cores with the replay's sender, does not import numpy at all."""
    if (os.cpu_count() or 1) > 1:
        assert int(_run(f"import numpy; {THREADS}")) > 1, "this numpy starts no BLAS threads"
    assert _run(f"import wskreplay.cli, numpy; {THREADS}") == "1"
    forwarder = "import sys, wskreplay.replayer.link_forwarder; print('numpy' in sys.modules)"
    assert _run(forwarder) == "False"


def test_the_command_line_imports_no_capture_decoder_until_a_command_needs_one():
    """Start-up: a command on traces (replay, diff, info, ...) never pays for the capture
    decoders (about 80 ms); ``streams`` and ``import`` import them when they run."""
    heavy = ("wskreplay.recorder.tcp", "wskreplay.formats.pcap", "wskreplay.formats.layers.decode")
    loaded = _run(f"import sys, wskreplay.cli; print(sorted(set({heavy!r}) & set(sys.modules)))")
    assert loaded == "[]"
