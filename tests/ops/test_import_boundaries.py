"""What import-linter cannot express: the protocol, simulator and agent packages use no Django integration of
Celery (import-linter forbids only top-level external packages, and Celery itself is allowed: the agent
is a Celery worker)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("celery.contrib.django", "celery.fixups.django", "django_celery_beat", "django_celery_results")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("package", ["cardproto", "cardsim", "readeragent"])
def test_package_uses_no_django_integration_of_celery(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        text = path.read_text()
        bad = {name for name in _imports(path) if name.startswith(FORBIDDEN)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        assert "django.conf:settings" not in text, f"{path.relative_to(ROOT)} configures Celery from Django"
