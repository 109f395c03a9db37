"""The README stays true: its Quickstart is two commands, and its configuration table names exactly what
the CMS reads from the environment: cms/settings.py, plus the few cms/ modules that read a variable at
the point of use (runstack's worker pool size, the fault-injection points)."""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def test_quickstart_is_exactly_two_commands_in_two_code_blocks():
    blocks = re.findall(r"^```\n(.*?)^```", _section("Quickstart"), re.M | re.S)
    assert [block.strip() for block in blocks] == ["bin/start", "bin/test"]
    for command in ("bin/start", "bin/test"):
        assert os.access(ROOT / command, os.X_OK), command


def test_ci_runs_the_readme_test_command():
    assert "exec bin/test" in (ROOT / ".ci/run").read_text()


def _read_outside_settings() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "cms").glob("*.py"):
        if path.name != "settings.py":
            names |= set(re.findall(r'environ\.get\("([A-Z][A-Z0-9_]+)"', path.read_text()))
    return names


def test_configuration_table_matches_the_settings():
    source = (ROOT / "cms/settings.py").read_text()
    read = set(re.findall(r'\benv(?:bool|int|list|secret)?\("([A-Z][A-Z0-9_]+)"', source))
    table = _section("Configuration").split("### Production")[0]
    documented = {name for row in table.splitlines() if row.startswith("| `")
                  for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    assert read - documented == set(), "read by settings.py but missing from the README table"
    assert documented - read - _read_outside_settings() == set(), "in the README table but read nowhere"
    assert {"CMS_WORKER_CONCURRENCY", "CMS_FAILPOINTS"} <= documented & _read_outside_settings()
