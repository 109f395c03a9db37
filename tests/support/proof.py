"""Figures the reliability and security proof tests write for `bench/proof_report.py` (issue 6): one JSON
file per category under test-artifacts/proof/, replaced by each run."""
from __future__ import annotations

import json
import time
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "proof"


def record(category: str, figures: dict) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{category}.json"
    path.write_text(json.dumps({"category": category, "at": int(time.time()), **figures}, indent=1,
                               default=str))
    return path
