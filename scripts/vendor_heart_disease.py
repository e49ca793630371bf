"""Vendor the four UCI Heart Disease files as JSON (a file type Flower's app bundle keeps).

Usage: python scripts/vendor_heart_disease.py SOURCE_DIR

Each hospital's file is stored as its list of raw text lines, so the original bytes (and
their MD5, recorded beside them) can be reproduced exactly from the JSON.
"""

import hashlib
import json
import sys
from pathlib import Path

FILES = {
    "cleveland": "processed.cleveland.data",
    "hungary": "processed.hungarian.data",
    "switzerland": "processed.switzerland.data",
    "va": "processed.va.data",
}


def main(source: Path) -> None:
    """Write common/tasks/data/heart_disease.json from the UCI files in `source`."""
    hospitals = {}
    for name, filename in FILES.items():
        raw = (source / filename).read_bytes()
        hospitals[name] = {
            "file": filename,
            "md5": hashlib.md5(raw).hexdigest(),
            "lines": raw.decode("ascii").splitlines(),
        }
    target = (Path(__file__).resolve().parents[1] / "common" / "tasks" / "data"
              / "heart_disease.json")
    document = {"source": "UCI Heart Disease (CC BY 4.0)", "hospitals": hospitals}
    target.write_text(json.dumps(document, indent=0))
    print(f"wrote {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
