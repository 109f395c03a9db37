"""`manage.py bootstrap`: the first superuser and a demo tenant on a fresh instance (idempotent)."""
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from audit.errors import AuditUnavailable
from cms.bootstrap import instance_bootstrap
from cms.errors import KeystoreUnavailable


class Command(BaseCommand):
    help = ("Create the first superuser (random password written to a 0600 file, never printed) "
            "and a demo tenant, if none exist.")

    def add_arguments(self, parser):
        parser.add_argument("--credentials-file", type=Path,
                            default=Path(settings.INSTANCE_DIR) / "admin-credentials")
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default=settings.SITE_URL)
        parser.add_argument("--no-demo-tenant", action="store_true")

    def handle(self, *args, **options):
        try:
            result = instance_bootstrap(credentials_file=options["credentials_file"].resolve(),
                                        url=options["url"].rstrip("/"), username=options["username"],
                                        demo_tenant=not options["no_demo_tenant"])
        except (KeystoreUnavailable, AuditUnavailable) as exc:
            raise CommandError(f"bootstrap needs Vault (tenant KEK, audit chain key): {exc}", returncode=2)
        except ValidationError as exc:
            raise CommandError(f"bootstrap: {exc}")
        if result.admin_created:
            self.stdout.write(f"created superuser {result.admin_username!r}; "
                              f"its password is in {result.credentials_file}")
        else:
            self.stdout.write(f"superuser {result.admin_username!r} exists; nothing to do")
        if result.tenant_created:
            self.stdout.write(f"created tenant {result.tenant_slug!r} "
                              f"with {result.admin_username!r} as its admin")
