"""`manage.py key_pool_sweep`: run the key pool sweep (keys/pool.py) now instead of waiting for beat.
Audited as the system, like beat's run."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from keys.errors import KeystoreError


class Command(BaseCommand):
    help = ("Remove from Vault the wrapped keys of pool secrets older than 2 x KEY_POOL_MAX_AGE_SECONDS that "
            "no key version names (a secret with none left is deleted); prints the counts.")

    def add_arguments(self, parser):
        parser.add_argument("--tenant", action="append", default=None,
                            help="only this tenant slug (repeatable)")

    def handle(self, *args, **options):
        from cards.models import Tenant
        from keys import pool

        tenants = None
        if options["tenant"]:
            tenants = list(Tenant.objects.filter(slug__in=options["tenant"]).order_by("pk"))
            unknown = sorted(set(options["tenant"]) - {t.slug for t in tenants})
            if unknown:
                raise CommandError(f"tenant: no tenant {', '.join(unknown)}")
        try:
            out = pool.sweep(tenants=tenants)
        except KeystoreError as exc:
            raise CommandError(f"key_pool_sweep: {exc}") from None
        self.stdout.write(json.dumps(out, indent=1))
