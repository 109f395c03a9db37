"""Issue 6 summary: prints the figures the proof tests wrote into test-artifacts/proof/*.json (one file per
category: cases tried, faults injected, failures found and fixed), so the closing note quotes a run.

    .venv/bin/python bench/proof_report.py            # after tests/hygiene and tests/faults ran

Tests split in parts (xdist shards: tests/api/test_schemathesis.py, tests/cardproto/test_hostile_answers.py)
write one file per part with a "group"; the group is printed once, its figures summed.
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
    groups: dict[str, list[dict]] = {}
    for path in files:
        data = json.loads(path.read_text())
        if data.get("group"):  # one test split in parts (xdist shards): printed once, summed
            groups.setdefault(data["group"], []).append(data)
            continue
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
    for group, parts in groups.items():
        _print_group(group, parts)
    return 0


def _print_group(group: str, parts: list[dict]) -> None:
    """A test split in parts: numeric figures summed, each operation's answers merged, lists printed once."""
    first, last = min(p.get("at", 0) for p in parts), max(p.get("at", 0) for p in parts)
    print(f"{group}  ({len(parts)} parts, {time.strftime('%Y-%m-%d %H:%M', time.gmtime(first))} .. "
          f"{time.strftime('%H:%M UTC', time.gmtime(last))})")
    totals: dict[str, int] = {}
    texts: dict[str, str] = {}
    merged: dict[str, dict[str, int]] = {}
    lists: dict[str, list] = {}
    for part in parts:
        for name, value in part.items():
            if name in ("category", "at", "group"):
                continue
            if isinstance(value, bool) or isinstance(value, str):
                texts.setdefault(name, str(value))
            elif isinstance(value, int):
                totals[name] = totals.get(name, 0) + value
            elif isinstance(value, list):
                lists.setdefault(name, value)
            elif isinstance(value, dict):
                for key, inner in value.items():
                    if isinstance(inner, dict):  # {operation: {answer: count}}
                        slot = merged.setdefault(f"{name} {key}", {})
                        for answer, count in inner.items():
                            slot[answer] = slot.get(answer, 0) + count
                    else:
                        slot = merged.setdefault(name, {})
                        slot[key] = slot.get(key, 0) + inner
    for name in (*FIGURES, *sorted(set(totals) - set(FIGURES))):
        if name in totals:
            print(f"  {name:28} {totals[name]}")
    for name, value in texts.items():
        print(f"  {name:28} {value}")
    print(f"  {'parts':28} " + ", ".join(f"{p['category']} {p.get('cases', '?')}" for p in parts))
    for name, counts in sorted(merged.items()):
        answers = ", ".join(f"{answer} x{count}" for answer, count in sorted(counts.items()))
        print(f"    {name}: {sum(counts.values())} ({answers})")
    for name, values in lists.items():
        for value in values:
            print(f"    {name}: {value}")


if __name__ == "__main__":
    sys.exit(main())
