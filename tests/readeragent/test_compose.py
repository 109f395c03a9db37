"""docker-compose.yml's agent service: the station entry point, the broker, and no CMS secret at all."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_agent_service_runs_the_station_agent_without_cms_secrets():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    agent = compose["services"]["agent"]
    argv = agent["command"]
    assert argv[:3] == ["python", "-m", "readeragent"] and argv[3] == "run"
    assert (ROOT / "readeragent" / "__main__.py").exists()
    assert set(agent["environment"]) == {"CMS_BROKER_URL", "CMS_AGENT_HOME"}
    assert not agent.get("secrets")  # no Vault token, database URL or secret key on a station
    assert any(volume.startswith("agent-home:") for volume in agent["volumes"])
    assert "agent-home" in compose["volumes"]
    assert agent["build"] == "."
