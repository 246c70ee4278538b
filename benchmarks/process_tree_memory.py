"""Peak memory of a command and the processes it forks, taken together.

    python benchmarks/process_tree_memory.py wskreplay replay --jobs 2 TRACE -o OUT

Samples ``/proc/PID/smaps_rollup`` of the command and its children every 5 ms: each
process's private memory, plus the memory they share counted once (the largest shared
figure of any of them). ``ru_maxrss`` would count a forked worker's shared pages again in
each process. Prints the peak of that sum, and the command's own peak RSS.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import children_of  # noqa: E402


def rollup(pid: int) -> dict[str, int] | None:
    fields: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
    peak_all = peak_own = 0
    while proc.poll() is None:
        each = [r for r in map(rollup, [proc.pid, *children_of(proc.pid)]) if r]
        if each:
            private = sum(r["Private_Clean"] + r["Private_Dirty"] for r in each)
            shared = max(r["Shared_Clean"] + r["Shared_Dirty"] for r in each)
            peak_all = max(peak_all, private + shared)
            peak_own = max(peak_own, each[0]["Rss"])
        time.sleep(0.005)
    if proc.returncode:
        raise SystemExit(f"the command failed with status {proc.returncode}")
    print(
        f"peak of all its processes: {peak_all / 1024:,.0f} MiB (private, and shared once); "
        f"the command's own peak RSS: {peak_own / 1024:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
