"""The suite's xdist groups take effect: `bin/test` runs `pytest -n auto --dist loadgroup`, and the tests that
share one pcscd (group "pcsc") or read one Redis queue (group "redis-db14-cms-queue") rely on each group
running on one worker, one test at a time. With pytest 9.2 and pytest-xdist 3.8 that silently stopped
(pytest-xdist issue #1386: the marks are ignored, the tests spread over the workers); requirements-dev.txt
keeps pytest below 9.2 and this test says so if an upgrade breaks it again."""
from __future__ import annotations

import os
import re
import subprocess
import sys

GROUPED = """
import pytest

pytestmark = pytest.mark.xdist_group("shared")

@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    pass
"""


def test_tests_of_one_xdist_group_run_on_one_worker(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_a.py").write_text(GROUPED)
    (tmp_path / "test_b.py").write_text(GROUPED)
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTEST_ADDOPTS")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                          "-p", "no:django", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = run.stdout[-3000:]
    assert run.returncode == 0, out + run.stderr[-3000:]
    placed = re.findall(r"\[(gw\d+)\] .*PASSED .*::test_grouped\[\d\](@shared)?", run.stdout)
    assert len(placed) == 12, out
    assert {suffix for _, suffix in placed} == {"@shared"}, "the group mark was ignored:\n" + out
    assert len({worker for worker, _ in placed}) == 1, "one group ran on several workers:\n" + out
