"""Issue 6 summary: prints the figures the proof tests wrote into test-artifacts/proof/*.json (one file per
category: cases tried, faults injected, failures found and fixed), so the closing note quotes a run.

    .venv/bin/python bench/proof_report.py            # after tests/hygiene and tests/faults ran
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "proof"
FIGURES = ("cases", "faults_injected", "failures_found", "failures_fixed", "keys", "forms_per_key", "sources",
           "bytes_scanned", "redis_commands_seen", "hits", "recovered", "wrong_key_authentications")


def main() -> int:
    files = sorted(ARTIFACTS.glob("*.json"))
    if not files:
        print(f"no figures in {ARTIFACTS}: run tests/hygiene and tests/faults first", file=sys.stderr)
        return 1
    for path in files:
        data = json.loads(path.read_text())
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(data.get("at", 0)))
        print(f"{data['category']}  ({when})")
        for name in FIGURES:
            if name in data:
                print(f"  {name:28} {data[name]}")
        for name, value in data.items():
            if name not in (*FIGURES, "category", "at") and not isinstance(value, (list, dict)):
                print(f"  {name:28} {value}")
        if data.get("cases_detail"):
            for case in data["cases_detail"]:
                print(f"    {case}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
