"""The JSON report: ``DiffResult.as_json()`` with the two traces' names."""

from __future__ import annotations

import json
from pathlib import Path

from wskreplay.diff.compare import DiffResult


def write_json(result: DiffResult, path: str, *, a: str, b: str) -> None:
    doc = {"a": a, "b": b, **result.as_json()}
    text = json.dumps(doc, indent=1) + "\n"
    if path == "-":
        print(text, end="")
    else:
        Path(path).write_text(text, encoding="utf-8")
