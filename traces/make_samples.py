"""Rebuild the sample recordings and traces in traces/ (run from the repository root):

    python traces/make_samples.py

- field.etl: a synthetic field recording in the real ETL layout (WskReplay.Recorder events
  plus PktMon packets, XPRESS-compressed buffers), from wskreplay/generators/fieldsim.py, seed 7;
- field.wskt: ``wskreplay import traces/field.etl``;
- smb2-inferred.wskt: ``wskreplay import --infer-calls`` of the SMB2 capture in captures/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wskreplay.generators import fieldsim

HERE = Path(__file__).resolve().parent
SMB2_CAPTURE = HERE / "captures" / "suricata-verify__smb2-01_smb2-peter.pcap"
FIELD_SEED, FIELD_BULK_CALLS = 7, 2


def wskreplay(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "wskreplay", *args], check=True, stdout=subprocess.DEVNULL
    )


def make_field_etl(path: Path) -> None:
    rec = fieldsim.field_recording(seed=FIELD_SEED, bulk_calls=FIELD_BULK_CALLS)
    with open(path, "wb") as f:
        fieldsim.write_field_etl(rec, f, compress=True)


def main(out: Path = HERE) -> None:
    out.mkdir(parents=True, exist_ok=True)
    make_field_etl(out / "field.etl")
    wskreplay("import", str(out / "field.etl"), "-o", str(out / "field.wskt"), "--no-progress")
    wskreplay(
        "import",
        "--infer-calls",
        str(SMB2_CAPTURE),
        "-o",
        str(out / "smb2-inferred.wskt"),
        "--no-progress",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
