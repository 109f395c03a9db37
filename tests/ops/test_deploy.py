"""Deployment promises: production settings pass Django's deploy checks; compose names real entry points."""
from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "CMS_ENVIRONMENT": "production",
    "ALLOWED_HOSTS": "cms.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://cms.example.com",
    "VAULT_ADDR": "https://vault.example.com:8200",
}


def _run_manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CMS_"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_passes_with_documented_production_environment(tmp_path):
    (tmp_path / "secret_key").write_text(secrets.token_urlsafe(50))
    (tmp_path / "vault_token").write_text("s.example-token")
    env = {**PRODUCTION_ENV,
           "SECRET_KEY_FILE": str(tmp_path / "secret_key"),
           "VAULT_TOKEN_FILE": str(tmp_path / "vault_token"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    result = _run_manage(["check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_secret_key(tmp_path):
    env = {**PRODUCTION_ENV, "VAULT_TOKEN": "x", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    result = _run_manage(["check"], env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr.splitlines()[-1]


def test_production_refuses_to_start_without_vault_auth(tmp_path):
    env = {**PRODUCTION_ENV, "SECRET_KEY": secrets.token_urlsafe(50),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    result = _run_manage(["check"], env)
    assert result.returncode != 0
    assert "Vault auth" in result.stderr


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_every_cms_role_from_the_project_image():
    assert {"web", "worker", "beat", "migrate"} <= set(CMS_SERVICES)


def test_compose_has_every_role():
    services = _compose()["services"]
    for name in ("postgres", "redis", "vault", "web", "worker", "beat"):
        assert name in services, name


def _django_commands() -> set[str]:
    from django.core.management import get_commands

    return set(get_commands())


CMS_SERVICES = [name for name, service in _compose()["services"].items()
                if service.get("image") == "cms:latest"]


@pytest.mark.parametrize("service", CMS_SERVICES)
def test_compose_service_command_names_an_existing_entry_point(service):
    command = _compose()["services"][service]["command"]
    argv = command if isinstance(command, list) else shlex.split(command)
    program = argv[0]
    if program == "gunicorn":
        module, _, attribute = argv[1].partition(":")
        imported = __import__(module, fromlist=[attribute])
        assert hasattr(imported, attribute)
    elif program == "celery":
        app_module = argv[argv.index("-A") + 1]
        assert (ROOT / app_module / "celery.py").exists()
    elif program == "python" and argv[1] == "manage.py":
        assert argv[2] in _django_commands(), f"manage.py has no command {argv[2]!r}"
    elif program == "python" and argv[1] == "-m":
        assert (ROOT / argv[2].replace(".", "/") / "__main__.py").exists() or \
            (ROOT / (argv[2].replace(".", "/") + ".py")).exists()
    else:
        pytest.fail(f"{service}: unknown entry point {program!r}")


def test_compose_secrets_are_files_and_exist_in_the_list():
    compose = _compose()
    declared = set(compose["secrets"])
    for name, service in compose["services"].items():
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name} uses undeclared secret {secret}"


def test_compose_roles_start_only_after_migrations():
    services = _compose()["services"]
    for name in CMS_SERVICES:
        if name != "migrate":
            after = services[name]["depends_on"]["migrate"]
            assert after == {"condition": "service_completed_successfully"}, name
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_compose_environment_names_only_settings_the_cms_reads():
    import re

    read = set(re.findall(r'\benv(?:bool|int|list|secret)?\("([A-Z][A-Z0-9_]+)"',
                          (ROOT / "cms/settings.py").read_text()))
    for name in CMS_SERVICES:
        for variable in _compose()["services"][name]["environment"]:
            assert variable.removesuffix("_FILE") in read, f"{name}: {variable} is not a CMS setting"


def test_image_and_repository_never_take_local_secrets():
    # var/ holds the local OpenBao's unseal key and root token and the first admin's password
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert {"var", "secrets", ".venv", ".git"} <= set(dockerignore)
    assert {"var/", "secrets/"} <= set((ROOT / ".gitignore").read_text().split())
