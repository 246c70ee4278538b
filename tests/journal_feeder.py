"""What ``wskreplay record``'s writer does, fed from a real recording instead of a live ETW
session: the recorder events of an .etl appended to a journal at a steady pace. After each
block reaches the OS it prints how many events are written, so a test that kills this
process knows what must survive.

    python tests/journal_feeder.py RECORDING.etl JOURNAL [--pace-us 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wskreplay.recorder.etw_schema import read_recorder_events  # noqa: E402
from wskreplay.recorder.journal import JournalWriter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recording")
    ap.add_argument("journal")
    ap.add_argument("--pace-us", type=float, default=50.0)
    ap.add_argument("--flush-events", type=int, default=64)
    args = ap.parse_args()
    events = read_recorder_events(args.recording)
    print(f"events {len(events)}", flush=True)
    reported = 0
    with JournalWriter(
        args.journal, qpc_frequency=10_000_000, flush_events=args.flush_events
    ) as journal:
        for ev in events:
            journal.append(ev)
            if journal.written != reported:
                reported = journal.written
                print(f"written {reported}", flush=True)
            time.sleep(args.pace_us / 1e6)
    print(f"written {journal.written}", flush=True)
    print("closed", flush=True)


if __name__ == "__main__":
    main()
