"""The cms app: roles, memberships, API tokens, scoping, health and logging set-up."""
from django.apps import AppConfig


class CmsConfig(AppConfig):
    name = "cms"
    verbose_name = "Card management system"

    def ready(self) -> None:
        from cms import logging as cms_logging

        cms_logging.configure()
        from cms.web import signals  # noqa: F401 - audits sign-in lockouts
