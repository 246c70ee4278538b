"""The JSON report: ``DiffResult.as_json()`` with the two traces' names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wskreplay.diff.compare import DiffResult


def write_json(result: DiffResult, path: str, *, a: str, b: str) -> None:
    write_json_doc({"a": a, "b": b, **result.as_json()}, path)


def write_json_doc(doc: dict[str, Any], path: str) -> None:
    """``doc`` as indented JSON to ``path``, or to stdout when ``path`` is ``-``."""
    text = json.dumps(doc, indent=1) + "\n"
    if path == "-":
        print(text, end="")
    else:
        Path(path).write_text(text, encoding="utf-8")
